"""A large first share is scanned and packed by a second process (`area/packer.py`): the same
version as one packed here, nothing published when the child fails or the file moves, Ctrl-C
ends it, and a child that cannot start leaves the share to this process."""

from __future__ import annotations

import errno
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.area import packer, packs
from cloudshare_p2p.snapshot import LocalSnapshot, scan
from tests.format2_util import first_share, memory_area, reading_area
from tests.homes import Home
from tests.parties import party

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _no_child_left() -> Iterator[None]:
    yield
    packer._end_early()


@pytest.fixture
def apart(monkeypatch) -> list[packer.PackingProcess]:
    """Every first share packed by a child; the children started, in order."""
    monkeypatch.setenv(packer.ENV, "1")
    started: list[packer.PackingProcess] = []
    start = packer.PackingProcess.start

    def noted(self, keys, root, interrupt):
        started.append(self)
        return start(self, keys, root, interrupt)

    monkeypatch.setattr(packer.PackingProcess, "start", noted)
    return started


def _books(tmp_path: Path, size: int = 40 * MiB) -> Path:
    """Random bytes (several packs of 8 MiB), backdated: any write moves their times."""
    path = tmp_path / "books.bin"
    path.write_bytes(random.Random(size).randbytes(size))
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


def _on_first_pack(monkeypatch, action) -> list[int]:
    """Run `action` when this process puts the first pack the child handed over."""
    put = packs.PackUploader.put
    calls: list[int] = []

    def first(self, pack_id, blobs):
        calls.append(1)
        if len(calls) == 1:
            action()
        return put(self, pack_id, blobs)

    monkeypatch.setattr(packs.PackUploader, "put", first)
    return calls


def test_the_child_packs_the_version_this_process_would(tmp_path: Path, apart) -> None:
    folder, area = memory_area()
    books = _books(tmp_path, 20 * MiB)
    version, snap = first_share(area, books)
    assert version == 1 and len(apart) == 1
    here = LocalSnapshot.scan(books, area.require_keys(), format=2)
    assert snap.manifest == here.manifest and snap.fingerprint == here.fingerprint
    assert snap.fingerprint == scan.local_fingerprint(books)
    copy = tmp_path / "copy.bin"
    reading_area(folder, tmp_path / "cache").download(area.newest(), copy)
    assert copy.read_bytes() == books.read_bytes()
    assert area.stats.chunks_uploaded == len(snap.manifest.files[0].chunks)


def test_a_file_changed_while_the_child_reads_it_is_never_published(tmp_path: Path, monkeypatch,
                                                                     apart) -> None:
    folder, area = memory_area()
    books = _books(tmp_path)

    def append() -> None:
        with open(books, "ab") as fh:
            fh.write(b"a row typed meanwhile")

    calls = _on_first_pack(monkeypatch, append)
    with pytest.raises(errors.InvalidState, match="changed while it was being sent"):
        first_share(area, books)
    assert calls and area.versions() == []
    assert not [n for n in folder.nodes if n.startswith("books/manifests/")]


def test_a_child_killed_midway_publishes_nothing_and_the_share_can_be_tried_again(
        tmp_path: Path, monkeypatch, apart) -> None:
    folder, area = memory_area()
    books = _books(tmp_path)
    _on_first_pack(monkeypatch, lambda: apart[0]._proc.kill())
    with pytest.raises(errors.CloudShareError, match="packing process ended early") as caught:
        first_share(area, books)
    assert packer.ENV in caught.value.hint
    assert area.versions() == [] and apart[0]._proc is None  # reaped
    monkeypatch.undo()
    assert first_share(area, books)[0] == 1
    copy = tmp_path / "copy.bin"
    reading_area(folder, tmp_path / "cache").download(area.newest(), copy)
    assert copy.read_bytes() == books.read_bytes()


def test_ctrl_c_ends_the_child_at_the_next_pack(tmp_path: Path, monkeypatch, apart) -> None:
    _folder, area = memory_area()
    books = _books(tmp_path)
    pressed: list[bool] = []
    area.interrupted = lambda: bool(pressed)
    _on_first_pack(monkeypatch, lambda: pressed.append(True))
    procs = []
    close = packer.PackingProcess.close

    def noted_close(self):
        if self._proc is not None:
            procs.append(self._proc)
        close(self)

    monkeypatch.setattr(packer.PackingProcess, "close", noted_close)
    with pytest.raises(KeyboardInterrupt):
        first_share(area, books)
    assert procs and all(proc.returncode is not None for proc in procs)
    assert area.versions() == []


def test_a_child_that_cannot_start_leaves_the_share_to_this_process(tmp_path: Path, monkeypatch,
                                                                    apart) -> None:
    folder, area = memory_area()
    books = _books(tmp_path, 3 * MiB)
    monkeypatch.setattr(packer, "_child_command", lambda: [sys.executable, "-c", "raise SystemExit(3)"])
    assert first_share(area, books)[0] == 1
    assert len(apart) == 1 and apart[0]._proc is None
    copy = tmp_path / "copy.bin"
    reading_area(folder, tmp_path / "cache").download(area.newest(), copy)
    assert copy.read_bytes() == books.read_bytes()


def test_a_child_that_speaks_nonsense_is_an_error_and_nothing_is_published(tmp_path: Path, monkeypatch,
                                                                          apart) -> None:
    _folder, area = memory_area()
    books = _books(tmp_path, 3 * MiB)
    talk = ("import sys,struct; i=sys.stdin.buffer; i.read(struct.unpack('>I', i.read(4))[0]); "
            "o=sys.stdout.buffer; o.write(struct.pack('>cQ', b'R', 0) + struct.pack('>cQ', b'Z', 3)); "
            "o.write(b'abc'); o.flush()")
    monkeypatch.setattr(packer, "_child_command", lambda: [sys.executable, "-c", talk])
    with pytest.raises(errors.CloudShareError, match="packing process ended early"):
        first_share(area, books)
    assert area.versions() == []


def test_the_data_key_never_travels_in_the_child_command_line_or_environment(tmp_path: Path) -> None:
    _folder, area = memory_area()
    key = area.require_keys().data_key
    command = " ".join(packer._child_command())
    assert key.hex() not in command and repr(key) not in command
    assert not any(key.hex() in value for value in os.environ.values())


@pytest.mark.parametrize("exc", [
    errors.InvalidState("books.bin changed while it was being sent", hint="close the program"),
    errors.LocalDiskError("the disk is full"),
    OSError(errno.EACCES, "Permission denied", "books.bin"),
])
def test_the_childs_errors_are_raised_here_as_they_were(exc: BaseException) -> None:
    again = packer._error_from(packer._error_state(exc))
    assert type(again) is type(exc) and str(again) == str(exc)
    if isinstance(exc, errors.CloudShareError):
        assert again.hint == exc.hint  # type: ignore[attr-defined]


def test_an_unexpected_error_in_the_child_keeps_its_traceback_for_the_error_log() -> None:
    import traceback

    try:
        raise ValueError("a bug")
    except ValueError as exc:
        state = packer._error_state(exc)
    again = packer._error_from(state)
    assert isinstance(again, RuntimeError) and "a bug" in str(again)
    logged = "".join(traceback.format_exception(again))  # as the CLI writes its error log
    assert "in the packing process" in logged and 'raise ValueError("a bug")' in logged


def test_only_a_large_data_set_is_packed_apart(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(packer.ENV, raising=False)
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(b"x" * 1000)
    with open(large, "wb") as fh:
        fh.truncate(packer.MIN_SIZE)  # sparse: the size is what counts
    assert not packer.wanted(small) and packer.wanted(large)
    monkeypatch.setenv(packer.ENV, "0")
    assert not packer.wanted(large)
    monkeypatch.setenv(packer.ENV, "1")
    assert packer.wanted(small)


def test_a_child_started_early_is_the_one_used_or_ended(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(packer.ENV, "1")
    books = _books(tmp_path, 1 * MiB)
    packer.prestart(books)
    early = packer._early[os.fspath(books)]
    assert packer.for_share(books) is early and not packer._early
    early.close()
    packer.prestart(books)
    proc = packer._early[os.fspath(books)]._proc
    packer._end_early()
    assert proc is not None and proc.returncode is not None and not packer._early
    monkeypatch.setenv(packer.ENV, "0")
    assert packer.for_share(books) is None


def test_a_data_set_the_scan_refuses_is_refused_by_the_scan_not_by_the_prestart(tmp_path: Path,
                                                                               monkeypatch) -> None:
    monkeypatch.delenv(packer.ENV, raising=False)
    monkeypatch.setattr(packer, "MIN_SIZE", 1)
    link = tmp_path / "link"
    link.symlink_to(_books(tmp_path, 1000))
    with pytest.raises(errors.InvalidState, match="symbolic link"):
        packer.wanted(link)
    packer.prestart(link)  # no error here: the share says what to do
    packer.prestart(tmp_path / "missing")
    assert not packer._early


def test_the_child_never_sees_the_password_variables(monkeypatch) -> None:
    monkeypatch.setenv("CLOUDSHARE_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("CLOUDSHARE_SSH_PASSWORD", "hunter2")
    show = "import os,sys; sys.stdout.write(' '.join(sorted(os.environ)))"
    child = packer.PackingProcess([sys.executable, "-c", show])
    assert child.spawn()
    try:
        assert child._proc is not None and child._proc.stdout is not None
        names = child._proc.stdout.read().decode().split()
    finally:
        child.close()
    assert "PATH" in names and "CLOUDSHARE_PASSWORD" not in names and "CLOUDSHARE_SSH_PASSWORD" not in names


def test_the_child_does_not_import_modules_from_the_current_folder(tmp_path: Path, monkeypatch,
                                                                   apart) -> None:
    """A `struct.py` in the folder cloudshare runs from (often the data's) never runs in the
    process that receives the data key."""
    here = tmp_path / "work"
    here.mkdir()
    marker = tmp_path / "ran"
    (here / "struct.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('planted')\n")
    monkeypatch.chdir(here)
    folder, area = memory_area()
    books = _books(tmp_path, 3 * MiB)
    assert first_share(area, books)[0] == 1
    assert not marker.exists()


def test_the_childs_errors_come_in_the_language_of_the_command(tmp_path: Path, monkeypatch, apart) -> None:
    from cloudshare_p2p import i18n

    _folder, area = memory_area()
    books = _books(tmp_path)

    def append() -> None:
        with open(books, "ab") as fh:
            fh.write(b"more")

    _on_first_pack(monkeypatch, append)
    before = i18n.language()
    i18n.setup_language("ja")
    try:
        with pytest.raises(errors.InvalidState) as caught:
            first_share(area, books)
    finally:
        i18n.setup_language(before)
    assert "送信中に変更されました" in str(caught.value)


def test_a_data_set_of_duplicates_reports_progress_while_no_pack_goes_out(tmp_path: Path, monkeypatch,
                                                                         apart) -> None:
    """Zeros: one chunk stored, the rest duplicates; the child says how far it got meanwhile."""
    _folder, area = memory_area()
    zeros = tmp_path / "zeros.bin"
    size = 4 * packer.STATUS_EVERY + MiB
    with open(zeros, "wb") as fh:
        fh.truncate(size)
    handed: list[packer.Handed] = []
    packs_of = packer.PackingProcess.packs

    def noted(self, interrupt):
        for item in packs_of(self, interrupt):
            handed.append(item)
            yield item

    monkeypatch.setattr(packer.PackingProcess, "packs", noted)
    firm = party("firm")
    grant = area.acquire(firm, lease_seconds=300)
    shown: list[int] = []
    version, _snap = area.commit_first(grant, firm, zeros, progress=shown.append)
    assert version == 1
    statuses = [done for pack_id, _frames, done in handed if pack_id is None]
    assert len(statuses) >= 3 and statuses == sorted(statuses)
    assert 4 * packer.STATUS_EVERY <= sum(shown) <= size


def test_a_child_not_ready_in_time_leaves_the_share_to_this_process(tmp_path: Path, monkeypatch,
                                                                    apart) -> None:
    monkeypatch.setattr(packer, "START_WAIT", 0.5)
    monkeypatch.setattr(packer, "_child_command",
                        lambda: [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"])
    _folder, area = memory_area()
    assert first_share(area, _books(tmp_path, 3 * MiB))[0] == 1
    assert len(apart) == 1 and apart[0]._proc is None


def test_a_child_stuck_before_its_job_is_ended_and_this_process_packs(tmp_path: Path, monkeypatch,
                                                                      apart) -> None:
    """A child that never reads its job (slow imports, a scanner holding its start): after
    START_WAIT it is killed, not waited for, and the share goes on here."""
    import threading

    monkeypatch.setattr(packer, "START_WAIT", 0.5)
    stuck = [sys.executable, "-c", "import time; time.sleep(600)"]
    monkeypatch.setattr(packer, "_child_command", lambda: stuck)
    _folder, area = memory_area()
    books = _books(tmp_path, 3 * MiB)
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(first_share(area, books)[0]), daemon=True)
    worker.start()
    worker.join(60)
    assert done == [1] and apart[0]._proc is None


@pytest.mark.parametrize("pack", [
    ("0" * 64, [1 << 62]),  # a frame larger than the format allows
    ("../../config" + "0" * 52, [10]),  # not a pack id: it would become a path on the host
    ("0" * 64, [packer.MAX_FRAME] * 65),  # more than a pack holds
])
def test_a_pack_out_of_bounds_from_the_child_is_an_error(tmp_path: Path, monkeypatch, apart,
                                                         pack: tuple[str, list[int]]) -> None:
    pack_id, lengths = pack
    head = pack_id.encode() + packer.struct.pack(f">QI{len(lengths)}Q", 0, len(lengths), *lengths)
    talk = ("import sys,struct; i=sys.stdin.buffer; i.read(struct.unpack('>I', i.read(4))[0]); "
            f"o=sys.stdout.buffer; o.write(struct.pack('>cQ', b'R', 0)); head={head!r}; "
            "o.write(struct.pack('>cQ', b'P', len(head)) + head + b'x' * 100); o.flush(); i.read()")
    monkeypatch.setattr(packer, "_child_command", lambda: [sys.executable, "-c", talk])
    folder, area = memory_area()
    with pytest.raises(errors.CloudShareError, match="packing process ended early"):
        first_share(area, _books(tmp_path, 3 * MiB))
    assert area.versions() == [] and not [n for n in folder.nodes if "config0" in n]


def test_the_child_ends_when_this_process_closes_its_stdin(tmp_path: Path, monkeypatch) -> None:
    """A parent that went away (killed: the system closes its end of the pipe) leaves no child
    reading the books: here the child is busy, blocked writing, when its stdin closes."""
    books = _books(tmp_path, 48 * MiB)
    _folder, area = memory_area()
    child = packer.PackingProcess()
    assert child.start(area.require_keys(), books, lambda: None)
    proc = child._proc
    assert proc is not None and proc.stdin is not None
    child._closing.set()  # this side reads no more: the pipe fills, the child blocks
    proc.stdin.close()
    try:
        assert proc.wait(timeout=30) == 1
    finally:
        child.close()


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_a_child_outlives_no_parent_killed_with_sigkill(tmp_path: Path) -> None:
    import signal
    import subprocess

    books = _books(tmp_path, 48 * MiB)  # the packs fill the pipe nobody reads: the child waits
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from cloudshare_p2p import crypto\n"
        "from cloudshare_p2p.area import packer\n"
        "child = packer.PackingProcess()\n"
        f"assert child.start(crypto.keys_from_data_key(os.urandom(32)), Path({str(books)!r}), lambda: None)\n"
        "print(child._proc.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid)
    finally:
        parent.kill()
        parent.wait()


def _running(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_the_packages_lazy_names_are_its_public_names() -> None:
    import cloudshare_p2p.area as area_package

    assert set(area_package._WHERE) == set(area_package.__all__)
    for name in area_package.__all__:
        assert getattr(area_package, name) is not None
    assert set(area_package.__all__) <= set(dir(area_package))


@pytest.mark.server
def test_a_large_share_packed_apart_joins_the_same(firm: Home, client: Home, area: str) -> None:
    """Through the real command and both servers: packed by the child, joined byte for byte."""
    books = firm.data / "archive.bin"
    books.write_bytes(random.Random(11).randbytes(20 * MiB))
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes",
             **{packer.ENV: "1"})
    copy = client.data / "archive.bin"
    client.run("join", "books", str(copy), "--remote", "host", "--area", area)
    assert copy.read_bytes() == books.read_bytes()
