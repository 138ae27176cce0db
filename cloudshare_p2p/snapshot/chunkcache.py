"""The local cache of verified plaintext chunks, one file per chunk id."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from .. import crypto
from ..i18n import _
from ..localfiles import atomic_write
from .manifest import _CHUNK_ID_RE


class ChunkCache:
    """Verified plaintext chunks, one file per id: ``<root>/ab/abcdef...``.

    With `keys`, `get` re-verifies and drops damaged entries (returns None) so local
    disk damage is never reported as a damaged share area. A hit touches the file's mtime,
    so that trimming to the cap (`cachedir.trim`) removes the least recently used first;
    `added` counts the bytes `put` this run.
    """

    def __init__(self, root: Path, keys: crypto.Keys | None = None) -> None:
        self.root = Path(root)
        self.keys = keys
        self.added = 0

    def _path(self, chunk_id: str) -> Path:
        if not isinstance(chunk_id, str) or not _CHUNK_ID_RE.fullmatch(chunk_id):
            raise ValueError(_("not a chunk id: {chunk_id!r}").format(chunk_id=chunk_id))
        return self.root / chunk_id[:2] / chunk_id

    def has(self, chunk_id: str) -> bool:
        return self._path(chunk_id).is_file()

    def get(self, chunk_id: str) -> bytes | None:
        path = self._path(chunk_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if self.keys is not None and crypto.chunk_id(self.keys, data) != chunk_id:
            path.unlink(missing_ok=True)
            return None
        with suppress(OSError):
            os.utime(path)  # used now: the last to be trimmed
        return data

    def put(self, chunk_id: str, data: bytes) -> None:
        """Store atomically (temp file + rename in the same folder; no fsync: the cache can be rebuilt).

        Mode 0o666 before the umask, as the cache files have always been written.
        """
        atomic_write(self._path(chunk_id), data, mode=0o666, durable=False)
        self.added += len(data)

    def prune(self, keep: set[str]) -> int:
        """Remove every cached chunk (and stray temp file) not in `keep`; return the count."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                if f.name not in keep:
                    f.unlink(missing_ok=True)
                    removed += 1
            try:
                sub.rmdir()
            except OSError:
                pass  # not empty
        return removed
