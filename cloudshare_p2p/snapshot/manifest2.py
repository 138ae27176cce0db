"""Format 2 manifests as data: decode with bounds, encode, resolve a patch against its parent.

Pure (no I/O). A manifest read from the host is untrusted: anything malformed or out of
bounds raises `errors.AreaCorrupt` (never another exception), so the version built on it is
unreadable, not a crash. Spec: docs/area-format.md, "Manifests (version 2)".
"""

from __future__ import annotations

import json
import math
import re
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, NamedTuple

from .. import chunking, errors
from ..i18n import _
from .chunkids import ChunkIds, IdIndex, Lengths
from .manifest import KINDS, MAX_MTIME, PER_FILE, FileEntry, Manifest, validate_manifest

VERSION = 2
MAX_CHUNK = 1 << 20  # a chunk, and a frame's plaintext
MAX_FRAME = MAX_CHUNK + (64 << 10)  # a sealed frame (zstd's worst case plus the seal)
MAX_PACK = 64 << 20
MAX_DEPTH = 64
WRITE_MAX_DEPTH = 32
MAX_MANIFEST = 64 << 20
_ID = re.compile(r"[0-9a-f]{64}")
_IDS = re.compile(r"(?:[0-9a-f]{64})+")


class Frame(NamedTuple):
    """A sealed frame: its pack, byte offset and sealed length."""

    pack: str
    offset: int
    length: int


class Loc(NamedTuple):
    """Where a chunk is: its frame, its offset in the frame's plaintext and its length."""

    pack: str
    frame_offset: int
    frame_length: int
    offset: int
    length: int


Op = tuple[Any, ...]  # ("c", start, count) | ("n", frame, offset, ids, lengths) | ("d", ids)


@dataclass(frozen=True)
class PatchFile:
    """One file of a manifest as written: its chunk list is the result of `ops`."""

    path: str
    size: int
    mode: int
    mtime: float
    chunker: str
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Patch:
    """A format-2 manifest as stored (`parent` None: a full manifest)."""

    kind: str
    parent: str | None
    depth: int
    frames: tuple[Frame, ...]
    files: tuple[PatchFile, ...]


class Resolved:
    """A version's chunk lists (`manifest`) and where each chunk is (its first occurrence).

    Columnar: per file, each chunk's frame (a number in `frames`) and offset in that frame's
    plaintext, in arrays beside the manifest's ids and lengths, and one `IdIndex` from id to
    first position; `where` is a read-only mapping view (hex id -> Loc) over them."""

    def __init__(self, manifest: Manifest, depth: int, frames: list[Frame], index: IdIndex,
                 places: list[tuple[array[int], array[int], bytearray]]) -> None:
        self.manifest, self.depth, self.frames, self.index = manifest, depth, frames, index
        self._places = places  # per file: frame numbers, offsets, 1 where an id occurs first
        self._starts = list(accumulate((len(f.chunks) for f in manifest.files), initial=0))

    @property
    def where(self) -> Where:
        """Each chunk id's location (hex id -> Loc)."""
        return Where(self)

    def lists(self) -> dict[str, ChunkIds]:
        """Each path's chunk ids."""
        return {f.path: f.chunks for f in self.manifest.files}

    def packs(self) -> set[str]:
        """Every pack a chunk of this version is in."""
        used: set[int] = set()
        for frames, _offsets, _first in self._places:
            used.update(frames)
        return {self.frames[n].pack for n in used}

    def loc_at(self, pos: int) -> Loc:
        """The location of the chunk at position `pos` (numbered across the files)."""
        number = bisect_right(self._starts, pos) - 1
        i = pos - self._starts[number]
        frames, offsets, _first = self._places[number]
        frame = self.frames[frames[i]]
        return Loc(frame.pack, frame.offset, frame.length, offsets[i], self.manifest.files[number].lengths[i])

    def frame_of(self, pos: int) -> int:
        """The frame number (in `frames`) of the chunk at position `pos`."""
        number = bisect_right(self._starts, pos) - 1
        return self._places[number][0][pos - self._starts[number]]

    def place(self, key: bytes) -> tuple[int, int, int] | None:
        """(frame number, offset, length) of a raw id, or None if this version lacks it."""
        pos = self.index.find(key)
        if pos < 0:
            return None
        number = bisect_right(self._starts, pos) - 1
        i = pos - self._starts[number]
        frames, offsets, _first = self._places[number]
        return frames[i], offsets[i], self.manifest.files[number].lengths[i]

    def columns(self, number: int) -> tuple[array[int], array[int], bytearray]:
        """File `number`'s chunks: frame numbers, offsets in the frame, 1 where an id occurs
        first (else 0)."""
        return self._places[number]


class Where(Mapping[str, Loc]):
    """A resolved version's chunk locations as a mapping (made on demand, nothing copied)."""

    def __init__(self, resolved: Resolved) -> None:
        self._r = resolved

    def __getitem__(self, cid: str) -> Loc:
        try:
            key = bytes.fromhex(cid) if isinstance(cid, str) and len(cid) == 64 else b""
        except ValueError:
            key = b""
        pos = self._r.index.find(key) if key else -1
        if pos < 0:
            raise KeyError(cid)
        return self._r.loc_at(pos)

    def __iter__(self) -> Iterator[str]:
        for number, entry in enumerate(self._r.manifest.files):
            first = self._r.columns(number)[2]
            for i, key in enumerate(entry.chunks.digests()):
                if first[i]:
                    yield key.hex()

    def __len__(self) -> int:
        return self._r.index.count


def _bad(what: str = "") -> errors.AreaCorrupt:
    return errors.AreaCorrupt(_("the manifest has a malformed file entry") + (f" ({what})" if what else ""))


def _nat(v: object, limit: int, what: str, low: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= limit:
        raise _bad(what)
    return v


def _ids(v: object, what: str) -> ChunkIds:
    if not isinstance(v, str) or not _IDS.fullmatch(v):
        raise _bad(what)
    return ChunkIds(bytes.fromhex(v))


# --- decoding (structure and bounds) ------------------------------------------------------


def decode(body: bytes) -> Patch:
    """Parse a format-2 manifest body; AreaCorrupt on anything malformed or out of bounds."""
    return decode_doc(load(body))


def load(body: bytes) -> object:
    """A manifest body's JSON document (strict UTF-8); AreaCorrupt if it is not JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise errors.AreaCorrupt(_("the manifest is not valid JSON")) from None


def is_version2(doc: object) -> bool:
    """True if `doc` is a JSON object declaring format version 2."""
    version = doc.get("version") if isinstance(doc, dict) else None
    return version == VERSION and not isinstance(version, bool)


def decode_doc(doc: object) -> Patch:
    """`decode` from the parsed JSON; each op list is emptied as it is read, so the parsed
    strings are freed one op at a time instead of living beside the whole decoded patch."""
    if not isinstance(doc, dict):
        raise errors.AreaCorrupt(_("the manifest is not a JSON object"))
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise _bad("version")
    kind, parent = doc.get("kind"), doc.get("parent")
    if kind not in KINDS:
        raise _bad("kind")
    if parent is not None and not (isinstance(parent, str) and _ID.fullmatch(parent)):
        raise _bad("parent")
    depth = _nat(doc.get("depth"), MAX_DEPTH, "depth")
    if (parent is None) != (depth == 0):
        raise _bad("depth")
    frames, files = doc.get("frames"), doc.get("files")
    if not isinstance(frames, list) or not isinstance(files, list):
        raise _bad("lists")
    decoded = tuple(_frame(f) for f in frames)
    entries = tuple(_file(f, len(decoded), parent is None) for f in files)
    return Patch(kind, parent, depth, decoded, entries)


def _frame(v: object) -> Frame:
    if not isinstance(v, list) or len(v) != 3 or not isinstance(v[0], str) or not _ID.fullmatch(v[0]):
        raise _bad("frame")
    offset = _nat(v[1], MAX_PACK, "frame")
    length = _nat(v[2], MAX_FRAME, "frame", 1)
    if offset + length > MAX_PACK:
        raise _bad("frame")
    return Frame(v[0], offset, length)


def _file(v: object, frames: int, full: bool) -> PatchFile:
    if not isinstance(v, dict):
        raise _bad()
    path, mtime, chunker, ops = v.get("path"), v.get("mtime"), v.get("chunker"), v.get("ops")
    size, mode = _nat(v.get("size"), 1 << 53, "size"), _nat(v.get("mode"), 0o7777, "mode")
    if not isinstance(path, str) or not isinstance(ops, list) or not isinstance(chunker, str):
        raise _bad()
    if not (isinstance(mtime, int | float) and not isinstance(mtime, bool) and math.isfinite(mtime)
            and 0 <= mtime <= MAX_MTIME):
        raise _bad("mtime")
    try:
        chunking.parse(chunker)
    except ValueError:
        raise _bad("chunker") from None
    decoded = []
    for i, o in enumerate(ops):
        decoded.append(_op(o, frames, full))
        ops[i] = None  # this op's JSON strings and ints: freed now
    return PatchFile(path, size, mode, float(mtime), chunker, tuple(decoded))


def _op(v: object, frames: int, full: bool) -> Op:
    if not isinstance(v, list) or not v:
        raise _bad("op")
    tag = v[0]
    if tag == "c" and len(v) == 3 and not full:
        return ("c", _nat(v[1], 1 << 40, "op"), _nat(v[2], 1 << 40, "op", 1))
    if tag == "d" and len(v) == 2:
        return ("d", _ids(v[1], "op"))
    if tag == "n" and len(v) == 5 and isinstance(v[4], list):
        frame = _nat(v[1], frames - 1, "op") if frames else _nat(-1, 0, "op")
        offset = _nat(v[2], MAX_CHUNK, "op")
        ids = _ids(v[3], "op")
        lengths = Lengths(_nat(n, MAX_CHUNK, "op", 1) for n in v[4])
        if len(ids) != len(lengths) or offset + sum(lengths) > MAX_CHUNK:
            raise _bad("op")
        return ("n", frame, offset, ids, lengths)
    raise _bad("op")


# --- encoding ----------------------------------------------------------------------------------


def encode(patch: Patch) -> bytes:
    """Canonical JSON (sorted keys, compact, UTF-8), as format 1."""
    return b"".join(encode_parts(patch))


def encoded_size(patch: Patch) -> int:
    """len(encode(patch)), without holding the whole body."""
    return sum(len(part) for part in encode_parts(patch))


def _j(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def encode_parts(patch: Patch) -> Iterator[bytes]:
    """`encode(patch)` in pieces of about one op each (their concatenation is exactly the
    canonical JSON), so a manifest of 200,000 chunks is written out without one big string."""
    yield b'{"depth":%d,"files":[' % patch.depth
    for i, f in enumerate(patch.files):
        yield b'%s{"chunker":%s,"mode":%d,"mtime":%s,"ops":[' % (
            b"," if i else b"", _j(f.chunker), f.mode, _j(f.mtime))
        for k, op in enumerate(f.ops):
            yield (b"," if k else b"") + _op_bytes(op)
        yield b'],"path":%s,"size":%d}' % (_j(f.path), f.size)
    frames = ",".join(f'["{f.pack}",{f.offset},{f.length}]' for f in patch.frames)
    yield b'],"frames":[%s],"kind":%s,"parent":%s,"version":%d}' % (
        frames.encode(), _j(patch.kind), _j(patch.parent), VERSION)


def _hex(ids: ChunkIds | tuple[str, ...]) -> bytes:
    return (ids.hex() if isinstance(ids, ChunkIds) else "".join(ids)).encode()


def _op_bytes(op: Op) -> bytes:
    if op[0] == "c":
        return b'["c",%d,%d]' % (op[1], op[2])
    if op[0] == "d":
        return b'["d","%s"]' % _hex(op[1])
    lengths = ",".join(map(str, op[4])).encode()
    return b'["n",%d,%d,"%s",[%s]]' % (op[1], op[2], _hex(op[3]), lengths)


# --- resolving ----------------------------------------------------------------------------------


def resolve(patch: Patch, parent: Resolved | None) -> Resolved:
    """The chunk lists and locations `patch` describes on top of `parent` (None for a full one).

    AreaCorrupt if the patch needs a parent it was not given, copies entries the parent's
    same path does not have, names an id stored nowhere, or its lengths do not sum to a size.
    """
    if (patch.parent is None) != (parent is None):
        raise _bad("parent")
    if parent is not None and patch.depth != parent.depth + 1:
        raise _bad("depth")
    frames = [*parent.frames, *patch.frames] if parent is not None else list(patch.frames)
    state = _Resolving(parent, len(frames) - len(patch.frames), sum(map(_count, patch.files)))
    entries = tuple(state.file(f) for f in patch.files)
    manifest = Manifest(kind=patch.kind, files=entries, chunker=PER_FILE)
    validate_manifest(manifest)
    return Resolved(manifest, patch.depth, frames, state.index, state.places)


def _count(f: PatchFile) -> int:
    return sum(op[2] if op[0] == "c" else len(op[1] if op[0] == "d" else op[3]) for op in f.ops)


class _Resolving:
    """One `resolve`: each file's ids, lengths and places as its ops are applied; a repeated id
    keeps the place (and, when copied, the length) of its first occurrence."""

    def __init__(self, parent: Resolved | None, frame_base: int, expected: int) -> None:
        self.parent, self.frame_base = parent, frame_base
        self.lists = parent.lists() if parent is not None else {}
        self.index = IdIndex(min(expected, 1 << 24))
        self.places: list[tuple[array[int], array[int], bytearray]] = []
        self.lengths: list[array[int]] = []
        self.starts: list[int] = []

    def file(self, f: PatchFile) -> FileEntry:
        self.ids, self.lens = bytearray(), array("I")
        self.frames, self.offsets, self.first = array("I"), array("I"), bytearray()
        self.start = self.index.append_buffer(self.ids)
        for op in f.ops:
            if op[0] == "c":
                source = self.lists.get(f.path)
                if source is None or op[1] + op[2] > len(source):
                    raise _bad("op")
                for k in range(op[1], op[1] + op[2]):
                    self.known(source.key(k))
            elif op[0] == "d":
                for key in ChunkIds.of(op[1]).digests():
                    self.known(key)
            else:
                frame, offset = self.frame_base + op[1], op[2]
                for key, length in zip(ChunkIds.of(op[3]).digests(), op[4], strict=True):
                    self.put(key, length, frame, offset, True)
                    offset += length
        total = sum(self.lens)
        if total != f.size:
            raise errors.AreaCorrupt(_("file {path!r}: size {written} != {size}").format(
                path=f.path, written=total, size=f.size))
        chunk_ids = ChunkIds(self.ids)
        self.index.replace_last(chunk_ids.raw)
        self.places.append((self.frames, self.offsets, self.first))
        self.lengths.append(self.lens)
        self.starts.append(self.start)
        return FileEntry(f.path, f.size, f.mode, f.mtime, chunk_ids, Lengths(self.lens), f.chunker)

    def known(self, key: bytes) -> None:
        """A chunk stored before: earlier in this manifest or in the parent (else AreaCorrupt)."""
        if self.index.find(key) >= 0:
            self.put(key, 0, 0, 0, False)
            return
        place = self.parent.place(key) if self.parent is not None else None
        if place is None:
            raise _bad("op")
        self.put(key, place[2], place[0], place[1], False)

    def put(self, key: bytes, length: int, frame: int, offset: int, new: bool) -> None:
        pos = self.start + len(self.lens)
        self.ids += key
        seen = self.index.add(pos)
        if seen != pos:
            if seen >= self.start:
                frames, offsets, lens, i = self.frames, self.offsets, self.lens, seen - self.start
            else:
                number = bisect_right(self.starts, seen) - 1
                (frames, offsets, _first), lens = self.places[number], self.lengths[number]
                i = seen - self.starts[number]
            frame, offset = frames[i], offsets[i]
            if not new:
                length = lens[i]
        self.lens.append(length)
        self.frames.append(frame)
        self.offsets.append(offset)
        self.first.append(seen == pos)


class OpsBuilder:
    """Builds one file's ops, joining neighbours into runs (amortized O(1) per chunk); ids are
    raw digests (hex strings are converted)."""

    def __init__(self) -> None:
        self._ops: list[list[Any]] = []

    def copy(self, index: int) -> None:
        """Entry `index` of the parent's same path."""
        last = self._ops[-1] if self._ops else None
        if last is not None and last[0] == "c" and last[1] + last[2] == index:
            last[2] += 1
        else:
            self._ops.append(["c", index, 1])

    def stored(self, cid: bytes | str) -> None:
        """A chunk stored before (in the parent or earlier in this manifest)."""
        key = bytes.fromhex(cid) if isinstance(cid, str) else cid
        if self._ops and self._ops[-1][0] == "d":
            self._ops[-1][1] += key
        else:
            self._ops.append(["d", bytearray(key)])

    def new(self, frame: int, offset: int, cid: bytes | str, length: int) -> None:
        """A chunk at `offset` of frame number `frame`."""
        key = bytes.fromhex(cid) if isinstance(cid, str) else cid
        last = self._ops[-1] if self._ops else None
        if last is not None and last[0] == "n" and last[1] == frame and last[2] + last[5] == offset:
            last[3] += key
            last[4].append(length)
            last[5] += length
        else:
            self._ops.append(["n", frame, offset, bytearray(key), array("I", [length]), length])

    def ops(self) -> tuple[Op, ...]:
        """The ops built so far."""
        out: list[Op] = []
        for op in self._ops:
            if op[0] == "c":
                out.append(("c", op[1], op[2]))
            elif op[0] == "d":
                out.append(("d", ChunkIds(op[1])))
            else:
                out.append(("n", op[1], op[2], ChunkIds(op[3]), Lengths(op[4])))
        return tuple(out)


def full_form(resolved: Resolved) -> Patch:
    """`resolved` as a full manifest (parent null): every chunk's first place as an `n` run."""
    frames: dict[Frame, int] = {}  # a frame of `resolved` -> its number in the full form
    files = []
    for number, entry in enumerate(resolved.manifest.files):
        ops = OpsBuilder()
        numbers, offsets, firsts = resolved.columns(number)
        for i, key in enumerate(entry.chunks.digests()):
            if not firsts[i]:
                ops.stored(key)
                continue
            index = frames.setdefault(resolved.frames[numbers[i]], len(frames))
            ops.new(index, offsets[i], key, entry.lengths[i])
        files.append(PatchFile(entry.path, entry.size, entry.mode, entry.mtime, entry.chunker, ops.ops()))
    return Patch(resolved.manifest.kind, None, 0, tuple(frames), tuple(files))
