#!/usr/bin/env python3
"""Where a `cloudshare` command's memory peaks: runs the command in this process while a
thread samples VmRSS (every 5 ms) and keeps the main thread's stack at each new high, then
writes the peak, its stack and a coarse timeline (rss, innermost project frame) to a file.

Usage: python bench/rss_profile.py REPORT cloudshare-args...   (bench_format2.py uses it when
BENCH_RSS_PROFILE names a folder: one report per command there). Prints nothing itself.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path


def _rss() -> int:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _where(frame) -> str:
    """The innermost frame inside the project (else the innermost one)."""
    stack = traceback.extract_stack(frame)
    for fs in reversed(stack):
        if "cloudshare_p2p" in fs.filename:
            return f"{Path(fs.filename).name}:{fs.lineno} {fs.name}"
    return f"{stack[-1].name}" if stack else "?"


def main() -> int:
    report, args = Path(sys.argv[1]), sys.argv[2:]
    main_id = threading.get_ident()
    peak = [0, ""]
    timeline: list[tuple[float, int, str]] = []
    done = threading.Event()
    t0 = time.perf_counter()
    traced = os.environ.get("BENCH_TRACEMALLOC") == "1"  # python allocations at the peak, by line
    top: list[str] = []
    if traced:
        import tracemalloc

        tracemalloc.start()

    def sample() -> None:
        last = 0.0
        while not done.wait(0.005):
            rss = _rss()
            frame = sys._current_frames().get(main_id)
            if rss > peak[0] and frame is not None:
                if traced and rss > peak[0] + (4 << 20):
                    stats = tracemalloc.take_snapshot().statistics("lineno")
                    top[:] = [str(s) for s in stats[:25]]
                peak[0], peak[1] = rss, "".join(traceback.format_stack(frame))
            now = time.perf_counter() - t0
            if now - last >= 0.25 and frame is not None:
                timeline.append((now, rss, _where(frame)))
                last = now

    threading.Thread(target=sample, daemon=True).start()
    from cloudshare_p2p.cli import main as cli

    sys.argv = ["cloudshare", *args]
    code = 0
    try:
        cli()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        done.set()
        lines = [f"command: {' '.join(args)}", f"peak VmRSS {peak[0] / 2**20:.1f} MiB at:", peak[1],
                 "python allocations near the peak (BENCH_TRACEMALLOC=1):", *top,
                 "timeline (s, MiB, where):"]
        lines += [f"{t:7.2f} {r / 2**20:7.1f}  {w}" for t, r, w in timeline]
        report.write_text("\n".join(lines) + "\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
