"""snapshot restore: local items the scan does not share (symlinks, pipes) are never deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudshare_p2p import crypto
from cloudshare_p2p.snapshot import LocalSnapshot, restore


@pytest.fixture(scope="module")
def keys() -> crypto.Keys:
    return crypto.keys_from_data_key(crypto.new_data_key())


def _version(src: Path, keys: crypto.Keys):
    snap = LocalSnapshot.scan(src, keys)
    store = {cid: snap.read_chunk(cid) for cid in snap.manifest.chunk_ids()}
    return snap.manifest, store.__getitem__


def _receive(src: Path, target: Path, keys: crypto.Keys) -> None:
    manifest, fetch = _version(src, keys)
    restore(manifest, target, fetch, keys)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _new_version(tmp_path: Path, files: dict[str, bytes]) -> Path:
    src = tmp_path / "theirs"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return src


def test_symlinks_inside_folder_survive_a_new_version(tmp_path: Path, keys: crypto.Keys) -> None:
    src = _new_version(tmp_path, {"a.db": b"new a", "sub/b.ini": b"new b"})
    target = tmp_path / "Mandant"
    (target / "sub").mkdir(parents=True)
    (target / "a.db").write_bytes(b"old a")
    (target / "gone.txt").write_bytes(b"deleted by the other side")
    os.symlink("/etc/hostname", target / "link")
    os.symlink("../a.db", target / "sub" / "rel-link")
    (target / "only-mine").mkdir()
    os.symlink("/nowhere", target / "only-mine" / "dangling")
    os.mkfifo(target / "pipe")
    _receive(src, target, keys)
    assert (target / "a.db").read_bytes() == b"new a"
    assert (target / "sub" / "b.ini").read_bytes() == b"new b"
    assert not (target / "gone.txt").exists()  # part of the last version: the other side removed it
    assert os.readlink(target / "link") == "/etc/hostname"
    assert os.readlink(target / "sub" / "rel-link") == "../a.db"
    assert os.readlink(target / "only-mine" / "dangling") == "/nowhere"
    assert (target / "pipe").is_fifo()
    assert _names(tmp_path) == ["Mandant", "theirs"]  # no temp or old copy left


def test_symlink_where_the_new_version_has_a_file_is_kept_aside(tmp_path: Path, keys: crypto.Keys) -> None:
    src = _new_version(tmp_path, {"report.txt": b"theirs"})
    target = tmp_path / "Mandant"
    target.mkdir()
    os.symlink("/etc/hostname", target / "report.txt")
    _receive(src, target, keys)
    assert (target / "report.txt").read_bytes() == b"theirs" and not (target / "report.txt").is_symlink()
    kept = [p for p in target.iterdir() if p.is_symlink()]
    assert len(kept) == 1 and kept[0].name.startswith("report.conflict-")
    assert kept[0].name.endswith("-not-shared.txt")
    assert os.readlink(kept[0]) == "/etc/hostname"


def test_symlink_under_a_folder_that_became_a_file(tmp_path: Path, keys: crypto.Keys) -> None:
    src = _new_version(tmp_path, {"docs": b"now a file"})
    target = tmp_path / "Mandant"
    (target / "docs").mkdir(parents=True)
    os.symlink("/etc/hostname", target / "docs" / "link")
    _receive(src, target, keys)
    assert (target / "docs").read_bytes() == b"now a file"
    assert os.readlink(target / "link") == "/etc/hostname"


def test_folder_replaced_by_a_single_file_keeps_unshared_items(tmp_path: Path, keys: crypto.Keys) -> None:
    src = tmp_path / "single.db"
    src.write_bytes(b"single")
    target = tmp_path / "t"
    target.mkdir()
    (target / "x").write_bytes(b"x")
    os.symlink("/etc/hostname", target / "link")
    _receive(src, target, keys)
    assert target.read_bytes() == b"single"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("t.conflict-")]
    assert len(kept) == 1 and kept[0].name.endswith("-not-shared")
    assert os.readlink(kept[0] / "link") == "/etc/hostname"


def test_target_that_is_a_symlink_is_kept_aside(tmp_path: Path, keys: crypto.Keys) -> None:
    src = tmp_path / "src.db"
    src.write_bytes(b"new")
    elsewhere = tmp_path / "elsewhere.db"
    elsewhere.write_bytes(b"the link's own file")
    target = tmp_path / "books.db"
    os.symlink(elsewhere, target)
    _receive(src, target, keys)
    assert not target.is_symlink() and target.read_bytes() == b"new"
    assert elsewhere.read_bytes() == b"the link's own file"
    kept = [p for p in tmp_path.iterdir() if p.is_symlink()]
    assert len(kept) == 1 and kept[0].name.startswith("books.db.conflict-")
