"""The floor's pure core (statemachine/floor.py): untrusted records, the next floor, the void rules."""

from __future__ import annotations

import json

import pytest

from statemachine.floor import (
    MAX_CARRIED,
    NO_FLOOR,
    Carried,
    Floor,
    LoggedVersion,
    below,
    compaction_allowed,
    compaction_due,
    fenced_by_floor,
    floor_record,
    generation_void,
    next_floor,
    parse_floor,
    slot_void,
)

MANIFEST = "ab" * 32


def commit_entry(seq: int, gen: int = 1) -> dict:
    return {"v": 1, "seq": seq, "kind": "commit", "gen": gen, "manifest": MANIFEST, "base": None}


def entry_ok(entry) -> bool:
    return entry.get("kind") == "commit" and type(entry.get("seq")) is int


def a_floor() -> Floor:
    return Floor(2, seq=40, lock=90, fence=7, versions=12,
                 carried=(Carried(3, 1000, commit_entry(9)), Carried(12, 2000, commit_entry(38))),
                 policies=((5, "c2VhbGVk"),))


def test_a_floor_round_trips_through_its_record():
    floor = a_floor()
    raw = json.dumps(floor_record(floor, gen=90, session="s", writer={"name": "firm"})).encode()
    assert parse_floor(raw, 2, entry_ok) == floor
    assert parse_floor(raw, 2, entry_ok).carried[1].entry["seq"] == 38


def test_versions_not_carried_count_as_pruned():
    assert a_floor().pruned == frozenset(set(range(1, 13)) - {3, 12})
    assert NO_FLOOR.pruned == frozenset()


@pytest.mark.parametrize("change", [
    {"v": 2}, {"v": True}, {"kind": "fence"}, {"floor": 3}, {"seq": 0}, {"seq": "40"}, {"lock": -1},
    {"fence": 1.0}, {"versions": 2 ** 60}, {"carried": {}}, {"policies": [[5]]},
    {"carried": [{"version": 13, "mtime": 1, "entry": commit_entry(9)}]},  # above `versions`
    {"carried": [{"version": 3, "mtime": 1, "entry": commit_entry(40)}]},  # entry at the floor's seq
    {"carried": [{"version": 3, "mtime": 1, "entry": commit_entry(9)},
                 {"version": 3, "mtime": 1, "entry": commit_entry(10)}]},  # numbers not rising
    {"carried": [{"version": 3, "mtime": -1, "entry": commit_entry(9)}]},
    {"carried": [{"version": 3, "mtime": 1, "entry": {"kind": "fence", "seq": 9}}]},
    {"carried": [{"version": 3, "mtime": 1, "entry": commit_entry(9)}] * (MAX_CARRIED + 1)},
    {"policies": [[5, "x"], [5, "y"]]}, {"policies": [[41, "x"]]}, {"policies": [[5, "x" * 2049]]},
])
def test_a_malformed_floor_is_refused(change):
    record = dict(floor_record(a_floor()), **change)
    assert parse_floor(json.dumps(record).encode(), 2, entry_ok) is None


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff", b"[" * 100_000])
def test_an_unparsable_floor_is_refused(raw):
    assert parse_floor(raw, 1, entry_ok) is None


def test_creations_below_the_floor_are_void_and_a_fence_below_it_is_fenced():
    floor = a_floor()
    assert slot_void(39, floor) and not slot_void(40, floor)
    assert generation_void(89, floor) and not generation_void(90, floor)
    assert fenced_by_floor(39, floor) and not fenced_by_floor(40, floor)
    assert not slot_void(1, NO_FLOOR) and not generation_void(1, NO_FLOOR)


def test_compaction_is_due_after_every_so_many_slots_or_generations():
    assert not compaction_due(NO_FLOOR, head=999, generation=1000)
    assert compaction_due(NO_FLOOR, head=1000, generation=1)
    assert compaction_due(NO_FLOOR, head=1, generation=1001)
    assert compaction_due(a_floor(), head=41, generation=91, every=2)


def test_compaction_needs_format_2_for_a_day():
    assert compaction_allowed(2, 1000, 1000 + 86400)
    assert not compaction_allowed(2, 1000, 1000 + 86399)
    assert not compaction_allowed(1, 0, 10 ** 9)
    assert not compaction_allowed(True, 0, 10 ** 9)


def log_of(n: int) -> list[LoggedVersion]:
    """Versions 1…n, version i in slot 2i (a fence before each commit)."""
    return [LoggedVersion(i, 2 * i, commit_entry(2 * i)) for i in range(1, n + 1)]


def test_the_next_floor_is_the_holders_fence_and_carries_the_unpruned_versions():
    versions = log_of(10)
    floor = next_floor(NO_FLOOR, fence_seq=19, generation=50, versions=versions, pruned={1, 2, 3},
                       fences=[(2 * i - 1, i) for i in range(1, 11)], policies=[(4, "p")],
                       mtimes={i: 100 + i for i in range(1, 11)})
    assert floor is not None
    assert (floor.number, floor.seq, floor.lock, floor.versions, floor.fence) == (1, 19, 50, 9, 9)
    assert [c.number for c in floor.carried] == [4, 5, 6, 7, 8, 9]
    assert floor.carried[0].mtime == 104 and floor.policies == ((4, "p"),)
    assert floor.pruned == frozenset({1, 2, 3})


def test_the_next_floor_never_moves_back_and_none_when_it_would_not_move():
    prev = Floor(1, seq=30, lock=60)
    assert next_floor(prev, fence_seq=20, generation=40, versions=[], pruned=set(), fences=[],
                      policies=[], mtimes={}) is None
    moved = next_floor(prev, fence_seq=20, generation=70, versions=[], pruned=set(), fences=[],
                       policies=[], mtimes={})
    assert moved is not None and (moved.seq, moved.lock, moved.number) == (30, 70, 2)


def test_the_next_floor_stays_below_the_versions_it_cannot_carry():
    versions = log_of(MAX_CARRIED + 10)
    floor = next_floor(NO_FLOOR, fence_seq=10 ** 6, generation=5, versions=versions, pruned=set(),
                       fences=[], policies=[], mtimes={v.number: 1 for v in versions})
    assert floor is not None and len(floor.carried) == MAX_CARRIED
    assert floor.seq == versions[MAX_CARRIED].seq and floor.versions == MAX_CARRIED


def test_the_next_floor_keeps_carried_versions_of_the_previous_one():
    prev = next_floor(NO_FLOOR, fence_seq=7, generation=5, versions=log_of(3), pruned=set(), fences=[],
                      policies=[], mtimes={1: 11, 2: 12, 3: 13})
    assert prev is not None
    # the reader's view below the floor: carried versions with their entries, as area/floor.py builds it
    view = log_of(6)
    nxt = next_floor(prev, fence_seq=13, generation=9, versions=view, pruned={2}, fences=[],
                     policies=[], mtimes={4: 14, 5: 15, 6: 16})
    assert nxt is not None
    assert [(c.number, c.mtime) for c in nxt.carried] == [(1, 11), (3, 13), (4, 14), (5, 15), (6, 16)]


def test_an_unknown_live_version_below_the_floor_stops_it():
    versions = [LoggedVersion(1, 2, None)]
    assert next_floor(NO_FLOOR, fence_seq=5, generation=5, versions=versions, pruned=set(), fences=[],
                      policies=[], mtimes={}) is None


def test_a_removal_run_takes_the_lowest_names_first_and_is_bounded():
    assert below([5, 1, 9, 3, 12], 10, 3) == [1, 3, 5]
    assert below([5, 1], 1, 10) == [] and below([1, 2], 5, -1) == []
