"""`cloudshare check` (issue 11): damage is found, named with the versions it affects, exits 11.

Against both real servers; the damage is made on the server's disk (`share_server.root`).
The areas are format 2 (upgraded by their first commit): a version's chunks live in packs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudshare_p2p.area import Area, prune, set_policy
from cloudshare_p2p.check import DAMAGE, OBJECTS, READ_DATA, STRUCTURE, WARNING, check_area, check_host_area
from cloudshare_p2p.cli import main
from cloudshare_p2p.errors import ExitCode
from cloudshare_p2p.snapshot import LocalSnapshot
from tests.parties import create_area, new_area_name, open_area, party, session_for
from tests.test_prune import LAST_TWO, five_versions, locked

pytestmark = pytest.mark.server
SAME, OLD, NEW = b"unchanged ledger page\n" * 50, b"march, first draft\n" * 40, b"march, closed\n" * 40


@pytest.fixture
def session(share_server, tmp_path):
    with session_for(share_server, tmp_path) as s:
        yield s


@pytest.fixture
def books(share_server, session, tmp_path):
    """An area with two versions: v1 = same + old, v2 = same + new (one chunk shared).

    Format 2: v1's pack holds same and old (both versions need it), v2's pack holds new."""
    name, firm = new_area_name(), party("firm")
    area = create_area(session, name, firm)
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "ledger.db").write_bytes(SAME)
    for content in (OLD, NEW):
        (folder / "march.csv").write_bytes(content)
        grant = area.acquire(firm, lease_seconds=300)
        area.commit(grant, firm, LocalSnapshot.scan(folder, area.keys), base=area.newest_number())
        area.release(grant, firm)
    assert area.load()["version"] == 2
    return name, share_server.root / name, area.keys


def pack_file(session, root: Path, version: int) -> Path:
    """The pack that version 1 or 2 of the area at `root` added (v1's: same and old; v2's: new)."""
    area = open_area(session, root.name)
    v1, v2 = (area.objects_needed(v) for v in area.versions())
    [pack] = [p for p in (v1 if version == 1 else v2 - v1) if p.startswith("packs/")]
    return root / pack


def damage(report) -> list:
    return [p for p in report.problems if p.severity == DAMAGE]


def test_a_healthy_area_has_no_problems(session, books):
    name, root, _ = books
    full = check_area(open_area(session, name), read_data=True)
    assert full.mode == READ_DATA and full.problems == []
    assert full.versions == [1, 2] and full.readable_versions == [1, 2] and full.exit_code == ExitCode.OK
    assert full.chunks_checked == 3 and full.manifests_checked == 2 and full.bytes_read > 0
    assert full.log_entries == 4 and full.lock_records == 4  # fence+commit twice; claim+release twice
    structure = check_area(Area(session, name))
    assert structure.mode == STRUCTURE and structure.problems == []
    assert structure.chunks_checked == 2  # without keys: the two packs (their chunks are sealed inside)
    assert check_host_area(root.parent, name).as_json()["ok"] is True


def test_a_missing_chunk_names_the_versions_it_affects(session, books):
    name, root, keys = books
    pack_file(session, root, 2).unlink()  # new's pack
    report = check_area(open_area(session, name))
    assert report.mode == OBJECTS and report.exit_code == ExitCode.AREA_DAMAGED
    [problem] = report.problems
    assert problem.what == "the file is missing" and problem.versions == (2,)
    assert problem.where.startswith("packs/")
    assert report.damaged_versions == [2] and report.readable_versions == [1]
    pack_file(session, root, 1).unlink()  # same's pack
    assert check_area(open_area(session, name)).damaged_versions == [1, 2]


def test_a_corrupted_chunk_is_found_only_when_the_data_is_read(session, books):
    name, root, keys = books
    path = pack_file(session, root, 2)  # new's pack: only version 2 needs it
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # same size, so only decrypting shows it
    path.write_bytes(bytes(blob))
    assert check_area(open_area(session, name)).problems == []
    report = check_area(open_area(session, name), read_data=True)
    [problem] = report.problems
    assert "does not open" in problem.what and problem.versions == (2,)
    assert problem.where == path.relative_to(root).as_posix()
    assert report.damaged_versions == [2] and report.readable_versions == [1]


def test_a_void_log_entry_warns_and_a_torn_manifest_damages_its_version(session, books):
    name, root, _ = books
    (root / "log" / f"{5:020d}").write_bytes(b'{"seq": 5, "kind": "comm')  # torn on a host without links
    manifest = root / "manifests" / Area(session, name).versions()[0].manifest
    manifest.write_bytes(manifest.read_bytes()[:-40])
    report = check_area(open_area(session, name))
    void = [p for p in report.problems if p.severity == WARNING]
    assert [p.where for p in void] == [f"log/{5:020d}"] and void[0].versions == ()
    [torn] = damage(report)
    assert torn.where == f"manifests/{manifest.name}" and torn.versions == (1,)
    assert report.readable_versions == [2] and report.exit_code == ExitCode.AREA_DAMAGED


def test_the_structure_is_checked_without_the_password(session, books):
    name, root, keys = books
    assert check_host_area(root.parent, name).problems == []
    (root / "log" / f"{6:020d}").write_bytes(b"{}")  # slot 5 missing: readers never see 6
    v2 = Area(session, name).versions()[1]
    pack_file(session, root, 1).write_bytes(b"CSB1")  # torn
    (root / "manifests" / v2.manifest).unlink()
    (root / "packs" / "zz").mkdir()
    stale = root / "tmp" / f"{'a' * 32}.tmp"
    stale.write_bytes(b"half an upload")
    os.utime(stale, (1, 1))
    for report in (check_host_area(root.parent, name), check_area(Area(session, name))):
        found = {(p.severity, p.where.split("/")[0]): p for p in report.problems}
        assert found[(DAMAGE, "log")].where == f"log/{5:020d}"
        assert found[(DAMAGE, "manifests")].versions == (2,)
        assert "implausible size 4 bytes" in found[(DAMAGE, "packs")].what
        assert found[(WARNING, "packs")].where == "packs/zz"
        assert "more than a day old: 1" in found[(WARNING, "tmp")].what
        assert report.damaged_versions == [2] and report.exit_code == ExitCode.AREA_DAMAGED


def test_the_command_reports_and_exits_11(firm, area):
    books = firm.data / "books.csv"
    books.write_text("date,amount\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    healthy = firm.run("check", "host", area, "--read-data", password=None)  # the remembered key
    assert "no damage found" in healthy.stdout
    for folder in (firm.server.root / area / "packs").iterdir():  # format 2: the chunks are in packs
        for pack in folder.iterdir():
            pack.unlink()
    damaged = json.loads(firm.run("check", "host", area, "--json", password=None, expect=11).stdout)
    assert damaged["damaged_versions"] == [1] and damaged["problems"][0]["what"] == "the file is missing"
    structure = firm.run("--no-remember", "check", "host", area, "--structure", password=None)
    assert "structure only" in structure.stdout and "no damage found" in structure.stdout


def test_read_data_needs_the_password():
    result = CliRunner().invoke(main, ["check", "host", "books", "--structure", "--read-data"])
    assert result.exit_code == 2 and "--read-data needs the share password" in result.output


def test_a_void_lock_record_warns_and_a_broken_config_stops_the_check(session, books):
    name, root, _ = books
    (root / "lock" / f"{5:020d}").write_bytes(b'{"gen": 5, "kind": "cla')  # torn claim
    [void] = check_host_area(root.parent, name).problems
    assert void.severity == WARNING and void.where == f"lock/{5:020d}"
    config = json.loads((root / "config").read_text())
    (root / "config").write_text(json.dumps({**config, "wrapped_key": "c2hvcnQ="}))
    report = check_area(Area(session, name))
    [broken] = report.problems
    assert broken.where == "config" and "wrapped_key" in broken.what
    assert report.exit_code == ExitCode.AREA_DAMAGED and report.log_entries == 0  # nothing else was read


def test_the_host_operator_checks_an_area_without_the_password(books):
    """`cloudshare host check FOLDER AREA`: structure only, exit 0 when healthy, 11 when damaged."""
    from cloudshare_p2p.hostcli import host

    name, root, keys = books
    healthy = CliRunner().invoke(host, ["check", str(root.parent), name, "--json"])
    assert healthy.exit_code == 0 and json.loads(healthy.output)["ok"] is True
    next(iter((root / "manifests").iterdir())).unlink()
    damaged = CliRunner().invoke(host, ["check", str(root.parent), name])
    assert damaged.exit_code == ExitCode.AREA_DAMAGED, damaged.output


def test_pruned_versions_are_not_checked_and_their_removed_objects_are_no_damage(session, share_server,
                                                                                 tmp_path):
    area, firm = five_versions(share_server, session, tmp_path)
    grant = locked(area, firm)
    set_policy(area, grant, firm, LAST_TWO)
    pruned = prune(area, grant, firm)
    area.release(grant, firm)
    assert pruned is not None and pruned.plan.remove_versions == (1, 2, 3) and pruned.removed_objects > 0
    for report in (check_area(open_area(session, area.name), read_data=True),
                   check_area(Area(session, area.name)), check_host_area(share_server.root, area.name)):
        assert report.problems == [] and report.exit_code == ExitCode.OK
        assert report.versions == report.readable_versions == [4, 5]
