#!/usr/bin/env python3
"""`open` and `close` with nothing changed, as a person runs them, against `sftp -b` with one `ls`.

Starts a private OpenSSH sshd on 127.0.0.1 (tests.fixtures_sshd), shares a data file of
`--size` MB with the real `cloudshare` command, then times (medians of `--runs`, interleaved
with the peer): `close` with nothing changed (the quick stamp spares re-reading the data),
`open` with nothing changed, and OpenSSH's own `sftp -b` with one `ls` through the same
server; then runs each command once more counting its SFTP requests by type (paramiko's
client patched in that process only). Prints figures; asserts nothing. Everything lives in a
temporary folder.

Run from the repository root:  .venv/bin/python bench/bench_noop.py [--size 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fixtures_sshd import find_sshd, start_sshd, stop_sshd  # noqa: E402

CLOUDSHARE = str(Path(sys.executable).parent / "cloudshare")
PASSWORD = "bench-share-password"


def run(home: Path, *args: str) -> float:
    """One `cloudshare` command; its wall time in seconds (it must succeed)."""
    env = dict(os.environ, CLOUDSHARE_PASSWORD=PASSWORD, CLOUDSHARE_NAME="bench")
    t0 = time.perf_counter()
    subprocess.run([CLOUDSHARE, "--home", str(home), *args], env=env, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


# Runs the command line with paramiko's request sender counting, then prints the counts.
COUNTING = """
import atexit, collections, sys
import paramiko.sftp as sftp, paramiko.sftp_client as client
counts, send = collections.Counter(), client.SFTPClient._async_request
def counting(self, fileobj, t, *args):
    counts[t] += 1
    return send(self, fileobj, t, *args)
client.SFTPClient._async_request = counting
names = {v: k[4:] for k, v in vars(sftp).items() if k.startswith("CMD_") and isinstance(v, int)}
by_type = lambda: " ".join(f"{names.get(k, k)}={n}" for k, n in counts.most_common())
atexit.register(lambda: print("REQUESTS", sum(counts.values()), by_type(), file=sys.stderr))
sys.argv[0] = "cloudshare"
from cloudshare_p2p.cli import main
main()
"""


def count_requests(home: Path, *args: str) -> str:
    """One `cloudshare` command with its SFTP requests counted: "N TYPE=n ..."."""
    env = dict(os.environ, CLOUDSHARE_PASSWORD=PASSWORD, CLOUDSHARE_NAME="bench")
    done = subprocess.run([sys.executable, "-c", COUNTING, "--home", str(home), *args], env=env,
                          check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    lines = [line for line in done.stderr.splitlines() if line.startswith("REQUESTS ")]
    return lines[-1].removeprefix("REQUESTS ") if lines else "?"


def sftp_ls(server, batch: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sftp", "-q", "-b", str(batch), "-P", str(server.port), "-i", str(server.identity),
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", f"{server.user}@{server.host}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def write_random(path: Path, megabytes: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(megabytes):
            fh.write(os.urandom(1 << 20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="data file size in MB (default 1024)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not find_sshd():
        print("sshd not found: install openssh-server", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        proc, server = start_sshd(tmp / "sshd")
        try:
            home, data = tmp / "home", tmp / "books.db"
            write_random(data, args.size)
            url = server.url()
            run(home, "remote", "add", "firm", url, "--identity", str(server.identity),
                "--accept-host-key", server.host_key_fingerprint)
            t_share = run(home, "share", "books", str(data), "--remote", "firm", "--area", "bench", "--yes")
            batch = tmp / "ls.batch"
            batch.write_text(f"ls {server.base}\n")
            closes, opens, peers = [], [], []
            run(home, "open", "books")
            for _ in range(max(1, args.runs)):
                closes.append(run(home, "close", "books"))
                peers.append(sftp_ls(server, batch))
                opens.append(run(home, "open", "books"))
            requests = {command: count_requests(home, command, "books") for command in ("close", "open")}
            run(home, "close", "books")
        finally:
            stop_sshd(proc)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    c, o, p = statistics.median(closes), statistics.median(opens), statistics.median(peers)
    print(f"# bench_noop: {args.size} MB file, {args.runs} runs, OpenSSH on 127.0.0.1, load {load}")
    print(f"first share (upload)             {t_share:7.2f} s")
    print(f"close, nothing changed (median)  {c:7.2f} s   = {c / p:4.1f}x sftp -b ls")
    print(f"open, nothing changed (median)   {o:7.2f} s   = {o / p:4.1f}x sftp -b ls")
    print(f"sftp -b with one ls (median)     {p:7.2f} s")
    for command, counted in requests.items():
        print(f"SFTP requests, {command:5} nothing changed: {counted}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
