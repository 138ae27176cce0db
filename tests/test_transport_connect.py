"""Connecting (issue 9): unreachable hosts said in words and quickly, a wrong fingerprint
refused as a possible attack, the base folder checked; paramiko never prints on stderr."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.transport import (
    Credentials,
    Endpoint,
    HostKeyMismatch,
    KnownHosts,
    SftpConnection,
    Timeouts,
    connect,
    probe_host_key,
)
from cloudshare_p2p.transport.network import PromptTransport
from tests.relay import Relay
from tests.serverinfo import ShareServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _no_login(tmp_path: Path) -> tuple[KnownHosts, Credentials]:
    return KnownHosts(tmp_path / "known_hosts"), Credentials(use_agent=False)


# --- unreachable hosts -----------------------------------------------------------------


def test_refused_port_says_nothing_is_listening(closed_port: int, tmp_path: Path) -> None:
    for attempt in (
        lambda: connect(Endpoint("u", "127.0.0.1", closed_port), *_no_login(tmp_path)),
        lambda: probe_host_key(Endpoint("u", "127.0.0.1", closed_port)),
    ):
        t0 = time.monotonic()
        with pytest.raises(errors.NetworkDown) as info:
            attempt()
        assert time.monotonic() - t0 < 2
        assert str(info.value) == f"nothing is listening on 127.0.0.1:{closed_port}"
        assert "Errno" not in info.value.user_message()
        assert "port" in info.value.hint
        assert info.value.exit_code == 9


def test_unresolvable_name_says_no_such_host(tmp_path: Path) -> None:
    endpoint = Endpoint("u", "no-such-host.invalid", 2222)
    t0 = time.monotonic()
    with pytest.raises(errors.NetworkDown) as info:
        connect(endpoint, *_no_login(tmp_path), timeouts=Timeouts(resolve=3.0))
    elapsed = time.monotonic() - t0
    if "no name server answered" in str(info.value):
        pytest.skip(f"this machine's resolver did not answer for .invalid within 3 s ({elapsed:.1f} s)")
    assert str(info.value) == "cannot reach no-such-host.invalid:2222: no such host"
    assert "Errno" not in info.value.user_message() and "host name" in info.value.hint
    assert info.value.exit_code == 9
    assert elapsed < 3.5


def test_ipv6_literal_refused(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = s.getsockname()[1]
        with pytest.raises(errors.NetworkDown, match=rf"nothing is listening on \[::1\]:{port}$"):
            connect(Endpoint("u", "::1", port), *_no_login(tmp_path))


def test_host_that_closes_at_once(closed_port: int, tmp_path: Path) -> None:
    """Something accepts the connection, then closes it (the relay to a refused port)."""
    closed = "closed the connection during the SSH handshake"
    with Relay(closed_port) as relay, pytest.raises(errors.NetworkDown, match=closed):
        connect(Endpoint("u", "127.0.0.1", relay.port), *_no_login(tmp_path))


def test_silent_host_is_not_an_ssh_host(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with Relay(listener.getsockname()[1]) as relay:
            relay.go_silent()
            t0 = time.monotonic()
            with pytest.raises(errors.NetworkDown, match="does not answer like an SSH/SFTP host"):
                connect(Endpoint("u", "127.0.0.1", relay.port), *_no_login(tmp_path),
                        timeouts=Timeouts(banner=1.0))
            assert time.monotonic() - t0 < 4


def test_failed_handshake_prints_nothing_on_stderr(closed_port: int) -> None:
    """paramiko logs a traceback per failed connection; the user's terminal must not see it."""
    script = f"""
import socket
from cloudshare_p2p import errors
from cloudshare_p2p.transport import Endpoint, probe_host_key
from cloudshare_p2p.transport.network import PromptTransport
from tests.relay import Relay
with Relay({closed_port}) as relay:
    try:
        probe_host_key(Endpoint("u", "127.0.0.1", relay.port))
    except errors.NetworkDown as e:
        print(e)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert "closed the connection" in done.stdout
    assert done.stderr == ""


# --- host keys ------------------------------------------------------------------------


def _server_key(server: ShareServer) -> paramiko.PKey:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=5)
            return transport.get_remote_server_key()
        finally:
            transport.close()


def _creds(server: ShareServer) -> Credentials:
    return Credentials(identity=server.identity, use_agent=False)


@pytest.mark.server
def test_wrong_fingerprint_is_a_possible_attack(share_server: ShareServer, tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path / "known_hosts")
    endpoint = Endpoint.parse(share_server.url())
    given = "SHA256:" + "A" * 43
    with pytest.raises(HostKeyMismatch) as info:
        connect(endpoint, hosts, _creds(share_server), accept_fingerprint=given)
    exc = info.value
    text = exc.user_message()
    assert isinstance(exc, errors.HostKeyChanged) and exc.exit_code == 8
    assert "does not match the fingerprint you were given" in text and given in text
    assert "attack or a mistake" in text and "ask the firm" in exc.hint
    assert share_server.host_key_fingerprint not in text  # never suggest pasting it
    assert "--accept-host-key" not in text
    assert not hosts.path.exists()


@pytest.mark.server
def test_wrong_fingerprint_refused_even_when_pinned(share_server: ShareServer, tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path / "known_hosts")
    endpoint = Endpoint.parse(share_server.url())
    right = share_server.host_key_fingerprint
    connect(endpoint, hosts, _creds(share_server), accept_fingerprint=right).close()
    with pytest.raises(HostKeyMismatch):
        connect(endpoint, hosts, _creds(share_server), accept_fingerprint="SHA256:" + "B" * 43)
    connect(endpoint, hosts, _creds(share_server)).close()  # the pin itself is untouched


@pytest.mark.server
def test_fingerprint_forms_accepted(share_server: ShareServer, tmp_path: Path) -> None:
    key = _server_key(share_server)
    md5 = hashlib.md5(key.asbytes(), usedforsecurity=False).hexdigest()
    sha = share_server.host_key_fingerprint
    forms = [
        f"  {sha}  ",
        sha[len("SHA256:"):],  # bare base64
        sha + "=",  # padded
        "MD5:" + ":".join(md5[i : i + 2] for i in range(0, 32, 2)),  # ssh-keygen -E md5
    ]
    for i, given in enumerate(forms):
        hosts = KnownHosts(tmp_path / f"known_hosts-{i}")
        endpoint = Endpoint.parse(share_server.url())
        connect(endpoint, hosts, _creds(share_server), accept_fingerprint=given).close()
        assert hosts.fingerprints() == {endpoint.hostport(): sha}
    with pytest.raises(HostKeyMismatch):
        connect(Endpoint.parse(share_server.url()), KnownHosts(tmp_path / "kh-md5"),
                _creds(share_server), accept_fingerprint="MD5:" + "00:" * 15 + "00")


# --- answering the host's unsolicited messages (no wait for a delayed ACK) ---------------


def _recording_transport(sent: list[int]) -> PromptTransport:
    left, right = socket.socketpair()
    transport = PromptTransport(left)
    transport._send_message = lambda m: sent.append(m.asbytes()[0])  # type: ignore[method-assign]
    transport._test_peer = right  # type: ignore[attr-defined]  # kept open while the test runs
    return transport


def _global_request(kind: str, want_reply: bool) -> paramiko.Message:
    m = paramiko.Message()
    m.add_string(kind)
    m.add_boolean(want_reply)
    m.rewind()
    return m


def _debug_message() -> paramiko.Message:
    m = paramiko.Message()
    m.add_boolean(False)
    m.add_string("key options: pty")
    m.add_string("")
    m.rewind()
    return m


def test_unanswered_host_messages_get_an_ignore_back() -> None:
    sent: list[int] = []
    transport = _recording_transport(sent)
    transport._parse_global_request(_global_request("hostkeys-00@openssh.com", False))
    transport._parse_debug(_debug_message())
    assert sent == []  # not during the first key exchange (strict kex)
    transport.initial_kex_done = True
    transport._parse_global_request(_global_request("hostkeys-00@openssh.com", False))
    assert sent == [paramiko.common.MSG_IGNORE]
    sent.clear()
    transport._parse_global_request(_global_request("keepalive@openssh.com", True))
    assert sent == [paramiko.common.MSG_REQUEST_FAILURE]  # the reply is the acknowledgement
    sent.clear()
    transport._parse_debug(_debug_message())
    assert sent == [paramiko.common.MSG_IGNORE]


def test_a_host_sending_on_and_on_gets_only_the_first_few_answers() -> None:
    """The IGNOREs are for the burst after the login: a host that keeps sending gets no
    exchange going (one IGNORE for each of its messages, for the whole session)."""
    sent: list[int] = []
    transport = _recording_transport(sent)
    transport.initial_kex_done = True
    for _ in range(50):
        transport._parse_debug(_debug_message())
        transport._parse_global_request(_global_request("hostkeys-00@openssh.com", False))
    assert sent == [paramiko.common.MSG_IGNORE] * PromptTransport.PROMPT_ANSWERS


@pytest.mark.server
def test_openssh_post_login_messages_answered(openssh_server: ShareServer, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """sshd's hostkeys-00 request (and its debug lines) arrive before the SFTP channel opens; each
    gets an IGNORE back, so sshd's reply to the channel open is not held back (Nagle)."""
    prompts: list[str] = []
    original = PromptTransport._prompt
    monkeypatch.setattr(PromptTransport, "_prompt", lambda self: (prompts.append("ignore"), original(self)))
    endpoint = Endpoint.parse(openssh_server.url())
    with connect(endpoint, KnownHosts(tmp_path / "kh"), _creds(openssh_server),
                 accept_fingerprint=openssh_server.host_key_fingerprint) as s:
        assert isinstance(s._transport, PromptTransport)
        assert prompts
        s.require_dir(s.path())  # the connection still works


# --- the base folder ----------------------------------------------------------------------


@pytest.fixture
def session(share_server: ShareServer, tmp_path: Path) -> Iterator[SftpConnection]:
    endpoint = Endpoint.parse(share_server.url())
    with connect(endpoint, KnownHosts(tmp_path / "kh"), _creds(share_server),
                 accept_fingerprint=share_server.host_key_fingerprint) as s:
        yield s


@pytest.mark.server
def test_require_dir(session: SftpConnection) -> None:
    session.require_dir(session.path())  # the URL's base folder
    name = f"t-{uuid.uuid4().hex[:12]}"
    with pytest.raises(errors.CloudShareError, match="does not exist on the host") as info:
        session.require_dir(session.path(name))
    assert info.value.exit_code == 1 and "URL" in info.value.hint
    session.create_exclusive(session.path(name), b"")
    with pytest.raises(errors.CloudShareError, match="is a file, not a folder"):
        session.require_dir(session.path(name))
    session.remove(session.path(name))
