"""What the area reports and hands out, as plain values: parties, the lock, grants, versions.

No I/O here: these are the results of the area's operations (and their `--json` forms),
built by the lock, log and data parts and used by the commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from statemachine.lease import HolderLease, LockStatus, Verdict


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
    """Chunks and bytes moved by one `Area` (for progress lines and the benchmarks)."""

    chunks_uploaded: int = 0
    chunks_skipped: int = 0
    bytes_uploaded: int = 0
    chunks_downloaded: int = 0
    chunks_cached: int = 0
    bytes_downloaded: int = 0


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
