"""Starting to share: `share` (create the area, upload) and `join` (check the password, receive),
resumable step by step, and rolled back when a set-up cannot go on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from statemachine import Event, State, Step
from statemachine.plans import (
    Action,
    Command,
    Failure,
    ShareNext,
    is_shared,
    join_records_password,
    setup_failure_rolls_back,
    share_next,
)

from .. import errors
from ..area import Area, packer, validate_area_name
from ..display import human_size
from ..i18n import _
from ..settings import DEFAULT_RUN_LEASE
from ..snapshot import data_size, keep_aside, local_fingerprint, quick_stamp
from ..transport import SftpConnection
from .base import Outcome, ServiceBase
from .dataset import UNSHARED_FIELDS, DataSet

MIN_SHARE_PASSWORD = 8


class SetupCommands(ServiceBase):
    """`share` and `join`."""

    def share(self, name: str, path: Path | None, remote: str, area_name: str, yes: bool) -> Outcome:
        """Upload the local data and start Cloud Share (creates the area)."""
        with self._new_registration_undone(name):
            self._check_target(remote, area_name)
            ds = self._ensure_dataset(name, path, must_exist=True)
            return self._share_dataset(ds, remote, area_name, yes)

    def join(self, name: str, path: Path, remote: str, area_name: str) -> Outcome:
        """Receive the area's data into PATH and start sharing (only if the password matches)."""
        with self._new_registration_undone(name):
            self._check_target(remote, area_name)
            ds = self._ensure_dataset(name, path, must_exist=False)
            return self._join_dataset(ds, remote, area_name)

    @contextmanager
    def _new_registration_undone(self, name: str) -> Iterator[None]:
        """A set-up that fails leaves nothing behind: a registration it created is removed."""
        try:
            self.registry.get_dataset(name)
            existed = True
        except errors.NotRegistered:
            existed = False
        try:
            yield
        except BaseException:
            with suppress(errors.CloudShareError):
                if not existed and not is_shared(State(self.registry.get_dataset(name)["state"])):
                    self.registry.remove_dataset(name)
            raise

    def _check_target(self, remote: str, area_name: str) -> None:
        validate_area_name(area_name)
        self.registry.get_remote(remote)

    def _setup_action(self, ds: DataSet, command: Command, remote: str, area_name: str) -> Action:
        """Start or resume; a resumed set-up must target the host and area it started with."""
        action = self._decide(ds, command)
        if action is Action.RESUME_SETUP and (ds.row["remote"], ds.row["area"]) != (remote, area_name):
            raise errors.InvalidState(
                _("an interrupted setup of {name} targets {remote}/{area}").format(
                    name=ds.name, remote=ds.row['remote'], area=ds.row['area']),
                hint=_("finish it with --remote {remote} --area {area}").format(
                    remote=ds.row['remote'], area=ds.row['area']),
            )
        return action

    def _ensure_dataset(self, name: str, path: Path | None, must_exist: bool) -> DataSet:
        try:
            ds = self._load(name)
        except errors.NotRegistered:
            if path is None:
                raise
            path = Path(path).expanduser()
            if must_exist and not path.exists():
                raise errors.LocalPathMissing(_("{path} does not exist").format(path=path),
                                             hint=_("give the path of the local data")) from None
            return DataSet(self.registry, self.registry.add_dataset(name, path.resolve()))
        if path is not None and Path(path).expanduser().resolve() != ds.path:
            raise errors.AlreadyRegistered(_("{name} is registered with another path: {path}").format(
                name=name, path=ds.row['path']))
        return ds

    def _roll_back_setup(self, ds: DataSet, exc: Exception) -> None:
        """Undo a setup that cannot go on; transient network trouble resumes later instead."""
        failure = Failure.NETWORK if isinstance(exc, errors.NetworkDown | errors.TransferError) else \
            Failure.AREA_GONE if isinstance(exc, errors.AreaGone) else Failure.OTHER
        if setup_failure_rolls_back(ds.state, ds.context, failure):
            self._forget_key_of(ds.area_id, ds.name)
            ds.fire(Event.SETUP_FAILED, str(exc), fields=UNSHARED_FIELDS)

    # --- share ------------------------------------------------------------------------------------

    def _share_dataset(self, ds: DataSet, remote: str, area_name: str, yes: bool) -> Outcome:
        """Share `ds`, or resume its interrupted share."""
        if self._setup_action(ds, Command.SHARE, remote, area_name) is Action.START_SETUP:
            question = _("Upload your local data ({path}) to area {area} on {remote} and start Cloud Share?"
                         ).format(path=ds.row["path"], area=area_name, remote=remote)
            if not yes and not self.ui.confirm(question):
                raise errors.Declined(_("nothing was shared"), hint=_("answer yes, or pass --yes"))
            ds.fire(Event.START_UPLOAD, f"{remote}/{area_name}", fields={"remote": remote, "area": area_name})
        password = self.ui.share_password(_("new share password for {area_name}").format(
            area_name=area_name), True)
        if len(password) < MIN_SHARE_PASSWORD and share_next(ds.context) is ShareNext.CREATE_AREA:
            ds.fire(Event.SETUP_FAILED, "share password too short", fields=UNSHARED_FIELDS)
            raise errors.InvalidName(
                _("the share password must have at least {min_share_password} characters").format(
                    min_share_password=MIN_SHARE_PASSWORD),
                hint=_("anyone who can read the area may try passwords offline: choose a longer one"))
        if share_next(ds.context) is not ShareNext.FINISH:
            packer.prestart(ds.path)  # a large first share: its packing process starts as we connect
        try:
            with self.connect(remote) as session:
                return self._share_steps(ds, session, area_name, password)
        except errors.CloudShareError as exc:
            self._roll_back_setup(ds, exc)
            raise

    def _share_steps(self, ds: DataSet, session: SftpConnection, area_name: str, password: str) -> Outcome:
        name = ds.name
        area = self._new_area(session, area_name)
        todo = share_next(ds.context)
        if todo is ShareNext.FINISH:
            version = ds.context.version
            ds.fire(Event.SETUP_DONE, "resumed")
            return Outcome(_("{name} is shared in area {area_name} (version {version})").format(
                name=name, area_name=area_name, version=version),
                           {"name": name, "area": area_name, "version": version})
        if todo is ShareNext.CREATE_AREA:
            self._create_or_adopt(area, name, password)
            ds.fire(Event.STEP_REACHED, "area created", step=Step.UPLOAD, fields={"area_id": area.area_id})
        else:  # resuming: the area we created is there; check it is ours
            if area.area_id != ds.area_id:
                raise errors.AreaGone(_("area {area_name} is no longer the area this setup created").format(
                    area_name=area_name))
            area.unlock_keys(password)
        grant = self._acquire_for(ds, area, DEFAULT_RUN_LEASE, "first upload")
        stamp = quick_stamp(ds.path)
        progress = self.ui.progress(_("uploading"), data_size(ds.path))
        version, snap = area.commit_first(grant, self.party, ds.path, "start of Cloud Share",
                                          self._cache(area), progress)
        area.release(grant, self.party)
        ds.fire(Event.STEP_REACHED, f"version {version}", step=Step.UPLOADED, version=version)
        ds.fire(Event.SETUP_DONE, forget_grant=True, fields={"synced_version": version,
                                                             "synced_hash": snap.fingerprint,
                                                             "synced_stamp": stamp})
        self._remember_key(area)
        return Outcome(_("{name} is shared in area {area_name} (version {version}, {size})").format(
            name=name, area_name=area_name, version=version, size=human_size(snap.manifest.total_size())),
                       {"name": name, "area": area_name, "version": version})

    def _create_or_adopt(self, area: Area, dataset: str, password: str) -> None:
        """Create the area; after a crash, adopt the empty area this install had created."""
        try:
            area.create(dataset, password, self.party)
        except errors.AreaExists:
            config = area.load()
            ours = (config.get("created_by") or {}).get("install") == self.party.install
            if not ours or area.newest() is not None:
                raise
            area.unlock_keys(password)
            self.ui.say(_("found the area {name} this computer created before it was interrupted").format(
                name=area.name))

    # --- join -------------------------------------------------------------------------------------

    def _join_dataset(self, ds: DataSet, remote: str, area_name: str) -> Outcome:
        """Join with `ds`, or resume its interrupted join."""
        if self._setup_action(ds, Command.JOIN, remote, area_name) is Action.START_SETUP:
            ds.fire(Event.START_RECEIVE, f"{remote}/{area_name}",
                    fields={"remote": remote, "area": area_name})
        try:
            with self.connect(remote) as session:
                return self._join_steps(ds, session, area_name)
        except errors.CloudShareError as exc:
            self._roll_back_setup(ds, exc)
            raise

    def _join_steps(self, ds: DataSet, session: SftpConnection, area_name: str) -> Outcome:
        area = self._existing_area(session, area_name)
        self._load_keys(area, _("share password of area {area}").format(area=area_name), ask_password=True)
        if join_records_password(ds.context):
            ds.fire(Event.STEP_REACHED, "password matches", step=Step.RECEIVE,
                    fields={"area_id": area.area_id})
        newest = area.newest()
        if newest is None:
            raise errors.AreaEmpty(_("area {area_name} has no data yet").format(area_name=area_name),
                                         hint=_("ask the other side to finish `cloudshare share` first"))
        target = ds.path
        kept = None
        same = target.exists() and not target.is_symlink() and self._is_copy_of(area, target, newest)
        if not same and (target.exists() or target.is_symlink()):
            kept = keep_aside(target, "before-join")
            self.ui.say(_("The data already at {target} was kept aside as {kept}").format(
                target=target, kept=kept))
        if not same:
            target.parent.mkdir(parents=True, exist_ok=True)
            area.download(newest, target, self._cache(area), self.ui.progress(_("receiving"), newest.size))
        stamp = quick_stamp(target)
        fingerprint = local_fingerprint(target)
        ds.fire(Event.STEP_REACHED, f"version {newest.version}", step=Step.RECEIVED, version=newest.version)
        ds.fire(Event.SETUP_DONE, fields={"synced_version": newest.version,
                                          "synced_hash": fingerprint, "synced_stamp": stamp})
        message = _("{name} received version {version} from area {area} and is now shared").format(
            name=ds.name, version=newest.version, area=area_name)
        return Outcome(message, {"name": ds.name, "version": newest.version,
                                 "kept_aside": str(kept) if kept else None})
