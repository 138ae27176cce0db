"""Small local-file operations the commands share (portable: POSIX and Windows)."""

from __future__ import annotations

import os
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
