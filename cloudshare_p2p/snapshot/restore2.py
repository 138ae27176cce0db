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
from .diskerrors import _disk_error, _FetchFailed
from .fileops import _fsync_dir, _remove
from .leftovers import clean_leftovers
from .manifest import FileEntry, Manifest, validate_manifest
from .pending import finish_pending
from .restore import _OPEN_FLAGS, _inside, _put_in_place
from .tempnames import _temp_path

LocalChunks = dict[str, tuple[Path, int, int]]  # id -> (file, offset, length) in the local copy
Remote = Callable[[set[str]], Iterator[tuple[str, bytes]]]  # missing ids -> (id, bytes verified by id)


class _Files:
    """The files being built, opened on demand (a few at a time)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self._open: dict[int, BinaryIO] = {}
        self._at: dict[int, int] = {}  # where each open file's position is (a seek flushes)

    def write(self, number: int, offset: int, data: bytes) -> None:
        fh = self._open.get(number)
        if fh is None:
            if len(self._open) >= 32:
                self.close()
            fh = self._open[number] = open(self.paths[number], "r+b")  # noqa: SIM115 - kept open
            self._at[number] = 0
        if self._at[number] != offset:
            fh.seek(offset)
        fh.write(data)
        self._at[number] = offset + len(data)

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()
        self._at.clear()


def _places(manifest: Manifest) -> dict[str, list[tuple[int, int]]]:
    """Every (file number, offset) each chunk id goes to."""
    places: dict[str, list[tuple[int, int]]] = {}
    for number, entry in enumerate(manifest.files):
        offset = 0
        for cid, length in zip(entry.chunks, entry.lengths, strict=True):
            places.setdefault(cid, []).append((number, offset))
            offset += length
    return places


class _LocalReader:
    """Reads chunks of the local copy, keeping the last file open."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._fh: BinaryIO | None = None

    def read(self, where: tuple[Path, int, int]) -> bytes | None:
        path, offset, length = where
        try:
            if path != self._path or self._fh is None:
                self.close()
                self._fh, self._path = open(path, "rb"), path  # noqa: SIM115 - kept open
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
            data = reader.read(local[cid]) if cid in local else None
            if data is None or crypto.chunk_id(keys, data) != cid:
                missing.add(cid)
                continue
            for number, offset in spots:
                files.write(number, offset, data)
        try:
            for cid, data in remote(set(missing)):  # verified by `remote`
                if cid not in missing or len(data) == 0:
                    continue
                for number, offset in places.get(cid, ()):
                    files.write(number, offset, data)
                missing.discard(cid)
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
    validate_manifest(manifest)
    target = Path(target)
    clean_leftovers(target)
    if finish_pending(target, manifest, keys):
        return
    tmp = _temp_path(target, "t")
    try:
        paths = _create(manifest, tmp)
        _fill(manifest, paths, keys, local, remote)
        _finish(paths, manifest.files)
    except _FetchFailed as exc:
        _remove(tmp)
        raise exc.original from None
    except OSError as exc:
        _remove(tmp)
        raise _disk_error(exc, tmp, target) from exc
    except BaseException:
        _remove(tmp)
        raise
    _put_in_place(tmp, target, manifest)
    _fsync_dir(target.parent)
