"""One method per user command: drives the state machine, the share area and the registry.

No click here: the CLI passes in how to ask for passwords and confirmations and how to
narrate, and turns the `errors.*` this package raises into exit codes.

`Service` is composed of one mixin per command group, each in its own module:
`remotes` (hosts, connection, login passwords, area keys), `status` (data list, history,
add, forget), `setup` (share, join), `openclose` (open, close), `run`, `leave` (leave,
delete-area, breaking a lock), `restore`, `check`, `retention` (keep, prune); and the steps
they share: `locking` (our lock), `receiving` (bringing the local copy up to date),
`observe` (what the host was seen to say), `resume` (settling an interrupted set-up or
stop). `base` holds the common state and the UI hooks; `dataset` the `DataSet` a command
loads once and steps with `DataSet.fire`.
"""

from __future__ import annotations

from .base import UI, Outcome, ServiceBase
from .check import CheckCommand
from .dataset import DataSet
from .leave import LeaveCommands
from .locking import WAIT_POLL_MAX, Locking
from .observe import Observing
from .openclose import OpenClose
from .receiving import Receiving
from .remotes import RemoteCommands
from .restore import RestoreCommand
from .resume import Resuming
from .retention import RetentionCommands
from .run import SECRET_ENV, RunCommand
from .setup import MIN_SHARE_PASSWORD, SetupCommands
from .status import StatusCommands

__all__ = ["MIN_SHARE_PASSWORD", "SECRET_ENV", "UI", "WAIT_POLL_MAX", "DataSet", "Outcome", "Service"]


class Service(RemoteCommands, StatusCommands, SetupCommands, OpenClose, RunCommand, RestoreCommand,
              RetentionCommands, LeaveCommands, CheckCommand, Resuming, Locking, Receiving, Observing,
              ServiceBase):
    """The commands, bound to one home folder (registry, pinned host keys, cache)."""
