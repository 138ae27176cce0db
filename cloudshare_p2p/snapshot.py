"""The local side of a version: scan a data set into chunks, restore a manifest safely.

A data set is one file (manifest kind "file", one entry with path "") or a folder
(kind "folder", one entry per regular file, "/"-separated relative paths, sorted).

Chunking is fixed-size (1 MiB): accounting databases are page files edited in place, so
an in-place edit changes only the chunks it touches. The manifest records the chunker.

Folder rules (scan): walked in sorted order; only regular files are kept; symlinks and
special files are SKIPPED (never followed) and listed in `LocalSnapshot.skipped` so the
caller can warn. Empty folders are not recorded. Only permission bits (mode & 0o777) are
kept. A data set path that is itself a symlink is refused (restore would replace the link).

Names (scan and received manifests): every name must be one a Windows computer can hold
(`windows_name_problem`: no reserved device names, no `<>:"/\\|?*` or control characters,
no trailing dot or space, NFC only, at most 255 UTF-8 bytes) and no two names in one folder
may differ only in case. Names are refused, never rewritten, so a fingerprint always
describes the names on disk.

Restore (`restore`): the version is built in a hidden temp sibling `.~cs-t…` (a short name,
whatever the target's length), then swapped in. A disk that refuses a write raises
`errors.LocalDiskError` and leaves the target untouched; a target held open by another
program raises `errors.FileInUse` and keeps what was received as `.~cs-p…`, which the next
restore of the same version puts in place without receiving again. Local items the scan
does not share (symlinks, pipes, devices) are carried into the new version, never deleted.
Leftovers of a killed restore are removed by `clean_leftovers` (run by `restore`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import stat
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeGuard

from . import crypto, errors
from .i18n import N_, _

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
    if m.chunker == CHUNKER:
        for f in m.files:
            if len(f.chunks) != -(-f.size // CHUNK_SIZE):
                raise errors.AreaCorrupt(_("the manifest entry {path!r} has a wrong chunk count").format(
                    path=f.path))


def _malformed(p: str) -> bool:
    """True if `p` is not a "/"-separated relative path of plain components."""
    if not isinstance(p, str) or not p or p.startswith("/") or _DRIVE_RE.match(p):
        return True
    if "\\" in p or ":" in p or any(ord(ch) < 0x20 for ch in p):
        return True
    return any(part in ("", ".", "..") for part in p.split("/"))


def safe_relpath(p: str) -> str:
    """Return `p` if it is a safe "/"-separated relative path, else raise UnsafePath.

    Refused: empty, absolute, "." / ".." / empty components, backslashes, NUL or other
    control characters, ":" (drive letters, Windows alternate data streams), and any
    component that `windows_name_problem` refuses.
    """
    if _malformed(p):
        raise errors.UnsafePath(_("the manifest names an unsafe path: {p!r}").format(p=p))
    for part in p.split("/"):
        if problem := windows_name_problem(part):
            raise errors.UnsafePath(_("the manifest names a path Windows cannot hold: {p!r} ({problem})")
                .format(p=p, problem=problem))
    return p


_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)
_WINDOWS_BAD_CHARS = frozenset('<>:"/\\|?*')


def windows_name_problem(name: str) -> str | None:
    """Why a file or folder called `name` cannot be shared with Windows (or any) clients; None if fine."""
    if not name:
        return _("the name is empty")
    bad = next((ch for ch in name if ch in _WINDOWS_BAD_CHARS or ord(ch) < 0x20), None)
    if bad is not None:
        return _("it contains {char!r}, which Windows does not allow in names").format(char=bad)
    if name[-1] in ". ":
        return _("it ends with a dot or a space, which Windows drops")
    device = name.partition(".")[0].rstrip(" ")
    if device.upper() in _RESERVED:
        return _("{device} is a device name Windows reserves (even with an extension)").format(device=device)
    if unicodedata.normalize("NFC", name) != name:
        return _("it is not in Unicode NFC form (as older Mac disks write it); Windows sees another name")
    if len(name.encode("utf-8")) > 255:
        return _("it is longer than 255 bytes, which Linux and Mac computers cannot hold")
    return None


def _case_key(name: str) -> str:
    """Upper case by simple 1:1 mapping, as Windows compares names (so "ß" stays "ß")."""
    return "".join(up if len(up := ch.upper()) == 1 else ch for ch in name)


def _case_clash(paths: list[str]) -> tuple[str, str] | None:
    """Two paths (or their folders) that differ only in case, if any."""
    seen: dict[str, str] = {}
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            first = seen.setdefault(_case_key(prefix), prefix)
            if first != prefix:
                return first, prefix
    return None


# --- scanning ----------------------------------------------------------------------


def _local_error(message: str) -> errors.InvalidState:
    return errors.InvalidState(message, hint=_("close the accounting program and try again"))


def _walk(root: Path, skipped: list[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Yield (relpath, path, stat) for the data set; one ("", root, st) for a single file."""
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode):
        raise _local_error(_("the data set path {root} is a symbolic link; register its target").format(
            root=root))
    if stat.S_ISREG(st.st_mode):
        yield "", root, st
        return
    if not stat.S_ISDIR(st.st_mode):
        raise _local_error(_("the data set path {root} is neither a file nor a folder").format(root=root))
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
            if _malformed(rel):
                raise _local_error(_("the file name {name!r} cannot be shared; rename it").format(name=rel))
            yield rel, Path(e.path), st
        else:
            skipped.append(rel)


def _check_names(root: Path, rels: list[str]) -> None:
    """InvalidState naming the first file whose name a Windows client could not hold."""
    for rel in rels:
        for part in rel.split("/"):
            if problem := windows_name_problem(part):
                raise errors.InvalidState(
                    _("the name {rel!r} in {root} cannot be shared: {problem}").format(
                        rel=rel, root=root, problem=problem),
                    hint=_("rename {part!r} to a name Windows accepts, then try again").format(part=part),
                )
    if clash := _case_clash(rels):
        raise errors.InvalidState(
            _("{first!r} and {second!r} in {root} differ only in upper/lower case; Windows cannot hold both"
              ).format(first=clash[0], second=clash[1], root=root),
            hint=_("rename or merge one of them (for example {name!r}), then try again").format(
                name=clash[1]),
        )


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
        if kind == "folder":
            _check_names(root, [rel for rel, _p, _st in walk])
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
            raise _local_error(_("{path} changed while it was being sent").format(path=file_path))
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


def quick_stamp(path: Path) -> str:
    """A cheap stamp of the data set: (relpath, size, mtime_ns, ctime_ns, inode) of every file.

    Same walk as `local_fingerprint`, but reads no content: if it equals the stamp taken at
    the last sync, the fingerprint can be reused without re-hashing. Any edit, touch, rename,
    file added or removed changes it. Returns "absent" if `path` does not exist. (On Windows
    the inode of files inside a folder reads as 0, so size and times carry the check there.)
    """
    root = Path(path)
    if not os.path.lexists(root):
        return "absent"
    h = hashlib.sha256()
    for rel, _file_path, st in _walk(root, []):
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


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

# Our own temporary names, next to the target: short whatever the target's name (so never
# over 255 bytes, and as little as possible towards Windows' 260-character paths), never a
# Windows reserved name. t = a version being built, o = the replaced copy during a swap,
# p = a version received but not yet put in place (the target was in use).
TEMP_PREFIX = ".~cs-"
_TEMP_RE = re.compile(
    r"\.~cs-(?P<kind>[to])(?P<tag>[0-9a-f]{6})-(?P<host>[0-9a-f]{4})-(?P<pid>[0-9]{1,10})-[0-9a-f]{6}"
)
_LEGACY_RE = re.compile(r"\.cloudshare-(?P<kind>tmp|old)-[0-9a-f]{8,12}")  # before 2026-12
_HOST = hashlib.sha256(platform.node().encode("utf-8", "replace")).hexdigest()[:4]
_LIVE_MAX_AGE = 3600.0  # a temp of a process still alive is left alone this long (pid reuse)
_RETRY_DELAYS = (0.05, 0.2, 0.5) if os.name == "nt" else ()  # indexers and virus scanners


def _tag(target: Path) -> str:
    return hashlib.sha256(target.name.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def _temp_path(target: Path, kind: str) -> Path:
    """A fresh temp sibling of `target`: `.~cs-<kind><tag>-<host>-<pid>-<random>`."""
    return target.with_name(
        f"{TEMP_PREFIX}{kind}{_tag(target)}-{_HOST}-{os.getpid()}-{secrets.token_hex(3)}"
    )


def _pending_path(target: Path, manifest: Manifest) -> Path:
    digest = hashlib.sha256(manifest.to_json_bytes()).hexdigest()[:12]
    return target.with_name(f"{TEMP_PREFIX}p{_tag(target)}-{digest}")


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_plain_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


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
            raise errors.AreaCorrupt(_("file {path!r}: size {written} != {size}").format(
                path=entry.path, written=written, size=entry.size))
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(dest, entry.mode & 0o777)
    os.utime(dest, (entry.mtime, entry.mtime))


def _inside(tmp_root: Path, rel: str) -> Path:
    """Join `rel` under `tmp_root`, create its folders, and check it stays inside."""
    dest = tmp_root.joinpath(*safe_relpath(rel).split("/"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(tmp_root):
        raise errors.UnsafePath(_("the manifest path {rel!r} leaves the data set").format(rel=rel))
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
    """Best effort: remove a file, link or folder we made (never raises)."""
    if _is_plain_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            path.unlink()
        except OSError:
            pass


def _retry(op: Callable[[Path, Path], None], src: Path, dst: Path) -> None:
    """`op(src, dst)`, retried briefly on Windows when a scanner holds the file for a moment."""
    for delay in _RETRY_DELAYS:
        try:
            return op(src, dst)
        except PermissionError:
            time.sleep(delay)
    return op(src, dst)


def _swap_in(tmp: Path, target: Path) -> None:
    """Put `tmp` in place of `target`.

    A file over a file (or nothing) is one atomic os.replace. Otherwise the old target is
    renamed aside, the new one renamed in, the old settled (`_settle_old`): between the two
    renames (a few microseconds) `target` does not exist; if the second rename fails the
    old target is put back. If settling the old copy fails it stays a hidden sibling that
    `clean_leftovers` settles later.
    """
    if not os.path.lexists(target) or (_is_plain_file(tmp) and _is_plain_file(target)):
        _retry(os.replace, tmp, target)
        return
    old = _temp_path(target, "o")
    _retry(os.rename, target, old)
    try:
        _retry(os.rename, tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    try:
        _settle_old(old, target)
    except OSError:
        pass


def _unshared(folder: Path, prefix: str = "") -> list[str]:
    """Relative paths under `folder` that scan does not share (symlinks, pipes, devices)."""
    found: list[str] = []
    with os.scandir(folder) as it:
        for e in sorted(it, key=lambda e: e.name):
            if e.is_dir(follow_symlinks=False):
                found += _unshared(Path(e.path), f"{prefix}{e.name}/")
            elif not e.is_file(follow_symlinks=False):
                found.append(prefix + e.name)
    return found


def _keep_beside(src: Path, like: Path, stamp: str) -> Path:
    """Rename `src` to `like`, or to `like`'s conflict name if that exists; never over anything."""
    if _rename_no_clobber(src, like):
        return like
    for candidate in _aside_names(like, stamp, "not-shared"):
        if _rename_no_clobber(src, candidate):
            return candidate
    raise AssertionError("unreachable")


def _carry_unshared(old: Path, target: Path) -> None:
    """Move each item scan does not share from the replaced folder into the new one."""
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    root = target.resolve()
    for rel in _unshared(old):
        dest = target.joinpath(*rel.split("/"))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            placed = dest.parent.resolve().is_relative_to(root)
        except OSError:
            placed = False  # the new version has a file where the folder was
        _keep_beside(old.joinpath(*rel.split("/")), dest if placed else target / dest.name, stamp)


def _settle_old(old: Path, target: Path) -> None:
    """Dispose of the copy `target` replaced; what scan does not share is kept, never deleted.

    Regular files and folders go: they were part of the last version (the caller keeps
    local changes aside before restoring, by fingerprint). Symlinks and special files are
    not covered by the fingerprint, so they are carried into the new version at their
    place, or kept aside beside it (`NAME.conflict-<when>-not-shared`) if the place is taken.
    """
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    if _is_plain_dir(old):
        if _is_plain_dir(target):
            _carry_unshared(old, target)
        elif _unshared(old):
            _keep_beside(old, target.with_name(f"{target.name}.conflict-{stamp}-not-shared"), stamp)
            return
        shutil.rmtree(old, ignore_errors=True)
    elif _is_plain_file(old):
        old.unlink()
    else:
        _keep_beside(old, target.with_name(f"{target.name}.conflict-{stamp}-not-shared"), stamp)


# --- restore: disk errors, files in use, leftovers ------------------------------------------

_DISK_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (N_("the disk is full"), N_("free some space on that disk, then try again")),
    errno.EROFS: (N_("the disk is read-only"), N_("make the disk writable (or move the data set), then try "
                                                  "again")),
    errno.EACCES: (N_("permission denied"), N_("make the folder writable for you, then try again")),
    errno.EPERM: (N_("the operation is not permitted"),
        N_("make the folder writable for you, then try again")),
    errno.ENAMETOOLONG: (
        N_("a file name or path is too long for this disk"),
        N_("move the data set to a folder with a shorter path (or have the file renamed), then try again"),
    ),
}
if hasattr(errno, "EDQUOT"):
    _DISK_REASONS[errno.EDQUOT] = (N_("your disk quota is used up"), N_("free some space, then try again"))


class _FetchFailed(Exception):
    """An OSError raised by `fetch` (network, cache): passed on as is, not as a disk error."""

    def __init__(self, original: OSError) -> None:
        super().__init__(str(original))
        self.original = original


def _tagged(fetch: Callable[[str], bytes]) -> Callable[[str], bytes]:
    def call(chunk_id: str) -> bytes:
        try:
            return fetch(chunk_id)
        except OSError as exc:
            raise _FetchFailed(exc) from exc

    return call


def _disk_error(exc: OSError, temp: Path, target: Path) -> errors.LocalDiskError:
    """A LocalDiskError naming the real path (not our temp name) and what to do."""
    what, todo = _DISK_REASONS.get(exc.errno or 0, (exc.strerror or str(exc), N_("fix the disk, then try "
                                                                                 "again")))
    what, todo = _(what), _(todo)
    where = str(exc.filename) if exc.filename else str(target.parent)
    where = where.replace(str(temp), str(target))
    if len(where) > 200:
        where = f"{where[:90]}…{where[-90:]}"
    return errors.LocalDiskError(
        _("could not write the newest version of {target}: {what} ({where})").format(
            target=target, what=what, where=where),
        hint=_("{todo}; your local copy was not changed").format(todo=todo),
    )


def _in_use(target: Path, kept: Path | None) -> errors.FileInUse:
    what = _("what was received is kept and will be put in place") if kept else _("it will be received again")
    return errors.FileInUse(
        _("{target} is in use by another program (or protected against changes); the newest version could "
          "not be put in place").format(target=target),
        hint=_("close the accounting program (or whatever holds {name} open), then open again: {what}"
               ).format(name=target.name, what=what),
    )


def _pendings(target: Path) -> list[Path]:
    """Versions received for `target` but not yet in place (its target was in use)."""
    start = f"{TEMP_PREFIX}p{_tag(target)}-"
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return [target.with_name(n) for n in sorted(names) if n.startswith(start)]


def pending_restore(target: Path) -> Path | None:
    """The version received for `target` but kept aside because `target` was in use, if any."""
    found = _pendings(Path(target))
    return found[0] if found else None


def _keep_pending(tmp: Path, target: Path, manifest: Manifest) -> Path | None:
    """Keep a built version under its stable pending name; None if even that failed."""
    pending = _pending_path(target, manifest)
    try:
        for other in _pendings(target):
            _remove(other)
        os.rename(tmp, pending)
    except OSError:
        _remove(tmp)
        return None
    return pending


def _holds(path: Path, manifest: Manifest, keys: crypto.Keys) -> bool:
    """True if `path` holds exactly `manifest`'s files (content re-verified by chunk id)."""
    try:
        got = LocalSnapshot.scan(path, keys).manifest
    except (errors.CloudShareError, OSError):
        return False
    return got.kind == manifest.kind and [(f.path, f.size, f.chunks) for f in got.files] == [
        (f.path, f.size, f.chunks) for f in manifest.files
    ]


def finish_pending(target: Path, manifest: Manifest, keys: crypto.Keys) -> bool:
    """Put in place `manifest` if an earlier restore received it but found `target` in use.

    True if it was put in place (nothing to receive). Kept versions of other manifests are
    removed (they are no longer the newest). FileInUse again if `target` is still in use.
    """
    target = Path(target)
    want = _pending_path(target, manifest)
    for other in _pendings(target):
        if other != want:
            _remove(other)
    if not os.path.lexists(want):
        return False
    if not _holds(want, manifest, keys):
        _remove(want)
        return False
    try:
        _swap_in(want, target)
    except PermissionError as exc:
        raise _in_use(target, want) from exc
    except OSError as exc:
        raise _disk_error(exc, want, target) from exc
    _fsync_dir(target.parent)
    return True


def _pid_alive(pid: int) -> bool:
    """Whether a local process `pid` exists (POSIX only: on Windows os.kill would end it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _newest_mtime(path: Path) -> float:
    newest = os.lstat(path).st_mtime
    if _is_plain_dir(path):
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                with_name = os.path.join(folder, name)
                newest = max(newest, os.lstat(with_name).st_mtime)
    return newest


def _abandoned(path: Path, host: str | None, pid: int | None, max_age: float) -> bool:
    """A temp whose process on this computer is gone, or that nobody touched for `max_age`."""
    age = time.time() - _newest_mtime(path)
    if host == _HOST and pid is not None and os.name != "nt":
        return age > _LIVE_MAX_AGE or not _pid_alive(pid)
    return age > max_age


def _leftover(name: str, target: Path) -> tuple[str, str | None, int | None] | None:
    """(kind "t"/"o", host, pid) if `name` is one of our temps for `target`, else None."""
    if m := _TEMP_RE.fullmatch(name):
        return (m["kind"], m["host"], int(m["pid"])) if m["tag"] == _tag(target) else None
    legacy = f".{target.name}"
    if name.startswith(legacy) and (m := _LEGACY_RE.fullmatch(name[len(legacy):])):
        return ("t" if m["kind"] == "tmp" else "o"), None, None
    return None


def _recover_old(old: Path, target: Path) -> None:
    """A replaced copy left by a killed swap: back in place if the target is missing, else settled."""
    if os.path.lexists(target):
        _settle_old(old, target)
    else:
        os.rename(old, target)


def clean_leftovers(target: Path, max_age: float = 60.0) -> int:
    """Remove our abandoned temps next to `target`; return how many were handled.

    A temp is abandoned when the process that made it (this computer's, by the pid in its
    name) is gone, or when nothing in it changed for `max_age` seconds (temps from another
    computer or without a pid; a living process's temps are left alone for an hour). A
    build in progress (`.~cs-t…`) is removed; a replaced copy (`.~cs-o…`) goes back in
    place if a swap was cut before the new version arrived, else it is settled like a
    finished swap. Versions waiting for a file in use (`.~cs-p…`) are never touched here.
    Also handles `.NAME.cloudshare-tmp-…` / `-old-…` names of earlier releases.
    """
    target = Path(target)
    try:
        names = sorted(os.listdir(target.parent))
    except OSError:
        return 0
    handled = 0
    for name in names:
        info = _leftover(name, target)
        path = target.with_name(name)
        try:
            if info is None or not _abandoned(path, info[1], info[2], max_age):
                continue
            if info[0] == "t":
                _remove(path)
            else:
                _recover_old(path, target)
        except OSError:
            continue
        handled += 1
    return handled


def _build_temp(manifest: Manifest, target: Path, fetch: Callable[[str], bytes], keys: crypto.Keys) -> Path:
    """Build the version in a fresh temp sibling; on any error remove it (disk errors -> LocalDiskError)."""
    tmp = _temp_path(target, "t")
    try:
        _build(manifest, tmp, _tagged(fetch), keys)
    except _FetchFailed as exc:
        _remove(tmp)
        raise exc.original from None
    except OSError as exc:
        _remove(tmp)
        raise _disk_error(exc, tmp, target) from exc
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _put_in_place(tmp: Path, target: Path, manifest: Manifest) -> None:
    """Swap the built version in; if `target` is in use keep the build as pending (FileInUse)."""
    try:
        _swap_in(tmp, target)
    except PermissionError as exc:  # Windows: WinError 5 / 32 / 33, held open; POSIX: immutable
        raise _in_use(target, _keep_pending(tmp, target, manifest)) from exc
    except OSError as exc:
        _remove(tmp)
        raise _disk_error(exc, tmp, target) from exc
    except BaseException:
        _remove(tmp)
        raise


def restore(
    manifest: Manifest, target: Path, fetch: Callable[[str], bytes], keys: crypto.Keys
) -> None:
    """Build the version in a temp sibling, verifying every chunk, then swap it in.

    `fetch(chunk_id)` returns plaintext (downloaded and opened, or from a ChunkCache).
    On any error the temp is removed and `target` is left untouched; a disk that refuses
    a write raises LocalDiskError. If `target` is in use (FileInUse), what was received
    is kept and the next restore of the same manifest puts it in place without fetching.
    Leftovers of killed restores are cleaned first.
    """
    validate_manifest(manifest)
    target = Path(target)
    clean_leftovers(target)
    if finish_pending(target, manifest, keys):
        return
    tmp = _build_temp(manifest, target, fetch, keys)
    _put_in_place(tmp, target, manifest)
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows (not on Windows)."""
    if os.name == "nt":
        return
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
