"""Format 2 manifests as data: decode with bounds, encode, ops built in runs (resolving a
patch against its parent: resolve2).

Pure (no I/O). A manifest read from the host is untrusted: anything malformed or out of
bounds raises `errors.AreaCorrupt` (never another exception), so the version built on it is
unreadable, not a crash. Spec: docs/area-format.md, "Manifests (version 2)".
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import chunking, errors
from ..i18n import _
from .chunkids import ChunkIds, Lengths
from .manifest import KINDS, MAX_MTIME

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
