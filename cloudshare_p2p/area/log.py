"""The commit log (`log/`): reading slots, appending under fencing, and the versions it holds.

Each entry is created exclusively at `head + 1`, so the log has no gaps; which commits count
as versions depends only on earlier entries (docs/area-format.md, "The commit log"). Format 2
adds two kinds judged by the same rule: `prune` (versions whose data may be gone) and `policy`
(a sealed retention policy, opened by area/retention.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .. import errors
from ..i18n import _
from ..transport import FileTooLarge, SmallFile
from . import floor
from .base import AreaBase
from .model import Grant, Version
from .records import (
    FENCING_KINDS,
    MAX_APPEND_TRIES,
    MAX_RECORD,
    OBJECT_ID,
    RECORD_VERSION,
    _dict,
    _entry_fields_ok,
    _entry_time,
    _json_object,
    _name,
    _nowiso_utc,
    commit_version,
)

LOG_PROBE = 8  # log slots read at once when looking for new entries


class SlotState(Enum):
    """What one log slot holds."""

    RECORD = "record"  # a readable entry
    VOID = "void"  # created, but torn, oversized or malformed: it counts as nothing
    ABSENT = "absent"  # not created yet: the log ends before it


@dataclass(frozen=True)
class Slot:
    """One log slot as read: its state, and the entry when it is a RECORD."""

    state: SlotState
    entry: dict[str, Any] | None = None

    @classmethod
    def of(cls, entry: dict[str, Any] | None) -> Slot:
        """A created slot: RECORD with its entry, or VOID (None, or not an object)."""
        return cls(SlotState.RECORD, entry) if isinstance(entry, dict) else cls(SlotState.VOID)


ABSENT_SLOT = Slot(SlotState.ABSENT)


@dataclass(frozen=True)
class LogView:
    """What the valid entries of the log say, in one walk."""

    versions: list[Version]  # the valid commits, numbered 1, 2, 3…
    pruned: frozenset[int]  # version numbers named by valid `prune` entries
    policies: tuple[tuple[int, str], ...] = ()  # (seq, sealed) of valid `policy` entries, oldest first


def _commit_counts(entry: dict[str, Any], highest_fence: int, newest: int) -> bool:
    """A commit entry is a version: not fenced, a real manifest, built on the newest version."""
    base = entry.get("base")
    return (
        entry.get("kind") == "commit" and entry["gen"] >= highest_fence
        and OBJECT_ID.fullmatch(str(entry.get("manifest", ""))) is not None
        and (base is None or base == newest)
    )


Start = tuple[int, list[Version], set[int], list[tuple[int, str]]]


def _walk(entries: list[dict[str, Any]], start: Start) -> LogView:
    """The versions, pruned numbers and policies that `entries` (in order, from the floor) make
    valid, starting from the floor's state `start` (F, versions, pruned, policies)."""
    highest_fence, out, pruned, policies = start
    for entry in entries:
        if not _entry_fields_ok(entry):
            continue  # a malformed entry counts as void
        gen, kind = entry["gen"], entry["kind"]
        if kind in FENCING_KINDS:
            highest_fence = max(highest_fence, gen)
        elif _commit_counts(entry, highest_fence, len(out)):
            out.append(commit_version(entry, len(out) + 1))
        elif gen < highest_fence:
            continue  # a fenced prune or policy counts as nothing
        elif kind == "prune" and max(entry["pruned"]) < len(out):
            pruned.update(entry["pruned"])
        elif kind == "policy":
            policies.append((entry["seq"], entry["sealed"]))
    return LogView(out, frozenset(pruned), tuple(policies))


class Log(AreaBase):
    """The area's commit log: entries, appends refused when fenced or stale, versions."""

    def _read_entry(self, seq: int) -> Slot:
        """Log slot `seq`: a RECORD, VOID (torn or malformed) or ABSENT (not created yet)."""
        if seq in self.cache.entries:
            return Slot.of(self.cache.entries[seq])
        try:
            raw = self.session.read_bytes(self.p("log", _name(seq)), MAX_RECORD)
        except FileNotFoundError:
            return ABSENT_SLOT
        except FileTooLarge:
            raw = b""  # oversized: void, like a torn entry
        return self._remember_slot(seq, raw)

    def _remember_slot(self, seq: int, raw: bytes) -> Slot:
        """A created slot's bytes checked (void unless a well-formed entry of this seq), remembered."""
        entry = _json_object(raw)
        if entry is None or entry.get("seq") != seq or not _entry_fields_ok(entry):
            entry = None
        self.cache.remember_entry(seq, entry)
        return Slot.of(entry)

    def _sync_log(self) -> int:
        """Read the entries appended since last time; return the head (highest seq).

        Slots are created in order (each writer creates head + 1 exclusively), so the log
        has no gaps: probing from the known head finds every new entry without a listing;
        the next LOG_PROBE slots are read at once (two round trips), again while all exist.
        The first read after this object won an append (unless it looked at the lock since)
        takes the log as that append found it (the slot was free, so the log ended there):
        e.g. an `open` chooses the version to receive from the log as it was when its fence
        landed, which is what rule 3 asks.
        """
        if self._appended:
            self._appended = False
            if self._head_read == floor.log_start(self):
                return self._head_read
        while True:
            start = floor.log_start(self)
            head = self._take_slots(start, None)
            while head is None:
                head = self._take_slots(floor.log_start(self), None)
            if floor.settled(self, start, head):  # new entries: no newer floor voids them
                return head
            self._head_read = None

    def _log_paths(self, head: int) -> list[str]:
        """The LOG_PROBE slots after `head`, read at once when looking for new entries."""
        return [self.p("log", _name(seq)) for seq in range(head + 1, head + 1 + LOG_PROBE)]

    def _take_slots(self, head: int, found: list[SmallFile | None] | None) -> int | None:
        """Remember the slots after `head` as read (`found`; read now if None): the new head,
        or None when every slot asked for exists (read on)."""
        if found is None:
            found = self.session.read_many(self._log_paths(head), MAX_RECORD)
        for got in found:
            if got is None:
                break
            head += 1
            self._remember_slot(head, got.data if got.data is not None else b"")  # oversized: void
        else:
            self.cache.save()
            return None
        self.cache.save()
        self._head_read = head
        return head

    @staticmethod
    def _entry_bytes(fields: dict[str, Any], seq: int) -> bytes:
        """The entry `fields` as slot `seq` holds it."""
        body = dict(fields, v=RECORD_VERSION, seq=seq, time=_nowiso_utc())
        return json.dumps(body, sort_keys=True).encode()

    def _append(self, entry: dict[str, Any] | Callable[[int], dict[str, Any]], grant: Grant | None,
                base: int | None = None, head_known: bool = False,
                prepared: tuple[int, str, bytes] | None = None,
                with_object: tuple[str, bytes] | None = None) -> int:
        """Exclusively create the next log slot; with a grant, refuse if fenced; with a
        base, refuse (`StaleBase`) if a newer version than `base` exists. `entry` may be a
        function of the slot's seq (a sealed record bound to it is made per try).

        The first try is made at the head this object last read or appended, without probing
        again, and so, with `head_known` (the caller has reason to think the log has not moved
        since this computer last read it), is an entry with neither check at the remembered
        head: publishing is exclusive, so it lands only if that slot was still free, i.e. at
        the true head + 1, and the checks ran over every entry before it (docs/area-format.md,
        rule 5); a lost try reads on as usual. `prepared` (seq, temp file, its bytes): the entry
        already written for that slot (with the claim it follows), published as it is when the
        first try is at that slot. `with_object` (final path, bytes): an object the entry names
        (its manifest), written with the entry's temp file on the first try and placed before
        the entry is published (docs/area-format.md, rule 2); nothing is placed if the checks
        refuse the entry. A slot created below a floor published meanwhile is void: read on
        from the floor and try again."""
        known = floor.log_start(self)
        guess = known > 0 and (self._head_read == known or (head_known and grant is None and base is None))
        for _try in range(MAX_APPEND_TRIES):
            head = known if guess and _try == 0 else self._sync_log()
            if grant is not None:
                floor.check_fence(self, grant)
                self._check_not_fenced(grant, range(grant.fence_seq + 1, head + 1))
            if base is not None:
                versions = self.view_upto(head).versions
                if len(versions) != base:
                    raise errors.StaleBase(base, len(versions))
            seq = head + 1
            if prepared is not None and prepared[0] == seq:
                raw = prepared[2]
                won = self.session.publish(prepared[1], self.p("log", _name(seq)))
            elif with_object is not None:
                fields = entry(seq) if callable(entry) else entry
                raw = self._entry_bytes(fields, seq)
                won = self._publish_after(with_object, raw, self.p("log", _name(seq)))
            else:
                self._drop_tmp(prepared)
                fields = entry(seq) if callable(entry) else entry
                raw = self._entry_bytes(fields, seq)
                won = self._publish(self.p("log", _name(seq)), raw)
            prepared = with_object = None
            if won and floor.created_slot_void(self, seq):
                won = False  # a removed slot re-created below the floor: void; read on from the floor
            if won:
                self.cache.remember_entry(seq, json.loads(raw))
                self.cache.save()
                self._head_read, self._appended = seq, True  # slot `seq` was free: the log ended there
                return seq
            self._head_read = None
        raise errors.KeepsChanging(_("the commit log kept moving; gave up"), hint=_("try again"))

    def _publish_after(self, first: tuple[str, bytes], raw: bytes, final: str) -> bool:
        """Write the object `first` and the record `raw` to temp files at once, place the object,
        then publish the record at `final` (only once the object's placing was answered)."""
        obj_tmp, tmp = self._tmp(), self._tmp()
        self.session.write_records([(obj_tmp, first[1]), (tmp, raw)])
        try:
            self.session.publish_object(obj_tmp, first[0], len(first[1]))
        except BaseException:
            with suppress(Exception):
                self.session.remove(tmp)
            raise
        return self.session.publish(tmp, final)

    def _drop_tmp(self, prepared: tuple[int, str, bytes] | None) -> None:
        """Remove a prepared temp file that will not be published."""
        if prepared is not None:
            with suppress(FileNotFoundError):
                self.session.remove(prepared[1])

    def _check_not_fenced(self, grant: Grant, later: Iterable[int]) -> None:
        for seq in later:
            slot = self._read_entry(seq)
            if slot.state is not SlotState.RECORD or slot.entry is None:
                continue  # void or absent: fences nothing
            entry = slot.entry
            if entry.get("kind") in FENCING_KINDS and entry.get("session") != grant.session:
                who = _dict(entry.get("writer")).get("name", "someone")
                if entry.get("kind") == "break":
                    raise errors.Fenced(_("your lock was broken by {who} at {time}; your version was not "
                                          "sent").format(who=who, time=_entry_time(entry)))
                raise errors.Fenced(
                    _("your lease ran out and {who} took the lock (generation {generation}); your version "
                      "was not sent").format(who=who, generation=entry.get('gen'))
                )

    def log(self) -> list[dict[str, Any]]:
        """Every readable log entry, in order (void entries left out)."""
        return self._log_upto(self._sync_log())

    def _log_upto(self, head: int) -> list[dict[str, Any]]:
        """The readable entries up to `head` as this computer knows them (no I/O), from the floor."""
        start = floor.first_seq(self)
        return [e for e in (self.cache.entries.get(s) for s in range(start, head + 1)) if e is not None]

    def versions(self) -> list[Version]:
        """Valid commits, numbered 1, 2, 3…

        A commit counts only if no newer fence precedes it and, when it names its `base`,
        that base is the newest valid version before it (a copy built on an older version
        is never published as if it were the newest). The log is append-only and validity
        depends only on earlier entries, so a version's number never changes.
        """
        return self.log_view().versions

    def pruned_versions(self) -> frozenset[int]:
        """The numbers of the versions a valid `prune` entry removed (their data may be gone)."""
        return self.log_view().pruned

    def log_view(self) -> LogView:
        """Walk the log once: the versions, the pruned numbers and the valid policy entries.

        A `prune` or `policy` entry counts, like a commit, only if no newer fence precedes it;
        a `prune` entry also only if every number it names is a version older than the newest
        at its place (the newest version is never pruned). Others are void.
        """
        entries = self.log()  # first: reading may adopt a newer floor
        return _walk(entries, floor.view_start(self))

    def view_upto(self, head: int) -> LogView:
        """`log_view` of the entries up to `head` as already read (no I/O): what the log said
        when its head was `head` (validity depends only on earlier entries)."""
        return _walk(self._log_upto(head), floor.view_start(self))

    def newest(self) -> Version | None:
        """The newest version, None when nothing was committed yet."""
        versions = self.versions()
        return versions[-1] if versions else None

    def newest_number(self) -> int:
        """The newest version's number, 0 when nothing was committed yet."""
        newest = self.newest()
        return newest.version if newest else 0
