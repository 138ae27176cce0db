"""Login rate limits: growing delays after failed passwords, per address, per ID and per pair."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RateLimits:
    """Growing delays after failed password logins (see docs/hosting.md).

    Once a source address, or an ID, has `max_failures` failures within `window` seconds,
    one password check is allowed per `penalty` seconds, doubling with each further
    failure up to `penalty_max`; attempts in between are refused without a check.
    """

    max_failures: int = 5
    window: float = 600.0
    penalty: float = 30.0
    penalty_max: float = 480.0
    remember_success: float = 30 * 86400.0  # how long a (address, ID) login is "known good"
    max_tracked: int = 100_000  # bound on remembered keys (memory under a flood)

    def delay(self, failures: int) -> float:
        """Seconds between allowed attempts after `failures` recent failures (0: no delay)."""
        if failures < self.max_failures:
            return 0.0
        return min(self.penalty * 2 ** min(failures - self.max_failures, 30), self.penalty_max)


class LoginLimiter:
    """Counts failed password logins per source address, per ID and per (address, ID).

    - an (address, ID) pair that logged in successfully before is judged only by its own
      failures since then: a guesser elsewhere cannot lock the client out;
    - otherwise the address's failures count, and the ID's failures (from all addresses)
      count for every address that itself failed recently: a spread-out guesser gets one
      quick guess per address, while the client on a clean address is not slowed.
    """

    def __init__(self, limits: RateLimits, clock: Any = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._fails: dict[tuple[str, ...], collections.deque[float]] = {}
        self._last_try: dict[tuple[str, ...], float] = {}
        self._good: dict[tuple[str, str], float] = {}

    def _recent(self, key: tuple[str, ...], now: float) -> collections.deque[float]:
        q = self._fails.get(key)
        if q is None:
            return collections.deque()
        while q and q[0] <= now - self.limits.window:
            q.popleft()
        if not q:
            del self._fails[key]
            self._last_try.pop(key, None)
        return q

    def _keys(self, addr: str, comm_id: str, now: float) -> list[tuple[str, ...]]:
        good = self._good.get((addr, comm_id))
        if good is not None and now - good < self.limits.remember_success:
            return [("pair", addr, comm_id)]
        keys: list[tuple[str, ...]] = [("addr", addr)]
        if self._recent(("addr", addr), now):
            keys.append(("id", comm_id))
        return keys

    def check(self, addr: str, comm_id: str) -> tuple[float, str]:
        """(seconds to wait, which limit) before a password may be checked; (0, "") = go.

        A "go" for a throttled key takes its slot, so concurrent attempts get one check.
        """
        now = self._clock()
        wait, why, throttled = 0.0, "", []
        for key in self._keys(addr, comm_id, now):
            q = self._recent(key, now)
            delay = self.limits.delay(len(q))
            if not delay:
                continue
            throttled.append(key)
            since = max(q[-1], self._last_try.get(key, q[-1]))
            if since + delay - now > wait:
                wait, why = since + delay - now, key[0]
        if wait > 0:
            return wait, why
        for key in throttled:
            self._last_try[key] = now
        return 0.0, ""

    def failed(self, addr: str, comm_id: str) -> int:
        """Record a failed password check; returns the address's recent failures."""
        now = self._clock()
        if len(self._fails) > self.limits.max_tracked:
            self._sweep(now)
        cap = self.limits.max_failures + 32
        for key in (("addr", addr), ("id", comm_id), ("pair", addr, comm_id)):
            self._recent(key, now)
            self._fails.setdefault(key, collections.deque(maxlen=cap)).append(now)
        return len(self._fails[("addr", addr)])

    def succeeded(self, addr: str, comm_id: str) -> None:
        """Remember a good (address, ID) pair and forget its own failures."""
        now = self._clock()
        if len(self._good) > self.limits.max_tracked:
            self._good.clear()
        self._good[(addr, comm_id)] = now
        self._fails.pop(("pair", addr, comm_id), None)
        self._last_try.pop(("pair", addr, comm_id), None)

    def _sweep(self, now: float) -> None:
        for key in list(self._fails):
            self._recent(key, now)
        while len(self._fails) > self.limits.max_tracked // 2:  # still flooded: drop the oldest
            key = next(iter(self._fails))
            self._fails.pop(key)
            self._last_try.pop(key, None)
