"""Embedded SFTP host for `cloudshare host`: asyncssh's SFTP server, one chroot per ID.

Host folder layout (see docs/hosting.md):

    DIR/host_key          Ed25519 host key, OpenSSH private format, 0600 (generated once)
    DIR/accounts.json     {"version": 1, "ids": {COMM_ID: {...}}}, 0600, replaced atomically
    DIR/data/COMM_ID/     the ID's root as its client sees it ("/"); areas live here

Nothing here keeps files or accounts in memory between requests: several processes may
serve the same folder at once (the stand-in for several machines over shared storage).
Every login reads `accounts.json` afresh, so `add-id`/`remove-id` take effect at once.
"""

from __future__ import annotations

import asyncio
import base64
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
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from cloudshare_p2p.errors import CloudShareError

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
    if not COMM_ID_RE.match(comm_id or ""):
        raise HostError(
            f"invalid communication ID {comm_id!r}",
            hint="use 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return comm_id


def _is_host_dir(path: Path) -> bool:
    return (path / HOST_KEY).is_file() and (path / ACCOUNTS).is_file()


def _require_host_dir(path: Path) -> Path:
    path = Path(path)
    if not _is_host_dir(path):
        raise HostError(
            f"{path} is not a host folder (no {HOST_KEY} / {ACCOUNTS})",
            hint=f"create it first with `cloudshare host init {path}`",
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
        raise HostError(f"{path} exists and is not a folder", hint="choose another path")
    if path.is_dir() and any(path.iterdir()) and not (path / HOST_KEY).exists():
        raise HostError(
            f"{path} is not empty and is not a host folder",
            hint="choose an empty or new folder for the host",
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
    try:
        with open(path / ACCOUNTS, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {"version": 1, "ids": {}}
    if not isinstance(data, dict) or not isinstance(data.get("ids"), dict):
        raise HostError(f"{path / ACCOUNTS} is damaged", hint="restore it from a backup")
    return data


def _write_accounts(path: Path, data: dict[str, Any]) -> None:
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
def _accounts_lock(path: Path):
    """Serialise read-modify-write of accounts.json between admin commands."""
    import fcntl

    with open(path / ".accounts.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def hash_password(password: str) -> dict[str, Any]:
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
            f"not an OpenSSH public key: {exc}",
            hint="pass the .pub file (one line starting with ssh-ed25519, ssh-rsa, ...)",
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
            f"communication ID {comm_id} would have no way to log in",
            hint="give it a password, or --authorized-key PUBKEYFILE, or both",
        )
    keys = [_parse_public_key(authorized_key)] if authorized_key else []
    record: dict[str, Any] = {
        "password": hash_password(password) if password else None,
        "authorized_keys": keys,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with _accounts_lock(path):
        data = _read_accounts(path)
        if comm_id in data["ids"]:
            raise HostError(
                f"communication ID {comm_id} already exists",
                hint=f"remove it first with `cloudshare host remove-id {path} {comm_id}`",
            )
        root = path / DATA / comm_id
        root.mkdir(mode=0o700, exist_ok=True)
        data["ids"][comm_id] = record
        _write_accounts(path, data)


def remove_id(host_dir: str | os.PathLike[str], comm_id: str, *, delete_data: bool = False) -> None:
    """Remove a communication ID (its data folder is kept unless `delete_data`)."""
    path = _require_host_dir(Path(host_dir))
    validate_comm_id(comm_id)
    with _accounts_lock(path):
        data = _read_accounts(path)
        if comm_id not in data["ids"]:
            raise HostError(
                f"no communication ID {comm_id} on this host",
                hint=f"see `cloudshare host list-ids {path}`",
            )
        del data["ids"][comm_id]
        _write_accounts(path, data)
    if delete_data:
        import shutil

        shutil.rmtree(path / DATA / comm_id, ignore_errors=True)


@dataclass(frozen=True)
class IdInfo:
    comm_id: str
    password: bool
    keys: int
    created: str


def list_ids(host_dir: str | os.PathLike[str]) -> list[IdInfo]:
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


def _depth(path: bytes) -> int:
    return len([p for p in posixpath.normpath(b"/" + path.lstrip(b"/")).split(b"/") if p])


class ChrootSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server confined to one folder, with the holes closed.

    - symlinks cannot be created (SSH_FX_PERMISSION_DENIED);
    - a path whose real location (symlinks resolved) leaves the root is refused, so a
      symlink put there by someone else cannot be used to escape;
    - plain `rename` never overwrites (renameat2 RENAME_NOREPLACE, not check-then-rename);
    - a directory listing skips entries that vanish while it is read;
    - `hardlink@openssh.com` is asyncssh's `link` (advertised by asyncssh).
    """

    def __init__(self, chan: asyncssh.SSHServerChannel, root: str) -> None:
        super().__init__(chan, chroot=root.encode())
        self._root_real = os.path.realpath(root).encode()
        conn = chan.get_connection()
        self._who = conn.get_extra_info("username") or "?"
        peer = conn.get_extra_info("peername") or ("?", 0)
        self._peer = f"{peer[0]}:{peer[1]}"

    def map_path(self, path: bytes) -> bytes:
        mapped = super().map_path(path)
        real = os.path.realpath(mapped)
        if real != self._root_real and not real.startswith(self._root_real + b"/"):
            raise asyncssh.SFTPPermissionDenied("path leaves the share folder")
        return mapped

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("symbolic links are not allowed on this host")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old = os.fsdecode(self.map_path(oldpath))
        new = os.fsdecode(self.map_path(newpath))
        try:
            done = _renameat2_noreplace(old, new)
        except FileExistsError as exc:
            raise asyncssh.SFTPFileAlreadyExists("File already exists") from exc
        if not done:  # filesystem without RENAME_NOREPLACE: asyncssh's check-then-rename
            super().rename(oldpath, newpath)
        self._area_log("renamed", oldpath, newpath)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        for name in (b".", b".."):
            yield await self._to_sftpname(path, name)
        with os.scandir(self.map_path(path)) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing: OpenSSH skips it too
                yield asyncssh.SFTPName(os.fsencode(entry.name), attrs=asyncssh.SFTPAttrs.from_local(st))

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        super().mkdir(path, attrs)
        self._area_log("created", path)

    def rmdir(self, path: bytes) -> None:
        super().rmdir(path)
        self._area_log("deleted", path)

    def remove(self, path: bytes) -> None:
        super().remove(path)
        if _depth(path) == 1:  # files inside areas come and go: not logged
            self._area_log("file removed", path)

    def _area_log(self, what: str, path: bytes, newpath: bytes | None = None) -> None:
        if not 0 < _depth(path) <= 2:
            return
        p = os.fsdecode(posixpath.normpath(b"/" + path.lstrip(b"/")))
        extra = f" -> {os.fsdecode(posixpath.normpath(b'/' + newpath.lstrip(b'/')))}" if newpath else ""
        log.info("area %s: id=%s path=%s%s peer=%s", what, self._who, p, extra, self._peer)


class _HostSSHServer(asyncssh.SSHServer):
    """Authentication against accounts.json (read at each login), SFTP only."""

    def __init__(self, host: EmbeddedHost) -> None:
        self._host = host
        self._conn: asyncssh.SSHServerConnection | None = None
        self._user = ""
        self._account: dict[str, Any] | None = None
        self._failures = 0
        self._authed = False
        self._peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self._peer = f"{peer[0]}:{peer[1]}"
        self._host._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._host._connections.discard(self._conn)
        if not self._authed and self._user:
            log.warning("login failed: id=%s peer=%s attempts=%d", self._user, self._peer, self._failures)

    def begin_auth(self, username: str) -> bool:
        self._user = username
        try:
            ids = _read_accounts(self._host.host_dir)["ids"]
        except (OSError, ValueError, CloudShareError):
            log.exception("cannot read accounts")
            ids = {}
        self._account = ids.get(username) if COMM_ID_RE.match(username) else None
        return True  # unknown IDs still go through (and fail) auth: no user enumeration

    def auth_completed(self) -> None:
        self._authed = True
        log.info("login ok: id=%s peer=%s", self._user, self._peer)

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= MAX_AUTH_FAILURES and self._conn is not None:
            log.warning(
                "login failed: id=%s peer=%s attempts=%d (too many, disconnected)",
                self._user,
                self._peer,
                self._failures,
            )
            self._user = ""  # already logged
            self._conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures"
            )

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        record = (self._account or {}).get("password")
        if record:
            ok = await asyncio.to_thread(verify_password, record, password)
        else:
            await asyncio.sleep(0.05)
            ok = False
        if not ok:
            self._failed()
        return ok

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
        if not ok:
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
    ) -> None:
        self.host_dir = _require_host_dir(Path(host_dir)).resolve()
        self.bind, self.port = bind, port
        self.login_timeout, self.grace = login_timeout, grace
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel) -> ChrootSFTPServer:
        user = chan.get_connection().get_extra_info("username")
        validate_comm_id(user)
        root = self.host_dir / DATA / user
        root.mkdir(mode=0o700, exist_ok=True)
        return ChrootSFTPServer(chan, str(root))

    async def start(self) -> None:
        key = asyncssh.read_private_key(str(self.host_dir / HOST_KEY))
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
        log.info(
            "serving %s on %s:%d (host key %s)",
            self.host_dir,
            self.bind,
            self.port,
            fingerprint(self.host_dir),
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
        conns = list(self._connections)
        if conns:
            log.info("closing %d connection(s)", len(conns))
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), timeout=5)
        self._connections.clear()
        # let asyncssh's per-channel cleanup tasks finish before the loop goes away
        for _ in range(5):
            await asyncio.sleep(0)
        log.info("stopped")

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
            log.info("signal received: stopping")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s cloudshare-host[%(process)d] %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def serve_forever(
    host_dir: str | os.PathLike[str],
    bind: str = "127.0.0.1",
    port: int = 2222,
    *,
    grace: float = SHUTDOWN_GRACE,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop cleanly and return."""
    host = EmbeddedHost(host_dir, bind, port, grace=grace)
    asyncio.run(host.run_until_signalled())
