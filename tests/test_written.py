"""A receive hashes each file as it writes it front to back, so the fingerprint taken right
after needs no second reading; any change to the file since makes it read again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cloudshare_p2p.snapshot import LocalSnapshot, local_fingerprint, scan, written
from tests.format2_util import close, memory_area, reading_area

OLD = 1_700_000_000  # the sender's files are backdated: a later write moves a file's mtime


def _no_reading(path):
    raise AssertionError(f"{path} was read again")


def _receive(folder, tmp_path: Path, target: Path) -> None:
    """Another computer receives the newest version into `target`."""
    reading_area(folder, tmp_path / "cache").download(reading_area(folder).newest(), target)


def _shared_folder(tmp_path: Path):
    folder, area = memory_area()
    data = tmp_path / "firm" / "books"
    data.mkdir(parents=True)
    (data / "ledger.bin").write_bytes(os.urandom(3_000_000))
    (data / "empty.txt").write_bytes(b"")
    (data / "notes.txt").write_bytes(b"memo\n" * 1000)
    for path in data.iterdir():
        os.utime(path, (OLD, OLD))
    close(area, data, 0)
    return folder, data


def test_the_fingerprint_after_a_join_reads_nothing_and_is_the_same(tmp_path: Path, monkeypatch) -> None:
    folder, data = _shared_folder(tmp_path)
    target = tmp_path / "client" / "books"
    target.parent.mkdir()
    _receive(folder, tmp_path, target)
    expected = LocalSnapshot.scan(data, reading_area(folder).require_keys(), format=2).fingerprint

    with monkeypatch.context() as m:
        m.setattr(scan, "_read_chunks", _no_reading)
        assert local_fingerprint(target) == expected
    written._KNOWN.clear()
    assert local_fingerprint(target) == expected  # read back: the same


@pytest.mark.parametrize("how", ["same size", "appended", "touched"])
def test_a_file_changed_after_the_receive_is_read_again(tmp_path: Path, how: str) -> None:
    folder, _data = _shared_folder(tmp_path)
    target = tmp_path / "client" / "books"
    target.parent.mkdir()
    _receive(folder, tmp_path, target)
    received = local_fingerprint(target)
    ledger = target / "ledger.bin"
    if how == "same size":
        with open(ledger, "r+b") as fh:
            fh.write(b"X")
    elif how == "appended":
        with open(ledger, "ab") as fh:
            fh.write(b"X")
    else:  # the same bytes, but its time moved: read again, the same fingerprint
        os.utime(ledger, (OLD + 60, OLD + 60))
    changed = local_fingerprint(target)
    written._KNOWN.clear()
    assert changed == local_fingerprint(target)
    assert (changed == received) is (how == "touched")


def test_in_order_writes_give_the_files_sha256_and_any_other_order_none() -> None:
    data = os.urandom(10_000)
    whole = written.InOrder(len(data))
    for start in range(0, len(data), 3000):
        whole.wrote(start, data[start : start + 3000])
    assert whole.digest() == hashlib.sha256(data).digest()
    shuffled = written.InOrder(len(data))
    shuffled.wrote(5000, data[5000:])
    shuffled.wrote(0, data[:5000])
    assert shuffled.digest() is None
    short = written.InOrder(len(data))
    short.wrote(0, data[:9000])
    assert short.digest() is None


def test_a_join_of_many_packs_writes_front_to_back_and_reads_nothing_again(tmp_path: Path,
                                                                          monkeypatch) -> None:
    """Packs are named by their hash: fetched in name order, a join of many packs wrote its
    file out of order and read it all again for the fingerprint."""
    from cloudshare_p2p.area import packs

    monkeypatch.setattr(packs, "PACK_TARGET", 64 << 10)  # a pack of each frame of at most 64 KiB
    monkeypatch.setattr(packs, "MAX_CHUNK", 64 << 10)
    folder, area = memory_area()
    data = tmp_path / "firm" / "archive.bin"
    data.parent.mkdir()
    data.write_bytes(os.urandom(3_000_000))
    close(area, data, 0)
    assert len([n for n in folder.nodes if n.startswith("books/packs/") and n.count("/") == 3]) > 20
    target = tmp_path / "client" / "archive.bin"
    target.parent.mkdir()
    _receive(folder, tmp_path, target)

    monkeypatch.setattr(scan, "_read_chunks", _no_reading)
    assert local_fingerprint(target) == LocalSnapshot.scan(data, area.require_keys(), format=2).fingerprint


def test_a_receive_writes_where_there_is_no_pwrite(tmp_path: Path, monkeypatch) -> None:
    """Windows has no os.pwrite: a seek, then writes."""
    folder, data = _shared_folder(tmp_path)
    monkeypatch.delattr(os, "pwrite")
    target = tmp_path / "client" / "books"
    target.parent.mkdir()
    _receive(folder, tmp_path, target)
    for name in ("ledger.bin", "empty.txt", "notes.txt"):
        assert (target / name).read_bytes() == (data / name).read_bytes()
