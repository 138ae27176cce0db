"""Our lock on a data set's area: taking it (waiting if asked), renewing, giving it back, losing it."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

from statemachine import Event
from statemachine.plans import renewal_to_record, seconds_until_lease_ends

from .. import errors
from ..area import Area, Grant, LockInfo, new_session_id
from ..display import describe_lock
from ..durations import format_duration
from ..i18n import _
from ..settings import Until
from .base import ServiceBase
from .dataset import DataSet

WAIT_POLL_MAX = 5.0


class Locking(ServiceBase):
    """Acquire, hold, renew and release the area's lock for a data set."""

    def _take_lock(self, ds: DataSet, area: Area, lease: int, note: str,
                   wait: float | Until | None) -> Grant:
        """Acquire and record it; a claim the local machine refuses is given back at once."""
        grant = self._acquire_for(ds, area, lease, note, wait)
        try:
            ds.fire(Event.LOCK_GRANTED, f"generation {grant.lease.generation}", grant=grant,
                    token=grant.lease.generation)
        except BaseException:
            with suppress(Exception):
                area.release(grant, self.party)
            raise
        self.live_grants[ds.name] = grant
        return grant

    def _still_holding(self, ds: DataSet, area: Area) -> Grant:
        """The grant this computer recorded, renewed on the host; `Fenced` handling if lost."""
        grant = self._grant_of(ds)
        try:
            area.ensure_holding(grant, self.party)
        except errors.Fenced as exc:
            holder = self._lease_lost(ds, area, str(exc), fields={})
            raise errors.LockedByOther(_("your lock on {name} ran out before the newest version was "
                                         "received; {holder} holds it now").format(
                                             name=ds.name, holder=holder or _('someone else'))) from None
        self._sync_renewal(ds, grant)
        self.live_grants[ds.name] = grant
        return grant

    def _give_back(self, ds: DataSet, area: Area, grant: Grant) -> str:
        """Release a lock whose open did not finish; says what happened, for the user.

        The command's connection may be unusable after an interruption: a new one is tried.
        """
        released = False
        with suppress(Exception):
            released = area.release(grant, self.party)
        if not released:
            with suppress(Exception), self.connect(ds.remote) as session:
                released = self._new_area(session, area.name).release(grant, self.party)
        if not released:
            return _("the lock could not be released; `cloudshare open {name}` receives the newest "
                     "version first, or it expires with its lease").format(name=ds.name)
        ds.fire(Event.LOCK_RETURNED, "open did not finish: lock given back", forget_grant=True,
                token=grant.lease.generation)
        self.live_grants.pop(ds.name, None)
        return _("the lock was released")

    def _acquire_for(self, ds: DataSet, area: Area, lease: int, note: str,
                     wait: float | Until | None = None) -> Grant:
        """Acquire for a data set. The session id is saved before claiming, so a process
        killed right after its claim leaves a lock the next command can take back at once.
        """
        pending = ds.extras.get("pending_session")
        if pending:
            adopted = area.adopt(pending, self.party, lease)
            if adopted is not None:
                self.ui.say(_("{name}: took back the lock an interrupted command had claimed").format(
                    name=ds.name))
                return adopted
        session = new_session_id(self.party)
        ds.set_extras(pending_session=session)
        return self._acquire_waiting(ds, area, lease, note, wait, session)

    def _acquire_waiting(self, ds: DataSet, area: Area, lease: int, note: str,
                         wait: float | Until | None, session: str | None = None) -> Grant:
        """Acquire; while another holds the lock, poll until `wait` runs out (None: do not wait;
        `Until.LEASE_ENDS`: until the holder's lease runs out, as first seen)."""
        deadline = None if wait is None or wait is Until.LEASE_ENDS else time.monotonic() + wait
        while True:
            area.check_interrupt()
            got = self._acquire_once(area, lease, note, session)
            if isinstance(got, Grant):
                return got
            self._note_held(ds, got)
            if wait is None:
                raise errors.LockedByOther(_("{name} is {lock}").format(
                    name=ds.name, lock=describe_lock(got)))
            if wait is Until.LEASE_ENDS:  # the first time the holder is seen: that lease sets the deadline
                remaining = seconds_until_lease_ends(got.status.until, got.server_now)
                deadline, wait = time.monotonic() + remaining, remaining
            else:
                assert deadline is not None
                remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.LockedByOther(_("{name} is still {lock}").format(
                    name=ds.name, lock=describe_lock(got)))
            self.ui.say(_("{name} is {lock}; waiting ({remaining} left)").format(
                name=ds.name, lock=describe_lock(got), remaining=format_duration(remaining)))
            time.sleep(min(WAIT_POLL_MAX, max(0.5, remaining)))

    def _acquire_once(self, area: Area, lease: int, note: str,
                      session: str | None = None) -> Grant | LockInfo:
        """Acquire; a lost race against a lock that is already free again is retried."""
        got = area.acquire(self.party, lease, note, session)
        for _try in range(3):
            if isinstance(got, Grant) or not got.status.claimable:
                break
            got = area.acquire(self.party, lease, note, session)
        return got

    def _acquire_or_raise(self, area: Area, lease: int, note: str) -> Grant:
        """Acquire at once, or `errors.LockedByOther`."""
        got = self._acquire_once(area, lease, note)
        if not isinstance(got, Grant):
            raise errors.LockedByOther(_("area {name} is {lock}").format(
                name=area.name, lock=describe_lock(got)))
        return got

    def _sync_renewal(self, ds: DataSet, grant: Grant) -> None:
        """Record a renewal made on the way (e.g. a close in a later process renews first)."""
        if renewal_to_record(ds.state, ds.context, grant.lease.generation):
            self._save_grant(ds, grant)

    def _save_grant(self, ds: DataSet, grant: Grant) -> None:
        ds.fire(Event.RENEWED, f"generation {grant.lease.generation}", grant=grant,
                token=grant.lease.generation)

    def _lease_lost(self, ds: DataSet, area: Area, detail: str, fields: dict[str, Any]) -> str | None:
        """Record that a newer holder exists (fenced); returns who holds the lock now."""
        obs, record = area.observe_lock()
        holder = record.get("holder")
        holder = holder.get("name") if isinstance(holder, dict) else None
        token = max(obs.generation, (ds.context.token or 0) + 1)
        ds.fire(Event.LEASE_LOST, detail, forget_grant=True, fields=fields, token=token, holder=holder)
        self.live_grants.pop(ds.name, None)
        return holder
