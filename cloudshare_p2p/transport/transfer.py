"""One transfer: its deadline (a watchdog that closes the connection when the whole transfer
runs out of time or nothing moves for a while: a silent network) and the loops that move the
bytes (pipelined writes and reads, every answer checked, each piece asked once)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, Protocol

import paramiko

from cloudshare_p2p import errors

from ..i18n import _
from .endpoint import Timeouts
from .paramiko_sftp import Answers, SFTPClient, WriteAcks

# OpenSSH accepts SFTP messages up to 256 KiB *including* headers and answers reads with at
# most 256 KiB - 1 KiB of data: stay at that size for both directions.
REQUEST_SIZE = 256 * 1024 - 1024
PIECE_SIZE = 1 << 20  # upload reads its source in 1 MiB pieces
RANGES_AHEAD = 16 << 20  # read_ranges asks for at most this much ahead of what was consumed
Progress = Callable[[int], None] | None


class Deadline:
    """Deadline of one transfer. Once armed, a watchdog closes the connection when the time
    is up or when nothing moved for `stall` seconds (a stuck read can outlive the channel
    timeout: a silent network); `check` is the cheap in-loop test and marks progress."""

    def __init__(self, what: str, limit: float, transport: paramiko.Transport,
                 stall: float | None = None) -> None:
        self.what, self.limit, self.transport = what, limit, transport
        self.stall = stall if stall is not None else limit
        self.end = time.monotonic() + limit
        self.last = time.monotonic()
        self.expired = threading.Event()
        self.stalled = False
        self._done = threading.Event()
        self._watch: threading.Thread | None = None

    def arm(self) -> None:
        if self._watch is None:
            self.last = time.monotonic()
            self._watch = threading.Thread(target=self._watchdog, name="transfer-watchdog", daemon=True)
            self._watch.start()

    def _watchdog(self) -> None:
        while not self._done.wait(min(1.0, self.stall / 4)):
            now = time.monotonic()
            if now > self.end or now - self.last > self.stall:
                self.stalled = now <= self.end
                self.expired.set()
                self.transport.close()
                return

    def check(self) -> None:
        now = time.monotonic()
        if now > self.end:
            self.expired.set()
            raise self.error()
        self.last = now

    def error(self) -> errors.CloudShareError:
        if self.stalled:  # a silent network: said like an unreachable host (exit 9)
            return errors.NetworkDown(_("{what} stalled: nothing moved for {limit:g} s").format(
                what=self.what, limit=self.stall))
        return errors.TransferError(_("{what} did not finish within {limit:g} s").format(
            what=self.what, limit=self.limit))

    def disarm(self) -> None:
        self._done.set()


@contextlib.contextmanager
def bounded(what: str, timeouts: Timeouts, transport: paramiko.Transport) -> Iterator[Deadline]:
    """Bound a whole transfer by timeouts.transfer -> TransferError."""
    deadline = Deadline(what, timeouts.transfer, transport, timeouts.stall)
    try:
        yield deadline
    except errors.TransferError:
        raise
    except (OSError, EOFError, paramiko.SSHException, errors.NetworkDown):
        if deadline.expired.is_set():
            raise deadline.error() from None
        raise
    finally:
        deadline.disarm()


class Parts:
    """Parts of one object read as a stream, in order (`read(n)` joins at most n bytes across
    parts): a pack of frames is sent without first being joined into one large buffer."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        self._parts = deque(memoryview(part) for part in parts)

    def read(self, n: int = -1) -> bytes:
        out: list[memoryview] = []
        want = n if n >= 0 else sum(len(part) for part in self._parts)
        while want > 0 and self._parts:
            part = self._parts[0]
            if len(part) > want:
                out.append(part[:want])
                self._parts[0] = part[want:]
                break
            out.append(self._parts.popleft())
            want -= len(part)
        return b"".join(out)


class Reader(Protocol):
    """What `write_stream` sends: a file opened for reading, `Parts`, …"""

    def read(self, n: int = -1, /) -> bytes: ...


def write_stream(sftp: SFTPClient, handle: bytes, stream: Reader, check: Deadline,
                 progress: Progress, count: Callable[[int], None], *, close: bool = False) -> int:
    """Write `stream` to the open `handle` (pipelined, every answer checked); bytes written.
    With `close`, the handle's close is sent behind the last write and checked with them."""
    acks = WriteAcks(sftp)
    offset = 0
    while piece := stream.read(PIECE_SIZE):
        view = memoryview(piece)
        for start in range(0, len(view), REQUEST_SIZE):
            acks.send(handle, offset + start, view[start : start + REQUEST_SIZE])
        offset += len(piece)
        count(len(piece))
        check.check()
        if progress:
            progress(offset)
    if close:
        acks.close(handle)
    acks.drain()
    return offset


def copy_out(sftp: SFTPClient, handle: bytes, size: int, dst: BinaryIO, check: Deadline,
             progress: Progress, count: Callable[[int], None], start: int = 0) -> int:
    """Copy bytes `start` … `size` of the open `handle` into `dst` (the first `start` are there
    already) with pipelined reads, each piece asked once, none past `size` (the stat said where
    the file ends); fewer if it ends sooner. Returns the bytes now in `dst`."""
    done = start
    step = 4 * REQUEST_SIZE  # about 1 MiB written at a time, whole requests
    pieces = [(offset, min(step, size - offset)) for offset in range(start, size, step)]
    for (_offset, length), data in zip(pieces, read_ranges(sftp, handle, pieces, check, count), strict=True):
        dst.write(data)
        done += len(data)
        if progress:
            progress(done)
        if len(data) < length:
            break
    return done


def read_ranges(sftp: SFTPClient, handle: bytes, ranges: Sequence[tuple[int, int]], check: Deadline,
                count: Callable[[int], None]) -> Iterator[bytes]:
    """The bytes of each range of the open `handle`, in order: one read request per piece of at
    most REQUEST_SIZE, each asked once, at most RANGES_AHEAD bytes in flight; a range past the
    end of the file is short. (paramiko's readv/prefetch is not used: its prefetch thread can
    fall behind the reader, which then takes "no request pending" for "prefetch done" and reads
    the rest again one request at a time while the prefetched copies still arrive.)"""
    reads = Answers(sftp)
    pieces = _pieces(ranges)
    flight: deque[tuple[int, int, int, int]] = deque()  # (range index, offset, length, request)
    ahead = 0
    for index in range(len(ranges)):
        parts: list[bytes] = []
        while True:
            while ahead < RANGES_AHEAD and (piece := next(pieces, None)) is not None:
                flight.append((*piece, reads.read(handle, piece[1], piece[2])))
                ahead += piece[2]
            if not flight or flight[0][0] != index:
                break
            _index, offset, length, num = flight.popleft()
            ahead -= length
            data = reads.data(num)[:length]  # a host's longer answer is cut to what was asked
            while 0 < len(data) < length:  # a short answer before the end: ask for the rest
                rest = length - len(data)
                more = reads.data(reads.read(handle, offset + len(data), rest))[:rest]
                if not more:
                    break
                data += more
            parts.append(data)
            check.check()
        blob = b"".join(parts)
        count(len(blob))
        yield blob


def _pieces(ranges: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
    """(range index, offset, length) of each read request, at most REQUEST_SIZE long."""
    for index, (offset, length) in enumerate(ranges):
        for start in range(0, length, REQUEST_SIZE):
            yield index, offset + start, min(REQUEST_SIZE, length - start)
