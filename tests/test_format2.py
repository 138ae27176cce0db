"""Format 2 in one process (MemoryFiles host): packs, patches, upgrade, local-copy reuse,
objects_needed and hostile manifests refused cleanly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cloudshare_p2p import crypto, errors
from cloudshare_p2p.area import Area
from cloudshare_p2p.snapshot import PER_FILE
from cloudshare_p2p.snapshot import manifest2 as m2
from cloudshare_p2p.snapshot import resolve2 as r2
from cloudshare_p2p.transport import MemoryFiles
from tests.format2_util import close, edit_ledger, make_ledger, memory_area, reading_area
from tests.parties import PASSWORD


def test_versions_round_trip_and_edits_send_only_changed_pages(tmp_path: Path) -> None:
    folder, area = memory_area()
    area.use_cache(tmp_path / "cache-firm")
    ledger = make_ledger(tmp_path / "firm" / "books.db", 20_000)
    copies = [ledger.read_bytes()]
    assert close(area, ledger, 0) == 1
    assert json.loads(folder.file("books/config"))["version"] == 2
    first = area.stats.bytes_uploaded
    for day in range(3):
        edit_ledger(ledger, 50, 997, f"d{day}")
        copies.append(ledger.read_bytes())
        before = area.stats.bytes_uploaded
        assert close(area, ledger, day + 1) == day + 2
        assert area.stats.bytes_uploaded - before < first / 4
    reader = reading_area(folder, cache=tmp_path / "cache-client")
    for version, want in zip(reader.versions(), copies, strict=True):
        target = tmp_path / "client" / f"v{version.version}.db"
        target.parent.mkdir(exist_ok=True)
        got = reader.download(version, target)
        assert got.chunker == PER_FILE
        assert target.read_bytes() == want
    assert any(name.startswith("books/packs/") for name in folder.nodes)
    assert not any(name.startswith("books/chunks/") and name.count("/") > 1 for name in folder.nodes)


def test_open_reuses_the_local_copy(tmp_path: Path) -> None:
    folder, area = memory_area()
    ledger = make_ledger(tmp_path / "firm" / "books.db", 20_000)
    close(area, ledger, 0)
    reader = reading_area(folder, cache=tmp_path / "cache-client")
    target = tmp_path / "client" / "books.db"
    target.parent.mkdir()
    reader.download(reader.versions()[0], target)
    full = reader.stats.bytes_downloaded
    edit_ledger(ledger, 30, 500, "x")
    close(area, ledger, 1)
    reader = reading_area(folder, cache=tmp_path / "cache-client")
    reader.download(reader.versions()[-1], target)
    assert target.read_bytes() == ledger.read_bytes()
    assert reader.stats.bytes_downloaded < full / 4


def test_a_folder_data_set_with_cdc_files(tmp_path: Path) -> None:
    folder, area = memory_area()
    data = tmp_path / "firm" / "set"
    (data / "sub").mkdir(parents=True)
    blob = bytes(range(256)) * 4000 + b"tail"
    (data / "sub" / "a.bin").write_bytes(blob)
    (data / "b.txt").write_bytes(b"hello")
    (data / "empty").write_bytes(b"")
    close(area, data, 0)
    (data / "sub" / "a.bin").write_bytes(b"inserted" + blob)
    close(area, data, 1)
    reader = reading_area(folder)
    target = tmp_path / "client" / "set"
    target.parent.mkdir()
    reader.download(reader.versions()[-1], target)
    for rel in ("sub/a.bin", "b.txt", "empty"):
        assert (target / rel).read_bytes() == (data / rel).read_bytes()


def test_objects_needed(tmp_path: Path) -> None:
    folder, area = memory_area()
    ledger = make_ledger(tmp_path / "books.db", 20_000)
    close(area, ledger, 0)
    edit_ledger(ledger, 10, 997, "y")
    close(area, ledger, 1)
    v1, v2 = area.versions()
    assert m2.decode(area._manifest_body(v2.manifest, 2)).parent == v1.manifest  # a patch
    need1, need2 = area.objects_needed(v1), area.objects_needed(v2)
    assert f"manifests/{v1.manifest}" in need1 and f"manifests/{v1.manifest}" in need2
    assert all(folder.nodes.get(f"books/{p}") is not None for p in need1 | need2)
    packs = {k[len("books/"):] for k in folder.nodes if k.startswith("books/packs/") and k.count("/") == 3}
    assert packs == {p for p in need1 | need2 if p.startswith("packs/")}


def test_a_host_without_atomic_replace_stays_format_1(tmp_path: Path, monkeypatch) -> None:
    folder, area = memory_area()
    monkeypatch.setattr(MemoryFiles, "replace", lambda self, src, dst: False)
    ledger = make_ledger(tmp_path / "books.db", 2000)
    close(area, ledger, 0)
    assert json.loads(folder.file("books/config"))["version"] == 1
    assert area.read_manifest(area.versions()[0]).chunker != PER_FILE
    target = tmp_path / "copy.db"
    reading_area(folder).download(area.versions()[0], target)
    assert target.read_bytes() == ledger.read_bytes()


def _publish_manifest(area: Area, body: bytes) -> str:
    keys = area.require_keys()
    mid = crypto.chunk_id(keys, body)
    area.session.put_object(area._tmp(), area.p("manifests", mid),
                            crypto.seal(keys, crypto.KIND_MANIFEST, mid, body))
    return mid


@pytest.mark.parametrize("damage", ["frame-out-of-range", "huge-length", "bad-op", "missing-parent",
                                    "frame-past-pack", "not-json"])
def test_a_hostile_manifest_is_refused_cleanly(tmp_path: Path, damage: str) -> None:
    folder, area = memory_area()
    ledger = make_ledger(tmp_path / "books.db", 2000)
    close(area, ledger, 0)
    version = area.versions()[0]
    doc = json.loads(m2.encode(r2.full_form(area.resolve_manifest(version.manifest, 1)[0])))
    ops = doc["files"][0]["ops"]
    if damage == "frame-out-of-range":
        ops[0][1] = 99
    elif damage == "huge-length":
        ops[0][4][0] = 1 << 40
    elif damage == "bad-op":
        ops.append(["z"])
    elif damage == "missing-parent":
        doc.update(parent="f" * 64, depth=1)
    elif damage == "frame-past-pack":
        doc["frames"][0][1] = (64 << 20) - 10
    body = b"{nope" if damage == "not-json" else json.dumps(doc).encode()
    bad = version.__class__(**{**version.__dict__, "manifest": _publish_manifest(area, body), "version": 9})
    reader = reading_area(folder, cache=tmp_path / "cache")
    with pytest.raises(errors.CloudShareError):
        reader.download(bad, tmp_path / "target.db")
    assert not (tmp_path / "target.db").exists()


def test_a_damaged_frame_is_refused(tmp_path: Path) -> None:
    folder, area = memory_area()
    ledger = make_ledger(tmp_path / "books.db", 2000)
    close(area, ledger, 0)
    pack = next(k for k in folder.nodes if k.startswith("books/packs/") and k.count("/") == 3)
    data = bytearray(folder.file(pack))
    data[100] ^= 1
    folder.nodes[pack].data = bytes(data)
    with pytest.raises(errors.AreaCorrupt):
        reading_area(folder).download(area.versions()[0], tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


def test_patch_chains_through_the_cache_keep_their_depth(tmp_path: Path) -> None:
    folder, area = memory_area()
    area.use_cache(tmp_path / "cache-firm")
    ledger = make_ledger(tmp_path / "books.db", 20_000)
    copies = [ledger.read_bytes()]
    close(area, ledger, 0)
    for day in range(5):
        edit_ledger(ledger, 3, 0, f"d{day}")
        copies.append(ledger.read_bytes())
        writer = Area(MemoryFiles(folder), "books")  # a new command: the base comes from the cache
        writer.unlock_keys(PASSWORD)
        writer.use_cache(tmp_path / "cache-firm")
        close(writer, ledger, day + 1)
    reader = reading_area(folder)  # no cache: every chain fetched
    versions = reader.versions()
    depths = [m2.decode(reader._manifest_body(v.manifest, v.version)).depth for v in versions]
    assert depths == list(range(6))
    for version, want in zip(versions, copies, strict=True):
        target = tmp_path / f"v{version.version}.db"
        reader.download(version, target)
        assert target.read_bytes() == want


def test_check_reads_format_2_packs(tmp_path: Path) -> None:
    from cloudshare_p2p.check import check_area

    folder, area = memory_area()
    ledger = make_ledger(tmp_path / "books.db", 5000)
    close(area, ledger, 0)
    healthy = check_area(reading_area(folder), read_data=True)
    assert not healthy.damaged and healthy.bytes_read > 0, healthy.problems
    pack = next(k for k in folder.nodes if k.startswith("books/packs/") and k.count("/") == 3)
    data = bytearray(folder.file(pack))
    data[-5] ^= 1
    folder.nodes[pack].data = bytes(data)
    assert not check_area(reading_area(folder)).damaged  # sizes only: the damage is inside
    assert check_area(reading_area(folder), read_data=True).damaged_versions == [1]
    del folder.nodes[pack]
    assert check_area(reading_area(folder)).damaged_versions == [1]


def test_many_packs_one_commit(tmp_path: Path, monkeypatch) -> None:
    from cloudshare_p2p.area import packs

    monkeypatch.setattr(packs, "PACK_TARGET", 64 << 10)  # packs of a few frames each
    folder, area = memory_area()
    data = tmp_path / "blob.bin"
    data.write_bytes(os.urandom(3 << 20))
    close(area, data, 0)
    assert sum(1 for k in folder.nodes if k.startswith("books/packs/") and k.count("/") == 3) >= 3
    target = tmp_path / "copy.bin"
    reading_area(folder).download(area.versions()[0], target)
    assert target.read_bytes() == data.read_bytes()
