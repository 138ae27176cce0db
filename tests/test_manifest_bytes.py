"""Manifests are the same bytes for the same input, whatever the in-memory form: fixed files and
a fixed key give fixed format-1 JSON, format-2 full manifests and patches (digests recorded
from the code before chunk lists became compact columns)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from cloudshare_p2p import crypto
from cloudshare_p2p.snapshot import FileEntry, LocalSnapshot, Manifest
from cloudshare_p2p.snapshot import manifest2 as m2
from cloudshare_p2p.snapshot import resolve2 as r2
from tests.format2_util import close, memory_area

KEYS = crypto.keys_from_data_key(bytes(range(32)))
PACKS = [hashlib.sha256(bytes([n])).hexdigest() for n in range(3)]


def _files(root: Path) -> tuple[Path, Path]:
    """A folder with a page-cut SQLite-looking file and a CDC-cut file, repeats included."""
    r = random.Random(11)
    root.mkdir()
    page = bytearray(r.randbytes(4096))
    page[:16], page[16:18], page[21:24] = b"SQLite format 3\x00", (4096).to_bytes(2, "big"), b"\x40\x20\x20"
    zero = bytes(4096)
    db = root / "books.db"
    db.write_bytes(bytes(page) + b"".join(r.randbytes(4096) if i % 5 else zero for i in range(60)))
    other = root / "notes" / "memo.bin"
    other.parent.mkdir()
    block = r.randbytes(40_000)
    other.write_bytes(block + r.randbytes(90_000) + block)
    _stamp(db, other)
    return db, other


def _stamp(*paths: Path) -> None:
    for p in paths:
        os.utime(p, (1_700_000_000.5, 1_700_000_000.5))


def _full_patch(snap: LocalSnapshot) -> m2.Patch:
    """Every chunk's first place as the writer numbers them: 7 chunks a frame, 3 frames a pack."""
    seen: set[str] = set()
    files, count = [], 0
    for entry in snap.manifest.files:
        ops = m2.OpsBuilder()
        for cid, length in zip(entry.chunks, entry.lengths, strict=True):
            if cid in seen:
                ops.stored(cid)
                continue
            seen.add(cid)
            frame, slot = divmod(count, 7)
            ops.new(frame, slot * 5000, cid, length)
            count += 1
        files.append(m2.PatchFile(entry.path, entry.size, entry.mode, entry.mtime, entry.chunker, ops.ops()))
    frames = tuple(m2.Frame(PACKS[n // 3 % 3], (n % 3) * 70_000, 70_000) for n in range(-(-count // 7)))
    return m2.Patch(snap.manifest.kind, None, 0, frames, tuple(files))


def _child_patch(snap: LocalSnapshot, parent: r2.Resolved) -> m2.Patch:
    """`snap` on top of `parent`, ops chosen as a commit chooses them."""
    lists, placed, files, count = parent.lists(), set(), [], 0
    for entry in snap.manifest.files:
        ops, before = m2.OpsBuilder(), lists.get(entry.path, ())
        for i, (cid, length) in enumerate(zip(entry.chunks, entry.lengths, strict=True)):
            if i < len(before) and before[i] == cid:
                ops.copy(i)
            elif cid in parent.where or cid in placed:
                ops.stored(cid)
            else:
                ops.new(0, count * 10, cid, length)
                placed.add(cid)
                count += 1
        files.append(m2.PatchFile(entry.path, entry.size, entry.mode, entry.mtime, entry.chunker, ops.ops()))
    return m2.Patch(snap.manifest.kind, "f" * 64, 1, (m2.Frame(PACKS[2], 0, 9000),), tuple(files))


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def test_manifests_are_the_same_bytes_as_before(tmp_path: Path) -> None:
    db, other = _files(tmp_path / "set")
    one = LocalSnapshot.scan(tmp_path / "set", KEYS, format=1)
    two = LocalSnapshot.scan(tmp_path / "set", KEYS, format=2)
    full = _full_patch(two)
    parent = r2.resolve(m2.decode(m2.encode(full)), None)
    with open(db, "r+b") as fh:  # an edit in place, and a page appended
        fh.seek(4096 * 7)
        fh.write(b"x" * 100)
        fh.seek(0, 2)
        fh.write(bytes(4096))
    other.write_bytes(b"inserted" + other.read_bytes())
    _stamp(db, other)
    edited = LocalSnapshot.scan(tmp_path / "set", KEYS, like=two.manifest)
    child = _child_patch(edited, parent)
    resolved = r2.resolve(m2.decode(m2.encode(child)), parent)
    got = {
        "format 1 json": _digest(one.manifest.to_json_bytes()),
        "format 2 as json": _digest(two.manifest.to_json_bytes()),
        "full": _digest(m2.encode(full)),
        "full again": _digest(m2.encode(r2.full_form(parent))),
        "patch": _digest(m2.encode(child)),
        "patch resolved, full": _digest(m2.encode(r2.full_form(resolved))),
    }
    assert got == EXPECTED


EXPECTED = {  # from the code before compact chunk lists (and unchanged since)
    "format 1 json": "e4dda5644f1ff9ac8cd4ef85886c8c8377a3ebdc67491119e1d1cb2de029b500",
    "format 2 as json": "f310450a1c536fe2735acd071f74c9134fcffc40246e7e0f403bfa2f3f3eb246",
    "full": "f7aec519bc5ac3caa2236ccdf8e115063517460669f086bc4384d887a9013dfb",
    "full again": "9331ff3ac14358960d9532ecffc48beabdd371c8061ed825c921bfda9d888525",
    "patch": "c6debcbd905feef569557409d1f9d8604001a19d4541564757d64455b2583c2f",
    "patch resolved, full": "c79258340082fe60840cc5686a6e298303a903b19ebad4b194ce02da047046dd",
}


def _reference_ops(snap: LocalSnapshot, parent: r2.Resolved | None) -> list[tuple[m2.Op, ...]]:
    """The ops a commit wrote before compact chunk lists: a dict and a set of hex ids, new
    chunks numbered as the pack writer frames them (a new frame when 1 MiB would overflow)."""
    lists = parent.lists() if parent is not None else {}
    known = dict(parent.where) if parent is not None else {}
    placed: set[str] = set()
    frame = size = 0
    out = []
    for entry in snap.manifest.files:
        ops, before = m2.OpsBuilder(), tuple(lists.get(entry.path, ()))
        for i, (cid, length) in enumerate(zip(entry.chunks, entry.lengths, strict=True)):
            if i < len(before) and before[i] == cid:
                ops.copy(i)
            elif cid in known or cid in placed:
                ops.stored(cid)
            else:
                if size + length > m2.MAX_CHUNK:
                    frame, size = frame + 1, 0
                ops.new(frame, size, cid, length)
                size += length
                placed.add(cid)
        out.append(ops.ops())
    return out


def test_a_commit_writes_the_ops_it_wrote_before(tmp_path: Path) -> None:
    """The upload finds chunks by place and an index of raw ids now: same ops as the old way."""
    db, other = _files(tmp_path / "set")
    _folder, area = memory_area()
    keys = area.require_keys()
    first = LocalSnapshot.scan(tmp_path / "set", keys, format=2)
    close(area, tmp_path / "set", 0)
    v1 = area.newest()
    assert v1 is not None
    full = m2.decode(area._manifest_body(v1.manifest, 1))
    assert [f.ops for f in full.files] == _reference_ops(first, None)
    with open(db, "r+b") as fh:
        fh.seek(4096 * 9)
        fh.write(b"y" * 4096 * 3)
    other.write_bytes(other.read_bytes()[:50_000] + b"more" + other.read_bytes())
    second = LocalSnapshot.scan(tmp_path / "set", keys, like=first.manifest)
    parent, _chain = area.resolve_manifest(v1.manifest, 1)
    close(area, tmp_path / "set", 1)
    v2 = area.newest()
    assert v2 is not None and v2.version == 2
    patch = m2.decode(area._manifest_body(v2.manifest, 2))
    assert patch.parent == v1.manifest
    assert [f.ops for f in patch.files] == _reference_ops(second, parent)


@pytest.mark.parametrize("path", ["", "a/b.db", '日本語/帳簿 "x".db', "t\\u\x7f\x01"])
@pytest.mark.parametrize("count", [0, 1, 4097])
def test_json_parts_are_the_canonical_json(path: str, count: int) -> None:
    """The streamed format-1 JSON (hashed for a pending copy's name) equals json.dumps's."""
    ids = tuple(hashlib.sha256(n.to_bytes(4, "big")).hexdigest() for n in range(count))
    entry = FileEntry(path, count, 0o640, 1795908990.6385539, ids)
    for manifest in (Manifest("file", (entry,)), Manifest("folder", (entry, entry), "per-file")):
        doc = {"version": 1, "kind": manifest.kind, "chunker": manifest.chunker,
               "files": [f.to_dict() for f in manifest.files]}
        want = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert manifest.to_json_bytes() == want and max(map(len, manifest.json_parts())) < 300_000
