"""The command plans and the recovery table of the pure core, walked like the transition table."""

from __future__ import annotations

import pytest

from statemachine import DEFAULT_SLACK, AreaGoneReason, Context, Event, LeaveMode, SetupMode, State, Step
from statemachine.plans import (
    RECOVERY,
    Action,
    Command,
    Failure,
    Holder,
    Interrupted,
    Reason,
    Recovery,
    Refusal,
    ShareNext,
    after_setup_failure,
    area_answers,
    area_gone_recorded,
    deletion_recorded,
    events_after_breaking,
    events_before_delete,
    interrupted,
    is_shared,
    join_records_password,
    last_seen_holder,
    leave_receives_first,
    lock_seen,
    plan,
    recovery,
    refresh_observes,
    renewal_to_record,
    resumed_command,
    seconds_until_lease_ends,
    setup_failure_rolls_back,
    share_next,
)

S, C, A = State, Command, Action
HOLDING = Context(token=4, received=True)
HALF_OPEN = Context(token=4, received=False)  # the lock taken, the newest version not yet in place
DELETED = Context(missing_reason="deleted")
UNUSABLE = Context(missing_reason="id-unusable")
SETUP = Context(mode="upload", step="upload")
STOPPING = Context(mode="just-me", step="receive-latest")

# The expectations, written out by hand from flows.md and the issues (not derived from the code).
EXPECTED = {
    (C.OPEN, S.SHARED_IDLE, Context()): A.TAKE_LOCK,
    (C.OPEN, S.LOCKED_BY_OTHER, Context()): A.TAKE_LOCK,
    (C.OPEN, S.LOCKED_BY_ME, HOLDING): A.ALREADY_OPEN,
    (C.OPEN, S.LOCKED_BY_ME, HALF_OPEN): A.RECEIVE_UNDER_LOCK,
    (C.OPEN, S.AREA_MISSING, DELETED): A.TAKE_LOCK,
    (C.OPEN, S.INITIALIZING, SETUP): A.RECOVER_FIRST,
    (C.OPEN, S.LEAVING, STOPPING): A.RECOVER_FIRST,
    (C.OPEN, S.UNSHARED, Context()): Refusal(Reason.NOT_SHARED),
    (C.OPEN_READ_ONLY, S.SHARED_IDLE, Context()): A.RECEIVE_ONLY,
    (C.OPEN_READ_ONLY, S.LOCKED_BY_ME, HALF_OPEN): A.RECEIVE_UNDER_LOCK,
    (C.CLOSE, S.LOCKED_BY_ME, HOLDING): A.SEND_AND_RELEASE,
    (C.CLOSE, S.LOCKED_BY_ME, HALF_OPEN): A.RECEIVE_THEN_SEND,
    (C.CLOSE, S.SHARED_IDLE, Context()): Refusal(Reason.NOT_OPEN_BY_YOU),
    (C.CLOSE, S.LOCKED_BY_OTHER, Context()): Refusal(Reason.NOT_OPEN_BY_YOU),
    (C.CLOSE, S.AREA_MISSING, DELETED): Refusal(Reason.AREA_DELETED),
    (C.CLOSE, S.AREA_MISSING, UNUSABLE): Refusal(Reason.ID_UNUSABLE),
    (C.LEAVE, S.SHARED_IDLE, Context()): A.LEAVE_AFTER_RECEIVING,
    (C.LEAVE, S.LOCKED_BY_OTHER, Context()): A.LEAVE_AFTER_RECEIVING,
    (C.LEAVE, S.LOCKED_BY_ME, HOLDING): A.RELEASE_THEN_LEAVE,
    (C.LEAVE, S.AREA_MISSING, UNUSABLE): A.LEAVE_WITHOUT_RECEIVING,
    (C.LEAVE, S.INITIALIZING, SETUP): A.ABANDON_SETUP,
    (C.LEAVE, S.LEAVING, STOPPING): A.SETTLE_STOP,
    (C.LEAVE, S.UNSHARED, Context()): Refusal(Reason.NOT_SHARED),
    (C.RESTORE, S.LOCKED_BY_ME, HOLDING): Refusal(Reason.OPEN_BY_YOU),
    (C.RESTORE, S.SHARED_IDLE, Context()): A.RESTORE,
    (C.SHARE, S.UNSHARED, Context()): A.START_SETUP,
    (C.JOIN, S.INITIALIZING, SETUP): A.RESUME_SETUP,
    (C.SHARE, S.SHARED_IDLE, Context()): Refusal(Reason.ALREADY_SHARED),
    (C.DELETE_AREA, S.LOCKED_BY_ME, HOLDING): Refusal(Reason.OPEN_BY_YOU),
    (C.DELETE_AREA, S.LOCKED_BY_OTHER, Context()): A.DELETE_FOR_EVERYONE,
    (C.BREAK_LOCK, S.LOCKED_BY_OTHER, Context()): A.BREAK_LOCK,
    (C.HISTORY, S.AREA_MISSING, DELETED): A.READ_HISTORY,
}


@pytest.mark.parametrize("key", list(EXPECTED), ids=[f"{c}-{s}-{i}" for i, (c, s, _) in enumerate(EXPECTED)])
def test_each_command_does_what_the_flows_say(key):
    command, state, ctx = key
    assert plan(command, state, ctx) == EXPECTED[key]


CONTEXTS = [Context(), HOLDING, HALF_OPEN, DELETED, UNUSABLE, SETUP, STOPPING]


@pytest.mark.parametrize("command", list(Command))
@pytest.mark.parametrize("state", list(State))
def test_every_command_has_a_decision_in_every_state(command, state):
    for ctx in CONTEXTS:
        decision = plan(command, state, ctx)
        assert isinstance(decision, Action | Refusal)
        if state is S.UNSHARED and command not in (C.SHARE, C.JOIN):
            assert decision == Refusal(Reason.NOT_SHARED)  # said in plain words by the shell


def test_nothing_can_send_before_the_newest_version_is_in_place():
    sending = {A.SEND_AND_RELEASE}
    for command in Command:
        assert plan(command, S.LOCKED_BY_ME, HALF_OPEN) not in sending


def test_every_recorded_step_has_a_recovery():
    for mode, steps in (
        (SetupMode.UPLOAD, (Step.CREATE_AREA, Step.UPLOAD, Step.UPLOADED)),
        (SetupMode.RECEIVE, (Step.CHECK_PASSWORD, Step.RECEIVE, Step.RECEIVED)),
        (LeaveMode.JUST_ME, (Step.RECEIVE_LATEST, Step.FORGET)),
        (LeaveMode.EVERYONE, (Step.RECEIVE_LATEST, Step.LOCK, Step.DELETE, Step.DELETED)),
    ):
        for step in steps:
            assert (mode, step) in RECOVERY


@pytest.mark.parametrize("command,ctx,expected", [
    (C.OPEN, Context(mode="upload", step="upload"), Recovery.RESUME_SETUP),
    (C.OPEN, Context(mode="receive", step="check-password"), Recovery.RESUME_SETUP),
    (C.OPEN, Context(mode="just-me", step="receive-latest"), Recovery.ROLL_BACK_LEAVE),
    (C.LEAVE, Context(mode="just-me", step="receive-latest"), Recovery.FINISH_LEAVE),
    (C.DELETE_AREA, Context(mode="just-me", step="forget"), Recovery.FINISH_LEAVE),
    (C.OPEN, Context(mode="everyone", step="lock"), Recovery.ROLL_BACK_LEAVE),
    (C.LEAVE, Context(mode="everyone", step="delete"), Recovery.FINISH_DELETE_IF_GONE),
    (C.OPEN, Context(mode="everyone", step="deleted"), Recovery.FINISH_DELETE_IF_GONE),
])
def test_recovery_of_interrupted_commands(command, ctx, expected):
    assert recovery(command, ctx) is expected


@pytest.mark.parametrize("ctx,failure,roll_back", [
    (Context(mode="upload", step="create-area"), Failure.NETWORK, True),
    (Context(mode="upload", step="upload"), Failure.NETWORK, False),  # keep the area, resume later
    (Context(mode="upload", step="upload"), Failure.OTHER, False),
    (Context(mode="upload", step="upload"), Failure.AREA_GONE, True),
    (Context(mode="receive", step="receive"), Failure.NETWORK, False),
    (Context(mode="receive", step="receive"), Failure.OTHER, True),
    (Context(mode="receive", step="check-password"), Failure.OTHER, True),
])
def test_a_failed_setup_rolls_back_or_waits_to_resume(ctx, failure, roll_back):
    assert after_setup_failure(ctx, failure) is roll_back


def test_only_a_setup_under_way_rolls_back():
    ctx = Context(mode="receive", step="receive")
    assert setup_failure_rolls_back(S.INITIALIZING, ctx, Failure.OTHER)
    assert not setup_failure_rolls_back(S.SHARED_IDLE, ctx, Failure.OTHER)
    assert not setup_failure_rolls_back(S.INITIALIZING, ctx, Failure.NETWORK)


@pytest.mark.parametrize("step,expected", [
    (Step.CREATE_AREA, ShareNext.CREATE_AREA),
    (Step.UPLOAD, ShareNext.CHECK_AREA),
    (Step.UPLOADED, ShareNext.FINISH),
])
def test_a_share_goes_on_from_its_recorded_step(step, expected):
    assert share_next(Context(mode="upload", step=step)) is expected


def test_a_join_records_the_password_once():
    assert join_records_password(Context(mode="receive", step="check-password"))
    assert not join_records_password(Context(mode="receive", step="receive"))


@pytest.mark.parametrize("state", list(State))
def test_the_data_list_follows_the_state(state):
    assert is_shared(state) is (state is not S.UNSHARED)
    assert refresh_observes(state) is (state in (S.SHARED_IDLE, S.LOCKED_BY_OTHER, S.AREA_MISSING))
    expected = {S.LOCKED_BY_ME: Holder.ME, S.LOCKED_BY_OTHER: Holder.OTHER}.get(state, Holder.NOBODY)
    assert last_seen_holder(state) is expected
    assert interrupted(state) is {S.INITIALIZING: Interrupted.SETUP, S.LEAVING: Interrupted.STOP}.get(state)
    assert area_answers(state) is (Event.AREA_FOUND if state is S.AREA_MISSING else None)


@pytest.mark.parametrize("state,free,expected", [
    (S.LOCKED_BY_OTHER, True, Event.LOCK_FREE),
    (S.SHARED_IDLE, True, None),
    (S.LOCKED_BY_ME, True, None),
    (S.SHARED_IDLE, False, Event.LOCK_HELD),
    (S.LOCKED_BY_OTHER, False, Event.LOCK_HELD),
    (S.LOCKED_BY_ME, False, None),  # our own lock, seen on the host
    (S.AREA_MISSING, False, None),
])
def test_a_lock_seen_on_the_host_is_recorded(state, free, expected):
    assert lock_seen(state, free) is expected


@pytest.mark.parametrize("state,reason,expected", [
    (S.SHARED_IDLE, AreaGoneReason.DELETED, True),
    (S.LOCKED_BY_ME, AreaGoneReason.DELETED, True),
    (S.LOCKED_BY_ME, AreaGoneReason.ID_UNUSABLE, False),  # keep the lock: close sends later
    (S.LOCKED_BY_OTHER, AreaGoneReason.ID_UNUSABLE, True),
    (S.AREA_MISSING, AreaGoneReason.DELETED, False),  # already recorded
    (S.UNSHARED, AreaGoneReason.DELETED, False),
])
def test_a_missing_area_is_recorded_unless_we_hold_the_lock(state, reason, expected):
    assert area_gone_recorded(state, reason) is expected


def test_only_a_newer_renewal_of_our_lock_is_recorded():
    assert renewal_to_record(S.LOCKED_BY_ME, Context(token=4), 5)
    assert not renewal_to_record(S.LOCKED_BY_ME, Context(token=5), 5)
    assert not renewal_to_record(S.SHARED_IDLE, Context(), 5)


def test_waiting_for_a_lease_ends_after_its_slack():
    assert seconds_until_lease_ends(100.0, 40.0) == 60.0 + DEFAULT_SLACK + 1
    assert seconds_until_lease_ends(None, 0.0) == DEFAULT_SLACK + 1


def test_stopping_steps():
    assert leave_receives_first(Context(mode="just-me", step="receive-latest"))
    assert not leave_receives_first(Context(mode="everyone", step="receive-latest"))
    assert not leave_receives_first(Context(mode="just-me", step="forget"))
    assert deletion_recorded(Context(mode="everyone", step="deleted"))
    assert not deletion_recorded(Context(mode="everyone", step="delete"))


@pytest.mark.parametrize("state,before,after", [
    (S.SHARED_IDLE, (), ()),
    (S.AREA_MISSING, (Event.AREA_FOUND,), ()),
    (S.LOCKED_BY_OTHER, (Event.LOCK_FREE,), (Event.LOCK_FREE,)),
    (S.LOCKED_BY_ME, (), (Event.LEASE_LOST, Event.LOCK_FREE)),
])
def test_deleting_and_breaking_a_lock_record_what_they_saw(state, before, after):
    assert events_before_delete(state) == before
    assert events_after_breaking(state) == after


def test_an_interrupted_setup_goes_on_with_its_own_command():
    assert resumed_command(Context(mode="upload", step="upload")) is C.SHARE
    assert resumed_command(Context(mode="receive", step="receive")) is C.JOIN
