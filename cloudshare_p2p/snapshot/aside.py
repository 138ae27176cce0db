"""Keeping local work aside under a clear, unused sibling name (never overwriting)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path


def _clean_reason(reason: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", reason).strip("-")[:40]
    return cleaned or "kept"


def _aside_names(path: Path, stamp: str, reason: str) -> Iterator[Path]:
    """books.db -> books.conflict-<stamp>-<reason>.db, then ...-2.db, -3.db, ..."""
    is_file = path.is_file()
    suffix = path.suffix if is_file else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    n = 1
    while True:
        extra = "" if n == 1 else f"-{n}"
        yield path.with_name(f"{stem}.conflict-{stamp}-{reason}{extra}{suffix}")
        n += 1


def _rename_no_clobber(src: Path, dst: Path) -> bool:
    """Rename without ever replacing `dst`; False if `dst` exists."""
    if src.is_file() and not src.is_symlink():
        try:
            os.link(src, dst)  # atomic "create if absent"
        except FileExistsError:
            return False
        except OSError:
            pass  # no hard links here (FAT, some shares): fall back below
        else:
            os.unlink(src)
            return True
    if os.path.lexists(dst):
        return False
    os.rename(src, dst)
    return True


def keep_aside(path: Path, reason: str, when: datetime | None = None) -> Path:
    """Rename `path` to a clear, unused sibling name and return it.

    Files keep their extension last so they still open:
    ``books.db -> books.conflict-2026-11-28T231500-<reason>.db``; folders get the
    marker appended. Existing names are never overwritten (a counter is added).
    """
    path = Path(path)
    stamp = (when or datetime.now()).strftime("%Y-%m-%dT%H%M%S")
    for candidate in _aside_names(path, stamp, _clean_reason(reason)):
        if _rename_no_clobber(path, candidate):
            return candidate
    raise AssertionError("unreachable")
