"""The C allocator's settings for large transfers: glibc's, at the start of a command.

A commit or a receive passes thousands of buffers of about 1 MiB (chunks, frames, packs)
between threads. With glibc's defaults the process keeps what they freed: the mmap threshold
rises to the largest block freed (so later ones come from the heap, where freed space stays
in the process), and each thread may get its own arena. For a 1 GB file that kept 30-60 MB
more than in use (bench/bench_format2.py --memory-mb 1024). `tune` fixes the mmap threshold
at 8 MiB and the trim threshold at 32 MiB (a freed buffer below 8 MiB is reused by the next
one; free space above 32 MiB at the heap's top goes back) and allows 2 arenas.

Not lower: at a 1 MiB threshold every 1 MiB buffer (a frame, a piece read or written, a
decompressed chunk run) was a fresh mapping, zeroed page by page by the kernel: 256 MB of
random data up and down took 325,000-390,000 page faults and a second of system time per
command, a third of its wall time (throughput in bench/bench_format2.py --throughput-only:
1.62 s instead of 2.28 s for `share`, 1.74 s instead of 2.27 s for `join`). Peak RSS for a
1 GB file stayed under 150 MB (share 134, join 118, close 120, open 123 MiB).

Elsewhere (Windows, macOS, musl) it does nothing; a MALLOC_* variable set by the user wins.
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 32 << 20
ARENA_MAX = 2


def tune() -> bool:
    """Set the thresholds and the arena limit (glibc only); True if all were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc itself, not a libc with a stub mallopt
        mallopt = libc.mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = True
    for env, param, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                              ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                              ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX)):
        if env not in os.environ:
            done = bool(mallopt(param, value)) and done
    return done
