"""The lock folder (`lock/`): observe, acquire, adopt, hold, renew, release and break the lease lock.

Each change of the lock is a new generation created exclusively; the highest one is the
lock's state, judged on the server's clock by the pure core (`statemachine.lease`). Taking
the lock is fenced in the log, so the lock builds on `Log`.
"""

from __future__ import annotations

import json
import secrets
from contextlib import suppress
from typing import Any

from statemachine.lease import (
    DEFAULT_SLACK,
    HolderLease,
    LockKind,
    LockObservation,
    LockStatus,
    Verdict,
    claim_lease,
    judge,
)

from .. import errors
from ..i18n import _
from . import floor
from .log import Log
from .model import Grant, LockInfo, Party
from .records import (
    FENCING_KINDS,
    MAX_APPEND_TRIES,
    MAX_LEASE,
    MAX_RECORD,
    MAX_TIME,
    RECORD_VERSION,
    _dict,
    _entry_fields_ok,
    _entry_time,
    _int,
    _json_object,
    _lock_fields_ok,
    _name,
    _note,
    _nowiso_utc,
    check_lease,
    check_note,
)

LOCK_PROBE = 8  # lock generations read at once upwards from the highest known one (a day: 3 or 4 new)


def new_session_id(party: Party) -> str:
    """A lock session: one per `open`, tied to this install."""
    return f"{party.install}-{secrets.token_hex(6)}"


def _lock_info(status: LockStatus, record: dict[str, Any], now: int) -> LockInfo:
    if not _lock_fields_ok(record):
        record = {}
    return LockInfo(status, _dict(record.get("holder")), _note(record.get("note")), now)


def _ours_released(obs: LockObservation, party: Party) -> bool:
    """Was the top generation a release by this install? Then nobody has claimed the lock
    since this computer last held it, and so (most likely) nobody has appended to the log."""
    return obs.kind is LockKind.RELEASE and (obs.session or "").startswith(f"{party.install}-")


class LockFolder(Log):
    """The area's lease lock with fencing tokens (generations)."""

    def observe_lock(self, log_too: bool = False) -> tuple[LockObservation, dict[str, Any]]:
        """The highest lock generation and its record (server mtime included); with `log_too`,
        the log's next slots are read in the same requests (`acquire` appends a fence next).

        Generations are removed only below a floor, so the highest known one is a safe place
        to probe upwards from: it and the next few are read at once (two round trips), again
        from the highest found while all of them exist. The highest known is the one this
        computer saw last or the floor's generation, else the highest generation a fence or
        break in the log names (it was published before that entry), else 1 (without a floor,
        generations are contiguous from 1: none there, none at all). A hint that is gone, or
        far behind, is replaced by a listing.
        """
        self._appended = False  # looking at the lock again: the log is read afresh too
        lookup = floor.begin_lookup(self)  # the command's first floor lookup travels with the reads
        hint = floor.lock_hint(self) or self._top_from_log()
        top, listed, full = hint or 1, False, 0
        for _try in range(1_000_000):
            paths = [self.p("lock", _name(top + i)) for i in range(LOCK_PROBE)]
            head = floor.log_start(self)
            extra = self._log_paths(head) if log_too else []
            found = self.session.read_many(paths + extra + ([lookup] if lookup else []), MAX_RECORD)
            if lookup:
                newer, lookup = found.pop() is not None, None
                if newer:  # a floor appeared: adopt it and read again from it
                    floor.refresh(self)
                    hint = floor.lock_hint(self) or self._top_from_log()
                    top, listed, full = hint or 1, False, 0
                    continue
            if extra:  # used only after the claim's floor lookup (`acquire`), which settles them
                self._take_slots(head, found[LOCK_PROBE:])
                log_too, found = False, found[:LOCK_PROBE]
            if found[0] is None:  # the hint (or the listed top) is gone, or nothing is there
                if listed:
                    raise errors.AreaCorrupt(_("the lock of area {name} vanished").format(name=self.name))
                if not hint:  # without a floor, generations are contiguous from 1: none at all
                    return LockObservation(0, LockKind.NONE), {}
                top, listed = self._listed_top(), True
                if not top:
                    return LockObservation(0, LockKind.NONE), {}
                continue
            present = next((i for i, f in enumerate(found) if f is None), LOCK_PROBE)
            if present == LOCK_PROBE:  # read on once (the log just read may name a later one),
                full += 1  # then list: many generations since the hint
                if listed or full < 2:
                    top = max(top + LOCK_PROBE - 1, self._top_from_log())
                else:
                    top, listed = self._listed_top(), True
                continue
            top += present - 1
            newest = found[present - 1]
            assert newest is not None
            self.cache.lock_top = top
            self.cache.save()
            record = (_json_object(newest.data) if newest.data is not None else None) or {}
            return self._observation(top, record, newest.stat.mtime), record
        raise errors.AreaCorrupt(_("the lock of area {name} vanished").format(name=self.name))

    def _top_from_log(self) -> int:
        """The highest generation a fence or break this computer read in the log names (0: none)."""
        gens = [e["gen"] for e in self.cache.entries.values()
                if e is not None and e.get("kind") in FENCING_KINDS and _entry_fields_ok(e)]
        return max(gens, default=0)

    def _listed_top(self) -> int:
        """The highest generation in a listing of `lock/` (0: none)."""
        gens = self._entries("lock")
        return gens[-1] if gens else 0

    @staticmethod
    def _observation(top: int, record: dict[str, Any], mtime: int) -> LockObservation:
        if not _lock_fields_ok(record):
            record = {}  # malformed: a claim with no lease (it expires after the slack)
        kind = record.get("kind", LockKind.CLAIM.value)
        try:
            lock_kind = LockKind(kind)
        except ValueError:
            lock_kind = LockKind.CLAIM  # unknown kinds are treated as live claims
        session = record.get("session")
        return LockObservation(
            generation=top, kind=lock_kind, session=session if isinstance(session, str) else None,
            published_at=mtime, lease_seconds=_int(record.get("lease_seconds"), 0, MAX_LEASE),
            since=_int(record.get("since"), None, MAX_TIME) or mtime,
        )

    def lock_info(self, me: str | None = None, slack: int = DEFAULT_SLACK) -> LockInfo:
        """The lock judged now on the server's clock, as `me` (a session id) sees it."""
        obs, record = self.observe_lock()
        now = self.server_now()
        status = judge(obs, me, now, slack)
        return _lock_info(status, record, now)

    def _lock_record(self, kind: LockKind, gen: int, session: str, party: Party,
                     lease_seconds: int, since: int | None, note: str = "") -> bytes:
        record = {
            "v": RECORD_VERSION, "gen": gen, "kind": kind.value, "session": session,
            "holder": party.as_dict(), "lease_seconds": lease_seconds, "since": since,
            "note": note, "client_time": _nowiso_utc(),
        }
        return json.dumps(record, sort_keys=True).encode()

    def _claim(self, kind: LockKind, gen: int, session: str, party: Party, lease_seconds: int,
               since: int | None, note: str = "") -> tuple[bool, HolderLease, int]:
        """Write and publish generation `gen`: won?, the lease counted here, the record's mtime."""
        tmp, lease, mtime = self._write_claim(kind, gen, session, party, lease_seconds, since, note)
        return self._publish_claim(tmp, gen, release=kind is LockKind.RELEASE), lease, mtime

    def _write_claim(self, kind: LockKind, gen: int, session: str, party: Party, lease_seconds: int,
                     since: int | None, note: str = "",
                     extra: tuple[tuple[str, bytes], ...] = ()) -> tuple[str, HolderLease, int]:
        """Write the record of generation `gen` to a private temp file, not yet published; its
        mtime on the server's clock comes back with the write (the published file keeps it:
        a hard link; without hard links the published file is younger, so a lease counted
        from it ends no later than the readers' count). `extra` temp files are written with it."""
        body = self._lock_record(kind, gen, session, party, lease_seconds, since, note)
        # Counted from before the temp file is written: the published file keeps the temp
        # file's mtime (hard link), so the server's lease never starts before ours.
        lease = claim_lease(gen, lease_seconds, self._clock)
        tmp = self._tmp()
        try:
            mtime = self._saw_server_time(self.session.write_records([(tmp, body), *extra])[0])
        except FileNotFoundError:
            self.check_present()  # AreaGone when the area was deleted meanwhile
            raise errors.AreaCorrupt(_("area {name} lacks its {folder}/ folder").format(
                name=self.name, folder="tmp")) from None
        return tmp, lease, mtime

    def _publish_claim(self, tmp: str, gen: int, release: bool = False) -> bool:
        """Publish a written claim as `lock/<gen>`; False if another party created it first.

        The floor is looked up after the creation (a generation re-created below it is lost),
        except for a release: a void release and a real one both leave us not holding the lock,
        so the answer would change nothing (docs/area-format.md, "Creating below the floor")."""
        won = self.session.publish(tmp, self.p("lock", _name(gen)))
        won = won and (release or not floor.created_generation_void(self, gen))  # below the floor: lost
        if won and gen > self.cache.lock_top:  # the next command probes upwards from here
            self.cache.lock_top = gen
            self.cache.save()
        return won

    def _claim_after(self, grant: Grant, kind: LockKind, party: Party, lease_seconds: int,
                     since: int | None) -> HolderLease | None:
        """Claim the generation right after our grant's without observing the lock first;
        None when that name exists already (then observe and decide as usual).

        The grant's generation holds our own claim or renewal, and generations are only
        created exclusively at the top + 1 and never removed (docs/area-format.md, rule 7):
        winning `G + 1` proves `G` was still the top, so the rule "the top generation must
        still be this session's claim or renewal" (Renew, Release) held, two round trips of
        observing fewer.
        """
        gen = grant.lease.generation + 1
        extra: tuple[tuple[str, bytes], ...] = ()
        if kind is LockKind.RENEW and self._release_wanted:  # the release after it, written now too
            release = (gen + 1, self._tmp())
            body = self._lock_record(LockKind.RELEASE, gen + 1, grant.session, party, 0, None)
            extra = ((release[1], body),)
        tmp, lease, mtime = self._write_claim(kind, gen, grant.session, party, lease_seconds, since,
                                              extra=extra)
        if extra:
            self.drop_prepared_release()
            self._release_ready = release
        won = self._publish_claim(tmp, gen, release=kind is LockKind.RELEASE)
        if won:
            self._claimed_at = mtime
        return lease if won else None

    def prepare_release(self) -> None:
        """This command will release the lock: a renewal made meanwhile writes the release
        record's temp file with its own (two round trips fewer at `release`). Call
        `drop_prepared_release` when the release does not happen."""
        self._release_wanted = True

    def drop_prepared_release(self) -> None:
        """Remove a release record written ahead and not published."""
        ready, self._release_ready = self._release_ready, None
        if ready is not None:
            with suppress(FileNotFoundError):
                self.session.remove(ready[1])

    def acquire(self, party: Party, lease_seconds: int, note: str = "",
                session: str | None = None) -> Grant | LockInfo:
        """Claim the lock: a `Grant`, or the `LockInfo` of whoever holds it."""
        check_lease(lease_seconds)
        note = check_note(note)
        session = session or new_session_id(party)
        obs, record = self.observe_lock(log_too=True)
        gen = obs.generation + 1
        fence = {"kind": "fence", "gen": gen, "session": session, "writer": party.as_dict()}
        head, prepared = floor.log_start(self), None
        if self._head_read == head:  # the log was read with the lock: the fence's slot is known
            prepared = (head + 1, self._tmp(), self._entry_bytes(fence, head + 1))
        # The claim's temp file, written after the top was observed, is the clock probe: its
        # mtime is the server's "now, read after P" (docs/area-format.md, "Judging the lock").
        # The fence entry's temp file is written with it; it is published only after the claim.
        tmp, lease, now = self._write_claim(LockKind.CLAIM, gen, session, party, lease_seconds, None, note,
                                            extra=((prepared[1], prepared[2]),) if prepared else ())
        status = judge(obs, session, now)
        if not status.claimable:
            with suppress(FileNotFoundError):
                self.session.remove(tmp)
            self._drop_tmp(prepared)
            return _lock_info(status, record, now)
        floor_read = floor.current(self).number
        if not self._publish_claim(tmp, gen):  # another party created this generation first
            self._drop_tmp(prepared)
            return self.lock_info(session)
        if floor.current(self).number != floor_read:  # the claim's lookup adopted a newer floor:
            self._head_read = None  # the log read with the lock may hold void slots; probe again
        try:
            since = now  # the claim's mtime: the temp file's (see `_write_claim`)
            fence_seq = self._append(fence, None, head_known=_ours_released(obs, party), prepared=prepared)
        except BaseException:
            # Half-acquired: let go at once rather than block everyone for the whole lease.
            with suppress(Exception):
                self._claim(LockKind.RELEASE, gen + 1, session, party, 0, None)
            raise
        return Grant(session, lease, fence_seq, since, since + lease_seconds)

    def adopt(self, session: str, party: Party, lease_seconds: int) -> Grant | None:
        """Take back a claim of `session` whose process died before recording it.

        Only the session's own id (kept locally before claiming) can adopt it; the lease is
        renewed at once. None when the lock is no longer that session's.
        """
        obs, record = self.observe_lock()
        if obs.session != session or obs.kind not in (LockKind.CLAIM, LockKind.RENEW):
            return None
        fences = [e["seq"] for e in self.log() if e.get("kind") == "fence" and e.get("session") == session]
        if fences:
            fence_seq = fences[-1]
        else:  # died between claiming and fencing: fence now, with the claimed generation
            fence_seq = self._append({"kind": "fence", "gen": obs.generation, "session": session,
                                      "writer": party.as_dict()}, None)
        since = obs.since or obs.published_at or 0
        lease = HolderLease(obs.generation, float("-inf"), float(lease_seconds))
        return self.renew(Grant(session, lease, fence_seq, since, since + lease_seconds), party)

    def holding(self, grant: Grant) -> tuple[bool, LockObservation]:
        """Is the highest generation still our live claim (on the server's clock)?"""
        obs, _rest = self.observe_lock()
        ours = obs.session == grant.session and obs.kind in (LockKind.CLAIM, LockKind.RENEW)
        return ours, obs

    def renew(self, grant: Grant, party: Party) -> Grant:
        """Extend our lease by claiming the next generation; `Fenced` if it was taken."""
        lease = self._claim_after(grant, LockKind.RENEW, party, int(grant.lease.lease_seconds), grant.since)
        if lease is None:  # a later generation exists: is the top still ours?
            ours, obs = self.holding(grant)
            if not ours:
                raise errors.Fenced(_("the lock was taken by someone else after your lease ran out"))
            won, lease, self._claimed_at = self._claim(LockKind.RENEW, obs.generation + 1, grant.session,
                                                       party, int(grant.lease.lease_seconds), grant.since)
            if not won:
                raise errors.Fenced(_("the lock was taken by someone else after your lease ran out"))
        return self._renewed(grant, lease)

    def ensure_holding(self, grant: Grant, party: Party) -> None:
        """Still ours? Renew first if our lease ran out on either clock; else `Fenced`.

        A lease this object has already checked or renewed (the same generation) needs no
        second look while our own clock holds it (e.g. after a close's upload): the deadline's
        margin covers the server's clock, and the log's fencing check refuses a late commit."""
        if self._held_checked == grant.lease.generation and grant.lease.valid(self._clock()):
            return
        if not grant.lease.valid(self._clock()) and self._renewed_after(grant, party):
            self._held_checked = grant.lease.generation
            return  # ran out on our clock (always, in a later process): renewed at once
        ours, obs = self.holding(grant)
        if not ours:
            raise errors.Fenced(self._lost_how(grant) + _("; your version was not sent"))
        if not grant.lease.valid(self._clock()) or \
                judge(obs, grant.session, self.server_now()).verdict is Verdict.EXPIRED:
            self.renew(grant, party)
        self._held_checked = grant.lease.generation

    def _renewed_after(self, grant: Grant, party: Party) -> bool:
        """Renew by claiming the generation right after the grant's (see `_claim_after`)."""
        lease = self._claim_after(grant, LockKind.RENEW, party, int(grant.lease.lease_seconds), grant.since)
        if lease is None:
            return False
        self._renewed(grant, lease)
        return True

    def _renewed(self, grant: Grant, lease: HolderLease) -> Grant:
        """Record a won renewal in the grant: the new lease runs from the new file's mtime (the
        one its write reported, see `_write_claim`)."""
        until = self._claimed_at + int(lease.lease_seconds)
        grant.lease, grant.until = lease, until
        return grant

    def _lost_how(self, grant: Grant) -> str:
        """Why a grant is no longer ours, in words: broken by NAME at TIME, or taken over."""
        self._appended = False
        for entry in reversed(self.log()):
            if entry.get("seq", 0) <= grant.fence_seq:
                break
            if entry.get("kind") == "break":
                who = _dict(entry.get("writer")).get("name", _("someone"))
                return _("your lock was broken by {who} at {time}").format(who=who, time=_entry_time(entry))
        who = _dict(self.observe_lock()[1].get("holder")).get("name", _("someone else"))
        return _("your lease ran out and {who} took the lock").format(who=who)

    def release(self, grant: Grant, party: Party) -> bool:
        """Let go; False when the lock was no longer ours (nothing to release)."""
        ready, self._release_ready, self._release_wanted = self._release_ready, None, False
        if ready is not None and ready[0] == grant.lease.generation + 1:  # written with the renewal
            if self._publish_claim(ready[1], ready[0], release=True):
                return True
        elif ready is not None:
            with suppress(FileNotFoundError):
                self.session.remove(ready[1])
        if self._claim_after(grant, LockKind.RELEASE, party, 0, None) is not None:
            return True
        ours, obs = self.holding(grant)
        if not ours:
            return False
        won, _lease, _mtime = self._claim(LockKind.RELEASE, obs.generation + 1, grant.session, party, 0, None)
        return won

    def break_lock(self, party: Party, reason: str = "") -> int:
        """Break whatever lock exists (needs unlocked keys): audited in the log."""
        self.require_keys()
        for _try in range(MAX_APPEND_TRIES):
            obs, record = self.observe_lock()
            gen = obs.generation + 1
            session = new_session_id(party)
            won, _lease, _mtime = self._claim(LockKind.BREAK, gen, session, party, 0, None, reason)
            if won:
                broken = _dict(record.get("holder")).get("name")
                self._append({"kind": "break", "gen": gen, "session": session, "writer": party.as_dict(),
                              "broken_holder": broken, "note": reason}, None)
                return gen
        raise errors.KeepsChanging(_("could not break the lock: it kept changing"), hint=_("try again"))
