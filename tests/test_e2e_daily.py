"""Daily use as an office clerk would: the share password once per computer, then never again.

The firm and the client are two homes on one machine running the real `cloudshare`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.homes import SHARE_PASSWORD, Home

pytestmark = pytest.mark.server


def shared_pair(firm: Home, client: Home, area: str) -> tuple[Path, Path]:
    firm_books = firm.data / "books.csv"
    firm_books.write_text("date,amount\n")
    firm.run("share", "books", str(firm_books), "--remote", "host", "--area", area, "--yes")
    client_books = client.data / "books.csv"
    client.run("join", "books", str(client_books), "--remote", "host", "--area", area)
    return firm_books, client_books


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_after_join_open_close_history_restore_need_no_password(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    client.run("open", "books", password=None)
    client_books.write_text("date,amount\n2026-03-01,1200\n")
    client.run("close", "books", password=None)
    firm.run("open", "books", password=None)
    assert firm_books.read_text() == "date,amount\n2026-03-01,1200\n"
    firm.run("close", "books", password=None)
    versions = json.loads(client.run("history", "books", "--json", password=None).stdout)
    assert [v["version"] for v in versions] == [1, 2]
    client.run("restore", "books", "1", password=None)
    assert client_books.read_text() == "date,amount\n"


def test_the_password_lands_in_no_file_of_either_home(firm, client, area):
    shared_pair(firm, client, area)
    client.run("open", "books", password=None)
    client.run("close", "books", password=None)
    secret = SHARE_PASSWORD.encode()
    for home in (firm, client):
        for path in files_under(home.root / "home"):
            data = path.read_bytes()
            assert secret not in data and SHARE_PASSWORD.encode("utf-16-le") not in data, path


def test_no_remember_keeps_nothing_and_asks_every_time(firm, client, area):
    firm_books = firm.data / "books.csv"
    firm_books.write_text("x\n")
    firm.run("--no-remember", "share", "books", str(firm_books), "--remote", "host", "--area", area, "--yes")
    asked = firm.run("open", "books", password=None, expect=1)
    assert "share password of books is needed" in asked.stderr
    client.run("join", "books", str(client.data / "b.csv"), "--remote", "host", "--area", area,
               CLOUDSHARE_REMEMBER="0")
    assert client.run("open", "books", password=None, expect=1).returncode == 1


def test_forget_removes_the_key_and_a_failed_join_leaves_nothing(firm, client, area):
    shared_pair(firm, client, area)
    client.run("forget", "books")
    assert client.run("open", "books", password=None, expect=1).returncode == 1
    client.run("open", "books")  # the password given again is remembered again
    client.run("close", "books", password=None)
    failed = client.run("join", "other", str(client.data / "o.csv"), "--remote", "host", "--area", area,
                        password="wrong", expect=7)
    assert "does not match" in failed.stderr
    names = [r["name"] for r in json.loads(client.run("status", "--json").stdout)]
    assert names == ["books"]  # the failed set-up left nothing behind
    (client.data / "notes.txt").write_text("mine\n")
    client.run("add", "notes", str(client.data / "notes.txt"))
    gone = client.run("forget", "notes")
    assert "no longer registered" in gone.stdout and "not touched" in gone.stdout
    assert (client.data / "notes.txt").read_text() == "mine\n"
    assert [r["name"] for r in json.loads(client.run("status", "--json").stdout)] == ["books"]


def test_one_local_path_cannot_be_registered_under_two_names(firm):
    (firm.data / "b.csv").write_text("x\n")
    firm.run("add", "books", str(firm.data / "b.csv"))
    twice = firm.run("add", "books2", str(firm.data / "b.csv"), expect=1)
    assert "already registered as books" in twice.stderr


def test_a_short_share_password_is_refused_with_the_reason(firm, area):
    books = firm.data / "books.csv"
    books.write_text("x\n")
    refused = firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes",
                       password="short", expect=2)
    assert "at least 8 characters" in refused.stderr and "offline" in refused.stderr
    assert json.loads(firm.run("status", "--json").stdout) == []  # nothing left behind


def test_join_into_a_folder_that_does_not_exist_yet(firm, client, area):
    books = firm.data / "books.csv"
    books.write_text("x\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    target = client.data / "new" / "nested" / "books.csv"
    client.run("join", "books", str(target), "--remote", "host", "--area", area)
    assert target.read_text() == "x\n"


def test_join_keeps_aside_only_what_differs(firm, client, area):
    books = firm.data / "books.csv"
    books.write_text("the same ledger\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    target = client.data / "books.csv"
    target.write_text("the same ledger\n")  # the client already has this very copy
    joined = client.run("join", "books", str(target), "--remote", "host", "--area", area)
    assert "kept aside" not in joined.stderr
    assert [p.name for p in client.data.iterdir()] == ["books.csv"]


def test_a_same_size_edit_with_its_time_put_back_is_still_sent(firm, client, area):
    import os

    firm_books, client_books = shared_pair(firm, client, area)
    client.run("open", "books", password=None)
    before = client_books.stat()
    client_books.write_text("date,amoun!\n")  # same size
    os.utime(client_books, ns=(before.st_atime_ns, before.st_mtime_ns))
    sent = client.run("close", "books", password=None)
    assert "sent as version 2" in sent.stdout
    firm.run("open", "books", password=None)
    assert firm_books.read_text() == "date,amoun!\n"
    firm.run("close", "books", password=None)


def test_a_typo_in_an_area_name_says_which_areas_exist(firm, client, area):
    shared_pair(firm, client, area)
    typo = client.run("join", "other", str(client.data / "o.csv"), "--remote", "host",
                      "--area", area + "x", expect=1)
    assert f"no area named {area}x on this host" in typo.stderr and area in typo.stderr
    assert "deleted" not in typo.stderr
    gone = firm.run("delete-area", "host", area + "x", "--yes", expect=1)
    assert f"no area named {area}x" in gone.stderr


def test_a_late_close_after_a_broken_lock_says_who_broke_it(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    client.run("open", "books")
    firm.run("unlock", "books", "--force")
    client_books.write_text("late work\n")
    late = client.run("close", "books", expect=6)
    assert "broken by Firm (Sato) at" in late.stderr and "ran out" not in late.stderr


def test_hints_name_only_options_the_command_has(firm, client, area):
    shared_pair(firm, client, area)
    client.run("open", "books")
    refused = firm.run("restore", "books", "1", expect=3)
    assert "--wait" not in refused.stderr and "--read-only" not in refused.stderr
    books = firm.data / "other.csv"
    books.write_text("x\n")
    asked = firm.run("share", "other", str(books), "--remote", "host", "--area", area + "-o", expect=1)
    assert "pass --yes" in asked.stderr and "--accept-host-key" not in asked.stderr


def test_run_of_a_missing_program_exits_127_and_says_it_once(firm, client, area):
    shared_pair(firm, client, area)
    result = client.run("run", "books", "--", "no-such-accounting-app", expect=127)
    assert result.stderr.count("no-such-accounting-app") == 1, result.stderr
    assert json.loads(client.run("status", "books", "--json").stdout)[0]["state"] == "shared-idle"


def test_history_shows_notes_and_areas_has_a_header(firm, client, area):
    firm_books, client_books = shared_pair(firm, client, area)
    client.run("open", "books")
    client_books.write_text("march\n")
    client.run("close", "books", "--note", "March receipts entered")
    history = client.run("history", "books").stdout
    assert history.splitlines()[0].startswith("VERSION") and "March receipts entered" in history
    assert client.run("areas", "host").stdout.splitlines()[0].startswith("AREA")


def test_read_only_open_says_who_holds_it_and_keeps_the_copy_read_only(firm, client, area):
    import os
    import stat

    firm_books, client_books = shared_pair(firm, client, area)
    firm.run("open", "books", "--note", "closing March")
    firm_books.write_text("firm's work\n")
    firm.run("close", "books")
    firm.run("open", "books", "--note", "April")
    seen = client.run("open", "books", "--read-only")
    assert "locked by Firm (Sato)" in seen.stdout and "read-only" in seen.stdout
    assert client_books.read_text() == "firm's work\n"
    assert not stat.S_IMODE(os.stat(client_books).st_mode) & stat.S_IWUSR
    row = json.loads(client.run("status", "books", "--json").stdout)[0]
    assert row["state"] == "locked-by-other" and row["lock_holder"] == "Firm (Sato)"
    firm.run("close", "books")
    client.run("open", "books")
    assert stat.S_IMODE(os.stat(client_books).st_mode) & stat.S_IWUSR
    client.run("close", "books")


def test_status_refresh_says_in_words_that_the_id_is_unusable(client, tmp_path, firm, area):
    import sqlite3
    import subprocess

    shared_pair(firm, client, area)
    stranger = tmp_path / "not-authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with sqlite3.connect(client.root / "home" / "registry.db") as db:
        db.execute("update remotes set identity = ?", (str(stranger),))
    shown = client.run("status", "--refresh").stdout
    assert "communication ID unusable" in shown and "LoginRefused" not in shown and "ID unusable" in shown


def test_remote_add_checks_the_key_file_and_the_base_folder(share_server, tmp_path):
    home = Home(tmp_path / "new", "New clerk", share_server)
    pub = Path(str(share_server.identity) + ".pub")
    if not pub.exists():
        pub = tmp_path / "id.pub"
        pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq4 someone\n")
    wrong = home.run("remote", "add", "firm", share_server.url(), "--identity", str(pub),
                     "--accept-host-key", share_server.host_key_fingerprint, expect=1)
    assert ".pub" in wrong.stderr and "PEM" not in wrong.stderr
    url = share_server.url().rstrip("/") + "/no-such-folder"
    missing = home.run("remote", "add", "firm", url, "--identity", str(share_server.identity),
                       "--accept-host-key", share_server.host_key_fingerprint, expect=1)
    assert "does not exist on the host" in missing.stderr


def test_a_cp932_console_never_crashes_and_json_is_utf8(firm, area):
    books = firm.data / "帳簿.csv"
    books.write_text("日付,金額\n")
    firm.run("share", "帳簿", str(books), "--remote", "host", "--area", area, "--yes")
    import os
    import subprocess

    from tests.homes import CLOUDSHARE

    env = dict(os.environ, PYTHONIOENCODING="cp932", CLOUDSHARE_NAME="Firm")
    shown = subprocess.run([CLOUDSHARE, "--home", str(firm.root / "home"), "status"], env=env,
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    out, err = shown.stdout.decode("cp932"), shown.stderr.decode("cp932")
    assert shown.returncode == 0 and "Traceback" not in err and "* 帳簿" in out
    raw = firm.run("status", "--json", PYTHONIOENCODING="utf-8").stdout
    assert "帳簿" in raw and "\\u" not in raw


def test_a_path_the_host_refuses_is_said_plainly(embedded_server, tmp_path):
    home = Home(tmp_path / "clerk", "Clerk", embedded_server)
    url = embedded_server.url().rstrip("/") + "/../../etc"
    refused = home.run("remote", "add", "firm", url, "--identity", str(embedded_server.identity),
                       "--accept-host-key", embedded_server.host_key_fingerprint, expect=None)
    assert refused.returncode in (1, 2), refused.stderr
    assert "Traceback" not in refused.stderr and "internal error" not in refused.stderr
    assert "PermissionError" not in refused.stderr and "Errno" not in refused.stderr
    assert "refused" in refused.stderr or "does not exist" in refused.stderr, refused.stderr
