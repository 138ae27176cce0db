"""Identity files said plainly (issue 9) and the SSH agent used wherever paramiko finds one
(issue 12), against a real ssh-agent and OpenSSH sshd."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudshare_p2p import errors
from cloudshare_p2p.transport import (
    Credentials,
    Endpoint,
    IdentityEncrypted,
    IdentityProblem,
    KnownHosts,
    _agent_keys,
    check_identity,
    connect,
)
from tests.fixtures_sshd import generate_ed25519_keypair
from tests.serverinfo import ShareServer


def _key(tmp_path: Path, name: str = "id_ed25519") -> Path:
    path = tmp_path / name
    generate_ed25519_keypair(path)
    return path


def _encrypted_copy(source: Path, target: Path, fmt: str = "openssh") -> Path:
    """`source`'s private key, protected by a passphrase (OpenSSH or legacy PEM format)."""
    key = serialization.load_ssh_private_key(source.read_bytes(), password=None)
    if fmt == "pem":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    formats = serialization.PrivateFormat
    encoding = formats.OpenSSH if fmt == "openssh" else formats.TraditionalOpenSSL
    target.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, encoding,
                          serialization.BestAvailableEncryption(b"a passphrase"))
    )
    target.chmod(0o600)
    return target


def _problem(path: Path) -> IdentityProblem:
    with pytest.raises(IdentityProblem) as info:
        check_identity(path)
    text = info.value.user_message()
    assert info.value.exit_code == 1
    assert "PEM" not in text and "http" not in text and "Errno" not in text, text
    return info.value


# --- check_identity ---------------------------------------------------------------------


def test_a_good_key_passes(tmp_path: Path) -> None:
    check_identity(_key(tmp_path))


def test_public_key_file(tmp_path: Path) -> None:
    key = _key(tmp_path)
    exc = _problem(Path(f"{key}.pub"))
    assert "is a public key" in str(exc)
    assert "give the private key file (without .pub)" in exc.hint and str(key) in exc.hint
    renamed = tmp_path / "mykey"  # a public key under a name without .pub
    shutil.copy(f"{key}.pub", renamed)
    assert "is a public key" in str(_problem(renamed))


def test_missing_folder_and_empty(tmp_path: Path) -> None:
    assert "does not exist" in str(_problem(tmp_path / "nope"))
    assert "is a folder" in str(_problem(tmp_path))
    (tmp_path / "empty").write_bytes(b"")
    assert "not a private key file" in str(_problem(tmp_path / "empty"))


def test_garbage_and_putty(tmp_path: Path) -> None:
    (tmp_path / "garbage").write_text("hello\n")
    assert "not a private key file" in str(_problem(tmp_path / "garbage"))
    (tmp_path / "k.ppk").write_text("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n")
    exc = _problem(tmp_path / "k.ppk")
    assert "PuTTY" in str(exc) and "Export OpenSSH key" in exc.hint
    (tmp_path / "huge").write_bytes(b"x" * (1 << 20))
    assert "too large" in str(_problem(tmp_path / "huge"))


@pytest.mark.parametrize("fmt", ["openssh", "pem"])
def test_passphrase_protected(tmp_path: Path, fmt: str) -> None:
    path = _encrypted_copy(_key(tmp_path), tmp_path / "locked", fmt)
    exc = _problem(path)
    assert isinstance(exc, IdentityEncrypted)
    assert "passphrase" in str(exc) and "ssh-add" in exc.hint


def test_unreadable(tmp_path: Path) -> None:
    key = _key(tmp_path)
    key.chmod(0)
    try:
        if os.access(key, os.R_OK):
            pytest.skip("running as a user who can read any file (root)")
        assert "cannot read" in str(_problem(key))
    finally:
        key.chmod(0o600)


# --- at login -------------------------------------------------------------------------------


def _connect(server: ShareServer, tmp_path: Path, creds: Credentials):
    return connect(Endpoint.parse(server.url()), KnownHosts(tmp_path / "known_hosts"), creds,
                   accept_fingerprint=server.host_key_fingerprint)


@pytest.mark.server
def test_public_key_given_at_login(openssh_server: ShareServer, tmp_path: Path) -> None:
    creds = Credentials(identity=Path(f"{openssh_server.identity}.pub"), use_agent=False)
    with pytest.raises(IdentityProblem, match="is a public key"):
        _connect(openssh_server, tmp_path, creds)


@pytest.mark.server
def test_passphrase_key_without_agent(openssh_server: ShareServer, tmp_path: Path) -> None:
    locked = _encrypted_copy(openssh_server.identity, tmp_path / "locked")
    with pytest.raises(IdentityEncrypted):
        _connect(openssh_server, tmp_path, Credentials(identity=locked, use_agent=False))


# --- the SSH agent ----------------------------------------------------------------------------


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private ssh-agent (our own process), SSH_AUTH_SOCK pointing at it."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent / ssh-add not installed (apt-get install openssh-client)")
    folder = tempfile.mkdtemp(prefix="agent-", dir="/tmp")  # socket paths must stay short
    sock = os.path.join(folder, "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        if not os.path.exists(sock):
            pytest.fail("ssh-agent did not create its socket within 10 s")
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


def _ssh_add(sock: str, key: Path) -> None:
    subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": sock},
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=True)


@pytest.mark.server
def test_login_with_agent_key(openssh_server: ShareServer, tmp_path: Path, agent: str) -> None:
    assert _agent_keys() == []
    _ssh_add(agent, openssh_server.identity)
    assert len(_agent_keys()) == 1
    with _connect(openssh_server, tmp_path, Credentials(use_agent=True)) as s:
        assert s.stat(s.path()) is not None


@pytest.mark.server
def test_passphrase_key_held_by_agent(openssh_server: ShareServer, tmp_path: Path, agent: str) -> None:
    """The identity is locked, but the agent holds it: the login goes through the agent."""
    _ssh_add(agent, openssh_server.identity)
    locked = _encrypted_copy(openssh_server.identity, tmp_path / "locked")
    with _connect(openssh_server, tmp_path, Credentials(identity=locked, use_agent=True)) as s:
        assert s.stat(s.path()) is not None


@pytest.mark.server
def test_agent_without_the_key(openssh_server: ShareServer, tmp_path: Path, agent: str) -> None:
    _ssh_add(agent, _key(tmp_path, "stranger"))
    with pytest.raises(errors.LoginRefused):
        _connect(openssh_server, tmp_path, Credentials(use_agent=True))


@pytest.mark.server
def test_broken_or_absent_agent_never_crashes(
    openssh_server: ShareServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "no-agent-here.sock"))
    assert _agent_keys() == []
    with pytest.raises(errors.LoginRefused):
        _connect(openssh_server, tmp_path, Credentials(use_agent=True))
    (tmp_path / "not-a-socket").write_text("x")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "not-a-socket"))
    assert _agent_keys() == []
    monkeypatch.delenv("SSH_AUTH_SOCK")
    assert _agent_keys() == []  # POSIX: no socket named, no agent
