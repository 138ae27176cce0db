"""Format 2 chunkers: cut a file into chunks that follow its edits (pure, streaming).

Two kinds of file, two chunkers, chosen per file by `detect` from its first 100 bytes:

* SQLite database files (header ``SQLite format 3\\0``; page size at offset 16, big-endian
  u16, 1 meaning 65536) -> `PageChunker`: blocks of whole pages aligned on page boundaries.
  SQLite rewrites pages in place and never shifts bytes, so an edit changes exactly the
  blocks of the pages it touches. A block holds ``max(1, block_bytes // page_size)``
  pages (``DEFAULT_BLOCK_BYTES``; chosen by bench/bench_delta.py, see there).
* Everything else, including SQLite ``-wal`` and ``-journal`` files (they have their own
  headers) -> `CdcChunker`: content-defined chunking, FastCDC 2020 (gear hash, cut-point
  skipping, normalized chunking level 1) through ``pyfastcdc``, so an insertion changes
  O(1) chunks. ``DEFAULT_CDC`` gives min/avg/max; `cdc_for_size` scales them up for files
  of 64 MiB and more.
* `FixedChunker` is format 1's fixed 1 MiB cutting, kept for reading and for the bench.

`chunks(stream, chunker)` yields ``(offset, data)`` for consecutive chunks covering the
stream exactly; it reads the stream forward only, holds at most about two maximum chunk
sizes in memory, and depends only on the bytes (never on how the stream splits its reads),
so the same bytes always give the same chunks. Every chunker has a `name` that is recorded
in a manifest and turned back into the chunker by `parse`.

Nothing here opens files or talks to anything, except `detect` given a path, which reads
that file's first 100 bytes. Errors are ValueError with plain text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
"""`detect` needs this many bytes from the start of the file (the SQLite header)."""

DEFAULT_BLOCK_BYTES = 4 << 10
"""Target size of a page-aligned block: one page of the default 4 KiB (bench/bench_delta.py:
with chunks packed and compressed together, single pages send the least and still meet the
first-transfer target; larger blocks resend unchanged neighbours)."""

FIXED_1MIB_NAME = "fixed-1048576"

_MIN_PAGE, _MAX_PAGE = 512, 65536
_MAX_BLOCK_BYTES = 1 << 20
_CDC_MIN_BOUNDS = (64, 1 << 20)  # pyfastcdc's accepted ranges
_CDC_AVG_BOUNDS = (256, 4 << 20)
_CDC_MAX_BOUNDS = (1024, 16 << 20)
_READ_SIZE = 1 << 20


class Readable(Protocol):
    """What `chunks` reads from: a binary stream's `read` (a file, or a wrapper of one)."""

    def read(self, n: int = -1, /) -> bytes | None: ...


@dataclass(frozen=True)
class FixedChunker:
    """Fixed-size chunks (format 1 uses 1 MiB)."""

    size: int = 1 << 20

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 64 << 20:
            raise ValueError(f"fixed chunk size out of range: {self.size}")

    @property
    def name(self) -> str:
        return f"fixed-{self.size}"

    @property
    def max_size(self) -> int:
        return self.size


@dataclass(frozen=True)
class PageChunker:
    """Blocks of `pages` whole pages of `page_size` bytes, aligned on page boundaries."""

    page_size: int
    pages: int = 1

    def __post_init__(self) -> None:
        if not _is_page_size(self.page_size):
            raise ValueError(f"not a SQLite page size: {self.page_size}")
        if self.pages < 1 or self.page_size * self.pages > _MAX_BLOCK_BYTES:
            raise ValueError(f"pages per block out of range: {self.pages}")

    @property
    def block_size(self) -> int:
        return self.page_size * self.pages

    @property
    def name(self) -> str:
        return f"pages-{self.page_size}x{self.pages}"

    @property
    def max_size(self) -> int:
        return self.block_size


NormalizationLevel = Literal[0, 1, 2, 3]
_LEVELS: tuple[NormalizationLevel, ...] = (0, 1, 2, 3)  # FastCDC's normalized chunking levels


@dataclass(frozen=True)
class CdcChunker:
    """FastCDC 2020 (pyfastcdc): cut points from a gear hash of the content.

    `avg` is FastCDC's normal size: the measured mean chunk is about ``min + avg``.
    """

    avg: int = 64 << 10
    min: int = 16 << 10
    max: int = 256 << 10
    normalization: NormalizationLevel = 1

    def __post_init__(self) -> None:
        for value, (lo, hi), what in (
            (self.min, _CDC_MIN_BOUNDS, "minimum"),
            (self.avg, _CDC_AVG_BOUNDS, "average"),
            (self.max, _CDC_MAX_BOUNDS, "maximum"),
        ):
            if not lo <= value <= hi:
                raise ValueError(f"content-defined chunk {what} out of range: {value}")
        if not self.min <= self.avg <= self.max:
            raise ValueError("content-defined chunk sizes must satisfy min <= avg <= max")
        if self.normalization not in _LEVELS:
            raise ValueError(f"normalization level out of range: {self.normalization}")

    @property
    def name(self) -> str:
        return f"fastcdc2020-{self.min}-{self.avg}-{self.max}-nc{self.normalization}"

    @property
    def max_size(self) -> int:
        return self.max


Chunker = FixedChunker | PageChunker | CdcChunker

DEFAULT_CDC = CdcChunker(avg=4 << 10, min=1 << 10, max=16 << 10)
"""Content-defined chunking for files that are not SQLite databases (measured mean ~4.7 KiB).
bench/bench_delta.py: with chunks packed and compressed in frames, only this size sent
<= 1.5x rsync -z after an edit of a shifted-bytes file while the first transfer stayed
<= 1.1x zstd -3; each chunk costs 32 B of manifest and ~48 B of index. Files of 64 MiB
and more get larger chunks (`cdc_for_size`)."""

CDC_MAX_AVG = 64 << 10


def cdc_for_size(size: int) -> CdcChunker:
    """The content-defined chunker for a file of `size` bytes: `DEFAULT_CDC`'s shape with the
    average at the largest power of two not above sqrt(size), from 4 KiB up to 64 KiB (rsync
    sizes its blocks by the same square root). Every chunk costs Python work on both sides
    and bytes in the manifest: a 256 MiB file cut at 4 KiB has ~55,000 chunks, about a second
    of a join's CPU; at 16 KiB a quarter of that. An edit then resends 4x larger pieces, as
    rsync's does on a file that size."""
    avg = DEFAULT_CDC.avg
    while avg < CDC_MAX_AVG and (2 * avg) ** 2 <= size:
        avg *= 2
    return CdcChunker(avg=avg, min=avg // 4, max=avg * 4, normalization=DEFAULT_CDC.normalization)

_NAME_RES = (
    (re.compile(r"fixed-([0-9]{1,9})"), lambda m: FixedChunker(int(m[1]))),
    (re.compile(r"pages-([0-9]{3,5})x([0-9]{1,4})"), lambda m: PageChunker(int(m[1]), int(m[2]))),
    (
        re.compile(r"fastcdc2020-([0-9]{1,8})-([0-9]{1,8})-([0-9]{1,8})-nc([0-3])"),
        lambda m: CdcChunker(avg=int(m[2]), min=int(m[1]), max=int(m[3]), normalization=_LEVELS[int(m[4])]),
    ),
)


def parse(name: str) -> Chunker:
    """The chunker a manifest names (the inverse of `Chunker.name`); ValueError if unknown."""
    if isinstance(name, str):
        for pattern, make in _NAME_RES:
            if m := pattern.fullmatch(name):
                return make(m)
    raise ValueError(f"unknown chunker name: {name!r}")


def _is_page_size(n: int) -> bool:
    return isinstance(n, int) and _MIN_PAGE <= n <= _MAX_PAGE and n & (n - 1) == 0


def sqlite_page_size(header: bytes) -> int | None:
    """The page size of a SQLite database from its first 100 bytes, or None if not one.

    Checks the magic string, the page size (a power of two 512..32768, or 1 = 65536) and
    the fixed payload fractions (64, 32, 32) so that a file merely starting with the
    magic string is not taken for a database.
    """
    if len(header) < HEADER_BYTES or header[:16] != SQLITE_MAGIC:
        return None
    raw = int.from_bytes(header[16:18], "big")
    page_size = 65536 if raw == 1 else raw
    if not _is_page_size(page_size) or bytes(header[21:24]) != b"\x40\x20\x20":
        return None
    return page_size


def detect(
    path_or_header: bytes | str | os.PathLike[str],
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    cdc: CdcChunker = DEFAULT_CDC,
) -> Chunker:
    """Choose the chunker for one file from its first 100 bytes (or its path).

    A SQLite database gives page-aligned blocks of ``max(1, block_bytes // page_size)``
    pages; anything else (shorter than a header, WAL, rollback journal, other formats)
    gives `cdc`. A path is opened and only its first 100 bytes are read.
    """
    if isinstance(path_or_header, bytes | bytearray | memoryview):
        header = bytes(path_or_header[:HEADER_BYTES])
    elif isinstance(path_or_header, str | os.PathLike):
        with open(path_or_header, "rb") as fh:
            header = fh.read(HEADER_BYTES)
    else:
        raise ValueError("detect needs the first bytes of a file or its path")
    if not 1 <= block_bytes <= _MAX_BLOCK_BYTES:
        raise ValueError(f"block size out of range: {block_bytes}")
    page_size = sqlite_page_size(header)
    if page_size is None:
        return cdc
    return PageChunker(page_size, max(1, block_bytes // page_size))


def _read_exact(stream: Readable, n: int) -> bytes:
    """Up to `n` bytes: fewer only at the end of the stream (short reads are continued)."""
    data = stream.read(n)
    if data is None:
        raise ValueError("the stream returned no data (non-blocking streams are not supported)")
    if len(data) == n or not data:
        return bytes(data)
    parts, have = [data], len(data)
    while have < n:
        more = stream.read(n - have)
        if more is None:
            raise ValueError("the stream returned no data (non-blocking streams are not supported)")
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


def _fixed(stream: Readable, size: int) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while block := _read_exact(stream, size):
        yield offset, block
        offset += len(block)


class _ExactReader:
    """Hands pyfastcdc bytes via readinto, continuing short reads of the underlying stream."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream

    def readinto(self, buf: memoryview) -> int:
        data = _read_exact(self._stream, min(len(buf), _READ_SIZE))
        buf[: len(data)] = data
        return len(data)


def _cdc(stream: Readable, chunker: CdcChunker) -> Iterator[tuple[int, bytes]]:
    import pyfastcdc  # deferred: only files that need it pay for the import

    cutter = pyfastcdc.FastCDC(
        chunker.avg,
        min_size=chunker.min,
        max_size=chunker.max,
        normalized_chunking=chunker.normalization,
        seed=0,
    )
    for chunk in cutter.cut_stream(_ExactReader(stream)):
        yield chunk.offset, bytes(chunk.data)  # the view is reused for the next chunk


def chunks(stream: Readable, chunker: Chunker) -> Iterator[tuple[int, bytes]]:
    """Consecutive ``(offset, data)`` chunks of `stream` read from its current position.

    Offsets count from where reading starts. An empty stream gives no chunks. Memory is
    bounded by the chunker's maximum size (CDC keeps a buffer of about twice that).
    """
    if isinstance(chunker, PageChunker):
        return _fixed(stream, chunker.block_size)
    if isinstance(chunker, FixedChunker):
        return _fixed(stream, chunker.size)
    if isinstance(chunker, CdcChunker):
        return _cdc(stream, chunker)
    raise ValueError(f"not a chunker: {chunker!r}")
