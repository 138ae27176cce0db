"""One transfer: its deadline (a watchdog that closes the connection when the whole transfer
runs out of time or nothing moves for a while: a silent network) and the loops that move the
bytes (pipelined writes with checked answers, prefetched reads)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import paramiko

from cloudshare_p2p import errors

from ..i18n import _
from .contract import FileTooLarge
from .endpoint import Timeouts
from .paramiko_sftp import SFTPClient, WriteAcks

# OpenSSH accepts SFTP messages up to 256 KiB *including* headers and answers reads with at
# most 256 KiB - 1 KiB of data: stay at that size for both directions.
REQUEST_SIZE = 256 * 1024 - 1024
PIECE_SIZE = 1 << 20  # upload reads its source in 1 MiB pieces
RANGES_BATCH = 16 << 20  # read_ranges asks for at most this much ahead of what was consumed
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


def write_stream(sftp: SFTPClient, handle: bytes, stream: BinaryIO, check: Deadline,
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


def copy_out(f: paramiko.SFTPFile, dst: BinaryIO, check: Deadline, progress: Progress,
             max_size: int | None, count: Callable[[int], None], done: int = 0) -> int:
    """Copy a prefetched file into `dst` (`done` bytes of it are there already); FileTooLarge
    if it grows past `max_size`. Returns the bytes now in `dst`."""
    while chunk := f.read(REQUEST_SIZE):
        done += len(chunk)
        count(len(chunk))
        if max_size is not None and done > max_size:
            raise FileTooLarge(f"file grew past {max_size} bytes while reading")
        dst.write(chunk)
        check.check()
        if progress:
            progress(done)
    return done


def read_ranges(f: paramiko.SFTPFile, ranges: Sequence[tuple[int, int]], check: Deadline,
                count: Callable[[int], None]) -> Iterator[bytes]:
    """The bytes of each range of the open file `f`, in order (paramiko's readv, many requests in
    flight, at most RANGES_BATCH asked ahead); ranges past the end are clipped (short)."""
    size = f.stat().st_size or 0  # paramiko's prefetch hangs on a range past the end
    clipped = [(o, max(0, min(n, size - o))) for o, n in ranges]
    for batch in batches(clipped, RANGES_BATCH):
        wanted = [r for r in batch if r[1]]
        got = iter(f.readv(wanted, 64) if wanted else ())
        for _offset, length in batch:
            data = next(got) if length else b""
            count(len(data))
            check.check()
            yield data


def batches(ranges: Sequence[tuple[int, int]], limit: int) -> Iterator[list[tuple[int, int]]]:
    """`ranges` in consecutive groups of about `limit` bytes (one readv each)."""
    batch: list[tuple[int, int]] = []
    size = 0
    for offset, length in ranges:
        if batch and size + length > limit:
            yield batch
            batch, size = [], 0
        batch.append((offset, length))
        size += length
    if batch:
        yield batch
