"""Lease arithmetic: pure functions over what was observed on the host.

Two clocks, never compared with each other:

* The **server's clock**, read as the mtime (whole seconds) of a file the server has just
  created. Everyone judges a lease by it: a lease published at server time ``P`` with
  length ``L`` has expired once "server now" ``N`` satisfies ``N >= P + L + slack``. The
  slack (at least 1 s) absorbs the truncation of SFTP v3 times to whole seconds, so nobody
  ever judges a live lease expired.
* The **holder's monotonic clock**. The holder counts its own deadline from just before it
  starts writing its claim (the server stamps the file later, so others see it expire
  later), minus a safety margin, and renews at about a third of the lease, as etcd does.

No wall clock is read here; callers pass ``now`` or inject a clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_SLACK = 2  # seconds; >= 1 for whole-second SFTP timestamps
MAX_MARGIN = 60.0  # seconds; a holder stops trusting its lease this long before the end

Clock = Callable[[], float]


def monotonic_clock() -> float:
    """The default injected clock (looked up at call time, so freezegun can move it)."""
    return time.monotonic()


class LockKind(StrEnum):
    """What the highest generation file on the host says."""

    NONE = "none"  # no generation yet: never locked
    CLAIM = "claim"  # a holder took the lock
    RENEW = "renew"  # the holder extended its lease (a newer generation, same session)
    RELEASE = "release"  # the holder let go
    BREAK = "break"  # someone broke the lock (audited); it is free


class Verdict(StrEnum):
    FREE = "free"
    HELD_BY_ME = "held-by-me"
    HELD_BY_OTHER = "held-by-other"
    EXPIRED = "expired"


@dataclass(frozen=True)
class LockObservation:
    """The highest lock generation as read from the host."""

    generation: int  # 0 when no generation exists
    kind: LockKind
    session: str | None = None  # the holding session's id (per open, per install)
    published_at: int | None = None  # server mtime of that generation's file
    lease_seconds: int = 0
    since: int | None = None  # server time the holder's first claim was published


@dataclass(frozen=True)
class LockStatus:
    """The judgement: who may act, and until when (server seconds)."""

    verdict: Verdict
    generation: int
    session: str | None = None
    until: int | None = None  # server time the lease runs to (without slack)
    since: int | None = None

    @property
    def claimable(self) -> bool:
        """May a party claim the next generation now?"""
        return self.verdict in (Verdict.FREE, Verdict.EXPIRED)


def expires_at(obs: LockObservation, slack: int = DEFAULT_SLACK) -> int | None:
    """Server time from which the lease counts as expired, or None if not a live kind."""
    if obs.kind not in (LockKind.CLAIM, LockKind.RENEW) or obs.published_at is None:
        return None
    return obs.published_at + obs.lease_seconds + max(1, slack)


def judge(
    obs: LockObservation, me: str | None, server_now: int, slack: int = DEFAULT_SLACK
) -> LockStatus:
    """Decide free / held by me / held by another (until when) / expired."""
    end = expires_at(obs, slack)
    if end is None:
        return LockStatus(Verdict.FREE, obs.generation)
    until = end - max(1, slack)
    if server_now >= end:
        return LockStatus(Verdict.EXPIRED, obs.generation, obs.session, until, obs.since)
    verdict = Verdict.HELD_BY_ME if me is not None and obs.session == me else Verdict.HELD_BY_OTHER
    return LockStatus(verdict, obs.generation, obs.session, until, obs.since)


def safety_margin(lease_seconds: float) -> float:
    """How long before the lease end a holder stops trusting it: 10 %, 1 s to 60 s."""
    return min(max(1.0, 0.1 * lease_seconds), MAX_MARGIN, lease_seconds / 2)


@dataclass(frozen=True)
class HolderLease:
    """Our own lease, on our monotonic clock, counted from when we sent the claim."""

    generation: int
    sent_at: float
    lease_seconds: float

    @property
    def deadline(self) -> float:
        """After this moment we must assume the lease is lost."""
        return self.sent_at + self.lease_seconds - safety_margin(self.lease_seconds)

    @property
    def renew_at(self) -> float:
        """When to renew: about a third of the lease after the claim."""
        return self.sent_at + self.lease_seconds / 3

    def valid(self, now: float) -> bool:
        return now < self.deadline

    def renewal_due(self, now: float) -> bool:
        return now >= self.renew_at

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)

    def renewed(self, generation: int, sent_at: float) -> HolderLease:
        """The lease after a successful renewal claim sent at `sent_at`."""
        if generation <= self.generation:
            raise ValueError(f"renewal generation {generation} must exceed {self.generation}")
        return HolderLease(generation, sent_at, self.lease_seconds)


def claim_lease(generation: int, lease_seconds: float, clock: Clock | None = None) -> HolderLease:
    """Start counting a lease whose claim is being sent now (call *before* sending)."""
    return HolderLease(generation, (clock or monotonic_clock)(), lease_seconds)
