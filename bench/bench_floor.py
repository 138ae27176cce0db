#!/usr/bin/env python3
"""Show that listing and probing stay flat after 10,000 opens once the floor compacts (issue 11).

In one process over `MemoryFiles` (no server, a fake clock): an area gets OPENS opens (claim,
fence, release; every COMMIT_EVERY-th also commits a small version), then these figures are
printed before and after a compaction (`prune` with the floor due):

- names in `lock/` and `log/` (what a listing returns);
- requests (MemoryFiles operations) and wall time of an `open` probe (acquire, read the
  newest version, release) by a computer without a cache (a join) and by one with a cache
  (the everyday case), and of `lock/`'s listing (what a client without a hint does);
- the compaction's own requests and time.

Then OPENS more opens run with the cheap prune a `close` makes once a day (every DAILY
opens here), and the same figures are printed: the folders stay bounded by the floor's
step (1,000 slots or generations). Prints figures only; it never asserts a timing.
Run from the repository root:  .venv/bin/python bench/bench_floor.py [--opens 10000] [--seconds 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `tests` and the package are imported from the checkout
    sys.path.insert(0, str(REPO))

os.environ.setdefault("CLOUDSHARE_WRITE_FORMAT", "2")

from cloudshare_p2p.area import Area, Grant, prune  # noqa: E402
from cloudshare_p2p.snapshot import LocalSnapshot  # noqa: E402
from tests.memory_area import DAY, Office, new_office  # noqa: E402

COMMIT_EVERY = 100  # one open in this many also commits a version
DAILY = 500  # opens between the cheap prunes of the steady-state phase ("once a day")


def opens(office: Office, area: Area, count: int, work: Path, deadline: float,
          daily: Callable[[Area, Grant], None] | None = None) -> int:
    """`count` opens by the firm and the client in turn (each one claim, fence and release);
    returns how many ran before the deadline."""
    for i in range(count):
        if time.monotonic() > deadline:
            return i
        who = office.firm if i % 2 else office.client
        grant = area.acquire(who, lease_seconds=300)
        assert isinstance(grant, Grant), grant
        if i % COMMIT_EVERY == 0:
            (work / "books.db").write_bytes(f"ledger after open {i}".encode() * 50)
            snap = LocalSnapshot.scan(work / "books.db", area.require_keys())
            area.commit(grant, who, snap, base=area.newest_number())
        if daily is not None and i % DAILY == DAILY - 1:
            daily(area, grant)
        assert area.release(grant, who)
        office.clock.advance(60)
    return count


def measured(office: Office, fn: Callable[[Area], Any], cache: Path | None = None) -> tuple[int, float]:
    """Requests and seconds of `fn` on a new connection (with `cache`: this computer's cache)."""
    session = office.handle()
    area = Area(session, office.name, clock=office.clock)
    area.use_data_key(office.data_key)
    if cache is not None:
        area.use_cache(cache, office.area().area_id)
    start, before = time.perf_counter(), session.operations
    fn(area)
    return session.operations - before, time.perf_counter() - start


def open_probe(area: Area) -> None:
    """What `open` asks of the host before any data moves: take the lock, find the newest, let go."""
    grant = area.acquire(area_party(area), lease_seconds=300)
    assert isinstance(grant, Grant)
    area.newest()
    assert area.release(grant, area_party(area))


_PARTY: dict[int, Any] = {}


def area_party(area: Area) -> Any:
    return _PARTY[0]


def figures(office: Office, label: str, cache: Path) -> None:
    lock = office.handle().listdir(office.path("lock"))
    log = office.handle().listdir(office.path("log"))
    join = measured(office, open_probe)
    measured(office, open_probe, cache)  # the cached computer catches up once
    daily = measured(office, open_probe, cache)
    listing = measured(office, lambda a: a.session.listdir(a.p("lock")))
    print(f"{label}")
    print(f"  names in lock/ {len(lock):>7,}   in log/ {len(log):>7,}")
    print(f"  open probe, no cache (join)  {join[0]:>7,} requests  {join[1] * 1000:9.1f} ms")
    print(f"  open probe, with a cache     {daily[0]:>7,} requests  {daily[1] * 1000:9.1f} ms")
    print(f"  listing of lock/ (no hint)   {listing[0]:>7,} operation {listing[1] * 1000:9.1f} ms "
          f"({len(lock):,} names; over SFTP about one readdir request per 100 names)")


def compact_all(office: Office, area: Area) -> tuple[int, float, int]:
    """Prune with the floor due at once, until nothing is left below it: requests, seconds, runs."""
    session = area.session
    start, before, runs = time.perf_counter(), session.operations, 0  # type: ignore[attr-defined]
    while True:
        runs += 1
        grant = area.acquire(office.firm, lease_seconds=300)
        assert isinstance(grant, Grant)
        area.renew(grant, office.firm)
        report = prune(area, grant, office.firm, compact_every=1)
        assert area.release(grant, office.firm)
        done = report.compacted if report else None
        if done is None or done.removed_slots + done.removed_generations < 20_000 or runs > 5:
            break
    return session.operations - before, time.perf_counter() - start, runs  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--opens", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=600.0, help="time budget of each phase of opens")
    args = p.parse_args(argv)
    office = new_office()
    _PARTY[0] = office.client
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp) / "work", Path(tmp) / "cache"
        work.mkdir()
        area = office.area()
        start = time.monotonic()
        done = opens(office, area, args.opens, work, start + args.seconds)
        office.folder.set_mtime(office.path("config"), int(office.clock()) - 2 * DAY)  # upgraded a day ago
        print(f"{done:,} opens ({done // COMMIT_EVERY + (1 if done % COMMIT_EVERY else 0)} versions) in "
              f"{time.monotonic() - start:.1f} s, in-process over MemoryFiles")
        figures(office, "before compaction", cache)
        requests, seconds, runs = compact_all(office, area)
        print(f"compaction: {runs} run(s), {requests:,} requests, {seconds * 1000:.0f} ms")
        figures(office, "after compaction", cache)

        most = [0, 0]  # the most names in lock/ and log/ seen just before a cheap prune

        def daily_prune(a: Area, grant: Grant) -> None:
            most[0] = max(most[0], len(a.session.listdir(a.p("lock"))))
            most[1] = max(most[1], len(a.session.listdir(a.p("log"))))
            prune(a, grant, office.firm if grant.session.startswith(office.firm.install) else office.client,
                  cheap=True)

        start = time.monotonic()
        more = opens(office, area, args.opens, work, start + args.seconds, daily_prune)
        print(f"{more:,} more opens with the cheap prune every {DAILY} opens, in "
              f"{time.monotonic() - start:.1f} s")
        print(f"  at most {most[0]:,} names in lock/ and {most[1]:,} in log/ before a cheap prune")
        figures(office, "steady state", cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
