"""Restoring a format-2 version: chunks from the local copy first, the rest as they arrive.

The version is built in a temp sibling as in format 1 (`restore`), but not in file order:
every chunk the local copy still holds (verified by its id) is written at each place the
version needs it, then the missing ones are asked for all at once and written as they come
(frames read with many requests in flight). Then it is swapped in exactly as format 1.
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .. import crypto, errors
from ..i18n import _
from . import written
from .chunkids import ChunkIds, IdIndex, Lengths
from .diskerrors import _FetchFailed
from .manifest import FileEntry, Manifest
from .restore import _OPEN_FLAGS, _inside, restore_with

WRITE_BATCH = 1 << 20  # neighbouring chunks are written to the file in runs of this size


class LocalChunks:
    """Where the local copy may hold each chunk id: layouts (a file and its chunk list) with
    one `IdIndex` over all of them; the first layout added that has an id wins. A few dozen
    bytes per chunk (a 1 GB file has some 200,000), nothing per id beyond that."""

    def __init__(self) -> None:
        self._index = IdIndex()
        self._layouts: list[tuple[Path, array[int], Lengths]] = []
        self._starts: list[int] = []

    def add(self, path: Path, ids: ChunkIds, lengths: Lengths) -> None:
        """`path` holds (or held) the chunks `ids` one after another."""
        start = self._index.append_buffer(ids.raw)
        offsets, offset = array("Q"), 0
        for i, length in enumerate(lengths):
            self._index.add(start + i)
            offsets.append(offset)
            offset += length
        self._layouts.append((path, offsets, lengths))
        self._starts.append(start)

    def get(self, key: bytes) -> tuple[Path, int, int] | None:
        """(file, offset, length) of the raw id `key`, or None if no layout has it."""
        pos = self._index.find(key)
        if pos < 0:
            return None
        number = bisect_right(self._starts, pos) - 1
        path, offsets, lengths = self._layouts[number]
        i = pos - self._starts[number]
        return path, offsets[i], lengths[i]

    def __len__(self) -> int:
        return self._index.count


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    """All of `data` at `offset` of the open file `fd` (os.pwrite where there is one; Windows
    has none: a seek, then writes)."""
    pwrite = getattr(os, "pwrite", None)
    if pwrite is None:
        os.lseek(fd, offset, os.SEEK_SET)
    while data:
        done = pwrite(fd, data, offset) if pwrite is not None else os.write(fd, data)
        data, offset = data[done:], offset + done


Remote = Callable[["array[int]"], Iterator[tuple[int, bytes]]]
"""Given the positions (numbered across the manifest's files) of the chunks missing locally,
each one's (position, bytes verified by its id) as they arrive."""


class _Files:
    """The files being built, opened on demand (a few at a time); neighbouring writes are
    joined into one `os.pwrite` of up to WRITE_BATCH bytes (no small writes), and each file is
    hashed while its writes come front to back (a join's: its fingerprint needs no reading)."""

    def __init__(self, paths: list[Path], sizes: list[int]) -> None:
        self.paths = paths
        self._sizes = sizes
        self._hashing: dict[int, written.InOrder] = {}  # files being written front to back
        self._digests: dict[int, bytes | None] = {}  # done (None: out of order)
        self._open: dict[int, int] = {}  # file number -> descriptor
        self._pending: tuple[int, int] | None = None  # (file number, offset) of the buffered run
        self._buffer = bytearray()

    def write(self, number: int, offset: int, data: bytes) -> None:
        if self._pending != (number, offset - len(self._buffer)) or len(self._buffer) >= WRITE_BATCH:
            self.flush()
            self._pending = (number, offset)
        self._buffer += data

    def flush(self) -> None:
        if self._pending is None:
            return
        number, offset = self._pending
        fd = self._open.get(number)
        if fd is None:
            if len(self._open) >= 32:
                self._close_all()
            fd = self._open[number] = os.open(self.paths[number], os.O_WRONLY | getattr(os, "O_BINARY", 0))
        view = memoryview(self._buffer)
        self._hash(number, offset, view)
        _write_at(fd, view, offset)
        del view
        self._buffer.clear()
        self._pending = None

    def _hash(self, number: int, offset: int, data: memoryview) -> None:
        """Hash file `number` as long as its writes come front to back (none held once done)."""
        if number in self._digests:
            if self._digests[number] is not None:  # written again after it was complete
                self._digests[number] = None
            return
        hashing = self._hashing.get(number)
        if hashing is None:
            hashing = self._hashing[number] = written.InOrder(self._sizes[number])
        hashing.wrote(offset, data)
        if hashing.complete() or hashing.broken():
            self._digests[number] = hashing.digest()
            del self._hashing[number]

    def digests(self) -> list[bytes | None]:
        """Each file's SHA-256 where all its writes came front to back, else None."""
        return [self._digests.get(n, written.EMPTY if size == 0 and n not in self._hashing else None)
                for n, size in enumerate(self._sizes)]

    def _close_all(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def close(self) -> None:
        """Close every file; a run not flushed is dropped (only an error leaves one)."""
        self._buffer.clear()
        self._pending = None
        self._close_all()


class _Layout:
    """Where each position of a manifest goes (file number, offset), its first occurrence and
    the later positions of the same id: arrays and one index, nothing per chunk id."""

    def __init__(self, manifest: Manifest) -> None:
        total = sum(len(f.chunks) for f in manifest.files)
        self.index = IdIndex(total)
        self.numbers, self.offsets, self.lengths = array("I"), array("Q"), array("I")
        self.firsts = bytearray()
        self.dups: dict[int, list[int]] = {}  # first position -> the later ones
        for number, entry in enumerate(manifest.files):
            start, offset = self.index.append_buffer(entry.chunks.raw), 0
            for i, length in enumerate(entry.lengths):
                pos = start + i
                first = self.index.add(pos)
                if first != pos:
                    self.dups.setdefault(first, []).append(pos)
                self.numbers.append(number)
                self.offsets.append(offset)
                self.lengths.append(length)
                self.firsts.append(first == pos)
                offset += length

    def spots(self, pos: int) -> Iterator[tuple[int, int]]:
        """(file number, offset) of `pos` and of each later position of its id."""
        for at in (pos, *self.dups.get(pos, ())):
            yield self.numbers[at], self.offsets[at]


class _LocalReader:
    """Reads chunks of the local copy, keeping the last file open (a file that cannot be
    opened is not tried again: a fresh join has no local copy at all)."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._fh: BinaryIO | None = None
        self._absent: set[Path] = set()

    def read(self, where: tuple[Path, int, int]) -> bytes | None:
        path, offset, length = where
        if path in self._absent:
            return None
        try:
            if path != self._path or self._fh is None:
                self.close()
                try:
                    self._fh = open(path, "rb")  # noqa: SIM115 - kept open
                except OSError:
                    self._absent.add(path)
                    return None
                self._path = path
            self._fh.seek(offset)
            return self._fh.read(length)
        except OSError:
            return None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = self._path = None


def _create(manifest: Manifest, tmp: Path) -> list[Path]:
    if manifest.kind == "file":
        paths = [tmp]
    else:
        tmp.mkdir()
        root = tmp.resolve()
        paths = [_inside(root, e.path) for e in manifest.files]
    for path, entry in zip(paths, manifest.files, strict=True):
        os.close(os.open(path, _OPEN_FLAGS, 0o600))
        os.truncate(path, entry.size)
    return paths


def _finish(paths: list[Path], entries: tuple[FileEntry, ...], digests: list[bytes | None]) -> None:
    for path, entry, digest in zip(paths, entries, digests, strict=True):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, entry.mode & 0o777)
        os.utime(path, (entry.mtime, entry.mtime))
        if digest is not None:
            written.note(os.stat(path), digest)


def _fill(manifest: Manifest, paths: list[Path], keys: crypto.Keys, local: LocalChunks,
          remote: Remote) -> list[bytes | None]:
    """Write every chunk of `manifest` into `paths`; each file's SHA-256 where its writes
    came front to back (a join's), else None."""
    layout = _Layout(manifest)
    files, reader = _Files(paths, [entry.size for entry in manifest.files]), _LocalReader()
    try:
        missing = array("I")
        for pos, first in enumerate(layout.firsts):
            if not first:
                continue
            key = layout.index.key_at(pos)
            where = local.get(key)
            data = reader.read(where) if where is not None else None
            if data is None or crypto.chunk_digest(keys, data) != key:
                missing.append(pos)
                continue
            for number, offset in layout.spots(pos):
                files.write(number, offset, data)
        files.flush()
        wanted = bytearray(len(layout.firsts))
        for pos in missing:
            wanted[pos] = 1
        left = len(missing)
        try:
            for pos, data in remote(missing):  # verified by `remote`
                if not 0 <= pos < len(wanted) or not wanted[pos] or len(data) == 0:
                    continue
                for number, offset in layout.spots(pos):
                    files.write(number, offset, data)
                wanted[pos] = 0
                left -= 1
            files.flush()
        except OSError as exc:
            raise _FetchFailed(exc) from exc
        if left:
            first_missing = min(layout.index.key_at(p).hex() for p in missing if wanted[p])
            raise errors.AreaCorrupt(_("chunk {chunk_id}… is missing from the area").format(
                chunk_id=first_missing[:12]))
        return files.digests()
    finally:
        files.close()
        reader.close()


def restore_chunks(manifest: Manifest, target: Path, keys: crypto.Keys, local: LocalChunks,
                   remote: Remote) -> None:
    """Build `manifest` (format 2) in a temp sibling from `local` chunks and `remote` ones,
    verifying every chunk, then swap it in; on any error `target` is left untouched."""
    def build(tmp: Path) -> None:
        paths = _create(manifest, tmp)
        digests = _fill(manifest, paths, keys, local, remote)
        _finish(paths, manifest.files, digests)

    written.forget()
    try:
        restore_with(manifest, target, keys, build)
    except BaseException:
        written.forget()  # the temp files noted are gone: their inode numbers may come back
        raise
