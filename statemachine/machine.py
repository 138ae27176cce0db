"""The data-set state machine: the transition table as data, guards, effects, persistence.

Everything that decides how a data set moves between states lives in this file. It does
no I/O: the shell (``cloudshare_p2p.service``) observes the host, feeds events in, and
performs what the new state asks for. An event that is not allowed in the current state
raises `IllegalEvent` and changes nothing; a guard that refuses raises `GuardRefused`
and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from transitions import Machine, MachineError

from .states import STEPS, TRANSIENT, AreaGoneReason, Event, LeaveMode, SetupMode, State

S = State
E = Event


class Transition(NamedTuple):
    """One row of the table: `event` moves any of `sources` to `dest` if `guard` allows.

    `dest` None means the event stays in its source state (it only records data).
    """

    event: Event
    sources: tuple[State, ...]
    dest: State | None
    guard: str | None = None


TABLE: tuple[Transition, ...] = (
    Transition(E.START_UPLOAD, (S.UNSHARED,), S.INITIALIZING),
    Transition(E.START_RECEIVE, (S.UNSHARED,), S.INITIALIZING),
    Transition(E.STEP_REACHED, (S.INITIALIZING, S.LEAVING), None, "step_is_next"),
    Transition(E.SETUP_DONE, (S.INITIALIZING,), S.SHARED_IDLE, "step_is_last"),
    Transition(E.SETUP_FAILED, (S.INITIALIZING,), S.UNSHARED),
    Transition(E.LOCK_GRANTED, (S.SHARED_IDLE, S.LOCKED_BY_OTHER), S.LOCKED_BY_ME, "token_is_newer"),
    Transition(E.LOCK_HELD, (S.SHARED_IDLE, S.LOCKED_BY_OTHER), S.LOCKED_BY_OTHER),
    Transition(E.LOCK_FREE, (S.LOCKED_BY_OTHER,), S.SHARED_IDLE),
    Transition(E.RECEIVED, (S.SHARED_IDLE, S.LOCKED_BY_OTHER), None, "version_not_older"),
    Transition(E.NEWEST_RECEIVED, (S.LOCKED_BY_ME,), S.LOCKED_BY_ME, "token_is_mine"),
    Transition(E.RENEWED, (S.LOCKED_BY_ME,), S.LOCKED_BY_ME, "token_is_newer"),
    Transition(E.COMMITTED, (S.LOCKED_BY_ME,), S.SHARED_IDLE, "may_send"),
    Transition(E.LOCK_RETURNED, (S.LOCKED_BY_ME,), S.SHARED_IDLE, "token_is_mine"),
    Transition(E.LEASE_LOST, (S.LOCKED_BY_ME,), S.LOCKED_BY_OTHER, "token_is_newer"),
    Transition(
        E.AREA_GONE, (S.SHARED_IDLE, S.LOCKED_BY_ME, S.LOCKED_BY_OTHER), S.AREA_MISSING, "reason_known"
    ),
    Transition(E.AREA_FOUND, (S.AREA_MISSING,), S.SHARED_IDLE),
    Transition(E.LEAVE, (S.SHARED_IDLE, S.LOCKED_BY_ME, S.LOCKED_BY_OTHER, S.AREA_MISSING), S.LEAVING),
    Transition(E.DELETE_FOR_EVERYONE, (S.SHARED_IDLE, S.LOCKED_BY_ME), S.LEAVING),
    Transition(E.LEAVE_DONE, (S.LEAVING,), S.UNSHARED, "step_is_last"),
    Transition(E.LEAVE_ABORTED, (S.LEAVING,), S.SHARED_IDLE),
)


class StateMachineError(Exception):
    """Base of the core's domain errors: the caller broke the rules."""


class IllegalEvent(StateMachineError):
    """The event is not allowed in the current state. Nothing changed."""

    def __init__(self, event: str, state: State) -> None:
        self.event, self.state = event, state
        allowed = ", ".join(sorted(allowed_events(state))) or "none"
        super().__init__(f"'{event}' is not allowed while the data set is {state} (allowed: {allowed})")


class GuardRefused(StateMachineError):
    """The event is allowed here, but its guard refused it. Nothing changed."""

    def __init__(self, event: str, state: State, reason: str) -> None:
        self.event, self.state, self.reason = event, state, reason
        super().__init__(f"'{event}' refused while the data set is {state}: {reason}")


class PersistenceError(StateMachineError):
    """A persisted machine could not be loaded (unknown state, bad fields)."""


@dataclass(frozen=True)
class Context:
    """What the machine remembers beyond its state. Round-trips through JSON."""

    mode: str | None = None  # SetupMode or LeaveMode while in a transient state
    step: str | None = None  # last step reached in the transient state
    token: int | None = None  # our fencing token (lock generation) while locked-by-me
    last_token: int = 0  # highest lock generation this party has seen; only grows
    holder: str | None = None  # who holds the lock, while locked-by-other
    holder_until: int | None = None  # server time (s) the other's lease runs to
    missing_reason: str | None = None  # AreaGoneReason while area-missing
    version: int | None = None  # newest version received or sent
    received: bool = False  # locked-by-me: the newest version was received and is in place


def allowed_events(state: State) -> set[str]:
    """The events the table allows from `state`."""
    return {t.event.value for t in TABLE if state in t.sources}


def _steps(ctx: Context) -> tuple[str, ...]:
    return STEPS.get(ctx.mode or "", ())


# --- guards: (context, event data) -> reason for refusal, or None ----------------------


def _guard_step_is_next(ctx: Context, data: dict[str, Any]) -> str | None:
    steps, step = _steps(ctx), data.get("step")
    if step not in steps:
        return f"step {step!r} is not a step of {ctx.mode} (steps: {', '.join(steps)})"
    done = steps.index(ctx.step) if ctx.step in steps else -1
    if steps.index(step) < done:
        return f"step {step!r} comes before the step already reached ({ctx.step})"
    return None


def _guard_step_is_last(ctx: Context, data: dict[str, Any]) -> str | None:
    steps = _steps(ctx)
    if not steps or ctx.step != steps[-1]:
        return f"{ctx.mode} has reached {ctx.step!r}, not its last step {steps[-1] if steps else '?'}"
    return None


def _guard_token_is_newer(ctx: Context, data: dict[str, Any]) -> str | None:
    token = data.get("token")
    floor = max(ctx.last_token, ctx.token or 0)
    if not isinstance(token, int) or token <= floor:
        return f"lock generation {token} is not newer than {floor} (generations only grow)"
    return None


def _guard_token_is_mine(ctx: Context, data: dict[str, Any]) -> str | None:
    if data.get("token") != ctx.token:
        return f"commit made under generation {data.get('token')}, but we hold {ctx.token}"
    return None


def _guard_may_send(ctx: Context, data: dict[str, Any]) -> str | None:
    """A commit needs our own token and a copy built on the newest version."""
    refusal = _guard_token_is_mine(ctx, data)
    if refusal is None and not ctx.received:
        return "the newest version was not received after the lock was taken; nothing may be sent"
    return refusal


def _guard_version_not_older(ctx: Context, data: dict[str, Any]) -> str | None:
    version = data.get("version")
    if not isinstance(version, int) or (ctx.version is not None and version < ctx.version):
        return f"version {version} is older than the version already held ({ctx.version})"
    return None


def _guard_reason_known(ctx: Context, data: dict[str, Any]) -> str | None:
    reasons = {r.value for r in AreaGoneReason}
    if data.get("reason") not in reasons:
        return f"reason must be one of {', '.join(sorted(reasons))}"
    return None


GUARDS = {
    "step_is_next": _guard_step_is_next,
    "step_is_last": _guard_step_is_last,
    "token_is_newer": _guard_token_is_newer,
    "token_is_mine": _guard_token_is_mine,
    "may_send": _guard_may_send,
    "version_not_older": _guard_version_not_older,
    "reason_known": _guard_reason_known,
}


# --- effects: what each event does to the context, beside the table ----------------------

Effect = Callable[[Context, dict[str, Any]], Context]


def _start(mode: SetupMode | LeaveMode, new_area: bool) -> Effect:
    def effect(ctx: Context, data: dict[str, Any]) -> Context:
        if new_area:  # a new area instance: its lock generations and versions start anew
            return replace(ctx, mode=mode.value, step=STEPS[mode][0], last_token=0, version=None)
        return replace(ctx, mode=mode.value, step=STEPS[mode][0])

    return effect


def _step_reached(ctx: Context, data: dict[str, Any]) -> Context:
    return replace(ctx, step=data["step"], version=data.get("version", ctx.version))


def _lock_granted(ctx: Context, data: dict[str, Any]) -> Context:
    token = data["token"]
    return replace(ctx, token=token, last_token=max(ctx.last_token, token), received=False)


def _renewed(ctx: Context, data: dict[str, Any]) -> Context:
    token = data["token"]
    return replace(ctx, token=token, last_token=max(ctx.last_token, token))


def _newest_received(ctx: Context, data: dict[str, Any]) -> Context:
    return replace(ctx, received=True, version=data.get("version", ctx.version))


def _lock_held(ctx: Context, data: dict[str, Any]) -> Context:
    seen = data.get("token") or 0
    return replace(ctx, holder=data.get("holder"), holder_until=data.get("until"),
                   last_token=max(ctx.last_token, seen))


def _lease_lost(ctx: Context, data: dict[str, Any]) -> Context:
    return replace(ctx, holder=data.get("holder"), holder_until=data.get("until"), last_token=data["token"])


def _version(ctx: Context, data: dict[str, Any]) -> Context:
    return replace(ctx, version=data.get("version", ctx.version))


def _area_gone(ctx: Context, data: dict[str, Any]) -> Context:
    return replace(ctx, missing_reason=data["reason"])


EFFECTS: dict[Event, Effect] = {
    E.START_UPLOAD: _start(SetupMode.UPLOAD, new_area=True),
    E.START_RECEIVE: _start(SetupMode.RECEIVE, new_area=True),
    E.LEAVE: _start(LeaveMode.JUST_ME, new_area=False),
    E.DELETE_FOR_EVERYONE: _start(LeaveMode.EVERYONE, new_area=False),
    E.STEP_REACHED: _step_reached,
    E.LOCK_GRANTED: _lock_granted,
    E.RENEWED: _renewed,
    E.NEWEST_RECEIVED: _newest_received,
    E.LOCK_HELD: _lock_held,
    E.LEASE_LOST: _lease_lost,
    E.COMMITTED: _version,
    E.RECEIVED: _version,
    E.SETUP_DONE: _version,
    E.AREA_GONE: _area_gone,
}
"""What each event does to the context (events not listed change nothing but the state)."""


def _effect(event: Event, ctx: Context, data: dict[str, Any]) -> Context:
    effect = EFFECTS.get(event)
    return effect(ctx, data) if effect else ctx


def _tidy(ctx: Context, state: State) -> Context:
    """Clear every field that has no meaning in `state` (keeps the invariants structural)."""
    return replace(
        ctx,
        mode=ctx.mode if state in TRANSIENT else None,
        step=ctx.step if state in TRANSIENT else None,
        token=ctx.token if state is S.LOCKED_BY_ME else None,
        received=ctx.received if state is S.LOCKED_BY_ME else False,
        holder=ctx.holder if state is S.LOCKED_BY_OTHER else None,
        holder_until=ctx.holder_until if state is S.LOCKED_BY_OTHER else None,
        missing_reason=ctx.missing_reason if state is S.AREA_MISSING else None,
    )


class _Model:
    """The object `transitions` drives; guard names are its methods (for the diagram too)."""

    if TYPE_CHECKING:  # `transitions` adds these to the model when the Machine is built
        state: str

        def trigger(self, trigger_name: str, *args: Any, **kwargs: Any) -> bool: ...

    def __init__(self, context: Context) -> None:
        self.context = context
        self.refusal: str | None = None

    def _check(self, name: str, event_data: Any) -> bool:
        self.refusal = GUARDS[name](self.context, dict(event_data.kwargs))
        return self.refusal is None

    def step_is_next(self, event_data: Any) -> bool:
        return self._check("step_is_next", event_data)

    def step_is_last(self, event_data: Any) -> bool:
        return self._check("step_is_last", event_data)

    def token_is_newer(self, event_data: Any) -> bool:
        return self._check("token_is_newer", event_data)

    def token_is_mine(self, event_data: Any) -> bool:
        return self._check("token_is_mine", event_data)

    def may_send(self, event_data: Any) -> bool:
        return self._check("may_send", event_data)

    def version_not_older(self, event_data: Any) -> bool:
        return self._check("version_not_older", event_data)

    def reason_known(self, event_data: Any) -> bool:
        return self._check("reason_known", event_data)

    def apply_effect(self, event_data: Any) -> None:
        event = Event(event_data.event.name)
        dest = State(event_data.transition.dest)
        self.context = _tidy(_effect(event, self.context, dict(event_data.kwargs)), dest)


def machine_spec() -> dict[str, Any]:
    """Keyword arguments for a `transitions` machine built from `TABLE`."""
    transitions = []
    for row in TABLE:
        for source in row.sources:
            dest = row.dest or source
            item: dict[str, Any] = {
                "trigger": row.event.value, "source": source.value, "dest": dest.value,
                "after": "apply_effect",
            }
            if row.guard:
                item["conditions"] = row.guard
            transitions.append(item)
    return {
        "states": [s.value for s in State],
        "transitions": transitions,
        "auto_transitions": False,
        "send_event": True,
        "ignore_invalid_triggers": False,
    }


class DataSetMachine:
    """The state machine of one data set on one computer.

    >>> m = DataSetMachine()
    >>> m.fire(Event.START_UPLOAD).value
    'initializing'
    """

    def __init__(self, state: State | str = State.UNSHARED, context: Context | None = None) -> None:
        state = _known_state(state)
        self._model = _Model(_tidy(context or Context(), state))
        self._machine = Machine(model=self._model, initial=state.value, **machine_spec())

    @property
    def state(self) -> State:
        return State(self._model.state)

    @property
    def context(self) -> Context:
        return self._model.context

    def allowed(self) -> set[str]:
        """Events allowed in the current state (guards not evaluated)."""
        return allowed_events(self.state)

    def fire(self, event: Event | str, **data: Any) -> State:
        """Apply `event` with its data; return the new state or raise, changing nothing."""
        name = Event(event).value if event in Event._value2member_map_ else str(event)
        before = self.state
        try:  # `transitions` enforces the table (built from TABLE by `machine_spec`)
            moved = self._model.trigger(name, **data)
        except (MachineError, AttributeError) as exc:
            raise IllegalEvent(name, before) from exc
        if not moved:
            raise GuardRefused(name, before, self._model.refusal or "guard refused")
        return self.state

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready form: ``{"state": "shared-idle", "context": {...}}``."""
        return {"state": self.state.value, "context": asdict(self.context)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSetMachine:
        """Load what `to_dict` produced; an unknown state or field is an error."""
        if not isinstance(data, dict) or "state" not in data:
            raise PersistenceError("persisted machine must be a dict with a 'state'")
        raw = data.get("context") or {}
        known = {f.name for f in fields(Context)}
        unknown = set(raw) - known
        if unknown:
            raise PersistenceError(f"unknown persisted fields: {', '.join(sorted(unknown))}")
        return cls(_known_state(data["state"]), Context(**raw))


def _known_state(state: State | str) -> State:
    try:
        return State(state)
    except ValueError:
        names = ", ".join(s.value for s in State)
        raise PersistenceError(f"unknown state {state!r} (known: {names})") from None
