"""How many sequential SFTP round trips ("waves") a day's `close` and the other side's `open`
wait for, counted in-process over the real OpenSSH sshd (tests/sftp_waves.py). On an office
line each wave costs a round trip (40 ms) however many requests it carries, so the counts are
bounded here; times are measured by bench/office_link.py, never by a test.

Each command is a fresh `Area` over a fresh connection with the party's cache folder, as a new
process would make it; the grant crosses from `open` to `close` as its stored form.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloudshare_p2p.area import Area, Grant, Party, grant_from_dict, grant_to_dict
from cloudshare_p2p.snapshot import LocalSnapshot
from tests.parties import PASSWORD, create_area, new_area_name, party, session_for
from tests.serverinfo import ShareServer
from tests.sftp_waves import counting

pytestmark = pytest.mark.server

CLOSE_WAVES = 15  # 2026-11: 13 (45 before the batch requests; the CLI also writes its release ahead: 12);
# 15 with the floor's lookups after the renewal and the commit (a release needs none)
OPEN_WAVES = 14  # 2026-11: 12 (49 before); 15 with the floor's lookups (first, after reading, claim, fence);
# 13 with the first lookup sent with the reads and the claim's lookup settling them


def _ledger(path: Path, rows: int) -> Path:
    db = sqlite3.connect(path)
    db.execute("create table j(id integer primary key, memo text, amt int)")
    db.executemany("insert into j values(?,?,?)", ((i, f"memo {i} " * 3, i * 7) for i in range(rows)))
    db.commit()
    db.close()
    return path


def _edit(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executemany("insert into j(memo,amt) values(?,?)", ((f"new {i}", i) for i in range(300)))
    db.executemany("update j set memo=? where id=?", ((f"fixed {i}", i) for i in range(0, 30000, 997)))
    db.commit()
    db.close()


class Computer:
    """One party's computer: its home (cache), its keys once unlocked, one command at a time."""

    def __init__(self, server: ShareServer, home: Path, who: Party) -> None:
        self.server, self.home, self.who = server, home, who
        self.area_id: str | None = None
        self.data_key: bytes | None = None
        home.mkdir(parents=True, exist_ok=True)

    def command(self, name: str) -> tuple[Area, object]:
        """A fresh connection and area, as a new process makes them (keys as remembered)."""
        session = session_for(self.server, self.home)
        area = Area(session, name)
        area.use_cache(self.home / "cache", self.area_id)
        if self.data_key is None:
            area.unlock_keys(PASSWORD)
            self.area_id, self.data_key = area.area_id, area.data_key
        else:
            area.use_data_key(self.data_key)
        return area, session


def _open(me: Computer, name: str, target: Path) -> dict:
    area, session = me.command(name)
    with session:  # type: ignore[attr-defined]
        grant = area.acquire(me.who, lease_seconds=600)
        assert isinstance(grant, Grant)
        newest = area.newest()
        assert newest is not None
        area.download(newest, target)
        return grant_to_dict(grant)


def test_a_days_close_and_the_other_sides_open_wait_few_round_trips(openssh_server: ShareServer,
                                                                     tmp_path: Path) -> None:
    firm = Computer(openssh_server, tmp_path / "firm", party("firm"))
    client = Computer(openssh_server, tmp_path / "client", party("client"))
    name, data = new_area_name(), _ledger(tmp_path / "books.db", 30_000)
    with session_for(openssh_server, firm.home) as session:  # share
        area = create_area(session, name, firm.who)
        firm.area_id, firm.data_key = area.area_id, area.data_key
        area.use_cache(firm.home / "cache", area.area_id)
        grant = area.acquire(firm.who, lease_seconds=600)
        assert isinstance(grant, Grant)
        area.commit(grant, firm.who, LocalSnapshot.scan(data, area.require_keys()), base=0)
        area.release(grant, firm.who)
    area, session = client.command(name)
    with session:  # type: ignore[attr-defined]  # the client joins…
        newest = area.newest()
        assert newest is not None
        area.download(newest, tmp_path / "client.db")
    stored = _open(firm, name, data)  # …the firm opens, edits a day's work and closes
    _edit(data)
    area, session = firm.command(name)
    with session, counting() as close:  # type: ignore[attr-defined]
        grant = grant_from_dict(stored)
        assert area.commit(grant, firm.who, LocalSnapshot.scan(data, area.require_keys()), base=1) == 2
        assert area.release(grant, firm.who)
    with counting() as opening:  # the client's open receives it
        stored = _open(client, name, tmp_path / "client.db")
    assert (tmp_path / "client.db").read_bytes() == data.read_bytes()
    print(f"close: {close.requests} requests, {close.waves} waves; open: {opening.requests} requests, "
          f"{opening.waves} waves")
    assert close.waves <= CLOSE_WAVES, " ".join(close.log)
    assert opening.waves <= OPEN_WAVES, " ".join(opening.log)
