"""A version's manifest: FileEntry, Manifest, JSON form and full validation of received ones."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeGuard

from .. import errors
from ..i18n import _
from .chunkids import ChunkIds, Lengths
from .names import _case_clash, safe_relpath

CHUNK_SIZE = 1 << 20
CHUNKER = "fixed-1MiB"
PER_FILE = "per-file"  # format 2: each file entry names its chunker and chunk lengths
MANIFEST_VERSION = 1
KINDS = ("file", "folder")
_CHUNK_ID_RE = re.compile(r"[0-9a-f]{64}")
ID_RUN = 4096  # chunk ids per piece of `Manifest.json_parts`


def _j(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


NO_LENGTHS = Lengths()


@dataclass(frozen=True)
class FileEntry:
    """One file of a version; `path` is "" for a single-file data set.

    `chunks` reads as hex ids and `lengths` as ints (tuples given are converted): held as one
    buffer and one array, a few dozen bytes per chunk (chunkids)."""

    path: str
    size: int
    mode: int
    mtime: float
    chunks: ChunkIds
    lengths: Lengths = NO_LENGTHS  # format 2: each chunk's length (format 1: all CHUNK_SIZE)
    chunker: str = ""  # format 2: this file's chunker (format 1: the manifest's)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", ChunkIds.of(self.chunks))
        object.__setattr__(self, "lengths", Lengths.of(self.lengths))

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "chunks": list(self.chunks),
        }


@dataclass(frozen=True)
class Manifest:
    """A version: its kind and its files, each a list of chunk ids."""

    kind: str
    files: tuple[FileEntry, ...]
    chunker: str = CHUNKER

    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def chunk_ids(self) -> set[str]:
        return {c for f in self.files for c in f.chunks}

    def to_json_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, compact, UTF-8)."""
        return b"".join(self.json_parts())

    def json_parts(self) -> Iterator[bytes]:
        """`to_json_bytes()` in pieces (their concatenation is exactly it; a piece holds at most
        ID_RUN ids), so a manifest of 200,000 chunks is hashed or written without one big string.

        Equal to ``json.dumps({"version", "kind", "chunker", "files": [f.to_dict()...]},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False)``."""
        yield b'{"chunker":%s,"files":[' % _j(self.chunker)
        for i, f in enumerate(self.files):
            yield b'{"chunks":[' if i == 0 else b',{"chunks":['
            for k in range(0, len(f.chunks), ID_RUN):
                text = f.chunks[k : k + ID_RUN].hex()
                run = '","'.join(text[j : j + 64] for j in range(0, len(text), 64))
                yield (b',"' if k else b'"') + run.encode() + b'"'
            yield b'],"mode":%s,"mtime":%s,"path":%s,"size":%s}' % (
                _j(f.mode), _j(f.mtime), _j(f.path), _j(f.size))
        yield b'],"kind":%s,"version":%s}' % (_j(self.kind), _j(MANIFEST_VERSION))

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Manifest:
        """Parse and fully validate; AreaCorrupt / UnsafePath / UnsupportedFormat on bad input."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise errors.AreaCorrupt(_("the manifest is not valid JSON")) from None
        if not isinstance(doc, dict):
            raise errors.AreaCorrupt(_("the manifest is not a JSON object"))
        version = doc.get("version")
        if not _is_int(version):
            raise errors.AreaCorrupt(_("the manifest has no format version"))
        if version != MANIFEST_VERSION:
            raise errors.UnsupportedFormat(_("manifest format version {version} is not supported").format(
                version=version))
        chunker, files = doc.get("chunker"), doc.get("files")
        if not isinstance(chunker, str) or not isinstance(files, list):
            raise errors.AreaCorrupt(_("the manifest lacks its chunker or file list"))
        entries, kind = tuple(map(_entry_from_dict, files)), doc.get("kind")
        if not isinstance(kind, str):  # `validate_manifest` refuses unknown strings the same way
            raise errors.AreaCorrupt(_("the manifest has an unknown kind {kind!r}").format(kind=kind))
        manifest = cls(kind=kind, files=entries, chunker=chunker)
        validate_manifest(manifest)
        return manifest


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


MAX_MTIME = float(1 << 34)  # seconds since 1970 (year 2514); a larger file time is malformed


def _entry_from_dict(d: object) -> FileEntry:
    """Type-check one manifest entry (paths are checked by `validate_manifest`)."""
    bad = errors.AreaCorrupt(_("the manifest has a malformed file entry"))
    if not isinstance(d, dict):
        raise bad
    path, size, mode, mtime, chunks = (d.get(k) for k in ("path", "size", "mode", "mtime", "chunks"))
    if not (isinstance(path, str) and _is_int(size) and _is_int(mode) and isinstance(chunks, list)):
        raise bad
    if not (isinstance(mtime, int | float) and not isinstance(mtime, bool) and math.isfinite(mtime)):
        raise bad
    if not 0 <= mtime <= MAX_MTIME:  # 1e300 would overflow every clock: malformed
        raise bad
    if size < 0 or not 0 <= mode <= 0o7777:
        raise bad
    if not all(isinstance(c, str) and _CHUNK_ID_RE.fullmatch(c) for c in chunks):
        raise bad
    return FileEntry(path=path, size=size, mode=mode, mtime=float(mtime), chunks=ChunkIds.of(chunks))


def validate_manifest(m: Manifest) -> None:
    """Check kind, paths (safe, unique, no file that is also a folder) and chunk counts."""
    if m.kind not in KINDS:
        raise errors.AreaCorrupt(_("the manifest has an unknown kind {kind!r}").format(kind=m.kind))
    if m.kind == "file":
        if len(m.files) != 1 or m.files[0].path != "":
            raise errors.UnsafePath(_("a single-file manifest must have exactly one entry with path ''"))
    else:
        paths = [safe_relpath(f.path) for f in m.files]
        if len(set(paths)) != len(paths):
            raise errors.AreaCorrupt(_("the manifest lists a path twice"))
        folders = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
        if folders.intersection(paths):
            raise errors.AreaCorrupt(_("the manifest lists a path as both file and folder"))
        if clash := _case_clash(paths):
            raise errors.UnsafePath(_("the manifest lists {first!r} and {second!r}, which differ only in "
                                      "case (Windows cannot hold both)").format(
                                          first=clash[0], second=clash[1]))
    if m.chunker == PER_FILE:
        for f in m.files:
            if len(f.lengths) != len(f.chunks) or sum(f.lengths) != f.size:
                raise errors.AreaCorrupt(_("the manifest entry {path!r} has a wrong chunk count").format(
                    path=f.path))
    if m.chunker == CHUNKER:
        for f in m.files:
            if len(f.chunks) != -(-f.size // CHUNK_SIZE):
                raise errors.AreaCorrupt(_("the manifest entry {path!r} has a wrong chunk count").format(
                    path=f.path))
