"""Every allowed transition of the core, and every disallowed event from every state."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from statemachine import (
    STEPS,
    TABLE,
    Context,
    DataSetMachine,
    Event,
    GuardRefused,
    IllegalEvent,
    PersistenceError,
    State,
    allowed_events,
)

S, E = State, Event

# For each event: a context in which its guard passes, the data it carries, and the
# full context expected afterwards (as a function of the starting state).
BASE = Context(last_token=4, version=7)
HOLDING = replace(BASE, token=4)
FRESH = replace(HOLDING, received=True)  # holding, and the newest version is in place
NEW_AREA = replace(BASE, last_token=0, version=None)  # a setup starts a new area's memory


def scenario(event: Event, source: State) -> tuple[Context, dict, Context]:
    if event is E.START_UPLOAD:
        return BASE, {}, replace(NEW_AREA, mode="upload", step="create-area")
    if event is E.START_RECEIVE:
        return BASE, {}, replace(NEW_AREA, mode="receive", step="check-password")
    if event is E.STEP_REACHED:
        mode = "upload" if source is S.INITIALIZING else "just-me"
        start = replace(BASE, mode=mode, step=STEPS[mode][0])
        return start, {"step": STEPS[mode][1]}, replace(start, step=STEPS[mode][1])
    if event in (E.SETUP_DONE, E.LEAVE_DONE):
        mode = "receive" if event is E.SETUP_DONE else "everyone"
        return replace(BASE, mode=mode, step=STEPS[mode][-1]), {"version": 8}, replace(
            BASE, version=8 if event is E.SETUP_DONE else 7
        )
    if event in (E.SETUP_FAILED, E.LEAVE_ABORTED):
        mode = "upload" if event is E.SETUP_FAILED else "just-me"
        return replace(BASE, mode=mode, step=STEPS[mode][0]), {}, BASE
    if event is E.LOCK_GRANTED:
        return BASE, {"token": 5}, replace(BASE, token=5, last_token=5)
    if event is E.LOCK_HELD:
        data = {"token": 6, "holder": "client@pc", "until": 1000}
        return BASE, data, replace(BASE, last_token=6, holder="client@pc", holder_until=1000)
    if event is E.LOCK_FREE:
        return replace(BASE, holder="x", holder_until=5), {}, BASE
    if event is E.RECEIVED:
        return BASE, {"version": 9}, replace(BASE, version=9)
    if event is E.RENEWED:
        return HOLDING, {"token": 5}, replace(BASE, token=5, last_token=5)
    if event is E.COMMITTED:
        return FRESH, {"token": 4, "version": 8}, replace(BASE, version=8)
    if event is E.NEWEST_RECEIVED:
        return HOLDING, {"token": 4, "version": 9}, replace(FRESH, version=9)
    if event is E.LOCK_RETURNED:
        return FRESH, {"token": 4}, BASE
    if event is E.LEASE_LOST:
        data = {"token": 9, "holder": "firm@office", "until": 50}
        return HOLDING, data, replace(BASE, last_token=9, holder="firm@office", holder_until=50)
    if event is E.AREA_GONE:
        return BASE, {"reason": "deleted"}, replace(BASE, missing_reason="deleted")
    if event is E.AREA_FOUND:
        return replace(BASE, missing_reason="id-unusable"), {}, BASE
    if event in (E.LEAVE, E.DELETE_FOR_EVERYONE):
        mode = "just-me" if event is E.LEAVE else "everyone"
        return BASE, {}, replace(BASE, mode=mode, step=STEPS[mode][0])
    raise AssertionError(f"no scenario for {event}")


ALLOWED = [(row, source) for row in TABLE for source in row.sources]


@pytest.mark.parametrize(
    "row,source", ALLOWED, ids=[f"{s}-{r.event}" for r, s in ALLOWED]
)
def test_every_allowed_transition(row, source):
    start, data, expected = scenario(row.event, source)
    machine = DataSetMachine(source, start)
    new_state = machine.fire(row.event, **data)
    assert new_state is (row.dest or source)
    assert machine.state is (row.dest or source)
    assert machine.context == expected


DISALLOWED = [(state, event) for state in State for event in Event
              if event.value not in allowed_events(state)]


@pytest.mark.parametrize("state,event", DISALLOWED, ids=[f"{s}-{e}" for s, e in DISALLOWED])
def test_every_disallowed_event_is_a_domain_error(state, event):
    machine = DataSetMachine(state, BASE)
    before = machine.to_dict()
    with pytest.raises(IllegalEvent) as info:
        machine.fire(event, token=99, step="x", reason="deleted", version=99)
    assert info.value.state is state and info.value.event == event.value
    assert f"not allowed while the data set is {state.value}" in str(info.value)
    assert machine.to_dict() == before


def test_every_state_is_reachable_and_every_event_is_used():
    assert {r.dest for r in TABLE if r.dest} | {S.UNSHARED} == set(State)
    assert {r.event for r in TABLE} == set(Event)


@pytest.mark.parametrize(
    "state,context,event,data,reason",
    [
        (S.SHARED_IDLE, BASE, E.LOCK_GRANTED, {"token": 4}, "not newer than 4"),
        (S.LOCKED_BY_ME, HOLDING, E.RENEWED, {"token": 3}, "not newer"),
        (S.LOCKED_BY_ME, FRESH, E.COMMITTED, {"token": 3}, "we hold 4"),
        (S.LOCKED_BY_ME, HOLDING, E.COMMITTED, {"token": 4}, "newest version was not received"),
        (S.LOCKED_BY_ME, HOLDING, E.NEWEST_RECEIVED, {"token": 3}, "we hold 4"),
        (S.LOCKED_BY_ME, HOLDING, E.LEASE_LOST, {"token": 4}, "not newer"),
        (S.SHARED_IDLE, BASE, E.RECEIVED, {"version": 6}, "older"),
        (S.SHARED_IDLE, BASE, E.AREA_GONE, {"reason": "gremlins"}, "reason must be"),
        (S.INITIALIZING, replace(BASE, mode="upload", step="create-area"), E.SETUP_DONE, {},
         "not its last step"),
        (S.INITIALIZING, replace(BASE, mode="upload", step="upload"), E.STEP_REACHED,
         {"step": "create-area"}, "comes before"),
        (S.LEAVING, replace(BASE, mode="just-me", step="receive-latest"), E.STEP_REACHED,
         {"step": "upload"}, "not a step"),
    ],
)
def test_guards_refuse_with_a_reason_and_change_nothing(state, context, event, data, reason):
    machine = DataSetMachine(state, context)
    before = machine.to_dict()
    with pytest.raises(GuardRefused, match=reason):
        machine.fire(event, **data)
    assert machine.to_dict() == before


def test_whole_upload_story_round_trips_through_json_at_every_step():
    machine = DataSetMachine()
    story = [
        (E.START_UPLOAD, {}), (E.STEP_REACHED, {"step": "upload"}),
        (E.STEP_REACHED, {"step": "uploaded", "version": 1}), (E.SETUP_DONE, {}),
        (E.LOCK_GRANTED, {"token": 1}), (E.NEWEST_RECEIVED, {"token": 1}), (E.RENEWED, {"token": 2}),
        (E.COMMITTED, {"token": 2, "version": 2}), (E.LOCK_HELD, {"token": 4, "holder": "c"}),
        (E.LOCK_FREE, {}), (E.DELETE_FOR_EVERYONE, {}),
        (E.STEP_REACHED, {"step": "deleted"}), (E.LEAVE_DONE, {}),
    ]
    for event, data in story:
        machine.fire(event, **data)
        copy = DataSetMachine.from_dict(json.loads(json.dumps(machine.to_dict())))
        assert copy.to_dict() == machine.to_dict()
        machine = copy
    assert machine.state is S.UNSHARED
    assert machine.context == Context(last_token=4, version=2)


def test_a_lock_taken_before_the_newest_version_arrived_cannot_send():
    """An open interrupted while receiving must never lead to a commit of the old copy."""
    machine = DataSetMachine(S.SHARED_IDLE, BASE)
    machine.fire(E.LOCK_GRANTED, token=5)
    copy = DataSetMachine.from_dict(json.loads(json.dumps(machine.to_dict())))  # a later process
    assert copy.context.received is False
    with pytest.raises(GuardRefused, match="not received"):
        copy.fire(E.COMMITTED, token=5, version=8)
    copy.fire(E.RENEWED, token=6)
    assert copy.context.received is False  # renewing does not make the copy newer
    copy.fire(E.NEWEST_RECEIVED, token=6, version=7)
    assert copy.fire(E.COMMITTED, token=6, version=8) is S.SHARED_IDLE


def test_a_new_setup_forgets_the_previous_areas_generations():
    machine = DataSetMachine(S.SHARED_IDLE, Context(last_token=40, version=9))
    machine.fire(E.LEAVE)
    machine.fire(E.STEP_REACHED, step="forget")
    machine.fire(E.LEAVE_DONE)
    machine.fire(E.START_RECEIVE)
    assert machine.context.last_token == 0 and machine.context.version is None


def test_transient_state_persists_its_step_for_resume():
    machine = DataSetMachine()
    machine.fire(E.START_RECEIVE)
    machine.fire(E.STEP_REACHED, step="receive")
    saved = machine.to_dict()
    assert saved["state"] == "initializing"
    assert saved["context"]["mode"] == "receive" and saved["context"]["step"] == "receive"
    resumed = DataSetMachine.from_dict(saved)
    resumed.fire(E.STEP_REACHED, step="received", version=3)
    assert resumed.fire(E.SETUP_DONE) is S.SHARED_IDLE


@pytest.mark.parametrize("bad", [
    {"state": "locked"}, {"state": "Shared-Idle"}, {}, [], {"state": "unshared", "context": {"x": 1}},
])
def test_unknown_persisted_state_or_field_is_an_error(bad):
    with pytest.raises(PersistenceError):
        DataSetMachine.from_dict(bad)


def test_unknown_initial_state_is_not_silently_added():
    with pytest.raises(PersistenceError, match="unknown state 'paused'"):
        DataSetMachine("paused")


def test_fields_without_meaning_are_cleared_on_load():
    machine = DataSetMachine(S.SHARED_IDLE, Context(token=3, holder="x", step="upload"))
    assert machine.context == Context()
