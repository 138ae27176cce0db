#!/usr/bin/env python3
"""Issue 11's emulated office link: the cloudshare CLI beside sftp and rsync over 50 Mbit/s + 20 ms.

Builds two network namespaces joined by a veth pair (10.233.0.1 client, 10.233.0.2 server),
`tc qdisc … tbf rate 50mbit` on both ends, starts a private OpenSSH sshd in the server
namespace and, in the client namespace, a TCP delay proxy (127.0.0.1 → 10.233.0.2:22) that holds
every chunk 20 ms each way and counts the bytes. Everything below runs in the client namespace
through that proxy; medians of `--rounds`, each figure printed beside its peer. Needs root;
prints a reason and exits 0 where the link cannot be built. The namespaces, sshd and temporary
folder are removed in a `finally` (Ctrl-C and SIGTERM included). Asserts nothing.

Over ~400 lines because it is one self-contained script (the benchmark was given one file):
the link, the delay proxy, the sshd and the measurements would otherwise be modules nothing else uses.

Run from the repository root:  .venv/bin/python bench/office_link.py [--rounds 3] [--rows 320000]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench_delta import ROWS, build_ledger, edit_ledger  # noqa: E402
from tests.fixtures_sshd import (  # noqa: E402
    find_sshd,
    generate_ed25519_keypair,
    public_line_fingerprint,
    stop_sshd,
)

CLI_IP, SRV_IP, PREFIX = "10.233.0.1", "10.233.0.2", 30
TBF = ["burst", "32kb", "latency", "50ms"]  # after "rate <--rate>"
PASSWORD = "office-link-password"
LOGIN = "root@127.0.0.1"  # the proxy, in the client namespace
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                "/usr/libexec/sftp-server")
SSH_OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]


def sh(*cmd: str) -> subprocess.CompletedProcess:
    """Run a setup command; raise with its stderr when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _sigterm(_signo: int, _frame: object) -> None:
    raise SystemExit(143)


def _signals() -> None:
    """SIGTERM ends the run through the `finally`s; Ctrl-C too, even if started with SIGINT ignored."""
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# --- the link (parent, root namespace) ------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """Names of this run's namespaces and veth ends (the pid keeps parallel runs apart)."""

    cli: str
    srv: str

    @classmethod
    def for_pid(cls, pid: int) -> Link:
        return cls(f"ofl{pid}-c", f"ofl{pid}-s")


def why_not() -> str | None:
    """Why the link cannot be built here, or None."""
    if os.geteuid() != 0:
        return "not root (network namespaces and tc need root)"
    for tool in ("ip", "tc", "sftp", "ssh", "uptime"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    if not find_sshd():
        return "sshd not installed (apt-get install openssh-server)"
    if not shutil.which("rsync"):
        subprocess.run(["apt-get", "install", "-y", "rsync"], capture_output=True, timeout=300)
        if not shutil.which("rsync"):
            return "rsync not installed and apt-get install -y rsync failed"
    return None


def build_link(link: Link, rate: str) -> str:
    """Namespaces, veth pair, addresses, tbf on both ends; returns what netem said."""
    sh("ip", "netns", "add", link.cli)
    sh("ip", "netns", "add", link.srv)
    sh("ip", "link", "add", link.cli, "type", "veth", "peer", "name", link.srv)
    for ns, ip in ((link.cli, CLI_IP), (link.srv, SRV_IP)):
        sh("ip", "link", "set", ns, "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX}", "dev", ns)
        sh("ip", "-n", ns, "link", "set", ns, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    probe = subprocess.run(["tc", "-n", link.cli, "qdisc", "add", "dev", link.cli, "root", "netem",
                            "delay", "20ms"], capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        sh("tc", "-n", link.cli, "qdisc", "del", "dev", link.cli, "root")
        netem = "netem is available (the proxy is used anyway, so runs compare)"
    else:
        netem = f"no netem in this kernel (tc said: {probe.stderr.strip()}); delay by the proxy"
    for ns in (link.cli, link.srv):
        sh("tc", "-n", ns, "qdisc", "add", "dev", ns, "root", "tbf", "rate", rate, *TBF)
    return netem


def teardown(link: Link) -> None:
    """Delete both namespaces (the veth pair goes with them, or by name if still here); errors ignored."""
    for ns in (link.cli, link.srv):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    subprocess.run(["ip", "link", "del", link.cli], capture_output=True, timeout=30)


def kill_leftover_sshd(tmp: Path) -> None:
    """The child normally stops sshd; if it died first, stop the pid it recorded."""
    try:
        pid = int((tmp / "sshd.popen.pid").read_text())
        if "sshd" in Path(f"/proc/{pid}/cmdline").read_text():
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def parent(args: argparse.Namespace) -> int:
    """Build the link, run the measurements in the client namespace, always clean up."""
    print(f"# office_link: uptime at start: {uptime()}")
    reason = why_not()
    if reason:
        print(f"skipped: {reason}")
        return 0
    link = Link.for_pid(os.getpid())
    tmp = Path(tempfile.mkdtemp(prefix="office-link-"))
    _signals()
    try:
        try:
            netem = build_link(link, args.rate)
        except RuntimeError as exc:
            print(f"skipped: the link cannot be built: {exc}")
            return 0
        print(f"link: netns {link.cli} ({CLI_IP}) <-veth-> {link.srv} ({SRV_IP}), "
              f"tbf rate {args.rate} {' '.join(TBF)} on both ends; {netem}")
        cmd = ["ip", "netns", "exec", link.cli, sys.executable, str(Path(__file__).resolve()),
               "--inside", str(tmp), "--srv-ns", link.srv, "--rounds", str(args.rounds),
               "--rows", str(args.rows), "--budget", str(args.budget), "--delay-ms", str(args.delay_ms)]
        cmd += ["--no-count"] * args.no_count
        sys.stdout.flush()
        child = subprocess.Popen(cmd)
        try:
            return child.wait()
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt):  # Ctrl-C reached the child already
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    finally:
        kill_leftover_sshd(tmp)
        teardown(link)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"# uptime at end: {uptime()}")


# --- the delay proxy (child, client namespace) ----------------------------------------------


class DelayProxy:
    """TCP relay 127.0.0.1:port → target that delivers every chunk `delay` s late, both ways.

    Counts the TCP payload (the SSH stream) each way; `wait_idle` waits until every relayed
    connection has closed, so a command's bytes are complete.
    """

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.bytes = [0, 0]  # up (client → server), down
        self.active = 0

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        with self.lock:
            self.bytes = [0, 0]

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.active += 1
            left = [2]

            def done(c: socket.socket = client, s: socket.socket = server, left: list[int] = left) -> None:
                with self.lock:
                    left[0] -= 1
                    if left[0]:
                        return
                    self.active -= 1
                c.close()
                s.close()

            self._direction(client, server, 0, done)
            self._direction(server, client, 1, done)

    def _direction(self, src: socket.socket, dst: socket.socket, way: int, done: Callable[[], None]) -> None:
        q: queue.Queue = queue.Queue(maxsize=256)  # <= 16 MiB held; the SSH window bounds it anyway
        threading.Thread(target=self._read, args=(src, q, way), daemon=True).start()
        threading.Thread(target=self._write, args=(src, dst, q, done), daemon=True).start()

    def _read(self, src: socket.socket, q: queue.Queue, way: int) -> None:
        try:
            while data := src.recv(1 << 16):
                with self.lock:
                    self.bytes[way] += len(data)
                q.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        q.put(None)

    @staticmethod
    def _write(src: socket.socket, dst: socket.socket, q: queue.Queue, done: Callable[[], None]) -> None:
        item = q.get()
        try:
            while item is not None:
                wait = item[0] - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(item[1])
                item = q.get()
            dst.shutdown(socket.SHUT_WR)
        except OSError:  # a side went away: end both, let the reader finish
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            while item is not None:
                item = q.get()
        done()


# --- the server (child) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """The private sshd as the client sees it: through the proxy on 127.0.0.1."""

    port: int
    identity: Path
    fingerprint: str
    share: Path
    logs: Path | None  # one sftp-server DEBUG3 log per session, when counting

    def url(self) -> str:
        return f"sftp://{LOGIN}:{self.port}{self.share}"


def start_sshd(tmp: Path, ns: str, count: bool) -> tuple[subprocess.Popen, Path, str, Path | None]:
    """sshd on SRV_IP:22 in namespace `ns`; (process, client key, host fingerprint, log folder)."""
    d = tmp / "sshd"
    d.mkdir()
    host_public = generate_ed25519_keypair(d / "host_ed25519")
    (d / "authorized_keys").write_text(generate_ed25519_keypair(d / "client_ed25519") + "\n")
    binary = next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None) if count else None
    logs, subsystem = None, "internal-sftp"
    if binary:
        logs = tmp / "sftp-logs"
        logs.mkdir()
        subsystem = str(d / "sftp-server.sh")
        Path(subsystem).write_text(f'#!/bin/sh\nexec {binary} -e -l DEBUG3 2>>"{logs}/session.$$.log"\n')
        os.chmod(subsystem, 0o755)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    (d / "sshd_config").write_text("\n".join([
        f"ListenAddress {SRV_IP}", "Port 22", f"HostKey {d / 'host_ed25519'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}", "StrictModes no",
        "UsePAM no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", f"Subsystem sftp {subsystem}", "AllowTcpForwarding no",
        "X11Forwarding no", "MaxStartups 100:30:200", "MaxSessions 50", "LogLevel ERROR", ""]))
    with open(d / "sshd.log", "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, find_sshd() or "sshd", "-D", "-e", "-f",
                                 str(d / "sshd_config")], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
    (tmp / "sshd.popen.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((SRV_IP, 22), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sshd did not start: " + (d / "sshd.log").read_text()[-500:]) from None
            time.sleep(0.05)
    return proc, d / "client_ed25519", public_line_fingerprint(host_public), logs


# --- measuring (child) ----------------------------------------------------------------------


@dataclass
class Sample:
    secs: float
    up: int
    down: int
    requests: int | None
    waves: int | None = None  # sequential waits for the host's answers, counted in the CLI process


# The CLI with every SFTP request and wave counted (tests/sftp_waves.py), written at exit to the
# file named by OFFICE_LINK_WAVES: "requests waves".
COUNTED_CLI = f"""
import atexit, os, sys
sys.path.insert(0, {str(REPO)!r})
from tests.sftp_waves import counting
counter = counting()  # kept: a dropped context manager would undo the counting
waves = counter.__enter__()
def done():
    with open(os.environ["OFFICE_LINK_WAVES"], "w") as out:
        out.write(f"{{waves.requests}} {{waves.waves}}")
atexit.register(done)
sys.argv[0] = "cloudshare"
from cloudshare_p2p.cli import main
main()
"""


def count_requests(files: list[Path]) -> int:
    """SFTP requests in sftp-server DEBUG3 logs: distinct `request N:` ids per session, plus the
    users-groups-by-id requests, which that log names without an id."""
    total = 0
    for f in files:
        text = f.read_text(errors="replace")
        total += len(set(re.findall(r"request (\d+):", text))) + text.count("users-groups-by-id:")
    return total


class Bench:
    """Runs commands through the proxy and records one Sample per run under a label."""

    def __init__(self, proxy: DelayProxy, server: Server) -> None:
        self.proxy, self.server = proxy, server
        self.samples: dict[str, list[Sample]] = {}
        self.waves: int | None = None  # of the last cloudshare command

    def measure(self, label: str, fn: Callable[[], object]) -> None:
        logs = self.server.logs
        before = set(logs.iterdir()) if logs else set()
        self.proxy.wait_idle(10)
        self.proxy.reset()
        self.waves = None
        t0 = time.perf_counter()
        fn()
        secs = time.perf_counter() - t0
        self.proxy.wait_idle(10)
        requests = None
        if logs:
            new = sorted(set(logs.iterdir()) - before)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not all("session closed" in f.read_text(errors="replace")
                                                          for f in new):
                time.sleep(0.02)
            requests = count_requests(new) if new else None  # no session: not SFTP (rsync)
        up, down = self.proxy.bytes
        self.samples.setdefault(label, []).append(Sample(secs, up, down, requests, self.waves))

    def cloudshare(self, home: Path, name: str, *args: str) -> None:
        counted = home.with_name(f"{home.name}.waves")
        env = dict(os.environ, CLOUDSHARE_PASSWORD=PASSWORD, CLOUDSHARE_NAME=name, CLOUDSHARE_LANG="en",
                   OFFICE_LINK_WAVES=str(counted))
        proc = subprocess.run([sys.executable, "-c", COUNTED_CLI, "--home", str(home), *args], env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"cloudshare {' '.join(args)} exited {proc.returncode}: {proc.stderr[-800:]}")
        self.waves = int(counted.read_text().split()[1])

    def sftp(self, batch: Path) -> None:
        s = self.server
        subprocess.run(["sftp", "-q", *SSH_OPTS, "-b", str(batch), "-P", str(s.port), "-i", str(s.identity),
                        LOGIN], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       timeout=600)

    def rsync(self, src: str, dest: str) -> None:
        s = self.server
        rsh = " ".join(["ssh", *SSH_OPTS, "-p", str(s.port), "-i", str(s.identity)])
        subprocess.run(["rsync", "-z", "--no-whole-file", "--ignore-times", "-e", rsh, src, dest], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=600)


def median(samples: list[Sample], field: str) -> float | None:
    values = [getattr(s, field) for s in samples]
    return None if any(v is None for v in values) else statistics.median(values)


def cells(samples: list[Sample] | None) -> str:
    if not samples:
        return f"{'—':>2} {'—':>7} {'—':>9} {'—':>9} {'—':>6} {'—':>5}"
    reqs, up, down, waves = (median(samples, f) for f in ("requests", "up", "down", "waves"))
    return (f"{len(samples):2d} {median(samples, 'secs') or 0:7.2f} {(up or 0) / 1e3:9.1f} "
            f"{(down or 0) / 1e3:9.1f} {'—' if reqs is None else f'{reqs:.0f}':>6} "
            f"{'—' if waves is None else f'{waves:.0f}':>5}")


ROWS_OUT = [  # (our command, its peer)
    ("cloudshare share (first, whole ledger)", "sftp put whole ledger"),
    ("cloudshare join (first, whole ledger)", "sftp get whole ledger"),
    ("cloudshare close, nothing changed", "sftp -b one ls"),
    ("cloudshare open, nothing changed", "sftp -b one ls"),
    ("cloudshare close sending the day's edit", "rsync -e ssh -z push of the edit"),
    ("other side's open receiving it", "rsync -e ssh -z pull of the edit"),
]


def report(bench: Bench) -> None:
    head = f"{'n':>2} {'median s':>7} {'up kB':>9} {'down kB':>9} {'SFTP':>6} {'waves':>5}"
    print(f"\n{'command':40} {head} | {'peer':34} {head} | {'× peer':>6}")
    for ours, peer in ROWS_OUT:
        a, b = bench.samples.get(ours), bench.samples.get(peer)
        ratio = f"{median(a, 'secs') / median(b, 'secs'):5.1f}x" if a and b else "—"  # type: ignore[operator]
        print(f"{ours:40} {cells(a)} | {peer:34} {cells(b)} | {ratio:>6}")
    print("kB = 1000 B of TCP payload through the proxy (the SSH stream, key exchange included; no TCP/IP "
          "headers); up = client → server.\nSFTP = requests counted in sftp-server's DEBUG3 log "
          "(—: not SFTP, or not counted); waves = sequential waits for the host's answers, counted in the "
          "cloudshare process (each costs a round trip).")


class Office:
    """The firm and the client as two homes running the real `cloudshare`, and the peers' files."""

    def __init__(self, bench: Bench, work: Path, rows: int) -> None:
        self.bench, self.work, self.rows = bench, work, rows
        self.base, self.day = work / "base.db", work / "day.db"
        t0 = time.perf_counter()
        build_ledger(self.base, rows)
        shutil.copyfile(self.base, self.day)
        edit_ledger(self.day, rows, memos=True)
        print(f"ledger: {rows:,} rows, {self.base.stat().st_size:,} B; day's edit (1 % new rows + memo in "
              f"every 997th row) {self.day.stat().st_size:,} B; built in {time.perf_counter() - t0:.1f} s")
        srv = bench.server
        for who in ("firm", "client"):
            (work / who / "data").mkdir(parents=True)
            self.cs(who, "remote", "add", "office", srv.url(), "--identity", str(srv.identity),
                    "--accept-host-key", srv.fingerprint)
        self.batch = {"put": f"put {self.base} {srv.share}/sftp-put.db",
                      "get": f"get {srv.share}/sftp-put.db {work}/sftp-get.db", "ls": f"ls {srv.share}"}
        for name, line in self.batch.items():
            (work / f"{name}.batch").write_text(line + "\n")
        shutil.copyfile(self.day, srv.share / "rsync-day.db")

    def cs(self, who: str, *args: str) -> None:
        self.bench.cloudshare(self.work / who / "home", who, *args)

    def sftp(self, name: str) -> None:
        self.bench.sftp(self.work / f"{name}.batch")

    def first(self, i: int) -> None:
        """A fresh area: sftp put beside `share`, sftp get beside `join`."""
        m, name, area = self.bench.measure, f"books{i}", f"office-{i}"
        mine, theirs = (self.work / who / "data" / f"{name}.db" for who in ("firm", "client"))
        m("sftp put whole ledger", lambda: self.sftp("put"))
        shutil.copyfile(self.base, mine)
        m(ROWS_OUT[0][0], lambda: self.cs("firm", "share", name, str(mine), "--remote", "office",
                                          "--area", area, "--yes"))
        m("sftp get whole ledger", lambda: self.sftp("get"))
        m(ROWS_OUT[1][0], lambda: self.cs("client", "join", name, str(theirs), "--remote", "office", "--area",
                                          area))

    def unchanged(self) -> None:
        """The firm's `close` then `open` with nothing changed (books1 open before), each after one ls."""
        for label, cmd in ((ROWS_OUT[2][0], "close"), (ROWS_OUT[3][0], "open")):
            self.bench.measure("sftp -b one ls", lambda: self.sftp("ls"))
            self.bench.measure(label, partial(self.cs, "firm", cmd, "books1"))

    def edit(self, i: int) -> None:
        """The firm opens, makes the day's edit and closes; the client's open receives it; rsync
        pushes and pulls bench_delta's same edit (round 0 is that very edit; later rounds are the
        next days: 1 % of the grown ledger, every 997th memo again)."""
        m, srv, pull = self.bench.measure, self.bench.server, self.work / "rsync-pull.db"
        self.cs("firm", "open", "books1")
        edit_ledger(self.work / "firm" / "data" / "books1.db", self.rows, memos=True, seed=12 + i)
        self.rows += self.rows // 100
        m(ROWS_OUT[4][0], lambda: self.cs("firm", "close", "books1"))
        shutil.copyfile(self.base, srv.share / "rsync-ledger.db")
        m(ROWS_OUT[4][1], lambda: self.bench.rsync(str(self.day), f"{LOGIN}:{srv.share}/rsync-ledger.db"))
        m(ROWS_OUT[5][0], lambda: self.cs("client", "open", "books1"))
        shutil.copyfile(self.base, pull)
        m(ROWS_OUT[5][1], lambda: self.bench.rsync(f"{LOGIN}:{srv.share}/rsync-day.db", str(pull)))
        self.cs("client", "close", "books1")
        for a, b in ((self.work / who / "data" / "books1.db" for who in ("firm", "client")),
                     (self.day, srv.share / "rsync-ledger.db"), (self.day, pull)):
            if not filecmp.cmp(a, b, shallow=False):
                print(f"note: round {i + 1}: {b} differs from {a} (a figure above is wrong)")


def run_all(bench: Bench, work: Path, rounds: int, rows: int, budget: float) -> None:
    """Share/join, unchanged close/open and the day's edit, each interleaved with its peer."""
    t_start = time.monotonic()
    work.mkdir()
    office = Office(bench, work, rows)

    def each(step: Callable[[int], None]) -> None:
        for i in range(rounds):
            if i and time.monotonic() - t_start > budget:
                print(f"note: budget of {budget:.0f} s spent; no further rounds")
                return
            step(i)

    each(lambda i: office.first(i + 1))
    office.cs("firm", "open", "books1")
    each(lambda _i: office.unchanged())
    office.cs("firm", "close", "books1")
    each(office.edit)


def versions() -> str:
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    rsync = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return f"commit {commit or '?'}, {ssh}, {' '.join(rsync.split()[:3])}, kernel {os.uname().release}, " \
           f"cpus {os.cpu_count()}"


def inside(args: argparse.Namespace) -> int:
    """The measurements, run in the client namespace (started by `parent`)."""
    _signals()
    tmp = Path(args.inside)
    print(versions())
    proc, identity, fingerprint, logs = start_sshd(tmp, args.srv_ns, not args.no_count)
    proxy = DelayProxy((SRV_IP, 22), args.delay_ms / 1e3)
    proxy.start()
    try:
        share = tmp / "share"
        share.mkdir()
        server = Server(proxy.port, identity, fingerprint, share, logs)
        sub = "sftp-server -l DEBUG3 (requests counted)" if logs else "internal-sftp (requests not counted)"
        print(f"sshd {SRV_IP}:22 in {args.srv_ns}, sftp subsystem: {sub}"
              f"; proxy 127.0.0.1:{proxy.port} adds {args.delay_ms:g} ms each way; medians of {args.rounds}")
        bench = Bench(proxy, server)
        t0 = time.perf_counter()
        run_all(bench, tmp / "work", args.rounds, args.rows, args.budget)
        report(bench)
        print(f"measured in {time.perf_counter() - t0:.0f} s")
    finally:
        proxy.stop()
        stop_sshd(proc)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="samples per figure (median taken; default 3)")
    ap.add_argument("--rows", type=int, default=ROWS, help=f"journal rows of the ledger (default {ROWS:,})")
    ap.add_argument("--budget", type=float, default=420, help="start no new round after S s (default 420)")
    ap.add_argument("--rate", default="50mbit", help="tbf rate on both ends (default 50mbit)")
    ap.add_argument("--delay-ms", type=float, default=20, help="proxy delay each way (default 20)")
    ap.add_argument("--no-count", action="store_true", help="internal-sftp, no SFTP request counting")
    ap.add_argument("--inside", help=argparse.SUPPRESS)
    ap.add_argument("--srv-ns", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rounds = max(1, min(args.rounds, 20))
    try:
        return inside(args) if args.inside else parent(args)
    except KeyboardInterrupt:  # the `finally`s have cleaned up by now
        if not args.inside:
            print("interrupted; namespaces, sshd and the temporary folder removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
