"""Several SFTP requests in flight at once, for the contract's batch operations: stat many
paths, read many small files, write a small file and read back its mtime, probe the clock.

Only requests that do not depend on one another travel together; a request that needs an
earlier one's answer (a handle from `open`) waits for it. Every answer is read before an error
is raised, so no request is left in flight. The SFTP draft lets a host answer requests in any
order (only those on one handle are processed in the order sent), so answers are matched by
request number (`Answers`) and nothing here relies on two requests on different names running
in the order sent.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from stat import S_ISDIR

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STAT,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from .contract import SmallFile, Stat
from .paramiko_sftp import Answers, SFTPClient

REQUEST_SIZE = 256 * 1024 - 1024  # as transfer.REQUEST_SIZE (OpenSSH's largest read answer)
WRITE_FLAGS = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
ANSWER_ERRORS = (OSError, EOFError, paramiko.SFTPError)


class ShortRead(Exception):
    """The host answered a read with fewer bytes than the file holds (it caps reads lower than
    asked): the caller reads that file the slow way."""


@dataclass
class _Errors:
    """The first error among a batch's answers, raised once every answer is in."""

    first: BaseException | None = None

    def note(self, e: BaseException) -> None:
        self.first = self.first or e

    def raise_first(self) -> None:
        if self.first is not None:
            raise self.first


def stat_of(attr: SFTPAttributes) -> Stat:
    """The contract's `Stat` of SFTP attributes."""
    return Stat(attr.st_size or 0, int(attr.st_mtime or 0), S_ISDIR(attr.st_mode or 0))


def stat_many(sftp: SFTPClient, paths: Sequence[str]) -> list[Stat | None]:
    """`stat` of each path (None: missing), all in one round trip."""
    answers, errs = Answers(sftp), _Errors()
    nums = [answers.send(CMD_STAT, path) for path in paths]
    out: list[Stat | None] = []
    for num in nums:
        try:
            out.append(stat_of(answers.attrs(num)))
        except FileNotFoundError:
            out.append(None)
        except ANSWER_ERRORS as e:
            errs.note(e)
            out.append(None)
    errs.raise_first()
    return out


def open_many(answers: Answers, paths: Sequence[str], flags: int, errs: _Errors) -> list[bytes | None]:
    """Handles of the opened paths (None: missing or failed, the failure noted), one round trip."""
    nums = [answers.send(CMD_OPEN, path, flags, SFTPAttributes()) for path in paths]
    handles: list[bytes | None] = []
    for num in nums:
        try:
            handles.append(answers.checked(num, CMD_HANDLE).get_binary())
        except FileNotFoundError:
            handles.append(None)
        except ANSWER_ERRORS as e:
            errs.note(e)
            handles.append(None)
    return handles


def read_many(sftp: SFTPClient, paths: Sequence[str],
              max_size: int) -> tuple[list[SmallFile | None], list[int]]:
    """Each small file whole (None: missing; `data` None: more than `max_size` bytes) in two
    round trips: open all; then fstat, reads up to `max_size + 1` bytes and close of each.
    Also the indexes of files the host answered short (read them again the slow way)."""
    answers, errs = Answers(sftp), _Errors()
    handles = open_many(answers, paths, SFTP_FLAG_READ, errs)
    pieces = [(o, min(REQUEST_SIZE, max_size + 1 - o)) for o in range(0, max_size + 1, REQUEST_SIZE)]
    asked = [None if h is None else (answers.send(CMD_FSTAT, h),
                                     [answers.send(CMD_READ, h, int64(o), n) for o, n in pieces],
                                     answers.send(CMD_CLOSE, h)) for h in handles]
    out: list[SmallFile | None] = []
    short: list[int] = []
    for i, ask in enumerate(asked):
        if ask is None:
            out.append(None)
            continue
        fstat, reads, close = ask
        try:
            st = stat_of(answers.attrs(fstat))
            data = _gathered(answers, reads, pieces, min(st.size, max_size + 1))
            out.append(SmallFile(data if len(data) <= max_size else None, st))
        except ShortRead:
            out.append(None)
            short.append(i)
        except ANSWER_ERRORS as e:
            errs.note(e)
            out.append(None)
        finally:
            answers.drop([*reads, close])
    errs.raise_first()
    return out, short


def _gathered(answers: Answers, reads: list[int], pieces: list[tuple[int, int]], expected: int) -> bytes:
    """The bytes answering consecutive reads; ShortRead if fewer than `expected` arrived
    before the first short answer (a host capping reads below what was asked)."""
    parts: list[bytes] = []
    for num, (_offset, length) in zip(reads, pieces, strict=True):
        part = answers.data(num)
        parts.append(part)
        if len(part) < length:
            break
    data = b"".join(parts)
    if len(data) < expected:
        raise ShortRead
    return data


def write_small(sftp: SFTPClient, path: str, data: bytes, *, exclusive: bool = False) -> int | None:
    """Create (truncate) `path` holding `data`, in two round trips (see `write_many`)."""
    return write_many(sftp, [(path, data)], exclusive=exclusive)[0]


def write_many(sftp: SFTPClient, items: Sequence[tuple[str, bytes]], *,
               exclusive: bool = False) -> list[int | None]:
    """Create (truncate) each path holding its data, in two round trips: open all; then each
    one's writes, an fstat and the close. Returns each file's mtime on the server's clock, read
    after the last write on its handle (None if the host's answer leaves times out: ask
    `stat`). On an error (raised once every answer is in) the caller removes the paths."""
    answers, errs = Answers(sftp), _Errors()
    flags = WRITE_FLAGS | (SFTP_FLAG_EXCL if exclusive else 0)
    handles = open_many(answers, [path for path, _data in items], flags, errs)
    if None in handles:  # a failed open (noted) or a missing folder: close the others, then raise
        answers.drop([answers.send(CMD_CLOSE, h) for h in handles if h is not None])
        errs.raise_first()
        raise FileNotFoundError(errno.ENOENT, "No such folder", items[handles.index(None)][0])
    asked = []
    for handle, (_path, data) in zip(handles, items, strict=True):
        assert handle is not None
        view = memoryview(data)
        writes = [answers.send(CMD_WRITE, handle, int64(o), bytes(view[o : o + REQUEST_SIZE]))
                  for o in range(0, len(data), REQUEST_SIZE)]
        asked.append((writes, answers.send(CMD_FSTAT, handle), answers.send(CMD_CLOSE, handle)))
    mtimes: list[int | None] = []
    for writes, fstat, close in asked:
        for num in writes:
            try:
                answers.checked(num)
            except ANSWER_ERRORS as e:
                errs.note(e)
        mtime = None
        try:
            found = answers.attrs(fstat).st_mtime
            mtime = None if found is None else int(found)
        except ANSWER_ERRORS as e:
            errs.note(e)
        try:
            answers.checked(close)
        except ANSWER_ERRORS as e:
            errs.note(e)
        mtimes.append(mtime)
    errs.raise_first()
    return mtimes
