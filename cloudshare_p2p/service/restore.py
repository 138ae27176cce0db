"""`restore`: make an old version the newest again (a new commit; nothing is deleted)."""

from __future__ import annotations

from statemachine import Event
from statemachine.plans import Command

from .. import errors
from ..area import check_not_pruned
from ..i18n import _
from ..settings import DEFAULT_RUN_LEASE
from .base import Outcome, ServiceBase


class RestoreCommand(ServiceBase):
    """`restore`."""

    def restore(self, name: str, version: int) -> Outcome:
        """Make an old version the newest (a new commit; nothing is deleted)."""
        ds = self._load(name)
        self._resume(ds, Command.RESTORE)
        self._decide(ds, Command.RESTORE)
        if ds.unsent_changes():
            raise errors.InvalidState(
                _("{name} has local changes that were never sent; restoring would replace them").format(
                    name=name),
                hint=_("send them first (`cloudshare open {name}` then `close`), or move them away").format(
                    name=name),
            )
        with self._observing(ds), self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            self._found_again(ds)
            self._load_keys(area, _("share password of {name}").format(name=name))
            old = next((v for v in area.versions() if v.version == version), None)
            if old is None:
                raise errors.NoSuchVersion(_("{name} has no version {version}").format(
                    name=name, version=version),
                                             hint=_("see `cloudshare history {name}`").format(name=name))
            check_not_pruned(area, old)
            try:
                grant = self._acquire_for(ds, area, DEFAULT_RUN_LEASE, f"restoring version {version}")
            except errors.LockedByOther as exc:
                exc.hint = _("try again once they have closed it (`cloudshare status --refresh {name}`)"
                             ).format(name=name)
                raise
            token = grant.lease.generation
            ds.fire(Event.LOCK_GRANTED, f"restore {version}", grant=grant, token=token)
            try:
                self._bring_up_to_date(ds, area)  # no local changes (checked above): nothing kept aside
                ds.fire(Event.NEWEST_RECEIVED, "before restoring", token=token, version=ds.synced_version)
                new = area.recommit(grant, self.party, old, f"restored version {version}")
            except errors.Fenced as exc:
                self._fenced(ds, area, exc)
            area.download(area.versions()[new - 1], ds.path, self._cache(area))
            ds.record_sync(new)
            area.release(grant, self.party)
            self._sync_renewal(ds, grant)
            ds.fire(Event.COMMITTED, f"restored {version} as {new}", forget_grant=True, token=token,
                    version=new)
        return Outcome(_("version {version} of {name} is the newest again, as version {new}").format(
            version=version, name=name, new=new),
                       {"name": name, "version": new, "restored_from": version})
