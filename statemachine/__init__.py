"""The pure core: states, events, guards and lease arithmetic of a shared data set.

No I/O happens here (a test enforces it): the shell observes the host and feeds events in.
"""

from .lease import (
    DEFAULT_SLACK,
    HolderLease,
    LockKind,
    LockObservation,
    LockStatus,
    Verdict,
    claim_lease,
    judge,
)
from .machine import (
    TABLE,
    Context,
    DataSetMachine,
    GuardRefused,
    IllegalEvent,
    PersistenceError,
    StateMachineError,
    allowed_events,
)
from .states import STEPS, AreaGoneReason, Event, LeaveMode, SetupMode, State, Step

__all__ = [
    "DEFAULT_SLACK", "STEPS", "TABLE", "AreaGoneReason", "Context", "DataSetMachine", "Event",
    "GuardRefused", "HolderLease", "IllegalEvent", "LeaveMode", "LockKind", "LockObservation",
    "LockStatus", "PersistenceError", "SetupMode", "State", "Step", "StateMachineError", "Verdict",
    "allowed_events", "claim_lease", "judge",
]
