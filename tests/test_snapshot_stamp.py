"""snapshot: the quick stamp for `close` with nothing changed, and no POSIX-only calls."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

from cloudshare_p2p import snapshot
from cloudshare_p2p.snapshot import quick_stamp


def _tick() -> None:
    """Let the file system clock move on (timestamps can be as coarse as a few ms)."""
    time.sleep(0.02)


def _later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_quick_stamp_single_file(tmp_path: Path) -> None:
    f = tmp_path / "books.db"
    assert quick_stamp(f) == "absent"
    f.write_bytes(b"one")
    stamp = quick_stamp(f)
    assert quick_stamp(f) == stamp  # unchanged -> equal
    _later(f)
    touched = quick_stamp(f)
    assert touched != stamp  # mtime alone
    _tick()
    with open(f, "r+b") as fh:  # same size, content edited, mtime put back
        fh.write(b"ONE")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert quick_stamp(f) != touched  # ctime moved


def test_quick_stamp_same_size_rewrite_with_old_mtime(tmp_path: Path) -> None:
    f = tmp_path / "books.db"
    f.write_bytes(b"one")
    before = f.stat()
    stamp = quick_stamp(f)
    _tick()
    f.write_bytes(b"two")
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert quick_stamp(f) != stamp


def test_quick_stamp_folder(tmp_path: Path) -> None:
    d = tmp_path / "Mandant"
    (d / "sub").mkdir(parents=True)
    (d / "a.db").write_bytes(b"a")
    (d / "sub" / "b.ini").write_bytes(b"b")
    stamp = quick_stamp(d)
    assert quick_stamp(d) == stamp
    (d / "sub" / "c.txt").write_bytes(b"c")
    added = quick_stamp(d)
    assert added != stamp
    (d / "sub" / "c.txt").unlink()
    assert quick_stamp(d) == stamp  # back to the same files, untouched
    (d / "a.db").unlink()
    assert quick_stamp(d) != stamp
    _tick()
    (d / "a.db").write_bytes(b"a")
    assert quick_stamp(d) != stamp  # recreated: new times (and usually a new inode)
    renamed = quick_stamp(d)
    os.rename(d / "sub" / "b.ini", d / "sub" / "B2.ini")
    assert quick_stamp(d) != renamed


def test_quick_stamp_ignores_what_scan_skips(tmp_path: Path) -> None:
    d = tmp_path / "Mandant"
    d.mkdir()
    (d / "a.db").write_bytes(b"a")
    stamp = quick_stamp(d)
    os.symlink("a.db", d / "link")
    (d / "empty").mkdir()
    assert quick_stamp(d) == stamp


POSIX_ONLY_MODULES = {"fcntl", "pwd", "grp", "termios", "resource", "posix"}
POSIX_ONLY_ATTRS = {
    "getuid", "geteuid", "getgid", "fork", "setsid", "getpgid", "killpg", "SIGKILL", "SIGSTOP",
}


def test_snapshot_has_no_posix_only_calls() -> None:
    offenders = []
    trees = [ast.parse(f.read_text()) for f in sorted(Path(snapshot.__file__).parent.glob("*.py"))]
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            offenders += [m for m in mods if m.split(".")[0] in POSIX_ONLY_MODULES]
        elif isinstance(node, ast.Attribute) and node.attr in POSIX_ONLY_ATTRS:
            offenders.append(node.attr)
    assert offenders == []
