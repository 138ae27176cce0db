"""The SFTP session (paramiko): endpoint URL, host-key pinning, login, timeouts, fast
transfers, exclusive create / hard-link publish, and the server's clock.

Host keys are checked against the tool's own known_hosts file; paramiko's host key
policies are never used. Passwords are only ever handed to paramiko, never logged or
put into messages.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import io
import os
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR
from typing import BinaryIO
from urllib.parse import quote, unquote

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from cloudshare_p2p import errors

# OpenSSH accepts SFTP messages up to 256 KiB *including* headers and answers reads with at
# most 256 KiB - 1 KiB of data: stay at that size for both directions.
REQUEST_SIZE = 256 * 1024 - 1024
PIECE_SIZE = 1 << 20  # upload reads its source in 1 MiB pieces
MAX_WRITES_IN_FLIGHT = 32
PREFERRED_CIPHER = "aes128-gcm@openssh.com"
HARDLINK = "hardlink@openssh.com"
SFTP_VERSION = 3


# --- endpoint ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where a share lives: `sftp://USER@HOST[:PORT][/BASE]`.

    `base` is the folder under which areas live: "" = the login folder, "/abs/path" =
    absolute; "sftp://u@h/~/rel" gives the relative base "rel".
    """

    user: str
    host: str
    port: int = 22
    base: str = ""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse a remote URL; ValueError with a clear message if it is not one."""
        scheme, sep, rest = url.strip().partition("://")
        if not sep or scheme.lower() != "sftp":
            raise ValueError(f"not an sftp:// URL: {url!r} (expected sftp://USER@HOST[:PORT][/BASE])")
        netloc, slash, path = rest.partition("/")
        user, at, hostport = netloc.rpartition("@")
        if not at or not user:
            raise ValueError(f"the URL {url!r} names no user (expected sftp://USER@HOST...)")
        host, port = _split_hostport(hostport, url)
        return cls(unquote(user), host, port, _parse_base(slash + path))

    def url(self) -> str:
        """Canonical URL; `Endpoint.parse(e.url()) == e`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 22 else f":{self.port}"
        if not self.base:
            path = ""
        elif self.base.startswith("/"):
            path = quote(self.base, safe="/")
        else:
            path = "/~/" + quote(self.base, safe="/")
        return f"sftp://{quote(self.user, safe='')}@{host}{port}{path}"

    def hostport(self) -> str:
        """Key for known_hosts: "host" on port 22, else "[host]:port"."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _split_hostport(hostport: str, url: str) -> tuple[str, int]:
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"bad [IPv6] host in {url!r}")
        port_text = tail[1:] if tail else ""
    else:
        host, colon, port_text = hostport.partition(":")
        if ":" in port_text:
            raise ValueError(f"put an IPv6 address in brackets: {url!r}")
        port_text = port_text or colon  # "host:" is a bad port, not port 22
    if not host:
        raise ValueError(f"the URL {url!r} names no host")
    if not port_text:
        return host, 22
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in {url!r}")
    return host, int(port_text)


def _parse_base(path: str) -> str:
    path = unquote(path)
    if path in ("", "/"):
        return "" if path == "" else "/"
    if path == "/~" or path.startswith("/~/"):
        return path[3:].strip("/")
    return "/" + path.strip("/")


# --- timeouts and credentials ------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """All in seconds. `channel` bounds one SFTP request, `transfer` one whole transfer."""

    connect: float = 10.0
    banner: float = 15.0
    auth: float = 20.0
    channel: float = 30.0
    transfer: float = 900.0


@dataclass
class Credentials:
    """How to log in. `password` is a provider, called only when a password is needed."""

    identity: Path | None = None
    password: Callable[[], str | None] | None = field(default=None, repr=False)
    use_agent: bool = True


# --- host keys ---------------------------------------------------------------


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:<unpadded base64>` like `ssh-keygen -l`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _normalize_fingerprint(text: str) -> str:
    text = text.strip()
    if not text.upper().startswith("SHA256:"):
        text = "SHA256:" + text
    return "SHA256:" + text[7:].rstrip("=")


class KnownHosts:
    """The tool's own known_hosts file (OpenSSH format), never ~/.ssh/known_hosts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _entries(self) -> list[tuple[str, str, str]]:
        """(hostport, key_type, base64 blob) for each usable line."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not fields[0].startswith("#"):
                entries.append((fields[0], fields[1], fields[2]))
        return entries

    def lookup(self, hostport: str) -> paramiko.PKey | None:
        """The pinned key of `hostport`, or None."""
        for names, key_type, blob in self._entries():
            if hostport in names.split(","):
                with contextlib.suppress(paramiko.SSHException, binascii.Error, ValueError):
                    return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
        return None

    def pin(self, hostport: str, key: paramiko.PKey) -> None:
        """Pin `key` for `hostport` (replacing any older pin); atomic write, mode 0600."""
        kept = [e for e in self._entries() if hostport not in e[0].split(",")]
        kept.append((hostport, key.get_name(), key.get_base64()))
        self._write(kept)

    def remove(self, hostport: str) -> bool:
        """Forget `hostport`; True if it was pinned."""
        entries = self._entries()
        kept = [e for e in entries if hostport not in e[0].split(",")]
        if len(kept) == len(entries):
            return False
        self._write(kept)
        return True

    def fingerprints(self) -> dict[str, str]:
        """hostport -> "SHA256:..." of every pinned key."""
        result = {}
        for names, _, blob in self._entries():
            with contextlib.suppress(binascii.Error, ValueError):
                digest = hashlib.sha256(base64.b64decode(blob)).digest()
                fp = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
                for name in names.split(","):
                    result.setdefault(name, fp)
        return result

    def _write(self, entries: list[tuple[str, str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = "".join(f"{h} {t} {b}\n" for h, t, b in entries)
        fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


# --- connecting ----------------------------------------------------------------


def _open_transport(endpoint: Endpoint, timeouts: Timeouts, pinned_type: str | None = None):
    """TCP + SSH handshake (no authentication); errors -> NetworkDown."""
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeouts.connect)
    except OSError as e:
        raise errors.NetworkDown(f"cannot reach {where}: {_describe(e)}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    try:
        _prefer(transport, pinned_type)
        transport.banner_timeout = timeouts.banner
        transport.handshake_timeout = timeouts.banner
        transport.auth_timeout = timeouts.auth
        transport.start_client(timeout=timeouts.banner)
    except (OSError, EOFError, paramiko.SSHException) as e:
        transport.close()
        raise errors.NetworkDown(f"SSH handshake with {where} failed: {_describe(e)}") from None
    return transport


def _prefer(transport: paramiko.Transport, pinned_type: str | None) -> None:
    """Fast cipher first; the pinned host key type first (so the same key is presented)."""
    opts = transport.get_security_options()
    ciphers = list(opts.ciphers)
    if PREFERRED_CIPHER in ciphers:
        opts.ciphers = [PREFERRED_CIPHER] + [c for c in ciphers if c != PREFERRED_CIPHER]
    if pinned_type:
        wanted = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if pinned_type == "ssh-rsa" else [
            pinned_type
        ]
        key_types = list(opts.key_types)
        first = [k for k in wanted if k in key_types]
        opts.key_types = first + [k for k in key_types if k not in first]


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def probe_host_key(endpoint: Endpoint, timeouts: Timeouts = Timeouts()) -> tuple[str, str]:
    """Read the host key without logging in: (key_type, fingerprint)."""
    transport = _open_transport(endpoint, timeouts)
    try:
        key = transport.get_remote_server_key()
        return key.get_name(), fingerprint(key)
    finally:
        transport.close()


def _check_host_key(
    transport: paramiko.Transport,
    endpoint: Endpoint,
    known_hosts: KnownHosts,
    accept_fingerprint: str | None,
) -> None:
    """Pinned and equal: fine. Pinned and different: HostKeyChanged, always. Not pinned:
    pin it if the caller accepted exactly this fingerprint, else HostKeyUnknown."""
    hostport = endpoint.hostport()
    key = transport.get_remote_server_key()
    got = fingerprint(key)
    pinned = known_hosts.lookup(hostport)
    if pinned is not None:
        if pinned.get_name() != key.get_name() or pinned.asbytes() != key.asbytes():
            raise errors.HostKeyChanged(hostport, fingerprint(pinned), got)
        return
    if accept_fingerprint and _normalize_fingerprint(accept_fingerprint) == got:
        known_hosts.pin(hostport, key)
        return
    raise errors.HostKeyUnknown(hostport, got, key.get_name())


def _load_identity(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise errors.LoginRefused(
            f"the identity file {path} is protected by a passphrase",
            hint="load it into ssh-agent, or use a key without passphrase",
        ) from None
    except (OSError, ValueError, paramiko.SSHException) as e:
        raise errors.LoginRefused(
            f"cannot use the identity file {path}: {_describe(e)}",
            hint="check the identity file path and format",
        ) from None


def _agent_keys() -> list[paramiko.PKey]:
    if not os.environ.get("SSH_AUTH_SOCK"):
        return []
    try:
        return list(paramiko.Agent().get_keys())
    except (OSError, paramiko.SSHException):
        return []


def _try(auth: Callable[[], object]) -> bool:
    try:
        auth()
    except paramiko.AuthenticationException:
        return False
    return True


def _authenticate(transport: paramiko.Transport, user: str, credentials: Credentials) -> None:
    """Identity file, then agent keys, then password; all refused -> LoginRefused."""
    if credentials.identity is not None:
        key = _load_identity(Path(credentials.identity))
        if _try(lambda: transport.auth_publickey(user, key)):
            return
    if credentials.use_agent:
        for agent_key in _agent_keys():
            if _try(lambda k=agent_key: transport.auth_publickey(user, k)):
                return
    if credentials.password is not None and _password_auth(transport, user, credentials):
        return
    raise errors.LoginRefused(f"the host refused the login of {user!r}")


def _password_auth(transport: paramiko.Transport, user: str, credentials: Credentials) -> bool:
    password = credentials.password() if credentials.password else None
    if password is None:
        return False
    try:
        transport.auth_password(user, password)
        return True
    except paramiko.BadAuthenticationType as e:
        if "keyboard-interactive" not in e.allowed_types:
            return False
    except paramiko.AuthenticationException:
        return False

    def answer(_title: str, _instructions: str, prompts: list) -> list[str]:
        return [password for _ in prompts]

    return _try(lambda: transport.auth_interactive(user, answer))


def connect(
    endpoint: Endpoint,
    known_hosts: KnownHosts,
    credentials: Credentials,
    *,
    accept_fingerprint: str | None = None,
    timeouts: Timeouts = Timeouts(),
) -> Session:
    """Open a checked, logged-in SFTP session (see module docstring for the rules)."""
    pinned = known_hosts.lookup(endpoint.hostport())
    transport = _open_transport(endpoint, timeouts, pinned.get_name() if pinned else None)
    try:
        _check_host_key(transport, endpoint, known_hosts, accept_fingerprint)
        _authenticate(transport, endpoint.user, credentials)
        sftp = _SFTP.from_transport(transport)
        if sftp is None:
            raise paramiko.SSHException("the host refused the sftp subsystem")
        sftp.get_channel().settimeout(timeouts.channel)
    except errors.CloudShareError:
        transport.close()
        raise
    except (OSError, EOFError, paramiko.SSHException) as e:
        transport.close()
        where = f"{endpoint.host}:{endpoint.port}"
        raise errors.NetworkDown(f"connection to {where} failed: {_describe(e)}") from None
    return Session(endpoint, transport, sftp, timeouts)


# --- the SFTP client with status codes and server extensions --------------------


class _SFTP(paramiko.SFTPClient):
    """SFTPClient that keeps the server's extensions and tags errors with the SFTP code."""

    extensions: dict[str, bytes]

    def _send_version(self):
        self.extensions = {}
        msg = paramiko.Message()
        msg.add_int(SFTP_VERSION)
        self._send_packet(CMD_INIT, msg)
        t, data = self._read_packet()
        if t != CMD_VERSION:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        self.extensions = _parse_extensions(data[4:])
        return struct.unpack(">I", data[:4])[0]

    def _convert_status(self, msg):
        code = msg.get_int()
        text = msg.get_text()
        if code == SFTP_OK:
            return
        if code == SFTP_EOF:
            raise EOFError(text)
        number = {SFTP_NO_SUCH_FILE: errno.ENOENT, SFTP_PERMISSION_DENIED: errno.EACCES}.get(code)
        error = OSError(number, text) if number else OSError(text)
        error.sftp_code = code  # type: ignore[attr-defined]
        raise error


def _parse_extensions(data: bytes) -> dict[str, bytes]:
    result = {}
    msg = paramiko.Message(data)
    with contextlib.suppress(Exception):
        while msg.get_remainder():
            name = msg.get_text()
            result[name] = msg.get_binary()
    return result


class _WriteAcks:
    """Collects the answers to pipelined write requests (paramiko drops their errors)."""

    def __init__(self, sftp: _SFTP) -> None:
        self.sftp = sftp
        self.pending: set[int] = set()
        self.error: BaseException | None = None

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.pending.discard(num)
        try:
            if t != CMD_STATUS:
                raise paramiko.SFTPError("Expected status")
            self.sftp._convert_status(msg)
        except (OSError, EOFError, paramiko.SFTPError) as e:
            self.error = self.error or e

    def send(self, handle: bytes, offset: int, data: bytes | memoryview) -> None:
        num = self.sftp._async_request(self, CMD_WRITE, handle, int64(offset), bytes(data))
        self.pending.add(num)
        while len(self.pending) >= MAX_WRITES_IN_FLIGHT:
            self.sftp._read_response()
        self.check()

    def drain(self) -> None:
        while self.pending:
            self.sftp._read_response()
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


# --- the session ------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    size: int
    mtime: int
    is_dir: bool


class _Deadline:
    """Deadline of one transfer. Once armed, a watchdog closes the connection when the time
    is up (a stuck read can outlive the channel timeout); `check` is the cheap in-loop test."""

    def __init__(self, what: str, limit: float, transport: paramiko.Transport) -> None:
        self.what, self.limit, self.transport = what, limit, transport
        self.end = time.monotonic() + limit
        self.expired = threading.Event()
        self.timer: threading.Timer | None = None

    def arm(self) -> None:
        if self.timer is None:
            self.timer = threading.Timer(max(0.0, self.end - time.monotonic()), self._fire)
            self.timer.daemon = True
            self.timer.start()

    def _fire(self) -> None:
        self.expired.set()
        self.transport.close()

    def check(self) -> None:
        if time.monotonic() > self.end:
            self.expired.set()
            raise self.error()

    def error(self) -> errors.TransferError:
        return errors.TransferError(f"{self.what} did not finish within {self.limit:g} s")

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class FileTooLarge(errors.AreaCorrupt):
    """A file on the host is larger than the reader allows."""


def _is_sftp_error(e: BaseException) -> bool:
    return hasattr(e, "sftp_code") or isinstance(e, FileNotFoundError | PermissionError)


class Session:
    """One logged-in SFTP connection, reused for every step of one command."""

    def __init__(
        self,
        endpoint: Endpoint,
        transport: paramiko.Transport,
        sftp: _SFTP,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.endpoint = endpoint
        self.timeouts = timeouts
        self.bytes_sent = 0
        self.bytes_received = 0
        self._transport = transport
        self._sftp = sftp

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SFTP channel and the connection."""
        with contextlib.suppress(Exception):
            self._sftp.close()
        with contextlib.suppress(Exception):
            self._transport.close()

    @property
    def extensions(self) -> dict[str, bytes]:
        """SFTP extensions the server advertised."""
        return getattr(self._sftp, "extensions", {})

    # -- error mapping --

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """SFTP answers pass through (ENOENT is FileNotFoundError); a dead link -> NetworkDown."""
        try:
            yield
        except errors.CloudShareError:
            raise
        except OSError as e:
            if _is_sftp_error(e) and self._transport.is_active():
                raise
            raise self._down(what, e) from None
        except (EOFError, paramiko.SSHException) as e:
            raise self._down(what, e) from None

    def _down(self, what: str, e: BaseException) -> errors.NetworkDown:
        where = f"{self.endpoint.host}:{self.endpoint.port}"
        return errors.NetworkDown(f"connection to {where} lost during {what}: {_describe(e)}")

    # -- paths and metadata --

    def path(self, *parts: str) -> str:
        """Join the endpoint's base with `parts` using "/" (base "" -> relative path)."""
        pieces = [p.strip("/") for p in parts if p.strip("/")]
        base = self.endpoint.base
        if not base:
            return "/".join(pieces)
        return "/".join([base.rstrip("/")] + pieces) if pieces else base

    def stat(self, path: str) -> Stat | None:
        """Size, mtime (server clock, whole seconds), is_dir; None if missing."""
        with self._guard("stat"):
            try:
                attr = self._sftp.stat(path)
            except FileNotFoundError:
                return None
        return Stat(attr.st_size or 0, int(attr.st_mtime or 0), S_ISDIR(attr.st_mode or 0))

    def listdir(self, path: str) -> list[str]:
        """Names in a folder; FileNotFoundError if missing."""
        with self._guard("listdir"):
            return self._sftp.listdir(path)

    def mkdir(self, path: str) -> bool:
        """True if created, False if the folder already existed."""
        with self._guard("mkdir"):
            try:
                self._sftp.mkdir(path)
                return True
            except OSError:
                found = self.stat(path)
                if found is not None and found.is_dir:
                    return False
                raise

    def remove(self, path: str) -> None:
        with self._guard("remove"):
            self._sftp.remove(path)

    def rmdir(self, path: str) -> None:
        with self._guard("rmdir"):
            self._sftp.rmdir(path)

    def rename(self, src: str, dst: str) -> None:
        """Plain SFTP rename: never a lock (see sftp-primitives.md)."""
        with self._guard("rename"):
            self._sftp.rename(src, dst)

    def remove_tree(self, path: str) -> None:
        """Delete a folder recursively, tolerating entries that vanish meanwhile."""
        with self._guard("remove_tree"):
            try:
                entries = self._sftp.listdir_attr(path)
            except FileNotFoundError:
                return
            for entry in entries:
                child = f"{path.rstrip('/')}/{entry.filename}"
                with contextlib.suppress(FileNotFoundError):
                    if S_ISDIR(entry.st_mode or 0):
                        self.remove_tree(child)
                    else:
                        self._sftp.remove(child)
            with contextlib.suppress(FileNotFoundError):
                self._sftp.rmdir(path)

    # -- exclusive create and publish --

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create `path` with `data` only if it does not exist: True created, False existed."""
        with self._guard("create"):
            try:
                f = self._sftp.open(path, "wx")
            except OSError:
                if self.stat(path) is not None:
                    return False
                raise
            self._write_new(f, path, data)
        return True

    def _write_new(self, f: paramiko.SFTPFile, path: str, data: bytes) -> None:
        """Write and close a file we just created; on failure try to remove it."""
        try:
            acks = _WriteAcks(self._sftp)
            for offset in range(0, len(data), REQUEST_SIZE):
                acks.send(f.handle, offset, memoryview(data)[offset : offset + REQUEST_SIZE])
            acks.drain()
            self._close_handle(f)
        except BaseException:
            f._closed = True  # we close the handle ourselves (or the link is gone)
            with contextlib.suppress(Exception):
                self._sftp._request(CMD_CLOSE, f.handle)
                self._sftp.remove(path)
            raise
        self.bytes_sent += len(data)

    def _close_handle(self, f: paramiko.SFTPFile) -> None:
        """Close with a checked answer (paramiko's close ignores errors)."""
        f._closed = True
        self._sftp._request(CMD_CLOSE, f.handle)

    def publish(self, tmp_path: str, final_path: str) -> bool:
        """Hard-link tmp -> final (fails if final exists), then remove tmp in every case.
        True if we created final, False if it already existed."""
        try:
            with self._guard("publish"):
                if HARDLINK in self.extensions:
                    try:
                        self._sftp._request(CMD_EXTENDED, HARDLINK, tmp_path, final_path)
                        return True
                    except OSError as e:
                        if getattr(e, "sftp_code", None) != SFTP_OP_UNSUPPORTED:
                            if self.stat(final_path) is not None:
                                return False
                            raise
            return self.create_exclusive(final_path, self.read_bytes(tmp_path, max_size=1 << 40))
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.remove(tmp_path)

    # -- transfers --

    @contextlib.contextmanager
    def _deadline(self, what: str) -> Iterator[_Deadline]:
        """Bound a whole transfer by timeouts.transfer -> TransferError."""
        deadline = _Deadline(what, self.timeouts.transfer, self._transport)
        try:
            yield deadline
        except errors.TransferError:
            raise
        except (OSError, EOFError, paramiko.SSHException, errors.NetworkDown):
            if deadline.expired.is_set():
                raise deadline.error() from None
            raise
        finally:
            deadline.disarm()

    def upload(
        self,
        path: str,
        src: BinaryIO | bytes,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Create/truncate `path` with the content of `src` (pipelined writes of at most
        REQUEST_SIZE each); returns the bytes written."""
        stream = io.BytesIO(src) if isinstance(src, bytes | bytearray | memoryview) else src
        with self._deadline(f"upload of {path}") as check, self._guard("upload"):
            flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
            t, msg = self._sftp._request(CMD_OPEN, path, flags, SFTPAttributes())
            if t != CMD_HANDLE:
                raise paramiko.SFTPError("Expected handle")
            handle = msg.get_binary()
            check.arm()
            written = self._write_stream(handle, stream, check, progress)
            self._sftp._request(CMD_CLOSE, handle)
        return written

    def _write_stream(
        self,
        handle: bytes,
        stream: BinaryIO,
        check: _Deadline,
        progress: Callable[[int], None] | None,
    ) -> int:
        acks = _WriteAcks(self._sftp)
        offset = 0
        while piece := stream.read(PIECE_SIZE):
            view = memoryview(piece)
            for start in range(0, len(view), REQUEST_SIZE):
                acks.send(handle, offset + start, view[start : start + REQUEST_SIZE])
            offset += len(piece)
            self.bytes_sent += len(piece)
            check.check()
            if progress:
                progress(offset)
        acks.drain()
        return offset

    def download(
        self,
        path: str,
        dst: BinaryIO,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Copy `path` into `dst` with prefetched reads; FileNotFoundError if missing."""
        return self._read_into(path, dst, progress, max_size=None)

    def read_bytes(self, path: str, max_size: int = 64 << 20) -> bytes:
        """The whole content of a (small) file; FileTooLarge past `max_size`."""
        buffer = io.BytesIO()
        self._read_into(path, buffer, None, max_size=max_size)
        return buffer.getvalue()

    def _read_into(
        self,
        path: str,
        dst: BinaryIO,
        progress: Callable[[int], None] | None,
        max_size: int | None,
    ) -> int:
        with self._deadline(f"download of {path}") as check, self._guard("download"):
            f = self._sftp.open(path, "rb")
            try:
                f.MAX_REQUEST_SIZE = REQUEST_SIZE
                size = f.stat().st_size or 0
                if max_size is not None and size > max_size:
                    raise FileTooLarge(f"{path} is {size} bytes, more than {max_size} allowed")
                if size <= REQUEST_SIZE:  # one request; prefetch's thread start costs ~3 ms
                    return self._copy_small(f, size, dst, progress)
                check.arm()
                f.prefetch(size)
                return self._copy_out(f, dst, check, progress, max_size)
            finally:
                f.close()

    def _copy_small(self, f: paramiko.SFTPFile, size: int, dst: BinaryIO, progress) -> int:
        """Read a file of at most one request (published files never change)."""
        data = f.read(size) if size else b""
        self.bytes_received += len(data)
        dst.write(data)
        if progress:
            progress(len(data))
        return len(data)

    def _copy_out(self, f, dst, check: _Deadline, progress, max_size: int | None) -> int:
        done = 0
        while chunk := f.read(REQUEST_SIZE):
            done += len(chunk)
            self.bytes_received += len(chunk)
            if max_size is not None and done > max_size:
                raise FileTooLarge(f"file grew past {max_size} bytes while reading")
            dst.write(chunk)
            check.check()
            if progress:
                progress(done)
        return done

    # -- the server's clock --

    def server_now(self, scratch_dir: str) -> int:
        """The server's clock (whole seconds): mtime of a freshly created probe file."""
        probe = f"{scratch_dir.rstrip('/')}/.clock-{uuid.uuid4().hex}"
        if not self.create_exclusive(probe, b""):
            raise errors.TransferError(f"clock probe {probe} unexpectedly exists")
        try:
            found = self.stat(probe)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.remove(probe)
        if found is None:
            raise errors.TransferError(f"clock probe {probe} vanished")
        return found.mtime
