"""SecretStore: the OS credential store through keyring when real, else an owner-only file."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail
from keyring.errors import KeyringLocked, PasswordDeleteError

from cloudshare_p2p import secretstore
from cloudshare_p2p.secretstore import SecretStore, remember_enabled, usable_keyring

KEY = bytes(range(32))
KEY2 = bytes(range(100, 132))
AREA = "a1b2c3d4"


class DictKeyring(KeyringBackend):
    """A real in-process keyring backend keeping entries in a dict."""

    priority = 5  # type: ignore[assignment]
    viable = False  # never picked by keyring's own detection in other tests

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError("not found")


class LockedKeyring(DictKeyring):
    """A store that is there but locked: every call raises."""

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringLocked("locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringLocked("locked")


class LowPriorityKeyring(DictKeyring):
    """Like keyrings.alt's plaintext file: works, but priority < 1 ("possibly insecure")."""

    priority = 0.5  # type: ignore[assignment]


@pytest.fixture
def use_backend() -> Iterator[object]:
    """Install a keyring backend for one test; the previous one comes back afterwards."""
    before = keyring.get_keyring()

    def install(backend: KeyringBackend) -> KeyringBackend:
        keyring.set_keyring(backend)
        return backend

    yield install
    keyring.set_keyring(before)


@pytest.fixture
def no_keyring(use_backend) -> None:
    use_backend(fail.Keyring())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secretstore.REMEMBER_ENV, raising=False)
    monkeypatch.delenv(secretstore.KEYRING_ENV, raising=False)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# --- file fallback -------------------------------------------------------------------


def test_file_roundtrip_owner_only(tmp_path: Path, no_keyring: None) -> None:
    store = SecretStore(tmp_path / "home")
    assert store.get_data_key(AREA) is None
    where = store.put_data_key(AREA, KEY)
    assert where == str(tmp_path / "home" / secretstore.FILE_NAME)
    assert store.backend_name.startswith("file ")
    assert store.get_data_key(AREA) == KEY
    assert SecretStore(tmp_path / "home").get_data_key(AREA) == KEY  # a new process sees it
    data = json.loads(Path(where).read_text())
    assert data["v"] == 1 and set(data["keys"]) == {AREA}
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    assert [p.name for p in files_under(tmp_path)] == [secretstore.FILE_NAME]  # no temp file left


def test_file_mode_stays_0600_after_rewrite_with_loose_umask(tmp_path: Path, no_keyring: None) -> None:
    if sys.platform == "win32":
        pytest.skip("POSIX modes")
    old = os.umask(0)
    try:
        store = SecretStore(tmp_path)
        store.put_data_key(AREA, KEY)
        store.put_login("yamada@files.example.jp:2222", "pw")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_64_byte_key_and_wrong_size_refused(tmp_path: Path, no_keyring: None) -> None:
    store = SecretStore(tmp_path)
    store.put_data_key(AREA, KEY + KEY2)
    assert store.get_data_key(AREA) == KEY + KEY2
    with pytest.raises(ValueError):
        store.put_data_key(AREA, b"short")


def test_two_homes_do_not_see_each_other(tmp_path: Path, no_keyring: None) -> None:
    firm, client = SecretStore(tmp_path / "firm"), SecretStore(tmp_path / "client")
    firm.put_data_key(AREA, KEY)
    assert client.get_data_key(AREA) is None
    client.put_data_key(AREA, KEY2)
    assert firm.get_data_key(AREA) == KEY and client.get_data_key(AREA) == KEY2


def test_forget_removes(tmp_path: Path, no_keyring: None) -> None:
    store = SecretStore(tmp_path)
    store.put_data_key(AREA, KEY)
    store.put_data_key("other", KEY2)
    store.put_login("yamada@h:22", "login-pw")
    store.forget_data_key(AREA)
    store.forget_login("yamada@h:22")
    store.forget_data_key("never-stored")  # no error
    assert store.get_data_key(AREA) is None and store.get_login("yamada@h:22") is None
    assert store.get_data_key("other") == KEY2
    assert "login-pw" not in store.path.read_text()


def test_disabled_stores_nothing(tmp_path: Path, no_keyring: None) -> None:
    SecretStore(tmp_path).put_data_key(AREA, KEY)
    off = SecretStore(tmp_path / "off", enabled=False)
    assert off.put_data_key(AREA, KEY) is None
    assert off.put_login("u@h:22", "pw") is None
    assert off.get_data_key(AREA) is None and off.get_login("u@h:22") is None
    assert not (tmp_path / "off").exists()
    assert SecretStore(tmp_path, enabled=False).get_data_key(AREA) is None  # and uses nothing


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b"[]",
        b'{"v": 99, "keys": {"a1b2c3d4": "AAAA"}}',
        b'{"v": 1, "keys": ["a1b2c3d4"]}',
        b'{"v": 1, "keys": {"a1b2c3d4": 12}}',
        b'{"v": 1, "keys": {"a1b2c3d4": "not base64!!"}}',
        b'{"v": 1, "keys": {"a1b2c3d4": "AAAA"}}',  # valid base64, wrong length
        b"",
    ],
)
def test_corrupt_file_reads_as_empty(tmp_path: Path, no_keyring: None, content: bytes) -> None:
    (tmp_path / secretstore.FILE_NAME).write_bytes(content)
    store = SecretStore(tmp_path)
    assert store.get_data_key(AREA) is None
    assert store.get_login("u@h:22") is None
    store.put_data_key("fresh", KEY)  # and can be written over
    assert store.get_data_key("fresh") == KEY


def test_file_holds_the_key_and_nothing_else(tmp_path: Path, no_keyring: None) -> None:
    share_password = "correct horse battery staple"
    store = SecretStore(tmp_path)
    store.put_data_key(AREA, KEY)
    data = json.loads(store.path.read_text())
    assert secretstore._decode(data["keys"][AREA]) == KEY
    assert data["logins"] == {}
    for path in files_under(tmp_path):
        raw = path.read_bytes()
        assert share_password.encode() not in raw
    assert not any("password" in name for name in dir(SecretStore) if not name.startswith("_"))


def test_login_roundtrip_non_ascii(tmp_path: Path, no_keyring: None) -> None:
    store = SecretStore(tmp_path)
    store.put_login("yamada@files.example.jp:2222", "パスワード-1")
    assert store.get_login("yamada@files.example.jp:2222") == "パスワード-1"
    assert store.get_login("other@h:22") is None


def test_remember_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert remember_enabled(None) is True
    assert remember_enabled(False) is False
    for word in ("0", "false", "No", " off "):
        monkeypatch.setenv(secretstore.REMEMBER_ENV, word)
        assert remember_enabled(None) is False
        assert remember_enabled(True) is True  # an explicit flag wins
    monkeypatch.setenv(secretstore.REMEMBER_ENV, "1")
    assert remember_enabled(None) is True


# --- keyring -------------------------------------------------------------------------


def test_keyring_roundtrip_text_small_and_no_file(tmp_path: Path, use_backend) -> None:
    backend = use_backend(DictKeyring())
    assert usable_keyring() is backend
    store = SecretStore(tmp_path)
    assert store.put_data_key(AREA, KEY + KEY2) == "keyring"
    assert store.put_login("yamada@h:22", "login-pw") == "keyring"
    assert store.backend_name.startswith("keyring")
    assert store.get_data_key(AREA) == KEY + KEY2
    assert store.get_login("yamada@h:22") == "login-pw"
    assert not store.path.exists()
    assert all(service == secretstore.SERVICE for service, _ in backend.entries)
    for value in backend.entries.values():
        assert isinstance(value, str) and value.isascii() and len(value) < 1280
    store.forget_data_key(AREA)
    store.forget_login("yamada@h:22")
    assert backend.entries == {}


def test_keyring_two_homes_do_not_collide(tmp_path: Path, use_backend) -> None:
    backend = use_backend(DictKeyring())
    firm, client = SecretStore(tmp_path / "firm"), SecretStore(tmp_path / "client")
    firm.put_data_key(AREA, KEY)
    client.put_data_key(AREA, KEY2)
    assert len(backend.entries) == 2
    assert firm.get_data_key(AREA) == KEY and client.get_data_key(AREA) == KEY2


def test_keyring_bad_value_ignored(tmp_path: Path, use_backend) -> None:
    backend = use_backend(DictKeyring())
    store = SecretStore(tmp_path)
    store.put_data_key(AREA, KEY)
    (entry,) = backend.entries
    backend.entries[entry] = "AAAA"  # valid base64, wrong length
    assert store.get_data_key(AREA) is None
    backend.entries[entry] = "%%%"
    assert store.get_data_key(AREA) is None


@pytest.mark.parametrize(
    "make",
    [fail.Keyring, LowPriorityKeyring, chainer.ChainerBackend],
    ids=["fail", "priority<1", "chainer"],
)
def test_unusable_backend_falls_back_to_file(tmp_path: Path, use_backend, make) -> None:
    backend = use_backend(make())
    if isinstance(backend, chainer.ChainerBackend) and any(b.priority >= 1 for b in backend.backends):
        pytest.skip("this machine has a real credential store")
    assert usable_keyring() is None
    store = SecretStore(tmp_path)
    assert store.put_data_key(AREA, KEY) == str(store.path)
    assert store.get_data_key(AREA) == KEY
    if isinstance(backend, DictKeyring):
        assert backend.entries == {}  # nothing written to the "possibly insecure" store


def test_keyrings_alt_module_refused(tmp_path: Path, use_backend) -> None:
    plaintext = type("PlaintextKeyring", (DictKeyring,), {"__module__": "keyrings.alt.file"})
    use_backend(plaintext())
    assert usable_keyring() is None


def test_locked_keyring_falls_back_to_file(tmp_path: Path, use_backend) -> None:
    use_backend(LockedKeyring())
    store = SecretStore(tmp_path)
    assert store.put_data_key(AREA, KEY) == str(store.path)
    assert store.get_data_key(AREA) == KEY


def test_file_entry_moves_into_keyring_and_keyring_entry_never_stale(tmp_path: Path, use_backend) -> None:
    use_backend(fail.Keyring())
    SecretStore(tmp_path).put_data_key(AREA, KEY)
    backend = use_backend(DictKeyring())
    store = SecretStore(tmp_path)
    assert store.get_data_key(AREA) == KEY  # written while no store was usable: still found
    store.put_data_key(AREA, KEY2)
    assert store.get_data_key(AREA) == KEY2
    assert AREA not in json.loads(store.path.read_text())["keys"]  # no copy left in the file
    # A value too long for the store goes to the file and the old store entry is dropped.
    long_login = "x" * 2000
    store.put_login("u@h:22", "short")
    assert store.put_login("u@h:22", long_login) == str(store.path)
    assert store.get_login("u@h:22") == long_login
    assert not any("login:" in user for _, user in backend.entries)


def test_use_keyring_false_and_env_off(tmp_path: Path, use_backend, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use_backend(DictKeyring())
    assert SecretStore(tmp_path / "a", use_keyring=False).put_data_key(AREA, KEY) != "keyring"
    monkeypatch.setenv(secretstore.KEYRING_ENV, "0")
    assert SecretStore(tmp_path / "b").put_data_key(AREA, KEY) != "keyring"
    assert SecretStore(tmp_path / "c", use_keyring=True).put_data_key(AREA, KEY) == "keyring"
    assert len(backend.entries) == 1


# --- "no usable store here", noted between processes --------------------------------------


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call of the real probe (`usable_keyring`), with what it found."""
    found: list[object] = []
    real = secretstore.usable_keyring

    def counted(failures: list[BaseException] | None = None) -> KeyringBackend | None:
        found.append(real(failures))
        return found[-1]  # type: ignore[return-value]

    monkeypatch.setattr(secretstore, "usable_keyring", counted)
    return found


def test_no_usable_store_is_noted_and_believed(tmp_path: Path, no_keyring: None, probes: list) -> None:
    memo = tmp_path / "cache" / secretstore.PROBE_MEMO
    memo.parent.mkdir()
    first = SecretStore(tmp_path / "home", probe_memo=memo)
    assert first.put_data_key(AREA, KEY) == str(first.path)
    assert probes == [None] and memo.is_file()
    assert "password" not in memo.read_text() and KEY.hex() not in memo.read_text()
    later = SecretStore(tmp_path / "home", probe_memo=memo)  # the next command
    assert later.get_data_key(AREA) == KEY
    assert later.get_login("u@h:22") is None
    assert probes == [None]  # keyring was not asked again
    assert later.put_data_key(AREA, KEY2) == str(later.path)  # a change asks keyring itself
    assert probes == [None, None]
    SecretStore(tmp_path / "home").put_data_key(AREA, KEY)  # without a memo: asked every time
    assert probes == [None, None, None]


def test_no_memo_makes_the_cache_folder(tmp_path: Path, no_keyring: None) -> None:
    memo = tmp_path / "cache" / secretstore.PROBE_MEMO
    SecretStore(tmp_path / "home", probe_memo=memo).get_login("u@h:22")
    assert not memo.parent.exists()


def test_a_memo_that_is_wrong_never_keeps_a_secret_out_of_the_store(tmp_path: Path, use_backend,
                                                                    probes: list) -> None:
    """A store started after the memo was written (or a memo planted): reads skip it for a
    while, but a key is written to the store, not the file, a forgotten one leaves the store,
    and the memo goes."""
    memo = tmp_path / secretstore.PROBE_MEMO
    secretstore.note_unusable(memo, secretstore.probe_fingerprint())
    backend = use_backend(DictKeyring())
    store = SecretStore(tmp_path / "home", probe_memo=memo)
    assert store.get_login("u@h:22") is None and probes == []
    assert store.put_data_key(AREA, KEY) == "keyring"
    assert not store.path.exists() and not memo.exists() and probes == [backend]
    secretstore.note_unusable(memo, secretstore.probe_fingerprint())
    again = SecretStore(tmp_path / "home", probe_memo=memo)
    again.forget_data_key(AREA)
    assert backend.entries == {}


def test_a_probe_that_failed_is_not_noted_as_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 probes: list) -> None:
    """keyring failing to answer (a plugin or a bus in trouble) is not "no store here": no
    memo, and a change asks again."""
    def broken() -> None:
        raise RuntimeError("the bus is not up yet")

    monkeypatch.setattr(keyring, "get_keyring", broken)
    memo = tmp_path / secretstore.PROBE_MEMO
    store = SecretStore(tmp_path / "home", probe_memo=memo)
    assert store.get_login("u@h:22") is None
    assert probes == [None] and not memo.exists()
    store.put_data_key(AREA, KEY)
    assert probes == [None, None]  # asked again before writing a key


@pytest.mark.skipif(os.name == "nt", reason="POSIX owners, modes, FIFOs and /dev/zero")
@pytest.mark.parametrize("how", ["huge number", "deep", "dev zero", "fifo", "others may write", "too big"])
def test_an_odd_memo_means_asking_keyring(tmp_path: Path, no_keyring: None, how: str) -> None:
    memo = tmp_path / secretstore.PROBE_MEMO
    fingerprint = secretstore.probe_fingerprint()
    good = {"v": 1, "fingerprint": fingerprint, "probed": time.time(), "usable": False}
    if how == "huge number":
        memo.write_text(json.dumps(good).replace(str(good["probed"]), "1" * 400))
    elif how == "deep":
        memo.write_text("[" * 4000)
    elif how == "dev zero":
        memo.symlink_to("/dev/zero")
    elif how == "fifo":
        os.mkfifo(memo)
    elif how == "too big":
        memo.write_text(json.dumps({**good, "pad": "x" * 5000}))
    else:
        memo.write_text(json.dumps(good))
        memo.chmod(0o666)
    assert not secretstore.known_unusable(memo, fingerprint)


def test_a_usable_store_is_never_noted(tmp_path: Path, use_backend, probes: list) -> None:
    backend = use_backend(DictKeyring())
    memo = tmp_path / "cache" / secretstore.PROBE_MEMO
    for _ in range(2):
        assert SecretStore(tmp_path / "home", probe_memo=memo).put_data_key(AREA, KEY) == "keyring"
    assert probes == [backend, backend] and not memo.exists()


def test_a_probe_started_early_is_the_one_used(tmp_path: Path, use_backend, probes: list,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`probe_soon` asks keyring on a helper thread while the command connects; the later use
    waits for that answer and never asks again."""
    import threading

    backend = use_backend(DictKeyring())
    asked, answer = threading.Event(), threading.Event()
    counted = secretstore.usable_keyring

    def slow() -> KeyringBackend | None:
        asked.set()
        answer.wait(10)
        return counted()

    monkeypatch.setattr(secretstore, "usable_keyring", slow)
    store = SecretStore(tmp_path / "home")
    store.probe_soon()
    assert asked.wait(10)  # asked on the helper thread, before any use
    threading.Timer(0.05, answer.set).start()
    assert store.put_data_key(AREA, KEY) == "keyring"  # waited for the helper's answer
    store.probe_soon()  # already known: no second probe
    assert store.get_data_key(AREA) == KEY
    assert probes == [backend]
    SecretStore(tmp_path / "home", enabled=False).probe_soon()  # --no-remember: nothing asked
    SecretStore(tmp_path / "home", use_keyring=False).probe_soon()
    assert probes == [backend]


@pytest.mark.parametrize("change", ["env", "config", "packages", "age", "future"])
def test_the_note_is_dropped_when_things_change(tmp_path: Path, use_backend, probes: list, change: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that became usable is found: after a day, or at once when something keyring's
    choice depends on changed (environment, its config file, the packages)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    use_backend(fail.Keyring())
    memo = tmp_path / "cache" / secretstore.PROBE_MEMO
    memo.parent.mkdir()
    SecretStore(tmp_path / "home", probe_memo=memo).put_data_key(AREA, KEY)
    assert secretstore.known_unusable(memo, secretstore.probe_fingerprint())
    backend = use_backend(DictKeyring())
    if change == "env":  # e.g. a desktop session with a Secret Service
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus")
    elif change == "config":
        (tmp_path / "config" / "python_keyring").mkdir(parents=True)
        (tmp_path / "config" / "python_keyring" / "keyringrc.cfg").write_text("[backend]\n")
    elif change in ("age", "future"):
        noted = json.loads(memo.read_text())
        noted["probed"] -= secretstore.PROBE_MAX_AGE_S + 1 if change == "age" else -3600
        memo.write_text(json.dumps(noted))
    elif change == "packages":  # a keyring plugin installed (or keyring upgraded)
        (site / "keyrings_cryptfile-1.0.dist-info").mkdir()
    store = SecretStore(tmp_path / "home", probe_memo=memo)
    assert store.put_data_key(AREA, KEY2) == "keyring"
    assert probes == [None, backend] and not memo.exists()


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"v": 1}',
                                     b'{"v": 1, "probed": "x", "usable": false}'])
def test_a_damaged_note_means_asking_keyring(tmp_path: Path, no_keyring: None, probes: list,
                                            content: bytes) -> None:
    memo = tmp_path / secretstore.PROBE_MEMO
    memo.write_bytes(content)
    SecretStore(tmp_path / "home", probe_memo=memo).put_data_key(AREA, KEY)
    assert probes == [None]
    assert secretstore.known_unusable(memo, secretstore.probe_fingerprint())  # noted again, whole


def test_a_service_notes_it_in_its_cache_folder(tmp_path: Path) -> None:
    from cloudshare_p2p.service import UI, Service

    ui = UI(share_password=lambda purpose, confirm: "unused", ssh_password=lambda: None,
            confirm=lambda question: True, say=lambda text: None)
    service = Service(tmp_path / "home", ui)
    try:
        assert service.secrets.probe_memo == service.cache_root / secretstore.PROBE_MEMO
    finally:
        service.shutdown()
