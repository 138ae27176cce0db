"""Format 2 manifests (cloudshare_p2p/snapshot/manifest2.py): round trips, patches resolved
against their parent, and hostile bodies refused as AreaCorrupt, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudshare_p2p import errors
from cloudshare_p2p.snapshot import manifest2 as m2
from cloudshare_p2p.snapshot import resolve2 as r2

PACK = "a" * 64


def _cid(n: int) -> str:
    return f"{n:064x}"


def _full(sizes: list[int], path: str = "") -> m2.Patch:
    ids = tuple(_cid(i + 1) for i in range(len(sizes)))
    ops = (("n", 0, 0, ids, tuple(sizes)),) if sizes else ()
    frames = (m2.Frame(PACK, 0, 100),) if sizes else ()
    entry = m2.PatchFile(path, sum(sizes), 0o644, 1.5, "pages-4096x1", ops)
    return m2.Patch("file", None, 0, frames, (entry,))


chunk_sizes = st.lists(st.integers(1, 4096), min_size=0, max_size=40)


@given(chunk_sizes)
@settings(max_examples=60, deadline=None)
def test_full_manifest_round_trips_and_resolves(sizes: list[int]) -> None:
    patch = _full(sizes)
    assert m2.decode(m2.encode(patch)) == patch
    resolved = r2.resolve(patch, None)
    assert resolved.manifest.files[0].lengths == tuple(sizes)
    assert r2.resolve(r2.full_form(resolved), None).manifest == resolved.manifest


@given(chunk_sizes.filter(bool), st.data())
@settings(max_examples=60, deadline=None)
def test_a_patch_resolves_to_the_edited_list(sizes: list[int], data: st.DataObject) -> None:
    parent = r2.resolve(_full(sizes), None)
    ids = list(parent.manifest.files[0].chunks)
    changed = data.draw(st.sets(st.integers(0, len(ids) - 1)))
    ops = m2.OpsBuilder()
    new_ids, new_lengths, offset = [], [], 0
    for i, cid in enumerate(ids):
        if i in changed:
            new = _cid(10_000 + i)
            ops.new(0, offset, new, 7)
            new_ids.append(new)
            new_lengths.append(7)
            offset += 7
        else:
            ops.copy(i)
            new_ids.append(cid)
            new_lengths.append(sizes[i])
    ops.stored(ids[0])
    new_ids.append(ids[0])
    new_lengths.append(sizes[0])
    entry = m2.PatchFile("", sum(new_lengths), 0o600, 2.0, "pages-4096x1", ops.ops())
    patch = m2.Patch("file", "b" * 64, 1, (m2.Frame("c" * 64, 0, 50),), (entry,))
    assert m2.decode(m2.encode(patch)) == patch
    child = r2.resolve(m2.decode(m2.encode(patch)), parent)
    assert child.manifest.files[0].chunks == tuple(new_ids)
    assert child.manifest.files[0].lengths == tuple(new_lengths)
    assert child.depth == 1
    again = r2.resolve(r2.full_form(child), None)
    assert again.manifest == child.manifest and again.where == child.where


def _doc(**changes: object) -> dict:
    doc = json.loads(m2.encode(_full([10, 20])))
    doc.update(changes)
    return doc


def _file_doc(**changes: object) -> dict:
    doc = _doc()
    doc["files"][0].update(changes)
    return doc


HOSTILE = [
    b"not json", b"[]", b"\xff\xfe", b"{" * 100_000,
    json.dumps(_doc(version=1)).encode(), json.dumps(_doc(version=True)).encode(),
    json.dumps(_doc(kind="tree")).encode(), json.dumps(_doc(depth=1)).encode(),
    json.dumps(_doc(parent="x")).encode(), json.dumps(_doc(depth=65, parent="b" * 64)).encode(),
    json.dumps(_doc(frames=[[PACK, -1, 10]])).encode(),
    json.dumps(_doc(frames=[[PACK, 64 << 20, 10]])).encode(),
    json.dumps(_doc(frames=[[PACK, 0, 1 << 40]])).encode(),
    json.dumps(_doc(frames=[["A" * 64, 0, 10]])).encode(),
    json.dumps(_doc(frames=[[PACK, 0, 10.0]])).encode(),
    json.dumps(_file_doc(ops=[["x", 1]])).encode(),
    json.dumps(_file_doc(ops=[["c", 0, 1]])).encode(),  # a copy in a full manifest
    json.dumps(_file_doc(ops=[["n", 5, 0, _cid(1), [10]]])).encode(),  # frame out of range
    json.dumps(_file_doc(ops=[["n", 0, 0, _cid(1), [1 << 30]]])).encode(),  # huge length
    json.dumps(_file_doc(ops=[["n", 0, 0, _cid(1), [0]]])).encode(),  # empty chunk
    json.dumps(_file_doc(ops=[["n", 0, (1 << 20) - 5, _cid(1), [10]]])).encode(),  # past the frame
    json.dumps(_file_doc(ops=[["n", 0, 0, _cid(1) + "a", [10]]])).encode(),
    json.dumps(_file_doc(ops=[["n", 0, 0, _cid(1), [10, 20]]])).encode(),
    json.dumps(_file_doc(ops=[["d", _cid(99)]])).encode(),  # stored nowhere
    json.dumps(_file_doc(size=31)).encode(),  # lengths do not sum to the size
    json.dumps(_file_doc(size=-1)).encode(), json.dumps(_file_doc(mtime=1e300)).encode(),
    json.dumps(_file_doc(chunker="zip")).encode(), json.dumps(_file_doc(path="../x")).encode(),
    json.dumps(_file_doc(mode="rw")).encode(), json.dumps(_doc(files=[1])).encode(),
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_manifests_are_refused_cleanly(body: bytes) -> None:
    with pytest.raises(errors.CloudShareError):
        r2.resolve(m2.decode(body), None)


def test_a_copy_needs_the_same_path_in_the_parent() -> None:
    parent = r2.resolve(_full([10, 20], path=""), None)
    entry = m2.PatchFile("", 30, 0o644, 1.0, "pages-4096x1", (("c", 1, 2),))
    with pytest.raises(errors.AreaCorrupt):
        r2.resolve(m2.Patch("file", "b" * 64, 1, (), (entry,)), parent)
    with pytest.raises(errors.AreaCorrupt):  # depth must follow the parent's
        r2.resolve(m2.Patch("file", "b" * 64, 3, (), (entry,)), parent)


@given(st.binary(max_size=300))
@settings(max_examples=100, deadline=None)
def test_random_bytes_never_crash(body: bytes) -> None:
    try:
        r2.resolve(m2.decode(body), None)
    except errors.CloudShareError:
        pass


def test_a_hostile_copy_count_does_not_size_the_index() -> None:
    """A `c` op may claim 2**40 entries: refused, without a table sized for them first."""
    import tracemalloc

    parent = r2.resolve(_full([10, 20], path=""), None)
    entry = m2.PatchFile("", 30, 0o644, 1.5, "pages-4096x1", (("c", 0, 1 << 40),))
    tracemalloc.start()
    try:
        with pytest.raises(errors.AreaCorrupt):
            r2.resolve(m2.Patch("file", "b" * 64, 1, (), (entry,)), parent)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
