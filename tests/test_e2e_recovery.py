"""No lost work, no stray lock: interrupted commands, leftovers and a removed ID, end to end.

The firm and the client are two homes on one machine running the real `cloudshare`
against the private OpenSSH sshd and the embedded host. Interruptions are real: SIGKILL
and SIGINT sent to the process at a chosen point (the moment its registry says it holds
the lock), never a stub.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from cloudshare_p2p.worklock import working_on
from tests.homes import CLOUDSHARE, SHARE_PASSWORD, Home

pytestmark = pytest.mark.server
BIG = 24 << 20  # large enough that receiving it takes a moment on loopback


def status(home: Home, name: str = "books") -> dict:
    return json.loads(home.run("status", name, "--json").stdout)[0]


def machine(home: Home, name: str = "books") -> dict:
    """The persisted state machine of a data set, read straight from the registry."""
    with sqlite3.connect(home.root / "home" / "registry.db", timeout=10) as db:
        row = db.execute("select machine from datasets where name = ?", (name,)).fetchone()
    return json.loads(row[0])["machine"] if row and row[0] else {"state": "unshared", "context": {}}


def shared_pair(firm: Home, client: Home, area: str) -> tuple[Path, Path]:
    """The firm shares a folder with a large ledger; the client joins."""
    firm_books = firm.data / "books"
    firm_books.mkdir()
    (firm_books / "ledger.db").write_bytes(os.urandom(BIG))
    (firm_books / "memo.txt").write_text("v1\n")
    firm.run("share", "books", str(firm_books), "--remote", "host", "--area", area, "--yes")
    client_books = client.data / "books"
    client.run("join", "books", str(client_books), "--remote", "host", "--area", area)
    return firm_books, client_books


def firm_sends_version_2(firm: Home, firm_books: Path) -> bytes:
    firm.run("open", "books")
    ledger = os.urandom(BIG)
    (firm_books / "ledger.db").write_bytes(ledger)
    (firm_books / "memo.txt").write_text("firm's v2\n")
    firm.run("close", "books")
    return ledger


def start(home: Home, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CLOUDSHARE_PASSWORD", "SSH_AUTH_SOCK")}
    env.update(CLOUDSHARE_NAME=home.name, CLOUDSHARE_PASSWORD=SHARE_PASSWORD)
    return subprocess.Popen([CLOUDSHARE, "--home", str(home.root / "home"), *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def signal_when_locked(home: Home, proc: subprocess.Popen, sig: int, limit: float = 30) -> None:
    """Send `sig` the moment the registry records the lock, before the receive ends."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        with_lock = machine(home)
        if with_lock["state"] == "locked-by-me" and not with_lock["context"].get("received"):
            proc.send_signal(sig)
            return
        time.sleep(0.005)
    pytest.fail(f"the open never reached 'lock taken, newest not received' (exit {proc.poll()})")


def test_an_open_killed_while_receiving_never_lets_close_send_the_old_copy(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    ledger_v2 = firm_sends_version_2(firm, firm_books)
    proc = start(client, "open", "books")
    signal_when_locked(client, proc, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (client_books / "memo.txt").read_text() == "v1\n"  # the old copy is still there
    (client_books / "memo.txt").write_text("client's edit of the OLD copy\n")
    closed = client.run("close", "books", expect=6)
    assert "kept aside" in closed.stderr and "you still hold the lock" in closed.stderr
    assert (client_books / "ledger.db").read_bytes() == ledger_v2
    assert (client_books / "memo.txt").read_text() == "firm's v2\n"
    kept = [p for p in client.data.iterdir() if p.name.startswith("books.") and p != client_books]
    assert any((p / "memo.txt").read_text() == "client's edit of the OLD copy\n" for p in kept)
    history = json.loads(firm.run("history", "books", "--json").stdout)
    assert [v["version"] for v in history] == [1, 2]  # nothing was published over version 2
    client.run("close", "books")  # now built on version 2: closes without changes
    assert status(client)["state"] == "shared-idle"


def test_the_next_open_receives_first_after_a_killed_open(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    ledger_v2 = firm_sends_version_2(firm, firm_books)
    proc = start(client, "open", "books")
    signal_when_locked(client, proc, signal.SIGKILL)
    proc.wait(timeout=30)
    again = client.run("open", "books")
    assert "receiving it now" in again.stderr and "already open" not in again.stdout
    assert (client_books / "ledger.db").read_bytes() == ledger_v2
    assert status(client)["state"] == "locked-by-me"
    client.run("close", "books")


def test_ctrl_c_during_open_gives_the_lock_back_and_says_so(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    firm_sends_version_2(firm, firm_books)
    proc = start(client, "open", "books")
    signal_when_locked(client, proc, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "the lock was released" in err and "Traceback" not in err
    assert status(client)["state"] == "shared-idle"
    firm.run("open", "books")  # nobody is left waiting for an 8-hour lease
    firm.run("close", "books")


def test_sharing_again_under_the_same_name_opens_and_leaves_no_stray_lock(firm, client, area):
    books = firm.data / "books.csv"
    books.write_text("ledger\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    for _ in range(3):  # lock generations climb in the first area
        firm.run("open", "books")
        firm.run("close", "books")
    firm.run("leave", "books", "--yes")
    second = f"{area}-2"
    firm.run("share", "books", str(books), "--remote", "host", "--area", second, "--yes")
    firm.run("open", "books")
    firm.run("close", "books")
    rows = {r["area"]: r for r in json.loads(client.run("areas", "host", "--json").stdout)}
    assert rows[second]["lock"]["state"] == "free"


def test_leave_works_while_holding_the_lock_with_an_unusable_id(firm, client, area, tmp_path):
    books = firm.data / "books.csv"
    books.write_text("ledger\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    firm.run("open", "books")
    books.write_text("ledger with unsent work\n")
    stranger = tmp_path / "not-authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with sqlite3.connect(firm.root / "home" / "registry.db") as db:  # the firm removed this ID's key
        db.execute("update remotes set identity = ?", (str(stranger),))
    assert firm.run("close", "books", expect=5).returncode == 5
    left = firm.run("leave", "books", "--yes")
    assert "NOT sent" in left.stdout and str(books) in left.stdout
    assert books.read_text() == "ledger with unsent work\n"
    assert status(firm)["state"] == "unshared"


def test_a_second_command_on_the_same_data_set_says_another_is_working(firm, area):
    books = firm.data / "books.csv"
    books.write_text("ledger\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    with working_on(firm.root / "home", "books"):
        busy = firm.run("open", "books", expect=3)
    assert "another cloudshare command is working on books" in busy.stderr
    firm.run("open", "books")
    firm.run("close", "books")


def test_a_long_note_is_refused_before_anything_is_sent(firm, area):
    books = firm.data / "books.csv"
    books.write_text("ledger\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    refused = firm.run("open", "books", "--note", "x" * 70_000, expect=2)
    assert "at most 1024" in refused.stderr
    assert status(firm)["state"] == "shared-idle"
    assert firm.run("open", "books", "--lease", "8", expect=2).stderr.count("say 8h or 8m") == 1


def test_ctrl_c_during_close_keeps_the_lock_and_close_again_sends(firm, client, area, share_server):
    firm_books, client_books = shared_pair(firm, client, area)
    client.run("open", "books")
    new_ledger = os.urandom(BIG)
    (client_books / "ledger.db").write_bytes(new_ledger)
    proc = start(client, "close", "books")
    tmp = share_server.root / area / "tmp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None and not any(tmp.iterdir()):
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the close finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert "not sent" in err and "close books" in err and "Traceback" not in err
    assert status(client)["state"] == "locked-by-me"
    assert "sent as version 2" in client.run("close", "books").stdout
    firm.run("open", "books")
    assert (firm_books / "ledger.db").read_bytes() == new_ledger
    firm.run("close", "books")


def test_a_receive_that_fails_puts_unsent_changes_back_in_place(firm, client, area, share_server):
    import shutil

    firm_books, client_books = shared_pair(firm, client, area)
    firm_sends_version_2(firm, firm_books)
    (client_books / "memo.txt").write_text("client's unsent note\n")  # changed, never sent
    for store in ("chunks", "packs"):  # version 2 can no longer be received (format 2: packs)
        shutil.rmtree(share_server.root / area / store)
    failed = client.run("open", "books", expect=None)
    assert failed.returncode == 11 and "Traceback" not in failed.stderr, failed.stderr  # area damaged
    assert "the lock was released" in failed.stderr
    assert (client_books / "memo.txt").read_text() == "client's unsent note\n"  # still in place
    assert status(client)["state"] == "shared-idle"


@pytest.mark.parametrize("writer, reader", [("2", "1"), ("1", "2")],
                         ids=["format-2-version", "version-1-area"])
def test_a_local_copy_equal_to_the_newest_version_opens_without_a_conflict(firm, client, area, writer,
                                                                           reader):
    """The copy is scanned the way the version was cut, whatever this computer writes itself."""
    import shutil

    firm.env["CLOUDSHARE_WRITE_FORMAT"], client.env["CLOUDSHARE_WRITE_FORMAT"] = writer, reader
    firm_books = firm.data / "books"
    firm_books.mkdir()
    (firm_books / "ledger.db").write_bytes(os.urandom(3 << 20))
    (firm_books / "memo.txt").write_text("v1\n")
    firm.run("share", "books", str(firm_books), "--remote", "host", "--area", area, "--yes")
    client_books = client.data / "books"
    client.run("join", "books", str(client_books), "--remote", "host", "--area", area)
    firm.run("open", "books")
    (firm_books / "ledger.db").write_bytes(os.urandom(3 << 20))
    (firm_books / "memo.txt").write_text("firm's v2\n")
    firm.run("close", "books")
    shutil.rmtree(client_books)
    shutil.copytree(firm_books, client_books)  # version 2's bytes, come another way (a USB stick)
    opened = client.run("open", "books")
    assert "kept aside" not in opened.stdout + opened.stderr
    assert sorted(os.listdir(client.data)) == ["books"]  # nothing kept aside as local changes
    assert status(client)["state"] == "locked-by-me"
    assert (client_books / "memo.txt").read_text() == "firm's v2\n"
