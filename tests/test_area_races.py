"""Many parties, each in its own process with its own SSH connection, race for the lock."""

from __future__ import annotations

import multiprocessing
import queue
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

from tests.parties import create_area, new_area_name, party, session_for
from tests.race_worker import race

pytestmark = [pytest.mark.server, pytest.mark.slow]
ROUNDS = 50


@pytest.fixture(params=["openssh", "embedded", "embedded_x4"])
def any_server(request):
    """Both servers, and four embedded-host processes serving one folder."""
    return request.getfixturevalue(f"{request.param}_server")


def run_race(server, processes: int, mode: str) -> dict[int, list]:
    name = new_area_name("race")
    with tempfile.TemporaryDirectory() as home, session_for(server, Path(home)) as s:
        create_area(s, name, party("firm"))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=race, args=(server, name, i, ROUNDS, mode, barrier, results))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    rounds: dict[int, list] = defaultdict(list)
    try:
        for _ in range(processes * ROUNDS):
            r, idx, won, gen = results.get(timeout=120)
            assert r >= 0, f"worker {idx} failed: {gen}"
            rounds[r].append((idx, won, gen))
    except queue.Empty:
        pytest.fail("the race workers stopped answering")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return rounds


def assert_one_winner_every_round(rounds: dict[int, list], processes: int) -> None:
    assert sorted(rounds) == list(range(ROUNDS))
    for r, outcomes in rounds.items():
        assert len(outcomes) == processes
        winners = [(idx, gen) for idx, won, gen in outcomes if won]
        assert len(winners) == 1, f"round {r}: winners {winners}"
        won_gen = winners[0][1]
        # every loser saw a generation at least as new as the winner's claim, or older-but-live
        assert all(gen <= won_gen for _, won, gen in outcomes if not won), f"round {r}: {outcomes}"


def test_twenty_processes_race_for_a_free_lock(any_server):
    assert_one_winner_every_round(run_race(any_server, 20, "free"), 20)


def test_ten_processes_race_to_take_over_an_expired_lock(any_server):
    assert_one_winner_every_round(run_race(any_server, 10, "expired"), 10)
