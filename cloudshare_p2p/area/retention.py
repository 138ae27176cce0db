"""Retention on the host: the sealed policy, `prune` under the lock, and readers told a version was pruned.

The decisions are the core's (statemachine/retention.py: `kept_versions`, `prune_plan`);
this module reads what they need from an `Area` (the versions with their server times, the
objects each kept version needs, the objects on the host with their mtimes) and carries out
the plan while holding the lock: `prune` entries first (fencing-checked, never naming the
newest version), then the removals, then the compaction of `log/` and `lock/` below a new
floor when one is due (area/floor.py). Binding spec: docs/format-2-design.md, "Retention and
prune", and docs/area-format.md, "Compaction: the floor". Only areas of format version 2 or
later may lose anything; version 1 forbids removal.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statemachine.floor import COMPACT_EVERY
from statemachine.retention import (
    DEFAULT_GRACE_SECONDS,
    KeepDecision,
    PrunePlan,
    RetentionPolicy,
    kept_versions,
    prune_plan,
    read_record,
)

from .. import crypto, errors
from ..errors import PruneNeedsFormat2, VersionPruned
from ..i18n import _
from . import floor
from .floor import CompactReport
from .model import Grant, Party, Version
from .records import MAX_PRUNED, MAX_SEALED_POLICY, OBJECT_ID, _name

if TYPE_CHECKING:
    from ..snapshot import ChunkCache, Manifest
    from .lifecycle import Area

FANNED_FOLDERS = ("chunks", "packs")  # objects under <folder>/<id[0:2]>/<id>; packs: format 2
RENEW_EVERY = 200  # removals between lease renewals: a prune never outlives its lock
CHEAP_MAX_REMOVALS = 2000  # the most objects (and, apart, log and lock names) a prune from `close` removes


@dataclass(frozen=True)
class PruneReport:
    """What a prune decided (and, unless `dry_run`, did).

    `freed_bytes` is the size of the objects removed (or that would be, on a dry run);
    `removed_objects` counts what was actually removed (0 on a dry run).
    """

    policy: RetentionPolicy
    decision: KeepDecision
    plan: PrunePlan
    freed_bytes: int = 0
    removed_objects: int = 0
    dry_run: bool = False
    sizes: dict[str, int] = field(default_factory=dict, repr=False)
    compacted: CompactReport | None = None  # the floor published by this prune, if one was due


# --- the policy ---------------------------------------------------------------------------------


def prune_allowed(area: Area) -> bool:
    """Whether the area's format allows removal (version 2 or later)."""
    version = area.load().get("version")
    return isinstance(version, int) and not isinstance(version, bool) and version >= 2


def read_policy(area: Area) -> tuple[RetentionPolicy, int | None]:
    """The area's policy and the seq of the entry that set it (None: the defaults).

    The newest valid `policy` entry that opens with the data key wins; one that does not
    open, or whose record is void, counts as nothing. Needs the keys.
    """
    keys = area.require_keys()
    for seq, sealed in reversed(area.log_view().policies):
        policy = _open_policy(keys, seq, sealed)
        if policy is not None:
            return policy, seq
    return RetentionPolicy(), None


def _open_policy(keys: crypto.Keys, seq: int, sealed: str) -> RetentionPolicy | None:
    """The policy sealed in entry `seq`, or None (void) if it does not open or is malformed."""
    try:
        blob = base64.b64decode(sealed, validate=True)
        plain = crypto.open_sealed(keys, crypto.KIND_POLICY, _name(seq), blob, max_plain=MAX_SEALED_POLICY)
    except (ValueError, binascii.Error, errors.AreaCorrupt):
        return None
    return read_record(plain)


def set_policy(area: Area, grant: Grant, party: Party, policy: RetentionPolicy) -> int:
    """Record `policy` as the area's, sealed in a `policy` entry appended under our lock; its seq."""
    keys = area.require_keys()
    area.ensure_holding(grant, party)
    record = json.dumps(policy.to_record(), sort_keys=True).encode()

    def entry(seq: int) -> dict[str, Any]:
        blob = crypto.seal(keys, crypto.KIND_POLICY, _name(seq), record)
        return {"kind": "policy", "gen": grant.lease.generation, "session": grant.session,
                "writer": party.as_dict(), "sealed": base64.b64encode(blob).decode("ascii")}

    return area._append(entry, grant)


# --- what versions need, what the host holds ------------------------------------------------------


def list_objects(area: Area) -> list[str]:
    """Area-relative paths of every object on the host: manifests, chunks and packs."""
    found = [f"manifests/{n}" for n in _names(area, "manifests") if OBJECT_ID.fullmatch(n)]
    for folder in FANNED_FOLDERS:
        for sub in sorted(_names(area, folder)):
            if len(sub) == 2 and all(c in "0123456789abcdef" for c in sub):
                found += [f"{folder}/{sub}/{n}" for n in _names(area, folder, sub)
                          if OBJECT_ID.fullmatch(n) and n[:2] == sub]
    return sorted(found)


def _names(area: Area, *folder: str) -> list[str]:
    try:
        return area.session.listdir(area.p(*folder))
    except FileNotFoundError:
        return []


def _server_time(area: Area, version: Version, now: int) -> int:
    """When the host wrote the version's commit entry (its mtime; `now` if it cannot be seen).

    A version carried by the floor has no slot any more: the floor kept its time."""
    carried = floor.carried_time(area, version.version)
    if carried is not None:
        return carried
    st = area.session.stat(area.p("log", _name(version.seq)))
    return st.mtime if st is not None else now


# --- prune ----------------------------------------------------------------------------------------


def plan_prune(area: Area, grace_seconds: int = DEFAULT_GRACE_SECONDS,
               cheap: bool = False) -> PruneReport | None:
    """Decide a prune from what the host holds now (reads only; needs the keys).

    With `cheap`, None when no version is due (every remaining version is among the last
    N), so that a `close` pays nothing but the log it already read.
    """
    policy, _seq = read_policy(area)
    view = area.log_view()
    live = [v for v in view.versions if v.version not in view.pruned]
    if cheap and len(live) <= policy.last:
        return None
    now = area.server_now()
    decision = kept_versions([(v.version, _server_time(area, v, now)) for v in live], policy, now)
    if cheap and not decision.remove:
        return None
    references = {v.version: area.objects_needed(v) if v.version in decision.kept else set() for v in live}
    needed: set[str] = set().union(*references.values())
    objects: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for rel in list_objects(area):
        if rel in needed:
            objects[rel] = now  # kept whatever its age
            continue
        st = area.session.stat(area.p(*rel.split("/")))
        if st is not None and not st.is_dir:
            objects[rel], sizes[rel] = st.mtime, st.size
    plan = prune_plan(decision.kept, references, objects, now, grace_seconds)
    freed = sum(sizes[rel] for rel in plan.remove_objects)
    return PruneReport(policy, decision, plan, freed_bytes=freed, dry_run=True, sizes=sizes)


def prune(area: Area, grant: Grant, party: Party, *, dry_run: bool = False, cheap: bool = False,
          grace_seconds: int = DEFAULT_GRACE_SECONDS,
          compact_every: int = COMPACT_EVERY) -> PruneReport | None:
    """Remove what the policy no longer keeps, while we hold the lock (`grant`).

    First the `prune` entries (fencing and base checks: a newer version or holder stops
    it), then the objects no kept version needs and older than the grace period, renewing
    the lease as it goes, then (when `compact_every` slots or generations lie above the
    floor) a new floor and the removal of `log/` and `lock/` below it. `PruneNeedsFormat2`
    on a version-1 area. With `cheap` (from `close`): None when no version is due (the
    compaction still runs when due), and at most `CHEAP_MAX_REMOVALS` objects removed.
    """
    if not prune_allowed(area):
        raise PruneNeedsFormat2(
            _("area {name} uses format version 1, which keeps every version; the next close "
              "upgrades it, and prune works from then on").format(name=area.name))
    area.require_keys()
    area.ensure_holding(grant, party)
    report = plan_prune(area, grace_seconds, cheap)
    if dry_run:
        return report
    most = CHEAP_MAX_REMOVALS if cheap else floor.MAX_REMOVALS
    if report is None:
        floor.compact(area, grant, party, every=compact_every, most=most)
        return None
    if report.plan.remove_versions:
        _append_prune(area, grant, party, report.plan.remove_versions)
    limit = CHEAP_MAX_REMOVALS if cheap else None
    removed, freed = _remove_objects(area, grant, party, report, limit)
    compacted = floor.compact(area, grant, party, every=compact_every, most=most)
    return PruneReport(report.policy, report.decision, report.plan, freed_bytes=freed,
                       removed_objects=removed, dry_run=False, sizes=report.sizes, compacted=compacted)


def _append_prune(area: Area, grant: Grant, party: Party, numbers: tuple[int, ...]) -> None:
    """Append `prune` entries naming `numbers` (at most MAX_PRUNED each), fencing-checked."""
    base = area.newest_number()
    if not numbers or max(numbers) >= base:
        raise ValueError("a prune never names the newest version")
    for start in range(0, len(numbers), MAX_PRUNED):
        area._append({"kind": "prune", "gen": grant.lease.generation, "session": grant.session,
                      "writer": party.as_dict(), "pruned": list(numbers[start:start + MAX_PRUNED])},
                     grant, base)


def _remove_objects(area: Area, grant: Grant, party: Party, report: PruneReport,
                    limit: int | None) -> tuple[int, int]:
    """Remove the plan's objects, renewing the lease every `RENEW_EVERY`; (count, bytes)."""
    removed = freed = 0
    for i, rel in enumerate(report.plan.remove_objects[:limit]):
        if i % RENEW_EVERY == 0:
            area.renew(grant, party)  # Fenced if another holder came: no removal under a writer
        area.check_interrupt()
        with suppress(FileNotFoundError):
            area.session.remove(area.p(*rel.split("/")))
            removed += 1
            freed += report.sizes.get(rel, 0)
    return removed, freed


# --- readers --------------------------------------------------------------------------------------


def check_not_pruned(area: Area, version: Version) -> None:
    """`VersionPruned` if a valid `prune` entry names `version` (the log is read up to its head)."""
    if version.version in area.pruned_versions():
        raise VersionPruned(version.version)


def download_unless_pruned(area: Area, version: Version, target: Path, cache: ChunkCache | None = None,
                           progress: Callable[[int], None] | None = None) -> Manifest:
    """`Area.download`, but a pruned version is refused with `VersionPruned`, also when the
    prune happens while it is read (an object missing: the log is read again)."""
    check_not_pruned(area, version)
    try:
        return area.download(version, target, cache, progress)
    except errors.AreaCorrupt:
        check_not_pruned(area, version)
        raise
