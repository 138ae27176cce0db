"""Reaching the host: name lookup, TCP connect and the SSH handshake (no login), each
bounded by its time limit, with every failure said in plain words (NetworkDown)."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time

import paramiko
from paramiko.common import cMSG_IGNORE

from cloudshare_p2p import errors

from ..i18n import _
from .endpoint import Endpoint, Timeouts

PREFERRED_CIPHER = "aes128-gcm@openssh.com"
MAX_ADDRESSES = 8  # addresses of one host name tried when connecting


def open_transport(
    endpoint: Endpoint, timeouts: Timeouts, pinned_type: str | None = None
) -> paramiko.Transport:
    """TCP + SSH handshake (no authentication); errors -> NetworkDown in plain words."""
    where = _where(endpoint)
    sock = _connect_socket(endpoint, timeouts)
    try:
        transport = PromptTransport(sock)
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


class PromptTransport(paramiko.Transport):
    """paramiko's client transport that answers a host's unsolicited messages at once.

    After the login OpenSSH's sshd sends messages nobody answers (the `hostkeys-00@openssh.com`
    global request, debug messages) and, with Nagle's algorithm on (sshd sets TCP_NODELAY only
    for terminals), holds its next packet until they are acknowledged: the reply to opening the
    SFTP channel waited for this computer's delayed ACK (40 ms on Linux, up to 200 ms on
    Windows). An SSH_MSG_IGNORE sent back at once carries that ACK. Only the first few are
    answered (`PROMPT_ANSWERS`): that burst is all it is for, and a host sending more gets no
    exchange going.
    """

    PROMPT_ANSWERS = 4
    _answered = 0

    def _parse_global_request(self, m: paramiko.Message) -> None:
        start = m.packet.tell()
        m.get_text()
        wants_reply = m.get_boolean()
        m.packet.seek(start)
        super()._parse_global_request(m)
        if not wants_reply and self.initial_kex_done:  # a reply acknowledges by itself
            self._prompt()

    def _parse_debug(self, m: paramiko.Message) -> None:
        super()._parse_debug(m)
        if self.initial_kex_done:  # strict key exchange allows no IGNORE before its end
            self._prompt()

    def _prompt(self) -> None:
        if self._answered >= self.PROMPT_ANSWERS:
            return
        self._answered += 1
        ignore = paramiko.Message()
        ignore.add_byte(cMSG_IGNORE)
        ignore.add_string(b"")
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):  # the reader thread sees it
            self._send_message(ignore)


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
        .format(where=where, reason=describe(e)))


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
    return errors.NetworkDown(_("cannot reach {where}: {reason}").format(where=where, reason=describe(e)))


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
            where=where, reason=describe(e)))
    return errors.NetworkDown(_("SSH handshake with {where} failed: {reason}").format(
        where=where, reason=describe(e)))


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


def describe(e: BaseException) -> str:
    """Words for an exception: the OS's text without "[Errno N]"."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return str(e) or type(e).__name__

