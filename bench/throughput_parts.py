#!/usr/bin/env python3
"""Where the time of a 256 MB `share` and `join` goes (issue 11: "say where the time goes").

A private OpenSSH sshd on 127.0.0.1 (tests.fixtures_sshd) and one file of random bytes.
Prints, as medians of `--runs`:

1. each stage of the work alone, in this process, on one thread, over the same bytes:
   reading the file, FastCDC cutting it (the chunker `chunker_for` picks for its size),
   keyed ids (HMAC-SHA256 per chunk), SHA-256 of the file, sealing 1 MiB frames (zstd, then
   AES-256-GCM), SHA-256 of the sealed packs (their names), opening the frames again;
2. the bare transport: paramiko as cloudshare sets it up (aes128-gcm, 255 KiB requests, our
   pipelined writes and reads), the file up and down with no other work; OpenSSH `sftp`
   put and get of it;
3. the fixed cost of a command: `share` and `join` of a 1 MB file against `sftp` put/get;
4. the commands themselves on the file: wall time, and the user and system CPU of the
   `cloudshare` process (its threads and its packing process together); a share also packed
   in one process (CLOUDSHARE_PACKING_PROCESS=0), interleaved with the others.

Stages of (1) that release the GIL run beside each other in a command (two cores here);
the sum of (1) and the transport's CPU is what a command cannot go below on one core.
Asserts nothing.

Run from the repository root:  .venv/bin/python bench/throughput_parts.py [--mb 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import bench_format2 as b2  # noqa: E402
import paramiko  # noqa: E402

from cloudshare_p2p import chunking, crypto, malloc  # noqa: E402
from cloudshare_p2p.area import packer, packs  # noqa: E402
from cloudshare_p2p.snapshot import scan  # noqa: E402
from cloudshare_p2p.transport import transfer  # noqa: E402
from cloudshare_p2p.transport.network import PREFERRED_CIPHER  # noqa: E402
from cloudshare_p2p.transport.paramiko_sftp import SFTPClient  # noqa: E402
from tests.fixtures_sshd import find_sshd, start_sshd, stop_sshd  # noqa: E402


def median_of(runs: int, work: Callable[[], object]) -> float:
    """Median seconds of `runs` calls of `work`."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stages(path: Path, runs: int) -> list[tuple[str, float]]:
    """(stage, seconds) of each stage of the work over the file, alone."""
    keys = crypto.keys_from_data_key(os.urandom(32))
    data = path.read_bytes()
    cutter = scan.chunker_for(path, len(data))
    with open(path, "rb") as fh:
        cuts = [(offset, len(chunk)) for offset, chunk in chunking.chunks(fh, cutter)]
    view = memoryview(data)
    blocks = [bytes(view[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20)]
    sealed = [crypto.seal(keys, packs.KIND_FRAME, packs.FRAME_AAD_ID, block) for block in blocks]

    def read() -> None:
        with open(path, "rb", buffering=0) as fh:
            while fh.read(1 << 20):
                pass

    def cut() -> None:
        with open(path, "rb") as fh:
            for _chunk in chunking.chunks(fh, cutter):
                pass

    def ids() -> None:
        for offset, length in cuts:
            crypto.chunk_digest(keys, view[offset : offset + length])

    def sha(parts: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            digest = hashlib.sha256()
            for part in parts:
                digest.update(part)
        return run

    def seal() -> None:
        for block in blocks:
            crypto.seal(keys, packs.KIND_FRAME, packs.FRAME_AAD_ID, block)

    def open_frames() -> None:
        for blob in sealed:
            crypto.open_sealed(keys, packs.KIND_FRAME, packs.FRAME_AAD_ID, blob, max_plain=packs.MAX_CHUNK)

    return [("read the file (1 MiB reads)", median_of(runs, read)),
            (f"FastCDC {cutter.name} ({len(cuts)} chunks; includes reading)", median_of(runs, cut)),
            ("keyed ids, HMAC-SHA256 per chunk", median_of(runs, ids)),
            ("SHA-256 of the file", median_of(runs, sha(blocks))),
            ("seal 1 MiB frames (zstd, AES-256-GCM)", median_of(runs, seal)),
            ("SHA-256 of the sealed packs", median_of(runs, sha(sealed))),
            ("open the frames (AES-256-GCM, zstd)", median_of(runs, open_frames))]


Sample = TypeVar("Sample", tuple[float, float], tuple[float, float, float])
WRITE = paramiko.sftp.SFTP_FLAG_WRITE | paramiko.sftp.SFTP_FLAG_CREATE | paramiko.sftp.SFTP_FLAG_TRUNC


def _ignore(_n: int) -> None:
    pass


class _Check:
    def check(self) -> None:
        pass


def bare_transport(server, path: Path, runs: int) -> tuple[float, float, float, float]:
    """(up s, up CPU s, down s, down CPU s) of paramiko alone moving the file."""
    key = paramiko.Ed25519Key.from_private_key_file(str(server.identity))
    sock = socket.create_connection((server.host, server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    options.ciphers = (PREFERRED_CIPHER, *(c for c in options.ciphers if c != PREFERRED_CIPHER))
    transport.start_client()
    transport.auth_publickey(server.user, key)
    sftp = SFTPClient.from_transport(transport)
    remote = f"{server.base}/bare.bin"
    size = path.stat().st_size
    step = 4 * transfer.REQUEST_SIZE
    ranges = [(offset, min(step, size - offset)) for offset in range(0, size, step)]
    ups, downs = [], []
    try:
        for _ in range(runs):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            handle = sftp._request(paramiko.sftp.CMD_OPEN, remote, WRITE, paramiko.SFTPAttributes())[1]
            with open(path, "rb") as fh:
                transfer.write_stream(sftp, handle.get_binary(), fh, _Check(), None, _ignore, close=True)
            ups.append((time.perf_counter() - t0, _cpu(r0)))
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            handle = sftp._request(paramiko.sftp.CMD_OPEN, remote, paramiko.sftp.SFTP_FLAG_READ,
                                   paramiko.SFTPAttributes())[1].get_binary()
            for _blob in transfer.read_ranges(sftp, handle, ranges, _Check(), _ignore):
                pass
            sftp._request(paramiko.sftp.CMD_CLOSE, handle)
            downs.append((time.perf_counter() - t0, _cpu(r0)))
    finally:
        transport.close()
    up, down = _mid(ups), _mid(downs)
    return up[0], up[1], down[0], down[1]


def sftp_new_files(server, tmp: Path, path: Path, runs: int) -> tuple[float, float]:
    """Median seconds of OpenSSH `sftp` put and get of `path`, each run into a new file."""
    runs_ = [b2.sftp_put_get(server, server.port, path, tmp, f"sftp-{n}-{path.name}") for n in range(runs)]
    return statistics.median(p for p, _g in runs_), statistics.median(g for _p, g in runs_)


def _cpu(before: resource.struct_rusage, who: int = resource.RUSAGE_SELF) -> float:
    after = resource.getrusage(who)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


class Commands:
    """The real `cloudshare` share and join (straight to sshd), with each one's CPU."""

    def __init__(self, tmp: Path, server) -> None:
        self.tmp, self.server, self.round = tmp, server, 0
        self.last: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.env: dict[str, str] = {}

    def run(self, home: Path, *args: str) -> tuple[float, int]:
        env = dict(os.environ, CLOUDSHARE_PASSWORD=b2.PASSWORD, CLOUDSHARE_NAME=home.name, **self.env)
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run([b2.CLOUDSHARE, "--home", str(home), *args], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seconds = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"cloudshare {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
        self.last = (seconds, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime)
        return seconds, 0

    def share_join(self, path: Path) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        self.round += 1
        home = self.tmp / f"cmd-{self.round}"
        area = f"parts-{self.round}"
        pair = b2.Pair(home, self.server, b2.Direct(self.server.port), area)
        pair.share(path)
        share = self.last
        pair.join(home / "copy.bin")
        join = self.last
        shutil.rmtree(home)
        shutil.rmtree(Path(self.server.root) / area)
        return share, join


def _mid(samples: list[Sample]) -> Sample:
    """The sample whose first figure (seconds) is nearest their median."""
    middle = statistics.median(sample[0] for sample in samples)
    return min(samples, key=lambda sample: abs(sample[0] - middle))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if not find_sshd():
        print("sshd not found: install openssh-server", file=sys.stderr)
        return 2
    malloc.tune()  # as in a command
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        proc, server = start_sshd(tmp / "sshd")
        try:
            data, small = tmp / "random.bin", tmp / "small.bin"
            with open(data, "wb") as fh:
                for _ in range(args.mb):
                    fh.write(os.urandom(1 << 20))
            small.write_bytes(os.urandom(1 << 20))
            print(f"1. each stage alone, one thread, {args.mb} MB (seconds):")
            total = 0.0
            for what, seconds in stages(data, args.runs):
                total += seconds if not what.startswith("read") else 0.0
                print(f"  {what:<64} {seconds:6.3f}")
            print(f"  {'sum (reading counted once, in FastCDC)':<64} {total:6.3f}")
            up, up_cpu, down, down_cpu = bare_transport(server, data, args.runs)
            t_put, t_get = sftp_new_files(server, tmp, data, args.runs)
            print("2. the bare transport, the file up / down (seconds; CPU of this process):")
            print(f"  {'paramiko, our pipelined writes / reads':<64} {up:6.3f} / {down:6.3f}"
                  f"   (CPU {up_cpu:.2f} / {down_cpu:.2f})")
            print(f"  {'OpenSSH sftp put / get':<64} {t_put:6.3f} / {t_get:6.3f}")
            commands = Commands(tmp, server)
            b2.run = commands.run
            small_runs = [commands.share_join(small) for _ in range(args.runs)]
            t_sput, t_sget = sftp_new_files(server, tmp, small, args.runs)
            share1, join1 = _mid([s for s, _j in small_runs]), _mid([j for _s, j in small_runs])
            print("3. the fixed cost of a command, a 1 MB file (seconds):")
            print(f"  {'cloudshare share / join':<64} {share1[0]:6.3f} / {join1[0]:6.3f}")
            print(f"  {'sftp put / get':<64} {t_sput:6.3f} / {t_sget:6.3f}")
            runs, alone = [], []
            for _ in range(args.runs):  # interleaved: the share packed by a second process, or not
                commands.env = {}
                runs.append(commands.share_join(data))
                commands.env = {packer.ENV: "0"}
                alone.append(commands.share_join(data)[0])
            commands.env = {}
            share, join = _mid([s for s, _j in runs]), _mid([j for _s, j in runs])
            print(f"4. the commands, {args.mb} MB (seconds: wall, user CPU, system CPU; a share's CPU")
            print("   includes its packing process's):")
            for what, (wall, user, system), peer in (("cloudshare share", share, t_put),
                                                     (f"cloudshare share in one process ({packer.ENV}=0)",
                                                      _mid(alone), t_put),
                                                     ("cloudshare join", join, t_get)):
                print(f"  {what:<64} {wall:6.3f}  user {user:.2f}  sys {system:.2f}"
                      f"   ({peer / wall:.2f}x sftp)")
        finally:
            stop_sshd(proc)
    print(f"load: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
