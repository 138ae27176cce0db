"""A party in its own process with its own SSH connection, for the race tests."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from cloudshare_p2p.area import Area, Grant
from tests.parties import party, session_for
from tests.serverinfo import ShareServer

BARRIER_TIMEOUT = 60.0


def backdate(server: ShareServer, area: str, gen: int, seconds: int = 3600) -> None:
    """Make a lock generation look old on the server's disk (a holder that vanished)."""
    path = server.root / area / "lock" / f"{gen:020d}"
    then = time.time() - seconds
    os.utime(path, (then, then))


def race(server: ShareServer, area_name: str, idx: int, rounds: int, mode: str, barrier, results) -> None:
    """Each round: everyone acquires at once; report who won. Modes: 'free', 'expired'."""
    ports = server.all_ports()
    with tempfile.TemporaryDirectory() as home:
        session = session_for(server, Path(home), ports[idx % len(ports)])
        area = Area(session, area_name)
        me = party(f"p{idx}")
        vanished = party("vanished")
        try:
            for r in range(rounds):
                if mode == "expired" and idx == 0:
                    stale = area.acquire(vanished, lease_seconds=60)
                    assert isinstance(stale, Grant), stale
                    backdate(server, area_name, stale.lease.generation)
                barrier.wait(BARRIER_TIMEOUT)
                got = area.acquire(me, lease_seconds=60)
                won = isinstance(got, Grant)
                results.put((r, idx, won, got.lease.generation if won else got.status.generation))
                barrier.wait(BARRIER_TIMEOUT)
                if won:
                    area.release(got, me)
                barrier.wait(BARRIER_TIMEOUT)
        except Exception as exc:  # report instead of hanging the others
            results.put((-1, idx, False, repr(exc)))
            barrier.abort()
        finally:
            session.close()
