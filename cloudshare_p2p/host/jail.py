"""The path jail's primitives: client paths as the chroot sees them, rename that never replaces."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import posixpath
from typing import Any

_libc: Any = None
RENAME_NOREPLACE = 1


def _renameat2_noreplace(old: str, new: str) -> bool:
    """Atomic rename that fails with EEXIST if `new` exists; False if not supported here."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            _libc.renameat2  # noqa: B018 - probe
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    at_fdcwd = -100
    rc = _libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), RENAME_NOREPLACE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # this filesystem does not support RENAME_NOREPLACE
    raise OSError(err, os.strerror(err), old, None, new)


def _parts(path: bytes) -> list[bytes]:
    """The components of a client path, normalised as the chroot sees it."""
    return [p for p in posixpath.normpath(b"/" + path.lstrip(b"/")).split(b"/") if p]
