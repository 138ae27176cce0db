#!/usr/bin/env python3
"""Measure the share-area protocol against a real SFTP server on 127.0.0.1.

Prints figures (median and p95 over N repetitions); it never asserts a timing. By default it
starts a private OpenSSH sshd of its own (tests.fixtures_sshd); with `--server embedded` it
starts the embedded host (`python -m cloudshare_p2p.hostcli serve`, tests.fixtures_host).
Everything lives in one temporary folder that is removed at the end, and the server is
stopped in every case (try/finally, SIGTERM turned into a normal exit).

Run from the repository root:  .venv/bin/python bench/bench_area.py [--server embedded] [--json]
See bench/README.md for what each figure means. Over ~400 lines because a benchmark is one
self-contained script a person runs and reads top to bottom (server set-up, each measurement,
the table), not a library.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `tests` and the package are imported from the checkout
    sys.path.insert(0, str(REPO))

from cloudshare_p2p import host as hostlib  # noqa: E402
from cloudshare_p2p.area import Area, Grant  # noqa: E402
from cloudshare_p2p.snapshot import CHUNK_SIZE, ChunkCache, LocalSnapshot  # noqa: E402
from cloudshare_p2p.transport import SftpConnection  # noqa: E402
from tests.parties import create_area, new_area_name, open_area, party, session_for  # noqa: E402
from tests.serverinfo import ShareServer  # noqa: E402

LEASE_SECONDS = 300
SMALL_CHANGE = 64 << 10  # the "small change" data set: 64 KiB, rewritten each repetition
TINY_DATASET = 1 << 10  # the open-to-close data set: 1 KiB
PAGE = 4096  # page-like file: 4 KiB pages, first half random, second half zeros
EDIT_BYTES = 100
MB = 1_000_000  # throughput is reported in MB/s = 10^6 bytes per second


# --- statistics and results ---------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): for n <= 20, p95 is the largest value."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass
class Figure:
    key: str
    label: str
    unit: str  # "s" (shown in ms or s), "B" (bytes), "MB/s", "count"
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def tail(self) -> float:
        """The slow tail: p95 of times and sizes, p5 of throughputs (higher is better)."""
        return percentile(self.samples, 5 if self.unit == "MB/s" else 95)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "label": self.label, "unit": self.unit,
                               "n": len(self.samples), "samples": self.samples}
        if self.samples:
            out.update(median=median(self.samples), p95=percentile(self.samples, 95),
                       min=min(self.samples), max=max(self.samples))
            if self.unit == "MB/s":
                out["p5"] = percentile(self.samples, 5)
        if self.note:
            out["note"] = self.note
        return out


class Results:
    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.sections: list[tuple[str, list[str]]] = []
        self.notes: list[str] = []

    def section(self, title: str) -> None:
        self.sections.append((title, []))

    def add(self, key: str, label: str, unit: str, value: float) -> None:
        if key not in self.figures:
            self.figures[key] = Figure(key, label, unit)
            self.sections[-1][1].append(key)
        self.figures[key].samples.append(float(value))

    def note(self, key: str, text: str) -> None:
        if key in self.figures:
            self.figures[key].note = text


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.2f} s"
    if unit == "B":
        if value < 10 << 10:
            return f"{value:.0f} B"
        if value < 1 << 20:
            return f"{value / 1024:.1f} KiB"
        return f"{value / (1 << 20):.2f} MiB"
    if unit == "MB/s":
        return f"{value:.1f} MB/s"
    return f"{value:g}"


# --- bounded loops -------------------------------------------------------------------------


class Budget:
    """Every measured loop runs at most `count` times and stops starting new rounds after
    `seconds` (at least one round always runs)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def rounds(self, count: int, what: str, results: Results):
        start = time.monotonic()
        for i in range(count):
            if i > 0 and time.monotonic() - start > self.seconds:
                results.notes.append(f"{what}: stopped after {i} of {count} rounds "
                                     f"(time budget {self.seconds:g} s)")
                return
            yield i


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


# --- servers -------------------------------------------------------------------------------


@dataclass
class RunningServer:
    server: ShareServer
    stop: Callable[[], dict[str, Any]]
    description: str


def start_openssh(tmp: Path) -> RunningServer:
    from tests.fixtures_sshd import find_sshd, start_sshd, stop_sshd

    if find_sshd() is None:
        raise SystemExit("OpenSSH sshd not installed (apt-get install openssh-server); "
                         "or use --server embedded")
    proc, server = start_sshd(tmp / "sshd")

    def stop() -> dict[str, Any]:
        stop_sshd(proc)
        return {"returncode": proc.returncode}

    return RunningServer(server, stop, f"OpenSSH sshd (internal-sftp), pid {proc.pid}")


def start_embedded(tmp: Path) -> RunningServer:
    from tests.fixtures_host import (
        EMBEDDED_ID,
        EMBEDDED_PASSWORD,
        make_host_dir,
        start_host_process,
        stop_host_process,
    )

    base = tmp / "embedded"
    base.mkdir()
    host_dir, identity, fp = make_host_dir(base)
    hp = start_host_process(host_dir)
    server = ShareServer(
        kind="embedded", host="127.0.0.1", port=hp.port, user=EMBEDDED_ID, base="/",
        root=host_dir / hostlib.DATA / EMBEDDED_ID, identity=identity,
        host_key_fingerprint=fp, password=EMBEDDED_PASSWORD,
    )

    def stop() -> dict[str, Any]:
        rc, err = stop_host_process(hp)
        out: dict[str, Any] = {"returncode": rc}
        if rc != 0 or "Traceback" in err or "Task was destroyed" in err:
            out["stderr_tail"] = err[-1500:]
        return out

    return RunningServer(server, stop, f"embedded asyncssh host, pid {hp.proc.pid}")


# --- helpers -------------------------------------------------------------------------------


def write_random(path: Path, size: int) -> None:
    path.write_bytes(os.urandom(size))


def write_pages(path: Path, size: int) -> None:
    """Page-like, compressible: every 4 KiB page is 2 KiB random bytes then 2 KiB zeros."""
    half = PAGE // 2
    zeros = bytes(half)
    with open(path, "wb") as fh:
        block = 1 << 20  # write in 1 MiB pieces
        for start in range(0, size, block):
            n = min(block, size - start)
            rnd = os.urandom(n // 2)
            piece = bytearray()
            for off in range(0, n // 2, half):
                piece += rnd[off:off + half]
                piece += zeros
            fh.write(piece[:n])


def edit_middle(path: Path, nbytes: int = EDIT_BYTES) -> None:
    """Overwrite `nbytes` in place starting at the middle of the file (new random bytes).

    The edit starts at size/2, which for the big files is a 1 MiB chunk boundary, so it lies
    inside one chunk (an edit straddling a boundary would change two chunks)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(max(0, min(size // 2, size - nbytes)))
        fh.write(os.urandom(nbytes))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


class RequestCounter:
    """Counts SFTP requests sent on one session (wraps this SFTP client instance only)."""

    def __init__(self, session: SftpConnection) -> None:
        self.count = 0
        sftp = session._sftp
        original = sftp._async_request

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        sftp._async_request = counting


def acquire(area: Area, who) -> Grant:
    grant = area.acquire(who, lease_seconds=LEASE_SECONDS)
    if not isinstance(grant, Grant):
        raise RuntimeError(f"benchmark lock unexpectedly held: {grant.describe()}")
    return grant


def remove_area_files(server: ShareServer, name: str) -> None:
    """Free the disk between big rounds (straight on the server's folder, not timed)."""
    shutil.rmtree(server.root / name, ignore_errors=True)


# --- the measurements --------------------------------------------------------------------


def bench_connect(server: ShareServer, home: Path, n: int, budget: Budget, res: Results) -> dict:
    res.section("1. connect")
    warm = session_for(server, home)  # pins the host key, warms imports; not counted
    info = {"cipher": warm._transport.local_cipher, "server_version": warm._transport.remote_version}
    warm.close()
    for _ in budget.rounds(n, "connect", res):
        dt, session = timed(session_for, server, home)
        res.add("connect", "connect: TCP + SSH handshake + key auth + SFTP", "s", dt)
        dt, _ = timed(session.close)
        res.add("disconnect", "disconnect (close SFTP + transport)", "s", dt)
    return info


def bench_lock(session: SftpConnection, reqs: RequestCounter, n: int, budget: Budget, res: Results) -> None:
    res.section("2. lock")
    firm = party("firm")
    dt, area = timed(create_area, session, new_area_name("bench-lock"), firm)
    res.add("area_create", "create area (mkdirs, scrypt n=2^14, config)", "s", dt)
    # warm-up round, not counted
    grant = acquire(area, firm)
    area.renew(grant, firm)
    area.release(grant, firm)
    counts: dict[str, list[int]] = {"lock_info": [], "acquire": [], "renew": [], "release": []}
    for _ in budget.rounds(n, "lock", res):
        r0 = reqs.count
        dt, info = timed(area.lock_info)
        res.add("lock_info", "lock status (what the others see)", "s", dt)
        r1 = reqs.count
        dt, grant = timed(acquire, area, firm)
        res.add("acquire", "acquire (free lock, incl. fence log entry)", "s", dt)
        r2 = reqs.count
        dt, _ = timed(area.renew, grant, firm)
        res.add("renew", "renew (held lock)", "s", dt)
        r3 = reqs.count
        dt, released = timed(area.release, grant, firm)
        if not released:
            raise RuntimeError("release returned False: the lock was not ours")
        res.add("release", "release", "s", dt)
        for key, value in zip(counts, (r1 - r0, r2 - r1, r3 - r2, reqs.count - r3), strict=True):
            counts[key].append(value)
    for key, values in counts.items():
        for value in values:
            res.add(f"{key}_requests", f"SFTP requests: {key.replace('_', ' ')}", "count", value)


def bench_small_commit(session: SftpConnection, reqs: RequestCounter, work: Path, n: int, budget: Budget,
                       res: Results) -> None:
    res.section("3a. small commit (64 KiB data set rewritten each round)")
    firm = party("firm")
    area = create_area(session, new_area_name("bench-small"), firm)
    data = work / "small.db"
    write_random(data, SMALL_CHANGE)
    grant = acquire(area, firm)  # warm-up version, not counted
    area.commit(grant, firm, LocalSnapshot.scan(data, area.keys), base=area.newest_number())
    area.release(grant, firm)
    for _ in budget.rounds(n, "small commit", res):
        write_random(data, SMALL_CHANGE)
        before_up, before_sent = area.stats.bytes_uploaded, session.bytes_sent
        t_acq, grant = timed(acquire, area, firm)
        t_scan, snap = timed(LocalSnapshot.scan, data, area.keys)
        r0 = reqs.count
        t_commit, _ = timed(area.commit, grant, firm, snap)
        commit_requests = reqs.count - r0
        t_rel, _ = timed(area.release, grant, firm)
        res.add("small_acquire", "acquire", "s", t_acq)
        res.add("small_scan", "scan 64 KiB (local)", "s", t_scan)
        res.add("small_commit", "commit 64 KiB change", "s", t_commit)
        res.add("small_release", "release", "s", t_rel)
        res.add("small_total", "total acquire + scan + commit + release", "s",
                t_acq + t_scan + t_commit + t_rel)
        res.add("small_bytes", "chunk+manifest bytes uploaded per commit", "B",
                area.stats.bytes_uploaded - before_up)
        res.add("small_sent", "all bytes written over SFTP per round", "B",
                session.bytes_sent - before_sent)
        res.add("small_requests", "SFTP requests: commit", "count", commit_requests)
    counted = res.figures["small_requests"].samples
    res.notes.append(f"small commit: Area.commit took {counted[0]:g} SFTP requests in the first counted "
                     f"round and {counted[-1]:g} in the last; the log then held {len(area.log())} entries")

    res.section("3b. open-to-close of a 1 KiB data set")
    area = create_area(session, new_area_name("bench-tiny"), firm)
    source, local = work / "tiny-source.db", work / "tiny-local.db"
    write_random(source, TINY_DATASET)
    grant = acquire(area, firm)  # first version (setup), not counted
    area.commit(grant, firm, LocalSnapshot.scan(source, area.keys), base=area.newest_number())
    area.release(grant, firm)

    steps: dict[str, int] = {}

    def open_() -> Grant:
        r0 = reqs.count
        g = acquire(area, firm)
        r1 = reqs.count
        newest = area.newest()
        r2 = reqs.count
        if newest is None:
            raise RuntimeError("no version to receive")
        area.download(newest, local)
        steps.update(acquire=r1 - r0, newest=r2 - r1, download=reqs.count - r2)
        return g

    def close(g: Grant) -> None:
        r0 = reqs.count
        area.commit(g, firm, LocalSnapshot.scan(local, area.keys), base=area.newest_number())
        r1 = reqs.count
        area.release(g, firm)
        steps.update(commit=r1 - r0, release=reqs.count - r1)

    g = open_()  # warm-up round, not counted
    edit_middle(local, 10)
    close(g)
    newest_requests: list[int] = []
    for _ in budget.rounds(n, "open-to-close", res):
        t_open, g = timed(open_)
        edit_middle(local, 10)
        t_close, _ = timed(close, g)
        res.add("tiny_open", "open: acquire + newest + download", "s", t_open)
        res.add("tiny_close", "close: scan + commit + release", "s", t_close)
        res.add("tiny_total", "open-to-close total (edit excluded)", "s", t_open + t_close)
        newest_requests.append(steps["newest"])
        for step in ("acquire", "newest", "download", "commit", "release"):
            res.add(f"tiny_req_{step}", f"SFTP requests: {step}", "count", steps[step])
    res.notes.append(
        f"open-to-close: Area.newest() took {newest_requests[0]} SFTP requests in the first counted "
        f"round and {newest_requests[-1]} in the last; the log then held {len(area.log())} entries"
    )


def bench_big(server: ShareServer, firm_s: SftpConnection, client_s: SftpConnection, work: Path, kind: str,
              size: int, n: int, budget: Budget, res: Results) -> None:
    label = {"random": "random bytes (incompressible)", "pages": "4 KiB pages, half zeros"}[kind]
    res.section(f"4. {size >> 20} MiB file: {label}")
    k = f"big_{kind}"
    firm = party("firm")
    data = work / f"big-{kind}.db"
    t_gen, _ = timed(write_random if kind == "random" else write_pages, data, size)
    res.notes.append(f"{kind}: generated {size >> 20} MiB test file in {t_gen:.2f} s (not counted)")
    for i in budget.rounds(n, f"{size >> 20} MiB {kind}", res):
        name = new_area_name(f"bench-{kind}")
        target_dir = work / f"client-{kind}-{i}"
        target_dir.mkdir()
        target = target_dir / "books.db"
        cache = ChunkCache(work / f"cache-{kind}-{i}")
        try:
            area = create_area(firm_s, name, firm)
            grant = acquire(area, firm)

            def commit_once(tag: str, text: str, g: Grant = grant, a: Area = area) -> None:
                up, chunks = a.stats.bytes_uploaded, a.stats.chunks_uploaded
                t_scan, snap = timed(LocalSnapshot.scan, data, a.keys)
                t_commit, _ = timed(a.commit, g, firm, snap)
                res.add(f"{k}_{tag}_scan", f"{text}: scan (local hashing)", "s", t_scan)
                res.add(f"{k}_{tag}_time", f"{text}: commit time (upload + log)", "s", t_commit)
                res.add(f"{k}_{tag}_bytes", f"{text}: bytes uploaded", "B", a.stats.bytes_uploaded - up)
                res.add(f"{k}_{tag}_chunks", f"{text}: chunks uploaded", "count",
                        a.stats.chunks_uploaded - chunks)

            commit_once("c1", "first commit")
            commit_once("c2", "second commit, unchanged")
            edit_middle(data)
            commit_once("c3", f"commit after {EDIT_BYTES} B in-place edit")
            area.release(grant, firm)

            # the other party receives the newest version into an empty target (cold cache)
            c_area = open_area(client_s, name)
            newest = c_area.newest()
            recv0, down0 = client_s.bytes_received, c_area.stats.bytes_downloaded
            t_down, _ = timed(c_area.download, newest, target, ChunkCache(cache.root, c_area.keys))
            res.add(f"{k}_dl_time", "download newest, empty target + empty cache", "s", t_down)
            res.add(f"{k}_dl_rate", "  throughput (file bytes / time)", "MB/s", size / t_down / MB)
            res.add(f"{k}_dl_bytes", "  chunk bytes downloaded", "B", c_area.stats.bytes_downloaded - down0)
            res.add(f"{k}_dl_sftp", "  all bytes read over SFTP", "B", client_s.bytes_received - recv0)
            if sha256_file(target) != sha256_file(data):
                raise RuntimeError("downloaded file differs from the committed file")

            # the firm edits 100 bytes again and commits (setup, not counted) ...
            grant = acquire(area, firm)
            edit_middle(data)
            area.commit(grant, firm, LocalSnapshot.scan(data, area.keys), base=area.newest_number())
            area.release(grant, firm)
            # ... and the client receives it with its warm chunk cache
            newest = c_area.newest()
            recv0, down0 = client_s.bytes_received, c_area.stats.bytes_downloaded
            cached0 = c_area.stats.chunks_cached
            t_warm, _ = timed(c_area.download, newest, target, ChunkCache(cache.root, c_area.keys))
            res.add(f"{k}_warm_time", "download after small edit, warm chunk cache", "s", t_warm)
            res.add(f"{k}_warm_bytes", "  chunk bytes downloaded", "B", c_area.stats.bytes_downloaded - down0)
            res.add(f"{k}_warm_sftp", "  all bytes read over SFTP", "B", client_s.bytes_received - recv0)
            res.add(f"{k}_warm_cached", "  chunks taken from the cache", "count",
                    c_area.stats.chunks_cached - cached0)
            if sha256_file(target) != sha256_file(data):
                raise RuntimeError("downloaded file differs from the committed file")
        finally:
            remove_area_files(server, name)
            shutil.rmtree(target_dir, ignore_errors=True)
            shutil.rmtree(cache.root, ignore_errors=True)
    data.unlink(missing_ok=True)


# --- report ----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("paramiko", "cryptography", "zstandard", "asyncssh", "cloudshare-p2p"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "?"
    return out


def git_state() -> str:
    """Commit of the checkout and which tracked files differ from it (figures follow the tree)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=5).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    files = [line[3:] for line in changed if line.strip()]
    return f"{head or '?'}" + (f" + uncommitted changes to {', '.join(files)}" if files else " (clean)")


def openssh_version() -> str:
    from tests.fixtures_sshd import find_sshd

    sshd = find_sshd()
    if sshd is None:
        return "not installed"
    try:
        out = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    line = (out.stderr or out.stdout).strip().splitlines()
    return line[0] if line else "?"


def print_table(meta: dict[str, Any], res: Results) -> None:
    print("cloudshare-p2p share-area benchmark")
    print(f"command: {meta['command']}")
    print(f"cwd:     {meta['cwd']}")
    print(f"tree:    {meta['git']}")
    v = meta["versions"]
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"machine: {meta['platform']}, {meta['cpus']} CPUs; load average (1/5/15 min) at start "
          f"{'/'.join(f'{x:.2f}' for x in meta['loadavg_start'])}")
    s = meta["server"]
    print(f"server:  {s['kind']} on {s['address']}: {s['description']}; {s.get('server_version', '')}")
    print(f"ssh:     cipher {s.get('cipher')} (client to server)")
    print(f"repeat:  small ops {meta['repeat']}, big files {meta['big_repeat']} x {meta['big_mib']} MiB "
          f"({', '.join(meta['kinds']) or 'none'}); p95 = nearest rank; "
          f"loop budget {meta['budget']:.0f} s")
    width = max([len(f.label) for f in res.figures.values()] + [20])
    print()
    print(f"{'figure':<{width}}  {'n':>3}  {'median':>11}  {'p95':>11} ")
    for title, keys in res.sections:
        print(f"-- {title}")
        for key in keys:
            f = res.figures[key]
            tail = fmt(f.tail(), f.unit) + ("*" if f.unit == "MB/s" else " ")
            med = fmt(median(f.samples), f.unit)
            print(f"{f.label:<{width}}  {len(f.samples):>3}  {med:>11}  {tail:>12}".rstrip())
    print()
    print("* throughput rows show p5 (the slow tail) instead of p95")
    if res.notes:
        for note in res.notes:
            print(f"note: {note}")
    print(f"\nwall time: {meta['wall_seconds']:.1f} s; load average at end "
          f"{'/'.join(f'{x:.2f}' for x in meta['loadavg_end'])}; server stop: {meta['server_stop']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", choices=("openssh", "embedded"), default="openssh",
                   help="private OpenSSH sshd (default) or the embedded host")
    p.add_argument("--repeat", type=int, default=20, help="repetitions of small operations (default 20)")
    p.add_argument("--big-repeat", type=int, default=3, help="repetitions of the big-file rounds (default 3)")
    p.add_argument("--big-mib", type=int, default=64, help="size of the big file in MiB (default 64)")
    p.add_argument("--kinds", default="random,pages",
                   help="big-file kinds, comma-separated: random,pages (empty: skip section 4)")
    p.add_argument("--budget", type=float, default=45.0,
                   help="seconds after which a measured loop starts no new round (default 45)")
    p.add_argument("--tmpdir", type=Path, default=None, help="parent of the temporary folder")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    args = p.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    bad = set(args.kinds) - {"random", "pages"}
    if bad:
        p.error(f"unknown kinds: {', '.join(sorted(bad))}")
    if args.repeat < 1 or args.big_repeat < 1 or args.big_mib < 1:
        p.error("--repeat, --big-repeat and --big-mib must be at least 1")
    return args


def _sigterm(_signo, _frame) -> None:
    raise SystemExit(143)  # run the finally blocks: stop the server, remove the temp folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    res = Results()
    budget = Budget(args.budget)
    meta: dict[str, Any] = {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "cwd": os.getcwd(),
        "git": git_state(),
        "versions": {**versions(), "openssh": openssh_version()},
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "repeat": args.repeat, "big_repeat": args.big_repeat, "big_mib": args.big_mib,
        "kinds": args.kinds, "budget": args.budget,
    }
    tmp = Path(tempfile.mkdtemp(prefix="cloudshare-bench-", dir=args.tmpdir))
    running: RunningServer | None = None
    try:
        running = start_openssh(tmp) if args.server == "openssh" else start_embedded(tmp)
        server = running.server
        meta["server"] = {"kind": server.kind, "address": f"{server.host}:{server.port}",
                          "description": running.description}
        firm_home, client_home, work = tmp / "firm", tmp / "client", tmp / "work"
        for d in (firm_home, client_home, work):
            d.mkdir()
        meta["server"].update(bench_connect(server, firm_home, args.repeat, budget, res))
        with session_for(server, firm_home) as firm_s, session_for(server, client_home) as client_s:
            reqs = RequestCounter(firm_s)
            bench_lock(firm_s, reqs, args.repeat, budget, res)
            bench_small_commit(firm_s, reqs, work, args.repeat, budget, res)
            for kind in args.kinds:
                bench_big(server, firm_s, client_s, work, kind, args.big_mib << 20,
                          args.big_repeat, budget, res)
    finally:
        if running is not None:
            with contextlib.suppress(Exception):
                meta["server_stop"] = running.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["wall_seconds"] = time.monotonic() - started
    meta["loadavg_end"] = os.getloadavg()
    meta["chunk_size"] = CHUNK_SIZE
    if args.json:
        doc = {**meta, "figures": [res.figures[k].as_json() for _, keys in res.sections for k in keys],
               "sections": [{"title": t, "keys": keys} for t, keys in res.sections], "notes": res.notes}
        print(json.dumps(doc, indent=1))
    else:
        print_table(meta, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
