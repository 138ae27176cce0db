"""A private OpenSSH sshd on loopback, as a pytest plugin (listed in conftest's pytest_plugins).

`start_sshd` / `stop_sshd` / `generate_ed25519_keypair` are reusable by tests that need a
variant (e.g. the hosting recipe with `ChrootDirectory`).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.serverinfo import ShareServer

SSHD_MISSING = "OpenSSH sshd not installed: apt-get install openssh-server"
START_TIMEOUT = 10.0


def find_sshd() -> str | None:
    """Absolute path of sshd (sshd re-executes itself, so it must be absolute)."""
    if os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd"
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def generate_ed25519_keypair(private_path: Path) -> str:
    """Write a new Ed25519 private key (OpenSSH format, 0600); return its public key line."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    private_path = Path(private_path)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(private_path, 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = public.decode("ascii")
    Path(str(private_path) + ".pub").write_text(line + "\n")
    return line


def public_line_fingerprint(public_line: str) -> str:
    """`SHA256:...` of an OpenSSH public key line, like `ssh-keygen -l`."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _split_match(extra_config: str) -> tuple[str, str]:
    """Split extra config into global lines and the `Match` blocks (which must come last)."""
    lines = extra_config.strip().splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("match "):
            return "\n".join(lines[:i]), "\n".join(lines[i:])
    return "\n".join(lines), ""


def _write_config(tmpdir: Path, port: int, extra_config: str) -> Path:
    config = tmpdir / "sshd_config"
    head, match = _split_match(extra_config)
    config.write_text(
        "\n".join(
            [
                # extra lines first: for most keywords sshd keeps the first value it reads
                head,
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {tmpdir / 'host_ed25519'}",
                f"AuthorizedKeysFile {tmpdir / 'authorized_keys'}",
                f"PidFile {tmpdir / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "Subsystem sftp internal-sftp",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "MaxStartups 100:30:200",
                "MaxSessions 50",
                "LogLevel ERROR",
                match,
                "",
            ]
        )
    )
    return config


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout:.0f} s")


def start_sshd(tmpdir: Path, extra_config: str = "") -> tuple[subprocess.Popen, ShareServer]:
    """Start a private sshd serving `<tmpdir>/share`; the caller stops it with `stop_sshd`."""
    sshd = find_sshd()
    if sshd is None:
        raise FileNotFoundError(SSHD_MISSING)
    tmpdir = Path(tmpdir).absolute()
    tmpdir.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
    host_public = generate_ed25519_keypair(tmpdir / "host_ed25519")
    client_public = generate_ed25519_keypair(tmpdir / "client_ed25519")
    (tmpdir / "authorized_keys").write_text(client_public + "\n")
    share = tmpdir / "share"
    share.mkdir(exist_ok=True)
    port = free_port()
    config = _write_config(tmpdir, port, extra_config)
    with open(tmpdir / "sshd.log", "ab") as log:  # sshd keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        _wait_listening(proc, port, START_TIMEOUT)
    except BaseException:
        stop_sshd(proc)
        log = (tmpdir / "sshd.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"sshd did not start; log:\n{log}") from None
    server = ShareServer(
        kind="openssh",
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        base=str(share),
        root=share,
        identity=tmpdir / "client_ed25519",
        host_key_fingerprint=public_line_fingerprint(host_public),
    )
    return proc, server


def stop_sshd(proc: subprocess.Popen) -> None:
    """Stop the sshd we started (by its own pid): terminate, wait, kill."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def skip_or_fail_without_sshd() -> None:
    """Skip (or fail, with CLOUDSHARE_REQUIRE_OPENSSH=1) when sshd is not installed."""
    if find_sshd() is not None:
        return
    if os.environ.get("CLOUDSHARE_REQUIRE_OPENSSH") == "1":
        pytest.fail(SSHD_MISSING)
    pytest.skip(SSHD_MISSING)


@pytest.fixture(scope="session")
def openssh_server(tmp_path_factory: pytest.TempPathFactory):
    """A private OpenSSH sshd (internal-sftp) for the whole test session."""
    skip_or_fail_without_sshd()
    proc, server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop_sshd(proc)
