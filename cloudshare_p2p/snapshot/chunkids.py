"""Compact chunk lists: ids as one buffer of raw 32-byte digests, lengths as one array, and a
first-occurrence index over such buffers (pure, no I/O).

A 1 GB file has some 200,000 chunks; a hex id string costs 113 bytes and a dict entry with a
location record some 300 more, per chunk and per copy. Here an id costs 32 bytes, a length 4,
an index slot about 16: hex strings exist only at the edges (a manifest's JSON, a file name),
made on demand by `ChunkIds.__getitem__` / iteration.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

ID_BYTES = 32


class ChunkIds(Sequence[str]):
    """A list of chunk ids held as one `bytes` of raw digests; reads as hex strings."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes | bytearray = b"") -> None:
        if len(raw) % ID_BYTES:
            raise ValueError("chunk id buffer of a length that is not a multiple of 32")
        self.raw = bytes(raw)

    @classmethod
    def of(cls, ids: Iterable[str] | ChunkIds) -> ChunkIds:
        """`ids` as ChunkIds (hex strings are converted; ValueError if one is not hex)."""
        if isinstance(ids, ChunkIds):
            return ids
        ids = tuple(ids)
        if not all(isinstance(c, str) and len(c) == 2 * ID_BYTES for c in ids):
            raise ValueError("not a chunk id")
        return cls(bytes.fromhex("".join(ids)))

    def key(self, i: int) -> bytes:
        """Raw digest of entry `i` (no negative indexes)."""
        return self.raw[i * ID_BYTES : (i + 1) * ID_BYTES]

    def digests(self) -> Iterator[bytes]:
        """Each raw digest in order."""
        raw = self.raw
        return (raw[i : i + ID_BYTES] for i in range(0, len(raw), ID_BYTES))

    def hex(self) -> str:
        """All ids as one hex string (a manifest's `d`/`n` field)."""
        return self.raw.hex()

    def __len__(self) -> int:
        return len(self.raw) // ID_BYTES

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> ChunkIds: ...
    def __getitem__(self, i: int | slice) -> str | ChunkIds:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return ChunkIds.of(self[k] for k in range(start, stop, step))
            return ChunkIds(self.raw[start * ID_BYTES : max(start, stop) * ID_BYTES])
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("chunk index out of range")
        return self.key(i).hex()

    def __iter__(self) -> Iterator[str]:
        return (key.hex() for key in self.digests())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkIds):
            return self.raw == other.raw
        if isinstance(other, tuple | list):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"ChunkIds({len(self)} ids)"


class Lengths(Sequence[int]):
    """Chunk lengths held as one unsigned 32-bit array; compares equal to a tuple of the same."""

    __slots__ = ("values",)

    def __init__(self, values: Iterable[int] = ()) -> None:
        self.values = values if isinstance(values, array) and values.typecode == "I" else array("I", values)

    @classmethod
    def of(cls, values: Iterable[int] | Lengths) -> Lengths:
        """`values` as Lengths (OverflowError for a negative or too large one)."""
        return values if isinstance(values, Lengths) else cls(values)

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Lengths: ...
    def __getitem__(self, i: int | slice) -> int | Lengths:
        if isinstance(i, slice):
            return Lengths(self.values[i])
        return self.values[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self.values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lengths):
            return self.values == other.values
        if isinstance(other, tuple | list):
            return tuple(self.values) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.values.tobytes())

    def __repr__(self) -> str:
        return f"Lengths({len(self)} lengths)"


class IdIndex:
    """The first position of each id among buffers of raw ids appended one after another.

    Open addressing in one array of positions (position + 1; 0 is empty), at most half
    full, probed from Python's (salted) hash of the digest: about 16 bytes per id instead of
    a dict entry and a key object. The last buffer may be a `bytearray` still growing.
    """

    def __init__(self, expected: int = 0) -> None:
        self._bufs: list[bytes | bytearray] = []
        self._starts: list[int] = []
        size = 16
        while size < 2 * expected:
            size *= 2
        self._table = array("i", [0]) * size
        self._mask = size - 1
        self.count = 0  # distinct ids

    def append_buffer(self, buf: bytes | bytearray) -> int:
        """Number the ids of `buf` after those before; returns the first one's position."""
        start = self._starts[-1] + len(self._bufs[-1]) // ID_BYTES if self._bufs else 0
        self._bufs.append(buf)
        self._starts.append(start)
        return start

    def replace_last(self, buf: bytes) -> None:
        """Swap the last buffer for an equal one (a finished bytearray for its bytes)."""
        self._bufs[-1] = buf

    def key_at(self, pos: int) -> bytes:
        """The raw id at position `pos`."""
        n = len(self._starts) - 1 if pos >= self._starts[-1] else bisect_right(self._starts, pos) - 1
        at = (pos - self._starts[n]) * ID_BYTES
        return bytes(self._bufs[n][at : at + ID_BYTES])

    def find(self, key: bytes) -> int:
        """The first position of `key`, or -1."""
        table, mask = self._table, self._mask
        slot = hash(key) & mask
        while entry := table[slot]:
            if self.key_at(entry - 1) == key:
                return entry - 1
            slot = (slot + 1) & mask
        return -1

    def add(self, pos: int) -> int:
        """Index the id at `pos` unless it occurred before; its first position."""
        key = self.key_at(pos)
        table, mask = self._table, self._mask
        slot = hash(key) & mask
        while entry := table[slot]:
            if self.key_at(entry - 1) == key:
                return entry - 1
            slot = (slot + 1) & mask
        table[slot] = pos + 1
        self.count += 1
        if 2 * self.count > mask + 1:
            self._grow()
        return pos

    def _grow(self) -> None:
        old = self._table
        size = 2 * len(old)
        self._table, self._mask = array("i", [0]) * size, size - 1
        table, mask = self._table, self._mask
        for entry in old:
            if entry:
                slot = hash(self.key_at(entry - 1)) & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = entry
