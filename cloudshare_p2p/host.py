"""Embedded SFTP host for `cloudshare host`: asyncssh's SFTP server, one chroot per ID.

Host folder layout (see docs/hosting.md):

    DIR/host_key          Ed25519 host key, OpenSSH private format, 0600 (generated once)
    DIR/accounts.json     {"version": 1, "ids": {COMM_ID: {...}}}, 0600, replaced atomically
    DIR/data/COMM_ID/     the ID's root as its client sees it ("/"); areas live here

No file data is kept in memory between requests: several processes may serve the same
folder at once (the stand-in for several machines over shared storage). `accounts.json` is
re-read whenever it changes (checked by `stat` at every login and every SFTP request, and
once a second for idle connections), so `add-id`/`remove-id` take effect at once: a removed
ID's live connections are closed.

Security notes: one slow scrypt check for every failed password attempt whatever the ID
(no timing oracle); growing delays after repeated failures per source address and per ID
(`RateLimits`); no ownership changes and no mode beyond user rw (rwx for folders); an
audit trail in key=value lines (`audit`).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import hmac
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from cloudshare_p2p.errors import CloudShareError

from .i18n import _

if TYPE_CHECKING:
    from asyncssh.connection import SSHConnection  # a channel's connection (client or server side)

log = logging.getLogger("cloudshare.host")

COMM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOST_KEY = "host_key"
ACCOUNTS = "accounts.json"
DATA = "data"

#: scrypt parameters recorded with each hash (n=2**15, r=8, p=1: ~32 MiB, ~50-100 ms)
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**15, 8, 1, 32

MAX_AUTH_FAILURES = 5  # failed logins per connection before it is closed
LOGIN_TIMEOUT = 30.0  # seconds from connect to successful login
SHUTDOWN_GRACE = 5.0  # seconds live connections get to finish on SIGINT/SIGTERM
WATCH_INTERVAL = 1.0  # seconds between checks of accounts.json for idle connections
MAX_LOG_READ = 64 * 1024  # bytes of a log entry read to spot a lock break
FILE_MODE_MAX, DIR_MODE_MAX = 0o600, 0o700  # the only mode bits a client may set
MAX_TOMBSTONES = 200  # removals remembered in accounts.json ("removed") for the audit log

ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]


class HostError(CloudShareError):
    """A `cloudshare host` command cannot be carried out."""


# --- host folder --------------------------------------------------------------


def validate_comm_id(comm_id: str) -> str:
    """Return `comm_id` if it is a valid communication ID, else raise HostError."""
    if not COMM_ID_RE.match(comm_id or ""):
        raise HostError(
            _("invalid communication ID {comm_id!r}").format(comm_id=comm_id),
            hint=_("use 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"),
        )
    return comm_id


def _is_host_dir(path: Path) -> bool:
    return (path / HOST_KEY).is_file() and (path / ACCOUNTS).is_file()


def _require_host_dir(path: Path) -> Path:
    path = Path(path)
    if not _is_host_dir(path):
        raise HostError(
            _("{path} is not a host folder (no {host_key} / {accounts})").format(
                path=path, host_key=HOST_KEY, accounts=ACCOUNTS),
            hint=_("create it first with `cloudshare host init {path}`").format(path=path),
        )
    return path


def fingerprint(host_dir: Path) -> str:
    """The host key's `SHA256:` fingerprint, as OpenSSH prints it."""
    key = asyncssh.read_private_key(str(Path(host_dir) / HOST_KEY))
    return key.get_fingerprint("sha256")


def init_host(host_dir: str | os.PathLike[str]) -> str:
    """Create a host folder (idempotent): keeps an existing host key; returns its fingerprint.

    Running it again on a host folder changes nothing and prints the same fingerprint, so a
    firm can always re-read the fingerprint it must give its clients.
    """
    path = Path(host_dir)
    if path.exists() and not path.is_dir():
        raise HostError(_("{path} exists and is not a folder").format(path=path), hint=_("choose another "
                                                                                         "path"))
    if path.is_dir() and any(path.iterdir()) and not (path / HOST_KEY).exists():
        raise HostError(
            _("{path} is not empty and is not a host folder").format(path=path),
            hint=_("choose an empty or new folder for the host"),
        )
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = path / HOST_KEY
    if not key_path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="cloudshare host key")
        data = key.export_private_key("openssh")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        pub = path / (HOST_KEY + ".pub")
        pub.write_bytes(key.export_public_key("openssh"))
    (path / DATA).mkdir(exist_ok=True, mode=0o700)
    if not (path / ACCOUNTS).exists():
        _write_accounts(path, {"version": 1, "ids": {}})
    return fingerprint(path)


def _read_accounts(path: Path) -> dict[str, Any]:
    """The parsed accounts.json of host folder `path` (empty if missing)."""
    try:
        with open(path / ACCOUNTS, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {"version": 1, "ids": {}}
    except ValueError as exc:
        raise HostError(_("{path} is damaged: {error}").format(
            path=path / ACCOUNTS, error=exc), hint=_("restore it from a backup")) from exc
    if not isinstance(data, dict) or not isinstance(data.get("ids"), dict):
        raise HostError(_("{path} is damaged").format(path=path / ACCOUNTS), hint=_("restore it from a "
                                                                                    "backup"))
    return data


def _write_accounts(path: Path, data: dict[str, Any]) -> None:
    """Replace accounts.json atomically (temp file, fsync, rename), mode 0600."""
    fd, tmp = tempfile.mkstemp(prefix=".accounts.", suffix=".tmp", dir=path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / ACCOUNTS)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _accounts_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of accounts.json between admin commands."""
    import fcntl

    with open(path / ".accounts.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def hash_password(password: str) -> dict[str, Any]:
    """A salted scrypt record of `password` (what accounts.json stores)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=256 * 1024 * 1024,
        dklen=SCRYPT_LEN,
    )
    return {
        "alg": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(digest).decode(),
    }


def verify_password(record: dict[str, Any] | None, password: str) -> bool:
    """True if `password` matches the scrypt `record` (constant-time comparison)."""
    if not record or record.get("alg") != "scrypt":
        return False
    try:
        salt = base64.b64decode(record["salt"])
        expected = base64.b64decode(record["hash"])
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=int(record["n"]),
            r=int(record["r"]),
            p=int(record["p"]),
            maxmem=256 * 1024 * 1024,
            dklen=len(expected),
        )
    except (KeyError, ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _parse_public_key(line: str) -> str:
    """Validate one OpenSSH public key line; return it normalised ("type base64 comment")."""
    line = line.strip()
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise HostError(
            _("not an OpenSSH public key: {error}").format(error=exc),
            hint=_("pass the .pub file (one line starting with ssh-ed25519, ssh-rsa, ...)"),
        ) from exc
    return key.export_public_key("openssh").decode().strip()


def add_id(
    host_dir: str | os.PathLike[str],
    comm_id: str,
    password: str | None,
    authorized_key: str | None,
) -> None:
    """Create communication ID `comm_id` with a password and/or one authorized public key."""
    path = _require_host_dir(Path(host_dir))
    validate_comm_id(comm_id)
    if not password and not authorized_key:
        raise HostError(
            _("communication ID {comm_id} would have no way to log in").format(comm_id=comm_id),
            hint=_("give it a password, or --authorized-key PUBKEYFILE, or both"),
        )
    keys = [_parse_public_key(authorized_key)] if authorized_key else []
    record: dict[str, Any] = {
        "password": hash_password(password) if password else None,
        "authorized_keys": keys,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # a fresh serial per ID: a connection logged in before a remove + add is recognised
        "serial": secrets.token_hex(8),
    }
    with _accounts_lock(path):
        data = _read_accounts(path)
        if comm_id in data["ids"]:
            raise HostError(
                _("communication ID {comm_id} already exists").format(comm_id=comm_id),
                hint=_("remove it first with `cloudshare host remove-id {path} {comm_id}`").format(
                    path=path, comm_id=comm_id),
            )
        root = path / DATA / comm_id
        root.mkdir(mode=0o700, exist_ok=True)
        data["ids"][comm_id] = record
        _write_accounts(path, data)


def remove_id(host_dir: str | os.PathLike[str], comm_id: str, *, delete_data: bool = False) -> None:
    """Remove a communication ID (its data folder is kept unless `delete_data`).

    A running `serve` notices the change and closes the ID's live connections. With
    `delete_data` the folder is first renamed aside (`data/.removed-ID-XXXXXXXX`, so it is
    gone at once and nothing can write into it under its name), then deleted.
    """
    path = _require_host_dir(Path(host_dir))
    validate_comm_id(comm_id)
    aside: Path | None = None
    with _accounts_lock(path):
        data = _read_accounts(path)
        if comm_id not in data["ids"]:
            raise HostError(
                _("no communication ID {comm_id} on this host").format(comm_id=comm_id),
                hint=_("see `cloudshare host list-ids {path}`").format(path=path),
            )
        root = path / DATA / comm_id
        if delete_data and root.exists():
            aside = path / DATA / f".removed-{comm_id}-{secrets.token_hex(4)}"
            os.rename(root, aside)
        record = data["ids"].pop(comm_id)
        # a short memory of removals, so a running `serve` can log what happened exactly
        tombstone = {
            "id": comm_id,
            "token": _record_token(record) if isinstance(record, dict) else "",
            "data": "kept" if root.is_dir() else "deleted",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        removed = data.get("removed")
        if not isinstance(removed, list):
            removed = []
        data["removed"] = [*removed, tombstone][-MAX_TOMBSTONES:]
        _write_accounts(path, data)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@dataclass(frozen=True)
class IdInfo:
    """One line of `list-ids`."""

    comm_id: str
    password: bool
    keys: int
    created: str


def list_ids(host_dir: str | os.PathLike[str]) -> list[IdInfo]:
    """The communication IDs of a host folder, sorted."""
    path = _require_host_dir(Path(host_dir))
    data = _read_accounts(path)
    return [
        IdInfo(cid, bool(rec.get("password")), len(rec.get("authorized_keys") or []), rec.get("created", ""))
        for cid, rec in sorted(data["ids"].items())
    ]


# --- OpenSSH recipe -------------------------------------------------------------


def openssh_config(comm_id: str, data_root: str, *, password: bool = True) -> str:
    """The `sshd_config` block that confines `comm_id` to DATA_ROOT/COMM_ID (see hosting.md).

    The chroot folder DATA_ROOT/COMM_ID must be owned by root and not writable by group or
    others; the client writes into DATA_ROOT/COMM_ID/share (its start folder).
    """
    validate_comm_id(comm_id)
    root = posixpath.join(data_root.rstrip("/") or "/", comm_id)
    methods = "publickey password" if password else "publickey"
    return (
        f"# cloudshare: communication ID {comm_id} (a system user with no shell)\n"
        f"# {root} must be owned by root, mode 0755; the ID's data goes in {root}/share\n"
        f"Match User {comm_id}\n"
        f"    ChrootDirectory {root}\n"
        f"    ForceCommand internal-sftp -d /share\n"
        f"    AuthenticationMethods {methods}\n"
        f"    PasswordAuthentication {'yes' if password else 'no'}\n"
        f"    AllowTcpForwarding no\n"
        f"    AllowStreamLocalForwarding no\n"
        f"    AllowAgentForwarding no\n"
        f"    X11Forwarding no\n"
        f"    PermitTunnel no\n"
        f"    PermitTTY no\n"
        f"    PermitUserRC no\n"
    )


# --- audit log -------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9._:/@+\-]{1,200}$")


def _logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare when safe, else a JSON string (one line, escaped)."""
    text = str(value)
    if _BARE.match(text):
        return text
    if len(text) > 300:
        text = text[:300] + "…"
    return json.dumps(text, ensure_ascii=False)


def logfmt(**fields: object) -> str:
    """`key=value key="value with spaces"` (None values are left out)."""
    return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items() if v is not None)


def audit(event: str, level: int = logging.INFO, **fields: object) -> None:
    """One audit line: `event=EVENT key=value ...` (see docs/hosting.md for the events)."""
    log.log(level, logfmt(event=event, **fields), extra={"logfmt": True})


class LogfmtFormatter(logging.Formatter):
    """`time=... level=... pid=... event=...`: one line per record, whatever it holds."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        head = f"time={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} pid={record.process}"
        if getattr(record, "logfmt", False):
            body = record.getMessage()
        else:
            body = logfmt(logger=record.name, msg=record.getMessage())
        if record.exc_info:
            body += " " + logfmt(exc=self.formatException(record.exc_info))
        return f"{head} {body}"


def _peer_of(conn: SSHConnection) -> tuple[str, str]:
    """(address, "address:port") of a connection's peer; IPv6 as "[address]:port"."""
    peer = conn.get_extra_info("peername") or ("?", 0)
    addr = str(peer[0])
    return addr, f"[{addr}]:{peer[1]}" if ":" in addr else f"{addr}:{peer[1]}"


def _shown_id(name: str) -> str:
    """A client-given login name as logged (bounded; escaping is logfmt's)."""
    return name if len(name) <= 64 else name[:64] + "…"


# --- login rate limits ------------------------------------------------------------


@dataclass(frozen=True)
class RateLimits:
    """Growing delays after failed password logins (see docs/hosting.md).

    Once a source address, or an ID, has `max_failures` failures within `window` seconds,
    one password check is allowed per `penalty` seconds, doubling with each further
    failure up to `penalty_max`; attempts in between are refused without a check.
    """

    max_failures: int = 5
    window: float = 600.0
    penalty: float = 30.0
    penalty_max: float = 480.0
    remember_success: float = 30 * 86400.0  # how long a (address, ID) login is "known good"
    max_tracked: int = 100_000  # bound on remembered keys (memory under a flood)

    def delay(self, failures: int) -> float:
        """Seconds between allowed attempts after `failures` recent failures (0: no delay)."""
        if failures < self.max_failures:
            return 0.0
        return min(self.penalty * 2 ** min(failures - self.max_failures, 30), self.penalty_max)


class LoginLimiter:
    """Counts failed password logins per source address, per ID and per (address, ID).

    - an (address, ID) pair that logged in successfully before is judged only by its own
      failures since then: a guesser elsewhere cannot lock the client out;
    - otherwise the address's failures count, and the ID's failures (from all addresses)
      count for every address that itself failed recently: a spread-out guesser gets one
      quick guess per address, while the client on a clean address is not slowed.
    """

    def __init__(self, limits: RateLimits, clock: Any = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._fails: dict[tuple[str, ...], collections.deque[float]] = {}
        self._last_try: dict[tuple[str, ...], float] = {}
        self._good: dict[tuple[str, str], float] = {}

    def _recent(self, key: tuple[str, ...], now: float) -> collections.deque[float]:
        q = self._fails.get(key)
        if q is None:
            return collections.deque()
        while q and q[0] <= now - self.limits.window:
            q.popleft()
        if not q:
            del self._fails[key]
            self._last_try.pop(key, None)
        return q

    def _keys(self, addr: str, comm_id: str, now: float) -> list[tuple[str, ...]]:
        good = self._good.get((addr, comm_id))
        if good is not None and now - good < self.limits.remember_success:
            return [("pair", addr, comm_id)]
        keys: list[tuple[str, ...]] = [("addr", addr)]
        if self._recent(("addr", addr), now):
            keys.append(("id", comm_id))
        return keys

    def check(self, addr: str, comm_id: str) -> tuple[float, str]:
        """(seconds to wait, which limit) before a password may be checked; (0, "") = go.

        A "go" for a throttled key takes its slot, so concurrent attempts get one check.
        """
        now = self._clock()
        wait, why, throttled = 0.0, "", []
        for key in self._keys(addr, comm_id, now):
            q = self._recent(key, now)
            delay = self.limits.delay(len(q))
            if not delay:
                continue
            throttled.append(key)
            since = max(q[-1], self._last_try.get(key, q[-1]))
            if since + delay - now > wait:
                wait, why = since + delay - now, key[0]
        if wait > 0:
            return wait, why
        for key in throttled:
            self._last_try[key] = now
        return 0.0, ""

    def failed(self, addr: str, comm_id: str) -> int:
        """Record a failed password check; returns the address's recent failures."""
        now = self._clock()
        if len(self._fails) > self.limits.max_tracked:
            self._sweep(now)
        cap = self.limits.max_failures + 32
        for key in (("addr", addr), ("id", comm_id), ("pair", addr, comm_id)):
            self._recent(key, now)
            self._fails.setdefault(key, collections.deque(maxlen=cap)).append(now)
        return len(self._fails[("addr", addr)])

    def succeeded(self, addr: str, comm_id: str) -> None:
        """Remember a good (address, ID) pair and forget its own failures."""
        now = self._clock()
        if len(self._good) > self.limits.max_tracked:
            self._good.clear()
        self._good[(addr, comm_id)] = now
        self._fails.pop(("pair", addr, comm_id), None)
        self._last_try.pop(("pair", addr, comm_id), None)

    def _sweep(self, now: float) -> None:
        for key in list(self._fails):
            self._recent(key, now)
        while len(self._fails) > self.limits.max_tracked // 2:  # still flooded: drop the oldest
            key = next(iter(self._fails))
            self._fails.pop(key)
            self._last_try.pop(key, None)


# --- accounts, re-read when they change ---------------------------------------------


def _record_token(record: dict[str, Any]) -> str:
    """What identifies one incarnation of an ID: its serial (or, for old records, a hash)."""
    serial = record.get("serial")
    if isinstance(serial, str) and serial:
        return serial
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


class _Accounts:
    """accounts.json, re-read only when its `stat` (device, inode, mtime, size) changes."""

    def __init__(self, host_dir: Path) -> None:
        self._dir = host_dir
        self._sig: tuple[int, ...] | None = None
        self._ids: dict[str, Any] = {}
        self.removed: list[dict[str, Any]] = []  # the tombstones of the last read

    def ids(self) -> dict[str, Any]:
        """The current IDs; raises HostError if the file is damaged or unreadable."""
        sig: tuple[int, ...]
        try:
            st = os.stat(self._dir / ACCOUNTS)
            sig = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = ()
        except OSError as exc:
            raise HostError(_("cannot read {path}: {error}").format(
                path=self._dir / ACCOUNTS, error=exc)) from exc
        if sig != self._sig:
            try:
                data = _read_accounts(self._dir)
            except OSError as exc:
                raise HostError(_("cannot read {path}: {error}").format(
                    path=self._dir / ACCOUNTS, error=exc)) from exc
            self._ids = {k: v for k, v in data["ids"].items() if isinstance(v, dict)}
            removed = data.get("removed")
            self.removed = [r for r in removed if isinstance(r, dict)] if isinstance(removed, list) else []
            self._sig = sig
        return self._ids

    def token(self, comm_id: str) -> str | None:
        """The ID's current token, or None if it does not exist (or the file is damaged)."""
        try:
            record = self.ids().get(comm_id)
        except HostError:
            return None
        return _record_token(record) if record is not None else None


# --- the SFTP server ------------------------------------------------------------


_libc: Any = None
RENAME_NOREPLACE = 1


def _renameat2_noreplace(old: str, new: str) -> bool:
    """Atomic rename that fails with EEXIST if `new` exists; False if not supported here."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            _libc.renameat2  # noqa: B018 - probe
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    at_fdcwd = -100
    rc = _libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), RENAME_NOREPLACE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # this filesystem does not support RENAME_NOREPLACE
    raise OSError(err, os.strerror(err), old, None, new)


def _parts(path: bytes) -> list[bytes]:
    """The components of a client path, normalised as the chroot sees it."""
    return [p for p in posixpath.normpath(b"/" + path.lstrip(b"/")).split(b"/") if p]


def _depth(path: bytes) -> int:
    return len(_parts(path))


_LOG_NAME = re.compile(rb"^[0-9]{20}$")


class ChrootSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server confined to one ID's folder, with the holes closed.

    - every request first checks that the ID still exists as it was at login (a removed
      ID's connection is closed) and that its folder exists (nothing re-creates it);
    - the root itself cannot be created, removed, renamed, linked over or changed;
    - no ownership changes; modes only within user rw (rwx for folders); files and
      folders are created 0600 / 0700 at most;
    - symlinks cannot be created (SSH_FX_PERMISSION_DENIED);
    - a path whose real location (symlinks resolved) leaves the root is refused, so a
      symlink put there by someone else cannot be used to escape;
    - plain `rename` never overwrites (renameat2 RENAME_NOREPLACE, not check-then-rename);
    - a directory listing skips entries that vanish while it is read;
    - `hardlink@openssh.com` is asyncssh's `link` (advertised by asyncssh);
    - areas created and deleted, and lock breaks written to an area's log, are audited.
    """

    def __init__(self, chan: asyncssh.SSHServerChannel, root: str, host: EmbeddedHost | None = None) -> None:
        super().__init__(chan, chroot=root.encode())
        self._root = root.encode()
        self._root_real = os.path.realpath(root).encode()
        self._host = host
        conn = chan.get_connection()
        owner = conn.get_owner()
        self._session: _HostSSHServer | None = owner if isinstance(owner, _HostSSHServer) else None
        self._who = conn.get_extra_info("username") or "?"
        self._peer = _peer_of(conn)[1]
        self._created_logs: dict[int, bytes] = {}  # id(file) -> client path of a new log entry

    # -- guards ---------------------------------------------------------------

    def _guard(self) -> None:
        """Refuse (and end the connection) once the ID was removed or replaced."""
        if self._host is None or self._session is None:
            return
        problem = self._host.session_problem(self._session)
        if problem:
            self._host.end_session(self._session, problem)
            raise asyncssh.SFTPPermissionDenied("this communication ID was removed from the host")
        if not os.path.isdir(self._root):
            raise asyncssh.SFTPPermissionDenied("this communication ID's folder is gone from the host")

    def map_path(self, path: bytes) -> bytes:
        self._guard()
        mapped = super().map_path(path)
        real = os.path.realpath(mapped)
        if real != self._root_real and not real.startswith(self._root_real + b"/"):
            raise asyncssh.SFTPPermissionDenied("path leaves the share folder")
        return mapped

    @staticmethod
    def _not_root(path: bytes) -> None:
        if not _parts(path):
            raise asyncssh.SFTPPermissionDenied("the root folder cannot be changed")

    def _check_attrs(self, attrs: asyncssh.SFTPAttrs, st: os.stat_result, is_root: bool) -> None:
        """Refuse ownership changes and modes beyond user rw (rwx for folders)."""
        if attrs.uid is not None or attrs.gid is not None or attrs.owner or attrs.group:
            raise asyncssh.SFTPPermissionDenied("ownership cannot be changed on this host")
        if attrs.permissions is None:
            return
        mode = stat.S_IMODE(attrs.permissions)
        if mode == stat.S_IMODE(st.st_mode):
            attrs.permissions = None  # no change
            return
        if is_root:
            raise asyncssh.SFTPPermissionDenied("the mode of the root folder cannot be changed")
        allowed = DIR_MODE_MAX if stat.S_ISDIR(st.st_mode) else FILE_MODE_MAX
        if mode & ~allowed:
            raise asyncssh.SFTPPermissionDenied(
                f"mode {mode:04o} is not allowed on this host (at most {allowed:04o})"
            )
        attrs.permissions = mode

    # -- path operations ----------------------------------------------------------

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        mapped = self.map_path(path)
        self._check_attrs(attrs, os.stat(mapped), not _parts(path))
        super().setstat(path, attrs)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        mapped = self.map_path(path)
        self._check_attrs(attrs, os.lstat(mapped), not _parts(path))
        super().lsetstat(path, attrs)

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        creating = bool(pflags & asyncssh.FXF_CREAT)
        existed = False
        if creating:
            self._not_root(path)
            perms = FILE_MODE_MAX if attrs.permissions is None else attrs.permissions
            attrs.permissions = stat.S_IMODE(perms) & FILE_MODE_MAX
            existed = os.path.lexists(self.map_path(path))
        file_obj = super().open(path, pflags, attrs)
        if creating and not existed:
            parts = _parts(path)
            if len(parts) == 2 and parts[1] == b"config":
                self._area_created(parts[0])
            elif len(parts) == 3 and parts[1] == b"log" and _LOG_NAME.match(parts[2]):
                self._created_logs[id(file_obj)] = path
        return file_obj

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._not_root(path)
        perms = DIR_MODE_MAX if attrs.permissions is None else attrs.permissions
        attrs.permissions = stat.S_IMODE(perms) & DIR_MODE_MAX
        super().mkdir(path, attrs)

    def rmdir(self, path: bytes) -> None:
        self._not_root(path)
        super().rmdir(path)

    def remove(self, path: bytes) -> None:
        self._not_root(path)
        super().remove(path)
        parts = _parts(path)
        if len(parts) == 2 and parts[1] == b"config":
            self._area_deleted(parts[0], how="config removed")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("symbolic links are not allowed on this host")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._not_root(newpath)
        super().link(oldpath, newpath)
        self._published(newpath)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._not_root(oldpath)
        self._not_root(newpath)
        was_area = self._is_area(oldpath)
        old = os.fsdecode(self.map_path(oldpath))
        new = os.fsdecode(self.map_path(newpath))
        try:
            done = _renameat2_noreplace(old, new)
        except FileExistsError as exc:
            raise asyncssh.SFTPFileAlreadyExists("File already exists") from exc
        if not done:  # filesystem without RENAME_NOREPLACE: asyncssh's check-then-rename
            super().rename(oldpath, newpath)
        self._renamed(oldpath, newpath, was_area)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._not_root(oldpath)
        self._not_root(newpath)
        was_area = self._is_area(oldpath)
        super().posix_rename(oldpath, newpath)
        self._renamed(oldpath, newpath, was_area)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        mapped = self.map_path(path)
        for name in (b".", b".."):
            yield await self._to_sftpname(path, name)
        with os.scandir(mapped) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing: OpenSSH skips it too
                yield asyncssh.SFTPName(os.fsencode(entry.name), attrs=asyncssh.SFTPAttrs.from_local(st))

    # -- handle operations (no path: the guard runs explicitly) ---------------------

    def close(self, file_obj: object) -> None:
        """Close (never refused: asyncssh closes every handle this way at the end)."""
        path = self._created_logs.pop(id(file_obj), None)
        super().close(file_obj)
        if path is not None:
            self._log_entry_seen(path)

    def read(self, file_obj: object, offset: int, size: int) -> bytes | Awaitable[bytes]:
        self._guard()
        return super().read(file_obj, offset, size)

    def write(self, file_obj: object, offset: int, data: bytes) -> int | Awaitable[int]:
        self._guard()
        return super().write(file_obj, offset, data)

    def fstat(self, file_obj: object) -> Any:
        self._guard()
        return super().fstat(file_obj)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        self._guard()
        self._check_attrs(attrs, os.fstat(file_obj.fileno()), False)  # type: ignore[attr-defined]
        super().fsetstat(file_obj, attrs)

    def fsync(self, file_obj: object) -> None:
        self._guard()
        super().fsync(file_obj)

    def fstatvfs(self, file_obj: object) -> Any:
        self._guard()
        return super().fstatvfs(file_obj)

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        self._guard()
        super().lock(file_obj, offset, length, flags)

    def unlock(self, file_obj: object, offset: int, length: int) -> None:
        self._guard()
        super().unlock(file_obj, offset, length)

    # -- audit ------------------------------------------------------------------

    def _is_area(self, path: bytes) -> bool:
        parts = _parts(path)
        if len(parts) != 1:
            return False
        try:
            return os.path.isfile(posixpath.join(self.map_path(path), b"config"))
        except asyncssh.SFTPError:
            return False

    def _area_created(self, area: bytes) -> None:
        audit("area-created", id=self._who, area=os.fsdecode(area), peer=self._peer)

    def _area_deleted(self, area: bytes, how: str) -> None:
        audit("area-deleted", id=self._who, area=os.fsdecode(area), how=how, peer=self._peer)

    def _published(self, newpath: bytes) -> None:
        """A name just created by link/rename: an area's config, or a log entry."""
        parts = _parts(newpath)
        if len(parts) == 2 and parts[1] == b"config":
            self._area_created(parts[0])
        elif len(parts) == 3 and parts[1] == b"log" and _LOG_NAME.match(parts[2]):
            self._log_entry_seen(newpath)

    def _renamed(self, oldpath: bytes, newpath: bytes, was_area: bool) -> None:
        if was_area:
            new = _parts(newpath)
            if len(new) == 1 and not new[0].startswith(b"."):
                audit(
                    "area-renamed", id=self._who, area=os.fsdecode(_parts(oldpath)[0]),
                    to=os.fsdecode(new[0]), peer=self._peer,
                )
            else:
                self._area_deleted(_parts(oldpath)[0], how="renamed to " + os.fsdecode(b"/".join(new)))
        else:
            self._published(newpath)

    def _log_entry_seen(self, path: bytes) -> None:
        """Best effort: a new log entry whose JSON says "kind": "break" is a lock break."""
        try:
            with open(self.map_path(path), "rb") as f:
                entry = json.loads(f.read(MAX_LOG_READ))
        except (OSError, ValueError, asyncssh.SFTPError):
            return
        if not isinstance(entry, dict) or entry.get("kind") != "break":
            return
        writer = entry.get("writer")
        if not isinstance(writer, dict):
            writer = {}
        parts = _parts(path)
        audit(
            "lock-break", level=logging.WARNING, id=self._who, area=os.fsdecode(parts[0]),
            seq=os.fsdecode(parts[2]).lstrip("0") or "0", gen=entry.get("gen"),
            broken_holder=entry.get("broken_holder") or "-", by=writer.get("name"),
            note=entry.get("note"), peer=self._peer,
        )


class _HostSSHServer(asyncssh.SSHServer):
    """Authentication against accounts.json (re-read when it changes), SFTP only."""

    def __init__(self, host: EmbeddedHost) -> None:
        self._host = host
        self.conn: asyncssh.SSHServerConnection | None = None
        self.comm_id = ""  # the logged-in ID
        self.token: str | None = None  # its account's token at login
        self.ending = False
        self._user = ""
        self._account: dict[str, Any] | None = None
        self._token: str | None = None
        self._failures = 0
        self._authed = False
        self._method = ""
        self._addr = "?"
        self._peer = "?"
        self._since = time.monotonic()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self._addr, self._peer = _peer_of(conn)
        self._host._connections.add(conn)
        self._host._sessions[conn] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self._host._connections.discard(self.conn)
            self._host._sessions.pop(self.conn, None)
        if self._authed:
            audit(
                "logout", id=self.comm_id, peer=self._peer,
                seconds=f"{time.monotonic() - self._since:.0f}",
            )

    def begin_auth(self, username: str) -> bool:
        self._user = username
        try:
            ids = self._host.accounts.ids()
        except HostError as exc:
            audit("accounts-unreadable", level=logging.ERROR, error=str(exc))
            ids = {}
        self._account = ids.get(username) if COMM_ID_RE.match(username) else None
        self._token = _record_token(self._account) if self._account is not None else None
        return True  # unknown IDs still go through (and fail) auth: no user enumeration

    def auth_completed(self) -> None:
        self._authed = True
        self.comm_id, self.token = self._user, self._token
        self._since = time.monotonic()
        self._host.limiter.succeeded(self._addr, self._user)
        audit("login", result="ok", peer=self._peer, method=self._method, id=self._user)

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= MAX_AUTH_FAILURES and self.conn is not None:
            audit(
                "login", level=logging.WARNING, result="disconnected", peer=self._peer,
                id=_shown_id(self._user), attempts=self._failures, why="too many failures on one connection",
            )
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures"
            )

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        """One scrypt check per attempt whatever the ID; refused early while throttled."""
        wait, which = self._host.limiter.check(self._addr, username)
        if wait > 0:
            audit(
                "login", level=logging.WARNING, result="throttled", peer=self._peer, method="password",
                id=_shown_id(username), limit=which, retry_in=f"{wait:.1f}",
            )
            self._failed()
            return False
        record = (self._account or {}).get("password") or None
        checked = record if isinstance(record, dict) else self._host.dummy_password
        ok = await asyncio.to_thread(verify_password, checked, password)
        ok = ok and checked is record
        if ok:
            self._method = "password"
            return True
        recent = self._host.limiter.failed(self._addr, username)
        audit(
            "login", level=logging.WARNING, result="failed", peer=self._peer, method="password",
            id=_shown_id(username), known="yes" if self._account is not None else "no", failures=recent,
        )
        self._failed()
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        offered = key.public_data
        ok = False
        for line in (self._account or {}).get("authorized_keys") or []:
            try:
                known = asyncssh.import_public_key(line).public_data
            except (asyncssh.KeyImportError, ValueError):
                continue
            if hmac.compare_digest(known, offered):
                ok = True
        if ok:
            self._method = "publickey"
        else:
            audit(
                "login", level=logging.WARNING, result="failed", peer=self._peer, method="publickey",
                id=_shown_id(username), known="yes" if self._account is not None else "no",
                key=key.get_fingerprint("sha256"),
            )
            self._failed()
        return ok

    # no forwarding of any kind (these are asyncssh's defaults, stated here on purpose)
    def connection_requested(self, *args: Any) -> bool:
        return False

    def server_requested(self, *args: Any) -> bool:
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        return False


class EmbeddedHost:
    """An SFTP host serving `host_dir` on `bind:port` until `stop()`.

    >>> host = EmbeddedHost(path, "127.0.0.1", 0); await host.start(); host.port
    """

    def __init__(
        self,
        host_dir: str | os.PathLike[str],
        bind: str = "127.0.0.1",
        port: int = 2222,
        *,
        login_timeout: float = LOGIN_TIMEOUT,
        grace: float = SHUTDOWN_GRACE,
        limits: RateLimits | None = None,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self.host_dir = _require_host_dir(Path(host_dir)).resolve()
        self.bind, self.port = bind, port
        self.login_timeout, self.grace = login_timeout, grace
        self.watch_interval = watch_interval
        self.limiter = LoginLimiter(limits or RateLimits())
        self.accounts = _Accounts(self.host_dir)
        # checked instead of a real hash when the ID is unknown or has no password:
        # every failed password costs the same scrypt whatever the ID
        self.dummy_password = hash_password(secrets.token_urlsafe(24))
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._sessions: dict[asyncssh.SSHServerConnection, _HostSSHServer] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- accounts -----------------------------------------------------------

    def session_valid(self, session: _HostSSHServer) -> bool:
        """True while the session's ID still exists as it was when it logged in."""
        return self.session_problem(session) is None

    def session_problem(self, session: _HostSSHServer) -> str | None:
        """None while the session's ID is as it was at login; else "id-removed" or
        "accounts-unreadable" (a damaged accounts.json closes connections: fail closed)."""
        try:
            record = self.accounts.ids().get(session.comm_id)
        except HostError:
            return "accounts-unreadable"
        if session.token is None or record is None or _record_token(record) != session.token:
            return "id-removed"
        return None

    def end_session(self, session: _HostSSHServer, reason: str) -> None:
        """Close a logged-in connection (once), logging why."""
        if session.ending or session.conn is None:
            return
        session.ending = True
        audit("session-closed", level=logging.WARNING, id=session.comm_id, peer=session._peer, reason=reason)
        session.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "communication ID removed from this host")

    def _snapshot(self) -> dict[str, tuple[str, dict[str, Any]]] | None:
        """Each ID's (token, record); None if accounts.json is unreadable."""
        try:
            return {cid: (_record_token(rec), rec) for cid, rec in self.accounts.ids().items()}
        except HostError:
            return None

    def _audit_id_changes(
        self, before: dict[str, tuple[str, dict[str, Any]]], after: dict[str, tuple[str, dict[str, Any]]]
    ) -> None:
        """One line per ID removed or added (a remove + add in between shows as both)."""
        fates = {(r.get("id"), r.get("token")): r.get("data") for r in self.accounts.removed}
        for cid in sorted(before.keys() | after.keys()):
            old, new = before.get(cid), after.get(cid)
            replaced = old is not None and new is not None and new[0] != old[0]
            if old is not None and (new is None or replaced):
                fate = fates.get((cid, old[0]))
                if fate is None:  # removed by hand, not by remove-id
                    fate = "kept" if new is None and (self.host_dir / DATA / cid).is_dir() else "unknown"
                audit("id-removed", id=cid, data=fate)
            if new is not None and (old is None or replaced):
                rec = new[1]
                audit(
                    "id-added", id=cid, password="yes" if rec.get("password") else "no",
                    keys=len(rec.get("authorized_keys") or []),
                )

    async def _watch_accounts(self) -> None:
        """Until stopped: log ID changes and close connections of removed IDs."""
        known = self._snapshot() or {}
        damaged = False
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.watch_interval)
            now = self._snapshot()
            if now is None:
                if not damaged:
                    audit("accounts-unreadable", level=logging.ERROR, path=str(self.host_dir / ACCOUNTS))
                damaged = True
                continue
            damaged = False
            if now != known:
                self._audit_id_changes(known, now)
                known = now
            for session in list(self._sessions.values()):
                problem = self.session_problem(session) if session._authed else None
                if problem and not session.ending:
                    self.end_session(session, problem)

    # -- SFTP -----------------------------------------------------------------

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel) -> ChrootSFTPServer:
        conn = chan.get_connection()
        user = conn.get_extra_info("username")
        validate_comm_id(user)
        owner = conn.get_owner()
        problem = self.session_problem(owner) if isinstance(owner, _HostSSHServer) else None
        if isinstance(owner, _HostSSHServer) and problem:
            self.end_session(owner, problem)  # its requests are refused meanwhile
        # never create the root here: only add-id does, so a removed ID stays removed
        return ChrootSFTPServer(chan, str(self.host_dir / DATA / user), self)

    async def start(self) -> None:
        """Listen (port 0 picks a free port, then `.port`) and start watching the accounts."""
        key = asyncssh.read_private_key(str(self.host_dir / HOST_KEY))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            audit(
                "running-as-root", level=logging.WARNING,
                msg="run `cloudshare host serve` as an unprivileged user that owns the host folder",
            )
        self._acceptor = await asyncssh.listen(
            self.bind,
            self.port,
            config=None,
            server_host_keys=[key],
            server_factory=lambda: _HostSSHServer(self),
            sftp_factory=self._sftp_factory,
            allow_scp=False,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            kbdint_auth=False,
            gss_auth=False,
            host_based_auth=False,
            rdns_lookup=False,
            login_timeout=self.login_timeout,
            encryption_algs=ENCRYPTION_ALGS,
            sftp_version=3,
        )
        if self.port == 0:
            self.port = self._acceptor.get_port()
        self._stopping.clear()
        self._watcher = asyncio.create_task(self._watch_accounts())
        limits = self.limiter.limits
        audit(
            "serving", dir=str(self.host_dir), listen=f"{self.bind}:{self.port}",
            host_key=fingerprint(self.host_dir), max_failures=limits.max_failures,
            window=f"{limits.window:g}", penalty=f"{limits.penalty:g}",
        )

    async def stop(self) -> None:
        """Stop accepting, give live connections `grace` seconds, then close them."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        deadline = time.monotonic() + self.grace
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._stopping.set()
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._watcher, timeout=5)
            self._watcher = None
        conns = list(self._connections)
        if conns:
            audit("closing", connections=len(conns))
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), timeout=5)
        self._connections.clear()
        # let asyncssh's per-channel cleanup tasks finish before the loop goes away
        for _try in range(5):
            await asyncio.sleep(0)
        audit("stopped")

    async def run_until_signalled(self) -> None:
        """Serve until SIGINT or SIGTERM, then `stop()`."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
            audit("signal-received", msg="stopping")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()


def _open_log_file(path: Path) -> logging.Handler:
    """An appending handler for the audit file (created 0600; reopened after rotation)."""
    import logging.handlers

    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    return logging.handlers.WatchedFileHandler(path, encoding="utf-8")


def setup_logging(level: int = logging.INFO, log_file: str | os.PathLike[str] | None = None) -> None:
    """Audit lines (logfmt) to stderr, and appended to `log_file` if given."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        handlers.append(_open_log_file(Path(log_file)))
    for handler in handlers:
        handler.setFormatter(LogfmtFormatter())
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    ssh_log = logging.getLogger("asyncssh")
    ssh_log.setLevel(logging.WARNING)
    for handler in handlers:
        ssh_log.addHandler(handler)
    ssh_log.propagate = False


def serve_forever(
    host_dir: str | os.PathLike[str],
    bind: str = "127.0.0.1",
    port: int = 2222,
    *,
    grace: float = SHUTDOWN_GRACE,
    limits: RateLimits | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop cleanly and return."""
    host = EmbeddedHost(host_dir, bind, port, grace=grace, limits=limits)
    asyncio.run(host.run_until_signalled())
