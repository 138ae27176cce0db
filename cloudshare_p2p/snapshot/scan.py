"""Reading a local data set: the walk, the scan into chunks, fingerprints and the quick stamp."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .. import chunking, crypto, errors
from ..i18n import _
from . import written
from .chunkids import ChunkIds, Lengths
from .manifest import CHUNK_SIZE, PER_FILE, FileEntry, Manifest
from .names import _case_clash, _malformed, windows_name_problem
from .reread import READ_BUFFER, Reread

WRITE_FORMAT = 2
"""The format `LocalSnapshot.scan` cuts for by default: 2 (per-file chunkers, packs; a commit
upgrades a version-1 area). `CLOUDSHARE_WRITE_FORMAT=1` writes format 1 (fixed 1 MiB chunks) as a
fallback, for an area a version-1 client must still read."""
WRITE_FORMAT_ENV = "CLOUDSHARE_WRITE_FORMAT"


ChunkSink = Callable[[int, bytes, bytes], None]
"""Handed each chunk as a scan cuts it: (file number in manifest order, bytes, raw id)."""


def write_format() -> int:
    """The format a scan cuts for unless told: CLOUDSHARE_WRITE_FORMAT (1 or 2), else WRITE_FORMAT."""
    value = os.environ.get(WRITE_FORMAT_ENV, "").strip()
    return int(value) if value in ("1", "2") else WRITE_FORMAT
MAX_BLOCKS = 1 << 18  # format 2: page blocks grow (whole pages x 2^k) to keep a file under this many


def chunker_for(file_path: Path, size: int) -> chunking.Chunker:
    """Format 2's chunker for one file: SQLite page blocks (at most MAX_BLOCKS), else FastCDC
    sized for the file (`chunking.cdc_for_size`)."""
    found = chunking.detect(file_path)
    if isinstance(found, chunking.CdcChunker):
        return chunking.cdc_for_size(size)
    if isinstance(found, chunking.PageChunker):
        pages = found.pages
        while -(-size // (found.page_size * pages)) > MAX_BLOCKS and found.page_size * pages < 1 << 20:
            pages *= 2
        found = chunking.PageChunker(found.page_size, pages)
    return found


def kept_chunker(held: str | None, file_path: Path, size: int) -> str | None:
    """The chunker `held` (named by the version held here) while it still fits the file: the
    same kind as `chunker_for` finds now (FastCDC of any size; SQLite blocks of the same page
    size); else None (`chunker_for` decides: a database shared empty, then written, gets pages)."""
    if held is None:
        return None
    try:
        before = chunking.parse(held)
    except ValueError:
        return None
    now = chunker_for(file_path, size)
    if isinstance(before, chunking.CdcChunker) and isinstance(now, chunking.CdcChunker):
        return held
    if isinstance(before, chunking.PageChunker) and isinstance(now, chunking.PageChunker) \
            and before.page_size == now.page_size:
        return held
    return None


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

    Nothing but the manifest is kept in memory (ids and lengths as compact columns); a chunk
    is found by its file number and offset (`read_at`), or by id through an index built on
    first use (`chunk_location`). Reads are re-verified (`verify`), so a file changed after
    the scan is detected, never uploaded.
    """

    root: Path
    manifest: Manifest
    fingerprint: str  # equals local_fingerprint(root) at scan time
    skipped: tuple[str, ...] = ()
    _index: dict[str, int | tuple[int, int, int]] | None = field(default=None, repr=False)
    _keys: crypto.Keys | None = field(default=None, repr=False)
    _paths: list[Path] = field(default_factory=list, repr=False)
    _digests: list[bytes] = field(default_factory=list, repr=False)  # each file's SHA-256 at the scan

    @classmethod
    def scan(cls, path: Path, keys: crypto.Keys, *, format: int | None = None,
             like: Manifest | None = None, prefer: Manifest | None = None,
             sink: ChunkSink | None = None) -> LocalSnapshot:
        """Read the data set once: chunk ids, manifest and content fingerprint.

        `format` 1 cuts fixed 1 MiB chunks, 2 chooses a chunker per file (default
        `WRITE_FORMAT`); `like` (a manifest) cuts as it does, each path with its chunker.
        `prefer` (a format-2 manifest: the version held here) keeps a path's chunker while
        it still fits the file (`kept_chunker`), so a file that grew past a size is not cut
        anew and all of it sent again.
        `sink` (format 2 only) is handed each chunk as it is cut (file number, bytes, raw
        id): a first upload sends the very bytes hashed, the file read once. A file whose
        size or times moved while it was read is then refused (InvalidState): the snapshot
        would mix two states of it.
        """
        if like is not None:
            format = 2 if like.chunker == PER_FILE else 1
        if sink is not None and (format or write_format()) != 2:
            raise ValueError("a chunk sink needs format 2")
        cutters = {f.path: f.chunker for f in like.files} if like is not None else {}
        held = {f.path: f.chunker for f in prefer.files} \
            if prefer is not None and prefer.chunker == PER_FILE else {}
        per_file = (format or write_format()) == 2
        root = Path(path)
        skipped: list[str] = []
        paths: list[Path] = []
        entries: list[FileEntry] = []
        digests: list[bytes] = []
        fp = hashlib.sha256()
        walk = list(_walk(root, skipped))
        kind = "file" if walk and walk[0][0] == "" else "folder"
        if kind == "folder":
            _check_names(root, [rel for rel, _p, _st in walk])
        for number, (rel, file_path, st) in enumerate(walk):
            paths.append(file_path)
            if per_file:
                hand = None if sink is None else functools.partial(sink, number)
                name = cutters.get(rel) or kept_chunker(held.get(rel), file_path, st.st_size)
                entry, digest = _scan_file2(rel, file_path, st, keys, name, hand)
            else:
                entry, digest = _scan_file(rel, file_path, st, keys)
            _fingerprint_header(fp, entry.path, entry.size)
            fp.update(digest)
            entries.append(entry)
            digests.append(digest)
        manifest = Manifest(kind, tuple(entries), PER_FILE) if per_file else Manifest(kind, tuple(entries))
        return cls(root, manifest, fp.hexdigest(), tuple(skipped), None, keys, paths, digests)

    def chunk_location(self, chunk_id: str) -> tuple[Path, int, int]:
        """(file, offset, length) of a chunk id; KeyError if not part of this snapshot."""
        if self._index is None:
            self._index = _index_of(self.manifest)
        packed = self._index[chunk_id]
        if isinstance(packed, tuple):
            return self._paths[packed[0]], packed[1], packed[2]
        length, offset = packed & _LENGTH_MASK, (packed >> _LENGTH_BITS) & _OFFSET_MASK
        return self._paths[packed >> (_LENGTH_BITS + _OFFSET_BITS)], offset, length

    def read_chunk(self, chunk_id: str, files: dict[Path, BinaryIO] | None = None) -> bytes:
        """Plaintext of one chunk, re-verified; InvalidState if the file changed since the scan.

        `files` (closed by the caller) keeps files open between calls, for many small chunks."""
        file_path, data = self.read_unverified(chunk_id, files)
        self.verify(chunk_id, file_path, data)
        return data

    def verify(self, chunk_id: str | bytes, file_path: Path, data: bytes) -> None:
        """InvalidState unless `data` (read from `file_path`) still is chunk `chunk_id` (hex, or
        the raw digest). Thread-safe: the sealing threads of a format-2 commit call it."""
        if self._keys is None:
            return
        digest = crypto.chunk_digest(self._keys, data)
        if (digest if isinstance(chunk_id, bytes) else digest.hex()) != chunk_id:
            raise _local_error(_("{path} changed while it was being sent").format(path=file_path))

    def read_unverified(self, chunk_id: str, files: dict[Path, BinaryIO] | None = None,
                        ) -> tuple[Path, bytes]:
        """(file, bytes) of one chunk as the file holds them now; the caller must `verify` them."""
        file_path, offset, length = self.chunk_location(chunk_id)
        return file_path, _read(file_path, offset, length, files)

    def reread(self, number: int) -> Reread:
        """File number `number` read again from its start, checked as a whole against the scan."""
        entry = self.manifest.files[number]
        return Reread(self._paths[number], entry.size, self._digests[number])

    def read_at(self, number: int, offset: int, length: int, files: dict[Path, BinaryIO] | None = None,
                ) -> tuple[Path, bytes]:
        """(file, bytes) at `offset` of file number `number` (manifest order), unverified."""
        file_path = self._paths[number]
        return file_path, _read(file_path, offset, length, files)


def _read(file_path: Path, offset: int, length: int, files: dict[Path, BinaryIO] | None) -> bytes:
    if files is None:
        with open(file_path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)
    if file_path not in files:
        for old in files.values():
            old.close()
        files.clear()
        # a large buffer: consecutive chunks come from one read, a seek inside it costs no call
        files[file_path] = open(file_path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - the caller closes it
    kept = files[file_path]
    kept.seek(offset)
    return kept.read(length)


_LENGTH_BITS, _OFFSET_BITS = 27, 45  # a chunk of up to 64 MiB at an offset below 32 TiB
_LENGTH_MASK, _OFFSET_MASK = (1 << _LENGTH_BITS) - 1, (1 << _OFFSET_BITS) - 1


def _index_of(manifest: Manifest) -> dict[str, int | tuple[int, int, int]]:
    """Each chunk id's first place: file number, offset and length packed in one int."""
    index: dict[str, int | tuple[int, int, int]] = {}
    for number, entry in enumerate(manifest.files):
        base, offset = number << (_LENGTH_BITS + _OFFSET_BITS), 0
        lengths = entry.lengths if entry.lengths else [CHUNK_SIZE] * len(entry.chunks)
        for cid, length in zip(entry.chunks, lengths, strict=True):
            length = min(length, entry.size - offset)  # format 1: the last chunk is short
            if offset > _OFFSET_MASK or length > _LENGTH_MASK:  # beyond any real file: unpacked
                index.setdefault(cid, (number, offset, length))
            else:
                index.setdefault(cid, base | offset << _LENGTH_BITS | length)
            offset += length
    return index


def _scan_file(rel: str, file_path: Path, st: os.stat_result, keys: crypto.Keys,
               ) -> tuple[FileEntry, bytes]:
    """Chunk one file (the size is what was actually read); its entry and SHA-256."""
    ids = bytearray()
    offset = 0
    body = hashlib.sha256()
    for chunk in _read_chunks(file_path):
        ids += crypto.chunk_digest(keys, chunk)
        body.update(chunk)
        offset += len(chunk)
    mode = stat.S_IMODE(st.st_mode) & 0o777
    return FileEntry(rel, offset, mode, st.st_mtime, ChunkIds(ids)), body.digest()


def _scan_file2(rel: str, file_path: Path, st: os.stat_result, keys: crypto.Keys,
                name: str | None, sink: Callable[[bytes, bytes], None] | None = None,
                ) -> tuple[FileEntry, bytes]:
    """Format 2: chunk one file with its own chunker (`name`, else the one it calls for); its
    entry and SHA-256. `sink` gets each chunk and its raw id, and the file must then be
    unchanged (size and times, asked of the open file) from the start of its reading to the end."""
    cutter = chunking.parse(name) if name else chunker_for(file_path, st.st_size)
    ids = bytearray()
    lengths = array("I")
    size = 0
    body = hashlib.sha256()
    big = st.st_size >= 8 * READ_BUFFER  # a small file is hashed inline (the pool starts no thread)
    with open(file_path, "rb") as fh, ThreadPoolExecutor(1, thread_name_prefix="scan-hash") as pool:
        opened = _stamp(os.fstat(fh.fileno())) if sink is not None else None  # the file, not a listing
        hashing = _Hashing(fh, body, pool if big else None)
        for offset, chunk in chunking.chunks(hashing, cutter):  # chunks cover every byte read
            key = crypto.chunk_digest(keys, chunk)
            ids += key
            lengths.append(len(chunk))
            size = offset + len(chunk)
            if sink is not None:
                sink(chunk, key)
        hashing.finish()
        if opened is not None and _stamp(os.fstat(fh.fileno())) != opened:
            raise _local_error(_("{path} changed while it was being sent").format(path=file_path))
    mode = stat.S_IMODE(st.st_mode) & 0o777
    entry = FileEntry(rel, size, mode, st.st_mtime, ChunkIds(ids), Lengths(lengths), cutter.name)
    return entry, body.digest()


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Hashing:
    """A binary stream that hashes every byte read from it, in blocks of READ_BUFFER on `pool`'s
    one thread if given (SHA-256 releases the GIL for a block: the chunking goes on meanwhile)."""

    def __init__(self, stream: BinaryIO, digest: hashlib._Hash, pool: ThreadPoolExecutor | None) -> None:
        self._stream, self._digest, self._pool = stream, digest, pool
        self._parts: list[bytes] = []
        self._size = 0
        self._pending: Future[None] | None = None

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._parts.append(data)
        self._size += len(data)
        if self._size >= READ_BUFFER:
            self._hand_over()
        return data

    def _hand_over(self) -> None:
        block = b"".join(self._parts)
        self._parts, self._size = [], 0
        if self._pool is None:
            self._digest.update(block)
            return
        if self._pending is not None:
            self._pending.result()  # one block hashing at a time, in order
        self._pending = self._pool.submit(self._digest.update, block)

    def finish(self) -> None:
        """Hash what is left; the digest is complete when this returns."""
        self._hand_over()
        if self._pending is not None:
            self._pending.result()


def local_fingerprint(path: Path) -> str:
    """Content fingerprint of the local data set: "has it changed since the last sync?".

    sha256 over (relpath, size, sha256(content)) of every file, in scan order; times are
    not part of it (correctness first). Cost: reads every byte once (about 1 GB/s with SHA
    extensions), except a file this process has just received whole and front to back,
    unchanged since (snapshot/written.py); the same walk and rules as `LocalSnapshot.scan`,
    whose `fingerprint` is identical, so a scan needs no second pass. Returns "absent" if
    `path` does not exist.
    """
    root = Path(path)
    if not os.path.lexists(root):
        return "absent"
    fp = hashlib.sha256()
    for rel, file_path, st in _walk(root, []):
        if not st.st_ino:  # Windows lists a folder's files with inode 0: ask the file itself
            st = os.stat(file_path)
        known = written.digest_of(st)  # a file this process just received whole: not read again
        if known is not None:
            _fingerprint_header(fp, rel, st.st_size)
            fp.update(known)
            continue
        body = hashlib.sha256()
        size = 0
        for chunk in _read_chunks(file_path):
            body.update(chunk)
            size += len(chunk)
        _fingerprint_header(fp, rel, size)
        fp.update(body.digest())
    return fp.hexdigest()


def data_size(path: Path, enough: int | None = None) -> int:
    """Bytes in the data set's files (the walk of `LocalSnapshot.scan`; 0 if absent); with
    `enough`, the walk stops once that many are found (the sum so far is returned)."""
    root = Path(path)
    if not os.path.lexists(root):
        return 0
    total = 0
    for _rel, _path, st in _walk(root, []):
        total += st.st_size
        if enough is not None and total >= enough:
            break
    return total


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
