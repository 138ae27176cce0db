"""Small file-system steps that restore and cleanup share: kind checks, removal, retried renames, fsync."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

_RETRY_DELAYS = (0.05, 0.2, 0.5) if os.name == "nt" else ()  # indexers and virus scanners


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_plain_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Best effort: remove a file, link or folder we made (never raises)."""
    if _is_plain_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            path.unlink()
        except OSError:
            pass


def _retry(op: Callable[[Path, Path], None], src: Path, dst: Path) -> None:
    """`op(src, dst)`, retried briefly on Windows when a scanner holds the file for a moment."""
    for delay in _RETRY_DELAYS:
        try:
            return op(src, dst)
        except PermissionError:
            time.sleep(delay)
    return op(src, dst)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows (not on Windows)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
