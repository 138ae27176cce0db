"""Reading a scanned file back for sending: in order, in large blocks, checked against the scan."""

from __future__ import annotations

import hashlib
import queue
import threading
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from .. import errors
from ..i18n import _

READ_BUFFER = 1 << 20  # a block read again; also the buffer of a file `read_at` keeps open


class Reread:
    """One scanned file read again in order, in large blocks, every byte hashed: `at` hands out
    chunks (ascending offsets) from those very blocks, and `finish` reads on to the end and
    raises InvalidState unless the whole equals the scan (size and SHA-256), so the chunks
    handed out are the bytes the scan hashed. Costs one SHA-256 pass, not one HMAC per chunk;
    reading and hashing run on a helper thread (both release the GIL for a whole block)."""

    BLOCK = READ_BUFFER
    AHEAD = 4  # blocks read ahead of the one in use

    def __init__(self, path: Path, size: int, digest: bytes) -> None:
        self.path, self._size, self._digest = path, size, digest
        self._fh: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._hash = hashlib.sha256()
        self._buf, self._start, self._read = b"", 0, 0  # _buf holds the file from _start on
        self._queue: queue.Queue[bytes | OSError] = queue.Queue(self.AHEAD)
        self._stop = self._eof = False
        self._thread = threading.Thread(target=self._pump, name="reread", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        """The helper thread: read, hash and queue blocks; an empty block at the end."""
        try:
            while not self._stop:
                block = self._fh.read(self.BLOCK)
                self._hash.update(block)
                self._read += len(block)
                self._queue.put(block)
                if not block:
                    return
        except OSError as exc:
            self._queue.put(exc)

    def _next(self) -> bytes:
        item = self._queue.get()
        if isinstance(item, OSError):
            self._eof = True
            raise item
        self._eof = not item
        return item

    def _changed(self) -> errors.InvalidState:
        return errors.InvalidState(_("{path} changed while it was being sent").format(path=self.path),
                                   hint=_("close the accounting program and try again"))

    def at(self, offset: int, length: int) -> bytes:
        """The `length` bytes at `offset` (not before the last call's offset)."""
        while self._start + len(self._buf) < offset + length:
            block = b"" if self._eof else self._next()
            if not block:  # shorter than at the scan
                raise self._changed()
            keep = min(max(offset - self._start, 0), len(self._buf))
            self._buf, self._start = self._buf[keep:] + block, self._start + keep
        i = offset - self._start
        return self._buf[i : i + length]

    def finish(self) -> None:
        """Read to the end; InvalidState if the file is not, as a whole, the one scanned."""
        self._buf = b""
        while not self._eof:
            self._next()
        self._thread.join()
        if self._read != self._size or self._hash.digest() != self._digest:
            raise self._changed()

    def close(self) -> None:
        """Stop the helper thread and close the file (idempotent)."""
        self._stop = True
        while self._thread.is_alive():  # unblock a full queue
            with suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._fh.close()
