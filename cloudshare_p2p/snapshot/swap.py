"""Putting a built version in place of the target and settling the replaced copy."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from .aside import _aside_names, _rename_no_clobber
from .fileops import _is_plain_dir, _is_plain_file, _retry
from .tempnames import _temp_path


def _swap_in(tmp: Path, target: Path) -> None:
    """Put `tmp` in place of `target`.

    A file over a file (or nothing) is one atomic os.replace. Otherwise the old target is
    renamed aside, the new one renamed in, the old settled (`_settle_old`): between the two
    renames (a few microseconds) `target` does not exist; if the second rename fails the
    old target is put back. If settling the old copy fails it stays a hidden sibling that
    `clean_leftovers` settles later.
    """
    if not os.path.lexists(target) or (_is_plain_file(tmp) and _is_plain_file(target)):
        _retry(os.replace, tmp, target)
        return
    old = _temp_path(target, "o")
    _retry(os.rename, target, old)
    try:
        _retry(os.rename, tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    try:
        _settle_old(old, target)
    except OSError:
        pass


def _unshared(folder: Path, prefix: str = "") -> list[str]:
    """Relative paths under `folder` that scan does not share (symlinks, pipes, devices)."""
    found: list[str] = []
    with os.scandir(folder) as it:
        for e in sorted(it, key=lambda e: e.name):
            if e.is_dir(follow_symlinks=False):
                found += _unshared(Path(e.path), f"{prefix}{e.name}/")
            elif not e.is_file(follow_symlinks=False):
                found.append(prefix + e.name)
    return found


def _keep_beside(src: Path, like: Path, stamp: str) -> Path:
    """Rename `src` to `like`, or to `like`'s conflict name if that exists; never over anything."""
    if _rename_no_clobber(src, like):
        return like
    for candidate in _aside_names(like, stamp, "not-shared"):
        if _rename_no_clobber(src, candidate):
            return candidate
    raise AssertionError("unreachable")


def _carry_unshared(old: Path, target: Path) -> None:
    """Move each item scan does not share from the replaced folder into the new one."""
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    root = target.resolve()
    for rel in _unshared(old):
        dest = target.joinpath(*rel.split("/"))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            placed = dest.parent.resolve().is_relative_to(root)
        except OSError:
            placed = False  # the new version has a file where the folder was
        _keep_beside(old.joinpath(*rel.split("/")), dest if placed else target / dest.name, stamp)


def _settle_old(old: Path, target: Path) -> None:
    """Dispose of the copy `target` replaced; what scan does not share is kept, never deleted.

    Regular files and folders go: they were part of the last version (the caller keeps
    local changes aside before restoring, by fingerprint). Symlinks and special files are
    not covered by the fingerprint, so they are carried into the new version at their
    place, or kept aside beside it (`NAME.conflict-<when>-not-shared`) if the place is taken.
    """
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    if _is_plain_dir(old):
        if _is_plain_dir(target):
            _carry_unshared(old, target)
        elif _unshared(old):
            _keep_beside(old, target.with_name(f"{target.name}.conflict-{stamp}-not-shared"), stamp)
            return
        shutil.rmtree(old, ignore_errors=True)
    elif _is_plain_file(old):
        old.unlink()
    else:
        _keep_beside(old, target.with_name(f"{target.name}.conflict-{stamp}-not-shared"), stamp)
