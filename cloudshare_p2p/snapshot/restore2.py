"""Restoring a format-2 version: chunks from the local copy first, the rest as they arrive.

The version is built in a temp sibling as in format 1 (`restore`), but not in file order:
every chunk the local copy still holds (verified by its id) is written at each place the
version needs it, then the missing ones are asked for all at once and written as they come
(frames read with many requests in flight). Then it is swapped in exactly as format 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .. import crypto, errors
from ..i18n import _
from .diskerrors import _FetchFailed
from .manifest import FileEntry, Manifest
from .restore import _OPEN_FLAGS, _inside, restore_with

WRITE_BATCH = 1 << 20  # neighbouring chunks are written to the file in runs of this size
_OFFSET_BITS = 44  # a place is file number << 44 | offset (files up to 16 TiB)
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_LENGTH_BITS = 27  # a chunk's length (format 2 chunks are at most 1 MiB)
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1


class LocalChunks:
    """Where the local copy may hold each chunk id: (file, offset, length), kept as one packed
    int per id (a 1 GB file has some 200,000 chunks: no tuple per chunk)."""

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self._numbers: dict[Path, int] = {}
        self._where: dict[str, int] = {}

    def setdefault(self, chunk_id: str, where: tuple[Path, int, int]) -> None:
        """Record `where` for `chunk_id` unless it has a place already."""
        if chunk_id in self._where:
            return
        path, offset, length = where
        number = self._numbers.setdefault(path, len(self._paths))
        if number == len(self._paths):
            self._paths.append(path)
        self._where[chunk_id] = ((number << _OFFSET_BITS | offset) << _LENGTH_BITS) | length

    def get(self, chunk_id: str) -> tuple[Path, int, int] | None:
        """(file, offset, length) of `chunk_id`, or None if the local copy has no place for it."""
        packed = self._where.get(chunk_id)
        if packed is None:
            return None
        length, rest = packed & _LENGTH_MASK, packed >> _LENGTH_BITS
        return self._paths[rest >> _OFFSET_BITS], rest & _OFFSET_MASK, length

    def __len__(self) -> int:
        return len(self._where)


Remote = Callable[[set[str]], Iterator[tuple[str, bytes]]]  # missing ids -> (id, bytes verified by id)


class _Files:
    """The files being built, opened on demand (a few at a time); neighbouring writes are
    joined into one `os.pwrite` of up to WRITE_BATCH bytes (no seeks, no small writes)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
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
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        del view
        self._buffer.clear()
        self._pending = None

    def _close_all(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def close(self) -> None:
        """Close every file; a run not flushed is dropped (only an error leaves one)."""
        self._buffer.clear()
        self._pending = None
        self._close_all()


def _places(manifest: Manifest) -> dict[str, int | list[int]]:
    """Every place each chunk id goes to, as `file number << 44 | offset` (a list only for
    ids that occur more than once: one small int per chunk, not a list of tuples)."""
    places: dict[str, int | list[int]] = {}
    for number, entry in enumerate(manifest.files):
        offset, base = 0, number << _OFFSET_BITS
        for cid, length in zip(entry.chunks, entry.lengths, strict=True):
            spot = places.setdefault(cid, base | offset)
            if spot != base | offset:
                if isinstance(spot, int):
                    places[cid] = [spot, base | offset]
                else:
                    spot.append(base | offset)
            offset += length
    return places


def _spots(place: int | list[int]) -> Iterator[tuple[int, int]]:
    for spot in (place,) if isinstance(place, int) else place:
        yield spot >> _OFFSET_BITS, spot & _OFFSET_MASK


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


def _finish(paths: list[Path], entries: tuple[FileEntry, ...]) -> None:
    for path, entry in zip(paths, entries, strict=True):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, entry.mode & 0o777)
        os.utime(path, (entry.mtime, entry.mtime))


def _fill(manifest: Manifest, paths: list[Path], keys: crypto.Keys, local: LocalChunks,
          remote: Remote) -> None:
    places = _places(manifest)
    files, reader = _Files(paths), _LocalReader()
    try:
        missing: set[str] = set()
        for cid, spots in places.items():
            where = local.get(cid)
            data = reader.read(where) if where is not None else None
            if data is None or crypto.chunk_id(keys, data) != cid:
                missing.add(cid)
                continue
            for number, offset in _spots(spots):
                files.write(number, offset, data)
        files.flush()
        try:
            for cid, data in remote(set(missing)):  # verified by `remote`
                if cid not in missing or len(data) == 0:
                    continue
                for number, offset in _spots(places[cid]):
                    files.write(number, offset, data)
                missing.discard(cid)
            files.flush()
        except OSError as exc:
            raise _FetchFailed(exc) from exc
        if missing:
            raise errors.AreaCorrupt(_("chunk {chunk_id}… is missing from the area").format(
                chunk_id=min(missing)[:12]))
    finally:
        files.close()
        reader.close()


def restore_chunks(manifest: Manifest, target: Path, keys: crypto.Keys, local: LocalChunks,
                   remote: Remote) -> None:
    """Build `manifest` (format 2) in a temp sibling from `local` chunks and `remote` ones,
    verifying every chunk, then swap it in; on any error `target` is left untouched."""
    def build(tmp: Path) -> None:
        paths = _create(manifest, tmp)
        _fill(manifest, paths, keys, local, remote)
        _finish(paths, manifest.files)

    restore_with(manifest, target, keys, build)
