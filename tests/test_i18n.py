"""Japanese (issue 12): the catalog is complete and compiled, the language is chosen as documented,
columns align by display width, and `--help`/usage errors speak Japanese (no server needed)."""

from __future__ import annotations

import gettext
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po

from cloudshare_p2p import i18n, i18n_tools
from tests.homes import CLOUDSHARE

JA_PO = i18n.LOCALE_DIR / "ja" / "LC_MESSAGES" / "cloudshare.po"
JA_MO = JA_PO.with_suffix(".mo")
FIELD = re.compile(r"\{[^{}]*\}|%\([a-z_]+\)[sd]")


def _key(message) -> str:
    return message.id[0] if isinstance(message.id, tuple) else message.id


def _ja():
    with open(JA_PO, "rb") as fh:
        return read_po(fh, locale="ja", domain=i18n.DOMAIN)


def _extracted_pot(tmp_path: Path):
    """Our modules' msgids, extracted with Babel's API into a temporary POT and read back."""
    pot = tmp_path / "messages.pot"
    buffer = io.BytesIO()
    write_po(buffer, i18n_tools.extract_app(), include_lineno=False)
    pot.write_bytes(buffer.getvalue())
    with open(pot, "rb") as fh:
        return read_po(fh)


def _click_msgids() -> set[str]:
    """click's msgids, listed explicitly in locale/click.pot (extracted from the pinned click)."""
    with open(i18n_tools.CLICK_POT, "rb") as fh:
        return i18n_tools.msgids(read_po(fh))


def _translated(message) -> bool:
    strings = message.string if isinstance(message.string, tuple) else (message.string,)
    return bool(strings) and all(s and s.strip() for s in strings)


# --- the catalog ---------------------------------------------------------------------------------


def test_every_user_facing_string_has_a_japanese_translation(tmp_path):
    extracted = _extracted_pot(tmp_path)
    ja = {_key(m): m for m in _ja() if m.id}
    assert len(extracted) > 400  # the extraction found the messages at all
    missing = sorted(_key(m) for m in extracted if m.id and _key(m) not in ja)
    assert not missing, "not in ja.po (run `make i18n` and translate):\n" + "\n".join(missing)
    empty = sorted(k for k, m in ja.items() if not _translated(m))
    assert not empty, "untranslated in ja.po:\n" + "\n".join(empty)
    fuzzy = sorted(k for k, m in ja.items() if m.fuzzy)
    assert not fuzzy, "fuzzy in ja.po:\n" + "\n".join(fuzzy)


def test_every_catalog_entry_is_used(tmp_path):
    used = i18n_tools.msgids(_extracted_pot(tmp_path)) | _click_msgids()
    unused = sorted(_key(m) for m in _ja() if m.id and _key(m) not in used)
    assert not unused, "in ja.po but used nowhere (remove them with `make i18n`):\n" + "\n".join(unused)


def test_clicks_msgids_are_those_of_the_installed_click():
    """click's msgids drift between releases: the explicit list must follow the pinned click."""
    assert i18n_tools.msgids(i18n_tools.extract_click()) == _click_msgids(), (
        "click changed its messages: run `make i18n` and translate the new ones")
    ja = {_key(m) for m in _ja() if m.id}
    assert _click_msgids() <= ja
    for needed in ("Usage:", "Options", "Show this message and exit.", "Error: {message}",
                   "Missing argument", "No such option {name!r}."):
        assert needed in _click_msgids()


def test_translations_keep_every_placeholder():
    for message in _ja():
        if not message.id or not _translated(message):
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(FIELD.findall(" ".join(ids)))
        for string in strings:
            got = set(FIELD.findall(string))
            if isinstance(message.id, tuple):  # one Japanese form serves singular and plural
                assert got <= wanted, (message.id, string)
            else:
                assert got == wanted, (message.id, string)
            assert string.count("\b") == ids[0].count("\b"), message.id


def _entries(fh) -> dict:
    return {k: v for k, v in gettext.GNUTranslations(fh)._catalog.items() if k != ""}


def test_compiled_catalog_is_up_to_date(tmp_path):
    fresh = tmp_path / "cloudshare.mo"
    fresh.write_bytes(i18n_tools.compiled(JA_PO))
    with open(fresh, "rb") as a, open(JA_MO, "rb") as b:
        # the header ("" entry) names the Babel that compiled it: only the translations count
        assert _entries(a) == _entries(b), (
            "cloudshare.mo is older than cloudshare.po: run `make i18n`")


def test_the_compiled_catalog_ships_as_package_data():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'cloudshare_p2p = ["locale/*/LC_MESSAGES/*.mo"]' in pyproject
    assert "ja" in i18n.available_languages()


# --- choosing the language --------------------------------------------------------------------------


@pytest.mark.parametrize("env,argv,expected", [
    ({}, [], "en"),
    ({"LANG": "C"}, [], "en"),
    ({"LANG": "C.UTF-8"}, [], "en"),
    ({"LANG": "POSIX"}, [], "en"),
    ({"LANG": "en_US.UTF-8"}, [], "en"),
    ({"LANG": "ja_JP.UTF-8"}, [], "ja"),
    ({"LANG": "ja_JP.eucJP"}, [], "ja"),
    ({"LC_ALL": "ja_JP.UTF-8", "LANG": "C"}, [], "ja"),
    ({"LC_MESSAGES": "ja_JP.UTF-8", "LANG": "en_US.UTF-8"}, [], "ja"),
    ({"LANGUAGE": "fr:ja", "LANG": "C.UTF-8"}, [], "ja"),
    ({"LANG": "fr_FR.UTF-8"}, [], "en"),  # no catalog: English
    ({"CLOUDSHARE_LANG": "ja", "LANG": "C"}, [], "ja"),
    ({"CLOUDSHARE_LANG": "en", "LANG": "ja_JP.UTF-8"}, [], "en"),
    ({"CLOUDSHARE_LANG": "xx", "LANG": "ja_JP.UTF-8"}, [], "en"),
    ({"LANG": "C"}, ["--lang", "ja", "status"], "ja"),
    ({"LANG": "C"}, ["--lang=ja_JP", "status"], "ja"),
    ({"CLOUDSHARE_LANG": "ja"}, ["--lang", "en", "status"], "en"),  # the command line wins
    ({"LANG": "C"}, ["run", "books", "--", "app", "--lang", "ja"], "en"),  # the program's own options
])
def test_language_choice(env, argv, expected):
    assert i18n.choose_language(argv, env) == expected


def test_windows_ui_language_is_read_only_on_windows(monkeypatch):
    assert sys.platform != "win32"
    assert i18n._windows_ui_language() is None
    assert i18n.normalize("ja_JP") == "ja"  # what locale.windows_locale[0x0411] gives


def test_setup_language_switches_messages_and_clicks_strings():
    import click.formatting

    try:
        assert i18n.setup_language("ja") == "ja"
        assert i18n._("wrong share password") == "共有パスワードが違います"
        assert click.formatting._("Usage:") == "使い方:"
    finally:
        i18n.setup_language("en")
    assert i18n._("wrong share password") == "wrong share password"
    assert click.formatting._("Usage:") == "Usage:"


# --- display width ---------------------------------------------------------------------------------


def test_pad_counts_wide_characters_twice():
    assert i18n.width("books") == 5
    assert i18n.width("帳簿") == 4
    assert i18n.width("ｶﾅ") == 2  # halfwidth katakana: one column each
    assert i18n.width("e\u0301") == 1  # a combining mark takes no column
    assert i18n.pad("帳簿", 6) == "帳簿  "
    assert i18n.pad("books", 6) == "books "
    assert i18n.pad("とても長い名前", 4) == "とても長い名前"  # never cut


# --- the command in Japanese (no server) -------------------------------------------------------------


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in ("LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "CLOUDSHARE_LANG")}
    full.update(env)
    return subprocess.run([CLOUDSHARE, *args], env=full, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_help_is_japanese_under_a_japanese_locale():
    result = _run("--help", LANG="ja_JP.UTF-8")
    assert result.returncode == 0, result.stderr
    for words in ("使い方:", "オプション:", "コマンド:", "終了コード:", "クラウドシェア",
                  "このメッセージを表示して終了します。", "ほかの人がロック中"):
        assert words in result.stdout
    assert "Show this message" not in result.stdout


def test_command_help_and_usage_errors_are_japanese():
    result = _run("open", "--help", CLOUDSHARE_LANG="ja", LANG="C")
    assert "最新データを受信し、ロックします。" in result.stdout
    assert "--read-only" in result.stdout and "ロックせずに最新データを受信します" in result.stdout
    result = _run("open", CLOUDSHARE_LANG="ja")
    assert result.returncode == 2
    assert "使い方: cloudshare open" in result.stderr and "引数が足りません" in result.stderr
    result = _run("status", "--no-such-option", LANG="ja_JP.UTF-8")
    assert result.returncode == 2
    assert "オプション '--no-such-option' はありません" in result.stderr


def test_lang_option_overrides_the_locale():
    result = _run("--lang", "ja", "--help", LANG="C.UTF-8")
    assert "使い方:" in result.stdout
    result = _run("--lang", "en", "--help", LANG="ja_JP.UTF-8")
    assert "Usage:" in result.stdout and "使い方" not in result.stdout


def test_english_stays_the_default():
    result = _run("--help")
    assert "Usage:" in result.stdout and "Exit codes:" in result.stdout
    assert not re.search(r"[\u3040-\u30ff]", result.stdout)


def test_data_set_messages_in_japanese_and_a_cp932_console(tmp_path):
    """A Japanese message on a cp932 console (a redirected Windows console) never crashes."""
    home = str(tmp_path / "home")
    data = tmp_path / "帳簿.csv"
    data.write_text("date,amount\n", encoding="utf-8")
    env = {"LANG": "ja_JP.UTF-8", "PYTHONIOENCODING": "cp932"}
    full = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES")}
    full.update(env)
    for args, code in (((*("--home", home), "add", "帳簿", str(data)), 0),
                       (("--home", home, "status"), 0),
                       (("--home", home, "open", "帳簿"), 1),
                       (("--home", home, "history", "なし"), 1)):
        result = subprocess.run([CLOUDSHARE, *args], env=full, capture_output=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        out, err = result.stdout.decode("cp932"), result.stderr.decode("cp932")
        assert result.returncode == code, (args, out, err)
        assert "Traceback" not in err
        if args[2] == "add":
            assert "データ 帳簿 を登録しました" in out
        if args[2] == "status":
            assert "帳簿" in out and "未共有" in out
        if args[2] == "open":
            assert "帳簿 は共有していません" in err and "対処:" in err
        if args[2] == "history":
            assert "データ なし は登録されていません" in err


@pytest.mark.slow  # the whole demo again (~30 s), in Japanese
def test_the_demo_runs_in_japanese():
    """`CLOUDSHARE_LANG=ja cloudshare demo`: the narration and every command speak Japanese."""
    result = _run("demo", CLOUDSHARE_LANG="ja")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "件の確認がすべて成功しました" in result.stdout
    assert "ロック中（" in result.stdout and "クラウドシェアを開始しました" in result.stdout
