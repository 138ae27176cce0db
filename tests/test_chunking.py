"""Format 2 chunkers (cloudshare_p2p.chunking): detection, exact reassembly, locality of edits."""

from __future__ import annotations

import hashlib
import io
import random
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from cloudshare_p2p import chunking
from cloudshare_p2p.chunking import CdcChunker, FixedChunker, PageChunker


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _text(n: int, seed: int = 2) -> bytes:
    """Compressible, line-structured bytes (like a CSV export)."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        line = f"{rng.randrange(10**6)},2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}," \
               f"{rng.choice(['rent', 'fees', 'sales', 'travel'])},{rng.randrange(10**7)}\r\n".encode()
        out.append(line)
        size += len(line)
    return b"".join(out)[:n]


def _chunks(data: bytes, chunker: chunking.Chunker) -> list[tuple[int, bytes]]:
    return list(chunking.chunks(io.BytesIO(data), chunker))


def _ids(chunks: list[tuple[int, bytes]]) -> set[bytes]:
    return {hashlib.sha256(d).digest() for _, d in chunks}


class _Trickle(io.RawIOBase):
    """A stream that returns short reads of varying length (like a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos, self._rng = data, 0, random.Random(5)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._rng.randrange(1, 5000), len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


CHUNKERS = [
    FixedChunker(1 << 20),
    FixedChunker(1000),
    PageChunker(4096, 1),
    PageChunker(1024, 4),
    chunking.DEFAULT_CDC,
    CdcChunker(avg=4096, min=1024, max=16384),
]


# --- reassembly and determinism ------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS, ids=lambda c: c.name)
@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 300_001])
def test_chunks_cover_the_input_exactly(chunker: chunking.Chunker, size: int) -> None:
    data = _data(size)
    out = _chunks(data, chunker)
    assert b"".join(d for _, d in out) == data
    offset = 0
    for off, d in out:
        assert off == offset and 0 < len(d) <= chunker.max_size
        offset += len(d)
    assert (out == []) == (size == 0)


@pytest.mark.parametrize("chunker", CHUNKERS, ids=lambda c: c.name)
def test_chunks_are_deterministic_and_ignore_how_the_stream_reads(chunker: chunking.Chunker) -> None:
    data = _text(400_000) + _data(200_000)
    first = _chunks(data, chunker)
    assert _chunks(data, chunker) == first
    assert list(chunking.chunks(_Trickle(data), chunker)) == first
    assert list(chunking.chunks(io.BufferedReader(_Trickle(data), 777), chunker)) == first


def test_page_blocks_are_aligned_and_sized() -> None:
    data = _data(10 * 4096 + 100)
    out = _chunks(data, PageChunker(4096, 4))
    assert [off for off, _ in out] == [0, 16384, 32768]
    assert [len(d) for _, d in out] == [16384, 16384, 2 * 4096 + 100]


def test_cdc_sizes_respect_bounds_and_average() -> None:
    c = CdcChunker(avg=8192, min=2048, max=32768)
    out = _chunks(_data(2_000_000), c)
    sizes = [len(d) for _, d in out]
    assert all(c.min <= s <= c.max for s in sizes[:-1])
    assert 6000 < sum(sizes) / len(sizes) < 16000


def test_names_round_trip_and_bad_values_are_refused() -> None:
    for c in [*CHUNKERS, PageChunker(65536, 1)]:
        assert chunking.parse(c.name) == c
    for bad in ("fixed-0", "pages-4000x1", "pages-4096x0", "pages-65536x32", "fastcdc2020-1-2-3-nc1", "x", 7):
        with pytest.raises(ValueError):
            chunking.parse(bad)
    with pytest.raises(ValueError):
        CdcChunker(avg=4096, min=8192, max=16384)
    with pytest.raises(ValueError):
        list(chunking.chunks(io.BytesIO(b"x"), "fixed-1"))


# --- SQLite detection -----------------------------------------------------------------------


def _make_db(path: Path, page_size: int, rows: int = 2000, journal: str = "DELETE") -> None:
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA page_size={page_size}")
    con.execute(f"PRAGMA journal_mode={journal}")
    con.execute("CREATE TABLE journal(id INTEGER PRIMARY KEY, account INTEGER, amount INTEGER, memo TEXT)")
    con.execute("CREATE INDEX journal_account ON journal(account)")
    rng = random.Random(3)
    with con:
        con.executemany("INSERT INTO journal VALUES (?,?,?,?)",
                        [(i, rng.randrange(40), rng.randrange(10**6), f"memo {rng.randrange(10**9)}")
                         for i in range(1, rows + 1)])
    con.close()


@pytest.mark.parametrize("page_size", [512, 1024, 4096, 8192, 32768, 65536])
def test_sqlite_databases_get_page_aligned_blocks(tmp_path: Path, page_size: int) -> None:
    db = tmp_path / "ledger.db"
    _make_db(db, page_size, rows=300)
    header = db.read_bytes()[:100]
    if page_size == 65536:
        assert header[16:18] == b"\x00\x01"  # SQLite's encoding of 65536
    assert chunking.sqlite_page_size(header) == page_size
    for arg in (header, db, str(db), bytearray(header) + b"more"):
        c = chunking.detect(arg)
        assert c == PageChunker(page_size, max(1, chunking.DEFAULT_BLOCK_BYTES // page_size))
    assert chunking.detect(header, block_bytes=16384) == PageChunker(page_size, max(1, 16384 // page_size))
    with open(db, "rb") as fh:
        blocks = list(chunking.chunks(fh, chunking.detect(db, block_bytes=16384)))
    for off, data in blocks:  # never straddles a page
        assert off % page_size == 0 and len(data) % page_size == 0


def test_wal_journal_and_other_files_get_cdc(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    wal = tmp_path / "wal.db-wal"
    assert wal.stat().st_size > 0
    assert chunking.detect(wal) == chunking.DEFAULT_CDC
    assert isinstance(chunking.detect(db), PageChunker)  # a WAL-mode database is still pages
    con.close()
    journal = b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + bytes(92)  # rollback journal magic
    assert chunking.detect(journal) == chunking.DEFAULT_CDC
    assert chunking.detect(b"") == chunking.DEFAULT_CDC
    assert chunking.detect(b"SQLite format 3\x00") == chunking.DEFAULT_CDC  # too short
    fake = bytearray(db.read_bytes()[:100])
    fake[16:18] = (3000).to_bytes(2, "big")  # not a power of two
    assert chunking.detect(bytes(fake)) == chunking.DEFAULT_CDC
    fake = bytearray(db.read_bytes()[:100])
    fake[21] = 0  # payload fractions must be 64/32/32
    assert chunking.detect(bytes(fake)) == chunking.DEFAULT_CDC
    assert chunking.detect(_text(200)) == chunking.DEFAULT_CDC
    with pytest.raises(ValueError):
        chunking.detect(12)


# --- locality of edits ----------------------------------------------------------------------


def _page_ids(path: Path, page_size: int) -> dict[int, bytes]:
    data = path.read_bytes()
    return {i: data[i * page_size : (i + 1) * page_size] for i in range(len(data) // page_size)}


@pytest.mark.parametrize("pages_per_block", [1, 4])
def test_scattered_update_changes_only_the_blocks_of_changed_pages(
    tmp_path: Path, pages_per_block: int
) -> None:
    db = tmp_path / "ledger.db"
    _make_db(db, 4096, rows=20_000)
    before_pages = _page_ids(db, 4096)
    chunker = PageChunker(4096, pages_per_block)
    with open(db, "rb") as fh:
        before = list(chunking.chunks(fh, chunker))
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE journal SET memo = memo || ' (fixed)' WHERE id % 997 = 0")
    con.close()
    after_pages = _page_ids(db, 4096)
    assert len(after_pages) >= len(before_pages)  # page splits append pages
    changed_pages = {i for i in after_pages if after_pages[i] != before_pages.get(i)}
    assert 2 <= len(changed_pages) < len(after_pages) // 2  # scattered, not the whole file
    with open(db, "rb") as fh:
        after = list(chunking.chunks(fh, chunker))
    new_ids = _ids(after) - _ids(before)
    expected_blocks = {i // pages_per_block for i in changed_pages}
    changed_blocks = {off // chunker.block_size for off, d in after
                      if hashlib.sha256(d).digest() in new_ids}
    assert changed_blocks == expected_blocks
    assert len(new_ids) == len(expected_blocks)


@pytest.mark.parametrize("chunker", [chunking.DEFAULT_CDC, CdcChunker(avg=65536, min=16384, max=262144)],
                         ids=lambda c: c.name)
def test_insertion_in_the_middle_changes_o1_cdc_chunks(chunker: CdcChunker) -> None:
    data = _text(3_000_000)
    before = _chunks(data, chunker)
    for insert_at, inserted in ((1_500_000, b"one more line,2024-01-01,rent,1\r\n"), (777_777, _data(5000))):
        edited = data[:insert_at] + inserted + data[insert_at:]
        after = _chunks(edited, chunker)
        assert b"".join(d for _, d in after) == edited
        new = _ids(after) - _ids(before)
        assert 1 <= len(new) <= 3 + len(inserted) // chunker.min
        assert len(after) > 20


def test_fixed_chunks_shift_after_an_insertion_but_cdc_does_not() -> None:
    data = _text(2_000_000)
    edited = data[:1000] + b"x" + data[1000:]
    fixed = PageChunker(4096, 1)
    assert len(_ids(_chunks(edited, fixed)) - _ids(_chunks(data, fixed))) > 400
    cdc = chunking.DEFAULT_CDC
    assert len(_ids(_chunks(edited, cdc)) - _ids(_chunks(data, cdc))) <= 3


# --- bounded memory -------------------------------------------------------------------------


BIG_CHUNKERS = [
    chunking.DEFAULT_CDC,
    CdcChunker(avg=1 << 20, min=256 << 10, max=4 << 20),
    PageChunker(65536, 16),
    FixedChunker(1 << 20),
]


@pytest.mark.parametrize("chunker", BIG_CHUNKERS, ids=lambda c: c.name)
def test_a_200mb_sparse_file_streams_in_bounded_memory(tmp_path: Path, chunker: chunking.Chunker) -> None:
    path = tmp_path / "sparse.bin"
    size = 200 * 1000 * 1000
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(size // 2)
        fh.write(b"in the middle")
    total = count = 0
    tracemalloc.start()
    try:
        with open(path, "rb") as fh:
            for off, data in chunking.chunks(fh, chunker):
                assert off == total
                total += len(data)
                count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size and count >= size // chunker.max_size
    assert peak < 4 * chunker.max_size + (4 << 20), peak
