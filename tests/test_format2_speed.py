"""Format 2's fast paths keep their guarantees (MemoryFiles host): a file changed after the
scan is never sent, and a join fetches and resolves its manifest once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.snapshot import LocalSnapshot, scan
from tests.format2_util import PARTIES, close, first_share, manifest_reads, memory_area, reading_area
from tests.parties import party


def _edit(path: Path, where: int, how: str) -> None:
    """An edit between the scan and the upload: a byte flipped, the file cut short or grown."""
    with open(path, "r+b") as fh:
        if how == "flip":
            fh.seek(where)
            byte = fh.read(1)
            fh.seek(where)
            fh.write(bytes([byte[0] ^ 0xFF]))
        elif how == "cut":
            fh.truncate(where)
        else:
            fh.seek(0, os.SEEK_END)
            fh.write(b"more")


@pytest.mark.parametrize(("shared", "where", "how"), [
    # a first share: the file read again whole, any change found
    (False, 0, "flip"), (False, 5_000_000, "flip"), (False, 9_999_999, "flip"), (False, 5_000_000, "cut"),
    (False, 0, "grow"),
    # a close: each new chunk checked (the first 5 MB are new; the rest is sent as the scan saw it)
    (True, 0, "flip"), (True, 4_999_000, "flip"), (True, 4_000_000, "cut")])
def test_a_file_changed_after_the_scan_is_never_sent(tmp_path: Path, where: int, how: str,
                                                     shared: bool) -> None:
    folder, area = memory_area()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(10_000_000))
    if shared:
        close(area, data, 0)
        with open(data, "r+b") as fh:  # half of it new since
            fh.write(os.urandom(5_000_000))
    versions = area.versions()
    firm = PARTIES.setdefault("firm", party("firm"))
    grant = area.acquire(firm, lease_seconds=300)
    snap = LocalSnapshot.scan(data, area.require_keys(), format=2)
    manifests = {n for n in folder.nodes if n.startswith("books/manifests/")}
    _edit(data, where, how)
    with pytest.raises(errors.InvalidState, match="changed while it was being sent"):
        area.commit(grant, firm, snap, base=len(versions))
    assert area.versions() == versions
    assert {n for n in folder.nodes if n.startswith("books/manifests/")} == manifests


def test_a_file_read_back_in_large_reads_is_the_file(tmp_path: Path) -> None:
    """Chunks read back through the kept-open, buffered file equal the file's bytes."""
    folder, area = memory_area()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * scan.READ_BUFFER + 12345))
    snap = LocalSnapshot.scan(data, area.require_keys(), format=2)
    opened: dict = {}
    offset, parts = 0, []
    try:
        for length in snap.manifest.files[0].lengths:
            _path, got = snap.read_at(0, offset, length, opened)
            parts.append(got)
            offset += length
    finally:
        for fh in opened.values():
            fh.close()
    assert b"".join(parts) == data.read_bytes()


@pytest.mark.parametrize("cached", [False, True])
def test_a_join_fetches_the_manifest_once(tmp_path: Path, monkeypatch, cached: bool) -> None:
    folder, area = memory_area()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(2_000_000))
    close(area, data, 0)
    reader = reading_area(folder, tmp_path / "cache" if cached else None)
    fetched = manifest_reads(monkeypatch, reader)
    version = reader.versions()[0]
    reader.read_manifest(version)  # what `join` does: the manifest, then the download
    target = tmp_path / "copy.bin"
    reader.download(version, target)
    assert target.read_bytes() == data.read_bytes()
    assert len(fetched) == 1
    assert reader._last_resolved is None and reader._last_body is None  # nothing held after


@pytest.mark.parametrize("rewrite", [False, True])
def test_a_full_manifest_is_cached_as_sent(tmp_path: Path, monkeypatch, rewrite: bool) -> None:
    """The first share (and a patch rewritten in full) caches the body it sent; the next close
    resolves its parent from that cache without fetching it, and every version reads back."""
    if rewrite:
        monkeypatch.setattr("cloudshare_p2p.snapshot.manifest2.WRITE_MAX_DEPTH", -1)
    folder, area = memory_area()
    area.use_cache(tmp_path / "cache")
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(2_000_000))
    copies = [data.read_bytes()]
    fetched = manifest_reads(monkeypatch, area)
    close(area, data, 0)
    for day in (1, 2):
        with open(data, "r+b") as fh:
            fh.seek(day * 500_000)
            fh.write(os.urandom(1000))
        copies.append(data.read_bytes())
        close(area, data, day)
    assert fetched == []
    reader = reading_area(folder, tmp_path / "cache-reader")
    for version, want in zip(reader.versions(), copies, strict=True):
        target = tmp_path / f"v{version.version}.bin"
        reader.download(version, target)
        assert target.read_bytes() == want


def test_a_frame_that_does_not_compress_is_sealed_fast_and_opens_the_same() -> None:
    from cloudshare_p2p import crypto

    keys = crypto.keys_from_data_key(os.urandom(32))
    noise = os.urandom(1 << 20)
    text = b"".join(b"2026-01-%02d memo %d office supplies\n" % (i % 28 + 1, i) for i in range(30_000))
    mixed = noise[: 1 << 19] + text[: 1 << 19]  # compressible in part: zstd -3 as before
    assert crypto._level_for(noise, 3) == crypto.FAST_LEVEL
    assert crypto._level_for(text, 3) == 3 and crypto._level_for(mixed, 3) == 3
    assert crypto._level_for(noise[:1000], 3) == 3  # small ones are not probed
    for plain in (noise, text, mixed):
        blob = crypto.seal(keys, b"frame", "", plain)
        assert crypto.open_sealed(keys, b"frame", "", blob) == plain
    assert len(crypto.seal(keys, b"frame", "", text)) < len(text) / 5


@pytest.mark.parametrize("size", [0, 1000, 8 * scan.READ_BUFFER, 8 * scan.READ_BUFFER + 777_777])
def test_the_scan_hashes_on_a_helper_thread_to_the_same_fingerprint(tmp_path: Path, size: int) -> None:
    """A large file's SHA-256 is taken on a helper thread in blocks; it is the fingerprint's."""
    folder, area = memory_area()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(size))
    snap = LocalSnapshot.scan(data, area.require_keys(), format=2)
    assert snap.fingerprint == scan.local_fingerprint(data)


def test_a_first_share_reads_each_file_once_and_sends_what_it_hashed(tmp_path: Path, monkeypatch) -> None:
    """Scan and packing in one pass: no second reading (Reread), the version is the file."""
    folder, area = memory_area()
    data = tmp_path / "folder"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(3_000_000) * 2)  # its second half repeats the first
    (data / "empty.txt").write_bytes(b"")
    (data / "small.txt").write_bytes(b"ledger notes\n" * 100)

    def no_second_reading(*_args):
        raise AssertionError("a first share read a file again")

    monkeypatch.setattr(LocalSnapshot, "reread", no_second_reading)
    monkeypatch.setattr(LocalSnapshot, "read_at", no_second_reading)
    version, snap = first_share(area, data)
    assert version == 1 and snap.fingerprint == scan.local_fingerprint(data)
    assert area.stats.bytes_uploaded < 3_200_000  # the repeated half is stored once
    target = tmp_path / "copy"
    reading_area(folder, tmp_path / "cache").download(area.newest(), target)
    for name in ("big.bin", "empty.txt", "small.txt"):
        assert (target / name).read_bytes() == (data / name).read_bytes()


@pytest.mark.parametrize("how", ["flip", "cut", "grow"])
def test_a_file_changed_while_a_first_share_reads_it_is_never_sent(tmp_path: Path, monkeypatch,
                                                                   how: str) -> None:
    from cloudshare_p2p.area import packs

    folder, area = memory_area()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(10_000_000))
    os.utime(data, (1_700_000_000, 1_700_000_000))  # backdated: any write moves its times
    add = packs.PackWriter.add
    edited: list[bool] = []

    def edit_once(self, chunk, check=None):
        if not edited:
            edited.append(True)
            _edit(data, 6_000_000, how)
        return add(self, chunk, check)

    monkeypatch.setattr(packs.PackWriter, "add", edit_once)
    with pytest.raises(errors.InvalidState, match="changed while it was being sent"):
        first_share(area, data)
    assert edited and area.versions() == []
    assert not [n for n in folder.nodes if n.startswith("books/manifests/")]


def test_a_first_share_resumed_after_its_version_landed_sends_nothing_again(tmp_path: Path) -> None:
    """The version is there already (the share stopped before recording it): the same copy
    is that version; a different one is not published over it."""
    _folder, area = memory_area()
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(500_000))
    assert first_share(area, data)[0] == 1
    sent = area.stats.bytes_uploaded
    assert first_share(area, data)[0] == 1
    assert area.stats.bytes_uploaded == sent
    data.write_bytes(os.urandom(500_000))
    with pytest.raises(errors.StaleBase):
        first_share(area, data)
    assert [v.version for v in area.versions()] == [1]
