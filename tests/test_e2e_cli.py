"""Every flow of the Cloud Share page, end to end, with the real `cloudshare` executable.

The firm and the client are two homes on one machine sharing through a real host: the
private OpenSSH sshd and the embedded host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.homes import CLOUDSHARE, SHARE_PASSWORD, Home
from tests.serverinfo import ShareServer
from tests.soak_common import backdate_top_lock

pytestmark = pytest.mark.server


def books(home: Home, text: str = "date,amount\n2026-03-01,1200\n") -> Path:
    path = home.data / "books"
    (path / "journal").mkdir(parents=True, exist_ok=True)
    (path / "ledger.csv").write_text(text)
    (path / "journal" / "2026-03.csv").write_text("receipt,1200\n")
    return path


def status(home: Home, name: str = "books") -> dict:
    return json.loads(home.run("status", name, "--json").stdout)[0]


def registered(home: Home, name: str = "books") -> bool:
    return name in [r["name"] for r in json.loads(home.run("status", "--json").stdout)]


def shared_pair(firm: Home, client: Home, area: str) -> tuple[Path, Path]:
    """The firm shares its books; the client joins."""
    firm_books = books(firm)
    firm.run("share", "books", str(firm_books), "--remote", "host", "--area", area, "--yes")
    client_books = client.data / "books"
    client.run("join", "books", str(client_books), "--remote", "host", "--area", area)
    return firm_books, client_books


# --- starting: four variants -----------------------------------------------------------------


@pytest.mark.parametrize("first", ["firm", "client"])
@pytest.mark.parametrize("other_has_old_copy", [False, True])
def test_four_start_variants(firm, client, area, first, other_has_old_copy):
    """Whoever sets up first uploads the newest data; the other receives it.

    If the receiver already has a (stale) copy, it is kept aside, never overwritten.
    """
    sender, receiver = (firm, client) if first == "firm" else (client, firm)
    newest = books(sender, "the newest ledger\n")
    out = sender.run("share", "books", str(newest), "--remote", "host", "--area", area, "--yes")
    assert "is shared" in out.stdout
    target = receiver.data / "books"
    if other_has_old_copy:
        books(receiver, "an old ledger\n")
    joined = receiver.run("join", "books", str(target), "--remote", "host", "--area", area)
    assert (target / "ledger.csv").read_text() == "the newest ledger\n"
    if other_has_old_copy:
        assert "kept aside as" in joined.stderr
        kept = [p for p in receiver.data.iterdir() if p.name.startswith("books.conflict-")]
        assert len(kept) == 1 and (kept[0] / "ledger.csv").read_text() == "an old ledger\n"
    for home in (sender, receiver):
        row = status(home)
        assert row["state"] == "shared-idle" and row["shared"] and row["version"] == 1
    assert "☁ books" in receiver.run("status").stdout


def test_wrong_password_is_refused_and_nothing_changes(firm, client, area):
    books(firm)
    firm.run("share", "books", str(firm.data / "books"), "--remote", "host", "--area", area, "--yes")
    target = client.data / "books"
    target.mkdir()
    (target / "mine.txt").write_text("client's own")
    result = client.run("join", "books", str(target), "--remote", "host", "--area", area,
                        expect=7, password="wrong")
    assert "password does not match" in result.stderr
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    assert not registered(client)  # a failed set-up leaves nothing behind


# --- the lock ----------------------------------------------------------------------------------


def test_open_close_moves_the_newest_version_and_refuses_others(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    client.run("open", "books", "--note", "entering March receipts")
    refused = firm.run("open", "books", expect=3)
    assert "locked by Client (Yamada)" in refused.stderr and "until" in refused.stderr
    assert "entering March receipts" in refused.stderr
    assert status(firm)["state"] == "locked-by-other"
    rows = json.loads(firm.run("areas", "host", "--json").stdout)
    lock = next(r for r in rows if r["area"] == area)["lock"]
    assert lock["state"] == "locked" and lock["holder"] == "Client (Yamada)" and lock["until"]
    (client_books / "ledger.csv").write_text("march closed\n")
    client.run("close", "books")
    assert status(client)["state"] == "shared-idle"
    firm.run("open", "books")
    assert (firm_books / "ledger.csv").read_text() == "march closed\n"
    assert status(firm)["state"] == "locked-by-me"
    firm.run("close", "books")


def test_read_only_open_receives_without_the_lock(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    firm.run("open", "books")
    (firm_books / "ledger.csv").write_text("firm's April\n")
    firm.run("close", "books")
    firm.run("open", "books")
    client.run("open", "books", "--read-only")
    assert (client_books / "ledger.csv").read_text() == "firm's April\n"
    assert status(client)["state"] in ("shared-idle", "locked-by-other")
    client.run("open", "books", expect=3)


def test_lease_expiry_lets_the_next_holder_in_with_wait(firm, client, area):
    shared_pair(firm, client, area)
    client.run("open", "books", "--lease", "2s")  # then the client's laptop is closed
    firm.run("open", "books", expect=3)
    started = time.monotonic()
    waited = firm.run("open", "books", "--wait", "30s")
    assert "locked by you" in waited.stdout
    assert time.monotonic() - started < 30
    assert status(firm)["state"] == "locked-by-me"


def test_fenced_close_keeps_the_late_work_aside(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    client.run("open", "books", "--lease", "2s")
    (client_books / "ledger.csv").write_text("client's late work\n")
    backdate_top_lock(client.server, area)  # the client's lease runs out while it is away
    firm.run("open", "books")
    (firm_books / "ledger.csv").write_text("firm's newer work\n")
    firm.run("close", "books")
    fenced = client.run("close", "books", expect=6)
    assert "kept aside as" in fenced.stderr
    kept = [p for p in client.data.iterdir() if p.name.startswith("books.conflict-")]
    assert len(kept) == 1 and (kept[0] / "ledger.csv").read_text() == "client's late work\n"
    assert (client_books / "ledger.csv").read_text() == "firm's newer work\n"
    history = json.loads(firm.run("history", "books", "--json").stdout)
    assert [h["writer"] for h in history] == ["Firm (Sato)", "Firm (Sato)"]


def test_offline_edit_is_kept_and_sent_on_close(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    (client_books / "ledger.csv").write_text("typed while offline\n")  # edited without opening
    client.run("open", "books")
    assert (client_books / "ledger.csv").read_text() == "typed while offline\n"
    client.run("close", "books")
    firm.run("open", "books", "--read-only")
    assert (firm_books / "ledger.csv").read_text() == "typed while offline\n"


def test_both_sides_changed_keeps_the_local_copy_aside(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    firm.run("open", "books")
    (firm_books / "ledger.csv").write_text("firm's change\n")
    firm.run("close", "books")
    (client_books / "ledger.csv").write_text("client's unsent change\n")
    result = client.run("open", "books", expect=6)
    assert "kept aside as" in result.stderr
    kept = [p for p in client.data.iterdir() if p.name.startswith("books.conflict-")]
    assert (kept[0] / "ledger.csv").read_text() == "client's unsent change\n"
    assert (client_books / "ledger.csv").read_text() == "firm's change\n"
    assert status(client)["state"] == "locked-by-me"
    client.run("close", "books")


def test_run_renews_a_short_lease_while_the_program_runs(firm, client, area):
    _, client_books = shared_pair(firm, client, area)
    program = (
        "import pathlib, sys, time; time.sleep(7); "
        f"pathlib.Path({str(client_books / 'ledger.csv')!r}).write_text('edited in the app\\n'); "
        "sys.exit(42)"
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [CLOUDSHARE, "--home", str(client.root / "home"), "run", "books", "--lease", "2s", "--",
         sys.executable, "-c", program],
        env={**os.environ, "CLOUDSHARE_PASSWORD": SHARE_PASSWORD, "CLOUDSHARE_NAME": client.name},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(5)  # more than two lease periods: only renewal keeps the lock
    refused = firm.run("open", "books", expect=3)
    assert "Client (Yamada)" in refused.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 42, err
    assert time.monotonic() - started >= 7
    firm.run("open", "books")
    assert (firm.data / "books" / "ledger.csv").read_text() == "edited in the app\n"


def test_history_and_restore(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    for text in ("v2\n", "v3\n"):
        client.run("open", "books")
        (client_books / "ledger.csv").write_text(text)
        client.run("close", "books")
    history = json.loads(firm.run("history", "books", "--json").stdout)
    assert [h["version"] for h in history] == [1, 2, 3]
    assert [h["writer"] for h in history] == ["Firm (Sato)", "Client (Yamada)", "Client (Yamada)"]
    restored = json.loads(firm.run("restore", "books", "2", "--json").stdout)
    assert restored == {"name": "books", "version": 4, "restored_from": 2}
    assert (firm_books / "ledger.csv").read_text() == "v2\n"
    client.run("open", "books", "--read-only")
    assert (client_books / "ledger.csv").read_text() == "v2\n"
    history = json.loads(client.run("history", "books", "--json").stdout)
    assert history[-1]["restored_from"] == 2 and len(history) == 4


# --- stopping ------------------------------------------------------------------------------------


def test_only_i_stop_and_the_others_go_on(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    client.run("leave", "books", "--yes")
    assert status(client)["state"] == "unshared" and not status(client)["shared"]
    assert client_books.exists()
    firm.run("open", "books")
    (firm_books / "ledger.csv").write_text("still sharing\n")
    firm.run("close", "books")
    assert (client_books / "ledger.csv").read_text() != "still sharing\n"


def test_everyone_stops_delete_then_the_client_sees_it_gone(firm, client, area):
    shared_pair(firm, client, area)
    client.run("open", "books")
    firm.run("delete-area", "host", area, "--yes", expect=3)  # refused while the client holds it
    client.run("close", "books")
    firm.run("delete-area", "host", area, "--yes")
    assert status(firm)["state"] == "unshared"
    gone = client.run("open", "books", expect=4)
    assert "gone" in gone.stderr and "leave" in gone.stderr
    assert status(client)["state"] == "area-missing"
    client.run("leave", "books", "--yes")
    assert status(client)["state"] == "unshared"
    assert (client.data / "books" / "ledger.csv").exists()


def test_delete_needs_the_password(firm, client, area):
    shared_pair(firm, client, area)
    firm.run("delete-area", "host", area, "--yes", expect=7, password="wrong")
    client.run("open", "books")


def test_unlock_force_breaks_a_lock_and_is_recorded(firm, client, area):
    _, client_books = shared_pair(firm, client, area)
    client.run("open", "books")
    firm.run("open", "books", expect=3)
    firm.run("unlock", "books", "--force")
    firm.run("open", "books")
    (client_books / "ledger.csv").write_text("typed after the lock was broken\n")
    late = client.run("close", "books", expect=6)
    assert "kept aside" in late.stderr


def test_close_without_changes_after_losing_the_lease_is_harmless(firm, client, area):
    shared_pair(firm, client, area)
    client.run("open", "books", "--lease", "2s")
    backdate_top_lock(client.server, area)  # the lease ran out
    firm.run("open", "books")
    result = client.run("close", "books")
    assert "without changes" in result.stdout and "someone else holds the lock" in result.stdout
    assert status(client)["state"] == "locked-by-other"
    assert not [p for p in client.data.iterdir() if "conflict" in p.name]


def test_restore_refuses_to_replace_unsent_local_changes(firm, client, area):
    firm_books, _ = shared_pair(firm, client, area)
    firm.run("open", "books")
    (firm_books / "ledger.csv").write_text("v2\n")
    firm.run("close", "books")
    (firm_books / "ledger.csv").write_text("unsent work\n")
    result = firm.run("restore", "books", "1", expect=1)
    assert "never sent" in result.stderr
    assert (firm_books / "ledger.csv").read_text() == "unsent work\n"


# --- host keys ---------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_without_confirmation(share_server, tmp_path):
    home = Home(tmp_path / "new", "Someone", share_server)
    result = home.run("remote", "add", "host", share_server.url(), "--identity",
                      str(share_server.identity), expect=8)
    assert share_server.host_key_fingerprint in result.stderr + result.stdout


def test_changed_host_key_is_always_refused(firm, share_server, area):
    books(firm)
    known = firm.root / "home" / "known_hosts"
    lines = known.read_text().split()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode().split()[1]
    known.write_text(f"{lines[0]} ssh-ed25519 {other}\n")
    result = firm.run("share", "books", str(firm.data / "books"), "--remote", "host", "--area", area,
                      "--yes", expect=8)
    assert "CHANGED" in result.stderr
    assert not registered(firm)  # a failed set-up leaves nothing behind


# --- the communication ID becomes unusable ------------------------------------------------------


def test_communication_id_removed_gives_exit_5_then_release(share_server: ShareServer, tmp_path, area):
    if share_server.kind == "openssh":
        from tests.fixtures_sshd import start_sshd, stop_sshd

        proc, server = start_sshd(tmp_path / "own-sshd")
        revoke = (tmp_path / "own-sshd" / "authorized_keys").unlink
    else:
        from cloudshare_p2p import host as hostlib

        proc = None
        host_dir = share_server.root.parent.parent
        comm_id = f"gone-{uuid.uuid4().hex[:6]}"
        hostlib.add_id(host_dir, comm_id, None, Path(str(share_server.identity) + ".pub").read_text())
        server = ShareServer(**{**share_server.__dict__, "user": comm_id,
                                "root": host_dir / "data" / comm_id})
        revoke = lambda: hostlib.remove_id(host_dir, comm_id)  # noqa: E731
    try:
        firm, client = Home(tmp_path / "f", "Firm", server), Home(tmp_path / "c", "Client", server)
        firm.add_remote(), client.add_remote()
        shared_pair(firm, client, area)
        revoke()
        refused = client.run("open", "books", expect=5)
        assert "communication ID" in refused.stderr
        assert status(client)["state"] == "area-missing"
        assert status(client)["missing_reason"] == "id-unusable"
        client.run("leave", "books", "--yes")
        assert status(client)["state"] == "unshared"
    finally:
        if proc is not None:
            stop_sshd(proc)


# --- a process killed in a transient state ------------------------------------------------------


def test_share_killed_midway_resumes_on_the_next_command(firm, client, area, share_server):
    big = firm.data / "big.db"
    big.write_bytes(os.urandom(48 << 20))
    proc = subprocess.Popen(
        [CLOUDSHARE, "--home", str(firm.root / "home"), "share", "books", str(big), "--remote", "host",
         "--area", area, "--yes"],
        env={**os.environ, "CLOUDSHARE_PASSWORD": SHARE_PASSWORD, "CLOUDSHARE_NAME": firm.name},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    config = share_server.root / area / "config"
    deadline = time.monotonic() + 60
    while not config.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=10)
    row = status(firm)
    if row["state"] == "shared-idle":
        pytest.skip("the share finished before it could be killed (machine too fast)")
    assert row["state"] == "initializing" and row["step"] in ("create-area", "upload")
    resumed = firm.run("open", "books")
    assert "resuming" in resumed.stderr
    assert status(firm)["state"] == "locked-by-me"
    firm.run("close", "books")
    client.run("join", "books", str(client.data / "big.db"), "--remote", "host", "--area", area)
    assert (client.data / "big.db").read_bytes() == big.read_bytes()


def test_interrupted_leave_finishes_on_the_next_command(firm, client, area):
    shared_pair(firm, client, area)
    from cloudshare_p2p.registry import Registry
    from statemachine import DataSetMachine, Event

    with Registry(client.root / "home") as registry:  # as if killed right after `leave` began
        row = registry.get_dataset("books")
        blob = json.loads(row["machine"])
        machine = DataSetMachine.from_dict(blob["machine"])
        machine.fire(Event.LEAVE)
        blob["machine"] = machine.to_dict()
        registry.update_dataset("books", state=machine.state.value, step=machine.context.step,
                                machine=json.dumps(blob))
    assert status(client)["state"] == "leaving"
    result = client.run("leave", "books", "--yes")
    assert "interrupted" in result.stderr
    assert status(client)["state"] == "unshared"


def test_status_refresh_shows_the_hosts_view(firm, client, area):
    firm_books, _ = shared_pair(firm, client, area)
    firm.run("open", "books", "--note", "audit")
    assert status(client)["state"] == "shared-idle"  # offline view: as last seen
    rows = json.loads(client.run("status", "--refresh", "--json").stdout)
    assert rows[0]["state"] == "locked-by-other" and rows[0]["lock_holder"] == "Firm (Sato)"
    (firm_books / "ledger.csv").write_text("audited\n")
    firm.run("close", "books")
    rows = json.loads(client.run("status", "--refresh", "--json").stdout)
    assert rows[0]["state"] == "shared-idle" and rows[0]["host_version"] == 2 and rows[0]["version"] == 1
    assert "(host has v2)" in client.run("status", "--refresh").stdout


def test_lock_claimed_by_a_killed_open_is_taken_back(firm, client, area, share_server):
    """`open` dies right after its claim: the next `open` takes the lock back at once."""
    shared_pair(firm, client, area)
    from cloudshare_p2p.area import Area, Party
    from cloudshare_p2p.registry import Registry
    from tests.parties import session_for

    with Registry(firm.root / "home") as registry:
        row = registry.get_dataset("books")
        blob = json.loads(row["machine"])
        blob["pending_session"] = f"{registry.install_id}-deadbeef0001"  # saved before claiming
        registry.update_dataset("books", machine=json.dumps(blob))
        me = Party("Firm (Sato)", registry.install_id, "test")
    with session_for(share_server, firm.root) as session:
        claim = Area(session, area).acquire(me, 3600, "", session=blob["pending_session"])
        assert claim.session == blob["pending_session"]  # ...and then the process was killed
    client.run("open", "books", expect=3)  # the others see the lock
    result = firm.run("open", "books")
    assert "took back the lock" in result.stderr
    firm.run("close", "books")
    client.run("open", "books")
