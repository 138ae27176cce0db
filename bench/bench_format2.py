#!/usr/bin/env python3
"""Format 2 against issue 11's targets: each figure with the peer's figure beside it, one run.

A private OpenSSH sshd on 127.0.0.1 (tests.fixtures_sshd); two homes (firm, client) running
the real `cloudshare` command through a byte-counting TCP relay, so "bytes" are bytes on the
wire, SSH handshake and encryption included. Peers in the same run: `rsync -z` (and without
-z) through a local stand-in remote shell (bench_delta.rsync: the rsync protocol's own bytes,
no SSH), the changed 4 KiB pages compressed as one zstd -3 stream, `zstd -3` of the whole
file, OpenSSH `sftp` (put/get, `-b` with one `ls`) through the same relay or server.

Figures (asserts nothing; prints every one):
* day edit (1 % new rows + every 997th memo corrected) on a 23 MB ledger, and on a 230 MB one
  with `--big`; a pure 1 % append: bytes sent by `close`, received by the other side's `open`;
* first transfer (`share` up, `join` down) vs `zstd -3`;
* `open` + `close` with nothing changed: bytes and wall time vs `sftp -b` with one `ls`;
* 256 MB of random data up (`share`) / down (`join`) vs `sftp put` / `get` (MB/s, medians of
  3 interleaved rounds), through the relay and straight to sshd;
* `--big`: peak RSS of `share`, `join`, `close` (after a change) and `open` of a 1 GB file;
  `--memory-mb N` prints only these, for N MB (BENCH_RSS_PROFILE=folder: where each peaks,
  bench/rss_profile.py).

Run from the repository root:  .venv/bin/python bench/bench_format2.py [--big] [--rows 320000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench_delta import build_ledger, changed_pages, edit_ledger, rsync, zstd_cli  # noqa: E402

from tests.fixtures_sshd import find_sshd, start_sshd, stop_sshd  # noqa: E402

CLOUDSHARE = str(Path(sys.executable).parent / "cloudshare")
PASSWORD = "bench-share-password"


class CountingRelay:
    """127.0.0.1:port -> the server, counting bytes up (client to server) and down."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.up = self.down = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for s in (client, server):  # a relay must not hold back small segments (Nagle): a
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # wire would not
            for a, b, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down


# Linux records the forking process's RSS high-water mark in a child's ru_maxrss at exec, so a
# small launcher forks the command and reports its peak (this script itself grows large), and
# the command's wall time from fork to exit (the launcher's own start is not the command's).
LAUNCH = """import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_pid, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {time.perf_counter() - t0}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(home: Path, *args: str) -> tuple[float, int]:
    """One `cloudshare` command: (wall seconds, peak RSS bytes); it must succeed."""
    env = dict(os.environ, CLOUDSHARE_PASSWORD=PASSWORD, CLOUDSHARE_NAME=home.name)
    env.setdefault("CLOUDSHARE_WRITE_FORMAT", "2")  # the default anyway; one set outside still wins
    peak = home.parent / f".rss-{home.name}"
    command = [sys.executable, "-c", LAUNCH, str(peak), CLOUDSHARE, "--home", str(home), *args]
    if profile := os.environ.get("BENCH_RSS_PROFILE"):  # where the peak is: bench/rss_profile.py
        report = Path(profile) / f"{home.name}-{args[0]}-{time.time():.0f}.txt"
        command[4:5] = [sys.executable, str(REPO / "bench" / "rss_profile.py"), str(report)]
    proc = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"cloudshare {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
    rss, seconds = peak.read_text().split()
    return float(seconds), int(rss) * 1024


def measured(relay: CountingRelay, home: Path, *args: str) -> tuple[int, int, float, int]:
    """(bytes up, bytes down, seconds, peak RSS) of one command through the relay."""
    up0, down0 = relay.snapshot()
    seconds, rss = run(home, *args)
    time.sleep(0.05)
    up1, down1 = relay.snapshot()
    return up1 - up0, down1 - down0, seconds, rss


def sftp(server, port: int, batch: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sftp", "-q", "-b", str(batch), "-P", str(port), "-i", str(server.identity),
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", f"{server.user}@{server.host}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def sftp_put_get(server, port: int, data: Path, folder: Path, name: str) -> tuple[float, float]:
    """Seconds of OpenSSH `sftp` putting `data` as a new file `name` on the host, then getting
    it into a new file in `folder`; both copies removed after. A new file each time, as a share
    and a join write one: writing over the last copy reuses page-cache pages just freed, which
    on this VM made a 256 MB get 0.70 s instead of 0.95."""
    put, get = folder / "put.batch", folder / "get.batch"
    put.write_text(f"put {data} {server.base}/{name}\n")
    get.write_text(f"get {server.base}/{name} {folder / name}\n")
    try:
        return sftp(server, port, put), sftp(server, port, get)
    finally:
        (folder / name).unlink(missing_ok=True)
        (Path(server.root) / name).unlink(missing_ok=True)


def mb(n: float) -> str:
    return f"{n / 1e6:8.3f} MB"


def line(what: str, ours: str, peer: str, verdict: str = "") -> None:
    print(f"  {what:<52} {ours:>16}   {peer:<40} {verdict}")


class Pair:
    """Firm and client homes sharing one area through the relay."""

    def __init__(self, tmp: Path, server, relay: CountingRelay, area: str) -> None:
        self.firm, self.client = tmp / "firm", tmp / "client"
        self.relay, self.area = relay, area
        url = server.url(relay.port)
        for home in (self.firm, self.client):
            run(home, "remote", "add", "host", url, "--identity", str(server.identity),
                "--accept-host-key", server.host_key_fingerprint)

    def share(self, path: Path) -> tuple[int, int, float, int]:
        return measured(self.relay, self.firm, "share", "books", str(path), "--remote", "host",
                        "--area", self.area, "--yes")

    def join(self, path: Path) -> tuple[int, int, float, int]:
        return measured(self.relay, self.client, "join", "books", str(path), "--remote", "host",
                        "--area", self.area)


def delta(title: str, pair: Pair, ledger: Path, copy: Path, work: Path, edit) -> None:
    """The firm edits and closes; the client opens: bytes vs rsync -z and changed pages."""
    old = work / "old.db"
    shutil.copyfile(ledger, old)
    run(pair.firm, "open", "books")
    edit(ledger)
    up, _down, t_close, _ = measured(pair.relay, pair.firm, "close", "books")
    _up, down, t_open, _ = measured(pair.relay, pair.client, "open", "books")
    assert copy.read_bytes() == ledger.read_bytes(), "the client's copy differs"
    run(pair.client, "close", "books")
    z = rsync(old, ledger, work, True)
    plain = rsync(old, ledger, work, False)
    pages, raw, zpages, _per = changed_pages(old, ledger)
    rz = z["Total bytes sent"] + z["Total bytes received"] if isinstance(z, dict) else None
    rp = plain["Total bytes sent"] + plain["Total bytes received"] if isinstance(plain, dict) else None
    size = ledger.stat().st_size
    print(f"{title}: {mb(size)} ledger, {pages} pages changed ({mb(raw)} raw, {mb(zpages)} zstd -3)")
    for what, ours, secs in (("close: bytes sent", up, t_close), ("open: bytes received", down, t_open)):
        peer = f"rsync -z {mb(rz)} ({ours / rz:.2f}x)" if rz else str(z)
        limit = ours <= 1.5 * rz if rz else False
        line(what + f" ({secs:.2f} s)", mb(ours), peer,
             "ok <=1.5x rsync -z" if limit else "OVER 1.5x rsync -z")
        line("", "", f"pages+10% {mb(zpages * 1.1)} ({ours / max(1, zpages):.2f}x)",
             "ok" if ours <= zpages * 1.1 else "over")
    line("  (peer) rsync without -z", "", mb(rp) if rp else str(plain))
    old.unlink()


def first_and_noop(tmp: Path, server, relay: CountingRelay, rows: int,
                   area: str = "bench") -> tuple[Pair, Path, Path]:
    work = tmp / "work"
    work.mkdir()
    ledger = tmp / "firm-data" / "books.db"
    ledger.parent.mkdir()
    t0 = time.perf_counter()
    build_ledger(ledger, rows)
    print(f"ledger of {rows} rows built in {time.perf_counter() - t0:.1f} s: {mb(ledger.stat().st_size)}")
    pair = Pair(tmp, server, relay, area)
    up, _d, t_share, _ = pair.share(ledger)
    copy = tmp / "client-data" / "books.db"
    copy.parent.mkdir()
    _u, down, t_join, _ = pair.join(copy)
    z = zstd_cli(ledger, work)
    print("first transfer (share / join) vs zstd -3 of the file:")
    for what, ours, secs in (("share: bytes sent", up, t_share), ("join: bytes received", down, t_join)):
        verdict = ("ok <=1.1x" if ours <= 1.1 * z else "OVER 1.1x") if isinstance(z, int) else ""
        peer = f"zstd -3 {mb(z)} ({ours / z:.2f}x)" if isinstance(z, int) else str(z)
        line(f"{what} ({secs:.2f} s)", mb(ours), peer, verdict)
    batch = work / "ls.batch"
    batch.write_text(f"ls {server.base}\n")
    run(pair.firm, "open", "books")
    ours, peers, closes, opens, lss = [], [], [], [], []
    for _round in range(3):  # the first close of the day also runs the daily prune and sweep
        cu, cd, t_close, _ = measured(relay, pair.firm, "close", "books")
        ou, od, t_open, _ = measured(relay, pair.firm, "open", "books")
        u0, d0 = relay.snapshot()
        lss.append(sftp(server, relay.port, batch))
        time.sleep(0.05)
        u1, d1 = relay.snapshot()
        ours.append(ou + od + cu + cd)
        peers.append(u1 - u0 + d1 - d0)
        closes.append(t_close)
        opens.append(t_open)
    t_close0, t_open0, t_ls = (statistics.median(v) for v in (closes, opens, lss))
    print("nothing changed (close, then open; 3 rounds), bytes on the wire incl. SSH handshake:")
    line(f"close + open, most bytes ({t_close0:.2f} s + {t_open0:.2f} s)", mb(max(ours)),
         f"sftp -b ls {mb(max(peers))} ({t_ls:.2f} s)",
         "ok <=50 kB" if max(ours) <= 50_000 else "OVER 50 kB")
    line("  wall time of each vs sftp -b ls (medians)", f"{max(t_open0, t_close0) / t_ls:.2f}x",
         "target <=1.5x")
    print(f"      seconds: close {' '.join(f'{t:.2f}' for t in closes)}; open "
          f"{' '.join(f'{t:.2f}' for t in opens)}; sftp -b ls {' '.join(f'{t:.2f}' for t in lss)}")
    run(pair.firm, "close", "books")
    return pair, ledger, copy


class Direct:
    """No relay: straight to the server's port (nothing counted)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def snapshot(self) -> tuple[int, int]:
        return 0, 0


def throughput(tmp: Path, server, megabytes: int, rounds: int = 3) -> None:
    """Through the counting relay (the same relay code for both: fair; a Python process on
    the same cores, it slows sftp more than us), then straight to sshd (no third process).
    Like a share and a join, sftp writes a new file each round (`sftp_put_get`)."""
    data = tmp / "random.bin"
    with open(data, "wb") as fh:
        for _ in range(megabytes):
            fh.write(os.urandom(1 << 20))
    print(f"{megabytes} MB of random data (MB/s, medians of {rounds} interleaved rounds):")
    ways = (("through the relay", CountingRelay(server.port)), ("straight to sshd", Direct(server.port)))
    for how, way in ways:
        times: dict[str, list[float]] = {"share": [], "join": [], "put": [], "get": []}
        peaks: list[tuple[int, int]] = []
        for r in range(rounds):  # a new area each round; the host's copies removed after it
            home = tmp / f"tp-{way.port}-{r}"
            pair = Pair(home, server, way, f"random-{way.port}-{r}")
            *_bytes, t_up, rss_up = pair.share(data)
            *_bytes, t_down, rss_down = pair.join(home / "random-copy.bin")
            times["share"].append(t_up)
            times["join"].append(t_down)
            t_put, t_get = sftp_put_get(server, way.port, data, home, f"random-sftp-{way.port}-{r}.bin")
            times["put"].append(t_put)
            times["get"].append(t_get)
            peaks.append((rss_up, rss_down))
            shutil.rmtree(home)
            shutil.rmtree(Path(server.root) / f"random-{way.port}-{r}")
        mid = {k: statistics.median(v) for k, v in times.items()}
        for what, ours, peer, target in ((f"up: share vs sftp put, {how}", "share", "put", 0.8),
                                         (f"down: join vs sftp get, {how}", "join", "get", 0.5)):
            ratio = mid[peer] / mid[ours]
            line(what, f"{megabytes / mid[ours]:7.1f} MB/s",
                 f"sftp {megabytes / mid[peer]:7.1f} MB/s ({ratio:.2f}x)",
                 f"ok >={target}x" if ratio >= target else f"UNDER {target}x")
            print(f"      seconds: ours {' '.join(f'{t:.2f}' for t in times[ours])}"
                  f"; sftp {' '.join(f'{t:.2f}' for t in times[peer])}")
        line("  peak RSS share / join", f"{max(p[0] for p in peaks) / 2**20:.0f} / "
             f"{max(p[1] for p in peaks) / 2**20:.0f} MiB", "")


def memory_1gb(tmp: Path, server, megabytes: int = 1024) -> None:
    data = tmp / "big" / "ledger.bin"
    data.parent.mkdir()
    with open(data, "wb") as fh:
        for _ in range(megabytes):
            fh.write(os.urandom(1 << 20))
    relay = CountingRelay(server.port)
    pair = Pair(tmp / "mem", server, relay, "gig")
    _u, _d, t_share, rss_share = pair.share(data)
    _u, _d, t_join, rss_join = pair.join(tmp / "mem" / "copy.bin")
    run(pair.firm, "open", "books")
    with open(data, "r+b") as fh:
        fh.seek(megabytes << 19)
        fh.write(os.urandom(1 << 20))
    _u, _d, t_close, rss_close = measured(relay, pair.firm, "close", "books")
    _u, _d, t_open, rss_open = measured(relay, pair.client, "open", "books")
    print(f"{megabytes} MB file, peak RSS (target for 1 GB <=150 MB):")
    for what, secs, rss in (("share (first close)", t_share, rss_share), ("join", t_join, rss_join),
                            ("close after a 1 MiB change", t_close, rss_close),
                            ("open receiving it", t_open, rss_open)):
        line(f"{what} ({secs:.1f} s)", f"{rss / 2**20:.0f} MiB", "", "ok" if rss <= 150e6 else "OVER")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also the 230 MB ledger and the 1 GB file")
    parser.add_argument("--rows", type=int, default=320_000, help="journal rows of the ledger")
    parser.add_argument("--random-mb", type=int, default=256)
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the random-data up/down figures (--random-mb MB)")
    parser.add_argument("--memory-mb", type=int, default=0,
                        help="only the peak RSS figures, for a random file of this many MB")
    args = parser.parse_args(argv)
    if not find_sshd():
        print("sshd not found: install openssh-server", file=sys.stderr)
        return 2
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        proc, server = start_sshd(tmp / "sshd")
        try:
            if args.memory_mb:
                memory_1gb(tmp, server, args.memory_mb)
                return 0
            if args.throughput_only:
                throughput(tmp, server, args.random_mb)
                return 0
            relay = CountingRelay(server.port)
            pair, ledger, copy = first_and_noop(tmp, server, relay, args.rows)
            delta("day edit", pair, ledger, copy, tmp / "work",
                  lambda p: edit_ledger(p, args.rows, memos=True))
            rows = args.rows + args.rows // 100
            delta("pure 1 % append", pair, ledger, copy, tmp / "work",
                  lambda p: edit_ledger(p, rows, memos=False, seed=13))
            if args.big:
                big = tmp / "big-ledger"
                big.mkdir()
                relay_big = CountingRelay(server.port)
                bp, bl, bc = first_and_noop(big, server, relay_big, args.rows * 10, "bench-big")
                delta("day edit, big ledger", bp, bl, bc, big / "work",
                      lambda p: edit_ledger(p, args.rows * 10, memos=True))
            throughput(tmp, server, args.random_mb)
            if args.big:
                memory_1gb(tmp, server)
        finally:
            stop_sshd(proc)
    print(f"load: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
