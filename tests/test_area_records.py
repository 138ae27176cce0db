"""Defence in depth in the format, and hostile records on the host (issue: no lost work).

Every commit names the version it was built on; a commit built on an older version is
refused by the writer and ignored by every reader. Anyone with the SFTP login can write
lock records and log entries: oversized, malformed and out-of-range ones are void, never a
crash, and their text never reaches a terminal raw.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.area import MAX_RECORD, Area, Grant
from cloudshare_p2p.display import describe_lock
from cloudshare_p2p.snapshot import LocalSnapshot
from statemachine import Verdict
from tests.parties import create_area, new_area_name, open_area, party, session_for

pytestmark = pytest.mark.server


@pytest.fixture
def pair(share_server, tmp_path):
    (tmp_path / "firm").mkdir(), (tmp_path / "client").mkdir()
    with session_for(share_server, tmp_path / "firm") as firm, \
            session_for(share_server, tmp_path / "client") as client:
        yield share_server, firm, client


def _commit(area: Area, who, path, data: bytes, base: int) -> int:
    path.write_bytes(data)
    grant = area.acquire(who, lease_seconds=300)
    assert isinstance(grant, Grant)
    try:
        return area.commit(grant, who, LocalSnapshot.scan(path, area.keys), base=base)
    finally:
        area.release(grant, who)


def test_a_commit_built_on_an_older_version_is_refused(pair, tmp_path):
    _, firm_s, client_s = pair
    name, firm, client = new_area_name(), party("firm"), party("client")
    area = create_area(firm_s, name, firm)
    assert _commit(area, firm, tmp_path / "v1.db", b"first", base=0) == 1
    assert _commit(area, firm, tmp_path / "v2.db", b"firm's second", base=1) == 2
    theirs = open_area(client_s, name)
    with pytest.raises(errors.StaleBase) as info:  # the client's copy is still version 1
        _commit(theirs, client, tmp_path / "stale.db", b"client's edit of v1", base=1)
    assert info.value.exit_code == 6 and "based on version 1" in str(info.value)
    assert [v.version for v in theirs.versions()] == [1, 2]


def test_a_retried_commit_of_what_is_already_newest_is_not_a_conflict(pair, tmp_path):
    _, firm_s, _ = pair
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    _commit(area, firm, tmp_path / "v1.db", b"first", base=0)
    assert _commit(area, firm, tmp_path / "v2.db", b"second", base=1) == 2
    # the process died after publishing version 2 and before recording it: base is still 1
    assert _commit(area, firm, tmp_path / "again.db", b"second", base=1) == 2
    assert area.newest_number() == 2


def test_readers_ignore_a_forged_commit_whose_base_is_not_the_newest(pair, tmp_path):
    server, firm_s, client_s = pair
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    _commit(area, firm, tmp_path / "v1.db", b"first", base=0)
    _commit(area, firm, tmp_path / "v2.db", b"second", base=1)
    log = server.root / name / "log"
    newest = json.loads((log / sorted(os.listdir(log))[-2]).read_text())  # the v2 commit entry
    head = max(int(n) for n in os.listdir(log))
    forged = dict(newest, seq=head + 1, base=1, gen=newest["gen"])
    (log / f"{head + 1:020d}").write_text(json.dumps(forged))
    assert [v.version for v in open_area(client_s, name).versions()] == [1, 2]


def _plant(server, name: str, folder: str, seq: int, body: bytes, age: int = 0) -> None:
    path = server.root / name / folder / f"{seq:020d}"
    path.write_bytes(body)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))


def _top(server, name: str, folder: str) -> int:
    return max([int(n) for n in os.listdir(server.root / name / folder) if n.isdigit()], default=0)


@pytest.mark.parametrize("record", [
    {"kind": "claim", "note": "x" * (MAX_RECORD + 70_000), "lease_seconds": 60},
    {"kind": "claim", "lease_seconds": 10**30, "since": 10**30},
    {"kind": "claim", "lease_seconds": "8h", "holder": ["not", "a", "dict"]},
    {"kind": "claim", "since": -5, "gen": True},
])
def test_a_hostile_lock_record_is_a_claim_without_a_lease(pair, tmp_path, record):
    server, firm_s, client_s = pair
    name, firm, client = new_area_name(), party("firm"), party("client")
    create_area(firm_s, name, firm)
    gen = _top(server, name, "lock") + 1
    _plant(server, name, "lock", gen, json.dumps(record).encode(), age=60)
    theirs = open_area(client_s, name)
    info = theirs.lock_info()
    assert info.verdict is Verdict.EXPIRED and describe_lock(info).startswith("free")
    grant = theirs.acquire(client, lease_seconds=60)
    assert isinstance(grant, Grant) and grant.lease.generation == gen + 1
    assert theirs.break_lock(firm) > gen + 1  # breaking works too


@pytest.mark.parametrize("entry", [
    b"{" + b" " * (MAX_RECORD + 70_000) + b"}",
    json.dumps({"kind": "commit", "gen": 10**30, "writer": ["list"], "manifest": "0" * 64}).encode(),
    json.dumps({"kind": "commit", "gen": 1, "writer": {"name": "x"}, "size": 1e300}).encode(),
    b"[1, 2, 3]",
])
def test_a_hostile_log_entry_is_void_for_every_reader(pair, tmp_path, entry):
    server, firm_s, client_s = pair
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    _commit(area, firm, tmp_path / "v1.db", b"first", base=0)
    seq = _top(server, name, "log") + 1
    body = entry if entry.startswith(b"{ ") or entry.startswith(b"[") else \
        json.dumps(dict(json.loads(entry), seq=seq)).encode()
    _plant(server, name, "log", seq, body)
    theirs = open_area(client_s, name)
    assert [v.version for v in theirs.versions()] == [1]
    assert _commit(area, firm, tmp_path / "v2.db", b"second", base=1) == 2


def test_terminal_escapes_from_the_host_never_come_back_raw(pair, tmp_path):
    server, firm_s, client_s = pair
    name = new_area_name()
    evil = party("\x1b]52;c;ZXZpbA==\x07Sato\x1b[2J\u202e")
    area = create_area(firm_s, name, evil)
    grant = area.acquire(evil, lease_seconds=300, note="note\x1b[31m red \x07")
    assert isinstance(grant, Grant)
    info = open_area(client_s, name).lock_info()
    shown = describe_lock(info) + json.dumps(info.as_json())
    assert "\x1b" not in describe_lock(info) and "\x07" not in describe_lock(info) and "\u202e" not in shown
    assert "\\x1b]52;c;ZXZpbA==\\x07Sato" in describe_lock(info)


def test_a_client_cannot_write_a_long_note_or_an_endless_lease(pair):
    _, firm_s, _ = pair
    name, firm = new_area_name(), party("firm")
    area = create_area(firm_s, name, firm)
    with pytest.raises(errors.InvalidName, match="at most 1024"):
        area.acquire(firm, lease_seconds=60, note="x" * 2000)
    with pytest.raises(errors.InvalidName, match="at most 7 days"):
        area.acquire(firm, lease_seconds=99999999999 * 86400)
    assert area.lock_info().verdict is Verdict.FREE  # nothing was published


def test_a_manifest_with_an_absurd_file_time_is_refused_not_a_crash(tmp_path):
    from cloudshare_p2p.snapshot import Manifest

    body = json.dumps({"version": 1, "kind": "file", "chunker": "fixed-1MiB", "files": [
        {"path": "", "size": 0, "mode": 420, "mtime": 1e300, "chunks": []}]}).encode()
    with pytest.raises(errors.AreaCorrupt):
        Manifest.from_json_bytes(body)
