"""One cloudshare command at a time per data set on this computer.

Two `open`s of one data set in one home would race on its registry row and its lock; the
second waits briefly, then says plainly that another command is working on it. The OS
lock (`filelock`: fcntl on POSIX, msvcrt on Windows) is released when the process ends,
however it ends, so a killed command never leaves a stale lock here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import errors
from .i18n import _

DEFAULT_WAIT = 2.0  # seconds a second command waits for the first before giving up


@contextmanager
def working_on(home: Path, name: str, wait: float = DEFAULT_WAIT) -> Iterator[None]:
    """Hold the data set `name` for this command; `errors.Busy` if another command holds it."""
    from filelock import FileLock, Timeout

    folder = Path(home) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    lock = FileLock(str(folder / f"{digest}.lock"), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        raise errors.Busy(_("another cloudshare command is working on {name} on this computer").format(
            name=name)) from None
    try:
        yield
    finally:
        lock.release()
