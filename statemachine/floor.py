"""The floor (format 2): what a compaction of `log/` and `lock/` keeps, and what readers start from.

Pure decisions over what the shell read (docs/area-format.md, "Compaction: the floor"): the
floor record's validation (it comes from the host and is untrusted), the next floor a holder
may publish given its view of the log and lock, and the rules by which a client that created
a log slot or lock generation below the floor treats its record as void. No I/O.

A floor ``k`` says: log slots below `seq` and lock generations below `lock` may be gone; the
validity rule starts at `seq` with ``F = fence`` and ``versions`` versions before it, of which
the `carried` ones (commit entries copied with their server time) are not pruned; every other
number up to ``versions`` counts as pruned. Floors form a chain ``1, 2, 3…`` created exclusively
in order and never removed, each one's `seq` and `lock` at least its predecessor's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

FLOOR_V = 1  # the "v" member of a floor record
MAX_FLOOR = 4 << 20  # bytes of a floor record a reader reads; a larger one is malformed
MAX_CARRIED = 250  # commit entries a floor carries (250 × a 16 KiB entry stays below MAX_FLOOR)
MAX_POLICIES = 16  # `policy` entries a floor carries (the newest ones below its seq)
MAX_SEALED = 2048  # base64 characters of a carried policy (as in a `policy` entry)
MAX_COUNT = 1 << 53  # sequence numbers, generations, version counts
MAX_TIME = 1 << 34  # server seconds
COMPACT_EVERY = 1000  # slots or generations above the floor before a new floor is due
UPGRADE_GRACE = 24 * 3600  # an area is compacted only this long after its config became version 2


@dataclass(frozen=True)
class Carried:
    """A version below the floor that is not pruned: its number, its commit's server time, the entry."""

    number: int
    mtime: int
    entry: Mapping[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True)
class Floor:
    """One floor record (number 0: no floor, the log starts at 1 and nothing was compacted)."""

    number: int = 0
    seq: int = 1
    lock: int = 1
    fence: int = 0
    versions: int = 0
    carried: tuple[Carried, ...] = ()
    policies: tuple[tuple[int, str], ...] = ()

    @property
    def pruned(self) -> frozenset[int]:
        """Versions below the floor that count as pruned: every number not carried."""
        kept = {c.number for c in self.carried}
        return frozenset(n for n in range(1, self.versions + 1) if n not in kept)


NO_FLOOR = Floor()


def _count(value: Any, low: int = 0, high: int = MAX_COUNT) -> int | None:
    ok = type(value) is int and low <= value <= high
    return value if ok else None


def parse_floor(raw: bytes | Mapping[str, Any], number: int,
                entry_ok: Callable[[Mapping[str, Any]], bool]) -> Floor | None:
    """The floor in record `raw` named `number`, or None when it is malformed. Never raises.

    Malformed: not a JSON object; `v` not 1; `kind` not "floor"; `floor` not `number`;
    `seq`, `lock` not integers 1…2^53; `fence`, `versions` not integers 0…2^53; `carried` not
    a list of at most 250 objects ``{version, mtime, entry}`` with versions strictly rising
    within 1…`versions`, mtimes 0…2^34, and entries that are commit entries (`entry_ok`) with
    seqs strictly rising below `seq`; `policies` not a list of at most 16 pairs
    ``[seq, sealed]`` with seqs strictly rising below `seq` and sealed strings of at most
    2,048 characters.
    """
    record: Any = raw
    if isinstance(raw, bytes | bytearray):
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            return None
    if not isinstance(record, Mapping) or record.get("v") != FLOOR_V or type(record.get("v")) is not int:
        return None
    if record.get("kind") != "floor" or _count(record.get("floor"), 1) != number:
        return None
    seq, lock = _count(record.get("seq"), 1), _count(record.get("lock"), 1)
    fence, versions = _count(record.get("fence")), _count(record.get("versions"))
    if seq is None or lock is None or fence is None or versions is None:
        return None
    carried = _carried(record.get("carried"), seq, versions, entry_ok)
    policies = _policies(record.get("policies"), seq)
    if carried is None or policies is None:
        return None
    return Floor(number, seq, lock, fence, versions, carried, policies)


def _carried(items: Any, seq: int, versions: int,
             entry_ok: Callable[[Mapping[str, Any]], bool]) -> tuple[Carried, ...] | None:
    if not isinstance(items, list) or len(items) > MAX_CARRIED:
        return None
    out: list[Carried] = []
    for item in items:
        if not isinstance(item, Mapping):
            return None
        number, entry = _count(item.get("version"), 1, versions), item.get("entry")
        mtime = _count(item.get("mtime"), 0, MAX_TIME)
        if number is None or mtime is None or not isinstance(entry, Mapping) or not entry_ok(entry):
            return None
        entry_seq = _count(entry.get("seq"), 1, seq - 1)
        if entry_seq is None or (out and (number <= out[-1].number or entry_seq <= out[-1].entry["seq"])):
            return None
        out.append(Carried(number, mtime, dict(entry)))
    return tuple(out)


def _policies(items: Any, seq: int) -> tuple[tuple[int, str], ...] | None:
    if not isinstance(items, list) or len(items) > MAX_POLICIES:
        return None
    out: list[tuple[int, str]] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2):
            return None
        at, sealed = _count(item[0], 1, seq - 1), item[1]
        rising = not out or at is not None and at > out[-1][0]
        if at is None or not isinstance(sealed, str) or len(sealed) > MAX_SEALED or not rising:
            return None
        out.append((at, sealed))
    return tuple(out)


def floor_record(floor: Floor, **about: Any) -> dict[str, Any]:
    """The JSON object of `floor` as published (`about`: gen, session, writer, time)."""
    return {**about, "v": FLOOR_V, "kind": "floor", "floor": floor.number, "seq": floor.seq,
            "lock": floor.lock, "fence": floor.fence, "versions": floor.versions,
            "carried": [{"version": c.number, "mtime": c.mtime, "entry": dict(c.entry)}
                        for c in floor.carried],
            "policies": [[at, sealed] for at, sealed in floor.policies]}


# --- what a client does with the floor -----------------------------------------------------------


def slot_void(seq: int, floor: Floor) -> bool:
    """A log slot below the floor is void, whoever created it and when (it may be a re-creation)."""
    return seq < floor.seq


def generation_void(gen: int, floor: Floor) -> bool:
    """A lock generation below the floor's `lock` is void: its creator lost, as if it existed."""
    return gen < floor.lock


def fenced_by_floor(fence_seq: int, floor: Floor) -> bool:
    """A holder whose own fence entry is below the floor was fenced: a later holder compacted past it."""
    return fence_seq < floor.seq


def compaction_due(floor: Floor, head: int, generation: int, every: int = COMPACT_EVERY) -> bool:
    """Whether a holder at log head `head` and lock generation `generation` should publish a new floor."""
    return head + 1 - floor.seq >= every or generation - floor.lock >= every


def compaction_allowed(config_version: Any, config_mtime: int, now: int, grace: int = UPGRADE_GRACE) -> bool:
    """Format 2 only, and only `grace` seconds after the upgrade (config's server mtime)."""
    return type(config_version) is int and config_version >= 2 and now - config_mtime >= grace


@dataclass(frozen=True)
class LoggedVersion:
    """A version as the compactor's log view has it: number, slot (0 if below the floor), entry."""

    number: int
    seq: int
    entry: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)


def next_floor(prev: Floor, *, fence_seq: int, generation: int, versions: Sequence[LoggedVersion],
               pruned: Set[int], fences: Sequence[tuple[int, int]], policies: Sequence[tuple[int, str]],
               mtimes: Mapping[int, int]) -> Floor | None:
    """The floor a holder may publish after `prev`, or None when it would not move.

    `fence_seq` is the holder's own fence entry and `generation` its current (top) lock
    generation; `versions` its log view's versions (oldest first), `pruned` the pruned
    numbers, `fences` the (seq, gen) of fence and break entries at or above `prev.seq`,
    `policies` the valid policy entries (seq, sealed), `mtimes` the server time of each
    version's commit entry, by number (needed for those that become carried).

    The new `seq` is the holder's own fence entry (so the holder's fence, and with it every
    entry a current holder's fencing check reads, stays), lowered so that at most
    `MAX_CARRIED` unpruned versions lie below it; never below `prev.seq`. `lock` is the
    holder's generation (the top: generations below it are history). A version below the
    new `seq` is carried unless pruned; `versions` counts every version below it; `fence`
    is the highest fence or break generation below it.
    """
    live = [v for v in versions if v.number not in pruned and v.seq < fence_seq]
    seq = fence_seq
    if len(live) > MAX_CARRIED:
        seq = live[MAX_CARRIED].seq
    seq = max(seq, prev.seq)
    lock = max(generation, prev.lock)
    if seq == prev.seq and lock == prev.lock:
        return None
    below = [v for v in versions if v.seq < seq]
    carried_old = {c.number: c for c in prev.carried}
    carried: list[Carried] = []
    for v in below:
        if v.number in pruned:
            continue
        if v.number in carried_old:
            carried.append(carried_old[v.number])
        elif v.entry is not None and v.number in mtimes:
            carried.append(Carried(v.number, mtimes[v.number], dict(v.entry)))
        else:
            return None  # a live version below the new floor whose entry or time is unknown
    if len(carried) > MAX_CARRIED:
        return None
    count = max([prev.versions, *(v.number for v in below)])
    fence = max([prev.fence, *(gen for at, gen in fences if at < seq)])
    kept_policies = tuple(p for p in policies if p[0] < seq)[-MAX_POLICIES:]
    return Floor(prev.number + 1, seq, lock, fence, count, tuple(carried), kept_policies)


def below(names: Sequence[int], limit_at: int, most: int) -> list[int]:
    """The numbered names below `limit_at`, lowest first, at most `most` of them (one removal run)."""
    return sorted(n for n in names if n < limit_at)[:max(most, 0)]
