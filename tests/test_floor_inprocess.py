"""Compaction below the floor, in one process over `MemoryFiles` (tests/memory_area.py).

Numbers and data survive compaction; a claimant paused across it gives up; a late writer's
re-created slot is void; `check` accepts a compacted area and reports a malformed floor; a
version-1 area is never compacted. The same flows run on both real servers in test_floor.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.area import Area, Grant, prune, set_policy
from cloudshare_p2p.area import floor as area_floor
from cloudshare_p2p.check import DAMAGE, check_area
from cloudshare_p2p.snapshot import LocalSnapshot
from cloudshare_p2p.snapshot.scan import WRITE_FORMAT_ENV
from statemachine import Verdict
from statemachine.retention import RetentionPolicy
from tests.memory_area import DAY, FakeClock, Office, commit, locked, new_office, read_tree, target, write

LAST_TWO = RetentionPolicy(last=2, daily=0, monthly=0)


@pytest.fixture(scope="module")
def made() -> Office:
    return new_office()


@pytest.fixture
def office(made: Office, monkeypatch) -> Office:
    monkeypatch.setenv(WRITE_FORMAT_ENV, "2")
    return made.fork(FakeClock())


def versions_and_upgrade(office: Office, tmp_path: Path, count: int = 5) -> Area:
    """Versions 1…count (the first upgrades the area to format 2), the upgrade a day old."""
    area = office.area()
    for i in range(1, count + 1):
        assert commit(area, office.firm, write(tmp_path / "books.db", f"ledger {i} ".encode() * 300)) == i
    assert area.load()["version"] == 2
    age_config(office)
    return area


def age_config(office: Office) -> None:
    office.folder.set_mtime(office.path("config"), int(office.clock()) - 2 * DAY)


def compact(office: Office, area: Area, policy: RetentionPolicy | None = None) -> area_floor.CompactReport:
    """The firm takes the lock, renews once (so its own claim is below its generation), prunes
    with compaction due at once, and lets go."""
    grant = locked(area, office.firm)
    if policy is not None:
        set_policy(area, grant, office.firm, policy)
    area.renew(grant, office.firm)
    report = prune(area, grant, office.firm, compact_every=1)
    assert area.release(grant, office.firm)
    assert report is not None and report.compacted is not None
    return report.compacted


def shown(area: Area) -> list[tuple[int, str, int]]:
    pruned = area.pruned_versions()
    return [(v.version, v.manifest, v.size) for v in area.versions() if v.version not in pruned]


def names(office: Office, folder: str) -> list[int]:
    return sorted(int(n) for n in office.handle().listdir(office.path(folder)) if n.isdigit())


def test_compaction_keeps_numbers_and_data_and_leaves_the_log_short(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 6)
    grant = locked(area, office.firm)
    set_policy(area, grant, office.firm, LAST_TWO)
    assert area.release(grant, office.firm)
    before = shown(office.area())
    done = compact(office, area)
    fresh = office.area()  # no cache: starts from the floor
    assert shown(fresh) == [v for v in before if v[0] >= 5] and fresh.newest_number() == 6
    assert fresh.pruned_versions() == frozenset({1, 2, 3, 4})
    assert min(names(office, "log")) == done.seq and min(names(office, "lock")) == done.lock
    assert done.removed_slots == done.seq - 1 and done.removed_generations == done.lock - 1
    fresh.download(fresh.versions()[-1], target(tmp_path / "newest.db"))
    assert read_tree(tmp_path / "newest.db")[""] == b"ledger 6 " * 300
    # the next commit is numbered on from the floor, seen alike by the cached and a fresh reader
    assert commit(office.area(), office.client, write(tmp_path / "c.db", b"client")) == 7
    assert area.newest_number() == office.area().newest_number() == 7


def test_a_second_compaction_carries_the_kept_versions_on(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 3)
    first = compact(office, area)
    for i in (4, 5):
        assert commit(area, office.firm, write(tmp_path / "books.db", f"ledger {i} ".encode() * 300)) == i
    before = shown(office.area())
    second = compact(office, area)
    assert second.floor == first.floor + 1 and second.seq > first.seq and second.lock > first.lock
    fresh = office.area()
    assert shown(fresh) == before and fresh.pruned_versions() == frozenset()
    record = json.loads(office.handle().read_bytes(office.path("floor", f"{second.floor:020d}"), 1 << 20))
    assert [c["version"] for c in record["carried"]] == [1, 2, 3, 4, 5][:record["versions"]]


def test_a_claimant_paused_across_a_compaction_gives_up(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 2)
    session = office.handle()
    slow = Area(session, office.name, clock=office.clock)
    slow.use_data_key(office.data_key)
    top = office.top("lock")
    publish, paused = session.publish, []

    def publish_after_a_compaction(tmp: str, final: str) -> bool:
        if final.endswith(f"lock/{top + 1:020d}") and not paused:
            paused.append(compact(office, area))  # the firm claims top + 1, renews, compacts it away
            assert top + 1 not in names(office, "lock")
        return publish(tmp, final)

    session.publish = publish_after_a_compaction  # type: ignore[method-assign]
    got = slow.acquire(office.client, lease_seconds=60)
    assert paused and not isinstance(got, Grant)  # created the removed name, then read the floor
    assert got.verdict is Verdict.FREE  # the firm released: the lock is free, not the slow claimant's
    assert top + 1 in names(office, "lock")  # its void record stays (removed by the next compaction)
    grant = locked(slow, office.client)  # trying again claims above the floor
    assert grant.lease.generation > paused[0].lock
    assert slow.release(grant, office.client)


def test_a_late_writer_recreating_a_removed_slot_is_void(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 2)
    late = office.area()
    head = late._sync_log()  # the late writer read the log up to here, then paused
    assert commit(area, office.firm, write(tmp_path / "books.db", b"ledger 3")) == 3
    done = compact(office, area)
    assert head + 1 < done.seq
    seq = late._append({"kind": "note", "gen": 0, "session": None, "writer": {}}, None)
    assert seq >= done.seq  # its first try landed in a removed slot, was void, and it read on
    assert head + 1 in names(office, "log")  # that slot was re-created...
    office.plant("log", 2, json.dumps({"v": 1, "seq": 2, "kind": "commit", "gen": 10 ** 6, "base": None,
                                       "manifest": "ab" * 32}).encode())
    fresh = office.area()  # ...and no reader looks below the floor
    assert shown(fresh) == shown(area) and fresh.newest_number() == 3


def test_a_holder_compacted_past_is_fenced(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 2)
    late_area = office.area()
    grant = locked(late_area, office.client, lease=60)
    snap = LocalSnapshot.scan(write(tmp_path / "late.db", b"late work"), late_area.require_keys())
    office.clock.advance(3600)  # the client's lease ran out; the firm takes the lock and compacts
    done = compact(office, area)
    assert done.seq > grant.fence_seq
    with pytest.raises(errors.Fenced):
        late_area.commit(grant, office.client, snap, base=2)
    assert office.area().newest_number() == 2


def test_check_accepts_a_compacted_area_and_reports_a_malformed_floor(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 3)
    done = compact(office, area, LAST_TWO)
    report = check_area(office.area())
    assert not report.problems, [p.what for p in report.problems]
    assert report.versions == [2, 3]
    office.plant("floor", done.floor + 1, b'{"v": 1, "kind": "floor"}')  # JSON, but no floor
    report = check_area(office.area())
    assert any(p.severity == DAMAGE and p.where == f"floor/{done.floor + 1:020d}" for p in report.problems)
    with pytest.raises(errors.AreaCorrupt, match="floor"):
        office.area().versions()


def test_a_version_1_area_is_never_compacted(office: Office, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(WRITE_FORMAT_ENV, "1")
    area = office.area()
    for i in (1, 2, 3):
        commit(area, office.firm, write(tmp_path / "v1.db", f"version {i}".encode()))
    age_config(office)
    grant = locked(area, office.firm)
    assert area_floor.compact(area, grant, office.firm, every=1) is None
    assert area.release(grant, office.firm)
    assert office.handle().stat(office.path("floor")) is None
    office.handle().mkdir(office.path("floor"))
    office.plant("floor", 1, b'{"v": 1, "kind": "floor", "floor": 1, "seq": 3, "lock": 3}')
    fresh = office.area()  # a planted floor means nothing in a version-1 area
    assert fresh.newest_number() == 3 and names(office, "log")[0] == 1


def test_no_compaction_within_a_day_of_the_upgrade(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 2)
    office.folder.set_mtime(office.path("config"), int(office.clock()) - DAY + 60)
    grant = locked(area, office.firm)
    assert area_floor.compact(area, grant, office.firm, every=1) is None
    assert area.release(grant, office.firm) and names(office, "log")[0] == 1


@pytest.mark.parametrize("kept", [b"[]", b"{", b'{"floor": "x"}', b'{"floor": 1, "v": 1}'])
def test_a_damaged_local_copy_of_the_floor_is_read_again_from_the_host(office: Office, tmp_path: Path,
                                                                       kept: bytes) -> None:
    area = versions_and_upgrade(office, tmp_path, 3)
    cache = tmp_path / "cache"
    reader = office.area()
    reader.use_cache(cache, reader.area_id)
    before = shown(reader)
    compact(office, area)
    caught_up = office.area()
    caught_up.use_cache(cache, caught_up.area_id)
    assert shown(caught_up) == before
    local = cache / caught_up.area_id / "floor.json"
    assert local.exists()
    local.write_bytes(kept)
    again = office.area()
    again.use_cache(cache, again.area_id)
    assert shown(again) == before and again.newest_number() == 3


def test_a_reader_never_uses_a_slot_re_created_while_it_read(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 2)
    reader = office.area()
    head = reader._sync_log()  # this command looked the floor up and read the log up to here
    assert commit(area, office.firm, write(tmp_path / "books.db", b"ledger 3")) == 3
    genuine = office.area().versions()[-1].manifest
    done = compact(office, area)
    assert head + 1 < done.seq
    office.plant("log", head + 1, json.dumps({  # a late writer re-creates the removed slot
        "v": 1, "seq": head + 1, "kind": "commit", "gen": 10 ** 6, "base": 2, "manifest": "cd" * 32,
        "session": "late", "writer": {"name": "late"}}).encode())
    newest = reader.versions()[-1]  # the same command reads on: it meets the re-created slot first
    assert (newest.version, newest.manifest) == (3, genuine)


def test_a_bounded_run_leaves_the_rest_for_the_next_prune(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 3)
    grant = locked(area, office.firm)
    area.renew(grant, office.firm)
    first = area_floor.compact(area, grant, office.firm, every=1, most=3)
    assert first is not None and first.removed_slots == 3 and first.removed_generations == 0
    assert names(office, "log")[0] == 4 and names(office, "lock")[0] == 1
    rest = area_floor.compact(area, grant, office.firm, every=10 ** 6)  # no new floor due: the rest
    assert rest is not None and rest.floor == first.floor
    assert names(office, "log")[0] == first.seq and names(office, "lock")[0] == first.lock
    assert area_floor.compact(area, grant, office.firm, every=10 ** 6) is None  # nothing left
    assert area.release(grant, office.firm)


def test_a_torn_floor_is_void_and_the_next_one_is_numbered_after_it(office: Office, tmp_path: Path) -> None:
    area = versions_and_upgrade(office, tmp_path, 3)
    done = compact(office, area)
    before = shown(office.area())
    office.plant("floor", done.floor + 1, b'{"v": 1, "kind": "floor", "seq": 9')  # a writer cut off
    fresh = office.area()
    assert shown(fresh) == before and area_floor.current(fresh).number == done.floor
    report = check_area(office.area())
    assert [(p.severity, p.where) for p in report.problems] == [("warning", f"floor/{done.floor + 1:020d}")]
    assert commit(area, office.firm, write(tmp_path / "books.db", b"ledger 4")) == 4
    again = compact(office, office.area())
    assert again.floor == done.floor + 2 and shown(office.area()) == [*before, shown(office.area())[-1]]
