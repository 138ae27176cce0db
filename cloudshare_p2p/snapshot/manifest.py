"""A version's manifest: FileEntry, Manifest, JSON form and full validation of received ones."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TypeGuard

from .. import errors
from ..i18n import _
from .names import _case_clash, safe_relpath

CHUNK_SIZE = 1 << 20
CHUNKER = "fixed-1MiB"
PER_FILE = "per-file"  # format 2: each file entry names its chunker and chunk lengths
MANIFEST_VERSION = 1
KINDS = ("file", "folder")
_CHUNK_ID_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    """One file of a version; `path` is "" for a single-file data set."""

    path: str
    size: int
    mode: int
    mtime: float
    chunks: tuple[str, ...]
    lengths: tuple[int, ...] = ()  # format 2: each chunk's length (format 1: all CHUNK_SIZE)
    chunker: str = ""  # format 2: this file's chunker (format 1: the manifest's)

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
        doc = {
            "version": MANIFEST_VERSION,
            "kind": self.kind,
            "chunker": self.chunker,
            "files": [f.to_dict() for f in self.files],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

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
    return FileEntry(path=path, size=size, mode=mode, mtime=float(mtime), chunks=tuple(chunks))


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
