"""The local side of a version: scan a data set into chunks, restore a manifest safely.

A data set is one file (manifest kind "file", one entry with path "") or a folder
(kind "folder", one entry per regular file, "/"-separated relative paths, sorted).

Chunking is fixed-size (1 MiB): accounting databases are page files edited in place, so
an in-place edit changes only the chunks it touches. The manifest records the chunker.

Folder rules (scan): walked in sorted order; only regular files are kept; symlinks and
special files are SKIPPED (never followed) and listed in `LocalSnapshot.skipped` so the
caller can warn. Empty folders are not recorded. Only permission bits (mode & 0o777) are
kept. A data set path that is itself a symlink is refused (restore would replace the link).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import crypto, errors

CHUNK_SIZE = 1 << 20
CHUNKER = "fixed-1MiB"
MANIFEST_VERSION = 1
KINDS = ("file", "folder")
_CHUNK_ID_RE = re.compile(r"[0-9a-f]{64}")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


# --- manifest ----------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of a version; `path` is "" for a single-file data set."""

    path: str
    size: int
    mode: int
    mtime: float
    chunks: tuple[str, ...]

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
            raise errors.AreaCorrupt("the manifest is not valid JSON") from None
        if not isinstance(doc, dict):
            raise errors.AreaCorrupt("the manifest is not a JSON object")
        version = doc.get("version")
        if not _is_int(version):
            raise errors.AreaCorrupt("the manifest has no format version")
        if version != MANIFEST_VERSION:
            raise errors.UnsupportedFormat(f"manifest format version {version} is not supported")
        chunker, files = doc.get("chunker"), doc.get("files")
        if not isinstance(chunker, str) or not isinstance(files, list):
            raise errors.AreaCorrupt("the manifest lacks its chunker or file list")
        manifest = cls(kind=doc.get("kind"), files=tuple(map(_entry_from_dict, files)), chunker=chunker)
        validate_manifest(manifest)
        return manifest


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry_from_dict(d: object) -> FileEntry:
    """Type-check one manifest entry (paths are checked by `validate_manifest`)."""
    bad = errors.AreaCorrupt("the manifest has a malformed file entry")
    if not isinstance(d, dict):
        raise bad
    path, size, mode, mtime, chunks = (d.get(k) for k in ("path", "size", "mode", "mtime", "chunks"))
    if not (isinstance(path, str) and _is_int(size) and _is_int(mode) and isinstance(chunks, list)):
        raise bad
    if not (isinstance(mtime, int | float) and not isinstance(mtime, bool) and math.isfinite(mtime)):
        raise bad
    if size < 0 or not 0 <= mode <= 0o7777:
        raise bad
    if not all(isinstance(c, str) and _CHUNK_ID_RE.fullmatch(c) for c in chunks):
        raise bad
    return FileEntry(path=path, size=size, mode=mode, mtime=float(mtime), chunks=tuple(chunks))


def validate_manifest(m: Manifest) -> None:
    """Check kind, paths (safe, unique, no file that is also a folder) and chunk counts."""
    if m.kind not in KINDS:
        raise errors.AreaCorrupt(f"the manifest has an unknown kind {m.kind!r}")
    if m.kind == "file":
        if len(m.files) != 1 or m.files[0].path != "":
            raise errors.UnsafePath("a single-file manifest must have exactly one entry with path ''")
    else:
        paths = [safe_relpath(f.path) for f in m.files]
        if len(set(paths)) != len(paths):
            raise errors.AreaCorrupt("the manifest lists a path twice")
        folders = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
        if folders.intersection(paths):
            raise errors.AreaCorrupt("the manifest lists a path as both file and folder")
    if m.chunker == CHUNKER:
        for f in m.files:
            if len(f.chunks) != -(-f.size // CHUNK_SIZE):
                raise errors.AreaCorrupt(f"the manifest entry {f.path!r} has a wrong chunk count")


def safe_relpath(p: str) -> str:
    """Return `p` if it is a safe "/"-separated relative path, else raise UnsafePath.

    Refused: empty, absolute, "." / ".." / empty components, backslashes, NUL or other
    control characters, ":" (drive letters, Windows alternate data streams).
    """
    bad = errors.UnsafePath(f"the manifest names an unsafe path: {p!r}")
    if not isinstance(p, str) or not p or p.startswith("/") or _DRIVE_RE.match(p):
        raise bad
    if "\\" in p or ":" in p or any(ord(ch) < 0x20 for ch in p):
        raise bad
    if any(part in ("", ".", "..") for part in p.split("/")):
        raise bad
    return p


# --- scanning ----------------------------------------------------------------------


def _local_error(message: str) -> errors.InvalidState:
    return errors.InvalidState(message, hint="close the accounting program and try again")


def _walk(root: Path, skipped: list[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Yield (relpath, path, stat) for the data set; one ("", root, st) for a single file."""
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode):
        raise _local_error(f"the data set path {root} is a symbolic link; register its target")
    if stat.S_ISREG(st.st_mode):
        yield "", root, st
        return
    if not stat.S_ISDIR(st.st_mode):
        raise _local_error(f"the data set path {root} is neither a file nor a folder")
    yield from _walk_dir(root, "", skipped)


def _walk_dir(folder: Path, prefix: str, skipped: list[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        rel = f"{prefix}{e.name}"
        st = e.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(Path(e.path), rel + "/", skipped)
        elif stat.S_ISREG(st.st_mode):
            try:
                safe_relpath(rel)
            except errors.UnsafePath:
                raise _local_error(f"the file name {rel!r} cannot be shared; rename it") from None
            yield rel, Path(e.path), st
        else:
            skipped.append(rel)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            yield chunk


def _fingerprint_header(h: hashlib._Hash, rel: str, size: int) -> None:
    h.update(rel.encode("utf-8") + b"\0" + size.to_bytes(8, "big"))


@dataclass
class LocalSnapshot:
    """A scanned data set: its manifest and where each chunk's bytes live on disk.

    Nothing but the chunk index is kept in memory; `read_chunk` rereads the bytes and
    re-verifies them, so a file changed after the scan is detected, never uploaded.
    """

    root: Path
    manifest: Manifest
    fingerprint: str  # equals local_fingerprint(root) at scan time
    skipped: tuple[str, ...] = ()
    _index: dict[str, tuple[Path, int, int]] = field(default_factory=dict, repr=False)
    _keys: crypto.Keys | None = field(default=None, repr=False)

    @classmethod
    def scan(cls, path: Path, keys: crypto.Keys) -> LocalSnapshot:
        """Read the data set once: chunk ids, manifest and content fingerprint."""
        root = Path(path)
        skipped: list[str] = []
        index: dict[str, tuple[Path, int, int]] = {}
        entries: list[FileEntry] = []
        fp = hashlib.sha256()
        walk = list(_walk(root, skipped))
        kind = "file" if walk and walk[0][0] == "" else "folder"
        for rel, file_path, st in walk:
            entries.append(_scan_file(rel, file_path, st, keys, index, fp))
        manifest = Manifest(kind=kind, files=tuple(entries))
        return cls(root, manifest, fp.hexdigest(), tuple(skipped), index, keys)

    def chunk_location(self, chunk_id: str) -> tuple[Path, int, int]:
        """(file, offset, length) of a chunk id; KeyError if not part of this snapshot."""
        return self._index[chunk_id]

    def read_chunk(self, chunk_id: str) -> bytes:
        """Plaintext of one chunk, re-verified; InvalidState if the file changed since the scan."""
        file_path, offset, length = self._index[chunk_id]
        with open(file_path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        if self._keys is not None and crypto.chunk_id(self._keys, data) != chunk_id:
            raise _local_error(f"{file_path} changed while it was being sent")
        return data


def _scan_file(
    rel: str,
    file_path: Path,
    st: os.stat_result,
    keys: crypto.Keys,
    index: dict[str, tuple[Path, int, int]],
    fp: hashlib._Hash,
) -> FileEntry:
    """Chunk one file, filling the index; the size is what was actually read."""
    ids: list[str] = []
    offset = 0
    body = hashlib.sha256()
    for chunk in _read_chunks(file_path):
        cid = crypto.chunk_id(keys, chunk)
        index.setdefault(cid, (file_path, offset, len(chunk)))
        ids.append(cid)
        body.update(chunk)
        offset += len(chunk)
    _fingerprint_header(fp, rel, offset)
    fp.update(body.digest())
    return FileEntry(rel, offset, stat.S_IMODE(st.st_mode) & 0o777, st.st_mtime, tuple(ids))


def local_fingerprint(path: Path) -> str:
    """Content fingerprint of the local data set: "has it changed since the last sync?".

    sha256 over (relpath, size, sha256(content)) of every file, in scan order; mtime is
    ignored (correctness first). Cost: reads every byte once (about 1 GB/s with SHA
    extensions), the same walk and rules as `LocalSnapshot.scan`, whose `fingerprint` is
    identical, so a scan needs no second pass. Returns "absent" if `path` does not exist.
    """
    root = Path(path)
    if not os.path.lexists(root):
        return "absent"
    fp = hashlib.sha256()
    for rel, file_path, _st in _walk(root, []):
        body = hashlib.sha256()
        size = 0
        for chunk in _read_chunks(file_path):
            body.update(chunk)
            size += len(chunk)
        _fingerprint_header(fp, rel, size)
        fp.update(body.digest())
    return fp.hexdigest()


# --- local chunk cache --------------------------------------------------------------


class ChunkCache:
    """Verified plaintext chunks, one file per id: ``<root>/ab/abcdef...``.

    With `keys`, `get` re-verifies and drops damaged entries (returns None) so local
    disk damage is never reported as a damaged share area.
    """

    def __init__(self, root: Path, keys: crypto.Keys | None = None) -> None:
        self.root = Path(root)
        self.keys = keys

    def _path(self, chunk_id: str) -> Path:
        if not isinstance(chunk_id, str) or not _CHUNK_ID_RE.fullmatch(chunk_id):
            raise ValueError(f"not a chunk id: {chunk_id!r}")
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
        return data

    def put(self, chunk_id: str, data: bytes) -> None:
        """Store atomically (temp file + rename in the same folder)."""
        path = self._path(chunk_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{chunk_id}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

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


# --- restore ------------------------------------------------------------------------


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _write_entry(
    entry: FileEntry, dest: Path, fetch: Callable[[str], bytes], keys: crypto.Keys
) -> None:
    """Write one file from verified chunks, check its size, then set mode and mtime."""
    written = 0
    fd = os.open(dest, _OPEN_FLAGS, 0o600)
    with os.fdopen(fd, "wb") as fh:
        for cid in entry.chunks:
            data = fetch(cid)
            crypto.verify_chunk(keys, cid, data)
            written += len(data)
            if written > entry.size:
                break
            fh.write(data)
        if written != entry.size:
            raise errors.AreaCorrupt(f"file {entry.path!r}: size {written} != {entry.size}")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(dest, entry.mode & 0o777)
    os.utime(dest, (entry.mtime, entry.mtime))


def _inside(tmp_root: Path, rel: str) -> Path:
    """Join `rel` under `tmp_root`, create its folders, and check it stays inside."""
    dest = tmp_root.joinpath(*safe_relpath(rel).split("/"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(tmp_root):
        raise errors.UnsafePath(f"the manifest path {rel!r} leaves the data set")
    return dest


def _build(manifest: Manifest, tmp: Path, fetch: Callable[[str], bytes], keys: crypto.Keys) -> None:
    if manifest.kind == "file":
        _write_entry(manifest.files[0], tmp, fetch, keys)
        return
    tmp.mkdir()
    tmp_root = tmp.resolve()
    for entry in manifest.files:
        _write_entry(entry, _inside(tmp_root, entry.path), fetch, keys)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap_in(tmp: Path, target: Path) -> None:
    """Put `tmp` in place of `target`.

    A file over a file (or nothing) is one atomic os.replace. Otherwise the old target is
    renamed aside, the new one renamed in, the old removed: between the two renames (a
    few microseconds) `target` does not exist; if the second rename fails the old target
    is put back. If removing the old copy fails it is left as a hidden sibling.
    """
    if not os.path.lexists(target) or (tmp.is_file() and target.is_file() and not target.is_symlink()):
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.cloudshare-old-{secrets.token_hex(4)}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove(old)


def restore(
    manifest: Manifest, target: Path, fetch: Callable[[str], bytes], keys: crypto.Keys
) -> None:
    """Build the version in a temp sibling, verifying every chunk, then swap it in.

    `fetch(chunk_id)` returns plaintext (downloaded and opened, or from a ChunkCache).
    On any error the temp is removed and `target` is left untouched.
    """
    validate_manifest(manifest)
    target = Path(target)
    tmp = target.parent / f".{target.name}.cloudshare-tmp-{secrets.token_hex(6)}"
    try:
        _build(manifest, tmp, fetch, keys)
        _swap_in(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- keeping local work aside -----------------------------------------------------------


def _clean_reason(reason: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", reason).strip("-")[:40]
    return cleaned or "kept"


def _aside_names(path: Path, stamp: str, reason: str) -> Iterator[Path]:
    """books.db -> books.conflict-<stamp>-<reason>.db, then ...-2.db, -3.db, ..."""
    is_file = path.is_file()
    suffix = path.suffix if is_file else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    n = 1
    while True:
        extra = "" if n == 1 else f"-{n}"
        yield path.with_name(f"{stem}.conflict-{stamp}-{reason}{extra}{suffix}")
        n += 1


def _rename_no_clobber(src: Path, dst: Path) -> bool:
    """Rename without ever replacing `dst`; False if `dst` exists."""
    if src.is_file() and not src.is_symlink():
        try:
            os.link(src, dst)  # atomic "create if absent"
        except FileExistsError:
            return False
        except OSError:
            pass  # no hard links here (FAT, some shares): fall back below
        else:
            os.unlink(src)
            return True
    if os.path.lexists(dst):
        return False
    os.rename(src, dst)
    return True


def keep_aside(path: Path, reason: str, when: datetime | None = None) -> Path:
    """Rename `path` to a clear, unused sibling name and return it.

    Files keep their extension last so they still open:
    ``books.db -> books.conflict-2026-11-28T231500-<reason>.db``; folders get the
    marker appended. Existing names are never overwritten (a counter is added).
    """
    path = Path(path)
    stamp = (when or datetime.now()).strftime("%Y-%m-%dT%H%M%S")
    for candidate in _aside_names(path, stamp, _clean_reason(reason)):
        if _rename_no_clobber(path, candidate):
            return candidate
    raise AssertionError("unreachable")
