"""The floor on the host (format 2): find and read it, start the log from it, publish it, compact below it.

Decisions are the core's (statemachine/floor.py); binding rules: docs/area-format.md, "Compaction:
the floor". The floor chain lives in `floor/<20 digits>`; a reader finds the top by probing
upwards from the number it knows (kept in `floor.json` beside the area's cache), once per
command, after a probe of the log that read new entries (one may be a slot re-created below a
newer floor), and after every log slot or lock generation it creates (a creation below the
floor is void). A top floor that does not parse is damage (`AreaCorrupt`): what lies below it
cannot be known. Only the lock's holder compacts, from `prune`: it publishes the next floor,
then removes log slots and lock generations below it, a bounded number per run.
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statemachine.floor import (
    COMPACT_EVERY,
    MAX_FLOOR,
    NO_FLOOR,
    Floor,
    LoggedVersion,
    below,
    compaction_allowed,
    compaction_due,
    fenced_by_floor,
    floor_record,
    generation_void,
    next_floor,
    parse_floor,
    slot_void,
)

from .. import errors
from ..i18n import _
from ..localfiles import atomic_write
from ..transport import FileTooLarge
from ..transport.sftp import HARDLINK
from .model import Grant, Party, Version
from .records import (
    ENTRY_NAME,
    FENCING_KINDS,
    OBJECT_ID,
    _entry_fields_ok,
    _name,
    _nowiso_utc,
    commit_version,
)

if TYPE_CHECKING:
    from .base import AreaBase
    from .lifecycle import Area

FOLDER = "floor"
MAX_REMOVALS = 20_000  # log slots plus lock generations one compaction run removes
MAX_PROBE = 1_000_000
MAX_VOID = 16  # void (torn) floors a reader steps down over before calling the area damaged


@dataclass
class _Known:
    """What this process knows of one area's floor: the top it read, and whether it looked this command."""

    floor: Floor
    checked: bool
    cache_path: Path | None
    top: int = 0  # the highest floor number seen, void ones included


_KNOWN: weakref.WeakKeyDictionary[AreaBase, _Known] = weakref.WeakKeyDictionary()


def _commit_ok(entry: Any) -> bool:
    """A carried entry must be a readable commit entry naming a manifest."""
    return isinstance(entry, dict) and _entry_fields_ok(entry) and entry.get("kind") == "commit" \
        and OBJECT_ID.fullmatch(str(entry.get("manifest", ""))) is not None


def _applies(area: AreaBase) -> bool:
    """Floors exist only in format-2 areas (version-1 areas are never compacted)."""
    version = (area.config or area.load()).get("version")
    return type(version) is int and version >= 2


def _local(area: AreaBase) -> Path | None:
    path = area.cache.path
    return path.parent / "floor.json" if path is not None else None


def _known(area: AreaBase) -> _Known:
    known = _KNOWN.get(area)
    if known is None or known.cache_path != area.cache.path:
        known = _Known(_load_local(area), False, area.cache.path)
        _KNOWN[area] = known
    return known


def _load_local(area: AreaBase) -> Floor:
    """The floor this computer last adopted for the area (none if unknown or unreadable)."""
    path = _local(area)
    if path is None or not path.exists():
        return NO_FLOOR
    with suppress(OSError, ValueError, TypeError, AttributeError):  # a damaged local copy: none
        kept = json.loads(path.read_bytes())
        floor = parse_floor(kept, int(kept.get("floor", 0)), _commit_ok)
        if floor is not None:
            return floor
    return NO_FLOOR


def _adopt(area: AreaBase, known: _Known, floor: Floor, raw: dict[str, Any]) -> None:
    """Take `floor` as the area's: forget cached entries below it, remember it on this computer."""
    known.floor = floor
    for seq in [s for s in area.cache.entries if s < floor.seq]:
        del area.cache.entries[seq]
    area.cache.save()
    path = _local(area)
    if path is not None:
        with suppress(OSError):
            atomic_write(path, json.dumps(raw).encode(), durable=False)


# --- finding and reading the top floor -----------------------------------------------------------


def _exists(area: AreaBase, number: int) -> bool:
    return area.session.stat(area.p(FOLDER, _name(number))) is not None


def top_number(area: AreaBase, known: int = 0) -> int:
    """The highest floor number on the host (0: none), probing upwards from `known`.

    Floors are created in order and never removed, so the chain has no gaps. Without a
    known number the folder is listed once, if it holds anything.
    """
    top = known
    if top == 0:
        if not _exists(area, 1):
            return 0  # the usual answer in an area never compacted: one `stat`
        with suppress(FileNotFoundError):
            names = area.session.listdir(area.p(FOLDER))
            top = max((int(n) for n in names if ENTRY_NAME.fullmatch(n)), default=0)
    for _try in range(MAX_PROBE):
        if not _exists(area, top + 1):
            break
        top += 1
    return top


def read_floor(area: AreaBase, number: int) -> tuple[Floor, dict[str, Any]] | None:
    """Floor `number`, validated. None when it is **void**: absent, or not JSON (torn: a
    writer without hard links was cut off, or is still writing; nothing was removed below
    it, since removal starts only once a floor is complete). `AreaCorrupt` when it is JSON
    but malformed, or larger than `MAX_FLOOR`."""
    where = f"{FOLDER}/{_name(number)}"
    try:
        raw = area.session.read_bytes(area.p(FOLDER, _name(number)), MAX_FLOOR)
    except FileNotFoundError:
        return None
    except FileTooLarge:
        raw = b"[]"  # complete but too large: no writer makes one
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    floor = parse_floor(record, number, _commit_ok) if isinstance(record, dict) else None
    if floor is None:
        raise errors.AreaCorrupt(_("the floor {where} of area {name} is malformed").format(
            where=where, name=area.name))
    return floor, record


def highest_valid(area: AreaBase, top: int, known: Floor) -> tuple[Floor, dict[str, Any] | None]:
    """The highest floor from `top` down that is not void (at most `MAX_VOID` void ones are
    stepped over, never below `known`); `known` itself if all above it are void."""
    for number in range(top, max(known.number, top - MAX_VOID), -1):
        got = read_floor(area, number)
        if got is not None:
            return got
    if top - MAX_VOID > known.number:
        raise errors.AreaCorrupt(_("the floor {where} of area {name} is malformed").format(
            where=f"{FOLDER}/{_name(top)}", name=area.name))
    return known, None


def refresh(area: AreaBase) -> Floor:
    """Look for a newer floor than the one known (one `stat` when there is none) and adopt it."""
    known = _known(area)
    if not _applies(area):
        known.checked = True
        return known.floor
    top = top_number(area, max(known.top, known.floor.number))
    if top > known.top:
        floor, record = highest_valid(area, top, known.floor)
        if floor.seq < known.floor.seq or floor.lock < known.floor.lock:
            raise errors.AreaCorrupt(_("the floor {where} of area {name} is malformed").format(
                where=f"{FOLDER}/{_name(floor.number)}", name=area.name))
        if record is not None:
            _adopt(area, known, floor, record)
        known.top = top
    known.checked = True
    return known.floor


def begin_lookup(area: AreaBase) -> str | None:
    """The command's first lookup, to be sent with its first reads of `lock/` and `log/`: the
    name of the next floor (its absence means no newer floor), or None when this command looked
    already (or the area is version 1). The known floor counts as looked up meanwhile; if the
    name is there, call `refresh` and read again from the floor it adopts."""
    known = _known(area)
    if known.checked or not _applies(area):
        return None
    known.checked = True
    return area.p(FOLDER, _name(max(known.top, known.floor.number) + 1))


def top_seen(area: AreaBase) -> int:
    """The highest floor number seen, void ones included (the next floor is numbered after it)."""
    known = _known(area)
    return max(known.top, known.floor.number)


def current(area: AreaBase) -> Floor:
    """The area's floor as this command knows it (looked up once per command)."""
    known = _known(area)
    return known.floor if known.checked else refresh(area)


# --- hooks for the log and the lock ---------------------------------------------------------------


def log_start(area: AreaBase) -> int:
    """Where probing the log starts: the highest slot known contiguously from the floor."""
    head = current(area).seq - 1
    while head + 1 in area.cache.entries:
        head += 1
    return head


def settled(area: AreaBase, start: int, head: int) -> bool:
    """After a probe from `start` to `head`: may the entries it read be used?

    Entries read from the host (above `start`) could be slots a late writer re-created below
    a floor published meanwhile; a lookup after reading settles it. False when a newer floor
    was adopted (its cached entries below are forgotten): probe again from it.
    """
    if head == start or not _applies(area):
        return True
    before = current(area).number
    return refresh(area).number == before


def first_seq(area: AreaBase) -> int:
    """The lowest log slot a reader reads (1 without a floor)."""
    return current(area).seq


def created_slot_void(area: AreaBase, seq: int) -> bool:
    """After creating log slot `seq`: is it below a floor (a removed slot re-created)? Then it is void."""
    return _applies(area) and slot_void(seq, refresh(area))


def created_generation_void(area: AreaBase, gen: int) -> bool:
    """After creating lock generation `gen`: is it below the floor? Then the creation counts as lost."""
    return _applies(area) and generation_void(gen, refresh(area))


def lock_hint(area: AreaBase) -> int:
    """Where probing the lock starts: the highest generation known, at least the floor's."""
    floor = current(area)
    return max(area.cache.lock_top, floor.lock if floor.number else 0)


def check_fence(area: AreaBase, grant: Grant) -> None:
    """`Fenced` when the holder's own fence entry lies below the floor (a later holder compacted past it)."""
    if _applies(area) and fenced_by_floor(grant.fence_seq, current(area)):
        raise errors.Fenced(_("your lease ran out and someone else took the lock; your version was not sent"))


def _compacted(number: int) -> Version:
    """A version whose entry was compacted away: it counts as pruned and keeps its number."""
    return Version(version=number, seq=0, manifest="", size=0, writer={}, time="", gen=0)


def view_start(area: AreaBase) -> tuple[int, list[Version], set[int], list[tuple[int, str]]]:
    """The validity rule's state at the floor: F, the versions below it, the pruned numbers, the policies."""
    floor = current(area)
    carried = {c.number: dict(c.entry) for c in floor.carried}
    versions = [commit_version(carried[n], n) if n in carried else _compacted(n)
                for n in range(1, floor.versions + 1)]
    return floor.fence, versions, set(floor.pruned), list(floor.policies)


def carried_time(area: AreaBase, number: int) -> int | None:
    """The server time of a carried version's commit entry (its slot is gone), else None."""
    return next((c.mtime for c in current(area).carried if c.number == number), None)


# --- compaction -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactReport:
    """One compaction run: the floor published (0: none), and what was removed below it."""

    floor: int
    seq: int
    lock: int
    removed_slots: int
    removed_generations: int


def compact(area: Area, grant: Grant, party: Party, every: int = COMPACT_EVERY,
            most: int = MAX_REMOVALS) -> CompactReport | None:
    """Publish the next floor and remove below it, while we hold the lock; None when nothing to do.

    The floor's `seq` is our own fence entry (capped by the carried versions), its `lock` our
    generation. Publishing comes first; removal only below a published floor, lowest first,
    at most `most` names per run. When no new floor is due, what an earlier run left below
    the floor is removed (two `stat`s tell whether anything is left: removal goes lowest first).
    """
    if not _applies(area):
        return None
    prev = refresh(area)
    head = area._sync_log()
    if not compaction_due(prev, head, grant.lease.generation, every):
        return _leftovers(area, grant, party, prev, most)
    if not _publishes_whole(area):
        return None
    config = area.session.stat(area.p("config"))
    if config is None or not compaction_allowed(area.load().get("version"), config.mtime, area.server_now()):
        return None
    area.ensure_holding(grant, party)
    floor = _plan(area, grant, dataclasses.replace(prev, number=top_seen(area)))
    if floor is None:
        return None
    record = floor_record(floor, gen=grant.lease.generation, session=grant.session,
                          writer=party.as_dict(), time=_nowiso_utc())
    area.session.mkdir(area.p(FOLDER))  # an existing folder is fine
    if not area._publish(area.p(FOLDER, _name(floor.number)), json.dumps(record, sort_keys=True).encode()):
        return None  # another floor got this number first: ours is not published; next time
    _adopt(area, _known(area), floor, record)
    return _removed(area, floor, most)


def _publishes_whole(area: Area) -> bool:
    """Whether a published floor appears complete: with `hardlink@openssh.com` (or over an
    in-process store, whose publish is atomic). Without it a floor would be created empty and
    then filled, and a compactor reading it meanwhile as void could publish a lower floor
    above it; such hosts are not compacted."""
    extensions = getattr(area.session, "extensions", None)
    return extensions is None or HARDLINK in extensions


def _leftovers(area: Area, grant: Grant, party: Party, floor: Floor, most: int) -> CompactReport | None:
    """Finish the removals an earlier (bounded) run left below the floor; None if there are none."""
    if not floor.number or most <= 0:
        return None
    left = [area.session.stat(area.p(folder, _name(at - 1))) for folder, at in
            (("log", floor.seq), ("lock", floor.lock)) if at > 1]
    if all(st is None for st in left):
        return None
    area.ensure_holding(grant, party)
    return _removed(area, floor, most)


def _removed(area: Area, floor: Floor, most: int) -> CompactReport:
    slots = _remove_below(area, "log", floor.seq, most)
    gens = _remove_below(area, "lock", floor.lock, most - slots)
    return CompactReport(floor.number, floor.seq, floor.lock, slots, gens)


def _plan(area: Area, grant: Grant, prev: Floor) -> Floor | None:
    """The next floor from our log view (reads the server times of versions that become carried)."""
    view = area.log_view()
    entries = area.log()
    fences = [(e["seq"], e["gen"]) for e in entries if e.get("kind") in FENCING_KINDS and _entry_fields_ok(e)]
    entry_of = {e["seq"]: e for e in entries}
    logged = [LoggedVersion(v.version, v.seq, entry_of.get(v.seq) or _carried_entry(prev, v.version))
              for v in view.versions]
    mtimes: dict[int, int] = {}
    for v in view.versions:
        if v.seq >= prev.seq and v.seq < grant.fence_seq and v.version not in view.pruned:
            st = area.session.stat(area.p("log", _name(v.seq)))
            if st is not None:
                mtimes[v.version] = st.mtime
    return next_floor(prev, fence_seq=grant.fence_seq, generation=grant.lease.generation, versions=logged,
                      pruned=view.pruned, fences=fences, policies=view.policies, mtimes=mtimes)


def _carried_entry(prev: Floor, number: int) -> dict[str, Any] | None:
    return next((dict(c.entry) for c in prev.carried if c.number == number), None)


def _remove_below(area: Area, folder: str, limit_at: int, most: int) -> int:
    """Remove `folder`'s numbered names below `limit_at`, lowest first, at most `most`; how many."""
    try:
        names = [int(n) for n in area.session.listdir(area.p(folder)) if ENTRY_NAME.fullmatch(n)]
    except FileNotFoundError:
        return 0
    removed = 0
    for number in below(names, limit_at, most):
        area.check_interrupt()
        with suppress(FileNotFoundError):
            area.session.remove(area.p(folder, _name(number)))
            removed += 1
    return removed
