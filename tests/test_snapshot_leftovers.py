"""snapshot: temps of a killed restore are cleaned on the next one (issue 8 item 12)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cloudshare_p2p import crypto
from cloudshare_p2p.snapshot import CHUNK_SIZE, LocalSnapshot, clean_leftovers, restore

REPO = Path(__file__).resolve().parent.parent

KILLED_RESTORE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from cloudshare_p2p import crypto
    from cloudshare_p2p.snapshot import LocalSnapshot, restore
    src, target = Path(sys.argv[1]), Path(sys.argv[2])
    keys = crypto.keys_from_data_key(bytes.fromhex(sys.argv[3]))
    snap = LocalSnapshot.scan(src, keys)
    calls = []
    def fetch(cid):
        calls.append(cid)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of receiving
        return snap.read_chunk(cid)
    restore(snap.manifest, target, fetch, keys)
""")


@pytest.fixture(scope="module")
def data_key() -> bytes:
    return crypto.new_data_key()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _killed_restore(src: Path, target: Path, data_key: bytes) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_RESTORE, str(src), str(target), data_key.hex()],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (then, then), follow_symlinks=False)


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_killed_restore_leftovers_are_cleaned_next_time(tmp_path: Path, data_key: bytes, kind: str) -> None:
    keys = crypto.keys_from_data_key(data_key)
    src = tmp_path / "theirs"
    if kind == "file":
        src.write_bytes(os.urandom(4 * CHUNK_SIZE))
    else:
        src.mkdir()
        (src / "a.db").write_bytes(os.urandom(2 * CHUNK_SIZE))
        (src / "b.db").write_bytes(os.urandom(2 * CHUNK_SIZE))
    home = tmp_path / "home"
    home.mkdir()
    target = home / "books"
    target.write_bytes(b"mine") if kind == "file" else target.mkdir()
    for _ in range(3):  # each killed restore cleans what the one before left
        _killed_restore(src, target, data_key)
    leftovers = [n for n in _names(home) if n != "books"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".~cs-t") and len(leftovers[0]) < 40
    assert clean_leftovers(target) == 1  # its process is gone
    assert _names(home) == ["books"]
    _killed_restore(src, target, data_key)
    snap = LocalSnapshot.scan(src, keys)
    restore(snap.manifest, target, snap.read_chunk, keys)  # cleans first
    assert _names(home) == ["books"]
    assert LocalSnapshot.scan(target, keys).fingerprint == snap.fingerprint


def _foreign(target: Path, kind: str = "t", pid: int = 1) -> Path:
    """A temp name as made on another computer (pid not checkable here)."""
    from cloudshare_p2p.snapshot import _tag

    return target.with_name(f".~cs-{kind}{_tag(target)}-ffff-{pid}-abcdef")


def test_age_decides_when_the_process_cannot_be_checked(tmp_path: Path) -> None:
    target = tmp_path / "books.db"
    target.write_bytes(b"mine")
    fresh, old = _foreign(target, pid=11), _foreign(target, pid=12)
    fresh.write_bytes(b"x")
    old.write_bytes(b"x")
    _age(old, 120)
    assert clean_leftovers(target) == 1
    assert _names(tmp_path) == sorted(["books.db", fresh.name])
    assert clean_leftovers(target, max_age=0) == 1
    assert _names(tmp_path) == ["books.db"]


def test_live_process_temps_are_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "books.db"
    target.write_bytes(b"mine")
    from cloudshare_p2p.snapshot import _temp_path

    mine = _temp_path(target, "t")  # this (living) process
    mine.mkdir()
    (mine / "x").write_bytes(b"x")
    _age(mine, 120)
    assert clean_leftovers(target) == 0 and mine.exists()


def test_other_targets_and_other_files_are_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "books.db"
    target.write_bytes(b"mine")
    other = _foreign(tmp_path / "other.db")
    other.write_bytes(b"x")
    unrelated = [tmp_path / ".~cs-notes", tmp_path / "books.db.bak", tmp_path / ".books.db.cloudshare-tmp-x"]
    for p in [other, *unrelated]:
        p.write_bytes(b"x")
        _age(p, 7200)
    assert clean_leftovers(target) == 0
    assert len(_names(tmp_path)) == 5


def test_leftovers_of_earlier_releases(tmp_path: Path) -> None:
    target = tmp_path / "books.db"
    target.write_bytes(b"mine")
    legacy = tmp_path / ".books.db.cloudshare-tmp-0123456789ab"
    legacy.write_bytes(b"x" * 1000)
    _age(legacy, 120)
    assert clean_leftovers(target) == 1 and _names(tmp_path) == ["books.db"]


def test_swap_cut_after_moving_the_old_copy_aside_is_undone(tmp_path: Path) -> None:
    target = tmp_path / "Mandant"
    old = _foreign(target, kind="o")
    old.mkdir()
    (old / "a.db").write_bytes(b"mine")
    _age(old, 120)
    assert clean_leftovers(target) == 1
    assert _names(tmp_path) == ["Mandant"] and (target / "a.db").read_bytes() == b"mine"


def test_old_copy_after_a_finished_swap_keeps_unshared_items(tmp_path: Path) -> None:
    target = tmp_path / "Mandant"
    target.mkdir()
    (target / "a.db").write_bytes(b"new")
    old = _foreign(target, kind="o")
    old.mkdir()
    (old / "a.db").write_bytes(b"previous version")
    os.symlink("/etc/hostname", old / "link")
    _age(old, 120)
    assert clean_leftovers(target) == 1
    assert _names(tmp_path) == ["Mandant"]
    assert _names(target) == ["a.db", "link"] and (target / "a.db").read_bytes() == b"new"


def test_pending_versions_are_not_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "books.db"
    target.write_bytes(b"mine")
    from cloudshare_p2p.snapshot import _tag

    pending = tmp_path / f".~cs-p{_tag(target)}-0123456789ab"
    pending.write_bytes(b"received")
    _age(pending, 7200)
    assert clean_leftovers(target) == 0 and pending.exists()
