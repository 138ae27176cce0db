"""Settling what an interrupted set-up or stop left behind, before another command goes on."""

from __future__ import annotations

from statemachine import Event
from statemachine.plans import Command, Interrupted, Recovery, interrupted, recovery, resumed_command

from ..i18n import _
from .base import ServiceBase
from .dataset import DataSet


class Resuming(ServiceBase):
    """`_resume`: the core's recovery table, performed."""

    def _resume(self, ds: DataSet, command: Command) -> None:
        """A process that died in `initializing` or `leaving` is settled now, as the core's
        recovery table says for `command` (resume, finish or roll back)."""
        kind = interrupted(ds.state)
        if kind is None:
            return
        ctx = ds.context
        if kind is Interrupted.SETUP:
            self.ui.say(_("{name}: an earlier setup stopped at step '{step}'; resuming").format(
                name=ds.name, step=ctx.step))
        else:
            self.ui.say(_("{name}: an earlier stop ({mode}) was interrupted at '{step}'").format(
                name=ds.name, mode=ctx.mode, step=ctx.step))
        todo = recovery(command, ctx)
        if todo is Recovery.RESUME_SETUP:
            self._check_target(ds.remote, ds.area)
            if resumed_command(ctx) is Command.SHARE:
                self._share_dataset(ds, ds.remote, ds.area, yes=True)
            else:
                self._join_dataset(ds, ds.remote, ds.area)
        elif todo is Recovery.FINISH_LEAVE:
            self._leave_steps(ds)
        elif todo is Recovery.FINISH_DELETE_IF_GONE:
            self._finish_interrupted_delete(ds)
        else:
            ds.fire(Event.LEAVE_ABORTED, "interrupted stop rolled back")
