"""What each user command does in each state: the decisions, as data, without I/O.

The shell (``cloudshare_p2p.service``) asks `plan(command, state, context)` before it acts
and performs the returned `Action`, or words the `Refusal` for the person. A transient
state left behind by an interrupted command is settled first, by `recovery`. Like the
transition table, both are plain tables so that a test can walk every pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .lease import DEFAULT_SLACK
from .machine import Context, allowed_events
from .states import TRANSIENT, AreaGoneReason, Event, LeaveMode, SetupMode, State, Step

S = State


class Command(StrEnum):
    """The user commands that act on one data set."""

    OPEN = "open"
    OPEN_READ_ONLY = "open-read-only"
    CLOSE = "close"
    LEAVE = "leave"
    RESTORE = "restore"
    BREAK_LOCK = "break-lock"  # the `unlock` command: break another party's lock
    HISTORY = "history"
    SHARE = "share"
    JOIN = "join"
    DELETE_AREA = "delete-area"


class Action(StrEnum):
    """What the shell does next."""

    RECOVER_FIRST = "recover-first"  # a transient state: settle it (`recovery`), then plan again
    TAKE_LOCK = "take-lock"  # claim the lock, then receive the newest version under it
    RECEIVE_UNDER_LOCK = "receive-under-lock"  # ours, but the newest version is not in place yet
    ALREADY_OPEN = "already-open"  # ours and the newest version is in place: nothing to do
    RECEIVE_ONLY = "receive-only"  # read-only: receive the newest version without the lock
    SEND_AND_RELEASE = "send-and-release"  # send the new version (if changed) and release
    RECEIVE_THEN_SEND = "receive-then-send"  # the open was interrupted: receive first, never send old
    LEAVE_AFTER_RECEIVING = "leave-after-receiving"  # stop for me; receive the newest version first
    LEAVE_WITHOUT_RECEIVING = "leave-without-receiving"  # the area is missing: nothing to receive
    RELEASE_THEN_LEAVE = "release-then-leave"  # holding the lock: give it back unsent, say so
    ABANDON_SETUP = "abandon-setup"  # leave during an unfinished set-up: roll it back
    SETTLE_STOP = "settle-stop"  # leave again after an interrupted stop: settle it (`recovery`), no more
    RESTORE = "restore"  # make an old version the newest (takes the lock briefly)
    BREAK_LOCK = "break-lock"
    READ_HISTORY = "read-history"
    START_SETUP = "start-setup"  # share / join from unshared
    RESUME_SETUP = "resume-setup"  # share / join again after an interrupted set-up
    DELETE_FOR_EVERYONE = "delete-for-everyone"


class Reason(StrEnum):
    """Why a command is refused (the shell puts it in plain words with what to do next)."""

    NOT_SHARED = "not-shared"
    OPEN_BY_YOU = "open-by-you"  # close it first
    NOT_OPEN_BY_YOU = "not-open-by-you"  # open it first
    AREA_DELETED = "area-deleted"  # the page's warning case (exit 4)
    ID_UNUSABLE = "id-unusable"  # the page's error case (exit 5)
    ALREADY_SHARED = "already-shared"


@dataclass(frozen=True)
class Refusal:
    """The command cannot run in this state; nothing was changed."""

    reason: Reason


Decision = Action | Refusal

_SHARED = (S.SHARED_IDLE, S.LOCKED_BY_OTHER)


def _missing(ctx: Context) -> Refusal:
    unusable = ctx.missing_reason == AreaGoneReason.ID_UNUSABLE
    return Refusal(Reason.ID_UNUSABLE if unusable else Reason.AREA_DELETED)


def _open(state: State, ctx: Context) -> Decision:
    if state is S.LOCKED_BY_ME:
        return Action.ALREADY_OPEN if ctx.received else Action.RECEIVE_UNDER_LOCK
    return Action.TAKE_LOCK  # shared-idle, locked-by-other, area-missing (the area may answer again)


def _open_read_only(state: State, ctx: Context) -> Decision:
    return _open(state, ctx) if state is S.LOCKED_BY_ME else Action.RECEIVE_ONLY


def _close(state: State, ctx: Context) -> Decision:
    if state is S.AREA_MISSING:
        return _missing(ctx)
    if state is not S.LOCKED_BY_ME:
        return Refusal(Reason.NOT_OPEN_BY_YOU)
    return Action.SEND_AND_RELEASE if ctx.received else Action.RECEIVE_THEN_SEND


def _leave(state: State, ctx: Context) -> Decision:
    return {
        S.INITIALIZING: Action.ABANDON_SETUP,
        S.LOCKED_BY_ME: Action.RELEASE_THEN_LEAVE,
        S.AREA_MISSING: Action.LEAVE_WITHOUT_RECEIVING,
        S.LEAVING: Action.SETTLE_STOP,
    }.get(state, Action.LEAVE_AFTER_RECEIVING)


def _restore(state: State, ctx: Context) -> Decision:
    return Refusal(Reason.OPEN_BY_YOU) if state is S.LOCKED_BY_ME else Action.RESTORE


def _share_or_join(state: State, ctx: Context) -> Decision:
    if state is S.INITIALIZING:
        return Action.RESUME_SETUP
    return Action.START_SETUP if state is S.UNSHARED else Refusal(Reason.ALREADY_SHARED)


def _delete(state: State, ctx: Context) -> Decision:
    return Refusal(Reason.OPEN_BY_YOU) if state is S.LOCKED_BY_ME else Action.DELETE_FOR_EVERYONE


_PLANS = {
    Command.OPEN: _open,
    Command.OPEN_READ_ONLY: _open_read_only,
    Command.CLOSE: _close,
    Command.LEAVE: _leave,
    Command.RESTORE: _restore,
    Command.BREAK_LOCK: lambda state, ctx: Action.BREAK_LOCK,
    Command.HISTORY: lambda state, ctx: Action.READ_HISTORY,
    Command.SHARE: _share_or_join,
    Command.JOIN: _share_or_join,
    Command.DELETE_AREA: _delete,
}

# Commands that settle an interrupted set-up or stop themselves (they must not recover first).
_SETTLES_ITSELF = {
    Command.SHARE: (S.INITIALIZING,), Command.JOIN: (S.INITIALIZING,),
    Command.LEAVE: (S.INITIALIZING, S.LEAVING),
}


def plan(command: Command, state: State, ctx: Context) -> Decision:
    """What `command` does from `state`: an action for the shell, or a refusal to word.

    Every command refuses an unshared data set except share and join (and `leave` says
    there is nothing to leave); a transient state is recovered first (see `recovery`).
    """
    if state is S.UNSHARED and command not in (Command.SHARE, Command.JOIN):
        return Refusal(Reason.NOT_SHARED)
    if state in (S.INITIALIZING, S.LEAVING) and state not in _SETTLES_ITSELF.get(command, ()):
        return Action.RECOVER_FIRST
    return _PLANS[command](state, ctx)


# --- recovery of interrupted commands ----------------------------------------------------------


class Recovery(StrEnum):
    """How an interrupted set-up or stop is settled by the next command."""

    RESUME_SETUP = "resume-setup"  # continue from the recorded step
    FINISH_LEAVE = "finish-leave"  # the stop for me only is completed
    ROLL_BACK_LEAVE = "roll-back-leave"  # back to shared-idle: the data set is still shared
    FINISH_DELETE_IF_GONE = "finish-delete-if-gone"  # gone on the host: done; else roll back


RECOVERY: dict[tuple[str, str], Recovery] = {
    **{(SetupMode.UPLOAD, step): Recovery.RESUME_SETUP
       for step in (Step.CREATE_AREA, Step.UPLOAD, Step.UPLOADED)},
    **{(SetupMode.RECEIVE, step): Recovery.RESUME_SETUP
       for step in (Step.CHECK_PASSWORD, Step.RECEIVE, Step.RECEIVED)},
    (LeaveMode.JUST_ME, Step.RECEIVE_LATEST): Recovery.ROLL_BACK_LEAVE,
    (LeaveMode.JUST_ME, Step.FORGET): Recovery.ROLL_BACK_LEAVE,
    (LeaveMode.EVERYONE, Step.RECEIVE_LATEST): Recovery.ROLL_BACK_LEAVE,
    (LeaveMode.EVERYONE, Step.LOCK): Recovery.ROLL_BACK_LEAVE,
    (LeaveMode.EVERYONE, Step.DELETE): Recovery.FINISH_DELETE_IF_GONE,
    (LeaveMode.EVERYONE, Step.DELETED): Recovery.FINISH_DELETE_IF_GONE,
}
"""From (mode, step reached), what any other command does first."""


def recovery(command: Command, ctx: Context) -> Recovery:
    """How `command` settles the transient state recorded in `ctx`.

    An interrupted stop for me only is finished by `leave` and `delete-area` (the person
    asked to stop) and rolled back by every other command.
    """
    found = RECOVERY.get((ctx.mode or "", ctx.step or ""))
    if found is None:
        return Recovery.RESUME_SETUP if ctx.mode in (SetupMode.UPLOAD, SetupMode.RECEIVE) \
            else Recovery.ROLL_BACK_LEAVE
    if ctx.mode == LeaveMode.JUST_ME and command in (Command.LEAVE, Command.DELETE_AREA):
        return Recovery.FINISH_LEAVE
    return found


def resumed_command(ctx: Context) -> Command:
    """Which set-up command an interrupted set-up (`Recovery.RESUME_SETUP`) goes on with."""
    return Command.SHARE if ctx.mode == SetupMode.UPLOAD else Command.JOIN


class Failure(StrEnum):
    """What kind of failure stopped a set-up."""

    NETWORK = "network"  # the host could not be reached or a transfer broke off: try again later
    AREA_GONE = "area-gone"
    OTHER = "other"  # wrong password, refused, local disk…


def after_setup_failure(ctx: Context, failure: Failure) -> bool:
    """True: roll the set-up back to unshared; False: keep it to resume on the next command.

    Early steps always roll back (nothing was created yet); a missing area always does; a
    receive rolls back unless the network failed; an upload past creating its area keeps
    its area to resume (a new area cannot be made under the same name).
    """
    early = ctx.step in (Step.CREATE_AREA, Step.CHECK_PASSWORD)
    receiving = ctx.mode == SetupMode.RECEIVE
    return early or failure is Failure.AREA_GONE or (receiving and failure is not Failure.NETWORK)


def setup_failure_rolls_back(state: State, ctx: Context, failure: Failure) -> bool:
    """`after_setup_failure` for a data set in any state: only a set-up under way rolls back."""
    return state is S.INITIALIZING and after_setup_failure(ctx, failure)


class ShareNext(StrEnum):
    """Where `share` goes on from the step its set-up has reached."""

    CREATE_AREA = "create-area"  # a new area is made (the share password is checked first)
    CHECK_AREA = "check-area"  # resumed: the area this set-up created must still be ours, then upload
    FINISH = "finish"  # resumed after the upload: only record that the set-up is done


def share_next(ctx: Context) -> ShareNext:
    """The next part of a share set-up, from the step recorded in `ctx`."""
    if ctx.step == Step.UPLOADED:
        return ShareNext.FINISH
    return ShareNext.CREATE_AREA if ctx.step == Step.CREATE_AREA else ShareNext.CHECK_AREA


def join_records_password(ctx: Context) -> bool:
    """Does a join still have to record that the share password matched?"""
    return ctx.step == Step.CHECK_PASSWORD


# --- observations turned into events -----------------------------------------------------------


def is_shared(state: State) -> bool:
    """Is the data set shared (or on its way in or out)? Unshared: a local registration only."""
    return state is not S.UNSHARED


class Interrupted(StrEnum):
    """Which kind of command was interrupted, leaving a transient state behind."""

    SETUP = "setup"
    STOP = "stop"


def interrupted(state: State) -> Interrupted | None:
    """The interrupted command a transient state stands for (None: nothing to settle)."""
    if state not in TRANSIENT:
        return None
    return Interrupted.SETUP if state is S.INITIALIZING else Interrupted.STOP


def refresh_observes(state: State) -> bool:
    """Does `status --refresh` look this data set's lock up on the host?"""
    return state in (*_SHARED, S.AREA_MISSING)


def lock_seen(state: State, free: bool) -> Event | None:
    """The event recording a lock seen on the host (free, or held by someone), if any."""
    if free:
        return Event.LOCK_FREE if state is S.LOCKED_BY_OTHER else None
    return Event.LOCK_HELD if state in _SHARED else None


def area_gone_recorded(state: State, reason: AreaGoneReason) -> bool:
    """Is an area that is gone (or unreachable) recorded as missing?

    A holder whose communication ID fails keeps its lock: once the login works again,
    `close` sends the work.
    """
    if reason is AreaGoneReason.ID_UNUSABLE and state is S.LOCKED_BY_ME:
        return False
    return Event.AREA_GONE.value in allowed_events(state)


def area_answers(state: State) -> Event | None:
    """The event recording that the area answers again, if it was missing."""
    return Event.AREA_FOUND if state is S.AREA_MISSING else None


class Holder(StrEnum):
    """Who holds the lock, as last seen on this computer."""

    ME = "me"
    OTHER = "other"
    NOBODY = "nobody"


def last_seen_holder(state: State) -> Holder:
    """Who holds the lock as this computer last saw it (the data list shows it)."""
    return {S.LOCKED_BY_ME: Holder.ME, S.LOCKED_BY_OTHER: Holder.OTHER}.get(state, Holder.NOBODY)


def renewal_to_record(state: State, ctx: Context, generation: int) -> bool:
    """Is a lease renewed on the host (to `generation`) newer than the one recorded?"""
    return state is S.LOCKED_BY_ME and generation > (ctx.token or 0)


def seconds_until_lease_ends(until: float | None, server_now: float) -> float:
    """How long to wait for a holder's lease to run out (with the slack of the lease rules)."""
    return (until or 0) + DEFAULT_SLACK + 1 - server_now


# --- stopping -------------------------------------------------------------------------------------


def leave_receives_first(ctx: Context) -> bool:
    """Does a stop for me only still have to receive the newest version first?"""
    return ctx.step == Step.RECEIVE_LATEST and ctx.mode == LeaveMode.JUST_ME


def events_before_delete(state: State) -> tuple[Event, ...]:
    """What to record before deleting for everyone: the area answers, the lock is to be checked."""
    return {S.AREA_MISSING: (Event.AREA_FOUND,), S.LOCKED_BY_OTHER: (Event.LOCK_FREE,)}.get(state, ())


def events_after_breaking(state: State) -> tuple[Event, ...]:
    """What a broken lock records: our own lease lost (then free), or another's lock free."""
    return {S.LOCKED_BY_ME: (Event.LEASE_LOST, Event.LOCK_FREE),
            S.LOCKED_BY_OTHER: (Event.LOCK_FREE,)}.get(state, ())


def deletion_recorded(ctx: Context) -> bool:
    """Has an interrupted delete for everyone already recorded the area as deleted?"""
    return ctx.step == Step.DELETED
