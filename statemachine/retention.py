"""Retention (format 2, issue 11): which versions a policy keeps, and what a prune may delete.

Pure decisions over what the shell read from the host: version numbers with their server
times, each version's references, and the objects' server mtimes. No I/O and no clock
reads: ``now`` is the server's clock, passed in.

The policy follows restic's ``forget --keep-last/--keep-daily/--keep-monthly``: a version
is kept if any rule keeps it; calendar buckets count only the days (months) that have
versions. Unlike restic 0.17+, the oldest version is not kept additionally when a bucket
count is left over. Version numbers, not times, say which version is newer (the server's
clock may step back; the numbers never do); a version's time only picks its calendar day.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar

MAX_COUNT = 10_000  # upper bound of every keep count
MAX_OFFSET_MINUTES = 24 * 60 - 1  # |utc_offset_minutes| stays below a day
JAPAN_OFFSET_MINUTES = 9 * 60
DEFAULT_GRACE_SECONDS = 24 * 3600  # kopia's PackDeleteMinAge under --safety=full
RECORD_V = 1  # the "v" member of a policy record

_EPOCH = date(1970, 1, 1)
_MIN_DAY = date.min.toordinal() - _EPOCH.toordinal() + 1  # one day of margin either side
_MAX_DAY = date.max.toordinal() - _EPOCH.toordinal() - 1
_FIELDS = ("last", "daily", "monthly")

K = TypeVar("K", date, tuple[int, int])  # a calendar bucket: a day, or (year, month)


class RetentionPolicyError(ValueError):
    """A policy value out of bounds; `field` and `value` let the shell word it for a person."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(f"retention policy: {field}={_shown(value)}: {rule}")
        self.field = field
        self.value = value
        self.rule = rule


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the last `last` versions, one a day for `daily` days, one a month for `monthly` months.

    Days and months start at local midnight at `utc_offset_minutes` east of UTC (Japan by
    default). The defaults suit bookkeeping: 30 versions, 90 days, 84 months (the seven
    years Japanese tax law asks for books). Every count is 0…10000 and at least one is
    positive; the newest version is kept whatever the counts.
    """

    last: int = 30
    daily: int = 90
    monthly: int = 84
    utc_offset_minutes: int = JAPAN_OFFSET_MINUTES

    def __post_init__(self) -> None:
        for name in _FIELDS:
            _check_int(name, getattr(self, name), 0, MAX_COUNT)
        _check_int("utc_offset_minutes", self.utc_offset_minutes, -MAX_OFFSET_MINUTES,
                   MAX_OFFSET_MINUTES)
        if not (self.last or self.daily or self.monthly):
            raise RetentionPolicyError("last", self.last,
                                       "at least one of last, daily, monthly must be 1 or more")

    def to_record(self) -> dict[str, int]:
        """The policy as a JSON object (stored on the host)."""
        return {"v": RECORD_V, "last": self.last, "daily": self.daily, "monthly": self.monthly,
                "utc_offset_minutes": self.utc_offset_minutes}

    @classmethod
    def from_record(cls, record: object) -> RetentionPolicy:
        """The policy a record states; a void record (see `read_record`) gives the defaults."""
        return read_record(record) or cls()


def _shown(value: object) -> str:
    """A short repr for a message (a huge int's repr may itself raise)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RetentionPolicyError(name, value, "must be a whole number")
    if not low <= value <= high:
        raise RetentionPolicyError(name, value, f"must be between {low} and {high}")


def read_record(record: object) -> RetentionPolicy | None:
    """The policy in a record (a JSON text or an already parsed object), or None if void.

    A record is void when it is not a JSON object, its ``v`` is present and not 1, a count
    or the offset is missing, or any value breaks the policy's rules. Unknown members are
    ignored, as everywhere in the area format. Never raises.
    """
    if isinstance(record, str | bytes | bytearray):
        try:
            record = json.loads(record)
        except (ValueError, RecursionError):
            return None
    if not isinstance(record, Mapping):
        return None
    v = record.get("v", RECORD_V)
    if type(v) is not int or v != RECORD_V:
        return None
    keys = (*_FIELDS, "utc_offset_minutes")
    if any(key not in record for key in keys):
        return None
    try:
        return RetentionPolicy(**{key: record[key] for key in keys})
    except ValueError:
        return None


# --- which versions to keep ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeepDecision:
    """The versions kept and removed (ascending numbers), and why each kept one stays.

    A reason is ``"last"``, ``"daily 2026-11-28"``, ``"monthly 2026-10"``, or ``"newest"``
    (the newest version, when no rule kept it).
    """

    keep: tuple[int, ...]
    remove: tuple[int, ...]
    reasons: Mapping[int, tuple[str, ...]]

    @property
    def kept(self) -> frozenset[int]:
        """The kept numbers as a set (what `prune_plan` takes)."""
        return frozenset(self.keep)


def kept_versions(versions: Sequence[tuple[int, int]], policy: RetentionPolicy,
                  now: int) -> KeepDecision:
    """Apply `policy` to `(number, server time)` pairs at server time `now`.

    Rules (a version is kept if any holds):

    * **last**: it is one of the `last` highest numbers;
    * **daily**: it is the highest number of its local calendar day, and that day is one of
      the `daily` latest days that have versions (days without versions are not counted);
    * **monthly**: likewise for calendar months;
    * **newest**: it is the highest number of all.

    A time after `now` counts as `now`: a version stamped by a clock running ahead cannot
    claim a day that has not come yet. Raises ValueError if a number appears twice.
    """
    numbers = [number for number, _ in versions]
    if len(set(numbers)) != len(numbers):
        raise ValueError("kept_versions: a version number appears more than once")
    newest_first = sorted(versions, key=lambda v: v[0], reverse=True)
    reasons: dict[int, list[str]] = {number: [] for number in numbers}
    for number, _ in newest_first[:policy.last]:
        reasons[number].append("last")
    days = [(_local_day(t, now, policy.utc_offset_minutes), n) for n, t in newest_first]
    for day, number in _newest_per_bucket(days, policy.daily):
        reasons[number].append(f"daily {day.isoformat()}")
    months = [((day.year, day.month), number) for day, number in days]
    for (year, month), number in _newest_per_bucket(months, policy.monthly):
        reasons[number].append(f"monthly {year:04d}-{month:02d}")
    if newest_first and not reasons[newest_first[0][0]]:
        reasons[newest_first[0][0]].append("newest")
    keep = tuple(sorted(n for n, why in reasons.items() if why))
    remove = tuple(sorted(n for n, why in reasons.items() if not why))
    return KeepDecision(keep, remove, {n: tuple(reasons[n]) for n in keep})


def _local_day(server_time: int, now: int, offset_minutes: int) -> date:
    """The local calendar day of a server time (a future time counts as `now`)."""
    seconds = min(server_time, now) + offset_minutes * 60
    day = min(max(int(seconds // 86400), _MIN_DAY), _MAX_DAY)
    return _EPOCH + timedelta(days=day)


def _newest_per_bucket(items: list[tuple[K, int]], count: int) -> list[tuple[K, int]]:
    """For the `count` latest buckets, the bucket and its first (newest) number.

    `items` are `(bucket, number)` in descending number order.
    """
    first: dict[K, int] = {}
    for bucket, number in items:
        first.setdefault(bucket, number)
    latest = sorted(first, reverse=True)[:count]
    return [(bucket, first[bucket]) for bucket in latest]


# --- what a prune may delete ---------------------------------------------------------------------


@dataclass(frozen=True)
class PrunePlan:
    """What a prune deletes, in this order: first the versions, then the objects.

    `young` are unreferenced objects the grace period keeps for a later prune; `missing`
    are objects a kept version references that the listing lacks (damage, for `check`).
    All tuples are sorted.
    """

    remove_versions: tuple[int, ...]
    remove_objects: tuple[str, ...]
    young: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to delete."""
        return not (self.remove_versions or self.remove_objects)


def prune_plan(kept: Set[int], references: Mapping[int, Set[str]], objects: Mapping[str, int],
               now: int, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> PrunePlan:
    """Plan a prune from a listing: `references` maps every version to the object ids it needs,
    `objects` maps every listed object id to its server mtime, `now` is server now.

    The rule:

    1. Every version in `references` that is not in `kept` is removed.
    2. An object is removed if and only if no kept version references it **and** its age,
       ``now - mtime`` on the server's clock, is at least `grace_seconds`.
    3. An object younger than that is never removed, referenced or not: a concurrent writer
       uploads objects before it commits the version that references them, so a young
       unreferenced object may be part of a version about to appear. An object's mtime is
       when the host last wrote it, which may precede its publication (hard-link publishing
       keeps the temporary file's time), so the grace period MUST exceed the longest time a
       writer may take from writing an object to committing its version (the default is
       24 h). An mtime after `now` counts as young.
    4. The grace period protects only objects a writer wrote. A writer that may run while
       a prune does MUST NOT rely on an existing object that no version it read references
       (it uploads the object again, which renews its mtime); else the prune may delete it
       under the writer. A prune and a writer that both hold the exclusive lock never
       overlap (the lease fences a writer that lost it), so skipping present objects is
       then safe.
    5. Objects written after the listing are not in `objects` and so never in the plan.
    6. The versions are deleted before the objects: an interrupted prune then leaves only
       unreferenced objects, which the next prune deletes, never a version without its data.

    Raises ValueError if a kept version is not in `references` (its references are unknown,
    so nothing could be deleted safely), if versions exist but none is kept, or if
    `grace_seconds` is negative.
    """
    if not isinstance(grace_seconds, int) or isinstance(grace_seconds, bool) or grace_seconds < 0:
        raise ValueError(f"prune_plan: grace_seconds={grace_seconds!r} must be a whole number >= 0")
    unknown = sorted(set(kept) - set(references))
    if unknown:
        raise ValueError(f"prune_plan: references of kept versions {unknown} are unknown")
    if references and not kept:
        raise ValueError("prune_plan: at least one version must be kept")
    live: set[str] = set().union(*(references[number] for number in kept))
    unreferenced = [oid for oid in objects if oid not in live]
    old = {oid for oid in unreferenced if now - objects[oid] >= grace_seconds}
    return PrunePlan(
        remove_versions=tuple(sorted(set(references) - set(kept))),
        remove_objects=tuple(sorted(old)),
        young=tuple(sorted(set(unreferenced) - old)),
        missing=tuple(sorted(live - set(objects))),
    )

