"""The SFTP session (paramiko): endpoint URL, host-key pinning, login (identity file,
SSH agent, password), timeouts, fast transfers, exclusive publish of records, never-torn
publish of immutable objects, and the server's clock. Connection failures are said in words.

Host keys are checked against the tool's own known_hosts file; paramiko's host key
policies are never used. Passwords are only ever handed to paramiko, never logged or
put into messages.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import functools
import hashlib
import hmac
import io
import logging
import os
import socket
import struct
import sys
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

from .i18n import _

# paramiko logs a traceback for every failed connection; without a handler of our own,
# Python's last-resort handler would print it on the user's terminal.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# OpenSSH accepts SFTP messages up to 256 KiB *including* headers and answers reads with at
# most 256 KiB - 1 KiB of data: stay at that size for both directions.
REQUEST_SIZE = 256 * 1024 - 1024
PIECE_SIZE = 1 << 20  # upload reads its source in 1 MiB pieces
MAX_WRITES_IN_FLIGHT = 32
PREFERRED_CIPHER = "aes128-gcm@openssh.com"
HARDLINK = "hardlink@openssh.com"
POSIX_RENAME = "posix-rename@openssh.com"
MAX_ADDRESSES = 8  # addresses of one host name tried when connecting
MAX_IDENTITY_SIZE = 64 * 1024  # a private key file is a few KiB
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
            raise ValueError(_("not an sftp:// URL: {url!r} (expected sftp://USER@HOST[:PORT][/BASE])")
                .format(url=url))
        netloc, slash, path = rest.partition("/")
        user, at, hostport = netloc.rpartition("@")
        if not at or not user:
            raise ValueError(_("the URL {url!r} names no user (expected sftp://USER@HOST...)").format(
                url=url))
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
            raise ValueError(_("bad [IPv6] host in {url!r}").format(url=url))
        port_text = tail[1:] if tail else ""
    else:
        host, colon, port_text = hostport.partition(":")
        if ":" in port_text:
            raise ValueError(_("put an IPv6 address in brackets: {url!r}").format(url=url))
        port_text = port_text or colon  # "host:" is a bad port, not port 22
    if not host:
        raise ValueError(_("the URL {url!r} names no host").format(url=url))
    if not port_text:
        return host, 22
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(_("bad port {port_text!r} in {url!r}").format(port_text=port_text, url=url))
    return host, int(port_text)


def _parse_base(path: str) -> str:
    path = unquote(path)
    if path in ("", "/"):
        return "" if path == "" else "/"
    if path == "/~" or path.startswith("/~/"):
        return path[3:].strip("/")
    return "/" + path.strip("/")


# --- timeouts and credentials ------------------------------------------------


def _stall_default() -> float:
    """`CLOUDSHARE_STALL_SECONDS` (a slow office line may want more), else 60 s."""
    try:
        value = float(os.environ.get("CLOUDSHARE_STALL_SECONDS", "60"))
    except ValueError:
        return 60.0
    return value if 1.0 <= value <= 3600.0 else 60.0


@dataclass(frozen=True)
class Timeouts:
    """All in seconds. `resolve` bounds the name lookup, `connect` the TCP connect (all
    addresses together), `channel` one SFTP request, `transfer` one whole transfer, `stall`
    a transfer during which nothing moves (a silent network)."""

    resolve: float = 5.0
    connect: float = 5.0
    banner: float = 15.0
    auth: float = 20.0
    channel: float = 30.0
    transfer: float = 900.0
    stall: float = field(default_factory=_stall_default)


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
        result: dict[str, str] = {}
        for names, _kind, blob in self._entries():
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
    """TCP + SSH handshake (no authentication); errors -> NetworkDown in plain words."""
    where = _where(endpoint)
    sock = _connect_socket(endpoint, timeouts)
    try:
        transport = paramiko.Transport(sock)
    except OSError as e:  # the peer reset the connection at once
        sock.close()
        raise _handshake_error(where, e) from None
    try:
        _prefer(transport, pinned_type)
        transport.banner_timeout = timeouts.banner
        transport.handshake_timeout = timeouts.banner
        transport.auth_timeout = timeouts.auth
        # paramiko bounds the banner and the key exchange by `banner` each, and its own
        # errors arrive first; start_client returns silently when its own wait runs out
        transport.start_client(timeout=2 * timeouts.banner)
        if not transport.initial_kex_done:
            raise TimeoutError(_("no SSH handshake within {limit:g} s").format(limit=2 * timeouts.banner))
    except (OSError, EOFError, paramiko.SSHException) as e:
        transport.close()
        raise _handshake_error(where, e) from None
    return transport


def _where(endpoint: Endpoint) -> str:
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}"


# getaddrinfo codes: POSIX EAI_* (negative on glibc) and Windows WSA* numbers
_NO_SUCH_HOST = {
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)
} | {11001, 11004}  # WSAHOST_NOT_FOUND, WSANO_DATA
_TRY_AGAIN = {getattr(socket, "EAI_AGAIN", -3), 11002}  # WSATRY_AGAIN
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, 10051, 10065}  # + WSAENETUNREACH, WSAEHOSTUNREACH


def _resolve(endpoint: Endpoint, limit: float) -> list[tuple]:
    """The host's addresses: one getaddrinfo, bounded by `limit` seconds (a resolver that
    hangs is left to finish in a daemon thread)."""
    host, port, where = endpoint.host, endpoint.port, _where(endpoint)
    with contextlib.suppress(socket.gaierror, UnicodeError):  # a literal address: no lookup
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    found: list[tuple] = []
    failed: list[BaseException] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as e:  # reported to the caller
            failed.append(e)
        finally:
            done.set()

    threading.Thread(target=lookup, name="cloudshare-resolve", daemon=True).start()
    if not done.wait(limit):
        raise errors.NetworkDown(
            _("cannot reach {where}: no name server answered for {host} within {limit:g} s").format(
                where=where, host=host, limit=limit),
            hint=_("check the network connection, then try again"),
        )
    if failed:
        raise _lookup_error(where, failed[0])
    if not found:
        raise errors.NetworkDown(_("cannot reach {where}: no such host").format(where=where))
    return found


def _lookup_error(where: str, e: BaseException) -> errors.NetworkDown:
    code = e.errno if isinstance(e, OSError) else None
    if code in _NO_SUCH_HOST:
        return errors.NetworkDown(
            _("cannot reach {where}: no such host").format(where=where),
            hint=_("check the host name in the URL (sftp://USER@HOST[:PORT]/FOLDER); ask the firm "
            "for the exact address"),
        )
    if code in _TRY_AGAIN:
        return errors.NetworkDown(
            _("cannot reach {where}: the host name could not be looked up now (no name server answered)"
              ).format(where=where),
            hint=_("check the network connection, then try again"),
        )
    if isinstance(e, UnicodeError):
        return errors.NetworkDown(_("cannot reach {where}: the host name is not valid").format(where=where),
                                  hint=_("check the host name in the URL"))
    return errors.NetworkDown(_("cannot reach {where}: the host name could not be looked up ({reason})")
        .format(where=where, reason=_describe(e)))


def _connect_socket(endpoint: Endpoint, timeouts: Timeouts) -> socket.socket:
    """Connect to the first address that answers, all within `timeouts.connect` seconds."""
    where = _where(endpoint)
    addresses = _resolve(endpoint, timeouts.resolve)[:MAX_ADDRESSES]
    deadline = time.monotonic() + timeouts.connect
    last: OSError | None = None
    for i, (family, kind, proto, _canon, sockaddr) in enumerate(addresses):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # share the time among the addresses left, but give each a real chance
        share = max(min(remaining, 1.5), remaining / (len(addresses) - i))
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(share)
            sock.connect(sockaddr)
        except OSError as e:
            sock.close()
            last = e
            continue
        with contextlib.suppress(OSError):  # a peer that resets at once is caught by the handshake
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise _connect_error(where, last, timeouts.connect) from None


def _connect_error(where: str, e: OSError | None, limit: float) -> errors.NetworkDown:
    if isinstance(e, ConnectionRefusedError):
        return errors.NetworkDown(
            _("nothing is listening on {where}").format(where=where),
            hint=_("check the port in the URL and that the host's SFTP service is running; ask the "
            "firm"),
        )
    if e is None or isinstance(e, TimeoutError):
        return errors.NetworkDown(
            _("cannot reach {where}: no answer within {limit:g} s").format(where=where, limit=limit),
            hint=_("check the address in the URL and the network (a firewall may block it), then "
            "try again"),
        )
    if isinstance(e, ConnectionResetError | ConnectionAbortedError):
        return _handshake_error(where, e)
    if e.errno in _UNREACHABLE:
        return errors.NetworkDown(_("cannot reach {where}: no route to the host (network unreachable)")
            .format(where=where))
    return errors.NetworkDown(_("cannot reach {where}: {reason}").format(where=where, reason=_describe(e)))


def _handshake_error(where: str, e: BaseException) -> errors.NetworkDown:
    cause = e.__context__ or e.__cause__
    if isinstance(e, EOFError | ConnectionError) or isinstance(cause, EOFError | ConnectionError):
        return errors.NetworkDown(
            _("{where} closed the connection during the SSH handshake").format(where=where),
            hint=_("check the port in the URL; the host may be busy or refusing this computer: try "
            "again later or ask the firm"),
        )
    if "banner" in str(e).lower():
        return errors.NetworkDown(
            _("{where} does not answer like an SSH/SFTP host").format(where=where),
            hint=_("check the port in the URL (SFTP is usually port 22), then try again"),
        )
    if isinstance(e, TimeoutError):
        return errors.NetworkDown(_("{where} did not finish the SSH handshake: {reason}").format(
            where=where, reason=_describe(e)))
    return errors.NetworkDown(_("SSH handshake with {where} failed: {reason}").format(
        where=where, reason=_describe(e)))


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
    """Words for an exception: the OS's text without "[Errno N]"."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


def probe_host_key(endpoint: Endpoint, timeouts: Timeouts = Timeouts()) -> tuple[str, str]:
    """Read the host key without logging in: (key_type, fingerprint)."""
    transport = _open_transport(endpoint, timeouts)
    try:
        key = transport.get_remote_server_key()
        return key.get_name(), fingerprint(key)
    finally:
        transport.close()


class HostKeyMismatch(errors.HostKeyChanged):
    """The host's key is not the one whose fingerprint the user was given (exit 8)."""

    def __init__(self, host: str, given: str, got: str) -> None:
        self.host, self.expected, self.got = host, given, got
        errors.CloudShareError.__init__(
            self,
            _("the host key of {host} does not match the fingerprint you were given ({given}); "
              "this may be an attack or a mistake").format(host=host, given=given),
            hint=_("do not connect: ask the firm for the host key fingerprint again (by phone or in "
            "person) and check the address in the URL"),
        )


def _fingerprint_matches(given: str, key: paramiko.PKey) -> bool:
    """`given` as `SHA256:<base64>` (or bare base64) or `MD5:aa:bb:…` names `key`."""
    text = given.strip()
    if text.upper().startswith("MD5:"):
        md5 = hashlib.md5(key.asbytes(), usedforsecurity=False).hexdigest()
        wanted = text[4:].replace(":", "").lower()
        return len(wanted) == 32 and hmac.compare_digest(wanted, md5)
    return hmac.compare_digest(_normalize_fingerprint(text), fingerprint(key))


def _check_host_key(
    transport: paramiko.Transport,
    endpoint: Endpoint,
    known_hosts: KnownHosts,
    accept_fingerprint: str | None,
) -> None:
    """Pinned and different: HostKeyChanged, always. A fingerprint given that does not match
    the key: HostKeyMismatch. Pinned and equal: fine. Not pinned: pin it if the caller
    accepted exactly this key, else HostKeyUnknown."""
    hostport = endpoint.hostport()
    key = transport.get_remote_server_key()
    got = fingerprint(key)
    pinned = known_hosts.lookup(hostport)
    if pinned is not None and (pinned.get_name() != key.get_name() or pinned.asbytes() != key.asbytes()):
        raise errors.HostKeyChanged(hostport, fingerprint(pinned), got)
    if accept_fingerprint and not _fingerprint_matches(accept_fingerprint, key):
        raise HostKeyMismatch(hostport, accept_fingerprint.strip()[:100], got)
    if pinned is not None:
        return
    if accept_fingerprint:
        known_hosts.pin(hostport, key)
        return
    raise errors.HostKeyUnknown(hostport, got, key.get_name())


class IdentityProblem(errors.CloudShareError):
    """The identity (private key) file cannot be used; the message says why."""


class IdentityEncrypted(IdentityProblem):
    """The identity file is protected by a passphrase (cloudshare never asks for one)."""


_PUBLIC_PREFIXES = (b"ssh-", b"ecdsa-", b"sk-", b"---- BEGIN SSH2 PUBLIC KEY")


def check_identity(path: Path) -> None:
    """Raise IdentityProblem (exit 1) unless `path` is a private key file cloudshare can use:
    missing, a folder, unreadable, a public key (.pub), a PuTTY key, passphrase-protected
    (IdentityEncrypted) or not a key at all each get their own message and hint."""
    _load_identity(Path(path))


def _load_identity(path: Path) -> paramiko.PKey:
    shown = str(path)
    try:
        if path.is_dir():
            raise IdentityProblem(_("the identity {shown} is a folder, not a key file").format(shown=shown),
                                  hint=_("give the private key file, e.g. ~/.ssh/id_ed25519"))
        with open(path, "rb") as f:
            head = f.read(MAX_IDENTITY_SIZE + 1)
    except FileNotFoundError:
        raise IdentityProblem(
            _("the identity file {shown} does not exist").format(shown=shown),
            hint=_("check the path; give the private key file made by ssh-keygen, e.g. ~/.ssh/id_ed25519"),
        ) from None
    except OSError as e:
        raise IdentityProblem(_("cannot read the identity file {shown}: {reason}").format(
            shown=shown, reason=_describe(e)),
                              hint=_("check the file's permissions (it must be readable by you)")) from None
    text = head.lstrip()
    if path.suffix == ".pub" or text.startswith(_PUBLIC_PREFIXES):
        private = path.with_suffix("") if path.suffix == ".pub" else None
        where = f" ({private})" if private is not None and private.is_file() else ""
        raise IdentityProblem(
            _("{shown} is a public key; login needs the private key").format(shown=shown),
            hint=_("give the private key file (without .pub){where}; the .pub file is the one the firm "
                   "registers on the host").format(where=where),
        )
    if text.startswith(b"PuTTY-User-Key-File-"):
        raise IdentityProblem(
            _("{shown} is a PuTTY key (.ppk), which cloudshare cannot read").format(shown=shown),
            hint=_("in PuTTYgen, load it and choose Conversions > Export OpenSSH key, then give that "
            "file"),
        )
    if len(head) > MAX_IDENTITY_SIZE:
        raise IdentityProblem(_("{shown} is too large to be a private key file").format(shown=shown),
                              hint=_("give the private key file, e.g. ~/.ssh/id_ed25519"))
    try:
        return paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError):  # cryptography: TypeError
        raise IdentityEncrypted(
            _("the identity file {shown} is protected by a passphrase, which cloudshare does not ask "
              "for").format(shown=shown),
            hint=_('load it into ssh-agent (ssh-add {shown}) and add the remote without --identity, or make '
                   'a key without passphrase (ssh-keygen -t ed25519 -N "")').format(shown=shown),
        ) from None
    except (OSError, ValueError, paramiko.SSHException) as e:
        detail = "" if "PEM" in str(e) else f" ({_describe(e)})"
        raise IdentityProblem(
            _("{shown} is not a private key file cloudshare can use{detail}").format(
                shown=shown, detail=detail),
            hint=_("give the OpenSSH private key file made by ssh-keygen, e.g. ~/.ssh/id_ed25519"),
        ) from None


def _agent_keys() -> list[paramiko.PKey]:
    """Keys of the user's SSH agent, wherever paramiko finds one: on Windows Pageant or the
    OpenSSH agent pipe (paramiko looks by itself), elsewhere the SSH_AUTH_SOCK socket.
    No agent or a broken one gives no keys, never an error."""
    if sys.platform != "win32" and not os.environ.get("SSH_AUTH_SOCK"):
        return []
    try:
        return list(paramiko.Agent().get_keys())
    except Exception:  # noqa: BLE001 - an agent problem must never stop a login
        return []


def _try(auth: Callable[[], object]) -> bool:
    try:
        auth()
    except paramiko.AuthenticationException:
        return False
    return True


def _authenticate(transport: paramiko.Transport, user: str, credentials: Credentials) -> None:
    """Identity file, then agent keys, then password; all refused -> LoginRefused. A
    passphrase-protected identity is skipped in favour of the agent (which may hold it) and
    reported if nothing else logs in."""
    skipped: IdentityEncrypted | None = None
    if credentials.identity is not None:
        try:
            key = _load_identity(Path(credentials.identity))
        except IdentityEncrypted as e:
            if not credentials.use_agent:
                raise
            skipped = e
        else:
            if _try(lambda: transport.auth_publickey(user, key)):
                return
    if credentials.use_agent:
        for agent_key in _agent_keys():
            if _try(functools.partial(transport.auth_publickey, user, agent_key)):
                return
    if credentials.password is not None and _password_auth(transport, user, credentials):
        return
    if skipped is not None:
        raise skipped
    raise errors.LoginRefused(_("the host refused the login of {user!r}").format(user=user))


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
        return [password for _prompt in prompts]

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
        raise errors.NetworkDown(_("connection to {where} failed: {reason}").format(
            where=where, reason=_describe(e))) from None
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
    is up or when nothing moved for `stall` seconds (a stuck read can outlive the channel
    timeout: a silent network); `check` is the cheap in-loop test and marks progress."""

    def __init__(self, what: str, limit: float, transport: paramiko.Transport,
                 stall: float | None = None) -> None:
        self.what, self.limit, self.transport = what, limit, transport
        self.stall = stall if stall is not None else limit
        self.end = time.monotonic() + limit
        self.last = time.monotonic()
        self.expired = threading.Event()
        self.stalled = False
        self._done = threading.Event()
        self._watch: threading.Thread | None = None

    def arm(self) -> None:
        if self._watch is None:
            self.last = time.monotonic()
            self._watch = threading.Thread(target=self._watchdog, name="transfer-watchdog", daemon=True)
            self._watch.start()

    def _watchdog(self) -> None:
        while not self._done.wait(min(1.0, self.stall / 4)):
            now = time.monotonic()
            if now > self.end or now - self.last > self.stall:
                self.stalled = now <= self.end
                self.expired.set()
                self.transport.close()
                return

    def check(self) -> None:
        now = time.monotonic()
        if now > self.end:
            self.expired.set()
            raise self.error()
        self.last = now

    def error(self) -> errors.CloudShareError:
        if self.stalled:  # a silent network: said like an unreachable host (exit 9)
            return errors.NetworkDown(_("{what} stalled: nothing moved for {limit:g} s").format(
                what=self.what, limit=self.stall))
        return errors.TransferError(_("{what} did not finish within {limit:g} s").format(
            what=self.what, limit=self.limit))

    def disarm(self) -> None:
        self._done.set()


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
            if isinstance(e, PermissionError) and self._transport.is_active():
                raise errors.HostRefused(_("the host refused {what}: permission denied").format(
                    what=what)) from None
            if _is_sftp_error(e) and self._transport.is_active():
                raise
            raise self._down(what, e) from None
        except (EOFError, paramiko.SSHException) as e:
            raise self._down(what, e) from None

    def _down(self, what: str, e: BaseException) -> errors.NetworkDown:
        where = f"{self.endpoint.host}:{self.endpoint.port}"
        return errors.NetworkDown(_("connection to {where} lost during {what}: {reason}").format(
            where=where, what=what, reason=_describe(e)))

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

    # -- immutable content-addressed objects (chunks, manifests) --

    def object_complete(self, final_path: str, size: int) -> bool | None:
        """None: nothing under `final_path`; True: a file of exactly `size` bytes; False: a
        torn or otherwise different file (or a folder). A writer never trusts a name it has
        not checked this way."""
        found = self.stat(final_path)
        if found is None:
            return None
        return not found.is_dir and found.size == size

    def put_object(self, tmp_path: str, final_path: str, data: bytes) -> bool:
        """Upload `data` to `tmp_path` (every write and the close acknowledged), then
        `publish_object` it; True if we created or repaired `final_path`."""
        written = self.upload(tmp_path, data)
        if written != len(data):
            raise errors.TransferError(_("upload of {tmp_path} wrote {written} of {size} bytes").format(
                tmp_path=tmp_path, written=written, size=len(data)))
        return self._publish_object(tmp_path, final_path, len(data), check_tmp=False)

    def publish_object(self, tmp_path: str, final_path: str, size: int) -> bool:
        """Publish a complete temp file as an immutable object whose content is fixed by its
        name (identical content under the name is harmless), so that `final_path` never holds a
        torn file, on every host. The temp file must hold `size` bytes (checked), else
        TransferError and nothing is published. With `hardlink@openssh.com`: exclusive link;
        else `posix-rename@openssh.com` (atomic replace); else plain rename. A file already
        under the name of another size is torn: it is removed and replaced. The temp file is
        removed in every case. True if we created or replaced `final_path`, False if a file of
        `size` bytes was already there."""
        return self._publish_object(tmp_path, final_path, size, check_tmp=True)

    def _publish_object(self, tmp_path: str, final_path: str, size: int, *, check_tmp: bool) -> bool:
        try:
            with self._guard("publish"):
                if check_tmp:
                    found = self.stat(tmp_path)
                    if found is None or found.is_dir or found.size != size:
                        got = _("nothing") if found is None else _("{size} bytes").format(size=found.size)
                        raise errors.TransferError(
                            _("the temporary file {path} holds {got}, not {size} bytes: not published"
                              ).format(path=tmp_path, got=got, size=size)
                        )
                if HARDLINK in self.extensions:
                    won = self._place_object(HARDLINK, tmp_path, final_path, size)
                    if won is not None:
                        return won
                if POSIX_RENAME in self.extensions:
                    if self.object_complete(final_path, size):
                        return False
                    won = self._place_object(POSIX_RENAME, tmp_path, final_path, size)
                    if won is not None:
                        return won
                return bool(self._place_object("rename", tmp_path, final_path, size))
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.remove(tmp_path)

    def _place_object(self, how: str, tmp_path: str, final_path: str, size: int) -> bool | None:
        """Put tmp at final by `how`; a torn final is removed and the move retried once.
        None if the host does not support `how`."""
        for attempt in range(2):
            try:
                if how == "rename":
                    self._sftp.rename(tmp_path, final_path)
                else:
                    self._sftp._request(CMD_EXTENDED, how, tmp_path, final_path)
                return True
            except OSError as e:
                if how != "rename" and getattr(e, "sftp_code", None) == SFTP_OP_UNSUPPORTED:
                    return None
                if not self._transport.is_active():
                    raise
                complete = self.object_complete(final_path, size)
                if complete is None or attempt == 1:
                    raise  # a real error (nothing there), or a torn file we could not replace
                if complete:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    self._sftp.remove(final_path)  # torn: a complete copy replaces it
        raise AssertionError("unreachable")

    def require_dir(self, path: str) -> None:
        """CloudShareError in plain words unless `path` is an existing folder on the host."""
        shown = path or "(the login folder)"
        hint = _("check the folder in the URL (sftp://USER@HOST[:PORT]/FOLDER); ask the firm which folder")
        try:
            found = self.stat(path or ".")
        except PermissionError:
            raise errors.HostFolderProblem(
                _("the folder {shown} cannot be read on the host (permission denied)").format(
                    shown=shown), hint=hint
            ) from None
        if found is None:
            raise errors.HostFolderProblem(_("the folder {shown} does not exist on the host").format(
                shown=shown), hint=hint)
        if not found.is_dir:
            raise errors.HostFolderProblem(_("{shown} on the host is a file, not a folder").format(
                shown=shown), hint=hint)

    # -- transfers --

    @contextlib.contextmanager
    def _deadline(self, what: str) -> Iterator[_Deadline]:
        """Bound a whole transfer by timeouts.transfer -> TransferError."""
        deadline = _Deadline(what, self.timeouts.transfer, self._transport, self.timeouts.stall)
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
        with self._deadline(_("upload of {path}").format(path=path)) as check, self._guard("upload"):
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
        with self._deadline(_("download of {path}").format(path=path)) as check, self._guard("download"):
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
            raise errors.TransferError(_("clock probe {probe} unexpectedly exists").format(probe=probe))
        try:
            found = self.stat(probe)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.remove(probe)
        if found is None:
            raise errors.TransferError(_("clock probe {probe} vanished").format(probe=probe))
        return found.mtime
