"""Chunk sizes grow with a file (fewer chunks, less work per byte), and a file that grows past
a size keeps the chunker it was shared with (its unchanged chunks are not sent again)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cloudshare_p2p import chunking
from cloudshare_p2p.snapshot import scan
from tests.homes import Home

MiB = 1 << 20


@pytest.mark.parametrize(("size", "avg"), [
    (0, 4096), (1, 4096), (64 * MiB - 1, 4096), (64 * MiB, 8192), (255 * MiB, 8192),
    (256 * MiB, 16384), (1 << 30, 32768), (4 << 30, 65536), (1 << 40, 65536)])
def test_the_average_chunk_is_the_square_root_of_the_size_from_4_to_64_kib(size: int, avg: int) -> None:
    cutter = chunking.cdc_for_size(size)
    assert (cutter.min, cutter.avg, cutter.max) == (avg // 4, avg, avg * 4)
    assert chunking.parse(cutter.name) == cutter
    if size < 64 * MiB:
        assert cutter == chunking.DEFAULT_CDC


def test_a_large_file_that_is_not_sqlite_gets_larger_chunks(tmp_path: Path) -> None:
    path = tmp_path / "archive.bin"
    path.write_bytes(b"not a database" * 10)
    assert scan.chunker_for(path, 256 * MiB).name == "fastcdc2020-4096-16384-65536-nc1"
    assert scan.chunker_for(path, 10 * MiB) == chunking.DEFAULT_CDC


def _area_bytes(firm: Home, area: str) -> int:
    return sum(p.stat().st_size for p in (Path(firm.server.root) / area).rglob("*") if p.is_file())


@pytest.mark.server
def test_a_file_grown_past_a_size_keeps_its_chunks(firm: Home, client: Home, area: str) -> None:
    """60 MiB cut at 4 KiB, grown to 66 MiB (where a new file would be cut at 8 KiB): the close
    sends about the 6 MiB added, not the whole file cut anew."""
    books = firm.data / "archive.bin"
    rng = random.Random(7)
    books.write_bytes(rng.randbytes(60 * MiB))
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    firm.run("open", "books")
    with open(books, "ab") as fh:
        fh.write(rng.randbytes(6 * MiB))
    before = _area_bytes(firm, area)
    firm.run("close", "books")
    assert _area_bytes(firm, area) - before < 12 * MiB  # 66 MiB when cut anew
    copy = client.data / "archive.bin"
    client.run("join", "books", str(copy), "--remote", "host", "--area", area)
    assert copy.read_bytes() == books.read_bytes()


def _database(path: Path, page_size: int) -> Path:
    import sqlite3

    db = sqlite3.connect(path)
    db.execute(f"PRAGMA page_size = {page_size}")
    db.execute("CREATE TABLE journal (id INTEGER PRIMARY KEY, memo TEXT)")
    db.commit()
    db.close()
    return path


def test_a_held_chunker_is_kept_only_while_it_fits_the_file(tmp_path: Path) -> None:
    other = tmp_path / "archive.bin"
    other.write_bytes(b"not a database" * 10)
    db4k = _database(tmp_path / "books.db", 4096)
    small_cdc = chunking.DEFAULT_CDC.name
    # FastCDC of any size stays FastCDC: a grown file keeps its chunks
    assert scan.kept_chunker(small_cdc, other, 300 * MiB) == small_cdc
    # a database shared while empty (0 bytes: FastCDC), written since: page blocks now
    assert scan.kept_chunker(small_cdc, db4k, db4k.stat().st_size) is None
    # page blocks of the same page size stay, even where a new file would get larger blocks
    assert scan.kept_chunker("pages-4096x1", db4k, 2 << 30) == "pages-4096x1"
    # the page size changed (VACUUM after PRAGMA page_size): cut anew
    assert scan.kept_chunker("pages-1024x4", db4k, db4k.stat().st_size) is None
    # blocks held for a file that is no database any more; a name no reader knows
    assert scan.kept_chunker("pages-4096x1", other, 100) is None
    assert scan.kept_chunker("rabin-1-2-3", other, 100) is None
    assert scan.kept_chunker(None, other, 100) is None
