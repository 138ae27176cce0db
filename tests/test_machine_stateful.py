"""Random stories of two or three parties sharing one area never break the invariants.

The area is modelled in memory the way the protocol works on the host: lock generations
are created exclusively (one winner), judged on the server's clock; the commit log is
append-only and every holder appends a fence with its token right after acquiring. Each
party runs the real `DataSetMachine` and the real lease arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from statemachine import (
    DataSetMachine,
    Event,
    GuardRefused,
    IllegalEvent,
    LockKind,
    LockObservation,
    State,
    judge,
)

LEASE = 30


@dataclass
class Gen:
    kind: LockKind
    session: str
    published_at: int


@dataclass
class Area:
    """The host: lock generations, an append-only log, a clock, present or deleted."""

    now: int = 1_000
    gens: list[Gen] = field(default_factory=list)
    log: list[tuple[str, int, str]] = field(default_factory=list)  # (kind, token, party)
    present: bool = True

    def observe(self) -> LockObservation:
        if not self.gens:
            return LockObservation(0, LockKind.NONE)
        top = self.gens[-1]
        return LockObservation(len(self.gens), top.kind, top.session, top.published_at, LEASE)

    def claim(self, kind: LockKind, session: str, expected_top: int) -> int | None:
        """Exclusive create of generation expected_top + 1: one winner."""
        if len(self.gens) != expected_top:
            return None
        self.gens.append(Gen(kind, session, self.now))
        return len(self.gens)

    def fenced_since(self, token: int, party: str) -> int | None:
        """The newest fence by someone else with a newer token, if any."""
        fences = [t for kind, t, who in self.log if kind == "fence" and t > token and who != party]
        return max(fences) if fences else None


class TwoOrThreeParties(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.area = Area()
        self.parties: dict[str, DataSetMachine] = {}
        self.last_event: dict[str, str] = {}
        self.seen_tokens: dict[str, int] = {}
        for name in ("firm", "client", "client2"):
            machine = DataSetMachine()
            machine.fire(Event.START_RECEIVE)
            machine.fire(Event.STEP_REACHED, step="received", version=0)
            machine.fire(Event.SETUP_DONE)
            self.parties[name] = machine
            self.seen_tokens[name] = 0

    parties_st = st.sampled_from(["firm", "client", "client2"])

    def _fire(self, name: str, event: Event, **data) -> None:
        machine = self.parties[name]
        before = machine.to_dict()
        try:
            machine.fire(event, **data)
        except IllegalEvent:
            assert machine.to_dict() == before
            return
        self.last_event[name] = event.value

    @rule(name=parties_st)
    def open(self, name: str) -> None:
        machine = self.parties[name]
        if machine.state not in (State.SHARED_IDLE, State.LOCKED_BY_OTHER):
            return
        if not self.area.present:
            self._fire(name, Event.AREA_GONE, reason="deleted")
            return
        obs = self.area.observe()
        status = judge(obs, name, self.area.now)
        if status.claimable:
            token = self.area.claim(LockKind.CLAIM, name, obs.generation)
            assert token is not None
            self.area.log.append(("fence", token, name))
            self._fire(name, Event.LOCK_GRANTED, token=token)
        else:
            self._fire(name, Event.LOCK_HELD, token=obs.generation, holder=obs.session, until=status.until)

    @rule(name=parties_st)
    def close(self, name: str) -> None:
        machine = self.parties[name]
        if machine.state is not State.LOCKED_BY_ME:
            return
        token = machine.context.token
        if not machine.context.received:  # interrupted before the newest version arrived
            before = machine.to_dict()
            with pytest.raises(GuardRefused, match="not received"):
                machine.fire(Event.COMMITTED, token=token, version=len(self.area.log))
            assert machine.to_dict() == before
            return
        newer = self.area.fenced_since(token, name)
        if newer is not None or not self.area.present:
            if self.area.present:
                self._fire(name, Event.LEASE_LOST, token=newer, holder="someone")
            else:
                self._fire(name, Event.AREA_GONE, reason="deleted")
            return
        self.area.log.append(("commit", token, name))
        self.area.claim(LockKind.RELEASE, name, len(self.area.gens))
        self._fire(name, Event.COMMITTED, token=token, version=len(self.area.log))

    @rule(name=parties_st)
    def receive_newest(self, name: str) -> None:
        machine = self.parties[name]
        if machine.state is State.LOCKED_BY_ME and not machine.context.received:
            self._fire(name, Event.NEWEST_RECEIVED, token=machine.context.token, version=len(self.area.log))

    @rule(name=parties_st)
    def renew(self, name: str) -> None:
        machine = self.parties[name]
        if machine.state is not State.LOCKED_BY_ME:
            return
        obs = self.area.observe()
        if obs.session == name and obs.kind in (LockKind.CLAIM, LockKind.RENEW):
            token = self.area.claim(LockKind.RENEW, name, obs.generation)
            self._fire(name, Event.RENEWED, token=token)
        else:
            self._fire(name, Event.LEASE_LOST, token=obs.generation, holder=obs.session)

    @rule(name=parties_st)
    def observe_free(self, name: str) -> None:
        if self.parties[name].state is State.LOCKED_BY_OTHER and judge(
            self.area.observe(), name, self.area.now
        ).claimable:
            self._fire(name, Event.LOCK_FREE)

    @rule(seconds=st.integers(min_value=1, max_value=2 * LEASE))
    def time_passes(self, seconds: int) -> None:
        self.area.now += seconds

    @precondition(lambda self: self.area.present)
    @rule(name=parties_st)
    def delete_area(self, name: str) -> None:
        if self.parties[name].state is State.SHARED_IDLE and judge(
            self.area.observe(), name, self.area.now
        ).claimable:
            self.area.present = False

    @precondition(lambda self: not self.area.present)
    @rule()
    def area_recreated(self) -> None:
        self.area = Area(now=self.area.now, gens=list(self.area.gens), log=list(self.area.log))
        for name, machine in self.parties.items():
            if machine.state is State.AREA_MISSING:
                self._fire(name, Event.AREA_FOUND)

    @rule(name=parties_st)
    def leave(self, name: str) -> None:
        machine = self.parties[name]
        self._fire(name, Event.LEAVE)
        if machine.state is State.LEAVING:
            self._fire(name, Event.STEP_REACHED, step="forget")
            self._fire(name, Event.LEAVE_DONE)

    @invariant()
    def at_most_one_holder_per_generation(self) -> None:
        tokens = [m.context.token for m in self.parties.values() if m.state is State.LOCKED_BY_ME]
        assert len(tokens) == len(set(tokens))

    @invariant()
    def at_most_one_holder_of_a_live_lease(self) -> None:
        obs = self.area.observe()
        live = [
            name for name, m in self.parties.items()
            if m.state is State.LOCKED_BY_ME and m.context.token == obs.generation
            and not judge(obs, name, self.area.now).claimable
        ]
        assert len(live) <= 1

    @invariant()
    def no_commit_after_a_newer_fence(self) -> None:
        highest_fence = 0
        for kind, token, _ in self.area.log:
            if kind == "fence":
                highest_fence = max(highest_fence, token)
            else:
                assert token >= highest_fence, self.area.log

    @invariant()
    def tokens_only_grow(self) -> None:
        for name, machine in self.parties.items():
            assert machine.context.last_token >= self.seen_tokens[name]
            self.seen_tokens[name] = machine.context.last_token

    @invariant()
    def area_missing_is_left_only_by_leave_or_found(self) -> None:
        for name, machine in self.parties.items():
            previous = getattr(self, "_previous", {}).get(name)
            if previous is State.AREA_MISSING and machine.state is not State.AREA_MISSING:
                assert self.last_event[name] in ("leave", "area_found", "step_reached", "leave_done")
        self._previous = {n: m.state for n, m in self.parties.items()}


TwoOrThreeParties.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_two_or_three_parties = TwoOrThreeParties.TestCase
