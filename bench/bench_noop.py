#!/usr/bin/env python3
"""`open` and `close` with nothing changed, as a person runs them, against `sftp -b` with one `ls`.

Starts a private OpenSSH sshd on 127.0.0.1 (tests.fixtures_sshd), shares a data file of
`--size` MB with the real `cloudshare` command, then times (medians of `--runs`, interleaved
with the peer): `close` with nothing changed (the quick stamp spares re-reading the data),
`open` with nothing changed, and OpenSSH's own `sftp -b` with one `ls` through the same
server. Prints figures; asserts nothing. Everything lives in a temporary folder.

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
