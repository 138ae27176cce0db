"""Retention (statemachine.retention): the keep policy, its record, and the prune plan.

Times are explicit server seconds (no frozen clock): `jst(...)` builds them from a Japanese
wall-clock date. Table tests pin the semantics; hypothesis checks the properties.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine.retention import (
    DEFAULT_GRACE_SECONDS,
    KeepDecision,
    PrunePlan,
    RetentionPolicy,
    RetentionPolicyError,
    kept_versions,
    prune_plan,
    read_record,
)

JST = timezone(timedelta(hours=9))
DAY = 86400


def jst(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> int:
    """Server seconds of a Japanese wall-clock time."""
    return int(datetime(year, month, day, hour, minute, tzinfo=JST).timestamp())


NOW = jst(2026, 11, 29, 18)


def policy(last: int = 0, daily: int = 0, monthly: int = 0, offset: int = 540) -> RetentionPolicy:
    return RetentionPolicy(last, daily, monthly, offset)


# --- the policy -----------------------------------------------------------------------------------


def test_defaults_suit_bookkeeping_in_japan():
    assert RetentionPolicy() == RetentionPolicy(30, 90, 84, 540)


@pytest.mark.parametrize("kwargs,field", [
    ({"last": -1}, "last"),
    ({"daily": 10_001}, "daily"),
    ({"monthly": -5}, "monthly"),
    ({"last": 1.5}, "last"),
    ({"daily": True}, "daily"),
    ({"monthly": "84"}, "monthly"),
    ({"utc_offset_minutes": 1440}, "utc_offset_minutes"),
    ({"utc_offset_minutes": -1440}, "utc_offset_minutes"),
    ({"last": 0, "daily": 0, "monthly": 0}, "last"),  # would keep nothing
])
def test_invalid_policies_are_refused_with_the_field(kwargs, field):
    with pytest.raises(RetentionPolicyError) as info:
        RetentionPolicy(**kwargs)
    assert info.value.field == field and field in str(info.value)


def test_a_huge_value_is_shown_short():
    with pytest.raises(RetentionPolicyError) as info:
        RetentionPolicy(last=10**5000)
    assert len(str(info.value)) < 120


def test_bounds_are_inclusive():
    RetentionPolicy(10_000, 10_000, 10_000, 1439)
    RetentionPolicy(1, 0, 0, -1439)
    RetentionPolicy(0, 0, 1, 0)


def test_record_round_trip():
    p = RetentionPolicy(5, 14, 120, -300)
    record = p.to_record()
    assert record == {"v": 1, "last": 5, "daily": 14, "monthly": 120, "utc_offset_minutes": -300}
    assert RetentionPolicy.from_record(record) == p
    assert RetentionPolicy.from_record(json.dumps(record)) == p
    assert RetentionPolicy.from_record(json.dumps(record).encode()) == p


def test_unknown_members_and_a_missing_v_are_fine():
    record = {"last": 3, "daily": 0, "monthly": 0, "utc_offset_minutes": 0, "yearly": 9}
    assert read_record(record) == RetentionPolicy(3, 0, 0, 0)


@pytest.mark.parametrize("record", [
    None, 7, [], "", "not json", b"\xff\xfe", "[1, 2]", "[" * 100_000,
    {},
    {"v": 2, "last": 1, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},
    {"v": True, "last": 1, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},
    {"v": "1", "last": 1, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},
    {"last": 1, "daily": 1, "monthly": 1},  # no offset
    {"last": -1, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},
    {"last": 0, "daily": 0, "monthly": 0, "utc_offset_minutes": 0},
    {"last": 1.0, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},
    {"last": None, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},
    {"last": 10**400, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},
    {"last": 10**5000, "daily": 1, "monthly": 1, "utc_offset_minutes": 0},  # repr() raises
    '{"last": 1e999, "daily": 1, "monthly": 1, "utc_offset_minutes": 0}',
])
def test_a_malformed_record_is_void_and_gives_the_defaults(record):
    assert read_record(record) is None
    assert RetentionPolicy.from_record(record) == RetentionPolicy()


# --- which versions are kept ------------------------------------------------------------------------


def decide(versions, p, now=NOW) -> KeepDecision:
    return kept_versions(versions, p, now)


def test_no_versions_keep_nothing():
    assert decide([], RetentionPolicy()) == KeepDecision((), (), {})


def test_last_n_by_number():
    versions = [(n, jst(2026, 11, 28, 9, n)) for n in range(1, 6)]
    d = decide(versions, policy(last=3))
    assert d.keep == (3, 4, 5) and d.remove == (1, 2)
    assert all(d.reasons[n] == ("last",) for n in d.keep)


def test_daily_counts_only_days_with_versions():
    versions = [
        (1, jst(2026, 11, 1, 9)), (2, jst(2026, 11, 1, 17)),  # 1 Nov: 2 is its newest
        (3, jst(2026, 11, 20, 10)),  # a gap of weeks: 20 Nov still counts as the day before 28
        (4, jst(2026, 11, 28, 8)), (5, jst(2026, 11, 28, 19)),
    ]
    d = decide(versions, policy(daily=2))
    assert d.keep == (3, 5)
    assert d.reasons == {3: ("daily 2026-11-20",), 5: ("daily 2026-11-28",)}
    assert decide(versions, policy(daily=3)).keep == (2, 3, 5)


def test_monthly_labels_and_reasons_combine():
    versions = [(1, jst(2026, 9, 30, 23)), (2, jst(2026, 10, 2)), (3, jst(2026, 10, 31, 22)),
                (4, jst(2026, 11, 28))]
    d = decide(versions, policy(last=1, daily=1, monthly=2))
    assert d.keep == (3, 4)
    assert d.reasons == {3: ("monthly 2026-10",),
                         4: ("last", "daily 2026-11-28", "monthly 2026-11")}
    assert decide(versions, policy(monthly=3)).keep == (1, 3, 4)


def test_days_start_at_local_midnight():
    # 23:30 and 00:30 in Japan: two Japanese days, but the same UTC day (14:30 and 15:30 UTC)
    versions = [(1, jst(2026, 11, 27, 23, 30)), (2, jst(2026, 11, 28, 0, 30))]
    assert decide(versions, policy(daily=2, offset=540)).keep == (1, 2)
    assert decide(versions, policy(daily=2, offset=0)).keep == (2,)
    # month ends likewise: 31 Oct 23:30 in Japan is October there, in UTC too; 1 Nov 00:30
    # in Japan is still 31 Oct in UTC
    month_end = [(1, jst(2026, 10, 31, 23, 30)), (2, jst(2026, 11, 1, 0, 30))]
    assert decide(month_end, policy(monthly=2)).reasons == {1: ("monthly 2026-10",),
                                                            2: ("monthly 2026-11",)}
    assert decide(month_end, policy(monthly=2, offset=0)).keep == (2,)


def test_the_newest_number_is_kept_even_when_its_time_is_older():
    # the server clock stepped back: version 2 carries an earlier time than version 1
    versions = [(1, jst(2026, 11, 28)), (2, jst(2026, 11, 27))]
    d = decide(versions, policy(daily=1))
    assert d.keep == (1, 2)
    assert d.reasons == {1: ("daily 2026-11-28",), 2: ("newest",)}


def test_within_a_day_the_highest_number_wins_over_the_latest_time():
    versions = [(1, jst(2026, 11, 28, 20)), (2, jst(2026, 11, 28, 8)), (3, jst(2026, 11, 20))]
    assert decide(versions, policy(daily=2)).keep == (2, 3)


def test_a_time_in_the_future_counts_as_now():
    versions = [(1, jst(2026, 11, 29, 9)), (2, jst(2027, 3, 1)), (3, jst(2099, 1, 1))]
    d = decide(versions, policy(daily=1, monthly=1))
    assert d.reasons == {3: ("daily 2026-11-29", "monthly 2026-11")}
    assert d.remove == (1, 2)


def test_extreme_times_do_not_crash():
    versions = [(1, -10**12), (2, 0), (3, 10**13)]
    d = kept_versions(versions, policy(daily=3, monthly=3), 10**13)
    assert d.keep == (1, 2, 3)
    assert d.reasons[2] == ("daily 1970-01-01", "monthly 1970-01")


def test_a_number_twice_is_refused():
    with pytest.raises(ValueError):
        decide([(1, NOW), (1, NOW - 5)], RetentionPolicy())


# --- the prune plan -------------------------------------------------------------------------------------


OLD = NOW - 2 * DAY


def test_prune_removes_forgotten_versions_and_their_old_unshared_objects():
    references = {1: {"a", "b"}, 2: {"b", "c"}, 3: {"c", "d"}}
    objects = {"a": OLD, "b": OLD, "c": OLD, "d": NOW - 60, "e": OLD, "f": NOW - 60,
               "g": NOW + 3600}
    plan = prune_plan({3}, references, objects, NOW, DAY)
    assert plan == PrunePlan(remove_versions=(1, 2), remove_objects=("a", "b", "e"),
                             young=("f", "g"), missing=())


def test_prune_grace_is_inclusive_and_zero_means_none():
    objects = {"edge": NOW - DAY, "inside": NOW - DAY + 1}
    assert prune_plan({1}, {1: set()}, objects, NOW, DAY).remove_objects == ("edge",)
    assert prune_plan({1}, {1: set()}, objects, NOW, 0).remove_objects == ("edge", "inside")


def test_prune_reports_objects_a_kept_version_lacks():
    plan = prune_plan({1}, {1: {"a", "gone"}}, {"a": OLD}, NOW, DAY)
    assert plan.missing == ("gone",) and plan.empty


def test_prune_with_no_versions_deletes_old_orphans_only():
    plan = prune_plan(set(), {}, {"old": OLD, "new": NOW}, NOW)
    assert plan.remove_objects == ("old",) and plan.young == ("new",)
    assert DEFAULT_GRACE_SECONDS == DAY


@pytest.mark.parametrize("kept,references,grace", [
    ({1, 9}, {1: set()}, DAY),  # version 9's references are unknown
    (set(), {1: set()}, DAY),  # versions exist, none kept
    ({1}, {1: set()}, -1),
    ({1}, {1: set()}, 1.5),
])
def test_prune_refuses_unsafe_input(kept, references, grace):
    with pytest.raises(ValueError):
        prune_plan(kept, references, {"a": OLD}, NOW, grace)


# --- properties ----------------------------------------------------------------------------------------


BASE = jst(2025, 1, 1)


@st.composite
def version_lists(draw):
    """Unique numbers with times over ~3 years, some after `now`; possibly out of order."""
    numbers = draw(st.lists(st.integers(1, 400), unique=True, max_size=40))
    return [(n, draw(st.integers(BASE, BASE + 3 * 365 * DAY))) for n in numbers]


counts = st.integers(0, 6)
offsets = st.sampled_from([-720, -300, 0, 330, 540, 840, 1439])
nows = st.integers(BASE + 400 * DAY, BASE + 3 * 365 * DAY)


@st.composite
def policies(draw):
    last, daily, monthly = draw(counts), draw(counts), draw(counts)
    if not (last or daily or monthly):
        last = 1
    return RetentionPolicy(last, daily, monthly, draw(offsets))


@settings(max_examples=300, deadline=None)
@given(version_lists(), policies(), nows)
def test_newest_always_kept_and_keep_remove_partition(versions, p, now):
    d = kept_versions(versions, p, now)
    numbers = {n for n, _ in versions}
    assert set(d.keep) | set(d.remove) == numbers and not set(d.keep) & set(d.remove)
    assert set(d.reasons) == set(d.keep) and all(d.reasons.values())
    if numbers:
        assert max(numbers) in d.keep


@settings(max_examples=300, deadline=None)
@given(version_lists(), policies(), nows)
def test_applying_the_policy_twice_removes_nothing_more(versions, p, now):
    first = kept_versions(versions, p, now)
    again = kept_versions([v for v in versions if v[0] in first.kept], p, now)
    assert again.keep == first.keep and again.remove == ()


@settings(max_examples=300, deadline=None)
@given(version_lists(), policies(), nows, st.sampled_from(["last", "daily", "monthly"]),
       st.integers(1, 5))
def test_kept_set_grows_with_every_count(versions, p, now, field, more):
    bigger = replace(p, **{field: getattr(p, field) + more})
    assert kept_versions(versions, p, now).kept <= kept_versions(versions, bigger, now).kept


ids = st.text("abcdefgh", min_size=1, max_size=2)


@st.composite
def listings(draw):
    versions = draw(st.lists(st.integers(1, 30), unique=True, max_size=10))
    references = {n: draw(st.sets(ids, max_size=6)) for n in versions}
    kept = draw(st.sets(st.sampled_from(versions), min_size=1)) if versions else set()
    objects = draw(st.dictionaries(ids, st.integers(NOW - 3 * DAY, NOW + DAY), max_size=30))
    return kept, references, objects


@settings(max_examples=300, deadline=None)
@given(listings(), st.integers(0, 2 * DAY))
def test_prune_never_deletes_what_a_kept_version_needs_or_a_young_object(listing, grace):
    kept, references, objects = listing
    plan = prune_plan(kept, references, objects, NOW, grace)
    live = set().union(*(references[n] for n in kept))
    for oid in plan.remove_objects:
        assert oid not in live and NOW - objects[oid] >= grace
    assert set(plan.remove_versions) == set(references) - kept
    # and it is complete: every old unreferenced object goes, every other one is accounted for
    unreferenced = set(objects) - live
    assert set(plan.remove_objects) | set(plan.young) == unreferenced
    assert set(plan.missing) == live - set(objects)
