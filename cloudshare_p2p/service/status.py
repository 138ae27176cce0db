"""The data list and the local registrations: status (with --refresh), history, add, forget."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

from statemachine.plans import Holder, is_shared, last_seen_holder, refresh_observes

from .. import cachedir, errors
from ..area import iso_utc
from ..i18n import _
from ..transport import Endpoint, SftpConnection
from .base import Outcome, ServiceBase
from .dataset import DataSet


class StatusCommands(ServiceBase):
    """`status`, `history`, `add`, `forget`."""

    def add(self, name: str, path: Path) -> Outcome:
        """Register local data under NAME (not shared yet)."""
        path = Path(path).expanduser()
        if not path.exists():
            raise errors.LocalPathMissing(_("{path} does not exist").format(path=path),
                                         hint=_("give the path of the accounting data (a file or folder)"))
        self.registry.add_dataset(name, path.resolve())
        return Outcome(_("data set {name} registered ({path}), not shared yet").format(
            name=name, path=path.resolve()))

    def forget(self, name: str) -> Outcome:
        """Forget what this computer remembers of NAME; an unshared registration is removed too.

        The data itself is never touched.
        """
        ds = self._load(name)
        self._forget_key_of(ds.area_id, name)
        self._drop_area_cache(ds.area_id, but=name)
        if ds.row["remote"]:
            with suppress(errors.CloudShareError):
                self.secrets.forget_login(Endpoint.parse(self.registry.get_remote(ds.remote)["url"]).url())
        if not is_shared(ds.state):
            self.registry.remove_dataset(name)
            return Outcome(_("{name} is no longer registered on this computer; the data at {path} was not "
                             "touched").format(
                                 name=name, path=ds.row['path']), {"name": name, "registered": False})
        return Outcome(_("the remembered key and login of {name} were forgotten on this computer; {name} "
                         "stays shared (the share password is asked at the next open)").format(name=name),
                       {"name": name, "registered": True})

    def history(self, name: str) -> list[dict[str, Any]]:
        """The versions in the area of NAME, oldest first (`pruned`: removed by the retention policy)."""
        ds = self._shared(name)
        with self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            view = area.log_view()
            return [{**v.as_json(), "pruned": v.version in view.pruned} for v in view.versions]

    def status(self, name: str | None = None, refresh: bool = False) -> list[dict[str, Any]]:
        """The data list; with `refresh`, each shared data set's lock is looked up on its host."""
        rows = [self.registry.get_dataset(name)] if name else self.registry.list_datasets()
        sets = [DataSet(self.registry, row) for row in rows]
        if not refresh:
            return [self._status_row(ds) for ds in sets]
        sessions: dict[str, SftpConnection] = {}
        try:
            return [self._refreshed_row(ds, sessions) for ds in sets]
        finally:
            for session in sessions.values():
                session.close()

    def _refreshed_row(self, ds: DataSet, sessions: dict[str, SftpConnection]) -> dict[str, Any]:
        """Observe the host (no password needed) and let the machine follow what it sees."""
        problem, newest = None, None
        if ds.row["remote"] and refresh_observes(ds.state):
            try:
                with self._observing(ds):
                    if ds.remote not in sessions:
                        sessions[ds.remote] = self.connect(ds.remote)
                    area = self._area_of(ds, sessions[ds.remote])
                    self._found_again(ds)
                    info, newest = area.lock_info(), area.newest()
                self._follow_lock(ds, info)
            except errors.LoginRefused as exc:
                problem = _("communication ID unusable: {error}").format(error=exc)
            except errors.CloudShareError as exc:
                problem = str(exc)
        ds.reload()
        out = self._status_row(ds)
        out.update(host_version=newest.version if newest else None, problem=problem)
        return out

    def _status_row(self, ds: DataSet) -> dict[str, Any]:
        ctx, row = ds.context, ds.row
        seen = last_seen_holder(ds.state)
        holder = {Holder.ME: self.party.name, Holder.OTHER: ctx.holder}.get(seen)
        return {
            "name": row["name"], "path": row["path"], "shared": is_shared(ds.state),
            "state": ds.state.value, "step": ctx.step, "remote": row["remote"], "area": row["area"],
            "version": row["synced_version"], "lock_holder": holder,
            "lock_until": iso_utc(ctx.holder_until) if seen is Holder.OTHER else None,
            "missing_reason": ctx.missing_reason, "cache_bytes": self._cache_bytes(ds),
        }

    # --- the local cache ------------------------------------------------------------------------

    def _cache_bytes(self, ds: DataSet) -> int:
        """Bytes this computer's cache holds for the area of `ds`."""
        return cachedir.area_cache_bytes(self.cache_root, ds.area_id)

    def cache_summary(self) -> dict[str, Any]:
        """The whole cache: `bytes` it holds, its `cap`, and its `path`."""
        return {"bytes": cachedir.folder_size(self.cache_root), "cap": self.cache_cap(),
                "path": str(self.cache_root)}
