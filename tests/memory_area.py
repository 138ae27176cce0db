"""An in-memory share host for the area's in-process tests (tests/test_area_inprocess.py).

The firm and the client are two `MemoryFiles` handles on one `MemoryFolder` (two connections
to one host); the server's clock and the holders' lease clocks are one `FakeClock` the test
moves, so leases run out without sleeping. Also the steps those tests repeat: closes, a close
cut at a chosen operation, five versions for prune, threads racing for the lock.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudshare_p2p import errors
from cloudshare_p2p.area import MAX_RECORD, Area, Grant, Party
from cloudshare_p2p.snapshot import LocalSnapshot
from cloudshare_p2p.transport import MemoryFiles, MemoryFolder
from statemachine import Verdict
from tests.parties import FAST_KDF, PASSWORD, party

START = 1_700_000_000.0  # the fake clock's first reading (server seconds)
DAY = 86400


class FakeClock:
    """A clock that moves only when told to: the server's clock and every holder's."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        self.now += seconds


@dataclass
class Office:
    """One area on an in-memory host, made by the firm; the client reaches it too."""

    clock: FakeClock
    folder: MemoryFolder
    name: str
    data_key: bytes
    firm: Party = field(default_factory=lambda: party("firm"))
    client: Party = field(default_factory=lambda: party("client"))

    def handle(self) -> MemoryFiles:
        """A new connection to the host."""
        return MemoryFiles(self.folder)

    def area(self, session: MemoryFiles | None = None, password: str | None = None) -> Area:
        """The area over a new (or the given) connection; unlocked by `password`, else by the
        data key remembered on this computer (no key derivation: fast)."""
        area = Area(session or self.handle(), self.name, clock=self.clock)
        if password is not None:
            area.unlock_keys(password)
        else:
            area.use_data_key(self.data_key)
        return area

    def path(self, *parts: str) -> str:
        """A folder key inside the area."""
        return "/".join([self.name, *parts])

    def state(self) -> dict[str, tuple[bytes | None, int]]:
        """Everything on the host: content and mtime of each name."""
        with self.folder.lock:
            return {k: (n.data, n.mtime) for k, n in self.folder.nodes.items()}

    def top(self, sub: str) -> int:
        """The highest numbered file in `lock/` or `log/` (0: none)."""
        names = self.handle().listdir(self.path(sub))
        return max((int(n) for n in names if n.isdigit()), default=0)

    def plant(self, sub: str, number: int, body: bytes, age: int = 0) -> None:
        """Write a record straight into the folder (anyone with the login can), `age` s old."""
        path = self.path(sub, f"{number:020d}")
        self.handle().upload(path, body)
        if age:
            self.folder.set_mtime(path, int(self.clock()) - age)

    def objects(self) -> set[str]:
        """Area-relative names of the objects on the host: manifests, chunks, packs."""
        prefix = self.name + "/"
        return {k[len(prefix):] for k, n in self.folder.nodes.items() if n.data is not None
                and k.startswith(prefix) and k.split("/")[1] in ("manifests", "chunks", "packs")}

    def backdate_objects(self, seconds: int) -> None:
        """Make every object look `seconds` old on the host."""
        for rel in self.objects():
            self.folder.set_mtime(self.path(rel), int(self.clock()) - seconds)

    def fork(self, clock: FakeClock | None = None) -> Office:
        """An independent copy of the host as it is now (same area and parties; same clock
        unless another is given)."""
        clock = clock or self.clock
        folder = MemoryFolder(clock)
        with self.folder.lock:
            folder.nodes = copy.deepcopy(self.folder.nodes)
        return Office(clock, folder, self.name, self.data_key, self.firm, self.client)


def new_office(name: str = "books", clock: FakeClock | None = None) -> Office:
    """A new area made by the firm on a new in-memory host."""
    clock = clock or FakeClock()
    folder = MemoryFolder(clock)
    firm = party("firm")
    area = Area(MemoryFiles(folder), name, clock=clock)
    area.create("Yamada Trading FY2026", PASSWORD, firm, kdf=FAST_KDF)
    assert area.data_key is not None
    return Office(clock, folder, name, area.data_key, firm=firm)


def write(path: Path, data: bytes) -> Path:
    """A local file holding `data` (parents made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """A local folder data set holding `files`."""
    for rel, content in files.items():
        write(root / rel, content)
    return root


def target(path: Path) -> Path:
    """A place to receive a version into (its parent folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def read_tree(root: Path) -> dict[str, bytes]:
    """The files of a local folder (or the one file) as {relative path: bytes}."""
    if root.is_file():
        return {"": root.read_bytes()}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def locked(area: Area, who: Party, lease: int = 300, note: str = "") -> Grant:
    """Take the lock; fails the test if it is not granted."""
    grant = area.acquire(who, lease_seconds=lease, note=note)
    assert isinstance(grant, Grant), grant
    return grant


def commit(area: Area, who: Party, data: Path, base: int | None = None) -> int:
    """One close: take the lock, commit `data` built on `base` (default: the newest), let go."""
    grant = locked(area, who)
    try:
        base = area.newest_number() if base is None else base
        return area.commit(grant, who, LocalSnapshot.scan(data, area.require_keys()), base=base)
    finally:
        area.release(grant, who)


def record(**fields: Any) -> bytes:
    """A JSON record as a hostile writer might plant it."""
    return json.dumps(fields).encode()


def naming_its_slot(entry: bytes, seq: int) -> bytes:
    """A log entry to plant in slot `seq`: a readable object gets the slot's seq (as a real
    entry has); an oversized or unreadable one is planted as it is."""
    try:
        parsed = json.loads(entry)
    except ValueError:
        return entry
    if not isinstance(parsed, dict) or len(entry) >= MAX_RECORD:
        return entry
    return json.dumps(dict(parsed, seq=seq)).encode()


def cut_commit(office: Office, grant: Grant, snap: LocalSnapshot, after: int, when: str) -> bool:
    """The firm's close of `snap` on base 1, its connection cut at operation `after`: True if
    the cut was felt. (False: the cut fell "after" an operation that failed anyway, whose
    error MemoryFiles passes on, connection up, and the close went on to the end.)"""
    session = office.handle()
    area = office.area(session)
    session.cut(after=after, when=when)
    try:
        assert area.commit(grant, office.firm, snap, base=1) == 2
    except errors.NetworkDown:
        return True
    return False


def commit_operations(office: Office, grant: Grant, snap: LocalSnapshot) -> int:
    """How many operations the close takes when nothing goes wrong (on a copy of the host)."""
    trial = office.fork()
    session = trial.handle()
    area = trial.area(session)
    before = session.operations
    assert area.commit(grant, trial.firm, snap, base=1) == 2
    return session.operations - before


def five_versions(office: Office, tmp_path: Path) -> None:
    """Versions 1…5 of a folder data set (each its own ledger and memo), objects two days old."""
    area, data = office.area(), tmp_path / "data"
    start = area.newest_number()
    for i in range(start + 1, start + 6):
        write_tree(data, {"shared.txt": b"the chart of accounts", "ledger.db": f"ledger {i} ".encode() * 500,
                          "memo.txt": f"memo {i}".encode()})
        assert commit(area, office.firm, data) == i
    office.backdate_objects(2 * DAY)


def race_for_lock(office: Office, parties: int, collide: bool) -> tuple[list[Grant | Verdict], list[bool]]:
    """`parties` threads, each on its own connection, acquire at once: what each got, and
    what each lock claim's exclusive create answered. With `collide`, every one has seen the
    lock free before any claims, so they all create the same generation."""
    start, seen = threading.Barrier(parties), threading.Barrier(parties)
    results: list[Grant | Verdict] = [Verdict.FREE] * parties
    claims: list[bool] = []

    def run(i: int) -> None:
        session = office.handle()
        write_records, publish, waited = session.write_records, session.publish, []

        def write_then_wait(items: list[tuple[str, bytes]]) -> list[int]:
            """The claim's temp file is written after the lock was observed: wait there."""
            mtimes = write_records(items)
            if collide and not waited:
                waited.append(seen.wait(10))
            return mtimes

        def publish_counted(tmp: str, final: str) -> bool:
            won = publish(tmp, final)
            claims.append(won)
            return won

        session.write_records = write_then_wait  # type: ignore[method-assign]
        session.publish = publish_counted  # type: ignore[method-assign]
        area = Area(session, office.name, clock=office.clock)
        start.wait(10)
        got = area.acquire(party(f"p{i}"), lease_seconds=60)
        results[i] = got if isinstance(got, Grant) else got.verdict

    threads = [threading.Thread(target=run, args=(i,)) for i in range(parties)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, claims
