"""Versions received while the target was in use: kept aside, found and put in place later."""

from __future__ import annotations

import os
from pathlib import Path

from .. import crypto, errors
from .diskerrors import _disk_error, _in_use
from .fileops import _fsync_dir, _remove
from .manifest import Manifest
from .scan import LocalSnapshot
from .swap import _swap_in
from .tempnames import TEMP_PREFIX, _pending_path, _tag


def _pendings(target: Path) -> list[Path]:
    """Versions received for `target` but not yet in place (its target was in use)."""
    start = f"{TEMP_PREFIX}p{_tag(target)}-"
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return [target.with_name(n) for n in sorted(names) if n.startswith(start)]


def pending_restore(target: Path) -> Path | None:
    """The version received for `target` but kept aside because `target` was in use, if any."""
    found = _pendings(Path(target))
    return found[0] if found else None


def _keep_pending(tmp: Path, target: Path, manifest: Manifest) -> Path | None:
    """Keep a built version under its stable pending name; None if even that failed."""
    pending = _pending_path(target, manifest)
    try:
        for other in _pendings(target):
            _remove(other)
        os.rename(tmp, pending)
    except OSError:
        _remove(tmp)
        return None
    return pending


def _holds(path: Path, manifest: Manifest, keys: crypto.Keys) -> bool:
    """True if `path` holds exactly `manifest`'s files (content re-verified by chunk id)."""
    try:
        got = LocalSnapshot.scan(path, keys, like=manifest).manifest
    except (errors.CloudShareError, OSError):
        return False
    return got.kind == manifest.kind and [(f.path, f.size, f.chunks) for f in got.files] == [
        (f.path, f.size, f.chunks) for f in manifest.files
    ]


def finish_pending(target: Path, manifest: Manifest, keys: crypto.Keys) -> bool:
    """Put in place `manifest` if an earlier restore received it but found `target` in use.

    True if it was put in place (nothing to receive). Kept versions of other manifests are
    removed (they are no longer the newest). FileInUse again if `target` is still in use.
    """
    target = Path(target)
    want = _pending_path(target, manifest)
    for other in _pendings(target):
        if other != want:
            _remove(other)
    if not os.path.lexists(want):
        return False
    if not _holds(want, manifest, keys):
        _remove(want)
        return False
    try:
        _swap_in(want, target)
    except PermissionError as exc:
        raise _in_use(target, want) from exc
    except OSError as exc:
        raise _disk_error(exc, want, target) from exc
    _fsync_dir(target.parent)
    return True
