"""The share area on the host: layout, lease lock with fencing, commit log, snapshots.

The format is specified in docs/area-format.md; this module is its reference
implementation. Mutual exclusion rests only on exclusive creation (hard link or
``open(..., 'wx')``) of never-rewritten files; lease expiry is judged on the server's
clock by the pure core (``statemachine.lease``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final, overload

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

from . import crypto, errors
from .i18n import _
from .snapshot import CHUNK_SIZE, CHUNKER, ChunkCache, LocalSnapshot, Manifest, restore
from .textsafe import MAX_NAME, MAX_NOTE, note_problem, printable
from .transport import FileTooLarge, Session

FORMAT = "cloudshare-area"
FORMAT_VERSION = 1
RECORD_VERSION = 1
AREA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENTRY_NAME = re.compile(r"[0-9]{20}")
OBJECT_ID = re.compile(r"[0-9a-f]{64}")
FENCING_KINDS = ("fence", "break")
MAX_APPEND_TRIES = 64
MAX_RECORD = 16 << 10  # lock records and log entries; a larger one is void (notes are at most 1 KiB)
MAX_CONFIG = 64 << 10
MAX_LEASE = 7 * 86400  # the longest lease a client may ask for; a record saying more is malformed
MAX_TIME = 1 << 34  # server seconds (year 2514): a larger time in a record is malformed
MAX_COUNT = 1 << 53  # generations, sequence numbers, sizes


def _name(n: int) -> str:
    return f"{n:020d}"


class _Slot(Enum):
    """A log slot that no one has created yet (a void entry exists but cannot be read)."""

    ABSENT = "absent"


ABSENT: Final = _Slot.ABSENT


@overload
def _int(value: Any, default: int = 0, limit: int = MAX_COUNT) -> int: ...


@overload
def _int(value: Any, default: None, limit: int = MAX_COUNT) -> int | None: ...


def _int(value: Any, default: int | None = 0, limit: int = MAX_COUNT) -> int | None:
    """A non-negative int up to `limit` from a record field, or `default` (records are untrusted)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
    return value if ok else default


def check_note(note: str) -> str:
    """A note a client may write: at most 1 KiB (a longer one is refused, not cut)."""
    problem = note_problem(note or "")
    if problem:
        raise errors.InvalidName(problem, hint=_("write a shorter note (about one line)"))
    return note or ""


def check_lease(seconds: int) -> int:
    """A lease a client may ask for: 1 s to 7 days."""
    if not isinstance(seconds, int) or not 1 <= seconds <= MAX_LEASE:
        raise errors.InvalidName(_("a lease of {seconds} s is out of range (at most 7 days)").format(
            seconds=seconds),
                                 hint=_("ask for at most 7 days (for example --lease 8h)"))
    return seconds


def _nowiso_utc() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def validate_area_name(name: str) -> str:
    """Area names are one path component: letters, digits, ``._-``, at most 64."""
    if not AREA_NAME.fullmatch(name or ""):
        raise errors.InvalidName(
            _("invalid area name {name!r}").format(name=name),
            hint=_("use letters, digits, '.', '_' or '-' (at most 64, not starting with '.')"),
        )
    return name


@dataclass(frozen=True)
class Party:
    """Who acts: shown to the others in lock records and the log."""

    name: str
    install: str
    host: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "host": self.host, "install": self.install}


@dataclass(frozen=True)
class LockInfo:
    """The lock as everyone sees it: the judgement plus the record's details."""

    status: LockStatus
    holder: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    server_now: int = 0

    @property
    def verdict(self) -> Verdict:
        return self.status.verdict

    def as_json(self) -> dict[str, Any]:
        live = self.status.verdict in (Verdict.HELD_BY_ME, Verdict.HELD_BY_OTHER)
        return {
            "state": "locked" if live else "free",
            "generation": self.status.generation,
            "holder": self.holder.get("name") if live else None,
            "holder_host": self.holder.get("host") if live else None,
            "since": iso_utc(self.status.since) if live else None,
            "until": iso_utc(self.status.until) if live else None,
            "note": self.note if live else None,
        }


def iso_utc(ts: int | None) -> str | None:
    """Server seconds as ISO 8601 UTC (`…Z`), the form of every `--json` time."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Grant:
    """A lock we hold: fencing token, our lease, and where our fence sits in the log."""

    session: str
    lease: HolderLease
    fence_seq: int
    since: int
    until: int


def grant_to_dict(grant: Grant) -> dict[str, Any]:
    """What a later process needs to close: the lease clock does not survive, so it renews."""
    return {"session": grant.session, "generation": grant.lease.generation, "fence_seq": grant.fence_seq,
            "since": grant.since, "until": grant.until, "lease_seconds": grant.lease.lease_seconds}


def grant_from_dict(data: dict[str, Any]) -> Grant:
    """A grant loaded in another process: its local deadline counts as passed (renew first)."""
    lease = HolderLease(int(data["generation"]), float("-inf"), float(data["lease_seconds"]))
    return Grant(data["session"], lease, int(data["fence_seq"]), int(data["since"]), int(data["until"]))


@dataclass(frozen=True)
class Version:
    """One valid commit of the log."""

    version: int  # 1, 2, 3…: the ordinal of this commit among the log's valid commits
    seq: int  # the log sequence number of the commit entry
    manifest: str
    size: int
    writer: dict[str, Any]
    time: str
    gen: int
    note: str = ""
    restored_from: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "size": self.size, "writer": self.writer.get("name"),
            "writer_host": self.writer.get("host"), "time": self.time,
            "restored_from": self.restored_from, "note": self.note or None, "log_seq": self.seq,
        }


@dataclass
class TransferStats:
    chunks_uploaded: int = 0
    chunks_skipped: int = 0
    bytes_uploaded: int = 0
    chunks_downloaded: int = 0
    chunks_cached: int = 0
    bytes_downloaded: int = 0


class Area:
    """One share area (a folder on the host) reached through an open `Session`."""

    def __init__(self, session: Session, name: str, clock: Callable[[], float] | None = None) -> None:
        self.session = session
        self.name = validate_area_name(name)
        self.root = session.path(name)
        self.config: dict[str, Any] | None = None
        self.keys: crypto.Keys | None = None
        self.data_key: bytes | None = None  # the unwrapped key, for remembering on this computer
        self.stats = TransferStats()
        self._clock = clock or time.monotonic
        self.cache = AreaCache(None)
        self._cache_dir: Path | None = None
        self.interrupted: Callable[[], bool] = lambda: False  # a Ctrl-C waiting for a safe point

    def check_interrupt(self) -> None:
        """Stop at a safe point (between chunks) when the person pressed Ctrl-C."""
        if self.interrupted():
            raise KeyboardInterrupt

    def use_cache(self, cache_dir: Path) -> None:
        """Remember log entries and the lock's top generation under cache_dir/<area_id>/.

        Takes effect once the config is read (the cache is per area id).
        """
        self._cache_dir = cache_dir
        if self.config is not None:
            self.cache = AreaCache(cache_dir / self.config["area_id"] / "area.json")

    # --- paths --------------------------------------------------------------------

    def p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _chunk_path(self, chunk_id: str) -> str:
        return self.p("chunks", chunk_id[:2], chunk_id)

    def _tmp(self) -> str:
        return self.p("tmp", f"{uuid.uuid4().hex}.tmp")

    # --- publishing immutable files -------------------------------------------------

    def _publish(self, final: str, data: bytes) -> bool:
        """Write `data` under a private temp name, then create `final` exclusively."""
        tmp = self._tmp()
        self.session.upload(tmp, data)
        return self.session.publish(tmp, final)

    # --- create, load, password -------------------------------------------------------

    def create(self, dataset_name: str, password: str, creator: Party,
               kdf: dict[str, Any] | None = None) -> None:
        """Create the area; refuses an area that exists. The config is published last."""
        if self.session.stat(self.p("config")) is not None:
            raise errors.AreaExists(_("area {name} already exists on the host").format(name=self.name))
        if not self.session.mkdir(self.root) and self._leftovers():
            raise errors.AreaExists(
                _("the folder of area {name} holds leftovers of an earlier area").format(name=self.name),
                hint=_("choose another area name, or ask the firm to remove that folder on the host"),
            )
        for sub in ("lock", "log", "manifests", "chunks", "tmp"):
            self.session.mkdir(self.p(sub))
        params = dict(kdf or crypto.KDF_DEFAULTS)
        salt = crypto.new_salt()
        area_id = uuid.uuid4().hex
        data_key = crypto.new_data_key()
        wrapped = crypto.wrap_key(crypto.derive_kek(password, salt, params), data_key, area_id)
        config = {
            "format": FORMAT, "version": FORMAT_VERSION, "area_id": area_id,
            "dataset": dataset_name, "created": _nowiso_utc(), "created_by": creator.as_dict(),
            "kdf": {**params, "salt": base64.b64encode(salt).decode()},
            "wrapped_key": base64.b64encode(wrapped).decode(), "chunker": CHUNKER,
        }
        body = json.dumps(config, indent=1, sort_keys=True).encode()
        if not self._publish(self.p("config"), body):
            raise errors.AreaExists(_("area {name} already exists on the host").format(name=self.name))
        self.config = config
        self.data_key = data_key
        self.keys = crypto.keys_from_data_key(data_key)

    def _leftovers(self) -> bool:
        for sub in ("lock", "log"):
            try:
                if self.session.listdir(self.p(sub)):
                    return True
            except FileNotFoundError:
                continue
        return False

    def load(self) -> dict[str, Any]:
        """Read and check the config; AreaGone if the area was deleted or emptied."""
        if self.config is not None:
            return self.config
        try:
            raw = self.session.read_bytes(self.p("config"), MAX_CONFIG)
        except FileNotFoundError:
            raise self._gone() from None
        except FileTooLarge:
            raise errors.AreaCorrupt(_("the config of area {name} is too large").format(
                name=self.name)) from None
        self.config = parse_config(raw)
        if self._cache_dir is not None:
            self.use_cache(self._cache_dir)
        return self.config

    def _gone(self) -> errors.AreaGone:
        what = "emptied" if self.session.stat(self.root) is not None else "deleted"
        return errors.AreaGone(_("the data of area {name} is gone from the host ({what})").format(
            name=self.name, what=what))

    def check_present(self) -> None:
        """Raise AreaGone if the area's config is no longer on the host."""
        if self.session.stat(self.p("config")) is None:
            raise self._gone()

    @property
    def area_id(self) -> str:
        return self.load()["area_id"]

    def unlock_keys(self, password: str) -> crypto.Keys:
        """Check the share password against the area; WrongPassword changes nothing."""
        config = self.load()
        kdf = dict(config["kdf"])
        try:
            salt = base64.b64decode(kdf.pop("salt"))
            wrapped = base64.b64decode(config["wrapped_key"])
            kek = crypto.derive_kek(password, salt, kdf)
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.AreaCorrupt(_("area {name} has unusable key parameters: {error}").format(
                name=self.name, error=exc)) from None
        self.data_key = crypto.unwrap_key(kek, wrapped, config["area_id"])
        self.keys = crypto.keys_from_data_key(self.data_key)
        return self.keys

    def use_data_key(self, data_key: bytes) -> crypto.Keys:
        """Use a data key remembered on this computer (it belongs to this area's id)."""
        self.load()
        self.data_key = data_key
        self.keys = crypto.keys_from_data_key(data_key)
        return self.keys

    # --- records ------------------------------------------------------------------------

    def _read_json(self, path: str) -> dict[str, Any] | None:
        """A record as a dict; None if missing, oversized, torn or not an object (void)."""
        try:
            raw = self.session.read_bytes(path, MAX_RECORD)
        except (FileNotFoundError, FileTooLarge):
            return None
        return _json_object(raw)

    def _read_entry(self, seq: int) -> dict[str, Any] | None | _Slot:
        """Log entry `seq`: a dict, None if void (torn or malformed), ABSENT if not created yet."""
        if seq in self.cache.entries:
            return self.cache.entries[seq]
        try:
            raw = self.session.read_bytes(self.p("log", _name(seq)), MAX_RECORD)
        except FileNotFoundError:
            return ABSENT
        except FileTooLarge:
            raw = b""  # oversized: void, like a torn entry
        entry = _json_object(raw)
        if entry is None or entry.get("seq") != seq or not _entry_fields_ok(entry):
            entry = None
        self.cache.remember_entry(seq, entry)
        return entry

    def _sync_log(self) -> int:
        """Read the entries appended since last time; return the head (highest seq).

        Slots are created in order (each writer creates head + 1 exclusively), so the log
        has no gaps: probing from the known head finds every new entry without a listing.
        """
        head = self.cache.log_head()
        while self._read_entry(head + 1) is not ABSENT:
            head += 1
        self.cache.save()
        return head

    def _entries(self, folder: str) -> list[int]:
        try:
            names = self.session.listdir(self.p(folder))
        except FileNotFoundError:
            self.check_present()
            raise errors.AreaCorrupt(_("area {name} lacks its {folder}/ folder").format(
                name=self.name, folder=folder)) from None
        return sorted(int(n) for n in names if ENTRY_NAME.fullmatch(n))

    # --- the lock -------------------------------------------------------------------------

    def observe_lock(self) -> tuple[LockObservation, dict[str, Any]]:
        """The highest lock generation and its record (server mtime included).

        Generations are never removed, so the highest known one is a safe place to probe
        upwards from; without a hint (or if the hint is gone) the folder is listed once.
        """
        top = self.cache.lock_top
        st = self.session.stat(self.p("lock", _name(top))) if top else None
        if st is None:
            gens = self._entries("lock")
            if not gens:
                return LockObservation(0, LockKind.NONE), {}
            top = gens[-1]
            st = self.session.stat(self.p("lock", _name(top)))
        for _try in range(1_000_000):
            nxt = self.session.stat(self.p("lock", _name(top + 1)))
            if nxt is None:
                break
            top, st = top + 1, nxt
        if st is None:
            raise errors.AreaCorrupt(_("the lock of area {name} vanished").format(name=self.name))
        self.cache.lock_top = top
        self.cache.save()
        record = self._read_json(self.p("lock", _name(top))) or {}
        return self._observation(top, record, st.mtime), record

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

    def server_now(self) -> int:
        return self.session.server_now(self.p("tmp"))

    def lock_info(self, me: str | None = None, slack: int = DEFAULT_SLACK) -> LockInfo:
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
               since: int | None, note: str = "") -> tuple[bool, HolderLease]:
        body = self._lock_record(kind, gen, session, party, lease_seconds, since, note)
        # Counted from before the temp file is written: the published file keeps the temp
        # file's mtime (hard link), so the server's lease never starts before ours.
        lease = claim_lease(gen, lease_seconds, self._clock)
        tmp = self._tmp()
        self.session.upload(tmp, body)
        return self.session.publish(tmp, self.p("lock", _name(gen))), lease

    def acquire(self, party: Party, lease_seconds: int, note: str = "",
                session: str | None = None) -> Grant | LockInfo:
        """Claim the lock: a `Grant`, or the `LockInfo` of whoever holds it."""
        check_lease(lease_seconds)
        note = check_note(note)
        session = session or new_session_id(party)
        obs, record = self.observe_lock()
        now = self.server_now()
        status = judge(obs, session, now)
        if not status.claimable:
            return _lock_info(status, record, now)
        gen = obs.generation + 1
        won, lease = self._claim(LockKind.CLAIM, gen, session, party, lease_seconds, None, note)
        if not won:  # another party created this generation first
            return self.lock_info(session)
        try:
            since = self._mtime(self.p("lock", _name(gen)))
            fence_seq = self._append({"kind": "fence", "gen": gen, "session": session,
                                      "writer": party.as_dict()}, None)
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

    def _mtime(self, path: str) -> int:
        st = self.session.stat(path)
        if st is None:
            raise errors.AreaCorrupt(_("{path} vanished right after it was created").format(path=path))
        return st.mtime

    def holding(self, grant: Grant) -> tuple[bool, LockObservation]:
        """Is the highest generation still our live claim (on the server's clock)?"""
        obs, _rest = self.observe_lock()
        ours = obs.session == grant.session and obs.kind in (LockKind.CLAIM, LockKind.RENEW)
        return ours, obs

    def renew(self, grant: Grant, party: Party) -> Grant:
        """Extend our lease by claiming the next generation; `Fenced` if it was taken."""
        ours, obs = self.holding(grant)
        if not ours:
            raise errors.Fenced(_("the lock was taken by someone else after your lease ran out"))
        won, lease = self._claim(LockKind.RENEW, obs.generation + 1, grant.session, party,
                                 int(grant.lease.lease_seconds), grant.since)
        if not won:
            raise errors.Fenced(_("the lock was taken by someone else after your lease ran out"))
        until = self._mtime(self.p("lock", _name(lease.generation))) + int(lease.lease_seconds)
        grant.lease, grant.until = lease, until
        return grant

    def release(self, grant: Grant, party: Party) -> bool:
        """Let go; False when the lock was no longer ours (nothing to release)."""
        ours, obs = self.holding(grant)
        if not ours:
            return False
        won, _rest = self._claim(LockKind.RELEASE, obs.generation + 1, grant.session, party, 0, None)
        return won

    def break_lock(self, party: Party, reason: str = "") -> int:
        """Break whatever lock exists (needs unlocked keys): audited in the log."""
        self.require_keys()
        for _try in range(MAX_APPEND_TRIES):
            obs, record = self.observe_lock()
            gen = obs.generation + 1
            session = new_session_id(party)
            won, _rest = self._claim(LockKind.BREAK, gen, session, party, 0, None, reason)
            if won:
                broken = _dict(record.get("holder")).get("name")
                self._append({"kind": "break", "gen": gen, "session": session, "writer": party.as_dict(),
                              "broken_holder": broken, "note": reason}, None)
                return gen
        raise errors.KeepsChanging(_("could not break the lock: it kept changing"), hint=_("try again"))

    # --- the commit log -------------------------------------------------------------------

    def _append(self, entry: dict[str, Any], grant: Grant | None, base: int | None = None) -> int:
        """Exclusively create the next log slot; with a grant, refuse if fenced; with a
        base, refuse (`StaleBase`) if a newer version than `base` exists."""
        for _try in range(MAX_APPEND_TRIES):
            head = self._sync_log()
            if grant is not None:
                self._check_not_fenced(grant, range(grant.fence_seq + 1, head + 1))
            if base is not None:
                newest = self.newest()
                if (newest.version if newest else 0) != base:
                    raise errors.StaleBase(base, newest.version if newest else 0)
            seq = head + 1
            body = dict(entry, v=RECORD_VERSION, seq=seq, time=_nowiso_utc())
            if self._publish(self.p("log", _name(seq)), json.dumps(body, sort_keys=True).encode()):
                self.cache.remember_entry(seq, json.loads(json.dumps(body)))
                self.cache.save()
                return seq
        raise errors.KeepsChanging(_("the commit log kept moving; gave up"), hint=_("try again"))

    def _check_not_fenced(self, grant: Grant, later: Iterable[int]) -> None:
        for seq in later:
            entry = self._read_entry(seq)
            if not isinstance(entry, dict):
                continue  # void or absent: fences nothing
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
        head = self._sync_log()
        return [e for e in (self.cache.entries[s] for s in range(1, head + 1)) if e is not None]

    def versions(self) -> list[Version]:
        """Valid commits, numbered 1, 2, 3…

        A commit counts only if no newer fence precedes it and, when it names its `base`,
        that base is the newest valid version before it (a copy built on an older version
        is never published as if it were the newest). The log is append-only and validity
        depends only on earlier entries, so a version's number never changes.
        """
        highest_fence = 0
        out: list[Version] = []
        for entry in self.log():
            if not _entry_fields_ok(entry):
                continue  # a malformed entry counts as void
            gen = entry["gen"]
            if entry["kind"] in FENCING_KINDS:
                highest_fence = max(highest_fence, gen)
            elif _commit_counts(entry, highest_fence, len(out)):
                out.append(Version(
                    version=len(out) + 1, seq=entry["seq"], manifest=entry["manifest"],
                    size=_int(entry.get("size"), 0), writer=_dict(entry.get("writer")),
                    time=printable(entry.get("time", ""), 40), gen=gen, note=_note(entry.get("note")),
                    restored_from=_int(entry.get("restored_from"), None),
                ))
        return out

    def newest(self) -> Version | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def newest_number(self) -> int:
        """The newest version's number, 0 when nothing was committed yet."""
        newest = self.newest()
        return newest.version if newest else 0

    # --- snapshots --------------------------------------------------------------------------

    def require_keys(self) -> crypto.Keys:
        """The unlocked keys (set by `create`, `unlock_keys` or `use_data_key`), else CloudShareError."""
        if self.keys is None:
            raise errors.KeysMissing(_("the share password was not given for this area"))
        return self.keys

    def upload_snapshot(self, snap: LocalSnapshot, cache: ChunkCache | None = None,
                        progress: Callable[[int], None] | None = None) -> str:
        """Upload the chunks the area lacks, then the manifest; returns the manifest id."""
        keys = self.require_keys()
        made_dirs: set[str] = set()
        for chunk_id in sorted(snap.manifest.chunk_ids()):
            self.check_interrupt()
            path = self._chunk_path(chunk_id)
            found = self.session.stat(path)
            if found is not None and cache is not None and cache.has(chunk_id):
                self.stats.chunks_skipped += 1  # verified here before: objects are never torn later
                continue
            plain = snap.read_chunk(chunk_id)
            blob = crypto.seal(keys, crypto.KIND_CHUNK, chunk_id, plain)
            if found is not None and not found.is_dir and found.size == len(blob):
                self.stats.chunks_skipped += 1  # complete (checked by size, never trusted by name)
                continue
            if chunk_id[:2] not in made_dirs:
                self.session.mkdir(self.p("chunks", chunk_id[:2]))
                made_dirs.add(chunk_id[:2])
            self.session.put_object(self._tmp(), path, blob)  # a torn one is replaced
            self.stats.chunks_uploaded += 1
            self.stats.bytes_uploaded += len(blob)
            if cache is not None:
                cache.put(chunk_id, plain)
            if progress:
                progress(len(plain))
        body = snap.manifest.to_json_bytes()
        manifest_id = crypto.chunk_id(keys, body)
        blob = crypto.seal(keys, crypto.KIND_MANIFEST, manifest_id, body)
        if self.session.object_complete(self.p("manifests", manifest_id), len(blob)) is not True:
            self.session.put_object(self._tmp(), self.p("manifests", manifest_id), blob)
            self.stats.bytes_uploaded += len(blob)
        return manifest_id

    def commit(self, grant: Grant, party: Party, snap: LocalSnapshot, note: str = "",
               cache: ChunkCache | None = None, progress: Callable[[int], None] | None = None,
               *, base: int) -> int:
        """Publish a new version built on version `base` (0: none) under our lease.

        Returns its number. `Fenced` if a newer holder exists; `StaleBase` if `base` is not
        the newest version (the work must be kept aside, never published over newer data).
        A retry after a commit that was published but not recorded returns that version.
        """
        note = check_note(note)
        self.ensure_holding(grant, party)
        sent = self._check_base(base, snap.manifest)
        if sent is not None:
            return sent
        manifest_id = self.upload_snapshot(snap, cache, progress)
        self.ensure_holding(grant, party)  # a long upload may have outlived a short lease
        return self._commit_entry(grant, party, manifest_id, snap.manifest.total_size(), note, None, base)

    def _check_base(self, base: int, manifest: Manifest) -> int | None:
        """None if `base` is the newest version; the newest version's number if our copy
        already is it (sent by an interrupted close); else `StaleBase`."""
        newest = self.newest()
        if (newest.version if newest else 0) == base:
            return None
        if newest is not None and same_content(self.read_manifest(newest), manifest):
            return newest.version
        raise errors.StaleBase(base, newest.version if newest else 0)

    def recommit(self, grant: Grant, party: Party, old: Version, note: str = "") -> int:
        """Make an old version the newest again (a new commit built on the newest; nothing is deleted)."""
        note = check_note(note)
        self.ensure_holding(grant, party)
        self.read_manifest(old)  # verify it is still complete and readable
        newest = self.newest()
        base = newest.version if newest else 0
        return self._commit_entry(grant, party, old.manifest, old.size, note, old.version, base)

    def ensure_holding(self, grant: Grant, party: Party) -> None:
        """Still ours? Renew first if our lease ran out on either clock; else `Fenced`."""
        ours, obs = self.holding(grant)
        if not ours:
            raise errors.Fenced(self._lost_how(grant) + _("; your version was not sent"))
        if judge(obs, grant.session, self.server_now()).verdict is Verdict.EXPIRED or \
                not grant.lease.valid(self._clock()):
            self.renew(grant, party)

    def _lost_how(self, grant: Grant) -> str:
        """Why a grant is no longer ours, in words: broken by NAME at TIME, or taken over."""
        for entry in reversed(self.log()):
            if entry.get("seq", 0) <= grant.fence_seq:
                break
            if entry.get("kind") == "break":
                who = _dict(entry.get("writer")).get("name", _("someone"))
                return _("your lock was broken by {who} at {time}").format(who=who, time=_entry_time(entry))
        who = _dict(self.observe_lock()[1].get("holder")).get("name", _("someone else"))
        return _("your lease ran out and {who} took the lock").format(who=who)

    def _commit_entry(self, grant: Grant, party: Party, manifest_id: str, size: int, note: str,
                      restored_from: int | None, base: int) -> int:
        entry = {
            "kind": "commit", "gen": grant.lease.generation, "session": grant.session,
            "writer": party.as_dict(), "manifest": manifest_id, "size": size,
            "note": note, "restored_from": restored_from, "base": base,
        }
        seq = self._append(entry, grant, base)
        version = next((v.version for v in self.versions() if v.seq == seq), None)
        if version is None:  # only a forged or out-of-order fence can make it invalid
            raise errors.Fenced(_("a newer holder fenced the log; your version does not count"))
        return version

    def read_manifest(self, version: Version) -> Manifest:
        keys = self.require_keys()
        try:
            blob = self.session.read_bytes(self.p("manifests", version.manifest))
        except FileNotFoundError:
            raise errors.AreaCorrupt(_("the manifest of version {version} is missing").format(
                version=version.version)) from None
        body = crypto.open_sealed(keys, crypto.KIND_MANIFEST, version.manifest, blob)
        crypto.verify_chunk(keys, version.manifest, body)
        return Manifest.from_json_bytes(body)

    def fetch_chunk(self, chunk_id: str, cache: ChunkCache | None = None) -> bytes:
        """A verified plaintext chunk, from the cache when it has it."""
        keys = self.require_keys()
        if cache is not None:
            data = cache.get(chunk_id)
            if data is not None:
                self.stats.chunks_cached += 1
                return data
        try:
            blob = self.session.read_bytes(self._chunk_path(chunk_id), CHUNK_SIZE + (1 << 16))
        except FileNotFoundError:
            raise errors.AreaCorrupt(_("chunk {chunk_id}… is missing from the area").format(
                chunk_id=chunk_id[:12])) from None
        plain = crypto.open_sealed(keys, crypto.KIND_CHUNK, chunk_id, blob, max_plain=CHUNK_SIZE)
        crypto.verify_chunk(keys, chunk_id, plain)
        self.stats.chunks_downloaded += 1
        self.stats.bytes_downloaded += len(blob)
        if cache is not None:
            cache.put(chunk_id, plain)
        return plain

    def download(self, version: Version, target: Path, cache: ChunkCache | None = None,
                 progress: Callable[[int], None] | None = None) -> Manifest:
        """Receive `version` into `target`: verified first, then swapped in atomically."""
        manifest = self.read_manifest(version)
        keys = self.require_keys()

        def fetch(chunk_id: str) -> bytes:
            self.check_interrupt()
            data = self.fetch_chunk(chunk_id, cache)
            if progress:
                progress(len(data))
            return data

        restore(manifest, target, fetch, keys)
        return manifest

    def sweep_tmp(self, max_age: int = 86400, limit: int = 200) -> int:
        """Remove temp files a day old or more (abandoned uploads); returns how many."""
        now, removed = self.server_now(), 0
        for name in sorted(self.session.listdir(self.p("tmp")))[:limit]:
            st = self.session.stat(self.p("tmp", name))
            if st is not None and not st.is_dir and st.mtime < now - max_age:
                with suppress(FileNotFoundError):
                    self.session.remove(self.p("tmp", name))
                    removed += 1
        return removed

    # --- delete ------------------------------------------------------------------------------

    def delete(self, party: Party, grant: Grant) -> None:
        """Delete the area for everyone (we hold the lock; keys were checked)."""
        self.require_keys()
        self._append({"kind": "delete", "gen": grant.lease.generation, "session": grant.session,
                      "writer": party.as_dict()}, grant)
        # Move the whole folder aside first (the area disappears at once), then empty it.
        aside = self.session.path(f".deleted-{self.name}-{secrets.token_hex(4)}")
        try:
            self.session.rename(self.root, aside)
        except (OSError, errors.CloudShareError):
            self.session.remove(self.p("config"))  # the area is gone from here on
            aside = self.root
        self.session.remove_tree(aside)


def _dict(value: Any) -> dict[str, Any]:
    """A party record from the host: only string fields, made printable and bounded."""
    if not isinstance(value, dict):
        return {}
    return {k: printable(v, MAX_NAME) for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _entry_time(entry: dict[str, Any]) -> str:
    """The time of a log entry in this computer's time zone (its text if it cannot be read)."""
    raw = entry.get("time")
    try:
        when = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return printable(raw, 40) or "?"


def _note(value: Any) -> str:
    """A note from the host: printable, at most about 1 KiB shown."""
    return printable(value, MAX_NOTE) if isinstance(value, str) else ""


def _commit_counts(entry: dict[str, Any], highest_fence: int, newest: int) -> bool:
    """A commit entry is a version: not fenced, a real manifest, built on the newest version."""
    base = entry.get("base")
    return (
        entry.get("kind") == "commit" and entry["gen"] >= highest_fence
        and OBJECT_ID.fullmatch(str(entry.get("manifest", ""))) is not None
        and (base is None or base == newest)
    )


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """A JSON object, or None (torn, malformed, or not an object: void)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _optional_int_ok(record: dict[str, Any], key: str, limit: int) -> bool:
    value = record.get(key)
    return value is None or _int(value, None, limit) is not None


def _lock_fields_ok(record: dict[str, Any]) -> bool:
    """Every field a reader uses is of the right type and within range."""
    return (
        _optional_int_ok(record, "lease_seconds", MAX_LEASE)
        and _optional_int_ok(record, "since", MAX_TIME)
        and _optional_int_ok(record, "gen", MAX_COUNT)
        and isinstance(record.get("session", ""), str | None)
        and isinstance(record.get("kind", ""), str)
        and isinstance(record.get("holder", {}), dict | None)
        and isinstance(record.get("note", ""), str | None)
    )


def _entry_fields_ok(entry: dict[str, Any]) -> bool:
    """A log entry whose fields are all usable; otherwise the entry is void."""
    return (
        _int(entry.get("gen"), None) is not None
        and isinstance(entry.get("kind"), str)
        and isinstance(entry.get("session", ""), str | None)
        and isinstance(entry.get("writer", {}), dict)
        and isinstance(entry.get("note", ""), str | None)
        and isinstance(entry.get("time", ""), str)
        and _optional_int_ok(entry, "size", MAX_COUNT)
        and _optional_int_ok(entry, "base", MAX_COUNT)
        and _optional_int_ok(entry, "restored_from", MAX_COUNT)
    )


def _lock_info(status: LockStatus, record: dict[str, Any], now: int) -> LockInfo:
    if not _lock_fields_ok(record):
        record = {}
    return LockInfo(status, _dict(record.get("holder")), _note(record.get("note")), now)


def same_content(a: Manifest, b: Manifest) -> bool:
    """Same files with the same bytes (modes and times aside)."""
    return a.kind == b.kind and [(f.path, f.chunks) for f in a.files] == [(f.path, f.chunks) for f in b.files]


class AreaCache:
    """What never changes on the host, remembered locally: log entries, the lock's top.

    Log entries are immutable and lock generations are never removed, so this cache is
    never wrong, only behind; it turns each command's log scan into a probe for new slots.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[int, dict[str, Any] | None] = {}
        self.lock_top = 0
        self._saved: tuple[int, int] = (0, 0)
        if path is not None and path.exists():
            with suppress(ValueError, OSError, TypeError, AttributeError):
                data = json.loads(path.read_text())
                self.entries = {int(k): v for k, v in data["entries"].items()}
                self.lock_top = int(data["lock_top"])
        self._saved = (len(self.entries), self.lock_top)

    def log_head(self) -> int:
        head = 0
        while head + 1 in self.entries:
            head += 1
        return head

    def remember_entry(self, seq: int, entry: dict[str, Any] | None) -> None:
        self.entries[seq] = entry

    def save(self) -> None:
        """Write atomically, only when something new was learnt (best effort)."""
        if self.path is None or (len(self.entries), self.lock_top) == self._saved:
            return
        with suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp-{secrets.token_hex(4)}")
            # Void entries are not kept: on a host without hard links one may have been torn
            # while being written, and must be read again next time.
            entries = {k: v for k, v in self.entries.items() if v is not None}
            tmp.write_text(json.dumps({"entries": entries, "lock_top": self.lock_top}))
            os.replace(tmp, self.path)
            self._saved = (len(self.entries), self.lock_top)


def new_session_id(party: Party) -> str:
    """A lock session: one per `open`, tied to this install."""
    return f"{party.install}-{secrets.token_hex(6)}"


def parse_config(raw: bytes) -> dict[str, Any]:
    """Check the format and version before anything else."""
    try:
        config = json.loads(raw)
    except ValueError:
        raise errors.AreaCorrupt(_("the area config is not valid JSON")) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise errors.AreaCorrupt(_("this folder is not a cloudshare area"))
    if config.get("version") != FORMAT_VERSION:
        raise errors.UnsupportedFormat(
            _("the area uses format version {version}; this program knows {format_version}").format(
                version=config.get('version'), format_version=FORMAT_VERSION)
        )
    for key in ("area_id", "dataset", "kdf", "wrapped_key"):
        if key not in config:
            raise errors.AreaCorrupt(_("the area config lacks {key!r}").format(key=key))
    return config


@dataclass(frozen=True)
class AreaSummary:
    """One row of the area selection screen."""

    area: str
    dataset: str | None
    newest: Version | None
    lock: LockInfo | None
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        newest = self.newest
        return {
            "area": self.area, "dataset": self.dataset,
            "version": newest.version if newest else None, "size": newest.size if newest else None,
            "last_writer": newest.writer.get("name") if newest else None,
            "last_time": newest.time if newest else None,
            "lock": self.lock.as_json() if self.lock else None, "problem": self.problem,
        }


def list_areas(session: Session) -> list[AreaSummary]:
    """Every area under the remote's base folder, with its newest version and lock."""
    base = session.path() if session.endpoint.base else "."
    try:
        names = sorted(session.listdir(base))
    except FileNotFoundError:
        raise errors.HostFolderProblem(_("the folder {base} does not exist on the host").format(base=base),
                                     hint=_("check the remote's URL path")) from None
    out = []
    for name in names:
        if not AREA_NAME.fullmatch(name):
            continue
        st = session.stat(session.path(name))
        if st is None or not st.is_dir:
            continue
        area = Area(session, name)
        try:
            config = area.load()
            out.append(AreaSummary(name, config.get("dataset"), area.newest(), area.lock_info()))
        except errors.CloudShareError as exc:
            out.append(AreaSummary(name, None, None, None, problem=str(exc)))
    return out
