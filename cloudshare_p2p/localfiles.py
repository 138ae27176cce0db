"""Small local-file operations the commands share (portable: POSIX and Windows)."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def set_writable(path: Path, writable: bool) -> None:
    """Make the data's regular files writable or read-only for their owner (best effort).

    On Windows `os.chmod` sets or clears the read-only attribute, which is what the
    accounting program sees; on POSIX only the owner's write bit changes.
    """
    root = Path(path)
    if not root.exists() or root.is_symlink():
        return
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for file in files:
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            new = mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
            if new != mode:
                os.chmod(file, new)
        except OSError:
            continue


def atomic_write(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Replace `path` with `data` all at once: a temp file beside it, fsync, then `os.replace`.

    Readers see the old content or the new, never a part. The temp file is created with
    O_EXCL and `mode` (0600 by default: these files are the user's own); on any failure it is
    removed and the error raised. `durable=False` skips the fsync (caches that can be rebuilt).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
