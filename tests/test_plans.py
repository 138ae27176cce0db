"""The command plans and the recovery table of the pure core, walked like the transition table."""

from __future__ import annotations

import pytest

from statemachine import Context, LeaveMode, SetupMode, State, Step
from statemachine.plans import (
    RECOVERY,
    Action,
    Command,
    Failure,
    Reason,
    Recovery,
    Refusal,
    after_setup_failure,
    plan,
    recovery,
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
    (C.LEAVE, S.UNSHARED, Context()): Refusal(Reason.NOT_SHARED),
    (C.RESTORE, S.LOCKED_BY_ME, HOLDING): Refusal(Reason.OPEN_BY_YOU),
    (C.RESTORE, S.SHARED_IDLE, Context()): A.RESTORE,
    (C.SHARE, S.UNSHARED, Context()): A.START_SETUP,
    (C.JOIN, S.INITIALIZING, SETUP): A.RESUME_SETUP,
    (C.SHARE, S.SHARED_IDLE, Context()): Refusal(Reason.ALREADY_SHARED),
    (C.DELETE_AREA, S.LOCKED_BY_ME, HOLDING): Refusal(Reason.OPEN_BY_YOU),
    (C.DELETE_AREA, S.LOCKED_BY_OTHER, Context()): A.DELETE_FOR_EVERYONE,
    (C.UNLOCK, S.LOCKED_BY_OTHER, Context()): A.BREAK_LOCK,
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
