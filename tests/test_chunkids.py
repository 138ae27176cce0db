"""Compact chunk lists (cloudshare_p2p/snapshot/chunkids.py): they read as the tuples of hex ids
and ints they replace, and the index finds each id's first position through growth."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudshare_p2p.snapshot.chunkids import ChunkIds, IdIndex, Lengths


def _hex(n: int) -> str:
    return hashlib.sha256(n.to_bytes(4, "big")).hexdigest()


def test_chunk_ids_read_as_hex_strings() -> None:
    ids = tuple(_hex(n) for n in range(5))
    got = ChunkIds.of(ids)
    assert got == ids and ids == got and list(got) == list(ids) and len(got) == 5
    assert got[0] == ids[0] and got[-1] == ids[-1] and got[1:3] == ids[1:3] and got[::2] == ids[::2]
    assert got.key(2) == bytes.fromhex(ids[2]) and got.hex() == "".join(ids)
    assert hash(got) == hash(ChunkIds.of(ids)) and got != ids[:4] and got != ChunkIds()
    with pytest.raises(IndexError):
        got[5]
    for bad in (["xyz"], ["0" * 63], [b"0" * 64]):
        with pytest.raises(ValueError):
            ChunkIds.of(bad)  # type: ignore[arg-type]


def test_lengths_read_as_ints() -> None:
    got = Lengths([1, 4096, 1 << 20])
    assert got == (1, 4096, 1 << 20) and got == [1, 4096, 1 << 20] and sum(got) == 1 + 4096 + (1 << 20)
    assert got[1:] == (4096, 1 << 20) and got != (1, 4096) and hash(got) == hash(Lengths(got))
    with pytest.raises(OverflowError):
        Lengths([-1])


@given(st.lists(st.integers(0, 300), max_size=2000), st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_the_index_finds_first_positions(numbers: list[int], buffers: int) -> None:
    index, first, pos = IdIndex(), {}, 0
    cut = max(1, len(numbers) // buffers)
    for start in range(0, len(numbers), cut):
        part = numbers[start : start + cut]
        grow = bytearray()
        assert index.append_buffer(grow) == pos
        for n in part:
            grow += bytes.fromhex(_hex(n))
            assert index.add(pos) == first.setdefault(n, pos)
            pos += 1
        index.replace_last(bytes(grow))
    assert index.count == len(first)
    for n, at in first.items():
        assert index.find(bytes.fromhex(_hex(n))) == at
    assert index.find(bytes.fromhex(_hex(1000))) == -1
