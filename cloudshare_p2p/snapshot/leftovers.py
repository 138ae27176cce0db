"""Cleaning up after a killed restore: our abandoned temps and replaced copies next to a target."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .fileops import _is_plain_dir, _remove
from .swap import _settle_old
from .tempnames import _HOST, _LEGACY_RE, _TEMP_RE, _tag

_LIVE_MAX_AGE = 3600.0  # a temp of a process still alive is left alone this long (pid reuse)


def _pid_alive(pid: int) -> bool:
    """Whether a local process `pid` exists (POSIX only: on Windows os.kill would end it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _newest_mtime(path: Path) -> float:
    newest = os.lstat(path).st_mtime
    if _is_plain_dir(path):
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                with_name = os.path.join(folder, name)
                newest = max(newest, os.lstat(with_name).st_mtime)
    return newest


def _abandoned(path: Path, host: str | None, pid: int | None, max_age: float) -> bool:
    """A temp whose process on this computer is gone, or that nobody touched for `max_age`."""
    age = time.time() - _newest_mtime(path)
    if host == _HOST and pid is not None and os.name != "nt":
        return age > _LIVE_MAX_AGE or not _pid_alive(pid)
    return age > max_age


def _leftover(name: str, target: Path) -> tuple[str, str | None, int | None] | None:
    """(kind "t"/"o", host, pid) if `name` is one of our temps for `target`, else None."""
    if m := _TEMP_RE.fullmatch(name):
        return (m["kind"], m["host"], int(m["pid"])) if m["tag"] == _tag(target) else None
    legacy = f".{target.name}"
    if name.startswith(legacy) and (m := _LEGACY_RE.fullmatch(name[len(legacy):])):
        return ("t" if m["kind"] == "tmp" else "o"), None, None
    return None


def _recover_old(old: Path, target: Path) -> None:
    """A replaced copy left by a killed swap: back in place if the target is missing, else settled."""
    if os.path.lexists(target):
        _settle_old(old, target)
    else:
        os.rename(old, target)


def clean_leftovers(target: Path, max_age: float = 60.0) -> int:
    """Remove our abandoned temps next to `target`; return how many were handled.

    A temp is abandoned when the process that made it (this computer's, by the pid in its
    name) is gone, or when nothing in it changed for `max_age` seconds (temps from another
    computer or without a pid; a living process's temps are left alone for an hour). A
    build in progress (`.~cs-t…`) is removed; a replaced copy (`.~cs-o…`) goes back in
    place if a swap was cut before the new version arrived, else it is settled like a
    finished swap. Versions waiting for a file in use (`.~cs-p…`) are never touched here.
    Also handles `.NAME.cloudshare-tmp-…` / `-old-…` names of earlier releases.
    """
    target = Path(target)
    try:
        names = sorted(os.listdir(target.parent))
    except OSError:
        return 0
    handled = 0
    for name in names:
        info = _leftover(name, target)
        path = target.with_name(name)
        try:
            if info is None or not _abandoned(path, info[1], info[2], max_age):
                continue
            if info[0] == "t":
                _remove(path)
            else:
                _recover_old(path, target)
        except OSError:
            continue
        handled += 1
    return handled
