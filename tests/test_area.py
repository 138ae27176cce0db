"""The share-area protocol against real servers: OpenSSH sshd and the embedded host.

The firm and the client are two parties with their own SSH connections and homes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudshare_p2p import crypto, errors
from cloudshare_p2p.area import Area, Grant, list_areas
from cloudshare_p2p.display import describe_lock
from cloudshare_p2p.snapshot import ChunkCache, LocalSnapshot
from statemachine import Verdict
from tests.parties import PASSWORD, create_area, new_area_name, open_area, party, session_for
from tests.race_worker import backdate

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def homes(tmp_path):
    firm, client = tmp_path / "firm", tmp_path / "client"
    firm.mkdir(), client.mkdir()
    return firm, client


@pytest.fixture
def firm_and_client(share_server, homes):
    """Two computers, each with its own connection to the same host."""
    with session_for(share_server, homes[0]) as firm, session_for(share_server, homes[1]) as client:
        yield share_server, firm, client


@pytest.fixture(params=["openssh", "embedded", "embedded_x4"])
def fencing_pair(request, homes):
    """As `firm_and_client`, plus four host processes over one folder (client on another node)."""
    server = request.getfixturevalue(f"{request.param}_server")
    ports = server.all_ports()
    with session_for(server, homes[0], ports[0]) as firm, \
            session_for(server, homes[1], ports[-1]) as client:
        yield server, firm, client


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def first_version(area: Area, who, data: Path) -> int:
    grant = area.acquire(who, lease_seconds=300)
    assert isinstance(grant, Grant)
    version = area.commit(grant, who, LocalSnapshot.scan(data, area.keys), base=area.newest_number())
    assert area.release(grant, who)
    return version


def test_create_refuses_an_existing_area_and_lists_it(firm_and_client, tmp_path):
    _, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm, dataset="Yamada Trading FY2026")
    with pytest.raises(errors.AreaExists):
        create_area(client_s, name, party("client"))
    version = first_version(area, firm, write(tmp_path / "books.db", b"ledger v1" * 1000))
    rows = {row.area: row for row in list_areas(client_s)}
    row = rows[name]
    assert row.dataset == "Yamada Trading FY2026"
    assert row.newest.version == version and row.newest.size == 9000
    assert row.newest.writer["name"] == "firm"
    assert row.lock.verdict is Verdict.FREE
    assert row.as_json()["lock"]["state"] == "free"


def test_wrong_password_is_refused_and_changes_nothing(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    name = new_area_name()
    create_area(firm_s, name, party("firm"))
    firm_s.stat(firm_s.path(name))  # an answered request: the temp removal not waited for is done
    before = sorted(p.relative_to(server.root) for p in (server.root / name).rglob("*"))
    with pytest.raises(errors.WrongPassword):
        Area(client_s, name).unlock_keys("not the password")
    after = sorted(p.relative_to(server.root) for p in (server.root / name).rglob("*"))
    assert before == after


def test_lock_shows_holder_and_refuses_others(firm_and_client):
    _, firm_s, client_s = firm_and_client
    name, firm, client = new_area_name(), party("firm"), party("client")
    create_area(firm_s, name, firm)
    grant = Area(client_s, name).acquire(client, lease_seconds=120, note="closing the month")
    assert isinstance(grant, Grant) and grant.until - grant.since == 120
    refused = Area(firm_s, name).acquire(firm, lease_seconds=120)
    assert not isinstance(refused, Grant)
    assert refused.verdict is Verdict.HELD_BY_OTHER
    assert refused.holder["name"] == "client" and refused.note == "closing the month"
    assert refused.status.until == grant.until and refused.status.since == grant.since
    assert "locked by client since" in describe_lock(refused)
    assert Area(client_s, name).release(grant, client)
    assert isinstance(Area(firm_s, name).acquire(firm, lease_seconds=120), Grant)


def test_renewal_claims_a_newer_generation(firm_and_client):
    _, firm_s, _ = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    grant = area.acquire(firm, lease_seconds=60)
    first = grant.lease.generation
    area.renew(grant, firm)
    assert grant.lease.generation == first + 1
    assert area.lock_info(grant.session).verdict is Verdict.HELD_BY_ME


def test_paused_holder_is_fenced_and_the_new_holders_data_survives(fencing_pair, tmp_path):
    server, firm_s, client_s = fencing_pair
    name, firm, client = new_area_name(), party("firm"), party("client")
    firm_area = create_area(firm_s, name, firm)
    first_version(firm_area, firm, write(tmp_path / "f" / "books.db", b"v1" * 5000))
    client_area = open_area(client_s, name)
    paused = client_area.acquire(client, lease_seconds=60)
    client_work = write(tmp_path / "c" / "books.db", b"client's late work" * 100)
    backdate(server, name, paused.lease.generation)  # the client's lease ran out on the server
    fresh = firm_area.acquire(firm, lease_seconds=60)
    assert isinstance(fresh, Grant) and fresh.lease.generation > paused.lease.generation
    firm_data = write(tmp_path / "f" / "books.db", b"firm's newer data" * 100)
    firm_version = firm_area.commit(fresh, firm, LocalSnapshot.scan(firm_data, firm_area.keys),
                                    base=firm_area.newest_number())
    with pytest.raises(errors.Fenced):
        client_area.commit(paused, client, LocalSnapshot.scan(client_work, client_area.keys),
                           base=client_area.newest_number())
    assert client_work.read_bytes() == b"client's late work" * 100  # kept locally
    assert client_area.newest().version == firm_version
    out = tmp_path / "check.db"
    client_area.download(client_area.newest(), out)
    assert out.read_bytes() == b"firm's newer data" * 100


def test_holder_paused_between_check_and_write_is_fenced(fencing_pair, tmp_path):
    """The pause falls after the holder checked its lease, before its log entry."""
    server, firm_s, client_s = fencing_pair
    name, firm, client = new_area_name(), party("firm"), party("client")
    firm_area = create_area(firm_s, name, firm)
    client_area = open_area(client_s, name)
    paused = client_area.acquire(client, lease_seconds=60)
    upload = client_area.upload_snapshot
    taken = {}

    def upload_then_pause(*args, **kwargs):
        manifest = upload(*args, **kwargs)
        backdate(server, name, client_area.observe_lock()[0].generation)
        taken["grant"] = firm_area.acquire(firm, lease_seconds=60)
        return manifest

    client_area.upload_snapshot = upload_then_pause
    with pytest.raises(errors.Fenced):
        client_area.commit(paused, client, LocalSnapshot.scan(
            write(tmp_path / "c.db", b"late" * 10), client_area.keys), base=client_area.newest_number())
    assert isinstance(taken["grant"], Grant)
    assert client_area.newest() is None


def test_expired_but_untaken_lease_is_renewed_at_commit(firm_and_client, tmp_path):
    server, firm_s, _ = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    grant = area.acquire(firm, lease_seconds=60)
    backdate(server, name, grant.lease.generation)
    snap = LocalSnapshot.scan(write(tmp_path / "b.db", b"x" * 10), area.keys)
    version = area.commit(grant, firm, snap, base=area.newest_number())
    assert area.newest().version == version and grant.lease.generation > 1


@pytest.mark.parametrize("step", ["chunks", "manifest", "log"])
def test_commit_interrupted_at_each_step(firm_and_client, tmp_path, step):
    server, firm_s, _ = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    v1 = first_version(area, firm, write(tmp_path / "v1.db", os.urandom(3 << 20)))
    new_data = write(tmp_path / "v2.db", os.urandom(4 << 20))
    env = dict(os.environ, CHILD_AREA=name, CHILD_DATA=str(new_data))
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(server).items()}
    child = subprocess.run(
        [sys.executable, "-m", "tests.commit_child", step, json.dumps(fields)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == 9, child.stderr
    dead_gen = int(child.stdout.split()[0])
    newest = open_area(firm_s, name).newest()
    expected = tmp_path / ("v2.db" if step == "log" else "v1.db")
    assert newest.version == (v1 if step != "log" else newest.version) and newest.version >= v1
    out = tmp_path / "seen.db"
    area.download(newest, out)
    assert out.read_bytes() == expected.read_bytes()  # complete, never a mix
    # The next holder proceeds once the dead holder's lease has run out.
    assert not isinstance(area.acquire(firm, lease_seconds=60), Grant)
    backdate(server, name, dead_gen)
    grant = area.acquire(firm, lease_seconds=60)
    assert isinstance(grant, Grant)
    v3 = area.commit(grant, firm, LocalSnapshot.scan(write(tmp_path / "v3.db", b"v3"), area.keys),
                     base=area.newest_number())
    area.download(area.newest(), out)
    assert area.newest().version == v3 and out.read_bytes() == b"v3"


def test_corrupted_chunk_is_refused_and_local_copy_untouched(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    first_version(area, firm, write(tmp_path / "b.db", os.urandom(2 << 20)))
    chunk = next(p for p in (server.root / name / "packs").rglob("*") if p.is_file())  # format 2
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    local = write(tmp_path / "data" / "b.db", b"client's copy")
    reader = open_area(client_s, name)
    with pytest.raises(errors.AreaCorrupt):
        reader.download(reader.newest(), local)
    assert local.read_bytes() == b"client's copy"
    assert sorted(p.name for p in local.parent.iterdir()) == ["b.db"]


def test_corrupted_manifest_is_refused(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    first_version(area, firm, write(tmp_path / "b.db", b"data" * 100))
    manifest = next((server.root / name / "manifests").iterdir())
    sealed = manifest.read_bytes()
    manifest.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 0xFF]))  # a changed byte, always
    local = write(tmp_path / "client.db", b"mine")
    reader = open_area(client_s, name)
    with pytest.raises(errors.AreaCorrupt):
        reader.download(reader.newest(), local)
    assert local.read_bytes() == b"mine"


def test_manifest_escaping_the_data_set_is_refused(firm_and_client, tmp_path):
    """A member with the key publishes a manifest naming ../../x: nothing lands outside."""
    server, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    grant = area.acquire(firm, lease_seconds=60)
    payload = b"owned"
    cid = crypto.chunk_id(area.keys, payload)
    firm_s.mkdir(area.p("chunks", cid[:2]))
    area._publish(area._chunk_path(cid), crypto.seal(area.keys, crypto.KIND_CHUNK, cid, payload))
    body = json.dumps({"version": 1, "kind": "folder", "chunker": "fixed-1MiB", "files": [
        {"path": "../../x", "size": 5, "mode": 0o644, "mtime": 0, "chunks": [cid]}]}).encode()
    mid = crypto.chunk_id(area.keys, body)
    area._publish(area.p("manifests", mid), crypto.seal(area.keys, crypto.KIND_MANIFEST, mid, body))
    area._append({"kind": "commit", "gen": grant.lease.generation, "session": grant.session,
                  "writer": firm.as_dict(), "manifest": mid, "size": 5}, grant)
    target = tmp_path / "deep" / "down" / "books"
    reader = open_area(client_s, name)
    with pytest.raises(errors.UnsafePath):
        reader.download(reader.newest(), target)
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()
    assert not target.exists()


def test_round_trip_of_a_64_mb_file(firm_and_client, tmp_path):
    _, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    data = write(tmp_path / "big.db", os.urandom(64 << 20))
    first_version(area, firm, data)
    out = tmp_path / "client" / "big.db"
    reader = open_area(client_s, name)
    reader.download(reader.newest(), out)
    assert out.read_bytes() == data.read_bytes()


def test_round_trip_of_a_folder_with_nested_files(firm_and_client, tmp_path):
    _, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    src = tmp_path / "ledger"
    files = {"main.db": os.urandom(1_500_000), "2026/01/journal.csv": b"date,amount\n" * 999,
             "2026/02/empty.txt": b"", "attachments/scan 1.pdf": os.urandom(70_000)}
    for rel, content in files.items():
        write(src / rel, content)
    first_version(area, firm, src)
    out = tmp_path / "client" / "ledger"
    reader = open_area(client_s, name)
    reader.download(reader.newest(), out)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_unchanged_commit_uploads_nothing_and_small_edit_only_its_chunk(firm_and_client, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("CLOUDSHARE_WRITE_FORMAT", "1")  # format 1: fixed 1 MiB chunks
    _, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    data = write(tmp_path / "books.db", os.urandom(8 << 20))
    first_version(area, firm, data)
    assert area.stats.chunks_uploaded == 8
    area.stats = type(area.stats)()
    first_version(area, firm, data)
    assert (area.stats.chunks_uploaded, area.stats.bytes_uploaded) == (0, 0)
    with data.open("r+b") as f:
        f.seek(5 * (1 << 20) + 123)
        f.write(b"EDIT")
    area.stats = type(area.stats)()
    first_version(area, firm, data)
    assert area.stats.chunks_uploaded == 1
    assert (1 << 20) < area.stats.bytes_uploaded < (1 << 20) + (64 << 10)
    reader = open_area(client_s, name)
    cache = ChunkCache(tmp_path / "cache", reader.keys)
    out = tmp_path / "client.db"
    reader.download(reader.versions()[0], out, cache)
    assert reader.stats.chunks_downloaded == 8
    reader.download(reader.newest(), out, cache)
    assert reader.stats.chunks_downloaded == 9  # only the edited chunk came over the wire
    assert out.read_bytes() == data.read_bytes()


def test_history_lists_every_version(firm_and_client, tmp_path):
    _, firm_s, client_s = firm_and_client
    name, firm, client = new_area_name(), party("firm"), party("client")
    area = create_area(firm_s, name, firm)
    first_version(area, firm, write(tmp_path / "a.db", b"1"))
    first_version(open_area(client_s, name), client, write(tmp_path / "b.db", b"22"))
    history = open_area(firm_s, name).versions()
    assert [(v.writer["name"], v.size) for v in history] == [("firm", 1), ("client", 2)]
    assert history[0].version < history[1].version


def test_delete_for_everyone_and_area_gone(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    first_version(area, firm, write(tmp_path / "a.db", b"1"))
    client_view = open_area(client_s, name)
    grant = area.acquire(firm, lease_seconds=60)
    area.delete(firm, grant)
    assert not (server.root / name).exists()
    with pytest.raises(errors.AreaGone, match="deleted"):
        Area(client_s, name).load()
    with pytest.raises(errors.AreaGone):
        client_view.acquire(party("client"), lease_seconds=60)
    assert name not in {row.area for row in list_areas(client_s)}


def test_emptied_area_is_gone(firm_and_client):
    server, firm_s, client_s = firm_and_client
    name = new_area_name()
    create_area(firm_s, name, party("firm"))
    (server.root / name / "config").unlink()
    with pytest.raises(errors.AreaGone, match="emptied"):
        Area(client_s, name).load()


def test_password_checked_before_delete_is_possible(firm_and_client):
    _, firm_s, _ = firm_and_client
    name = new_area_name()
    create_area(firm_s, name, party("firm"))
    with pytest.raises(errors.WrongPassword):
        Area(firm_s, name).unlock_keys(PASSWORD + "x")


def test_sweep_removes_only_day_old_temp_files(firm_and_client):
    server, firm_s, _ = firm_and_client
    name = new_area_name()
    area = create_area(firm_s, name, party("firm"))
    tmp = server.root / name / "tmp"
    old, fresh = tmp / "abandoned.tmp", tmp / "in-flight.tmp"
    old.write_bytes(b"x"), fresh.write_bytes(b"y")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert area.sweep_tmp() == 1
    assert not old.exists() and fresh.exists()


def test_log_cache_keeps_each_command_cheap_and_never_hides_new_entries(firm_and_client, tmp_path):
    _, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    for i in range(12):
        first_version(area, firm, write(tmp_path / "b.db", f"v{i}".encode()))
    reader = Area(client_s, name)
    reader.use_cache(tmp_path / "cache")
    reader.load()
    assert reader.newest().version == 12  # a fresh reader reads the whole log once
    reads = []
    later = Area(client_s, name)
    later.use_cache(tmp_path / "cache")
    original = client_s.read_many
    client_s.read_many = lambda paths, *a, **k: reads.append(paths) or original(paths, *a, **k)
    try:
        later.load()
        assert later.newest().version == 12
        log_reads = [p for p in reads if any("/log/" in path for path in p)]
        assert len(log_reads) == 1  # one batch: the slots after the head it knows
        first_version(area, firm, write(tmp_path / "b.db", b"v13"))  # someone else appends
        assert later.newest().version == 13
    finally:
        client_s.read_many = original


def test_format_2_unchanged_commit_uploads_nothing_and_small_edit_only_its_chunks(firm_and_client,
                                                                                  tmp_path):
    """Format 2's content-defined chunks: an unchanged commit costs a small manifest, an edit its chunk."""
    _, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    data = write(tmp_path / "books.db", random.Random(11).randbytes(8 << 20))  # seeded: same cuts each run
    first_version(area, firm, data)
    chunks = len(area.read_manifest(area.newest()).files[0].chunks)
    assert area.stats.chunks_uploaded == chunks > 8
    area.stats = type(area.stats)()
    first_version(area, firm, data)
    assert area.stats.chunks_uploaded == 0 and area.stats.bytes_uploaded < 1024  # a manifest: its parent
    with data.open("r+b") as f:
        f.seek(5 * (1 << 20) + 123)
        f.write(b"EDIT")
    area.stats = type(area.stats)()
    first_version(area, firm, data)
    assert area.stats.chunks_uploaded == 1
    assert area.stats.bytes_uploaded < 64 << 10
    reader = open_area(client_s, name)
    out = tmp_path / "client.db"
    reader.download(reader.versions()[0], out)
    assert reader.stats.chunks_downloaded == chunks
    reader.download(reader.newest(), out)
    assert reader.stats.chunks_downloaded == chunks + 1  # only the edited chunk came over the wire
    assert out.read_bytes() == data.read_bytes()
