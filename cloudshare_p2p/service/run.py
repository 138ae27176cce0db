"""`run`: open, run a program while renewing the lease, close when it exits."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress

from .. import errors
from ..area import Grant
from ..durations import format_duration
from ..i18n import _
from ..secretstore import SECRET_ENV
from ..settings import DEFAULT_RUN_LEASE, Until
from ..transport import SftpConnection
from .base import ServiceBase
from .dataset import DataSet


class RunCommand(ServiceBase):
    """`run`."""

    def run(self, name: str, command: Sequence[str], lease: int = DEFAULT_RUN_LEASE, note: str = "",
            wait: float | Until | None = None) -> int:
        """Open, run the program while renewing the lease, close when it exits.

        Returns the program's exit status (128 + N when a signal N ended it).
        """
        if not command:
            raise errors.ProgramNotFound(_("no program given"), hint=_("cloudshare run NAME -- PROGRAM "
                                                                       "[ARGS…]"))
        self.ui.say(self.open(name, lease=lease, note=note or f"running {command[0]}", wait=wait).message)
        ds = self._load(name)
        grant = self._grant_of(ds)
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}  # no secrets for the program
        try:
            proc = subprocess.Popen(list(command), env=env)
        except OSError as exc:
            closed = self.close(name).message
            missing = isinstance(exc, FileNotFoundError)
            error = errors.ProgramNotFound if missing else errors.ProgramNotExecutable
            raise error(_("could not start {program}: {reason} ({closed})").format(
                program=command[0], reason=exc.strerror or exc, closed=closed)) from None
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the program
        try:
            lost = self._renew_while_running(ds, grant, proc)
        finally:
            signal.signal(signal.SIGINT, previous)
            proc.wait()
        if lost:
            self.ui.say(_("WARNING: the lease was lost while the program ran; "
                        "closing will keep your work aside"))
        self.ui.say(self.close(name).message)
        code = proc.returncode
        return 128 - code if code < 0 else code

    def _renew_while_running(self, ds: DataSet, grant: Grant, proc: subprocess.Popen) -> bool:
        """Renew at a third of the lease until the program exits; True if the lease was lost.

        Only being fenced is final: other failures are retried (a lease may be renewed as
        long as nobody has claimed the next generation).
        """
        session: SftpConnection | None = None
        lost, retry_at = False, 0.0
        try:
            while True:
                due = max(grant.lease.renew_at, retry_at) - time.monotonic()
                try:
                    proc.wait(timeout=None if lost else max(0.2, due))
                    return lost
                except subprocess.TimeoutExpired:
                    pass
                try:
                    if session is None:
                        session = self.connect(ds.remote)
                    self._new_area(session, ds.area).renew(grant, self.party)
                    self._save_grant(ds, grant)
                except errors.Fenced as exc:
                    self.ui.say(_("WARNING: {error}. Someone else now holds {name}; your changes will be "
                                  "kept aside when the program exits.").format(error=exc, name=ds.name))
                    lost = True
                except Exception as exc:  # noqa: BLE001 - keep supervising the program whatever happens
                    with suppress(Exception):
                        if session is not None:
                            session.close()
                    session = None
                    left = grant.lease.remaining(time.monotonic())
                    self.ui.say(_("warning: could not renew the lease ({error}); retrying ({left} of the "
                                  "lease left)").format(error=exc, left=format_duration(left)))
                    retry_at = time.monotonic() + 2.0
        finally:
            if session is not None:
                session.close()
