"""Stopping: `leave` (for me only), `delete-area` (for everyone), and breaking a lock (`unlock`)."""

from __future__ import annotations

from contextlib import suppress

from statemachine import Event, Step
from statemachine.plans import (
    Action,
    Command,
    Refusal,
    deletion_recorded,
    events_after_breaking,
    events_before_delete,
    is_shared,
    leave_receives_first,
    plan,
)

from .. import errors
from ..area import Area, validate_area_name
from ..display import describe_lock
from ..i18n import _
from ..settings import DEFAULT_RUN_LEASE
from ..snapshot import keep_aside, local_fingerprint
from .base import Outcome, ServiceBase
from .dataset import UNSHARED_FIELDS, DataSet

_BEFORE_DELETE_DETAIL = {Event.AREA_FOUND: "the area answers again",
                         Event.LOCK_FREE: "checking the lock before deleting"}


class LeaveCommands(ServiceBase):
    """`leave`, `delete-area`, `unlock` (break a lock), and finishing an interrupted delete."""

    def leave(self, name: str, yes: bool) -> Outcome:
        """Stop Cloud Share for me only; the others go on."""
        ds = self._load(name)
        decision = plan(Command.LEAVE, ds.state, ds.context)
        if decision is Action.SETTLE_STOP:
            self._resume(ds, Command.LEAVE)
            state = ds.state.value
            return Outcome(_("{name}: the interrupted stop was finished ({state})").format(
                name=name, state=state),
                           {"name": name, "state": state})
        if isinstance(decision, Refusal):  # not shared: nothing to leave
            raise errors.InvalidState(_("{name} is not shared on this computer; there is nothing to leave")
                .format(name=name),
                                      hint=_("`cloudshare forget {name}` removes its registration (the data "
                                             "stays)").format(name=name))
        if decision is Action.ABANDON_SETUP:
            ds.fire(Event.SETUP_FAILED, "setup abandoned by leave", fields=UNSHARED_FIELDS)
            return Outcome(_("the unfinished setup of {name} was abandoned; it is not shared").format(
                name=name),
                           {"name": name, "state": "unshared"})
        question = _("Release Cloud Share for {name} on this computer only?").format(name=name)
        if decision is Action.RELEASE_THEN_LEAVE:
            question = _("{name} is open by you. Release Cloud Share for it on this computer without "
                         "sending your changes?").format(name=name)
        if not yes and not self.ui.confirm(question):
            raise errors.Declined(_("nothing changed"), hint=_("answer yes, or pass --yes"))
        skip_receive = ""
        if decision is Action.RELEASE_THEN_LEAVE:
            skip_receive = self._let_go_before_leaving(ds)
        elif decision is Action.LEAVE_WITHOUT_RECEIVING:
            skip_receive = _("the area is missing: nothing to receive")
        ds.fire(Event.LEAVE, "just me")
        if skip_receive:
            ds.fire(Event.STEP_REACHED, skip_receive, step=Step.FORGET)
        return self._leave_steps(ds, skip_receive)

    def _let_go_before_leaving(self, ds: DataSet) -> str:
        """Leaving while holding the lock: release it if the host lets us; say what was not sent."""
        released = _("the lock could not be released (it expires with its lease)")
        with suppress(errors.CloudShareError, OSError, KeyError, ValueError), \
                self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            if area.release(self._grant_of(ds), self.party):
                released = _("the lock was released")
        if not ds.unsent_changes():
            return _("{released}; you had no unsent changes").format(released=released)
        return _("{released}; your changes since version {version} were NOT sent and stay in {path}").format(
            released=released, version=ds.synced_version, path=ds.path)

    def _leave_steps(self, ds: DataSet, note: str = "") -> Outcome:
        name = ds.name
        if leave_receives_first(ds.context):
            note = self._receive_before_leaving(ds)
            ds.fire(Event.STEP_REACHED, note, step=Step.FORGET)
        area_id = ds.area_id
        self._forget_key_of(area_id, name)
        ds.fire(Event.LEAVE_DONE, "stopped Cloud Share for me", fields=UNSHARED_FIELDS, forget_grant=True)
        self._drop_area_cache(area_id)
        return Outcome((_("{name} no longer uses Cloud Share on this computer; {note}").format(
            name=name, note=note) if note
                       else _("{name} no longer uses Cloud Share on this computer").format(name=name)),
                       {"name": name, "state": "unshared"})

    def _receive_before_leaving(self, ds: DataSet) -> str:
        try:
            with self.connect(ds.remote) as session:
                area = self._area_of(ds, session)
                self._load_keys(area, _("share password of {name}").format(name=ds.name))
                newest = area.newest()
                if newest is None or (ds.synced_version or 0) >= newest.version:
                    return _("your copy was already the newest")
                if ds.unsent_changes():
                    return _("your local changes were kept; the newest version was not received")
                area.download(newest, ds.path, self._cache(area))
                ds.update(synced_version=newest.version, synced_hash=local_fingerprint(ds.path))
                return _("received the newest version ({version}) first").format(version=newest.version)
        except (errors.AreaGone, errors.LoginRefused, errors.NetworkDown) as exc:
            return _("could not receive the newest version ({reason})").format(reason=exc.__class__.__name__)

    # --- delete for everyone ---------------------------------------------------------------------

    def delete_area(self, remote: str, area_name: str, yes: bool) -> Outcome:
        """Delete the shared data on the host for everyone (password; not while locked by another)."""
        validate_area_name(area_name)
        sets = self._local_users_of(remote, area_name)
        with self.connect(remote) as session:
            area = self._existing_area(session, area_name)
            if not yes and not self.ui.confirm(_("Delete the selected data ({area_name}) on the host?")
                .format(area_name=area_name)):
                raise errors.Declined(_("nothing was deleted"), hint=_("answer yes, or pass --yes"))
            self._load_keys(area, _("share password of area {area} (to delete it)").format(
                area=area_name), ask_password=True)
            sets = [ds for ds in sets if ds.area_id in (None, area.area_id)]
            for ds in sets:
                self._start_delete(ds, area)
            try:
                grant = self._acquire_or_raise(area, DEFAULT_RUN_LEASE, "deleting the area")
            except errors.LockedByOther as exc:
                exc.hint = _("try again once they have closed it (`cloudshare areas REMOTE` shows the lock)")
                for ds in sets:
                    ds.fire(Event.LEAVE_ABORTED, "locked by another party")
                raise
            for ds in sets:  # someone may have sent a version since: receive it too
                self._receive_before_leaving_everyone(ds, area)
                ds.fire(Event.STEP_REACHED, "lock taken", step=Step.DELETE)
            area.delete(self.party, grant)
            self.secrets.forget_data_key(area.area_id)
        for ds in sets:
            ds.fire(Event.STEP_REACHED, "deleted on the host", step=Step.DELETED)
            ds.fire(Event.LEAVE_DONE, "Cloud Share data deleted", fields=UNSHARED_FIELDS, forget_grant=True)
        self._drop_area_cache(area.area_id)
        return Outcome(_("Cloud Share data deleted: area {area_name} on {remote}").format(
            area_name=area_name, remote=remote),
                       {"area": area_name, "datasets": [ds.name for ds in sets]})

    def _local_users_of(self, remote: str, area_name: str) -> list[DataSet]:
        """Local data sets shared through this area, transient states settled first."""
        sets = []
        for row in self.registry.find_by_area(remote, area_name):
            ds = DataSet(self.registry, row)
            self._resume(ds, Command.DELETE_AREA)
            if is_shared(ds.state):
                self._decide(ds, Command.DELETE_AREA)  # refused while open by you
                sets.append(ds)
        return sets

    def _start_delete(self, ds: DataSet, area: Area) -> None:
        for event in events_before_delete(ds.state):
            ds.fire(event, _BEFORE_DELETE_DETAIL[event])
        ds.fire(Event.DELETE_FOR_EVERYONE, "delete for everyone")
        self._receive_before_leaving_everyone(ds, area)
        ds.fire(Event.STEP_REACHED, "newest version received", step=Step.LOCK)

    def _receive_before_leaving_everyone(self, ds: DataSet, area: Area) -> None:
        newest = area.newest()
        if newest is None or (ds.synced_version or 0) >= newest.version:
            return
        path = ds.path
        if ds.unsent_changes() and path.exists():
            kept = keep_aside(path, "local-changes")
            self.ui.say(_("your unsent changes were kept aside as {kept}").format(kept=kept))
        area.download(newest, path, self._cache(area))
        ds.update(synced_version=newest.version, synced_hash=local_fingerprint(path))
        self.ui.say(_("received the newest version ({version}) of {name} first").format(
            version=newest.version, name=ds.name))

    def _finish_interrupted_delete(self, ds: DataSet) -> None:
        """A delete for everyone was interrupted: done if the area is gone, else rolled back."""
        try:
            with self.connect(ds.remote) as session:
                self._new_area(session, ds.area).load()
            ds.fire(Event.LEAVE_ABORTED, "the area still exists; delete rolled back")
        except errors.AreaGone:
            if not deletion_recorded(ds.context):
                ds.fire(Event.STEP_REACHED, "deleted on the host", step=Step.DELETED)
            ds.fire(Event.LEAVE_DONE, "Cloud Share data deleted", fields=UNSHARED_FIELDS, forget_grant=True)

    # --- breaking a lock -------------------------------------------------------------------------

    def break_lock(self, name: str) -> Outcome:
        """Break another party's lock (password; recorded in the area's history): `cloudshare unlock`."""
        ds = self._shared(name)
        with self._observing(ds), self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            self._load_keys(area, _("share password of {name} (to break the lock)").format(name=name),
                            ask_password=True)
            info = area.lock_info()
            gen = area.break_lock(self.party, f"broken by {self.party.name}: was {describe_lock(info)}")
        for event in events_after_breaking(ds.state):
            if event is Event.LEASE_LOST:
                ds.fire(Event.LEASE_LOST, "own lock broken", forget_grant=True, token=gen, holder=None)
                self.live_grants.pop(name, None)
            else:
                ds.fire(Event.LOCK_FREE, f"lock broken (generation {gen})")
        return Outcome(_("the lock on {name} was broken ({lock}); this was recorded in the area").format(
            name=name, lock=describe_lock(info)),
                       {"name": name, "generation": gen})
