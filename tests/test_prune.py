"""Retention on the host (area/retention.py) against both real servers: the sealed policy,
prune under the lock, prune racing a writer and a reader, pruned versions refused.

Every area here is made by the current code and upgraded to format 2 by its first commit
(`upgraded_area`). Ages are made by backdating files on the server's disk, never by sleeping.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.area import (
    Area,
    Grant,
    PruneNeedsFormat2,
    VersionPruned,
    download_unless_pruned,
    prune,
    read_policy,
    set_policy,
)
from cloudshare_p2p.snapshot import LocalSnapshot
from statemachine.retention import RetentionPolicy
from tests.parties import create_area, new_area_name, open_area, party, session_for

pytestmark = pytest.mark.server
LAST_TWO = RetentionPolicy(last=2, daily=0, monthly=0)
DAY = 86400


OBJECT_FOLDERS = ("manifests", "chunks", "packs")


@pytest.fixture
def firm_and_client(share_server, tmp_path):
    (tmp_path / "firm").mkdir(), (tmp_path / "client").mkdir()
    with session_for(share_server, tmp_path / "firm") as firm, \
            session_for(share_server, tmp_path / "client") as client:
        yield share_server, firm, client


def upgraded_area(session, name: str, who, data: Path) -> Area:
    """A new area whose first commit (version 1, `shared.txt` only) upgraded it to format 2."""
    area = create_area(session, name, who)
    assert area.load()["version"] == 1
    commit(area, who, data, {})
    assert area.load()["version"] == 2
    return area


def backdate_objects(server, name: str, seconds: int = 2 * DAY) -> None:
    """Make every object of the area look old on the server's disk."""
    then = time.time() - seconds
    for folder in OBJECT_FOLDERS:
        for path in (server.root / name / folder).rglob("*"):
            if path.is_file():
                os.utime(path, (then, then))


def on_disk(server, name: str) -> set[str]:
    """Area-relative paths of the objects on the server's disk."""
    root = server.root / name
    return {p.relative_to(root).as_posix() for folder in OBJECT_FOLDERS if (root / folder).is_dir()
            for p in (root / folder).rglob("*") if p.is_file()}


def log_head(server, name: str) -> int:
    return max((int(p.name) for p in (server.root / name / "log").iterdir()), default=0)


def commit(area: Area, who, data: Path, files: dict[str, bytes]) -> int:
    """One version of a folder data set holding `files` (plus a file every version shares)."""
    for rel, content in {"shared.txt": b"the chart of accounts", **files}.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(content)
    grant = area.acquire(who, lease_seconds=300)
    assert isinstance(grant, Grant)
    version = area.commit(grant, who, LocalSnapshot.scan(data, area.keys), base=area.newest_number())
    assert area.release(grant, who)
    return version


def five_versions(server, firm_s, tmp_path) -> tuple[Area, object]:
    """A version-2 area with versions 1…5 (each with its own ledger and memo), objects two days old.

    The first commit upgrades the new (version-1) area."""
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    data = tmp_path / "data"
    for i in range(1, 6):
        files = {"ledger.db": f"ledger {i} ".encode() * 500, "memo.txt": f"memo {i}".encode()}
        commit(area, firm, data, files)
    assert area.load()["version"] == 2
    backdate_objects(server, name)
    return area, firm


def locked(area: Area, who) -> Grant:
    grant = area.acquire(who, lease_seconds=300)
    assert isinstance(grant, Grant)
    return grant


def test_policy_is_set_and_read_back_by_another_party(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = upgraded_area(firm_s, name, firm, tmp_path / "data")
    assert read_policy(area) == (RetentionPolicy(), None)  # none recorded: the defaults
    grant = locked(area, firm)
    wanted = RetentionPolicy(last=5, daily=10, monthly=12)
    seq = set_policy(area, grant, firm, wanted)
    area.release(grant, firm)
    assert read_policy(open_area(client_s, name)) == (wanted, seq)
    sealed = json.loads((server.root / name / "log" / f"{seq:020d}").read_bytes())
    assert set(sealed) == {"kind", "gen", "session", "writer", "sealed", "v", "seq", "time"}  # sealed only


def test_malformed_policy_and_prune_entries_are_void(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, firm = five_versions(server, firm_s, tmp_path)
    grant = locked(area, firm)
    seq = set_policy(area, grant, firm, LAST_TWO)
    area.release(grant, firm)
    head = log_head(server, area.name)
    forged = [
        {"kind": "policy", "gen": 99, "sealed": "bm90IHNlYWxlZA=="},  # does not open
        {"kind": "policy", "gen": 99, "sealed": 7},  # wrong type
        {"kind": "prune", "gen": 99, "pruned": "1"},  # not a list
        {"kind": "prune", "gen": 99, "pruned": [1, True]},
        {"kind": "prune", "gen": 99, "pruned": [5]},  # the newest: never prunable
        {"kind": "prune", "gen": 0, "pruned": [1]},  # fenced
    ]
    for i, body in enumerate(forged, start=head + 1):
        entry = {**body, "v": 1, "seq": i, "session": "x", "writer": {}, "time": "t"}
        (server.root / area.name / "log" / f"{i:020d}").write_text(json.dumps(entry))
    reader = open_area(client_s, area.name)
    assert [v.version for v in reader.versions()] == [1, 2, 3, 4, 5]
    assert reader.pruned_versions() == frozenset()
    assert read_policy(reader) == (LAST_TWO, seq)


def test_prune_removes_exactly_what_the_plan_says_and_is_idempotent(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, firm = five_versions(server, firm_s, tmp_path)
    before = on_disk(server, area.name)
    needed = set().union(*(area.objects_needed(v) for v in area.versions()[3:]))
    grant = locked(area, firm)
    set_policy(area, grant, firm, LAST_TWO)
    dry = prune(area, grant, firm, dry_run=True)
    assert dry is not None and dry.dry_run and dry.removed_objects == 0
    assert on_disk(server, area.name) == before  # a dry run removes nothing
    head = log_head(server, area.name)
    report = prune(area, grant, firm)
    area.release(grant, firm)
    assert report is not None and report.plan == dry.plan
    assert report.plan.remove_versions == (1, 2, 3) and report.decision.keep == (4, 5)
    assert set(report.plan.remove_objects) == before - needed
    assert report.removed_objects == len(before - needed) and report.freed_bytes == dry.freed_bytes > 0
    assert on_disk(server, area.name) == needed  # the shared chunk stays: versions 4 and 5 use it
    assert log_head(server, area.name) == head + 1  # one prune entry
    reader = open_area(client_s, area.name)
    assert reader.pruned_versions() == {1, 2, 3}
    assert [v.version for v in reader.versions()] == [1, 2, 3, 4, 5]  # numbers never change
    grant = locked(area, firm)
    again = prune(area, grant, firm)
    area.release(grant, firm)
    assert again is not None and again.plan.empty and again.removed_objects == 0
    assert log_head(server, area.name) == head + 2  # only the second lock's fence: nothing pruned twice
    assert on_disk(server, area.name) == needed


def test_young_objects_stay_and_cheap_prune_does_nothing_when_nothing_is_due(firm_and_client, tmp_path):
    server, firm_s, _ = firm_and_client
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    data = tmp_path / "data"
    for i in range(1, 4):  # the first commit upgrades the area to format 2
        commit(area, firm, data, {"ledger.db": f"ledger {i}".encode()})  # objects just written
    grant = locked(area, firm)
    set_policy(area, grant, firm, RetentionPolicy(last=3, daily=0, monthly=0))
    assert prune(area, grant, firm, cheap=True) is None  # three versions, three kept: no listing
    set_policy(area, grant, firm, LAST_TWO)
    versions = area.versions()
    only_1 = area.objects_needed(versions[0]) - set().union(*map(area.objects_needed, versions[1:]))
    report = prune(area, grant, firm)
    area.release(grant, firm)
    assert report is not None and report.plan.remove_versions == (1,)
    # grace: version 1's manifest (its pack also holds shared.txt, which versions 2 and 3 need)
    assert report.plan.remove_objects == () and set(report.plan.young) == only_1 and len(only_1) == 1


def test_prune_of_a_version_1_area_is_refused(firm_and_client):
    _, firm_s, _ = firm_and_client
    firm = party("firm")
    area = create_area(firm_s, new_area_name(), firm)
    grant = locked(area, firm)
    with pytest.raises(PruneNeedsFormat2, match="format version 1"):
        prune(area, grant, firm)


def test_fenced_prune_appends_and_removes_nothing(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, firm = five_versions(server, firm_s, tmp_path)
    grant = locked(area, firm)
    set_policy(area, grant, firm, LAST_TWO)
    before = on_disk(server, area.name)
    open_area(client_s, area.name).break_lock(party("client"), "laptop lost")
    with pytest.raises(errors.Fenced):
        prune(area, grant, firm)
    assert on_disk(server, area.name) == before
    assert open_area(client_s, area.name).pruned_versions() == frozenset()


def test_prune_racing_a_writer(firm_and_client, tmp_path):
    """The writer is blocked by the lock while the prune removes; then its close works."""
    server, firm_s, client_s = firm_and_client
    area, firm = five_versions(server, firm_s, tmp_path)
    client, writer = party("client"), open_area(client_s, area.name)
    blocked = []
    remove = firm_s.remove

    def remove_while_a_writer_tries(path: str) -> None:
        if not blocked:
            blocked.append(writer.acquire(client, lease_seconds=300))
        remove(path)

    grant = locked(area, firm)
    set_policy(area, grant, firm, LAST_TWO)
    firm_s.remove = remove_while_a_writer_tries
    try:
        report = prune(area, grant, firm)
    finally:
        firm_s.remove = remove
    area.release(grant, firm)
    assert report is not None and report.removed_objects > 0
    assert blocked and not isinstance(blocked[0], Grant)  # the writer saw the lock held
    data = tmp_path / "client-data"
    content = os.urandom(3000) + b"ledger 2 " * 500
    version = commit(writer, client, data, {"ledger.db": content, "memo.txt": b"memo 2"})  # memo: pruned
    assert version == 6
    reader = open_area(firm_s, area.name)
    target = tmp_path / "restored"
    download_unless_pruned(reader, reader.versions()[-1], target)
    assert (target / "ledger.db").read_bytes() == content
    assert (target / "memo.txt").read_bytes() == b"memo 2"
    assert (target / "shared.txt").read_bytes() == b"the chart of accounts"


def test_reader_of_the_newest_during_a_prune_still_verifies(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, firm = five_versions(server, firm_s, tmp_path)
    reader = open_area(client_s, area.name)
    newest = reader.versions()[-1]
    pruned = []

    def prune_meanwhile(_n: int) -> None:
        if not pruned:
            grant = locked(area, firm)
            set_policy(area, grant, firm, LAST_TWO)
            pruned.append(prune(area, grant, firm))
            area.release(grant, firm)

    target = tmp_path / "newest"
    download_unless_pruned(reader, newest, target, progress=prune_meanwhile)
    assert pruned and pruned[0].removed_objects > 0
    assert (target / "ledger.db").read_bytes() == b"ledger 5 " * 500


def test_reader_of_a_pruned_version_gets_the_plain_message(firm_and_client, tmp_path):
    server, firm_s, client_s = firm_and_client
    area, firm = five_versions(server, firm_s, tmp_path)
    reader = open_area(client_s, area.name)
    old = reader.versions()[1]  # version 2, read before the prune
    target = tmp_path / "old"
    read_ranges = client_s.read_ranges

    def prune_meanwhile(path: str, ranges):  # its manifest read, before its first pack: packs go
        client_s.read_ranges = read_ranges
        grant = locked(area, firm)
        set_policy(area, grant, firm, LAST_TWO)
        prune(area, grant, firm)
        area.release(grant, firm)
        return read_ranges(path, ranges)

    client_s.read_ranges = prune_meanwhile
    try:
        with pytest.raises(VersionPruned, match="version 2 was pruned by the retention policy"):
            download_unless_pruned(reader, old, target)
    finally:
        client_s.read_ranges = read_ranges
    assert not target.exists()
    with pytest.raises(VersionPruned, match="version 1 was pruned"):
        download_unless_pruned(reader, reader.versions()[0], target)
