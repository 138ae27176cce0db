"""A private OpenSSH sshd on loopback, as a pytest plugin (listed in conftest's pytest_plugins).

`start_sshd` / `stop_sshd` are reusable by tests that need a variant (e.g. the hosting recipe
with `ChrootDirectory`). Each pytest-xdist worker starts its own sshd in its own temp folder.
Ports and keys come from tests.netkeys (`free_port`, `generate_ed25519_keypair` and
`public_line_fingerprint` stay importable from here).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.netkeys import free_port, generate_ed25519_keypair, public_line_fingerprint
from tests.serverinfo import ShareServer

SSHD_MISSING = "OpenSSH sshd not installed: apt-get install openssh-server"
START_TIMEOUT = 10.0
START_ATTEMPTS = 3  # a free port can be taken between probe and bind (parallel workers): retry


def find_sshd() -> str | None:
    """Absolute path of sshd (sshd re-executes itself, so it must be absolute)."""
    if os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd"
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


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


def _listening_pid(tmpdir: Path) -> int | None:
    """The pid sshd wrote to its PidFile (it does so only once its port is bound)."""
    try:
        return int((tmpdir / "sshd.pid").read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _wait_listening(proc: subprocess.Popen, tmpdir: Path, port: int, timeout: float) -> None:
    """Return once OUR sshd listens on `port` (its pid file names it: a parallel worker's
    server on the same port does not count); raise if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with status {proc.returncode}")
        if _listening_pid(tmpdir) == proc.pid:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout:.0f} s")


def _spawn_sshd(sshd: str, tmpdir: Path, extra_config: str) -> tuple[subprocess.Popen, int]:
    """Start sshd on a free port and wait until it listens; retry on another port if it fails."""
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        config = _write_config(tmpdir, port, extra_config)
        (tmpdir / "sshd.pid").unlink(missing_ok=True)
        with open(tmpdir / "sshd.log", "ab") as log:  # sshd keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            _wait_listening(proc, tmpdir, port, START_TIMEOUT)
            return proc, port
        except BaseException as exc:
            stop_sshd(proc)
            if attempt + 1 < START_ATTEMPTS and isinstance(exc, RuntimeError):
                continue
            log_text = (tmpdir / "sshd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sshd did not start; log:\n{log_text}") from None
    raise AssertionError("unreachable")


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
    proc, port = _spawn_sshd(sshd, tmpdir, extra_config)
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
