"""The share area's flows in one process, over `MemoryFiles` (no server, no sleeps).

The firm and the client are two handles on one `MemoryFolder`; time is a fake clock moved by
the test (tests/memory_area.py). The same flows run against real servers in test_area.py,
test_area_records.py, test_area_races.py and test_prune.py; here they run in milliseconds,
and a commit is cut at every single operation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.area import (
    MAX_RECORD,
    Area,
    Grant,
    PruneNeedsFormat2,
    grant_from_dict,
    grant_to_dict,
    list_areas,
    prune,
    set_policy,
)
from cloudshare_p2p.display import describe_lock
from cloudshare_p2p.snapshot import LocalSnapshot
from cloudshare_p2p.snapshot.scan import WRITE_FORMAT_ENV
from cloudshare_p2p.transport import MemoryFiles
from cloudshare_p2p.transport.memory import WHEN
from statemachine import Verdict
from statemachine.lease import DEFAULT_SLACK
from statemachine.retention import RetentionPolicy
from tests.memory_area import (
    DAY,
    FakeClock,
    Office,
    commit,
    commit_operations,
    cut_commit,
    five_versions,
    locked,
    naming_its_slot,
    new_office,
    race_for_lock,
    read_tree,
    record,
    target,
    write,
    write_tree,
)
from tests.parties import PASSWORD, party

LAST_TWO = RetentionPolicy(last=2, daily=0, monthly=0)


@pytest.fixture(scope="module")
def made() -> Office:
    """One area made once (its key derivation is the slow part); each test gets a copy."""
    return new_office()


@pytest.fixture
def office(made: Office) -> Office:
    """A host of its own holding a new area, with its own clock."""
    return made.fork(FakeClock())


@pytest.fixture
def no_fsync(monkeypatch) -> None:
    """Local files are written without fsync: the host is in memory and the local disk's
    durability is not what these tests look at (it costs most of their time)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(params=[1, 2])
def fmt(request, monkeypatch) -> int:
    """The format a scan cuts for (CLOUDSHARE_WRITE_FORMAT), as a user would choose it."""
    monkeypatch.setenv(WRITE_FORMAT_ENV, str(request.param))
    return request.param


# --- create and unlock --------------------------------------------------------------------------


def test_create_refuses_an_existing_area_and_lists_it(office: Office, tmp_path: Path) -> None:
    with pytest.raises(errors.AreaExists):
        Area(office.handle(), office.name).create("other", PASSWORD, party("client"))
    commit(office.area(), office.firm, write(tmp_path / "books.db", b"ledger v1" * 1000))
    row = {r.area: r for r in list_areas(office.handle())}[office.name]
    assert row.dataset == "Yamada Trading FY2026" and row.lock is not None
    assert row.newest is not None and (row.newest.version, row.newest.size) == (1, 9000)
    assert row.newest.writer["name"] == "firm" and row.lock.verdict is Verdict.FREE


def test_unlock_with_the_password_and_a_wrong_one_changes_nothing(office: Office) -> None:
    before = office.state()
    with pytest.raises(errors.WrongPassword):
        Area(office.handle(), office.name).unlock_keys("not the password")
    assert office.state() == before
    assert office.area(password=PASSWORD).data_key == office.data_key


# --- the lock -----------------------------------------------------------------------------------


def test_lock_shows_the_holder_and_refuses_the_other(office: Office) -> None:
    grant = locked(office.area(), office.client, lease=120, note="closing the month")
    assert grant.since == int(office.clock()) and grant.until - grant.since == 120
    refused = office.area().acquire(office.firm, lease_seconds=120)
    assert not isinstance(refused, Grant) and refused.verdict is Verdict.HELD_BY_OTHER
    assert refused.holder["name"] == "client" and refused.note == "closing the month"
    assert (refused.status.since, refused.status.until) == (grant.since, grant.until)
    assert "locked by client since" in describe_lock(refused)
    assert office.area().release(grant, office.client)
    assert isinstance(office.area().acquire(office.firm, lease_seconds=120), Grant)


def test_the_lease_runs_out_on_the_servers_clock_after_the_slack(office: Office) -> None:
    grant = locked(office.area(), office.client, lease=60)
    office.clock.advance(60 + DEFAULT_SLACK - 1)  # the lease's end, within the slack: still held
    assert office.area().acquire(office.firm, lease_seconds=60).verdict is Verdict.HELD_BY_OTHER
    office.clock.advance(1)
    assert office.area().lock_info().verdict is Verdict.EXPIRED
    taken = locked(office.area(), office.firm, lease=60)
    assert taken.lease.generation == grant.lease.generation + 1
    assert not office.area().release(grant, office.client)  # no longer the client's to release


def test_renewal_claims_a_newer_generation_and_extends_the_lease(office: Office) -> None:
    area = office.area()
    grant = locked(area, office.firm, lease=60)
    first = grant.lease.generation
    office.clock.advance(40)
    area.renew(grant, office.firm)
    assert grant.lease.generation == first + 1 and grant.until == int(office.clock()) + 60
    assert grant.since == int(office.clock()) - 40  # held since the first claim
    office.clock.advance(40)  # past the first lease, within the renewed one
    assert area.lock_info(grant.session).verdict is Verdict.HELD_BY_ME
    assert office.area().acquire(office.client, lease_seconds=60).verdict is Verdict.HELD_BY_OTHER


def test_an_expired_but_untaken_lease_is_renewed_at_commit(office: Office, tmp_path: Path) -> None:
    area = office.area()
    grant = locked(area, office.firm, lease=60)
    office.clock.advance(3600)
    snap = LocalSnapshot.scan(write(tmp_path / "b.db", b"x" * 10), area.keys)
    assert area.commit(grant, office.firm, snap, base=0) == 1
    assert grant.lease.generation > 1 and office.area().newest_number() == 1


# --- fencing ------------------------------------------------------------------------------------


def test_the_late_holder_is_fenced_and_the_new_holders_data_survives(office: Office, tmp_path: Path) -> None:
    firm_area, client_area = office.area(), office.area()
    commit(firm_area, office.firm, write(tmp_path / "f" / "books.db", b"v1" * 5000))
    paused = locked(client_area, office.client, lease=60)
    client_work = write(tmp_path / "c" / "books.db", b"client's late work" * 100)
    office.clock.advance(3600)  # the client's computer slept through its lease
    fresh = locked(firm_area, office.firm, lease=60)
    assert fresh.lease.generation > paused.lease.generation
    firm_data = write(tmp_path / "f" / "books.db", b"firm's newer data" * 100)
    assert firm_area.commit(fresh, office.firm, LocalSnapshot.scan(firm_data, firm_area.keys), base=1) == 2
    with pytest.raises(errors.Fenced, match="took the lock"):
        client_area.commit(paused, office.client, LocalSnapshot.scan(client_work, client_area.keys), base=2)
    assert client_work.read_bytes() == b"client's late work" * 100  # kept locally
    reader = office.area()
    assert [v.writer["name"] for v in reader.versions()] == ["firm", "firm"]
    reader.download(reader.versions()[-1], target(tmp_path / "check.db"))
    assert (tmp_path / "check.db").read_bytes() == b"firm's newer data" * 100


def test_a_holder_paused_between_its_check_and_its_log_entry_is_fenced(office: Office,
                                                                       tmp_path: Path) -> None:
    """The pause falls after the last lease check, right before the commit's log slot: the new
    holder's fence takes that slot, and the late entry is refused by the fence in the log."""
    firm_area, client_area = office.area(), office.area()
    paused = locked(client_area, office.client, lease=60)
    session = client_area.session
    assert isinstance(session, MemoryFiles)
    publish, taken = session.publish, []

    def pause_before_the_log(tmp: str, final: str) -> bool:
        if "/log/" in final and not taken:
            office.clock.advance(3600)
            taken.append(locked(firm_area, office.firm, lease=60))
        return publish(tmp, final)

    session.publish = pause_before_the_log  # type: ignore[method-assign]
    with pytest.raises(errors.Fenced, match="took the lock"):
        client_area.commit(paused, office.client, LocalSnapshot.scan(
            write(tmp_path / "c.db", b"late" * 10), client_area.keys), base=0)
    assert taken and office.area().newest() is None
    assert [e["kind"] for e in office.area().log()] == ["fence", "fence"]


def test_a_broken_lock_fences_its_holder(office: Office, tmp_path: Path) -> None:
    area = office.area()
    grant = locked(area, office.firm)
    office.area().break_lock(office.client, "laptop lost")
    with pytest.raises(errors.Fenced, match="broken by client"):
        area.commit(grant, office.firm, LocalSnapshot.scan(write(tmp_path / "b.db", b"x"), area.keys), base=0)
    assert office.area().newest() is None


# --- data round trips ---------------------------------------------------------------------------


def test_commit_and_download_round_trip_bit_exact(office: Office, tmp_path: Path, fmt: int) -> None:
    files = {"main.db": os.urandom(1_500_000), "2026/01/journal.csv": b"date,amount\n" * 999,
             "2026/02/empty.txt": b"", "attachments/scan 1.pdf": os.urandom(70_000)}
    src = write_tree(tmp_path / "firm" / "ledger", files)
    firm_area = office.area()
    assert commit(firm_area, office.firm, src) == 1
    assert json.loads(office.folder.file(office.path("config")))["version"] == fmt
    edited = dict(files, **{"main.db": files["main.db"][:999] + b"EDIT" + files["main.db"][1003:]})
    write_tree(src, edited)
    assert commit(firm_area, office.firm, src) == 2
    reader = office.area(password=PASSWORD)
    for version, want in zip(reader.versions(), (files, edited), strict=True):
        out = target(tmp_path / "client" / f"v{version.version}")
        manifest = reader.download(version, out)
        assert read_tree(out) == want
        assert manifest.total_size() == version.size == sum(len(b) for b in want.values())


def test_a_commit_built_on_an_older_version_is_refused(office: Office, tmp_path: Path, fmt: int) -> None:
    firm_area, client_area = office.area(), office.area()
    assert commit(firm_area, office.firm, write(tmp_path / "v1.db", b"first"), base=0) == 1
    assert commit(firm_area, office.firm, write(tmp_path / "v2.db", b"firm's second"), base=1) == 2
    with pytest.raises(errors.StaleBase, match="based on version 1"):
        commit(client_area, office.client, write(tmp_path / "stale.db", b"client's edit of v1"), base=1)
    assert [v.version for v in office.area().versions()] == [1, 2]
    assert office.area().lock_info().verdict is Verdict.FREE  # the refused close let go
    # the process died after publishing version 2 and before recording it: base is still 1
    assert commit(firm_area, office.firm, write(tmp_path / "again.db", b"firm's second"), base=1) == 2
    assert office.area().newest_number() == 2


# --- a commit cut at each operation ---------------------------------------------------------------


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.usefixtures("no_fsync")
def test_a_commit_cut_at_any_operation_leaves_the_area_whole(office: Office, tmp_path: Path, fmt: int,
                                                             when: str) -> None:
    """Cut before, during or after each operation of a close: readers see version 1 or the
    whole of version 2, never a mix; the retry (a new command, its lease renewed) makes
    version 2 exactly once."""
    v1 = {"books.db": os.urandom(100_000), "memo.txt": b"memo 1"}
    v2 = {"books.db": v1["books.db"][:60_000] + os.urandom(50_000), "memo.txt": b"memo 2"}
    data = write_tree(tmp_path / "data", v1)
    commit(office.area(), office.firm, data)
    grant = locked(office.area(), office.firm)
    write_tree(data, v2)
    snap = LocalSnapshot.scan(data, office.area().require_keys())
    total = commit_operations(office, grant, snap)
    felt = 0
    for after in range(total):
        host = office.fork()
        felt += cut_commit(host, grant, snap, after, when)
        reader = host.area()
        assert len(reader.log()) == host.top("log"), f"op {after}: a void log slot"
        newest = reader.newest()
        assert newest is not None and newest.version in (1, 2)
        seen = target(tmp_path / "seen" / f"{after}")
        reader.download(newest, seen)
        assert read_tree(seen) == (v1 if newest.version == 1 else v2), f"op {after}: a mixed version"
        assert reader.lock_info(grant.session).verdict is Verdict.HELD_BY_ME
        retry = host.area()
        again = grant_from_dict(grant_to_dict(grant))
        assert retry.commit(again, host.firm, snap, base=1) == 2
        assert [v.version for v in host.area().versions()] == [1, 2], f"op {after}"
        retry.download(retry.versions()[-1], target(tmp_path / "after" / f"{after}"))
        assert read_tree(tmp_path / "after" / f"{after}") == v2
        assert retry.release(again, host.firm)
    assert total >= 6 and felt == total  # the close has this many operations to cut (7 in 2026-11)


def test_a_cut_after_a_failed_operation_drops_the_connection() -> None:
    files = MemoryFiles()
    files.cut(when="after")
    with pytest.raises(errors.NetworkDown):
        files.read_bytes("missing")  # the host answered "no such file"; the answer was lost


# --- hostile records ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    record(kind="claim", note="x" * (MAX_RECORD + 70_000), lease_seconds=60),
    record(kind="claim", lease_seconds=10**30, since=10**30),
    record(kind="claim", lease_seconds="8h", holder=["not", "a", "dict"]),
    record(kind="claim", since=-5, gen=True),
    b'{"kind": "claim", "lease_seconds": 6',  # torn
    b"\xff\xfe not json",
])
def test_a_hostile_lock_record_is_a_claim_without_a_lease(office: Office, body: bytes) -> None:
    gen = office.top("lock") + 1
    office.plant("lock", gen, body, age=60)
    theirs = office.area()
    info = theirs.lock_info()
    assert info.verdict is Verdict.EXPIRED and describe_lock(info).startswith("free")
    grant = locked(theirs, office.client, lease=60)
    assert grant.lease.generation == gen + 1
    assert theirs.break_lock(office.firm) > gen + 1  # breaking works too


@pytest.mark.parametrize("entry", [
    b"{" + b" " * (MAX_RECORD + 70_000) + b"}",
    record(kind="commit", gen=10**30, writer=["list"], manifest="0" * 64),
    record(kind="commit", gen=1, writer={"name": "x"}, size=1e300),
    b"[1, 2, 3]",
    b'{"kind": "commit", "gen": 1, "manif',  # torn
    b"\x00\x01\x02",
])
def test_a_hostile_log_entry_is_void_for_every_reader(office: Office, tmp_path: Path, entry: bytes) -> None:
    area = office.area()
    commit(area, office.firm, write(tmp_path / "v1.db", b"first"))
    seq = office.top("log") + 1
    office.plant("log", seq, naming_its_slot(entry, seq))
    theirs = office.area()
    assert [v.version for v in theirs.versions()] == [1]
    assert commit(area, office.firm, write(tmp_path / "v2.db", b"second")) == 2
    assert [v.version for v in office.area().versions()] == [1, 2]


# --- prune (format 2) ------------------------------------------------------------------------------


def test_prune_removes_exactly_the_plan(office: Office, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(WRITE_FORMAT_ENV, "2")
    five_versions(office, tmp_path)
    area = office.area()
    before = office.objects()
    needed = set().union(*(area.objects_needed(v) for v in area.versions()[3:]))
    grant = locked(area, office.firm)
    set_policy(area, grant, office.firm, LAST_TWO)
    dry = prune(area, grant, office.firm, dry_run=True)
    assert dry is not None and dry.removed_objects == 0 and office.objects() == before
    report = prune(area, grant, office.firm)
    assert area.release(grant, office.firm)
    assert report is not None and report.plan == dry.plan
    assert report.plan.remove_versions == (1, 2, 3) and report.decision.keep == (4, 5)
    assert set(report.plan.remove_objects) == before - needed and report.plan.remove_objects
    assert report.removed_objects == len(before - needed) and report.freed_bytes == dry.freed_bytes > 0
    assert office.objects() == needed
    reader = office.area()
    assert reader.pruned_versions() == {1, 2, 3} and reader.newest_number() == 5
    reader.download(reader.versions()[-1], target(tmp_path / "newest"))
    assert read_tree(tmp_path / "newest")["ledger.db"] == b"ledger 5 " * 500
    again = prune(area, locked(area, office.firm), office.firm)
    assert again is not None and again.plan.empty and office.objects() == needed


def test_prune_keeps_young_objects_and_refuses_format_1_and_the_fenced(office: Office, tmp_path: Path,
                                                                       monkeypatch) -> None:
    area = office.area()
    monkeypatch.setenv(WRITE_FORMAT_ENV, "1")
    commit(area, office.firm, write(tmp_path / "v1.db", b"one"))  # format 1: keeps every version
    grant = locked(area, office.firm)
    with pytest.raises(PruneNeedsFormat2, match="format version 1"):
        prune(area, grant, office.firm)
    assert area.release(grant, office.firm)
    monkeypatch.setenv(WRITE_FORMAT_ENV, "2")
    for i in (2, 3):
        assert commit(area, office.firm, write(tmp_path / "v1.db", f"version {i}".encode())) == i
    grant = locked(area, office.firm)
    set_policy(area, grant, office.firm, LAST_TWO)
    report = prune(area, grant, office.firm)  # version 1's objects were written just now
    assert report is not None and report.plan.remove_versions == (1,)
    assert report.plan.remove_objects == () and len(report.plan.young) == 2  # its manifest, its chunk
    assert office.area().pruned_versions() == {1} and area.release(grant, office.firm)
    commit(area, office.firm, write(tmp_path / "v1.db", b"version 4"))
    office.backdate_objects(2 * DAY)
    grant = locked(area, office.firm)
    before = office.objects()
    office.area().break_lock(office.client, "laptop lost")
    with pytest.raises(errors.Fenced):
        prune(area, grant, office.firm)
    assert office.objects() == before and office.area().pruned_versions() == {1}


# --- races ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("collide", [True, False], ids=["same-generation", "free-running"])
@pytest.mark.parametrize("expired", [False, True], ids=["free", "expired"])
def test_eight_threads_race_for_the_lock_and_one_wins(office: Office, collide: bool, expired: bool) -> None:
    for _round in range(10):
        if expired:
            locked(office.area(), party("vanished"), lease=60)
            office.clock.advance(3600)
        top = office.top("lock")
        results, claims = race_for_lock(office, 8, collide)
        winners = [r for r in results if isinstance(r, Grant)]
        assert len(winners) == 1, results
        assert claims.count(True) == 2  # the winner's claim and its fence in the log
        assert not collide or claims.count(False) == 7  # every loser lost the exclusive create
        assert winners[0].lease.generation == top + 1
        assert all(r is Verdict.HELD_BY_OTHER for r in results if not isinstance(r, Grant)), results
        assert office.top("lock") == top + 1  # the losers created nothing
        assert office.area().release(winners[0], party("winner"))
