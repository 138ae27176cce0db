"""Secrets remembered on this computer, so a share password is typed once per computer.

What is kept: an area's *unwrapped data key* (never the share password) and, when the user
asks for it, an SSH login password for a remote. Where:

1. The operating system's credential store through ``keyring`` (Windows Credential
   Manager, macOS Keychain, Secret Service), when a real one is available. Values are
   base64 text well under Windows' 1280-character limit; on Windows the credential is kept
   on this computer only (``persist = "local machine"``, not roaming).
2. Otherwise a file ``secrets.json`` in the home folder, readable only by its owner (mode
   0600 on POSIX; on Windows it relies on the user's profile folder being private). It
   holds the keys in base64, not encrypted: **like an SSH key without a passphrase** —
   anyone who can read the file can open the areas it names, without the password. Use
   ``--no-remember`` / ``CLOUDSHARE_REMEMBER=0`` on shared computers.

Remembering is best effort: a locked or broken credential store falls back to the file,
and a damaged file reads as empty. Two homes on one computer never see each other's
entries (the keyring user name carries a hash of the home path).

Finding out that no credential store is usable costs keyring a scan of every installed
package's entry points and the import of each backend (0.05-0.07 s a command). A computer
where none is usable notes so in the cache folder (``keyring-probe.json``, no secrets): the
next commands believe it for a day, while nothing keyring's choice depends on has changed
(see :func:`probe_fingerprint`). A usable store is never noted: it is looked for every time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .i18n import _
from .localfiles import atomic_write

# keyring logs a plugin that fails to load with its traceback: never on the user's terminal
logging.getLogger("keyring").addHandler(logging.NullHandler())

if TYPE_CHECKING:  # keyring is imported lazily: it is slow to import
    from keyring.backend import KeyringBackend

SERVICE = "cloudshare-p2p"
SECRET_ENV = ("CLOUDSHARE_PASSWORD", "CLOUDSHARE_SSH_PASSWORD", "CLOUDSHARE_ID_PASSWORD")
"""Variables that carry a password: never handed to another program (`run`, the packing process)."""
FILE_NAME = "secrets.json"
REMEMBER_ENV = "CLOUDSHARE_REMEMBER"
KEYRING_ENV = "CLOUDSHARE_KEYRING"  # "0": never use the OS credential store (file only)
KEY_SIZES = (32, 64)
MAX_KEYRING_VALUE = 1279  # Windows: 2560-byte blob = 1280 UTF-16 characters
_FORMAT = 1
_FALSE_WORDS = {"0", "false", "no", "off"}
PROBE_MEMO = "keyring-probe.json"  # in the cache folder: "no usable credential store here"
PROBE_MAX_AGE_S = 24 * 3600  # a noted "none" is believed this long, then keyring is asked again
#: environment variables keyring and its backends read to choose or reach a store
_PROBE_ENV = ("PYTHON_KEYRING_BACKEND", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "XDG_CURRENT_DESKTOP",
              "XDG_CONFIG_HOME", "KEYCHAIN_PATH", "LOCALAPPDATA", "PROGRAMDATA")


def remember_enabled(flag: bool | None) -> bool:
    """Whether to remember secrets: an explicit flag wins, else ``CLOUDSHARE_REMEMBER`` (default on)."""
    if flag is not None:
        return flag
    return os.environ.get(REMEMBER_ENV, "").strip().lower() not in _FALSE_WORDS


def usable_keyring(failures: list[BaseException] | None = None) -> KeyringBackend | None:
    """The OS credential store if a real one is available, else None.

    Not usable: keyring not installed or failing to start, ``fail.Keyring``, a chainer with
    no acceptable backend, any backend with priority < 1 (null, "possibly insecure") and
    anything from ``keyrings.alt`` (plaintext or prompting files). A chainer is unwrapped to
    its best acceptable backend, so nothing is ever written to a plaintext one behind it.
    `failures` (if given) gets the error when keyring failed to answer, as opposed to
    answering that none is usable.
    """
    try:
        import keyring
        from keyring.backends import chainer, fail
    except Exception:
        return None
    try:
        current = keyring.get_keyring()
        candidates = list(current.backends) if isinstance(current, chainer.ChainerBackend) else [current]
    except Exception as exc:
        if failures is not None:
            failures.append(exc)
        return None
    for backend in candidates:
        if _acceptable(backend, fail.Keyring, chainer.ChainerBackend):
            return backend
    return None


def probe_fingerprint() -> str:
    """A digest of what keyring's choice of a store depends on here: the computer, user and
    Python, the folders on ``sys.path`` (their times change with each package installed,
    upgraded or removed: keyring itself and its backend plugins), the environment keyring
    and its backends read, and keyring's config file. Cheap: no import of keyring."""
    parts: list[object] = [_FORMAT, sys.platform, socket.gethostname(), getattr(os, "getuid", lambda: -1)(),
                           sys.executable, sys.version, sys.path]
    for entry in [*sys.path, _keyring_config()]:
        try:
            st = os.stat(entry or ".")
        except OSError:
            parts.append(None)
        else:
            parts.append((st.st_mtime_ns, st.st_size))
    parts.append([os.environ.get(name) for name in _PROBE_ENV])
    return hashlib.sha256(json.dumps(parts, default=str).encode("utf-8", "surrogatepass")).hexdigest()


def _keyring_config() -> str:
    """Where keyring reads its config file (keyring.util.platform_.config_root)."""
    if sys.platform == "win32":
        root = os.environ.get("LOCALAPPDATA", os.environ.get("PROGRAMDATA", "."))
        return os.path.join(root, "Python Keyring", "keyringrc.cfg")
    root = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(root, "python_keyring", "keyringrc.cfg")


MEMO_MAX = 4096  # bytes: a memo is about 150


def known_unusable(memo: Path, fingerprint: str) -> bool:
    """Whether `memo` says no store was usable, less than a day ago, with this fingerprint.
    Untrusted: anything odd about it (not our regular file of a few bytes, another owner,
    writable by others, malformed) means asking keyring."""
    try:
        noted = json.loads(_read_memo(Path(memo)))
        probed, version = noted["probed"], noted.get("v")
        if isinstance(probed, bool) or not isinstance(probed, int | float) or not math.isfinite(probed):
            return False
        age = time.time() - probed
        return type(version) is int and version == _FORMAT and noted.get("fingerprint") == fingerprint \
            and noted.get("usable") is False and 0 <= age < PROBE_MAX_AGE_S
    except Exception:  # noqa: BLE001 - a hint only
        return False


def _read_memo(memo: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # no link, no FIFO
    fd = os.open(memo, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MEMO_MAX:
            raise ValueError("not a memo")
        if hasattr(os, "geteuid") and (st.st_uid != os.geteuid() or st.st_mode & 0o022):
            raise ValueError("a memo someone else may have written")
        return os.read(fd, MEMO_MAX + 1)
    finally:
        os.close(fd)


def note_unusable(memo: Path, fingerprint: str) -> None:
    """Note in `memo` that no store is usable here now (best effort; only in a folder that
    exists: the cache folder is not made for it)."""
    noted = {"v": _FORMAT, "fingerprint": fingerprint, "probed": time.time(), "usable": False}
    if Path(memo).parent.is_dir():
        with contextlib.suppress(OSError):
            atomic_write(Path(memo), json.dumps(noted).encode("utf-8"), durable=False)


def _adopted(backend: KeyringBackend | None) -> KeyringBackend | None:
    """`backend`, set up for our use (Windows: kept for this user on this computer only)."""
    if backend is not None and sys.platform == "win32":
        with contextlib.suppress(Exception):
            backend.persist = "local machine"  # type: ignore[attr-defined]
    return backend


def _acceptable(backend: Any, fail_cls: type, chainer_cls: type) -> bool:
    if isinstance(backend, (fail_cls, chainer_cls)):
        return False
    if type(backend).__module__.split(".")[0] == "keyrings":  # keyrings.alt and the like
        return False
    try:
        return float(backend.priority) >= 1
    except Exception:
        return False


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        return None


def _key_or_none(text: object) -> bytes | None:
    key = _decode(text)
    return key if key is not None and len(key) in KEY_SIZES else None


def _login_or_none(text: object) -> str | None:
    raw = _decode(text)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class SecretStore:
    """Data keys and login passwords remembered for one home on this computer.

    ``enabled=False`` (``--no-remember``): nothing is stored and nothing is returned.
    ``use_keyring``: None = the OS store when usable unless ``CLOUDSHARE_KEYRING=0``;
    True = the OS store when usable; False = the file only. ``probe_memo``: the file that
    notes "no usable store here" between processes (None: keyring is asked every time).
    """

    def __init__(self, home: Path, *, enabled: bool = True, use_keyring: bool | None = None,
                 probe_memo: Path | None = None) -> None:
        self.home = Path(home)
        self.enabled = enabled
        self.probe_memo = probe_memo
        self.path = self.home / FILE_NAME
        if use_keyring is None:
            use_keyring = os.environ.get(KEYRING_ENV, "").strip().lower() not in _FALSE_WORDS
        self._want_keyring = use_keyring
        self._backend: KeyringBackend | None = None
        self._probed = False
        self._ask_before_change = False  # the memo answered, or keyring failed: a change asks again
        self._probing = threading.Lock()  # one probe, whichever thread asks first
        normalized = os.path.normcase(os.path.abspath(self.home.expanduser()))
        self._tag = hashlib.sha256(normalized.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    # --- where ---------------------------------------------------------------------

    def probe_soon(self) -> None:
        """Find the OS credential store on a helper thread now (keyring imports every backend it
        knows: 0.05-0.07 s), while the caller waits for the network; a later use waits for it."""
        if self.enabled and self._want_keyring and not self._probed:
            threading.Thread(target=self._probe_quietly, name="keyring-probe", daemon=True).start()

    def _probe_quietly(self) -> None:
        with contextlib.suppress(Exception):  # not probed: the first use asks again, and says why
            self._keyring()

    def _keyring(self) -> KeyringBackend | None:
        with self._probing:
            if not self._probed:
                if self._want_keyring:
                    self._backend = _adopted(self._probe())
                self._probed = True
        return self._backend

    def _probe(self) -> KeyringBackend | None:
        """`usable_keyring()`, unless the memo knows that none is usable here."""
        if self.probe_memo is None:
            return usable_keyring()
        fingerprint = probe_fingerprint()
        if known_unusable(self.probe_memo, fingerprint):
            self._ask_before_change = True
            return None
        failures: list[BaseException] = []
        backend = usable_keyring(failures)
        if backend is None and not failures:  # "none" is noted only when keyring said so
            note_unusable(self.probe_memo, fingerprint)
        elif backend is None:
            self._ask_before_change = True
        else:
            with contextlib.suppress(OSError):
                self.probe_memo.unlink(missing_ok=True)
        return backend

    @property
    def backend_name(self) -> str:
        """Where new secrets go, for messages: the credential store's name or the file."""
        if not self.enabled:
            return _("nowhere (remembering is off)")
        backend = self._keyring()
        if backend is not None:
            return _("keyring ({name})").format(name=backend.name)
        return _("file {path}").format(path=self.path)

    # --- data keys -----------------------------------------------------------------

    def get_data_key(self, area_id: str) -> bytes | None:
        """The remembered data key of the area, or None.

        The file is read first: it holds a key only when no credential store took it, and an
        area's data key never changes, so either place gives the same key, and a computer
        without a credential store never imports keyring (slow) to find that out.
        """
        if not self.enabled:
            return None
        key = _key_or_none(self._read().get("keys", {}).get(area_id))
        if key is None:
            key = _key_or_none(self._kr_get(f"key:{area_id}"))
        return key

    def put_data_key(self, area_id: str, key: bytes) -> str | None:
        """Remember the area's data key; returns "keyring" or the file path, None if not stored."""
        if len(key) not in KEY_SIZES:
            raise ValueError(f"a data key is {' or '.join(map(str, KEY_SIZES))} bytes")
        return self._put("keys", f"key:{area_id}", area_id, _encode(bytes(key)))

    def forget_data_key(self, area_id: str) -> None:
        """Remove the area's data key from the credential store and the file."""
        self._forget("keys", f"key:{area_id}", area_id)

    # --- login passwords -----------------------------------------------------------

    def get_login(self, account: str) -> str | None:
        """The remembered login password for ``account`` (a remote url / user@host:port)."""
        if not self.enabled:
            return None
        login = _login_or_none(self._kr_get(f"login:{account}"))
        if login is None:
            login = _login_or_none(self._read().get("logins", {}).get(account))
        return login

    def put_login(self, account: str, password: str) -> str | None:
        """Remember an SSH login password; returns "keyring" or the file path, None if not stored."""
        return self._put("logins", f"login:{account}", account, _encode(password.encode("utf-8")))

    def forget_login(self, account: str) -> None:
        """Remove the login password for ``account`` from the credential store and the file."""
        self._forget("logins", f"login:{account}", account)

    # --- common --------------------------------------------------------------------

    def _username(self, name: str) -> str:
        return f"{self._tag}:{name}"

    def _kr_get(self, name: str) -> str | None:
        backend = self._keyring()
        if backend is None:
            return None
        try:
            return backend.get_password(SERVICE, self._username(name))
        except Exception:
            return None

    def _keyring_for_change(self) -> KeyringBackend | None:
        """The store to write to or delete from: keyring itself is asked where only the memo
        said "none", or keyring failed to answer (a store started since, or a planted memo,
        must not keep a secret in the file or an old one in the store); a store found drops
        the memo."""
        backend = self._keyring()
        if backend is None and self._ask_before_change:
            with self._probing:
                if self._ask_before_change:
                    self._ask_before_change = False
                    self._backend = _adopted(usable_keyring())
                    if self._backend is not None and self.probe_memo is not None:
                        with contextlib.suppress(OSError):
                            self.probe_memo.unlink(missing_ok=True)
                backend = self._backend
        return backend

    def _put(self, section: str, name: str, item: str, value: str) -> str | None:
        if not self.enabled:
            return None
        backend = self._keyring_for_change()
        if backend is not None and len(value) <= MAX_KEYRING_VALUE:
            try:
                backend.set_password(SERVICE, self._username(name), value)
            except Exception:
                pass  # locked, refused, too big: fall back to the file
            else:
                self._drop_from_file(section, item)  # no stale copy outside the store
                return "keyring"
        if backend is not None:  # no stale entry in the store that would win over the file
            with contextlib.suppress(Exception):
                backend.delete_password(SERVICE, self._username(name))
        data = self._read()
        data.setdefault(section, {})[item] = value
        try:
            self._write(data)
        except OSError:
            return None
        return str(self.path)

    def _forget(self, section: str, name: str, item: str) -> None:
        backend = self._keyring_for_change()
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.delete_password(SERVICE, self._username(name))
        self._drop_from_file(section, item)

    def _drop_from_file(self, section: str, item: str) -> None:
        data = self._read()
        if item in data.get(section, {}):
            del data[section][item]
            with contextlib.suppress(OSError):
                self._write(data)

    def _read(self) -> dict[str, Any]:
        """The file's content; missing, unreadable or malformed reads as empty."""
        empty: dict[str, Any] = {"v": _FORMAT, "keys": {}, "logins": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return empty
        if not isinstance(data, dict) or data.get("v") != _FORMAT:
            return empty
        for section in ("keys", "logins"):
            entries = data.get(section)
            if isinstance(entries, dict):
                empty[section] = {k: v for k, v in entries.items() if isinstance(v, str)}
        return empty

    def _write(self, data: dict[str, Any]) -> None:
        """Replace the file atomically; the new file is created 0600 (owner only on POSIX).

        Two processes writing at once may lose one entry; that only means one more
        password prompt later.
        """
        atomic_write(self.path, json.dumps(data, sort_keys=True).encode("utf-8"), mode=0o600)
