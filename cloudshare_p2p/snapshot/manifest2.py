"""Format 2 manifests as data: decode with bounds, encode, resolve a patch against its parent.

Pure (no I/O). A manifest read from the host is untrusted: anything malformed or out of
bounds raises `errors.AreaCorrupt` (never another exception), so the version built on it is
unreadable, not a crash. Spec: docs/area-format.md, "Manifests (version 2)".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import chunking, errors
from ..i18n import _
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


@dataclass
class Resolved:
    """A version's chunk lists (`manifest`) and where each chunk id is (first occurrence)."""

    manifest: Manifest
    where: dict[str, Loc]
    depth: int

    def lists(self) -> dict[str, tuple[str, ...]]:
        """Each path's chunk ids."""
        return {f.path: f.chunks for f in self.manifest.files}

    def packs(self) -> set[str]:
        """Every pack a chunk of this version is in."""
        return {loc.pack for loc in self.where.values()}


def _bad(what: str = "") -> errors.AreaCorrupt:
    return errors.AreaCorrupt(_("the manifest has a malformed file entry") + (f" ({what})" if what else ""))


def _nat(v: object, limit: int, what: str, low: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= limit:
        raise _bad(what)
    return v


def _ids(v: object, what: str) -> tuple[str, ...]:
    if not isinstance(v, str) or not _IDS.fullmatch(v):
        raise _bad(what)
    return tuple(v[i : i + 64] for i in range(0, len(v), 64))


# --- decoding (structure and bounds) ------------------------------------------------------


def decode(body: bytes) -> Patch:
    """Parse a format-2 manifest body; AreaCorrupt on anything malformed or out of bounds."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise errors.AreaCorrupt(_("the manifest is not valid JSON")) from None
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
    return PatchFile(path, size, mode, float(mtime), chunker, tuple(_op(o, frames, full) for o in ops))


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
        lengths = tuple(_nat(n, MAX_CHUNK, "op", 1) for n in v[4])
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


def _op_bytes(op: Op) -> bytes:
    if op[0] == "c":
        return b'["c",%d,%d]' % (op[1], op[2])
    if op[0] == "d":
        return b'["d","%s"]' % "".join(op[1]).encode()
    lengths = ",".join(map(str, op[4])).encode()
    return b'["n",%d,%d,"%s",[%s]]' % (op[1], op[2], "".join(op[3]).encode(), lengths)


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
    lists = parent.lists() if parent is not None else {}
    where: dict[str, Loc] = {}
    entries = tuple(_resolve_file(f, patch.frames, lists, parent, where) for f in patch.files)
    manifest = Manifest(kind=patch.kind, files=entries, chunker=PER_FILE)
    validate_manifest(manifest)
    return Resolved(manifest, where, patch.depth)


def _known(cid: str, parent: Resolved | None, where: dict[str, Loc]) -> Loc:
    loc = where.get(cid) or (parent.where.get(cid) if parent is not None else None)
    if loc is None:
        raise _bad("op")
    return loc


def _resolve_file(f: PatchFile, frames: tuple[Frame, ...], lists: dict[str, tuple[str, ...]],
                  parent: Resolved | None, where: dict[str, Loc]) -> FileEntry:
    ids: list[str] = []
    lengths: list[int] = []
    for op in f.ops:
        if op[0] == "c":
            source = lists.get(f.path)
            if source is None or op[1] + op[2] > len(source):
                raise _bad("op")
            for cid in source[op[1] : op[1] + op[2]]:
                loc = _known(cid, parent, where)
                where.setdefault(cid, loc)
                ids.append(cid)
                lengths.append(loc.length)
        elif op[0] == "d":
            for cid in op[1]:
                loc = _known(cid, parent, where)
                where.setdefault(cid, loc)
                ids.append(cid)
                lengths.append(loc.length)
        else:
            frame, offset = frames[op[1]], op[2]
            for cid, length in zip(op[3], op[4], strict=True):
                where.setdefault(cid, Loc(frame.pack, frame.offset, frame.length, offset, length))
                ids.append(cid)
                lengths.append(length)
                offset += length
    if sum(lengths) != f.size:
        raise errors.AreaCorrupt(_("file {path!r}: size {written} != {size}").format(
            path=f.path, written=sum(lengths), size=f.size))
    return FileEntry(f.path, f.size, f.mode, f.mtime, tuple(ids), tuple(lengths), f.chunker)


class OpsBuilder:
    """Builds one file's ops, joining neighbours into runs (amortized O(1) per chunk)."""

    def __init__(self) -> None:
        self._ops: list[list[Any]] = []

    def copy(self, index: int) -> None:
        """Entry `index` of the parent's same path."""
        last = self._ops[-1] if self._ops else None
        if last is not None and last[0] == "c" and last[1] + last[2] == index:
            last[2] += 1
        else:
            self._ops.append(["c", index, 1])

    def stored(self, cid: str) -> None:
        """A chunk stored before (in the parent or earlier in this manifest)."""
        if self._ops and self._ops[-1][0] == "d":
            self._ops[-1][1].append(cid)
        else:
            self._ops.append(["d", [cid]])

    def new(self, frame: int, offset: int, cid: str, length: int) -> None:
        """A chunk at `offset` of frame number `frame`."""
        last = self._ops[-1] if self._ops else None
        if last is not None and last[0] == "n" and last[1] == frame and last[2] + last[5] == offset:
            last[3].append(cid)
            last[4].append(length)
            last[5] += length
        else:
            self._ops.append(["n", frame, offset, [cid], [length], length])

    def ops(self) -> tuple[Op, ...]:
        """The ops built so far."""
        out: list[Op] = []
        for op in self._ops:
            if op[0] == "c":
                out.append(("c", op[1], op[2]))
            elif op[0] == "d":
                out.append(("d", tuple(op[1])))
            else:
                out.append(("n", op[1], op[2], tuple(op[3]), tuple(op[4])))
        return tuple(out)


def full_form(resolved: Resolved) -> Patch:
    """`resolved` as a full manifest (parent null): every chunk's first place as an `n` run."""
    frames: dict[tuple[str, int, int], int] = {}
    seen: set[str] = set()
    files = []
    for entry in resolved.manifest.files:
        ops = OpsBuilder()
        for cid in entry.chunks:
            if cid in seen:
                ops.stored(cid)
                continue
            seen.add(cid)
            loc = resolved.where[cid]
            index = frames.setdefault((loc.pack, loc.frame_offset, loc.frame_length), len(frames))
            ops.new(index, loc.offset, cid, loc.length)
        files.append(PatchFile(entry.path, entry.size, entry.mode, entry.mtime, entry.chunker, ops.ops()))
    return Patch(resolved.manifest.kind, None, 0, tuple(Frame(*k) for k in frames), tuple(files))
