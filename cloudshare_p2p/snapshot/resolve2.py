"""Format 2 manifests resolved: a patch applied to its parent's chunk lists, and the full form.

Pure (no I/O). `Resolved` holds a version's chunk lists and each chunk's location as compact
columns (chunkids). A patch that copies entries its parent lacks, names an id stored nowhere,
or whose lengths do not sum to a size raises `errors.AreaCorrupt`. Spec: docs/area-format.md,
"Manifests (version 2)".
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from itertools import accumulate

from .. import errors
from ..i18n import _
from .chunkids import ChunkIds, IdIndex, Lengths
from .manifest import NO_LENGTHS, PER_FILE, FileEntry, Manifest, validate_manifest
from .manifest2 import Frame, Loc, OpsBuilder, Patch, PatchFile, _bad


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
        self.numbers = {f.path: n for n, f in enumerate(parent.manifest.files)} if parent is not None else {}
        self.index = IdIndex(min(expected, 1 << 18))  # a hostile count must not size the table
        self.places: list[tuple[array[int], array[int], bytearray]] = []
        self.lengths: list[array[int]] = []
        self.starts: list[int] = []

    def file(self, f: PatchFile) -> FileEntry:
        self.ids, self.lens = bytearray(), array("I")
        self.frames, self.offsets, self.first = array("I"), array("I"), bytearray()
        self.start = self.index.append_buffer(self.ids)
        number = self.numbers.get(f.path, -1)
        self.copy_from: tuple[array[int], array[int], bytearray] | None = None
        self.copy_lengths = NO_LENGTHS
        if self.parent is not None and number >= 0:  # the parent's same path, for `c` ops
            self.copy_from = self.parent.columns(number)
            self.copy_lengths = self.parent.manifest.files[number].lengths
        for op in f.ops:
            if op[0] == "c":
                source = self.lists.get(f.path)
                if source is None or op[1] + op[2] > len(source):
                    raise _bad("op")
                for k in range(op[1], op[1] + op[2]):
                    self.known(source.key(k), k)
            elif op[0] == "d":
                for key in ChunkIds.of(op[1]).digests():
                    self.known(key)
            else:
                frame, offset = self.frame_base + op[1], op[2]
                for key, length in zip(ChunkIds.of(op[3]).digests(), op[4], strict=True):
                    self.put(key, length, frame, offset)
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

    def known(self, key: bytes, copied: int = -1) -> None:
        """A chunk stored before: earlier in this manifest or in the parent (else AreaCorrupt);
        `copied` >= 0: the index a `c` op names in the parent's same path (its place there
        serves when that is the id's first occurrence in the parent: no search)."""
        pos = self.start + len(self.lens)
        self.ids += key
        seen = self.index.add(pos)
        if seen != pos:
            self.repeat(seen, 0, False)
            return
        if copied >= 0 and self.copy_from is not None and self.copy_from[2][copied]:
            frames, offsets, _first = self.copy_from
            place: tuple[int, int, int] | None = (frames[copied], offsets[copied], self.copy_lengths[copied])
        else:
            place = self.parent.place(key) if self.parent is not None else None
        if place is None:
            raise _bad("op")
        self.append(place[2], place[0], place[1], True)

    def put(self, key: bytes, length: int, frame: int, offset: int) -> None:
        """A chunk of an `n` op (a repeated id keeps its first place, with this length)."""
        pos = self.start + len(self.lens)
        self.ids += key
        seen = self.index.add(pos)
        if seen != pos:
            self.repeat(seen, length, True)
        else:
            self.append(length, frame, offset, True)

    def repeat(self, seen: int, length: int, new: bool) -> None:
        """The next chunk has the id first seen at position `seen`: its place (and length,
        unless an `n` op gave one)."""
        if seen >= self.start:
            frames, offsets, lens, i = self.frames, self.offsets, self.lens, seen - self.start
        else:
            number = bisect_right(self.starts, seen) - 1
            (frames, offsets, _first), lens = self.places[number], self.lengths[number]
            i = seen - self.starts[number]
        self.append(length if new else lens[i], frames[i], offsets[i], False)

    def append(self, length: int, frame: int, offset: int, first: bool) -> None:
        self.lens.append(length)
        self.frames.append(frame)
        self.offsets.append(offset)
        self.first.append(first)


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
