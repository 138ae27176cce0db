"""snapshot restore on a disk that refuses: clear LocalDiskError, target untouched, no temps;
long names; a target in use (FileInUse) keeps what was received and finishes later."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudshare_p2p import crypto, errors
from cloudshare_p2p.snapshot import (
    CHUNK_SIZE,
    FileEntry,
    LocalSnapshot,
    Manifest,
    pending_restore,
    restore,
)

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def keys() -> crypto.Keys:
    return crypto.keys_from_data_key(crypto.new_data_key())


def _version(src: Path, keys: crypto.Keys) -> tuple[Manifest, Callable[[str], bytes]]:
    snap = LocalSnapshot.scan(src, keys)
    store = {cid: snap.read_chunk(cid) for cid in snap.manifest.chunk_ids()}
    return snap.manifest, store.__getitem__


def _receive(src: Path, target: Path, keys: crypto.Keys) -> None:
    manifest, fetch = _version(src, keys)
    restore(manifest, target, fetch, keys)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB tmpfs (root only), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if not ROOT or not _run("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)):
        pytest.skip("mounting a small tmpfs needs root and CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        _run("umount", "-l", str(mnt))


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """chattr +i a path (refused even to root); every flag is cleared afterwards."""
    marked: list[Path] = []

    def mark(path: Path) -> None:
        if not ROOT or not _run("chattr", "+i", str(path)):
            pytest.skip("chattr +i needs root (CAP_LINUX_IMMUTABLE) and a file system that supports it")
        marked.append(path)

    yield mark
    for path in marked:
        _run("chattr", "-i", str(path))


def _big(tmp_path: Path) -> Path:
    src = tmp_path / "theirs.db"
    src.write_bytes(os.urandom(CHUNK_SIZE + 1000))  # larger than the small disk
    return src


def test_disk_full_leaves_target_untouched(tmp_path: Path, keys: crypto.Keys, small_disk: Path) -> None:
    target = small_disk / "books.db"
    target.write_bytes(b"mine" * 1000)
    with pytest.raises(errors.LocalDiskError) as info:
        _receive(_big(tmp_path), target, keys)
    assert info.value.exit_code == 10
    assert "disk is full" in str(info.value) and str(target) in str(info.value)
    assert ".~cs-" not in str(info.value)  # the real name, not our temp name
    assert "free some space" in info.value.hint
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert target.read_bytes() == b"mine" * 1000
    assert _names(small_disk) == ["books.db"]


def test_disk_full_folder(tmp_path: Path, keys: crypto.Keys, small_disk: Path) -> None:
    src = tmp_path / "theirs"
    src.mkdir()
    (src / "a.db").write_bytes(os.urandom(300_000))
    (src / "b.db").write_bytes(os.urandom(300_000))
    target = small_disk / "Mandant"
    target.mkdir()
    (target / "a.db").write_bytes(b"mine")
    with pytest.raises(errors.LocalDiskError, match="disk is full"):
        _receive(src, target, keys)
    assert _names(small_disk) == ["Mandant"] and _names(target) == ["a.db"]
    assert (target / "a.db").read_bytes() == b"mine"


def test_read_only_disk(tmp_path: Path, keys: crypto.Keys, small_disk: Path) -> None:
    target = small_disk / "books.db"
    target.write_bytes(b"mine")
    if not _run("mount", "-o", "remount,ro", str(small_disk)):
        pytest.skip("cannot remount read-only")
    src = tmp_path / "theirs.db"
    src.write_bytes(b"theirs")
    with pytest.raises(errors.LocalDiskError, match="read-only") as info:
        _receive(src, target, keys)
    assert info.value.__cause__.errno == errno.EROFS
    assert target.read_bytes() == b"mine" and _names(small_disk) == ["books.db"]


def test_folder_that_refuses_writes(tmp_path: Path, keys: crypto.Keys, immutable) -> None:
    home = tmp_path / "home"
    home.mkdir()
    target = home / "books.db"
    target.write_bytes(b"mine")
    src = tmp_path / "theirs.db"
    src.write_bytes(b"theirs")
    if ROOT:
        immutable(home)  # root ignores permission bits
    else:
        home.chmod(0o555)
    try:
        with pytest.raises(errors.LocalDiskError) as info:
            _receive(src, target, keys)
    finally:
        if not ROOT:
            home.chmod(0o755)
    assert info.value.__cause__.errno in (errno.EACCES, errno.EPERM)
    assert str(home) in str(info.value)
    assert target.read_bytes() == b"mine" and _names(home) == ["books.db"]


def test_path_too_long_is_a_disk_error(tmp_path: Path, keys: crypto.Keys) -> None:
    deep = "/".join(["d" * 250] * 20)  # each name is fine, the whole path is over PATH_MAX
    cid = crypto.chunk_id(keys, b"data")
    m = Manifest("folder", (FileEntry(f"{deep}/x.db", 4, 0o644, 0.0, (cid,)),))
    target = tmp_path / "Mandant"
    target.mkdir()
    (target / "keep.db").write_bytes(b"mine")
    with pytest.raises(errors.LocalDiskError, match="too long") as info:
        restore(m, target, lambda _cid: b"data", keys)
    assert info.value.__cause__.errno == errno.ENAMETOOLONG
    assert "shorter path" in info.value.hint
    assert _names(tmp_path) == ["Mandant"] and _names(target) == ["keep.db"]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_long_target_names_restore(tmp_path: Path, keys: crypto.Keys, kind: str) -> None:
    """Item 11: a 255-byte name made the temp name overflow; temp names are short now."""
    long_name = "\u5e33" * 80 + "x" * 15  # 255 bytes
    src = tmp_path / "src"
    if kind == "file":
        src.write_bytes(b"theirs")
    else:
        src.mkdir()
        (src / long_name).write_bytes(b"inside")
    target = tmp_path / "out" / long_name
    target.parent.mkdir()
    target.write_bytes(b"mine") if kind == "file" else target.mkdir()
    _receive(src, target, keys)
    if kind == "file":
        assert target.read_bytes() == b"theirs"
    else:
        assert (target / long_name).read_bytes() == b"inside"
    assert _names(target.parent) == [long_name]


def test_network_error_from_fetch_is_not_a_disk_error(tmp_path: Path, keys: crypto.Keys) -> None:
    src = tmp_path / "theirs.db"
    src.write_bytes(b"theirs")
    manifest, _fetch = _version(src, keys)

    def fetch(_cid: str) -> bytes:
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        restore(manifest, tmp_path / "books.db", fetch, keys)
    assert _names(tmp_path) == ["theirs.db"]


# --- a target in use ---------------------------------------------------------------------


def _no_fetch(_cid: str) -> bytes:
    raise AssertionError("nothing should be received again")


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_target_in_use_keeps_what_was_received(tmp_path: Path, keys: crypto.Keys, immutable, kind) -> None:
    """A target that cannot be replaced (as a file held open on Windows; here chattr +i)."""
    src = tmp_path / "theirs"
    target = tmp_path / "data" / "books"
    target.parent.mkdir()
    if kind == "file":
        src.write_bytes(b"theirs")
        target.write_bytes(b"mine")
    else:
        src.mkdir()
        (src / "a.db").write_bytes(b"theirs")
        target.mkdir()
        (target / "a.db").write_bytes(b"mine")
    manifest, fetch = _version(src, keys)
    immutable(target)
    with pytest.raises(errors.FileInUse) as info:
        restore(manifest, target, fetch, keys)
    assert info.value.exit_code == 10 and "in use" in str(info.value)
    assert "close the accounting program" in info.value.hint and "kept" in info.value.hint
    pending = pending_restore(target)
    assert pending is not None and pending.parent == target.parent
    assert (target.read_bytes() if kind == "file" else (target / "a.db").read_bytes()) == b"mine"
    with pytest.raises(errors.FileInUse):  # still in use: still kept, nothing received
        restore(manifest, target, _no_fetch, keys)
    assert pending_restore(target) == pending
    subprocess.run(["chattr", "-i", str(target)], check=True)
    restore(manifest, target, _no_fetch, keys)  # finishes without receiving
    assert (target.read_bytes() if kind == "file" else (target / "a.db").read_bytes()) == b"theirs"
    assert pending_restore(target) is None
    assert _names(target.parent) == ["books"]


def test_pending_of_an_older_version_is_dropped(tmp_path: Path, keys: crypto.Keys, immutable) -> None:
    target = tmp_path / "data" / "books.db"
    target.parent.mkdir()
    target.write_bytes(b"mine")
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.write_bytes(b"version 1")
    v2.write_bytes(b"version 2")
    immutable(target)
    with pytest.raises(errors.FileInUse):
        _receive(v1, target, keys)
    assert pending_restore(target) is not None
    subprocess.run(["chattr", "-i", str(target)], check=True)
    _receive(v2, target, keys)
    assert target.read_bytes() == b"version 2"
    assert _names(target.parent) == ["books.db"]


def test_damaged_pending_is_received_again(tmp_path: Path, keys: crypto.Keys, immutable) -> None:
    target = tmp_path / "data" / "books.db"
    target.parent.mkdir()
    target.write_bytes(b"mine")
    src = tmp_path / "theirs"
    src.write_bytes(b"theirs")
    manifest, fetch = _version(src, keys)
    immutable(target)
    with pytest.raises(errors.FileInUse):
        restore(manifest, target, fetch, keys)
    subprocess.run(["chattr", "-i", str(target)], check=True)
    pending = pending_restore(target)
    assert pending is not None
    pending.write_bytes(b"THEIRS")  # damaged on disk meanwhile
    restore(manifest, target, fetch, keys)
    assert target.read_bytes() == b"theirs" and _names(target.parent) == ["books.db"]
