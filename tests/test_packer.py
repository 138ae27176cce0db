"""A large first share is scanned and packed by a second process (`area/packer.py`): the same
version as one packed here, nothing published when the child fails or the file moves, Ctrl-C
ends it, and a child that cannot start leaves the share to this process."""

from __future__ import annotations

import errno
import logging
import os
import random
import sys
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.area import packer, packs
from cloudshare_p2p.snapshot import LocalSnapshot, scan
from tests.format2_util import first_share, memory_area, reading_area
from tests.homes import Home

MiB = 1 << 20


@pytest.fixture
def apart(monkeypatch) -> list[packer.PackingProcess]:
    """Every first share packed by a child; the children started, in order."""
    monkeypatch.setenv(packer.ENV, "1")
    started: list[packer.PackingProcess] = []
    start = packer.PackingProcess.start

    def noted(self, keys, root):
        started.append(self)
        return start(self, keys, root)

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


def test_a_child_that_cannot_start_leaves_the_share_to_this_process(tmp_path: Path, monkeypatch, apart,
                                                                    caplog) -> None:
    folder, area = memory_area()
    books = _books(tmp_path, 3 * MiB)
    monkeypatch.setattr(packer, "_child_command", lambda: [sys.executable, "-c", "raise SystemExit(3)"])
    with caplog.at_level(logging.WARNING, logger=packer.__name__):
        assert first_share(area, books)[0] == 1
    assert len(apart) == 1 and "packing in this process" in caplog.text
    copy = tmp_path / "copy.bin"
    reading_area(folder, tmp_path / "cache").download(area.newest(), copy)
    assert copy.read_bytes() == books.read_bytes()


def test_a_child_that_speaks_nonsense_is_an_error_and_nothing_is_published(tmp_path: Path, monkeypatch,
                                                                          apart) -> None:
    _folder, area = memory_area()
    books = _books(tmp_path, 3 * MiB)
    talk = ("import sys,struct; sys.stdin.buffer.read(); out=sys.stdout.buffer; "
            "out.write(struct.pack('>cQ', b'R', 0) + struct.pack('>cQ', b'Z', 3) + b'abc'); out.flush()")
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


def test_an_unexpected_error_in_the_child_is_logged_with_its_traceback(caplog) -> None:
    try:
        raise ValueError("a bug")
    except ValueError as exc:
        state = packer._error_state(exc)
    with caplog.at_level(logging.ERROR, logger=packer.__name__):
        again = packer._error_from(state)
    assert isinstance(again, RuntimeError) and "a bug" in str(again)
    assert "Traceback" in caplog.text and "raise ValueError" in caplog.text


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
