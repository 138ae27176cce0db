"""The states and events of one shared data set, spelled as users see them."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where one data set stands, on one person's computer."""

    UNSHARED = "unshared"  # local data only; no Cloud Share
    INITIALIZING = "initializing"  # transient: starting to share (upload or receive)
    SHARED_IDLE = "shared-idle"  # shared; nobody is known to hold the lock
    LOCKED_BY_ME = "locked-by-me"  # I hold the lease: I may change and send the data
    LOCKED_BY_OTHER = "locked-by-other"  # another party holds the lease
    AREA_MISSING = "area-missing"  # the area's data is gone or the communication ID is unusable
    LEAVING = "leaving"  # transient: stopping (for me only, or deleting for everyone)


TRANSIENT = frozenset({State.INITIALIZING, State.LEAVING})


class Event(StrEnum):
    """Everything that can happen to a data set (one per flow step of flows.md)."""

    START_UPLOAD = "start_upload"  # "upload your local data and start Cloud Share"
    START_RECEIVE = "start_receive"  # receive the area's data and start sharing
    STEP_REACHED = "step_reached"  # a transient state reached its next recorded step
    SETUP_DONE = "setup_done"
    SETUP_FAILED = "setup_failed"  # roll back to unshared
    LOCK_GRANTED = "lock_granted"  # open: we claimed the next generation (newest not received yet)
    NEWEST_RECEIVED = "newest_received"  # open: the newest version is received and in place
    LOCK_RETURNED = "lock_returned"  # the lock was given back without sending (interrupted open)
    LOCK_HELD = "lock_held"  # open: another party holds a live lease
    LOCK_FREE = "lock_free"  # the other's lease was released or has expired
    RECEIVED = "received"  # a newer version was received without the lock
    RENEWED = "renewed"  # we claimed a newer generation of our own lease
    COMMITTED = "committed"  # close: sent (or nothing to send) and released
    LEASE_LOST = "lease_lost"  # fenced: a newer holder exists
    AREA_GONE = "area_gone"  # data deleted, or communication ID unusable
    AREA_FOUND = "area_found"  # the area answers again
    LEAVE = "leave"  # stop Cloud Share for me only
    DELETE_FOR_EVERYONE = "delete_for_everyone"  # delete the shared data on the host
    LEAVE_DONE = "leave_done"
    LEAVE_ABORTED = "leave_aborted"  # roll back a leave that cannot finish


class SetupMode(StrEnum):
    UPLOAD = "upload"
    RECEIVE = "receive"


class LeaveMode(StrEnum):
    JUST_ME = "just-me"
    EVERYONE = "everyone"


class AreaGoneReason(StrEnum):
    DELETED = "deleted"  # the warning case of the page: the data was deleted
    ID_UNUSABLE = "id-unusable"  # the error case: the communication ID cannot be used


class Step(StrEnum):
    """The recorded steps of the transient states (persisted: never rename a value)."""

    CREATE_AREA = "create-area"  # share: the area is being created
    UPLOAD = "upload"  # share: the area exists; the first version is being sent
    UPLOADED = "uploaded"  # share: the first version is on the host
    CHECK_PASSWORD = "check-password"  # join: the share password is being checked
    RECEIVE = "receive"  # join: the password matched; the newest version is being received
    RECEIVED = "received"  # join: the newest version is in place
    RECEIVE_LATEST = "receive-latest"  # leave / delete: receive the newest version first
    FORGET = "forget"  # leave: forget the area on this computer
    LOCK = "lock"  # delete: take the lock
    DELETE = "delete"  # delete: the area is being deleted on the host
    DELETED = "deleted"  # delete: the area is gone from the host


# The ordered steps of each transient mode. A process that dies in a transient state
# resumes from the recorded step (or rolls back) on the next command.
STEPS: dict[str, tuple[str, ...]] = {
    SetupMode.UPLOAD: (Step.CREATE_AREA, Step.UPLOAD, Step.UPLOADED),
    SetupMode.RECEIVE: (Step.CHECK_PASSWORD, Step.RECEIVE, Step.RECEIVED),
    LeaveMode.JUST_ME: (Step.RECEIVE_LATEST, Step.FORGET),
    LeaveMode.EVERYONE: (Step.RECEIVE_LATEST, Step.LOCK, Step.DELETE, Step.DELETED),
}
