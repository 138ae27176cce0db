"""Helpers of the fault suite (tests/test_soak.py): scale, real CLI processes, content digests,
checks that an answer is clean, and a reader that receives every version of an area.

Scale: CLOUDSHARE_SOAK=short (default; small counts, inside `make test-slow`) or long (`make soak`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cloudshare_p2p.area import Area
from tests.homes import CLOUDSHARE, SHARE_PASSWORD, Home
from tests.parties import session_for
from tests.serverinfo import ShareServer

SOAK = os.environ.get("CLOUDSHARE_SOAK", "short").strip().lower() or "short"
if SOAK not in ("short", "long"):
    raise ValueError(f"CLOUDSHARE_SOAK must be short or long, not {SOAK!r}")
LONG = SOAK == "long"
SEED = int(os.environ.get("CLOUDSHARE_SOAK_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 30)
KEPT_ASIDE_MARKERS = (".conflict-", ".not-sent", "local-changes")
COMMAND_TIMEOUT = 120.0  # no single cloudshare command of the suite may take longer
BAD_BYTES = ("\x1b", "\x07")


def scale(short: int | float, long: int | float) -> int | float:
    """The figure for the current scale."""
    return long if LONG else short


def rng(test: str, kind: str) -> random.Random:
    """A generator per test and server, reproducible with CLOUDSHARE_SOAK_SEED."""
    return random.Random(f"{SEED}-{test}-{kind}")


def new_area() -> str:
    return f"soak-{uuid.uuid4().hex[:10]}"


# --- answers ------------------------------------------------------------------------------------


def assert_clean(result: subprocess.CompletedProcess | tuple[int, str, str], what: str = "") -> None:
    """No traceback, no internal error (exit 70), no terminal control byte on either stream."""
    if isinstance(result, tuple):
        code, out, err = result
    else:
        code, out, err = result.returncode, result.stdout or "", result.stderr or ""
    shown = f"{what}: exit {code}\nstdout: {out[-3000:]!r}\nstderr: {err[-3000:]!r}"
    assert code != 70, "internal error\n" + shown
    assert "Traceback" not in out and "Traceback" not in err, "traceback\n" + shown
    for bad in BAD_BYTES:
        assert bad not in out and bad not in err, f"control byte {bad!r} reached the terminal\n" + shown


def run(home: Home, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    """`cloudshare ARGS` in `home`, any exit code, checked clean."""
    result = home.run(*args, expect=None, timeout=timeout)
    assert_clean(result, " ".join(args))
    return result


def ok(home: Home, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    result = run(home, *args, timeout=timeout)
    assert result.returncode == 0, (
        f"cloudshare {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}")
    return result


def cli_env(home: Home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLOUDSHARE_PASSWORD", "CLOUDSHARE_SSH_PASSWORD", "SSH_AUTH_SOCK")}
    env.update(CLOUDSHARE_NAME=home.name, CLOUDSHARE_PASSWORD=SHARE_PASSWORD, **home.env)
    return env


@dataclass
class Started:
    """A cloudshare process of the test; output goes to files (a kill never blocks a pipe)."""

    proc: subprocess.Popen
    out: Path
    err: Path
    args: tuple[str, ...]
    started: float

    def finish(self, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"cloudshare {' '.join(self.args)} did not end within {timeout:.0f} s") \
                from None
        return code, self.out.read_text(errors="replace"), self.err.read_text(errors="replace")

    def kill_after(self, delay: float) -> bool:
        """SIGKILL after `delay` seconds unless it ended before; True if it was killed."""
        try:
            self.proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            return True


def start(home: Home, *args: str) -> Started:
    logs = home.root / "logs-soak"
    logs.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    out, err = logs / f"{tag}.out", logs / f"{tag}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([CLOUDSHARE, "--home", str(home.root / "home"), *args], env=cli_env(home),
                                stdin=subprocess.DEVNULL, stdout=fo, stderr=fe)
    return Started(proc, out, err, args, time.monotonic())


def state(home: Home, name: str) -> str:
    rows = json.loads(ok(home, "status", "--json").stdout)
    return next((r["state"] for r in rows if r["name"] == name), "unregistered")


# --- content --------------------------------------------------------------------------------------


def digest(path: Path) -> str | None:
    """One hash of a file's or a folder's content (relative names and bytes); None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    if path.is_file():
        h.update(b"F" + path.read_bytes())
        return h.hexdigest()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(item.relative_to(path)).encode() + b"\0")
        h.update(hashlib.sha256(item.read_bytes()).digest())
    return h.hexdigest()


def kept_aside(folder: Path, name: str) -> list[Path]:
    """Copies kept aside next to data named `name` (books -> books.conflict-…-not-sent…)."""
    stem = name.split(".")[0]
    return sorted(p for p in Path(folder).iterdir()
                  if p.name.startswith(stem + ".") and any(m in p.name for m in KEPT_ASIDE_MARKERS))


def write_folder(path: Path, marker: str, size: int, rand: random.Random) -> str:
    """A folder data set: a ledger of `size` random bytes and a memo naming the work."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "ledger.db").write_bytes(rand.randbytes(size))
    (path / "memo.txt").write_text(marker + "\n")
    return digest(path)


@contextmanager
def area_reader(server: ShareServer, area_name: str, port: int | None = None) -> Iterator[Area]:
    """The area as a separate reader sees it (its own connection; the CLI's share password)."""
    with tempfile.TemporaryDirectory(prefix="soak-reader-") as home:
        session = session_for(server, Path(home), port)
        try:
            area = Area(session, area_name)
            area.unlock_keys(SHARE_PASSWORD)
            yield area
        finally:
            session.close()


def every_version(server: ShareServer, area_name: str, work: Path) -> list[tuple[int, str]]:
    """Receive every version of the area into a fresh folder: [(version, digest)].

    A half version (a manifest or chunk missing, torn or failing verification) raises.
    """
    out = []
    work.mkdir(parents=True, exist_ok=True)
    with area_reader(server, area_name) as area:
        for version in area.versions():
            target = work / f"v{version.version}-{uuid.uuid4().hex[:6]}"
            area.download(version, target)
            out.append((version.version, digest(target)))
    return out


def lock_generations(server: ShareServer, area_name: str) -> list[int]:
    folder = server.root / area_name / "lock"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def log_sequences(server: ShareServer, area_name: str) -> list[int]:
    folder = server.root / area_name / "log"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def backdate_top_lock(server: ShareServer, area_name: str, seconds: int = 3600) -> int:
    """Make the highest lock generation look old on the server's disk (its lease ran out)."""
    gen = lock_generations(server, area_name)[-1]
    path = server.root / area_name / "lock" / f"{gen:020d}"
    then = time.time() - seconds
    os.utime(path, (then, then))
    return gen


def plant(path: Path, body: bytes) -> None:
    """Write a record on the server's disk the way anyone with the login could."""
    tmp = path.with_name(f".plant-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(body)
    os.replace(tmp, path)


def wait_for(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def load_note() -> str:
    """The load of this machine, for the figures."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load=?"
    return f"load={one:.2f}/{five:.2f} cores={os.cpu_count()}"
