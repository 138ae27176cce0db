"""snapshot: scan -> manifest -> restore, path safety, atomicity, cache, keep_aside.

The round trips and the fixed-chunk edit scan for format 1 (`format=1`: its fixed 1 MiB chunks
and its manifest); format 2's scans and manifests are tested in tests/test_format2*.py."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from pathlib import Path

import pytest

from cloudshare_p2p import crypto, errors
from cloudshare_p2p.snapshot import (
    CHUNK_SIZE,
    ChunkCache,
    FileEntry,
    LocalSnapshot,
    Manifest,
    keep_aside,
    local_fingerprint,
    restore,
    safe_relpath,
)


@pytest.fixture(scope="module")
def keys() -> crypto.Keys:
    return crypto.keys_from_data_key(crypto.new_data_key())


def _upload(snap: LocalSnapshot) -> dict[str, bytes]:
    """What the area would store: every chunk's plaintext, by id."""
    return {cid: snap.read_chunk(cid) for cid in snap.manifest.chunk_ids()}


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_single_file_round_trip(tmp_path: Path, keys: crypto.Keys) -> None:
    src = tmp_path / "books.db"
    src.write_bytes(os.urandom(CHUNK_SIZE * 2 + 123))
    os.chmod(src, 0o640)
    snap = LocalSnapshot.scan(src, keys, format=1)
    m = snap.manifest
    assert m.kind == "file" and m.chunker == "fixed-1MiB"
    assert [f.path for f in m.files] == [""] and len(m.files[0].chunks) == 3
    assert m.total_size() == CHUNK_SIZE * 2 + 123
    store = _upload(snap)
    m2 = Manifest.from_json_bytes(m.to_json_bytes())
    assert m2 == m
    dst = tmp_path / "out" / "books.db"
    dst.parent.mkdir()
    dst.write_bytes(b"old version")
    restore(m2, dst, store.__getitem__, keys)
    assert dst.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640
    assert dst.stat().st_mtime == pytest.approx(src.stat().st_mtime, abs=1e-3)
    assert _listing(dst.parent) == ["books.db"]
    assert snap.fingerprint == local_fingerprint(src) == local_fingerprint(dst)


def test_folder_round_trip(tmp_path: Path, keys: crypto.Keys) -> None:
    src = tmp_path / "Mandant"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.db").write_bytes(os.urandom(CHUNK_SIZE + 5))
    (src / "empty.txt").write_bytes(b"")
    (src / "sub" / "b.ini").write_bytes(b"[x]\n")
    (src / "sub" / "deeper" / "c.dat").write_bytes(b"\0" * 1000)
    (src / "sub" / "b.ini").chmod(0o600)
    (src / "sub" / "deeper" / "c.dat").chmod(0o755)
    os.symlink("/etc/passwd", src / "link")
    snap = LocalSnapshot.scan(src, keys, format=1)
    m = snap.manifest
    assert m.kind == "folder"
    assert [f.path for f in m.files] == ["a.db", "empty.txt", "sub/b.ini", "sub/deeper/c.dat"]
    assert snap.skipped == ("link",)
    store = _upload(snap)
    dst = tmp_path / "restored"
    dst.mkdir()
    (dst / "stale.txt").write_text("from an older version")
    restore(Manifest.from_json_bytes(m.to_json_bytes()), dst, store.__getitem__, keys)
    expected = _tree(src)
    assert _tree(dst) == expected
    assert not (dst / "stale.txt").exists()
    assert _listing(tmp_path) == ["Mandant", "restored"]  # no temp or old copy left
    assert local_fingerprint(dst) == snap.fingerprint


def test_restore_into_missing_target(tmp_path: Path, keys: crypto.Keys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_bytes(b"x")
    snap = LocalSnapshot.scan(src, keys)
    restore(snap.manifest, tmp_path / "new", _upload(snap).__getitem__, keys)
    assert (tmp_path / "new" / "x").read_bytes() == b"x"


def test_in_place_edit_changes_one_chunk(tmp_path: Path, keys: crypto.Keys) -> None:
    f = tmp_path / "books.db"
    data = bytearray(os.urandom(5 * CHUNK_SIZE))
    f.write_bytes(data)
    before = LocalSnapshot.scan(f, keys, format=1).manifest.files[0].chunks
    data[2 * CHUNK_SIZE + 4096 : 2 * CHUNK_SIZE + 4100] = b"EDIT"
    f.write_bytes(data)
    after = LocalSnapshot.scan(f, keys, format=1).manifest.files[0].chunks
    assert len(before) == len(after) == 5
    assert [i for i in range(5) if before[i] != after[i]] == [2]


def test_read_chunk_detects_change_after_scan(tmp_path: Path, keys: crypto.Keys) -> None:
    f = tmp_path / "books.db"
    f.write_bytes(b"a" * 100)
    snap = LocalSnapshot.scan(f, keys)
    f.write_bytes(b"b" * 100)
    with pytest.raises(errors.InvalidState):
        snap.read_chunk(snap.manifest.files[0].chunks[0])


@pytest.mark.parametrize(
    "bad",
    ["../../x", "/etc/passwd", "a/../../b", "a\\b", "", ".", "a//b", "a/./b", "C:/x", "c:x"]
    + ["a\0b", "a/", "x/..", "a/b\x1f"],
)
def test_safe_relpath_refuses(bad: str) -> None:
    with pytest.raises(errors.UnsafePath):
        safe_relpath(bad)


def test_safe_relpath_accepts() -> None:
    assert safe_relpath("Mandant 1/Buchungen 2026.db") == "Mandant 1/Buchungen 2026.db"
    assert safe_relpath("..hidden/x..y") == "..hidden/x..y"


def _folder_manifest_json(path: str, keys: crypto.Keys) -> bytes:
    cid = crypto.chunk_id(keys, b"evil")
    entry = {"path": path, "size": 4, "mode": 0o644, "mtime": 0.0, "chunks": [cid]}
    doc = {"version": 1, "kind": "folder", "chunker": "fixed-1MiB", "files": [entry]}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("bad", ["../../x", "/etc/passwd", "a/../../b", "a\\b", "../x"])
def test_unsafe_manifest_paths_write_nothing(tmp_path: Path, keys: crypto.Keys, bad: str) -> None:
    data = _folder_manifest_json(bad, keys)
    with pytest.raises(errors.UnsafePath):
        Manifest.from_json_bytes(data)
    # a Manifest built in code is checked again by restore
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    m = Manifest("folder", (FileEntry(bad, 4, 0o644, 0.0, (crypto.chunk_id(keys, b"evil"),)),))
    with pytest.raises(errors.UnsafePath):
        restore(m, work / "target", lambda _cid: b"evil", keys)
    assert [p for p in tmp_path.rglob("*")] == [tmp_path / "a", work]


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[]",
        b'{"kind": "folder", "chunker": "fixed-1MiB", "files": []}',
        b'{"version": 1, "kind": "zip", "chunker": "fixed-1MiB", "files": []}',
        b'{"version": 1, "kind": "folder", "chunker": "fixed-1MiB", "files": [{"path": "a"}]}',
        b'{"version": 1, "kind": "file", "chunker": "fixed-1MiB", "files": []}',
        b'{"version": 1, "kind": "folder", "chunker": "fixed-1MiB", "files": '
        b'[{"path": "a", "size": 5, "mode": 420, "mtime": 0, "chunks": []}]}',
    ],
)
def test_malformed_manifests(doc: bytes) -> None:
    with pytest.raises(errors.AreaCorrupt):
        Manifest.from_json_bytes(doc)


def test_unknown_manifest_version() -> None:
    with pytest.raises(errors.UnsupportedFormat):
        Manifest.from_json_bytes(b'{"version": 2, "kind": "folder", "chunker": "x", "files": []}')


def test_duplicate_and_file_folder_clash_refused() -> None:
    e = {"size": 0, "mode": 420, "mtime": 0, "chunks": []}
    for paths in (["a", "a"], ["a", "a/b"]):
        files = [{**e, "path": p} for p in paths]
        doc = {"version": 1, "kind": "folder", "chunker": "fixed-1MiB", "files": files}
        with pytest.raises(errors.AreaCorrupt):
            Manifest.from_json_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_corrupt_chunk_leaves_target_untouched(tmp_path: Path, keys: crypto.Keys, kind: str) -> None:
    src = tmp_path / "src"
    if kind == "file":
        src.write_bytes(os.urandom(3 * CHUNK_SIZE))
    else:
        src.mkdir()
        (src / "a").write_bytes(os.urandom(2 * CHUNK_SIZE))
        (src / "b").write_bytes(b"b")
    snap = LocalSnapshot.scan(src, keys)
    store = _upload(snap)
    victim = snap.manifest.files[-1].chunks[-1]
    store[victim] = store[victim][:-1] + b"X"
    target = tmp_path / "target"
    if kind == "file":
        target.write_bytes(b"current")
    else:
        target.mkdir()
        (target / "keep.txt").write_bytes(b"current")
    before = _listing(tmp_path)
    with pytest.raises(errors.AreaCorrupt):
        restore(snap.manifest, target, store.__getitem__, keys)
    assert _listing(tmp_path) == before
    if kind == "file":
        assert target.read_bytes() == b"current"
    else:
        assert _tree(target) == {"keep.txt": (b"current", 0o644 & ~_umask())}


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_fetch_error_cleans_up(tmp_path: Path, keys: crypto.Keys) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"data")
    snap = LocalSnapshot.scan(src, keys)

    def fetch(_cid: str) -> bytes:
        raise errors.TransferError("network")

    with pytest.raises(errors.TransferError):
        restore(snap.manifest, tmp_path / "t", fetch, keys)
    assert _listing(tmp_path) == ["f"]


def test_restore_replaces_file_with_folder_and_back(tmp_path: Path, keys: crypto.Keys) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x").write_bytes(b"x")
    single = tmp_path / "single"
    single.write_bytes(b"single")
    fsnap, ssnap = LocalSnapshot.scan(folder, keys), LocalSnapshot.scan(single, keys)
    store = {**_upload(fsnap), **_upload(ssnap)}
    target = tmp_path / "t"
    target.write_bytes(b"old")
    restore(fsnap.manifest, target, store.__getitem__, keys)
    assert (target / "x").read_bytes() == b"x"
    restore(ssnap.manifest, target, store.__getitem__, keys)
    assert target.read_bytes() == b"single"
    assert _listing(tmp_path) == ["folder", "single", "t"]


def test_chunk_cache(tmp_path: Path, keys: crypto.Keys) -> None:
    cache = ChunkCache(tmp_path / "cache", keys)
    a, b = crypto.chunk_id(keys, b"A"), crypto.chunk_id(keys, b"B")
    assert not cache.has(a) and cache.get(a) is None
    cache.put(a, b"A")
    cache.put(b, b"B")
    assert cache.has(a) and cache.get(a) == b"A"
    assert (tmp_path / "cache" / a[:2] / a).is_file()
    (tmp_path / "cache" / b[:2] / b).write_bytes(b"damaged")
    assert cache.get(b) is None and not cache.has(b)  # damaged entries are dropped
    cache.put(b, b"B")
    assert cache.prune({a}) == 1
    assert cache.has(a) and not cache.has(b)
    with pytest.raises(ValueError):
        cache.get("../../etc/passwd")


def test_local_fingerprint(tmp_path: Path) -> None:
    f = tmp_path / "books.db"
    assert local_fingerprint(f) == "absent"
    f.write_bytes(b"one")
    fp = local_fingerprint(f)
    os.utime(f, (0, 0))
    assert local_fingerprint(f) == fp  # mtime does not matter
    f.write_bytes(b"two")
    assert local_fingerprint(f) != fp


def test_keep_aside_never_overwrites(tmp_path: Path) -> None:
    when = datetime(2026, 11, 28, 23, 15, 0)
    names = []
    for i in range(3):
        f = tmp_path / "books.db"
        f.write_bytes(b"v%d" % i)
        names.append(keep_aside(f, "local changes", when=when))
        assert not f.exists()
    assert [p.name for p in names] == [
        "books.conflict-2026-11-28T231500-local-changes.db",
        "books.conflict-2026-11-28T231500-local-changes-2.db",
        "books.conflict-2026-11-28T231500-local-changes-3.db",
    ]
    assert [p.read_bytes() for p in names] == [b"v0", b"v1", b"v2"]
    d = tmp_path / "Mandant"
    d.mkdir()
    (d / "x").write_bytes(b"x")
    moved = keep_aside(d, "../fenced", when=when)
    assert moved.name == "Mandant.conflict-2026-11-28T231500-fenced"
    assert (moved / "x").read_bytes() == b"x"
