"""The transport contract (`RemoteFiles`, cloudshare_p2p/transport/contract.py): one suite, every
backend. Each clause of the Protocol's docstrings has a test here, run against the OpenSSH sshd,
the embedded host, four embedded host processes over one folder (successive connections go to
different processes), those four seen without `hardlink@openssh.com` (publish falls back to
exclusive create, raced across processes), and `MemoryFiles`.

Fast by design: servers start once per session, no sleeps (mtimes are backdated on the host's
disk), races are a few bounded rounds of threads that each hold their own connection.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.transport import (
    HARDLINK,
    Credentials,
    Endpoint,
    FileTooLarge,
    KnownHosts,
    MemoryFiles,
    MemoryFolder,
    RemoteFiles,
    SftpConnection,
    connect,
)
from tests.serverinfo import ShareServer

BACKENDS = [
    *(pytest.param(n, marks=pytest.mark.server) for n in ("openssh", "embedded", "embedded-x4", "nolink")),
    "memory",
]
RACERS = 6
ROUNDS = 3


@dataclass
class Backend:
    """How to open connections to one backend and reach behind its back."""

    name: str
    open: Callable[[], RemoteFiles]  # a fresh connection (x4: the next process in turn)
    cut: Callable[[RemoteFiles], None]  # drop the connection under a handle
    set_mtime: Callable[[str, int], None]  # backdate a path on the host's own disk
    opened: list[RemoteFiles] = field(default_factory=list)

    def connect(self) -> RemoteFiles:
        files = self.open()
        self.opened.append(files)
        return files


def _close(files: RemoteFiles) -> None:
    close = getattr(files, "close", None)
    if close is not None:
        close()


def _server_backend(name: str, server: ShareServer, home: Path) -> Backend:
    ports = itertools.cycle(server.all_ports())
    lock = threading.Lock()
    known = KnownHosts(home / "known_hosts")

    def open_one() -> RemoteFiles:
        with lock:
            port = next(ports)
        endpoint = Endpoint(user=server.user, host=server.host, port=port, base=server.base)
        conn = connect(endpoint, known, Credentials(identity=server.identity, use_agent=False),
                       accept_fingerprint=server.host_key_fingerprint)
        if name == "nolink":
            conn._sftp.extensions.pop(HARDLINK, None)  # as on a host without hard links
        return conn

    def cut(files: RemoteFiles) -> None:
        assert isinstance(files, SftpConnection)
        files._transport.close()

    def set_mtime(path: str, mtime: int) -> None:
        local = server.root / os.path.relpath(path, server.base or ".")
        os.utime(local, (mtime, mtime))

    return Backend(name, open_one, cut, set_mtime)


def _memory_backend() -> Backend:
    folder = MemoryFolder()
    return Backend("memory", lambda: MemoryFiles(folder), lambda f: f.cut(), folder.set_mtime)  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A connection factory for each backend (servers are started once per session)."""
    name = request.param
    if name == "memory":
        made = _memory_backend()
    else:
        fixture = "embedded_x4_server" if name in ("embedded-x4", "nolink") else f"{name}_server"
        server = request.getfixturevalue(fixture)
        made = _server_backend(name, server, tmp_path_factory.mktemp(f"contract-{name}"))
    try:
        yield made
    finally:
        for files in made.opened:
            _close(files)


@pytest.fixture
def files(backend: Backend) -> Iterator[RemoteFiles]:
    """A connection for one test; every connection the test opened is closed after it."""
    yield backend.connect()
    while backend.opened:
        _close(backend.opened.pop())


@pytest.fixture
def area(files: RemoteFiles) -> str:
    """A fresh folder with a `tmp` folder inside, for one test."""
    path = files.path(f"c-{uuid.uuid4().hex[:12]}")
    assert files.mkdir(path) is True
    assert files.mkdir(f"{path}/tmp") is True
    return path


def _tmp(area: str) -> str:
    return f"{area}/tmp/{uuid.uuid4().hex}.tmp"


def _race(
    backend: Backend,
    act: Callable[[RemoteFiles, Any], object],
    prepare: Callable[[RemoteFiles, int], object] | None = None,
) -> list[list]:
    """RACERS threads, each with its own connection, run `act(files, round)` together for ROUNDS
    rounds; outcome[round] lists what each returned (or the exception it raised)."""
    conns = [backend.connect() for _ in range(RACERS)]
    barrier = threading.Barrier(RACERS)

    def racer(i: int) -> list:
        got = []
        for r in range(ROUNDS):
            ready = prepare(conns[i], r) if prepare else None
            barrier.wait(timeout=30)
            try:
                got.append(act(conns[i], r) if ready is None else act(conns[i], ready))
            except Exception as e:  # noqa: BLE001 - reported in the outcome
                got.append(e)
        return got

    with ThreadPoolExecutor(RACERS) as pool:
        per_racer = list(pool.map(racer, range(RACERS), timeout=120))
    for conn in conns:  # one answered request each: the temp removals not waited for are done
        conn.stat(conn.path("settle"))
    return [[per_racer[i][r] for i in range(RACERS)] for r in range(ROUNDS)]


# --- errors common to every operation ---------------------------------------------------------


def test_a_dropped_connection_is_network_down_on_every_later_call(backend: Backend, area: str) -> None:
    files = backend.connect()
    assert files.stat(area) is not None
    backend.cut(files)
    calls: list[Callable[[], object]] = [
        lambda: files.stat(area), lambda: files.listdir(area), lambda: files.mkdir(f"{area}/d"),
        lambda: files.upload(f"{area}/f", b"x"), lambda: files.read_bytes(f"{area}/f"),
        lambda: files.publish(_tmp(area), f"{area}/p"),
        lambda: files.put_object(_tmp(area), f"{area}/o", b"o"),
        lambda: files.remove(f"{area}/f"), lambda: files.rename(area, f"{area}-x"),
        lambda: files.remove_tree(f"{area}/d"), lambda: files.server_now(f"{area}/tmp"),
    ]
    for call in calls:
        with pytest.raises(errors.NetworkDown):
            call()


def test_another_refusal_is_an_oserror(files: RemoteFiles, area: str) -> None:
    files.upload(f"{area}/f", b"x")
    with pytest.raises(OSError):
        files.mkdir(f"{area}/f")  # a file is in the way


# --- paths and metadata -----------------------------------------------------------------------


def test_path_joins_the_base(files: RemoteFiles) -> None:
    base = files.endpoint.base
    assert files.path() == base
    expected = "x/y" if not base else f"{base.rstrip('/')}/x/y"
    assert files.path("x", "", "/y/") == expected


def test_stat_file_folder_and_nothing(backend: Backend, files: RemoteFiles, area: str) -> None:
    assert files.stat(f"{area}/nope") is None
    files.upload(f"{area}/f", b"12345")
    found = files.stat(f"{area}/f")
    assert found is not None and found.size == 5 and not found.is_dir
    folder = files.stat(area)
    assert folder is not None and folder.is_dir
    backend.set_mtime(f"{area}/f", 1_000_000_000)
    assert files.stat(f"{area}/f").mtime == 1_000_000_000  # type: ignore[union-attr]


def test_stat_many_in_order(files: RemoteFiles, area: str) -> None:
    files.upload(f"{area}/f", b"abc")
    got = files.stat_many([f"{area}/nope", f"{area}/f", f"{area}/tmp"])
    assert got[0] is None
    assert got[1] is not None and (got[1].size, got[1].is_dir) == (3, False)
    assert got[2] is not None and got[2].is_dir
    assert files.stat_many([]) == []


def test_listdir(files: RemoteFiles, area: str) -> None:
    files.upload(f"{area}/f", b"")
    files.mkdir(f"{area}/d")
    assert sorted(files.listdir(area)) == ["d", "f", "tmp"]
    with pytest.raises(FileNotFoundError):
        files.listdir(f"{area}/nope")


def test_mkdir(files: RemoteFiles, area: str) -> None:
    assert files.mkdir(f"{area}/d") is True
    assert files.mkdir(f"{area}/d") is False
    with pytest.raises(OSError):
        files.mkdir(f"{area}/nope/d")
    assert files.stat(f"{area}/nope") is None


# --- upload and read ----------------------------------------------------------------------------


def test_upload_creates_and_truncates(files: RemoteFiles, area: str) -> None:
    data = os.urandom(300_000)  # more than one SFTP request
    assert files.upload(f"{area}/f", data) == len(data)
    assert files.read_bytes(f"{area}/f") == data
    assert files.upload(f"{area}/f", b"short") == 5
    assert files.read_bytes(f"{area}/f") == b"short"


def test_upload_into_a_missing_folder(files: RemoteFiles, area: str) -> None:
    with pytest.raises(FileNotFoundError):
        files.upload(f"{area}/nope/f", b"x")
    assert files.stat(f"{area}/nope") is None


def test_read_bytes_missing_and_too_large(files: RemoteFiles, area: str) -> None:
    with pytest.raises(FileNotFoundError):
        files.read_bytes(f"{area}/nope")
    files.upload(f"{area}/f", b"x" * 1000)
    assert files.read_bytes(f"{area}/f", 1000) == b"x" * 1000
    with pytest.raises(FileTooLarge) as caught:
        files.read_bytes(f"{area}/f", 999)
    assert isinstance(caught.value, errors.AreaCorrupt)


def test_read_many_missing_small_empty_large_and_oversized(files: RemoteFiles, area: str) -> None:
    big = os.urandom(300_000)  # more than one SFTP read
    files.upload(f"{area}/a", b"record")
    files.upload(f"{area}/e", b"")
    files.upload(f"{area}/big", big)
    files.upload(f"{area}/over", b"x" * 1001)
    names = ["a", "nope", "e", "over", "big"]
    got = files.read_many([f"{area}/{n}" for n in names], 400_000)
    assert got[1] is None
    assert [(g.data, g.stat.size) for g in (got[0], got[2])] == [(b"record", 6), (b"", 0)]
    assert got[4] is not None and got[4].data == big
    stamp = files.stat(f"{area}/a")
    assert stamp is not None and got[0] is not None and got[0].stat.mtime == stamp.mtime
    capped = files.read_many([f"{area}/over", f"{area}/a"], 1000)
    assert capped[0] is not None and capped[0].data is None and capped[0].stat.size == 1001
    assert capped[1] is not None and capped[1].data == b"record"


def test_read_many_of_a_folder_is_an_oserror(files: RemoteFiles, area: str) -> None:
    with pytest.raises(OSError):
        files.read_many([f"{area}/tmp"], 1000)


def test_write_record_gives_the_server_mtime(files: RemoteFiles, area: str) -> None:
    before = files.server_now(f"{area}/tmp")
    mtime = files.write_record(f"{area}/r", b"first record")
    found = files.stat(f"{area}/r")
    assert found is not None and found.mtime == mtime and before <= mtime
    assert files.write_record(f"{area}/r", b"two") >= mtime  # truncates
    assert files.read_bytes(f"{area}/r") == b"two"
    with pytest.raises(FileNotFoundError):
        files.write_record(f"{area}/nope/r", b"x")


def test_write_records_writes_each_with_its_mtime(files: RemoteFiles, area: str) -> None:
    items = [(f"{area}/a", b"alpha"), (f"{area}/b", os.urandom(300_000)), (f"{area}/c", b"")]
    mtimes = files.write_records(items)
    for (path, data), mtime in zip(items, mtimes, strict=True):
        found = files.stat(path)
        assert found is not None and found.mtime == mtime
        assert files.read_bytes(path) == data
    with pytest.raises(FileNotFoundError):
        files.write_records([(f"{area}/d", b"x"), (f"{area}/nope/e", b"y")])
    files.stat(f"{area}/settle")  # an answered request: the removals not waited for are done
    assert files.stat(f"{area}/d") is None


# --- publish (records) --------------------------------------------------------------------------


def test_publish_first_wins_and_the_temp_file_goes(files: RemoteFiles, area: str) -> None:
    final = f"{area}/00000000000000000001"
    for content, won in ((b"first", True), (b"second!", False)):
        tmp = _tmp(area)
        files.upload(tmp, content)
        assert files.publish(tmp, final) is won
    assert files.read_bytes(final) == b"first"
    assert files.listdir(f"{area}/tmp") == []


def test_publish_a_missing_temp_file(files: RemoteFiles, area: str) -> None:
    with pytest.raises(FileNotFoundError):
        files.publish(_tmp(area), f"{area}/final")
    assert files.stat(f"{area}/final") is None


def test_publish_has_exactly_one_winner(backend: Backend, area: str) -> None:
    def prepare(files: RemoteFiles, r: int) -> tuple[int, str, bytes]:
        tmp, body = _tmp(area), uuid.uuid4().hex.encode()
        files.upload(tmp, body)
        return r, tmp, body

    def act(files: RemoteFiles, ready: tuple[int, str, bytes]) -> tuple[bool, bytes]:
        r, tmp, body = ready
        return files.publish(tmp, f"{area}/round-{r}"), body

    check = backend.connect()
    for r, outcome in enumerate(_race(backend, act, prepare)):
        assert not [o for o in outcome if isinstance(o, Exception)], outcome
        winners = [body for won, body in outcome if won]
        assert len(winners) == 1, outcome
        assert check.read_bytes(f"{area}/round-{r}") == winners[0]
    assert check.listdir(f"{area}/tmp") == []


def test_mkdir_has_exactly_one_winner(backend: Backend, area: str) -> None:
    for outcome in _race(backend, lambda files, r: files.mkdir(f"{area}/d-{r}")):
        assert sorted(outcome, key=str) == [False] * (RACERS - 1) + [True], outcome


# --- immutable objects --------------------------------------------------------------------------


def test_object_complete(files: RemoteFiles, area: str) -> None:
    assert files.object_complete(f"{area}/obj", 3) is None
    files.upload(f"{area}/obj", b"abc")
    assert files.object_complete(f"{area}/obj", 3) is True
    assert files.object_complete(f"{area}/obj", 4) is False
    assert files.object_complete(f"{area}/tmp", 0) is False  # a folder is no object


def test_put_object_new_present_torn(files: RemoteFiles, area: str) -> None:
    final, data = f"{area}/obj", os.urandom(300_000)
    assert files.put_object(_tmp(area), final, data) is True
    assert files.put_object(_tmp(area), final, data) is False  # a complete one is there
    files.upload(final, data[:1234])  # a torn copy under the final name
    assert files.put_object(_tmp(area), final, data) is True  # replaced
    assert files.read_bytes(final) == data
    assert files.listdir(f"{area}/tmp") == []


def test_put_object_of_parts_is_their_concatenation(files: RemoteFiles, area: str) -> None:
    """A pack goes up as its frames, never joined: parts of every size, across the 1 MiB
    pieces a stream is read in and the requests it is sent in (an empty one too)."""
    parts = [os.urandom(n) for n in (1, 0, 262_143, 1 << 20, 1_048_577, 300_000, 7)]
    final = f"{area}/packed"
    assert files.put_object(_tmp(area), final, parts) is True
    assert files.read_bytes(final) == b"".join(parts)
    assert files.put_object(_tmp(area), final, parts) is False  # the same size is there: complete
    for kind in (bytearray, memoryview):  # one buffer of another type is whole, not parts
        assert files.put_object(_tmp(area), f"{final}-{kind.__name__}", kind(parts[2])) is True
        assert files.read_bytes(f"{final}-{kind.__name__}") == parts[2]
    assert files.listdir(f"{area}/tmp") == []


def test_publish_object_places_a_written_temp_file(files: RemoteFiles, area: str) -> None:
    data = os.urandom(1000)
    tmp = _tmp(area)
    files.write_records([(tmp, data)])
    assert files.publish_object(tmp, f"{area}/obj", len(data)) is True
    again = _tmp(area)
    files.write_records([(again, data)])
    assert files.publish_object(again, f"{area}/obj", len(data)) is False  # a complete one is there
    short = _tmp(area)
    files.write_records([(short, data[:10])])
    with pytest.raises(errors.TransferError):
        files.publish_object(short, f"{area}/obj2", len(data))
    assert files.stat(f"{area}/obj2") is None
    assert files.read_bytes(f"{area}/obj") == data
    assert files.listdir(f"{area}/tmp") == []


def test_put_object_makes_its_folder(files: RemoteFiles, area: str) -> None:
    data = os.urandom(1000)
    final = f"{area}/packs/ab/obj"
    assert files.put_object(_tmp(area), final, data, folder=f"{area}/packs/ab") is True
    assert files.read_bytes(final) == data
    again = f"{area}/packs/ab/obj2"  # the folder exists now: fine too
    assert files.put_object(_tmp(area), again, data, folder=f"{area}/packs/ab") is True
    assert files.read_bytes(again) == data
    assert files.listdir(f"{area}/tmp") == []


def test_put_object_races_all_succeed_never_torn(backend: Backend, area: str) -> None:
    data = os.urandom(100_000)
    outcomes = _race(backend, lambda files, r: files.put_object(_tmp(area), f"{area}/obj-{r}", data))
    check = backend.connect()
    for r, outcome in enumerate(outcomes):
        assert all(isinstance(o, bool) for o in outcome), outcome
        assert True in outcome
        assert check.object_complete(f"{area}/obj-{r}", len(data)) is True
        assert check.read_bytes(f"{area}/obj-{r}") == data
    assert check.listdir(f"{area}/tmp") == []


# --- remove, rename, remove_tree ------------------------------------------------------------------


def test_remove(files: RemoteFiles, area: str) -> None:
    files.upload(f"{area}/f", b"x")
    files.remove(f"{area}/f")
    assert files.stat(f"{area}/f") is None
    with pytest.raises(FileNotFoundError):
        files.remove(f"{area}/f")


def test_rename_file_and_folder(files: RemoteFiles, area: str) -> None:
    files.upload(f"{area}/f", b"x")
    files.rename(f"{area}/f", f"{area}/g")
    assert files.read_bytes(f"{area}/g") == b"x" and files.stat(f"{area}/f") is None
    files.mkdir(f"{area}/d")
    files.upload(f"{area}/d/inner", b"y")
    files.rename(f"{area}/d", f"{area}/e")
    assert files.read_bytes(f"{area}/e/inner") == b"y" and files.stat(f"{area}/d") is None
    with pytest.raises(FileNotFoundError):
        files.rename(f"{area}/nope", f"{area}/h")


def test_remove_tree(files: RemoteFiles, area: str) -> None:
    files.mkdir(f"{area}/a")
    files.mkdir(f"{area}/a/b")
    files.upload(f"{area}/a/b/f", b"x")
    files.upload(f"{area}/a/g", b"y")
    files.remove_tree(f"{area}/a")
    assert files.stat(f"{area}/a") is None
    files.remove_tree(f"{area}/a")  # nothing there: fine


def test_remove_tree_skips_entries_another_remover_took(backend: Backend, area: str) -> None:
    setup = backend.connect()
    for r in range(ROUNDS):
        setup.mkdir(f"{area}/t-{r}")
        for i in range(20):
            setup.upload(f"{area}/t-{r}/f{i}", b"x")
    outcomes = _race(backend, lambda files, r: files.remove_tree(f"{area}/t-{r}"))
    for outcome in outcomes:
        assert outcome == [None] * RACERS, outcome
    assert sorted(setup.listdir(area)) == ["tmp"]


# --- the server's clock -------------------------------------------------------------------------


def test_server_now_is_the_clock_of_stat(files: RemoteFiles, area: str) -> None:
    before = files.server_now(f"{area}/tmp")
    files.upload(f"{area}/f", b"x")
    after = files.server_now(f"{area}/tmp")
    found = files.stat(f"{area}/f")
    assert found is not None and before <= found.mtime <= after
    assert abs(before - time.time()) < 5  # loopback hosts share this machine's clock
    assert files.listdir(f"{area}/tmp") == []  # the probe is removed



# --- ranged reads and atomic replace (format 2) ---------------------------------------------------


def test_read_ranges_in_order_and_short_past_the_end(files: RemoteFiles, area: str) -> None:
    data = os.urandom(700_000)  # ranges span several SFTP requests
    files.upload(f"{area}/pack", data)
    ranges = [(0, 10), (100, 300_000), (400_000, 1), (699_990, 100), (800_000, 5)]
    got = list(files.read_ranges(f"{area}/pack", ranges))
    assert got == [data[o : o + n] for o, n in ranges]
    with pytest.raises(FileNotFoundError):
        list(files.read_ranges(f"{area}/nope", [(0, 1)]))


def test_replace_is_atomic_or_declined(files: RemoteFiles, area: str) -> None:
    files.upload(f"{area}/config", b"old")
    files.upload(f"{area}/new", b"new")
    if files.replace(f"{area}/new", f"{area}/config"):
        assert files.read_bytes(f"{area}/config") == b"new"
        assert files.stat(f"{area}/new") is None
    else:
        assert files.read_bytes(f"{area}/config") == b"old"
