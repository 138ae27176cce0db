"""`open` (take the lock and receive the newest version, or only receive) and `close` (send the
new version if changed, release the lock), with what happens when either is cut short."""

from __future__ import annotations

from contextlib import suppress
from typing import NoReturn

from statemachine import Event
from statemachine.plans import Action, Command

from .. import errors
from ..area import Area, Grant, iso_utc
from ..display import describe_lock, local_time
from ..i18n import _
from ..localfiles import set_writable
from ..settings import DEFAULT_LEASE, Until
from ..snapshot import LocalSnapshot, keep_aside, local_fingerprint, quick_stamp
from .base import Outcome, ServiceBase, was_interrupted
from .dataset import DataSet


class OpenClose(ServiceBase):
    """`open`, `open --read-only` and `close`."""

    def open(self, name: str, lease: int = DEFAULT_LEASE, note: str = "",
             wait: float | Until | None = None, read_only: bool = False) -> Outcome:
        """Receive the newest version and take the lock (or only receive, read-only).

        `wait`: how long to wait for another holder (seconds; `Until.LEASE_ENDS`: until their
        lease runs out; None: do not wait).
        """
        with self.graceful_interrupts():
            return self._open(self._load(name), lease, note, wait, read_only)

    def _open(self, ds: DataSet, lease: int, note: str, wait: float | Until | None,
              read_only: bool) -> Outcome:
        name = ds.name
        command = Command.OPEN_READ_ONLY if read_only else Command.OPEN
        self._resume(ds, command)
        action = self._decide(ds, command)
        if action is Action.ALREADY_OPEN:
            grant = ds.recorded_grant()
            return Outcome(_("{name} is already open by you (lease until {until})").format(
                name=name, until=local_time(grant.until)),
                           {"name": name, "state": "locked-by-me"})
        with self._observing(ds), self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            self._found_again(ds)
            self._load_keys(area, _("share password of {name}").format(name=name))
            if action is Action.RECEIVE_ONLY:
                return self._open_read_only(ds, area)
            if action is Action.RECEIVE_UNDER_LOCK:  # an earlier open stopped before the newest arrived
                self.ui.say(_("an earlier open of {name} stopped before the newest version arrived; "
                              "receiving it now").format(name=name))
                grant = self._still_holding(ds, area)
            else:
                grant = self._take_lock(ds, area, lease, note, wait)
            outcome = self._finish_open(ds, area, grant)
            outcome.message += _("; locked by you until {until}").format(until=local_time(grant.until))
            outcome.data.update(state="locked-by-me", lock_until=iso_utc(grant.until))
            return outcome

    def _open_read_only(self, ds: DataSet, area: Area) -> Outcome:
        """Receive the newest version without the lock; the copy is made read-only until a real open."""
        set_writable(ds.path, True)
        outcome = self._receive_newest(ds, area)
        set_writable(ds.path, False)
        info = area.lock_info()
        self._follow_lock(ds, info)
        outcome.message += _("; read-only (the data is {lock})").format(lock=describe_lock(info))
        outcome.data.update(read_only=True, lock=info.as_json())
        return outcome

    def _receive_newest(self, ds: DataSet, area: Area) -> Outcome:
        """Receive without the lock (read-only): bring the local copy to the newest version."""
        newest, kept = self._bring_up_to_date(ds, area)
        if newest is not None:
            ds.fire(Event.RECEIVED, f"version {newest.version}", version=newest.version)
        return self._received_outcome(ds, newest, kept, hold=False)

    def _finish_open(self, ds: DataSet, area: Area, grant: Grant) -> Outcome:
        """Receive the newest version under the lock; only then may anything be sent.

        If receiving fails or is interrupted, the lock is given back (and the user told);
        if even that fails, the next `open` or `close` receives first.
        """
        try:
            area.check_interrupt()
            set_writable(ds.path, True)
            newest, kept = self._bring_up_to_date(ds, area)
        except BaseException as exc:
            if not was_interrupted(exc) and not self._interrupt.is_set():
                self._open_failed(ds, area, grant, exc)
            raise errors.Interrupted(_("open of {name} was interrupted; {give_back}; your copy was not "
                                       "changed").format(
                                           name=ds.name,
                                           give_back=self._give_back(ds, area, grant))) from None
        version = ds.synced_version
        ds.fire(Event.NEWEST_RECEIVED, f"version {version}", token=grant.lease.generation, version=version)
        return self._received_outcome(ds, newest, kept, hold=True)

    def _open_failed(self, ds: DataSet, area: Area, grant: Grant, exc: BaseException) -> NoReturn:
        """Receiving failed: give the lock back, say so, and raise a clear error."""
        if not isinstance(exc, errors.CloudShareError | OSError):
            raise exc
        self.ui.say(_("receiving {name} failed; {give_back}").format(
            name=ds.name, give_back=self._give_back(ds, area, grant)))
        if isinstance(exc, OSError):
            raise errors.LocalDiskError(_("could not write {name}: {reason}").format(
                name=ds.name, reason=exc.strerror or exc)) from None
        raise exc

    # --- close ------------------------------------------------------------------------------------

    def close(self, name: str, note: str = "") -> Outcome:
        """Send the new version (if changed) and release the lock."""
        with self.graceful_interrupts():
            return self._close(self._load(name), note)

    def _close(self, ds: DataSet, note: str) -> Outcome:
        name = ds.name
        action = self._decide(ds, Command.CLOSE)
        grant = self._grant_of(ds)
        with self._observing(ds), self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            self._load_keys(area, _("share password of {name}").format(name=name))
            if action is Action.RECEIVE_THEN_SEND:
                self._receive_before_sending(ds, area)
            area.prepare_release()  # written with the renewal the commit makes first
            try:
                return self._commit_and_release(ds, area, grant, note)
            except BaseException as exc:
                with suppress(Exception):
                    area.drop_prepared_release()
                if not (was_interrupted(exc) or self._interrupt.is_set()):
                    raise
                raise errors.Interrupted(
                    _("close of {name} was interrupted: the new version was not sent and you still hold the "
                      "lock").format(
                          name=name), hint=_("`cloudshare close {name}` again sends it").format(
                              name=name)) from None

    def _receive_before_sending(self, ds: DataSet, area: Area) -> None:
        """An open that stopped before the newest version arrived: receive it now, never send the old copy."""
        self.ui.say(_("the open of {name} stopped before the newest version arrived; receiving it first")
            .format(name=ds.name))
        grant = self._still_holding(ds, area)
        newest, kept = self._bring_up_to_date(ds, area)
        version = ds.synced_version
        ds.fire(Event.NEWEST_RECEIVED, f"version {version}", token=grant.lease.generation, version=version)
        if kept is not None and newest is not None:
            raise errors.Conflict(
                _("{name} was changed on a copy older than version {version}: your copy was kept aside as "
                  "{kept} and version {version} was received; you still hold the lock").format(
                      name=ds.name, version=newest.version, kept=kept),
                hint=_("re-apply your changes to the received version, then close"))

    def _commit_and_release(self, ds: DataSet, area: Area, grant: Grant, note: str) -> Outcome:
        name, row, path = ds.name, ds.row, ds.path
        if not path.exists():
            raise errors.LocalPathMissing(_("{path} is missing; nothing was sent").format(path=path),
                                         hint=_("put the data back, then close again"))
        stamp = quick_stamp(path)  # before the scan: a change during the scan shows next time
        unchanged = bool(row["synced_hash"]) and stamp == row["synced_stamp"]
        snap = None if unchanged else LocalSnapshot.scan(path, area.require_keys(),
                                                         prefer=area.held_manifest(path))
        for skipped in snap.skipped if snap else ():
            self.ui.say(_("warning: {skipped} was not sent (not a regular file)").format(skipped=skipped))
        if snap is None or snap.fingerprint == row["synced_hash"]:
            version, message = row["synced_version"], _("{name} closed without changes").format(name=name)
            try:
                area.ensure_holding(grant, self.party)
            except errors.Fenced as exc:  # nothing to lose: just follow the new holder
                self._lease_lost(ds, area, str(exc), fields={})
                return Outcome(_("{message}; your lease had run out and someone else holds the lock now")
                    .format(message=message),
                               {"name": name, "version": version})
        else:
            try:
                version = area.commit(grant, self.party, snap, note, self._cache(area),
                                      self.ui.progress(_("sending"), snap.manifest.total_size()),
                                      base=row["synced_version"] or 0)
            except errors.Fenced as exc:
                self._fenced(ds, area, exc)
            except errors.StaleBase as exc:
                self._stale_base(ds, area, grant, exc)
            message = _("{name} sent as version {version}").format(name=name, version=version)
            # Recorded at once: a retried close after a failed release must not send it twice.
            ds.update(synced_version=version, synced_hash=snap.fingerprint, synced_stamp=stamp)
        self._prune_now_and_then(ds, area, grant)  # format 2: at most once a day, never fails the close
        area.release(grant, self.party)
        self._sweep_now_and_then(area)  # abandoned uploads of crashed writers: once a day from here
        self._sync_renewal(ds, grant)
        ds.fire(Event.COMMITTED, message, forget_grant=True, token=grant.lease.generation, version=version)
        self.live_grants.pop(name, None)
        return Outcome(message + _("; lock released"), {"name": name, "version": version})

    def _stale_base(self, ds: DataSet, area: Area, grant: Grant, exc: errors.StaleBase) -> NoReturn:
        """Our copy is older than the newest version: keep the work aside, receive, keep the lock."""
        kept = keep_aside(ds.path, "not-sent")
        ds.update(synced_hash=None)
        self._bring_up_to_date(ds, area)
        ds.fire(Event.NEWEST_RECEIVED, f"version {exc.newest}", token=grant.lease.generation,
                version=ds.synced_version)
        raise errors.Conflict(
            _("{error}. Your work was kept aside as {kept}; version {newest} was received and you still hold "
              "the lock").format(error=exc, kept=kept, newest=exc.newest),
            hint=_("re-apply your changes to the received version, then close"))

    def _fenced(self, ds: DataSet, area: Area, exc: errors.Fenced) -> NoReturn:
        """Keep the unsent work aside, record the loss, then receive the newest version."""
        path = ds.path
        kept = keep_aside(path, "not-sent")
        self._lease_lost(ds, area, str(exc), fields={"synced_hash": None, "synced_version": None})
        newest, received = area.newest(), _("nothing was received")
        if newest is not None:
            try:
                area.download(newest, path, self._cache(area))
                ds.update(synced_version=newest.version, synced_hash=local_fingerprint(path))
                received = _("the newest version ({version}) was received").format(version=newest.version)
            except errors.CloudShareError as err:
                received = _("receiving the newest version failed ({error}); open it again").format(error=err)
        raise errors.Fenced(_("{error}. Your work was kept aside as {kept}; {received}").format(
            error=exc, kept=kept, received=received))
