"""Lease arithmetic, stepped with frozen time."""

from __future__ import annotations

import time

import pytest
from freezegun import freeze_time

from statemachine import (
    DEFAULT_SLACK,
    LockKind,
    LockObservation,
    Verdict,
    claim_lease,
    judge,
)
from statemachine.lease import safety_margin

PUBLISHED = 1_800_000_000  # server mtime of the claim file
LEASE = 600


def held(session="client", kind=LockKind.CLAIM, lease=LEASE):
    return LockObservation(7, kind, session, PUBLISHED, lease, since=PUBLISHED - 30)


def server_now() -> int:
    """What the server's clock reads, under freezegun (whole seconds, like SFTP mtimes)."""
    return int(time.time())


def test_never_locked_and_released_and_broken_are_free():
    for obs in (LockObservation(0, LockKind.NONE), held(kind=LockKind.RELEASE),
                held(kind=LockKind.BREAK)):
        status = judge(obs, "firm", PUBLISHED)
        assert status.verdict is Verdict.FREE and status.claimable


def test_held_by_other_says_until_when_and_since_when():
    status = judge(held("client"), "firm", PUBLISHED + 10)
    assert status.verdict is Verdict.HELD_BY_OTHER and not status.claimable
    assert status.until == PUBLISHED + LEASE and status.since == PUBLISHED - 30
    assert status.generation == 7 and status.session == "client"


def test_held_by_me():
    assert judge(held("firm"), "firm", PUBLISHED + 1).verdict is Verdict.HELD_BY_ME


def test_expiry_on_the_server_clock_exactly_at_the_end_and_after_slack():
    with freeze_time("2027-01-15 09:00:00") as frozen:
        published = server_now()
        obs = LockObservation(3, LockKind.CLAIM, "client", published, LEASE)
        frozen.tick(LEASE)  # exactly at the lease end: still held (whole-second mtimes)
        assert judge(obs, "firm", server_now()).verdict is Verdict.HELD_BY_OTHER
        frozen.tick(1)  # one second after: still inside the slack
        assert judge(obs, "firm", server_now()).verdict is Verdict.HELD_BY_OTHER
        frozen.tick(DEFAULT_SLACK - 1)  # lease + slack: expired
        status = judge(obs, "firm", server_now())
        assert status.verdict is Verdict.EXPIRED and status.claimable
        assert status.until == published + LEASE


def test_slack_is_never_below_one_second():
    obs = held()
    assert judge(obs, "firm", PUBLISHED + LEASE, slack=0).verdict is Verdict.HELD_BY_OTHER
    assert judge(obs, "firm", PUBLISHED + LEASE + 1, slack=0).verdict is Verdict.EXPIRED


def test_own_expired_lease_is_expired_not_held():
    assert judge(held("firm"), "firm", PUBLISHED + LEASE + 5).verdict is Verdict.EXPIRED


def test_holder_deadline_counts_from_sending_minus_margin():
    with freeze_time("2027-01-15 09:00:00") as frozen:
        lease = claim_lease(8, 90)
        sent = time.monotonic()
        assert lease.sent_at == sent
        assert lease.deadline == sent + 90 - safety_margin(90) == sent + 81
        frozen.tick(80)
        assert lease.valid(time.monotonic()) and lease.remaining(time.monotonic()) == 1
        frozen.tick(1)
        assert not lease.valid(time.monotonic())


def test_holder_deadline_is_before_what_others_judge():
    """Our deadline (from send time) ends before the server-side expiry others see."""
    with freeze_time("2027-01-15 09:00:00") as frozen:
        lease = claim_lease(2, 60)
        frozen.tick(0.4)  # the claim reaches the server a little later
        published = server_now()
        obs = LockObservation(2, LockKind.CLAIM, "me", published, 60)
        while lease.valid(time.monotonic()):
            assert judge(obs, "other", server_now()).verdict is Verdict.HELD_BY_OTHER
            frozen.tick(1)


def test_renewal_due_at_a_third_of_the_lease():
    with freeze_time("2027-01-15 09:00:00") as frozen:
        lease = claim_lease(1, 30)
        frozen.tick(9.9)
        assert not lease.renewal_due(time.monotonic())
        frozen.tick(0.1)
        assert lease.renewal_due(time.monotonic())
        renewed = lease.renewed(2, time.monotonic())
        assert renewed.generation == 2 and not renewed.renewal_due(time.monotonic())
        frozen.move_to("2027-01-15 09:00:20")
        assert renewed.renewal_due(time.monotonic())
        with pytest.raises(ValueError):
            renewed.renewed(2, time.monotonic())


def test_injected_clock_is_used():
    ticks = iter([100.0])
    lease = claim_lease(1, 30, clock=lambda: next(ticks))
    assert lease.sent_at == 100.0 and lease.renew_at == 110.0


@pytest.mark.parametrize("lease,margin", [(2, 1.0), (30, 3.0), (600, 60.0), (8 * 3600, 60.0)])
def test_safety_margin(lease, margin):
    assert safety_margin(lease) == margin
