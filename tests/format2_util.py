"""Helpers of the format-2 tests: SQLite ledgers, edits, and areas in memory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cloudshare_p2p.area import Area, Grant, Party
from cloudshare_p2p.snapshot import LocalSnapshot
from cloudshare_p2p.transport import MemoryFiles, MemoryFolder
from tests.parties import FAST_KDF, PASSWORD, party

PARTIES: dict[str, Party] = {}


def make_ledger(path: Path, rows: int, seed: int = 0) -> Path:
    """A SQLite ledger of `rows` journal rows (about 70 bytes each)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("CREATE TABLE IF NOT EXISTS journal "
               "(id INTEGER PRIMARY KEY, day TEXT, memo TEXT, amount INTEGER)")
    db.executemany("INSERT INTO journal (day, memo, amount) VALUES (?, ?, ?)",
                   ((f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}", f"memo {seed}-{i} office supplies",
                     (i * 7919) % 100000) for i in range(rows)))
    db.commit()
    db.close()
    return path


def edit_ledger(path: Path, append: int, every: int, tag: str) -> None:
    """A day of work: `append` new rows and a memo corrected in every `every`-th row."""
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO journal (day, memo, amount) VALUES (?, ?, ?)",
                   (("2026-12-31", f"new {tag} {i}", i) for i in range(append)))
    if every:
        db.execute("UPDATE journal SET memo = memo || ? WHERE id % ? = 0", (f" fixed {tag}", every))
    db.commit()
    db.close()


def reading_area(folder: MemoryFolder, cache: Path | None = None, name: str = "books") -> Area:
    """Another computer's view of the in-memory area, unlocked; with its own cache if given."""
    area = Area(MemoryFiles(folder), name)
    area.unlock_keys(PASSWORD)
    if cache is not None:
        area.use_cache(cache)
    return area


def manifest_reads(monkeypatch, area: Area) -> list[str]:
    """The manifests `area` reads from the host from now on (a list that grows)."""
    fetched: list[str] = []
    read_bytes = area.session.read_bytes

    def counting(path: str, limit: int) -> bytes:
        if "/manifests/" in path:
            fetched.append(path)
        return read_bytes(path, limit)

    monkeypatch.setattr(area.session, "read_bytes", counting)
    return fetched


def memory_area(name: str = "books") -> tuple[MemoryFolder, Area]:
    """A new area on an in-memory host, unlocked."""
    folder = MemoryFolder()
    area = Area(MemoryFiles(folder), name)
    area.create("books", PASSWORD, party("firm"), kdf=FAST_KDF)
    return folder, area


def close(area: Area, path: Path, base: int, who: str = "firm") -> int:
    """Commit `path` (cut for format 2) as a new version built on `base`."""
    who_ = PARTIES.setdefault(who, party(who))
    grant = area.acquire(who_, lease_seconds=300)
    assert isinstance(grant, Grant)
    try:
        return area.commit(grant, who_, LocalSnapshot.scan(path, area.require_keys(), format=2), base=base)
    finally:
        area.release(grant, who_)


def first_share(area: Area, path: Path) -> tuple[int, LocalSnapshot]:
    """The firm's first share of `path` into `area` (`commit_first` under a lease)."""
    firm = PARTIES.setdefault("firm", party("firm"))
    grant = area.acquire(firm, lease_seconds=300)
    assert isinstance(grant, Grant)
    try:
        return area.commit_first(grant, firm, path)
    finally:
        area.release(grant, firm)
