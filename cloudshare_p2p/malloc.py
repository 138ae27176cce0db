"""The C allocator's settings for large transfers: glibc's, at the start of a command.

A commit or a receive passes thousands of buffers of about 1 MiB (chunks, frames, packs)
between threads. With glibc's defaults the process keeps what they freed: the mmap threshold
rises to the largest block freed (so later ones come from the heap, where freed space stays
in the process), and each thread may get its own arena. For a 1 GB file that kept 30-60 MB
more than in use (bench/bench_format2.py --memory-mb 1024). `tune` fixes the threshold at
1 MiB (buffers that size and up are mapped, and unmapped when freed) and allows 2 arenas.

Elsewhere (Windows, macOS, musl) it does nothing; a MALLOC_* variable set by the user wins.
"""

from __future__ import annotations

import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20
ARENA_MAX = 2


def tune() -> bool:
    """Set the threshold and the arena limit (glibc only); True if both were set."""
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
                              ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX)):
        if env not in os.environ:
            done = bool(mallopt(param, value)) and done
    return done
