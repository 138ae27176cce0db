"""What a refusing disk or a file in use means to the user: LocalDiskError and FileInUse."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

from .. import errors
from ..i18n import N_, _

_DISK_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (N_("the disk is full"), N_("free some space on that disk, then try again")),
    errno.EROFS: (N_("the disk is read-only"), N_("make the disk writable (or move the data set), then try "
                                                  "again")),
    errno.EACCES: (N_("permission denied"), N_("make the folder writable for you, then try again")),
    errno.EPERM: (N_("the operation is not permitted"),
        N_("make the folder writable for you, then try again")),
    errno.ENAMETOOLONG: (
        N_("a file name or path is too long for this disk"),
        N_("move the data set to a folder with a shorter path (or have the file renamed), then try again"),
    ),
}
if hasattr(errno, "EDQUOT"):
    _DISK_REASONS[errno.EDQUOT] = (N_("your disk quota is used up"), N_("free some space, then try again"))


class _FetchFailed(Exception):
    """An OSError raised by `fetch` (network, cache): passed on as is, not as a disk error."""

    def __init__(self, original: OSError) -> None:
        super().__init__(str(original))
        self.original = original


def _tagged(fetch: Callable[[str], bytes]) -> Callable[[str], bytes]:
    def call(chunk_id: str) -> bytes:
        try:
            return fetch(chunk_id)
        except OSError as exc:
            raise _FetchFailed(exc) from exc

    return call


def _disk_error(exc: OSError, temp: Path, target: Path) -> errors.LocalDiskError:
    """A LocalDiskError naming the real path (not our temp name) and what to do."""
    what, todo = _DISK_REASONS.get(exc.errno or 0, (exc.strerror or str(exc), N_("fix the disk, then try "
                                                                                 "again")))
    what, todo = _(what), _(todo)
    where = str(exc.filename) if exc.filename else str(target.parent)
    where = where.replace(str(temp), str(target))
    if len(where) > 200:
        where = f"{where[:90]}…{where[-90:]}"
    return errors.LocalDiskError(
        _("could not write the newest version of {target}: {what} ({where})").format(
            target=target, what=what, where=where),
        hint=_("{todo}; your local copy was not changed").format(todo=todo),
    )


def _in_use(target: Path, kept: Path | None) -> errors.FileInUse:
    what = _("what was received is kept and will be put in place") if kept else _("it will be received again")
    return errors.FileInUse(
        _("{target} is in use by another program (or protected against changes); the newest version could "
          "not be put in place").format(target=target),
        hint=_("close the accounting program (or whatever holds {name} open), then open again: {what}"
               ).format(name=target.name, what=what),
    )
