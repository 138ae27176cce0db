"""Embedded host fixtures (pytest plugin listed in conftest's pytest_plugins).

`embedded_server`: one `cloudshare host serve` subprocess on a free loopback port.
`embedded_x4_server`: four such processes serving the SAME host folder on four ports (the
stand-in for several machines over shared storage).

Both are session-scoped (each pytest-xdist worker starts its own, in its own temp folder); a
process counts as started once its log says it serves the chosen port. On teardown each process
gets SIGTERM and must exit 0 within 10 s without asyncio's "Task was destroyed but it is
pending" on its stderr. Ports and keys come from tests.netkeys (`free_port` and
`make_client_key` stay importable from here).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudshare_p2p import host as hostlib
from tests.netkeys import free_port, generate_ed25519_keypair
from tests.serverinfo import ShareServer

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
EMBEDDED_ID = "firm-test"
EMBEDDED_PASSWORD = "correct horse battery staple"
make_client_key = generate_ed25519_keypair  # the name the host tests import


@dataclass
class HostProcess:
    proc: subprocess.Popen
    port: int
    log: Path

    def stderr_text(self) -> str:
        return self.log.read_text(errors="replace")


def _serves(hp: HostProcess) -> bool:
    """Our process logged that it serves its port, and the port accepts (the log line, not the
    connection alone, tells our host from a parallel worker's that took the same port)."""
    if f"listen=127.0.0.1:{hp.port} " not in hp.stderr_text() + " ":
        return False
    try:
        with socket.create_connection(("127.0.0.1", hp.port), timeout=0.5):
            return True
    except OSError:
        return False


def start_host_process(host_dir: Path, port: int | None = None, *, grace: float = 2.0,
                       extra_args: tuple[str, ...] = ("--max-failures", "1000")) -> HostProcess:
    """Start `python -m cloudshare_p2p.hostcli serve DIR` and wait until the port accepts.

    The suite's shared hosts allow many failed logins (tests enter wrong passwords on purpose);
    the rate-limit tests pass their own limits in `extra_args`.
    """
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry
        p = port or free_port()
        log = host_dir.parent / f"host-{host_dir.name}-{p}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cloudshare_p2p.hostcli",
                    "serve",
                    str(host_dir),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(p),
                    "--grace",
                    str(grace),
                    *extra_args,
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        hp = HostProcess(proc, p, log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _serves(hp):
                return hp
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
            raise RuntimeError(
                f"embedded host did not listen within {START_TIMEOUT:.0f} s:\n{hp.stderr_text()[-2000:]}"
            )
        last_error = hp.stderr_text()[-2000:]
        if port is not None:
            break
    raise RuntimeError(f"embedded host did not start:\n{last_error}")


def stop_host_process(hp: HostProcess) -> tuple[int, str]:
    """SIGTERM, wait (bounded); returns (exit status, stderr). Kills it if it hangs."""
    if hp.proc.poll() is None:
        hp.proc.send_signal(signal.SIGTERM)
        try:
            hp.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            hp.proc.kill()
            hp.proc.wait(timeout=5)
            return -9, hp.stderr_text()
    return hp.proc.returncode, hp.stderr_text()


def assert_clean_stop(hp: HostProcess) -> None:
    rc, err = stop_host_process(hp)
    assert rc == 0, f"embedded host exited {rc}:\n{err[-2000:]}"
    assert "Task was destroyed" not in err, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


def make_host_dir(
    base: Path, comm_id: str = EMBEDDED_ID, password: str | None = EMBEDDED_PASSWORD
) -> tuple[Path, Path, str]:
    """A host folder with one ID (password + a fresh client key): (dir, key path, fingerprint)."""
    host_dir = base / "hostdir"
    fp = hostlib.init_host(host_dir)
    identity = base / "client_ed25519"
    public = make_client_key(identity)
    hostlib.add_id(host_dir, comm_id, password, public)
    return host_dir, identity, fp


def _share_server(kind: str, host_dir: Path, identity: Path, fp: str, ports: tuple[int, ...]) -> ShareServer:
    """The embedded host's test ID, served on `ports` (one or several processes)."""
    return ShareServer(
        kind=kind, host="127.0.0.1", port=ports[0], user=EMBEDDED_ID, base="/",
        root=host_dir / hostlib.DATA / EMBEDDED_ID, identity=identity, host_key_fingerprint=fp,
        password=EMBEDDED_PASSWORD, ports=ports if len(ports) > 1 else (),
    )


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory):
    """The embedded asyncssh host, one process, as a ShareServer (kind "embedded")."""
    host_dir, identity, fp = make_host_dir(tmp_path_factory.mktemp("embedded"))
    hp = start_host_process(host_dir)
    try:
        yield _share_server("embedded", host_dir, identity, fp, (hp.port,))
    finally:
        assert_clean_stop(hp)


@pytest.fixture(scope="session")
def embedded_x4_server(tmp_path_factory: pytest.TempPathFactory):
    """Four embedded-host processes serving one folder (kind "embedded-x4", `ports`)."""
    host_dir, identity, fp = make_host_dir(tmp_path_factory.mktemp("embedded_x4"))
    procs: list[HostProcess] = []
    try:
        for _ in range(4):
            procs.append(start_host_process(host_dir))
        ports = tuple(hp.port for hp in procs)
        yield _share_server("embedded-x4", host_dir, identity, fp, ports)
    finally:
        failures = []
        for hp in procs:
            try:
                assert_clean_stop(hp)
            except AssertionError as exc:
                failures.append(str(exc))
        assert not failures, "\n".join(failures)
