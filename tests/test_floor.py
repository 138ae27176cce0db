"""Compaction below the floor against both real servers (OpenSSH sshd and the embedded host).

The same flows as tests/test_floor_inprocess.py over real SFTP: numbers and data survive
compaction (also for a reader with a cache from before it), `check` accepts the result and
reports a malformed floor, a claimant paused across a compaction gives up, a late writer's
re-created slot is void, and a version-1 area is never compacted. Ages are made by
backdating the config on the server's disk, never by sleeping.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.area import Area, Grant, prune
from cloudshare_p2p.area import floor as area_floor
from cloudshare_p2p.check import DAMAGE, check_area
from cloudshare_p2p.snapshot import LocalSnapshot
from cloudshare_p2p.snapshot.scan import WRITE_FORMAT_ENV
from statemachine import Verdict
from tests.parties import create_area, new_area_name, open_area, party, session_for

pytestmark = pytest.mark.server
DAY = 86400


@pytest.fixture
def firm_and_client(share_server, tmp_path):
    (tmp_path / "firm").mkdir(), (tmp_path / "client").mkdir()
    with session_for(share_server, tmp_path / "firm") as firm, \
            session_for(share_server, tmp_path / "client") as client:
        yield share_server, firm, client


def locked(area: Area, who, lease: int = 300) -> Grant:
    grant = area.acquire(who, lease_seconds=lease)
    assert isinstance(grant, Grant), grant
    return grant


def commit(area: Area, who, path: Path, data: bytes) -> int:
    path.write_bytes(data)
    grant = locked(area, who)
    snap = LocalSnapshot.scan(path, area.require_keys())
    version = area.commit(grant, who, snap, base=area.newest_number())
    assert area.release(grant, who)
    return version


def format_2_area(server, session, tmp_path: Path, count: int) -> tuple[Area, str, object]:
    """A new area with versions 1…count (the first upgrades it), its upgrade backdated a day."""
    name, firm = new_area_name(), party("firm")
    area = create_area(session, name, firm)
    for i in range(1, count + 1):
        assert commit(area, firm, tmp_path / "books.db", f"ledger {i} ".encode() * 300) == i
    assert area.load()["version"] == 2
    then = time.time() - 2 * DAY
    os.utime(server.root / name / "config", (then, then))
    return area, name, firm


def compact(area: Area, firm) -> area_floor.CompactReport:
    grant = locked(area, firm)
    area.renew(grant, firm)  # the claim is now below the holder's generation: compacted too
    prune(area, grant, firm, compact_every=1)
    assert area.release(grant, firm)
    done = area_floor.refresh(area)
    return area_floor.CompactReport(done.number, done.seq, done.lock, 0, 0)


def on_disk(server, name: str, folder: str) -> list[int]:
    path = server.root / name / folder
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []


def shown(area: Area) -> list[tuple[int, str]]:
    pruned = area.pruned_versions()
    return [(v.version, v.manifest) for v in area.versions() if v.version not in pruned]


def test_compaction_keeps_numbers_data_and_a_cached_reader_right(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, name, firm = format_2_area(server, firm_s, tmp_path, 4)
    cached = open_area(client_s, name)
    cached.use_cache(tmp_path / "client" / "cache")
    before = shown(cached)  # the client's cache holds the whole log from before the compaction
    done = compact(area, firm)
    assert on_disk(server, name, "log")[0] == done.seq and on_disk(server, name, "lock")[0] == done.lock
    assert commit(area, firm, tmp_path / "books.db", b"ledger 5") == 5
    later = open_area(client_s, name)
    later.use_cache(tmp_path / "client" / "cache")  # a later command: its cache is behind the floor
    assert shown(later) == [*before, (5, later.versions()[-1].manifest)]
    later.download(later.versions()[-1], tmp_path / "received.db")
    assert (tmp_path / "received.db").read_bytes() == b"ledger 5"
    report = check_area(open_area(client_s, name))
    assert not report.problems and report.versions == [1, 2, 3, 4, 5]
    (server.root / name / "floor" / f"{done.floor + 1:020d}").write_bytes(b'{"v": 1, "kind": "floor"}')
    report = check_area(open_area(client_s, name))
    assert [p.severity for p in report.problems] == [DAMAGE]
    with pytest.raises(errors.AreaCorrupt, match="floor"):
        open_area(client_s, name).versions()


def test_a_claimant_paused_across_a_compaction_gives_up(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, name, firm = format_2_area(server, firm_s, tmp_path, 2)
    slow = open_area(client_s, name)
    top = on_disk(server, name, "lock")[-1]
    publish, paused = client_s.publish, []

    def publish_after_a_compaction(tmp: str, final: str) -> bool:
        if final.endswith(f"lock/{top + 1:020d}") and not paused:
            paused.append(compact(area, firm))
            assert top + 1 not in on_disk(server, name, "lock")
        return publish(tmp, final)

    client_s.publish = publish_after_a_compaction  # type: ignore[method-assign]
    got = slow.acquire(party("client"), lease_seconds=60)
    assert paused and not isinstance(got, Grant) and got.verdict is Verdict.FREE
    grant = locked(slow, party("client"))
    assert grant.lease.generation > paused[0].lock


def test_a_late_writer_is_void_and_a_holder_compacted_past_is_fenced(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, name, firm = format_2_area(server, firm_s, tmp_path, 2)
    writer = open_area(client_s, name)
    head = writer._sync_log()  # a late writer read the log up to here, then paused
    late = open_area(client_s, name)
    grant = late.acquire(party("client"), lease_seconds=1)  # a holder whose lease runs out
    assert isinstance(grant, Grant)
    snap = LocalSnapshot.scan(tmp_path / "books.db", late.require_keys())
    taker = open_area(firm_s, name)  # takes over once the lease and the slack are over
    while not isinstance(got := taker.acquire(firm, lease_seconds=300), Grant):
        time.sleep(0.5)
    taker.commit(got, firm, LocalSnapshot.scan(tmp_path / "books.db", taker.require_keys()), base=2)
    taker.renew(got, firm)
    prune(taker, got, firm, compact_every=1)
    assert taker.release(got, firm)
    floor = area_floor.refresh(taker)
    assert floor.seq > grant.fence_seq and head + 1 < floor.seq
    with pytest.raises(errors.Fenced):
        late.commit(grant, party("client"), snap, base=2)
    seq = writer._append({"kind": "note", "gen": 0, "session": None, "writer": {}}, None)
    assert seq >= floor.seq and head + 1 in on_disk(server, name, "log")  # re-created, then read on
    fresh = open_area(client_s, name)
    assert fresh.newest_number() == 3 and shown(fresh) == shown(taker)


def test_a_version_1_area_is_never_compacted(firm_and_client, tmp_path, monkeypatch):
    server, firm_s, _client = firm_and_client
    monkeypatch.setenv(WRITE_FORMAT_ENV, "1")
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    for i in (1, 2):
        commit(area, firm, tmp_path / "v1.db", f"version {i}".encode())
    then = time.time() - 2 * DAY
    os.utime(server.root / name / "config", (then, then))
    grant = locked(area, firm)
    assert area_floor.compact(area, grant, firm, every=1) is None
    assert area.release(grant, firm)
    assert on_disk(server, name, "floor") == [] and on_disk(server, name, "log")[0] == 1


def test_a_host_without_hard_links_is_not_compacted(firm_and_client, tmp_path):
    server, firm_s, _client = firm_and_client
    area, name, firm = format_2_area(server, firm_s, tmp_path, 2)
    firm_s._sftp.extensions = {}  # as a host that does not advertise hardlink@openssh.com
    grant = locked(area, firm)
    assert area_floor.compact(area, grant, firm, every=1) is None  # a floor could be seen half-written
    assert area.release(grant, firm)
    assert on_disk(server, name, "floor") == [] and on_disk(server, name, "log")[0] == 1
