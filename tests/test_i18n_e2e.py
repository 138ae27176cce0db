"""A representative half of the e2e flows in Japanese (issue 12), against the real servers.

Run once with LANG=ja_JP.UTF-8 and once with CLOUDSHARE_LANG=ja and LANG=C: share, join, open
while another holds the lock (who, since and until in JST, and what to do), close, status,
history, leave, a wrong password. Exit codes are the same as in English; `--json` stays English.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from tests.homes import CLOUDSHARE, Home

pytestmark = pytest.mark.server

UNSET = {"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""}
JAPANESE = {
    "LANG": {"LANG": "ja_JP.UTF-8", "CLOUDSHARE_LANG": "", **UNSET},
    "CLOUDSHARE_LANG": {"CLOUDSHARE_LANG": "ja", "LANG": "C", **UNSET},
}
TOKYO = {"TZ": "Asia/Tokyo"}
KANA = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.fixture(params=sorted(JAPANESE))
def how(request) -> str:
    return request.param


@pytest.fixture
def firm(share_server, tmp_path, how, home_templates) -> Home:
    env = {**JAPANESE[how], **TOKYO}
    return home_templates.home(share_server, tmp_path / "firm", "佐藤（会計事務所）", env)


@pytest.fixture
def client(share_server, tmp_path, how, home_templates) -> Home:
    env = {**JAPANESE[how], **TOKYO}
    return home_templates.home(share_server, tmp_path / "client", "山田商事", env)


@pytest.fixture
def area() -> str:
    return f"books-{uuid.uuid4().hex[:8]}"


def books(home: Home) -> str:
    path = home.data / "books"
    (path / "journal").mkdir(parents=True, exist_ok=True)
    (path / "ledger.csv").write_text("date,amount\n2026-03-01,1200\n", encoding="utf-8")
    (path / "journal" / "2026-03.csv").write_text("receipt,1200\n", encoding="utf-8")
    return str(path)


def test_the_daily_flow_speaks_japanese(firm, client, area):
    shared = firm.run("share", "books", books(firm), "--remote", "host", "--area", area, "--yes")
    assert "クラウドシェアを開始しました" in shared.stdout and area in shared.stdout

    joined = client.run("join", "books", str(client.data / "books"), "--remote", "host", "--area", area)
    assert "受信しました" in joined.stdout and "クラウドシェアを開始しました" in joined.stdout

    opened = client.run("open", "books", "--note", "3月分の入力中")
    assert "あなたがロック中です" in opened.stdout and "JST" in opened.stdout

    # the firm selects the data while the client works on it: who, since, until (JST), what to do
    refused = firm.run("open", "books", expect=3)
    said = refused.stderr
    assert "エラー: books は山田商事 さんがロック中" in said, said
    assert re.search(r"（\d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST から \d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST まで）",
                     said), said
    assert "メモ: 3月分の入力中" in said
    assert "対処: 閉じられるまで待つ（`--wait`）か、読み取り専用で開いてください（`--read-only`）" in said

    areas = firm.run("areas", "host")
    assert "領域" in areas.stdout and "山田商事 さんがロック中" in areas.stdout

    (client.data / "books" / "ledger.csv").write_text("date,amount\n2026-03-02,5500\n", encoding="utf-8")
    closed = client.run("close", "books")
    assert "バージョン 2 として送信しました" in closed.stdout and "ロックを解除しました" in closed.stdout

    received = firm.run("open", "books")
    assert "最新データ（バージョン 2、山田商事 さんが送信）を受信しました" in received.stdout
    firm.run("close", "books")

    shown = firm.run("status")
    assert "☁ books" in shown.stdout and "共有中" in shown.stdout and f"host/{area}" in shown.stdout
    data = json.loads(firm.run("status", "--json").stdout)[0]
    assert data["state"] == "shared-idle"  # --json stays English

    history = client.run("history", "books")
    lines = history.stdout.splitlines()
    assert lines[0].startswith("版 ") and "日時" in lines[0] and "送信者" in lines[0]
    assert "佐藤（会計事務所）" in history.stdout and "山田商事" in history.stdout
    # columns line up by display width: the size column starts at the same place on every line
    starts = {len(line[:line.index(" B ") - 3].encode("cp932", "replace")) for line in lines[1:]}
    assert len(starts) == 1, history.stdout

    left = client.run("leave", "books", "--yes")
    assert "クラウドシェアを解除しました" in left.stdout
    assert "未共有" in client.run("status").stdout


def test_a_wrong_password_is_said_in_japanese(firm, client, area):
    firm.run("share", "books", books(firm), "--remote", "host", "--area", area, "--yes")
    wrong = client.run("join", "books", str(client.data / "books"), "--remote", "host", "--area", area,
                       password="not the password", expect=7)
    assert "共有パスワードが一致しません" in wrong.stderr
    assert "対処: クラウドシェアを始めた人に共有パスワードを確認し" in wrong.stderr
    assert not (client.data / "books").exists()


def test_a_deleted_area_and_a_typo_are_said_in_japanese(firm, client, area):
    firm.run("share", "books", books(firm), "--remote", "host", "--area", area, "--yes")
    typo = client.run("join", "books", str(client.data / "books"), "--remote", "host", "--area",
                      area + "x", expect=1)
    assert "クラウドシェア領域" in typo.stderr and area in typo.stderr
    client.run("join", "books", str(client.data / "books"), "--remote", "host", "--area", area)
    deleted = firm.run("delete-area", "host", area, "--yes")
    assert "クラウドシェアのデータを削除しました" in deleted.stdout
    gone = client.run("open", "books", expect=4)
    assert "中継サーバーにありません" in gone.stderr and "cloudshare leave" in gone.stderr


def test_a_cp932_console_with_japanese_messages_never_crashes(firm, client, area, how):
    """Redirected output on a Japanese Windows is cp932 (strict): ☁ cannot be encoded, Japanese can."""
    firm.run("share", "books", books(firm), "--remote", "host", "--area", area, "--yes")
    client.run("join", "books", str(client.data / "books"), "--remote", "host", "--area", area)
    client.run("open", "books", "--note", "入力中 — 3月")  # the em dash has no cp932 form
    env = dict(os.environ, PYTHONIOENCODING="cp932", CLOUDSHARE_NAME="佐藤", **JAPANESE[how], **TOKYO)
    for args, code in ((("status",), 0), (("open", "books"), 3), (("areas", "host"), 0),
                       (("history", "books"), 0)):
        result = subprocess.run([CLOUDSHARE, "--home", str(firm.root / "home"), *args], env=env,
                                capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        out, err = result.stdout.decode("cp932"), result.stderr.decode("cp932")
        assert result.returncode == code, (args, out, err)
        assert "Traceback" not in err and KANA.search(out + err), (args, out, err)
        if args[0] == "status":
            assert "* books" in out  # ☁ degrades to a plain marker
        if args[0] == "open":
            assert "山田商事 さんがロック中" in err and "入力中 ? 3月" in err
