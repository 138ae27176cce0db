"""One function per user command: drives the state machine, the share area and the registry.

No click here: the CLI passes in how to ask for passwords and confirmations and how to
narrate, and turns the `errors.*` this module raises into exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from statemachine import AreaGoneReason, DataSetMachine, Event, LeaveMode, SetupMode, State, Step
from statemachine.lease import DEFAULT_SLACK
from statemachine.plans import (
    Action,
    Command,
    Failure,
    Reason,
    Recovery,
    Refusal,
    after_setup_failure,
    plan,
    recovery,
)

from . import errors
from .area import (
    Area,
    Grant,
    LockInfo,
    Party,
    Version,
    grant_from_dict,
    grant_to_dict,
    iso_utc,
    list_areas,
    new_session_id,
    same_content,
    validate_area_name,
)
from .display import describe_lock, human_size, local_time
from .durations import format_duration
from .i18n import _
from .localfiles import set_writable
from .registry import Registry
from .secretstore import SecretStore, remember_enabled
from .settings import DEFAULT_LEASE, DEFAULT_RUN_LEASE
from .snapshot import ChunkCache, LocalSnapshot, keep_aside, local_fingerprint, quick_stamp
from .transport import (
    Credentials,
    Endpoint,
    KnownHosts,
    Session,
    check_identity,
    connect,
    probe_host_key,
)

WAIT_POLL_MAX = 5.0
MIN_SHARE_PASSWORD = 8
SECRET_ENV = ("CLOUDSHARE_PASSWORD", "CLOUDSHARE_SSH_PASSWORD", "CLOUDSHARE_ID_PASSWORD")


@dataclass
class UI:
    """How the library talks to the person (the CLI fills these in; tests may too)."""

    share_password: Callable[[str, bool], str]  # (purpose, confirm twice) -> password
    ssh_password: Callable[[], str | None]
    confirm: Callable[[str], bool]
    say: Callable[[str], None]  # narration and warnings (stderr)
    progress: Callable[[str, int], Callable[[int], None] | None] = lambda label, total: None


@dataclass
class Outcome:
    """What a command did, for printing (and for `--json`)."""

    message: str
    data: dict[str, Any] = field(default_factory=dict)


class Service:
    """The commands, bound to one home folder (registry, pinned host keys, cache)."""

    def __init__(self, home: Path, ui: UI, remember: bool | None = None,
                 remember_login: bool | None = None) -> None:
        self.home = Path(home)
        self.registry = Registry(self.home)
        self.secrets = SecretStore(self.home, enabled=remember_enabled(remember))
        self.remember_login = remember_login
        self.known_hosts = KnownHosts(self.home / "known_hosts")
        self.ui = ui
        self._ssh_password: str | None = None
        self.live_grants: dict[str, Grant] = {}  # grants taken by this process (their clock is live)
        self._interrupt = threading.Event()  # a first Ctrl-C, honoured at the next safe point
        name = os.environ.get("CLOUDSHARE_NAME") or self.registry.display_name
        self.party = Party(name, self.registry.install_id, socket.gethostname())

    def shutdown(self) -> None:
        """Close the registry (the CLI calls this when the command ends)."""
        self.registry.close()

    # --- remotes ----------------------------------------------------------------------

    def remote_add(self, name: str, url: str, identity: str | None, accept_host_key: str | None) -> Outcome:
        """Register a host: pin its key (shown and confirmed) and check that login works."""
        try:
            endpoint = Endpoint.parse(url)
        except ValueError as exc:
            raise errors.BadUrl(str(exc), hint=_("use sftp://COMM_ID@HOST[:PORT][/BASE]")) from None
        if identity:
            check_identity(Path(identity).expanduser())
        key_type, fingerprint = probe_host_key(endpoint)
        pinned = self.known_hosts.fingerprints().get(endpoint.hostport())
        if pinned and pinned != fingerprint:
            raise errors.HostKeyChanged(endpoint.hostport(), pinned, fingerprint)
        accept = accept_host_key
        if not pinned and accept is None:
            self.ui.say(_("The host {hostport} presents a {key_type} key:\n  {fingerprint}").format(
                hostport=endpoint.hostport(), key_type=key_type, fingerprint=fingerprint))
            if not self.ui.confirm(_("Is this the fingerprint the firm gave you?")):
                raise errors.HostKeyUnknown(endpoint.hostport(), fingerprint, key_type)
            accept = fingerprint
        if identity:
            identity = str(Path(identity).expanduser().resolve())
        with self._connect_endpoint(endpoint, identity, accept) as session:
            if endpoint.base:
                session.require_dir(session.path())
        self.registry.add_remote(name, endpoint.url(), identity, fingerprint)
        return Outcome(_("remote {name} added: {url} (host key {fingerprint})").format(
            name=name, url=endpoint.url(), fingerprint=fingerprint),
                       {"name": name, "url": endpoint.url(), "host_key": fingerprint})

    def remote_list(self) -> list[dict[str, Any]]:
        return [{"name": r["name"], "url": r["url"], "identity": r["identity"],
                 "host_key": r["host_fingerprint"]} for r in self.registry.list_remotes()]

    def remote_remove(self, name: str) -> Outcome:
        remote = self.registry.get_remote(name)
        self.registry.remove_remote(name)
        hostport = Endpoint.parse(remote["url"]).hostport()
        if not any(Endpoint.parse(r["url"]).hostport() == hostport for r in self.registry.list_remotes()):
            self.known_hosts.remove(hostport)
        return Outcome(_("remote {name} removed").format(name=name))

    def _connect_endpoint(self, endpoint: Endpoint, identity: str | None,
                          accept: str | None = None) -> Session:
        account = endpoint.url()
        source: list[str] = []  # where the login password came from, if one was used
        creds = Credentials(
            identity=Path(identity) if identity else None,
            password=lambda: self._login_password(account, source),
            use_agent=identity is None,
        )
        try:
            session = connect(endpoint, self.known_hosts, creds, accept_fingerprint=accept)
        except errors.LoginRefused:
            if source == ["remembered"]:
                self.secrets.forget_login(account)  # changed on the host: ask next time
                self._ssh_password = None
            raise
        if source == ["typed"]:
            self._maybe_remember_login(account)
        return session

    def _login_password(self, account: str, source: list[str]) -> str | None:
        """Remembered on this computer, else asked at most once per process."""
        if self._ssh_password is None:
            remembered = self.secrets.get_login(account)
            if remembered is not None:
                self._ssh_password, source[:] = remembered, ["remembered"]
                return remembered
            self._ssh_password = self.ui.ssh_password()
            typed = self._ssh_password is not None and not os.environ.get("CLOUDSHARE_SSH_PASSWORD")
            source[:] = ["typed" if typed else "given"]
        return self._ssh_password

    def _maybe_remember_login(self, account: str) -> None:
        """Remember a typed login password when asked to (or when the person agrees)."""
        if self._ssh_password is None or self.remember_login is False or not self.secrets.enabled:
            return
        if self.remember_login or self.ui.confirm(_("Remember the login password on this computer?")):
            where = self.secrets.put_login(account, self._ssh_password)
            if where:
                self.ui.say(_("the login password is remembered ({where}); `cloudshare forget` removes it")
                    .format(where=where))

    def connect(self, remote: str) -> Session:
        """One connection per command, reused for every step."""
        row = self.registry.get_remote(remote)
        return self._connect_endpoint(Endpoint.parse(row["url"]), row["identity"])

    # --- areas --------------------------------------------------------------------------

    def areas(self, remote: str) -> list[dict[str, Any]]:
        with self.connect(remote) as session:
            return [row.as_json() for row in list_areas(session)]

    def history(self, name: str) -> list[dict[str, Any]]:
        ds = self._shared(name)
        with self.connect(ds["remote"]) as session:
            area = self._area_of(name, session)
            return [v.as_json() for v in area.versions()]

    # --- local data sets ----------------------------------------------------------------

    def add(self, name: str, path: Path) -> Outcome:
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
        ds = self.registry.get_dataset(name)
        self._forget_key_of(ds["area_id"], name)
        if ds["remote"]:
            with suppress(errors.CloudShareError):
                self.secrets.forget_login(Endpoint.parse(self.registry.get_remote(ds["remote"])["url"]).url())
        if ds["state"] == State.UNSHARED.value:
            self.registry.remove_dataset(name)
            return Outcome(_("{name} is no longer registered on this computer; the data at {path} was not "
                             "touched").format(
                                 name=name, path=ds['path']), {"name": name, "registered": False})
        return Outcome(_("the remembered key and login of {name} were forgotten on this computer; {name} "
                         "stays shared (the share password is asked at the next open)").format(name=name),
                       {"name": name, "registered": True})

    def status(self, name: str | None = None, refresh: bool = False) -> list[dict[str, Any]]:
        """The data list; with `refresh`, each shared data set's lock is looked up on its host."""
        rows = [self.registry.get_dataset(name)] if name else self.registry.list_datasets()
        if not refresh:
            return [self._status_row(row) for row in rows]
        sessions: dict[str, Session] = {}
        try:
            return [self._refreshed_row(row, sessions) for row in rows]
        finally:
            for session in sessions.values():
                session.close()

    def _refreshed_row(self, row: dict[str, Any], sessions: dict[str, Session]) -> dict[str, Any]:
        """Observe the host (no password needed) and let the machine follow what it sees."""
        name, problem, newest = row["name"], None, None
        if row["remote"] and row["state"] in (State.SHARED_IDLE, State.LOCKED_BY_OTHER, State.AREA_MISSING):
            try:
                with self._observing(name):
                    if row["remote"] not in sessions:
                        sessions[row["remote"]] = self.connect(row["remote"])
                    area = self._area_of(name, sessions[row["remote"]])
                    self._found_again(name)
                    info, newest = area.lock_info(), area.newest()
                self._follow_lock(name, info)
            except errors.LoginRefused as exc:
                problem = _("communication ID unusable: {error}").format(error=exc)
            except errors.CloudShareError as exc:
                problem = str(exc)
        out = self._status_row(self.registry.get_dataset(name))
        out.update(host_version=newest.version if newest else None, problem=problem)
        return out

    def _follow_lock(self, name: str, info: LockInfo) -> None:
        machine, _rest = self._machine(name)
        if info.status.claimable and machine.state is State.LOCKED_BY_OTHER:
            self._fire(name, Event.LOCK_FREE, describe_lock(info))
        elif not info.status.claimable and machine.state in (State.SHARED_IDLE, State.LOCKED_BY_OTHER):
            self._note_held(name, info)

    def _status_row(self, row: dict[str, Any]) -> dict[str, Any]:
        machine, _rest = _load_machine(row)
        ctx = machine.context
        holder = None
        if machine.state is State.LOCKED_BY_ME:
            holder = self.party.name
        elif machine.state is State.LOCKED_BY_OTHER:
            holder = ctx.holder
        return {
            "name": row["name"], "path": row["path"], "shared": machine.state is not State.UNSHARED,
            "state": machine.state.value, "step": ctx.step, "remote": row["remote"], "area": row["area"],
            "version": row["synced_version"], "lock_holder": holder,
            "lock_until": iso_utc(ctx.holder_until) if machine.state is State.LOCKED_BY_OTHER else None,
            "missing_reason": ctx.missing_reason,
        }

    # --- machine persistence -----------------------------------------------------------------

    def _machine(self, name: str) -> tuple[DataSetMachine, dict[str, Any]]:
        return _load_machine(self.registry.get_dataset(name))

    def _fire(self, name: str, event: Event, detail: str = "", extras: dict | None = None,
              fields: dict | None = None, **data: Any) -> State:
        """Step the machine, then persist it with an audit record in one transaction."""
        with self.registry.write():
            machine, old_extras = self._machine(name)
            before = machine.state
            after = machine.fire(event, **data)
            blob = {"machine": machine.to_dict(), **(old_extras if extras is None else extras)}
            self.registry.update_dataset(
                name, state=after.value, step=machine.context.step, machine=json.dumps(blob),
                **(fields or {}),
            )
            self.registry.record(name, event.value, before.value, after.value, detail)
        return after

    def _decide(self, name: str, command: Command, machine: DataSetMachine) -> Action:
        """What the core says `command` does now; a refusal becomes a plain error."""
        decision = plan(command, machine.state, machine.context)
        if isinstance(decision, Refusal):
            raise self._refusal(name, machine, decision)
        return decision

    def _refusal(self, name: str, machine: DataSetMachine, refusal: Refusal) -> errors.CloudShareError:
        """The core's refusal in plain words, with what to do next."""
        reason = refusal.reason
        if reason is Reason.NOT_SHARED:
            return errors.InvalidState(_("{name} is not shared").format(name=name),
                                       hint=_("start with `cloudshare share {name}` or `cloudshare join`"
                                              ).format(name=name))
        if reason is Reason.OPEN_BY_YOU:
            return errors.InvalidState(_("{name} is open by you").format(name=name),
                                       hint=_("close it first: `cloudshare close {name}`").format(name=name))
        if reason is Reason.NOT_OPEN_BY_YOU:
            return errors.InvalidState(_("{name} is not open by you ({state})").format(
                name=name, state=machine.state.value),
                hint=_("open it first with `cloudshare open {name}`").format(name=name))
        if reason in (Reason.AREA_DELETED, Reason.ID_UNUSABLE):
            return _missing_error(name, machine.context.missing_reason)
        return errors.InvalidState(_("{name} is already shared ({state})").format(
            name=name, state=machine.state.value))

    def _shared(self, name: str) -> dict[str, Any]:
        row = self.registry.get_dataset(name)
        if not row["remote"] or not row["area"]:
            raise errors.InvalidState(_("{name} is not shared").format(name=name),
                                      hint=_("start with `cloudshare share {name}` or `cloudshare join`"
                                             ).format(name=name))
        return row

    def _area_of(self, name: str, session: Session) -> Area:
        row = self.registry.get_dataset(name)
        area = self._new_area(session, row["area"])
        config = area.load()
        if row["area_id"] and config["area_id"] != row["area_id"]:
            raise errors.AreaGone(_("area {area} was deleted and another one now has its name").format(
                area=row['area']),
                                  hint=_("stop sharing with `cloudshare leave {name}`").format(name=name))
        return area

    def _unlock(self, area: Area, purpose: str, ask: bool = False) -> None:
        """The area's keys: remembered on this computer, else from the share password.

        `ask` forces the password where the page asks for it (join, delete, breaking a lock).
        A key that does not fit the area is forgotten and the password asked instead.
        """
        if not ask:
            key = self.secrets.get_data_key(area.area_id)
            if key is not None:
                try:
                    area.use_data_key(key)
                    return
                except ValueError:
                    self.secrets.forget_data_key(area.area_id)
        area.unlock_keys(self.ui.share_password(purpose, False))
        self._remember_key(area)

    def _forget_key_of(self, area_id: str | None, name: str | None = None) -> None:
        """Forget an area's remembered key unless another local data set still shares it."""
        others = [r for r in self.registry.list_datasets()
                  if r["area_id"] == area_id and r["name"] != name and r["state"] != State.UNSHARED.value]
        if area_id and not others:
            self.secrets.forget_data_key(area_id)

    def _remember_key(self, area: Area) -> None:
        if area.data_key is not None:
            self.secrets.put_data_key(area.area_id, area.data_key)

    @contextmanager
    def _observing(self, name: str) -> Iterator[None]:
        """Record 'area gone' (deleted or ID unusable) on the machine, then re-raise."""
        try:
            yield
        except errors.AreaGone as exc:
            self._mark_missing(name, AreaGoneReason.DELETED, str(exc))
            raise
        except errors.LoginRefused as exc:
            self._mark_missing(name, AreaGoneReason.ID_UNUSABLE, str(exc))
            raise

    def _mark_missing(self, name: str, reason: AreaGoneReason, detail: str) -> None:
        machine, _rest = self._machine(name)
        if reason is AreaGoneReason.ID_UNUSABLE and machine.state is State.LOCKED_BY_ME:
            return  # keep our lock: once the login works again, `close` sends the work
        if Event.AREA_GONE.value in machine.allowed():
            self._fire(name, Event.AREA_GONE, detail, reason=reason.value)

    def _found_again(self, name: str) -> None:
        machine, _rest = self._machine(name)
        if machine.state is State.AREA_MISSING:
            self._fire(name, Event.AREA_FOUND, "the area answers again")

    # --- starting to share ---------------------------------------------------------------------

    def share(self, name: str, path: Path | None, remote: str, area_name: str, yes: bool) -> Outcome:
        """Upload the local data and start Cloud Share (creates the area)."""
        with self._new_registration_undone(name):
            return self._share(name, path, remote, area_name, yes)

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
                if not existed and self.registry.get_dataset(name)["state"] == State.UNSHARED.value:
                    self.registry.remove_dataset(name)
            raise

    def _share(self, name: str, path: Path | None, remote: str, area_name: str, yes: bool) -> Outcome:
        row, machine = self._setup_prelude(name, path, remote, area_name, must_exist=True)
        if machine.state is not State.INITIALIZING:
            question = _("Upload your local data ({path}) to area {area} on {remote} and start Cloud Share?"
                         ).format(path=row["path"], area=area_name, remote=remote)
            if not yes and not self.ui.confirm(question):
                raise errors.Declined(_("nothing was shared"), hint=_("answer yes, or pass --yes"))
            self._fire(name, Event.START_UPLOAD, f"{remote}/{area_name}",
                       fields={"remote": remote, "area": area_name})
        password = self.ui.share_password(_("new share password for {area_name}").format(
            area_name=area_name), True)
        if len(password) < MIN_SHARE_PASSWORD and self._machine(name)[0].context.step == Step.CREATE_AREA:
            self._fire(name, Event.SETUP_FAILED, "share password too short",
                       fields={"remote": None, "area": None, "area_id": None})
            raise errors.InvalidName(
                _("the share password must have at least {min_share_password} characters").format(
                    min_share_password=MIN_SHARE_PASSWORD),
                hint=_("anyone who can read the area may try passwords offline: choose a longer one"))
        try:
            with self.connect(remote) as session:
                return self._share_steps(name, session, area_name, password)
        except errors.CloudShareError as exc:
            self._roll_back_setup(name, exc)
            raise

    def _share_steps(self, name: str, session: Session, area_name: str, password: str) -> Outcome:
        machine, _rest = self._machine(name)
        area = self._new_area(session, area_name)
        if machine.context.step == Step.UPLOADED:
            self._fire(name, Event.SETUP_DONE, "resumed")
            version = machine.context.version
            return Outcome(_("{name} is shared in area {area_name} (version {version})").format(
                name=name, area_name=area_name, version=version),
                           {"name": name, "area": area_name, "version": version})
        if machine.context.step == Step.CREATE_AREA:
            self._create_or_adopt(area, self.registry.get_dataset(name)["name"], password)
            self._fire(name, Event.STEP_REACHED, "area created", step=Step.UPLOAD,
                       fields={"area_id": area.area_id})
        else:  # resuming: the area we created is there; check it is ours
            if area.area_id != self.registry.get_dataset(name)["area_id"]:
                raise errors.AreaGone(_("area {area_name} is no longer the area this setup created").format(
                    area_name=area_name))
            area.unlock_keys(password)
        row = self.registry.get_dataset(name)
        grant = self._acquire_for(name, area, DEFAULT_RUN_LEASE, "first upload")
        stamp = quick_stamp(Path(row["path"]))
        snap = LocalSnapshot.scan(Path(row["path"]), area.require_keys())
        version = area.commit(grant, self.party, snap, "start of Cloud Share", self._cache(area),
                              self.ui.progress(_("uploading"), snap.manifest.total_size()), base=0)
        area.release(grant, self.party)
        self._fire(name, Event.STEP_REACHED, f"version {version}", step=Step.UPLOADED, version=version)
        self._fire(name, Event.SETUP_DONE, extras={}, fields={"synced_version": version,
                                                   "synced_hash": snap.fingerprint,
                                                   "synced_stamp": stamp})
        self._remember_key(area)
        return Outcome(_("{name} is shared in area {area_name} (version {version}, {size})").format(
            name=name, area_name=area_name, version=version, size=human_size(snap.manifest.total_size())),
                       {"name": name, "area": area_name, "version": version})

    def _setup_prelude(self, name: str, path: Path | None, remote: str, area_name: str,
                       must_exist: bool) -> tuple[dict[str, Any], DataSetMachine]:
        """Checks shared by share and join: names, remote, data set, and a setup to resume."""
        validate_area_name(area_name)
        self.registry.get_remote(remote)
        row = self._ensure_dataset(name, path, must_exist=must_exist)
        machine, _rest = _load_machine(row)
        _same_setup(row, machine, remote, area_name)
        self._decide(name, Command.SHARE, machine)
        return row, machine

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

    def _roll_back_setup(self, name: str, exc: Exception) -> None:
        """Undo a setup that cannot go on; transient network trouble resumes later instead."""
        machine, _rest = self._machine(name)
        failure = Failure.NETWORK if isinstance(exc, errors.NetworkDown | errors.TransferError) else \
            Failure.AREA_GONE if isinstance(exc, errors.AreaGone) else Failure.OTHER
        if machine.state is State.INITIALIZING and after_setup_failure(machine.context, failure):
            self._forget_key_of(self.registry.get_dataset(name)["area_id"], name)
            self._fire(name, Event.SETUP_FAILED, str(exc), fields={"remote": None, "area": None,
                                                                   "area_id": None})

    def _ensure_dataset(self, name: str, path: Path | None, must_exist: bool) -> dict[str, Any]:
        try:
            row = self.registry.get_dataset(name)
        except errors.NotRegistered:
            if path is None:
                raise
            path = Path(path).expanduser()
            if must_exist and not path.exists():
                raise errors.LocalPathMissing(_("{path} does not exist").format(path=path),
                                             hint=_("give the path of the local data")) from None
            return self.registry.add_dataset(name, path.resolve())
        if path is not None and Path(path).expanduser().resolve() != Path(row["path"]):
            raise errors.AlreadyRegistered(_("{name} is registered with another path: {path}").format(
                name=name, path=row['path']))
        return row

    def join(self, name: str, path: Path, remote: str, area_name: str) -> Outcome:
        """Receive the area's data into PATH and start sharing (only if the password matches)."""
        with self._new_registration_undone(name):
            return self._join(name, path, remote, area_name)

    def _join(self, name: str, path: Path, remote: str, area_name: str) -> Outcome:
        row, machine = self._setup_prelude(name, path, remote, area_name, must_exist=False)
        if machine.state is not State.INITIALIZING:
            self._fire(name, Event.START_RECEIVE, f"{remote}/{area_name}",
                       fields={"remote": remote, "area": area_name})
        try:
            with self.connect(remote) as session:
                return self._join_steps(name, session, area_name)
        except errors.CloudShareError as exc:
            self._roll_back_setup(name, exc)
            raise

    def _join_steps(self, name: str, session: Session, area_name: str) -> Outcome:
        area = self._existing_area(session, area_name)
        self._unlock(area, _("share password of area {area}").format(area=area_name), ask=True)
        machine, _rest = self._machine(name)
        if machine.context.step == Step.CHECK_PASSWORD:
            self._fire(name, Event.STEP_REACHED, "password matches", step=Step.RECEIVE,
                       fields={"area_id": area.area_id})
        newest = area.newest()
        if newest is None:
            raise errors.AreaEmpty(_("area {area_name} has no data yet").format(area_name=area_name),
                                         hint=_("ask the other side to finish `cloudshare share` first"))
        target = Path(self.registry.get_dataset(name)["path"])
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
        self._fire(name, Event.STEP_REACHED, f"version {newest.version}", step=Step.RECEIVED,
                   version=newest.version)
        self._fire(name, Event.SETUP_DONE, fields={"synced_version": newest.version,
                                                   "synced_hash": fingerprint, "synced_stamp": stamp})
        message = _("{name} received version {version} from area {area} and is now shared").format(
            name=name, version=newest.version, area=area_name)
        return Outcome(message, {"name": name, "version": newest.version,
                                 "kept_aside": str(kept) if kept else None})

    # --- open / close ------------------------------------------------------------------------------

    @contextmanager
    def graceful_interrupts(self) -> Iterator[None]:
        """A first Ctrl-C stops at the next safe point (between chunks, between steps), so that
        what was left can be put right and said; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def first_then_now(_signum: int, _frame: object) -> None:
            if self._interrupt.is_set():
                raise KeyboardInterrupt
            self._interrupt.set()

        self._interrupt.clear()
        previous = signal.signal(signal.SIGINT, first_then_now)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def open(self, name: str, lease: int = DEFAULT_LEASE, note: str = "", wait: float | None = None,
             read_only: bool = False) -> Outcome:
        """Receive the newest version and take the lock (or only receive, read-only)."""
        with self.graceful_interrupts():
            return self._open(name, lease, note, wait, read_only)

    def _open(self, name: str, lease: int, note: str, wait: float | None, read_only: bool) -> Outcome:
        command = Command.OPEN_READ_ONLY if read_only else Command.OPEN
        ds = self._resume(name, command)
        machine, _rest = _load_machine(ds)
        action = self._decide(name, command, machine)
        if action is Action.ALREADY_OPEN:
            grant = grant_from_dict(_extras(ds)["grant"])
            return Outcome(_("{name} is already open by you (lease until {until})").format(
                name=name, until=local_time(grant.until)),
                           {"name": name, "state": "locked-by-me"})
        with self._observing(name), self.connect(ds["remote"]) as session:
            area = self._area_of(name, session)
            self._found_again(name)
            self._unlock(area, _("share password of {name}").format(name=name))
            if action is Action.RECEIVE_ONLY:
                return self._open_read_only(name, area)
            if action is Action.RECEIVE_UNDER_LOCK:  # an earlier open stopped before the newest arrived
                self.ui.say(_("an earlier open of {name} stopped before the newest version arrived; "
                              "receiving it now").format(name=name))
                grant = self._still_holding(name, area)
            else:
                grant = self._take_lock(name, area, lease, note, wait)
            outcome = self._finish_open(name, area, grant)
            outcome.message += _("; locked by you until {until}").format(until=local_time(grant.until))
            outcome.data.update(state="locked-by-me", lock_until=iso_utc(grant.until))
            return outcome

    def _open_read_only(self, name: str, area: Area) -> Outcome:
        """Receive the newest version without the lock; the copy is made read-only until a real open."""
        path = Path(self.registry.get_dataset(name)["path"])
        set_writable(path, True)
        outcome = self._receive_newest(name, area)
        set_writable(path, False)
        info = area.lock_info()
        self._follow_lock(name, info)
        outcome.message += _("; read-only (the data is {lock})").format(lock=describe_lock(info))
        outcome.data.update(read_only=True, lock=info.as_json())
        return outcome

    def _take_lock(self, name: str, area: Area, lease: int, note: str, wait: float | None) -> Grant:
        """Acquire and record it; a claim the local machine refuses is given back at once."""
        grant = self._acquire_for(name, area, lease, note, wait)
        try:
            self._fire(name, Event.LOCK_GRANTED, f"generation {grant.lease.generation}",
                       extras={"grant": grant_to_dict(grant)}, token=grant.lease.generation)
        except BaseException:
            with suppress(Exception):
                area.release(grant, self.party)
            raise
        self.live_grants[name] = grant
        return grant

    def _still_holding(self, name: str, area: Area) -> Grant:
        """The grant this computer recorded, renewed on the host; `Fenced` handling if lost."""
        grant = self.live_grants.get(name) or grant_from_dict(self._machine(name)[1]["grant"])
        try:
            area.ensure_holding(grant, self.party)
        except errors.Fenced as exc:
            holder = self._lease_lost(name, area, str(exc), fields={})
            raise errors.LockedByOther(_("your lock on {name} ran out before the newest version was "
                                         "received; {holder} holds it now").format(
                                             name=name, holder=holder or _('someone else'))) from None
        self._sync_renewal(name, grant)
        self.live_grants[name] = grant
        return grant

    def _finish_open(self, name: str, area: Area, grant: Grant) -> Outcome:
        """Receive the newest version under the lock; only then may anything be sent.

        If receiving fails or is interrupted, the lock is given back (and the user told);
        if even that fails, the next `open` or `close` receives first.
        """
        try:
            area.check_interrupt()
            set_writable(Path(self.registry.get_dataset(name)["path"]), True)
            newest, kept = self._bring_up_to_date(name, area)
        except BaseException as exc:
            if not _was_interrupted(exc) and not self._interrupt.is_set():
                self._open_failed(name, area, grant, exc)
            raise errors.Interrupted(_("open of {name} was interrupted; {give_back}; your copy was not "
                                       "changed").format(
                                           name=name, give_back=self._give_back(name, area, grant))) from None
        version = self.registry.get_dataset(name)["synced_version"]
        self._fire(name, Event.NEWEST_RECEIVED, f"version {version}", token=grant.lease.generation,
                   version=version)
        return self._received_outcome(name, newest, kept, hold=True)

    def _open_failed(self, name: str, area: Area, grant: Grant, exc: BaseException) -> NoReturn:
        """Receiving failed: give the lock back, say so, and raise a clear error."""
        if not isinstance(exc, errors.CloudShareError | OSError):
            raise exc
        self.ui.say(_("receiving {name} failed; {give_back}").format(
            name=name, give_back=self._give_back(name, area, grant)))
        if isinstance(exc, OSError):
            raise errors.LocalDiskError(_("could not write {name}: {reason}").format(
                name=name, reason=exc.strerror or exc)) from None
        raise exc

    def _give_back(self, name: str, area: Area, grant: Grant) -> str:
        """Release a lock whose open did not finish; says what happened, for the user.

        The command's connection may be unusable after an interruption: a new one is tried.
        """
        released = False
        with suppress(Exception):
            released = area.release(grant, self.party)
        if not released:
            with suppress(Exception), self.connect(self.registry.get_dataset(name)["remote"]) as session:
                released = self._new_area(session, area.name).release(grant, self.party)
        if not released:
            return _("the lock could not be released; `cloudshare open {name}` receives the newest "
                     "version first, or it expires with its lease").format(name=name)
        self._fire(name, Event.LOCK_RETURNED, "open did not finish: lock given back", extras={},
                   token=grant.lease.generation)
        self.live_grants.pop(name, None)
        return _("the lock was released")

    def _acquire_for(self, name: str, area: Area, lease: int, note: str,
                     wait: float | None = None) -> Grant:
        """Acquire for a data set. The session id is saved before claiming, so a process
        killed right after its claim leaves a lock the next command can take back at once.
        """
        pending = self._machine(name)[1].get("pending_session")
        if pending:
            adopted = area.adopt(pending, self.party, lease)
            if adopted is not None:
                self.ui.say(_("{name}: took back the lock an interrupted command had claimed").format(
                    name=name))
                return adopted
        session = new_session_id(self.party)
        self._set_extras(name, pending_session=session)
        return self._acquire_waiting(name, area, lease, note, wait, session)

    def _set_extras(self, name: str, **values: Any) -> None:
        with self.registry.write():
            machine, extras = self._machine(name)
            blob = {"machine": machine.to_dict(), **extras, **values}
            self.registry.update_dataset(name, machine=json.dumps(blob))

    def _acquire_waiting(self, name: str, area: Area, lease: int, note: str,
                         wait: float | None, session: str | None = None) -> Grant:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            area.check_interrupt()
            got = self._acquire_once(area, lease, note, session)
            if isinstance(got, Grant):
                return got
            self._note_held(name, got)
            if deadline is None:
                raise errors.LockedByOther(_("{name} is {lock}").format(name=name, lock=describe_lock(got)))
            remaining = deadline - time.monotonic()
            if wait == 0:  # --wait without a duration: until the holder's lease runs out
                remaining = (got.status.until or 0) + DEFAULT_SLACK + 1 - got.server_now
                deadline = time.monotonic() + remaining
                wait = remaining
            if remaining <= 0:
                raise errors.LockedByOther(_("{name} is still {lock}").format(
                    name=name, lock=describe_lock(got)))
            self.ui.say(_("{name} is {lock}; waiting ({remaining} left)").format(
                name=name, lock=describe_lock(got), remaining=format_duration(remaining)))
            time.sleep(min(WAIT_POLL_MAX, max(0.5, remaining)))

    def _note_held(self, name: str, info: LockInfo) -> None:
        machine, _rest = self._machine(name)
        if machine.state in (State.SHARED_IDLE, State.LOCKED_BY_OTHER):
            self._fire(name, Event.LOCK_HELD, describe_lock(info), token=info.status.generation,
                       holder=info.holder.get("name"), until=info.status.until)

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
        got = self._acquire_once(area, lease, note)
        if not isinstance(got, Grant):
            raise errors.LockedByOther(_("area {name} is {lock}").format(
                name=area.name, lock=describe_lock(got)))
        return got

    def _receive_newest(self, name: str, area: Area) -> Outcome:
        """Receive without the lock (read-only): bring the local copy to the newest version."""
        newest, kept = self._bring_up_to_date(name, area)
        if newest is not None:
            self._fire(name, Event.RECEIVED, f"version {newest.version}", version=newest.version)
        return self._received_outcome(name, newest, kept, hold=False)

    def _bring_up_to_date(self, name: str, area: Area) -> tuple[Version | None, Path | None]:
        """Receive the newest version if ours is older, keeping unsent local changes aside.

        Returns the version received (None: already up to date) and where local changes
        were kept (None: there were none). A local copy that already is the newest version
        (a receive killed after it swapped the data in) is recorded, not kept aside.
        """
        row = self.registry.get_dataset(name)
        newest = area.newest()
        target = Path(row["path"])
        synced = row["synced_version"]
        if newest is None or (synced is not None and newest.version <= synced):
            return None, None
        changed = _changed_since_sync(row)
        if changed and target.exists() and self._is_copy_of(area, target, newest):
            self._record_sync(name, target, newest.version)
            return newest, None
        kept = keep_aside(target, "local-changes") if changed and target.exists() else None
        try:
            area.download(newest, target, self._cache(area), self.ui.progress(_("receiving"), newest.size))
        except BaseException:
            if kept is not None and not os.path.lexists(target):
                with suppress(OSError):
                    os.replace(kept, target)  # nothing arrived: the unsent changes go back in place
            raise
        self._record_sync(name, target, newest.version)
        return newest, kept

    def _record_sync(self, name: str, path: Path, version: int | None) -> None:
        """The local data now is `version`: remember its stamp (taken first) and fingerprint."""
        stamp = quick_stamp(path)
        self.registry.update_dataset(name, synced_version=version, synced_hash=local_fingerprint(path),
                                     synced_stamp=stamp)

    def _is_copy_of(self, area: Area, target: Path, version: Version) -> bool:
        """Does the local data hold exactly the bytes of `version`?"""
        try:
            local = LocalSnapshot.scan(target, area.require_keys()).manifest
            return same_content(local, area.read_manifest(version))
        except (errors.CloudShareError, OSError):
            return False

    def _received_outcome(self, name: str, newest: Version | None, kept: Path | None, hold: bool) -> Outcome:
        if newest is None:
            synced = self.registry.get_dataset(name)["synced_version"]
            return Outcome(_("{name} is up to date (version {synced})").format(
                name=name, synced=synced), {"name": name, "version": synced})
        writer = newest.writer.get("name", "?")
        if kept is not None:
            raise errors.Conflict(
                _("both you and {writer} changed {name}: your copy was kept aside as {kept}; version "
                  "{version} was received").format(
                      writer=writer, name=name, kept=kept, version=newest.version)
                + (_("; you hold the lock") if hold else "")
            )
        return Outcome(_("{name} received version {version} (by {writer})").format(
            name=name, version=newest.version, writer=writer),
                       {"name": name, "version": newest.version})

    def close(self, name: str, note: str = "") -> Outcome:
        """Send the new version (if changed) and release the lock."""
        with self.graceful_interrupts():
            return self._close(name, note)

    def _close(self, name: str, note: str) -> Outcome:
        ds = self.registry.get_dataset(name)
        machine, extras = _load_machine(ds)
        action = self._decide(name, Command.CLOSE, machine)
        grant = self.live_grants.get(name) or grant_from_dict(extras["grant"])
        with self._observing(name), self.connect(ds["remote"]) as session:
            area = self._area_of(name, session)
            self._unlock(area, _("share password of {name}").format(name=name))
            if action is Action.RECEIVE_THEN_SEND:
                self._receive_before_sending(name, area)
            try:
                return self._commit_and_release(name, area, grant, note)
            except BaseException as exc:
                if not (_was_interrupted(exc) or self._interrupt.is_set()):
                    raise
                raise errors.Interrupted(
                    _("close of {name} was interrupted: the new version was not sent and you still hold the "
                      "lock").format(
                          name=name), hint=_("`cloudshare close {name}` again sends it").format(
                              name=name)) from None

    def _receive_before_sending(self, name: str, area: Area) -> None:
        """An open that stopped before the newest version arrived: receive it now, never send the old copy."""
        self.ui.say(_("the open of {name} stopped before the newest version arrived; receiving it first")
            .format(name=name))
        grant = self._still_holding(name, area)
        newest, kept = self._bring_up_to_date(name, area)
        version = self.registry.get_dataset(name)["synced_version"]
        self._fire(name, Event.NEWEST_RECEIVED, f"version {version}", token=grant.lease.generation,
                   version=version)
        if kept is not None and newest is not None:
            raise errors.Conflict(
                _("{name} was changed on a copy older than version {version}: your copy was kept aside as "
                  "{kept} and version {version} was received; you still hold the lock").format(
                      name=name, version=newest.version, kept=kept),
                hint=_("re-apply your changes to the received version, then close"))

    def _commit_and_release(self, name: str, area: Area, grant: Grant, note: str) -> Outcome:
        row = self.registry.get_dataset(name)
        path = Path(row["path"])
        if not path.exists():
            raise errors.LocalPathMissing(_("{path} is missing; nothing was sent").format(path=path),
                                         hint=_("put the data back, then close again"))
        stamp = quick_stamp(path)  # before the scan: a change during the scan shows next time
        unchanged = bool(row["synced_hash"]) and stamp == row["synced_stamp"]
        snap = None if unchanged else LocalSnapshot.scan(path, area.require_keys())
        for skipped in snap.skipped if snap else ():
            self.ui.say(_("warning: {skipped} was not sent (not a regular file)").format(skipped=skipped))
        if snap is None or snap.fingerprint == row["synced_hash"]:
            version, message = row["synced_version"], _("{name} closed without changes").format(name=name)
            try:
                area.ensure_holding(grant, self.party)
            except errors.Fenced as exc:  # nothing to lose: just follow the new holder
                self._lease_lost(name, area, str(exc), fields={})
                return Outcome(_("{message}; your lease had run out and someone else holds the lock now")
                    .format(message=message),
                               {"name": name, "version": version})
        else:
            try:
                version = area.commit(grant, self.party, snap, note, self._cache(area),
                                      self.ui.progress(_("sending"), snap.manifest.total_size()),
                                      base=row["synced_version"] or 0)
            except errors.Fenced as exc:
                self._fenced(name, area, exc)
            except errors.StaleBase as exc:
                self._stale_base(name, area, grant, exc)
            message = _("{name} sent as version {version}").format(name=name, version=version)
            # Recorded at once: a retried close after a failed release must not send it twice.
            self.registry.update_dataset(name, synced_version=version, synced_hash=snap.fingerprint,
                                         synced_stamp=stamp)
        area.release(grant, self.party)
        with suppress(errors.CloudShareError, OSError):
            area.sweep_tmp()  # abandoned uploads of crashed writers, a day old or more
        self._sync_renewal(name, grant)
        self._fire(name, Event.COMMITTED, message, extras={}, token=grant.lease.generation, version=version)
        self.live_grants.pop(name, None)
        return Outcome(message + _("; lock released"), {"name": name, "version": version})

    def _lease_lost(self, name: str, area: Area, detail: str, fields: dict[str, Any]) -> str | None:
        """Record that a newer holder exists (fenced); returns who holds the lock now."""
        obs, record = area.observe_lock()
        holder = record.get("holder")
        holder = holder.get("name") if isinstance(holder, dict) else None
        token = max(obs.generation, (self._machine(name)[0].context.token or 0) + 1)
        self._fire(name, Event.LEASE_LOST, detail, extras={}, fields=fields, token=token, holder=holder)
        self.live_grants.pop(name, None)
        return holder

    def _stale_base(self, name: str, area: Area, grant: Grant, exc: errors.StaleBase) -> NoReturn:
        """Our copy is older than the newest version: keep the work aside, receive, keep the lock."""
        path = Path(self.registry.get_dataset(name)["path"])
        kept = keep_aside(path, "not-sent")
        self.registry.update_dataset(name, synced_hash=None)
        newest, _rest = self._bring_up_to_date(name, area)
        self._fire(name, Event.NEWEST_RECEIVED, f"version {exc.newest}", token=grant.lease.generation,
                   version=self.registry.get_dataset(name)["synced_version"])
        raise errors.Conflict(
            _("{error}. Your work was kept aside as {kept}; version {newest} was received and you still hold "
              "the lock").format(error=exc, kept=kept, newest=exc.newest),
            hint=_("re-apply your changes to the received version, then close"))

    def _fenced(self, name: str, area: Area, exc: errors.Fenced) -> NoReturn:
        """Keep the unsent work aside, record the loss, then receive the newest version."""
        path = Path(self.registry.get_dataset(name)["path"])
        kept = keep_aside(path, "not-sent")
        self._lease_lost(name, area, str(exc), fields={"synced_hash": None, "synced_version": None})
        newest, received = area.newest(), _("nothing was received")
        if newest is not None:
            try:
                area.download(newest, path, self._cache(area))
                self.registry.update_dataset(name, synced_version=newest.version,
                                             synced_hash=local_fingerprint(path))
                received = _("the newest version ({version}) was received").format(version=newest.version)
            except errors.CloudShareError as err:
                received = _("receiving the newest version failed ({error}); open it again").format(error=err)
        raise errors.Fenced(_("{error}. Your work was kept aside as {kept}; {received}").format(
            error=exc, kept=kept, received=received))

    # --- run -----------------------------------------------------------------------------------------

    def run(self, name: str, command: Sequence[str], lease: int = DEFAULT_RUN_LEASE, note: str = "",
            wait: float | None = None) -> int:
        """Open, run the program while renewing the lease, close when it exits.

        Returns the program's exit status (128 + N when a signal N ended it).
        """
        if not command:
            raise errors.ProgramNotFound(_("no program given"), hint=_("cloudshare run NAME -- PROGRAM "
                                                                       "[ARGS…]"))
        self.ui.say(self.open(name, lease=lease, note=note or f"running {command[0]}", wait=wait).message)
        ds = self.registry.get_dataset(name)
        grant = self.live_grants.get(name) or grant_from_dict(_extras(ds)["grant"])
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
            lost = self._renew_while_running(name, ds["remote"], grant, proc)
        finally:
            signal.signal(signal.SIGINT, previous)
            proc.wait()
        if lost:
            self.ui.say(_("WARNING: the lease was lost while the program ran; "
                        "closing will keep your work aside"))
        self.ui.say(self.close(name).message)
        code = proc.returncode
        return 128 - code if code < 0 else code

    def _renew_while_running(self, name: str, remote: str, grant: Grant, proc: subprocess.Popen) -> bool:
        """Renew at a third of the lease until the program exits; True if the lease was lost.

        Only being fenced is final: other failures are retried (a lease may be renewed as
        long as nobody has claimed the next generation).
        """
        session: Session | None = None
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
                        session = self.connect(remote)
                    self._new_area(session, self.registry.get_dataset(name)["area"]).renew(grant, self.party)
                    self._save_grant(name, grant)
                except errors.Fenced as exc:
                    self.ui.say(_("WARNING: {error}. Someone else now holds {name}; your changes will be "
                                  "kept aside when the program exits.").format(error=exc, name=name))
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

    def _sync_renewal(self, name: str, grant: Grant) -> None:
        """Record a renewal made on the way (e.g. a close in a later process renews first)."""
        machine, _rest = self._machine(name)
        if machine.state is State.LOCKED_BY_ME and grant.lease.generation > (machine.context.token or 0):
            self._save_grant(name, grant)

    def _save_grant(self, name: str, grant: Grant) -> None:
        self._fire(name, Event.RENEWED, f"generation {grant.lease.generation}",
                   extras={"grant": grant_to_dict(grant)}, token=grant.lease.generation)

    # --- stopping ------------------------------------------------------------------------------------

    def leave(self, name: str, yes: bool) -> Outcome:
        """Stop Cloud Share for me only; the others go on."""
        if self.registry.get_dataset(name)["state"] == State.LEAVING.value:
            state = self._resume(name, Command.LEAVE)["state"]
            return Outcome(_("{name}: the interrupted stop was finished ({state})").format(
                name=name, state=state),
                           {"name": name, "state": state})
        machine, _rest = self._machine(name)
        decision = plan(Command.LEAVE, machine.state, machine.context)
        if isinstance(decision, Refusal):  # not shared: nothing to leave
            raise errors.InvalidState(_("{name} is not shared on this computer; there is nothing to leave")
                .format(name=name),
                                      hint=_("`cloudshare forget {name}` removes its registration (the data "
                                             "stays)").format(name=name))
        if decision is Action.ABANDON_SETUP:
            self._fire(name, Event.SETUP_FAILED, "setup abandoned by leave",
                       fields={"remote": None, "area": None, "area_id": None})
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
            skip_receive = self._let_go_before_leaving(name)
        elif decision is Action.LEAVE_WITHOUT_RECEIVING:
            skip_receive = _("the area is missing: nothing to receive")
        self._fire(name, Event.LEAVE, "just me")
        if skip_receive:
            self._fire(name, Event.STEP_REACHED, skip_receive, step=Step.FORGET)
        return self._leave_steps(name, skip_receive)

    def _let_go_before_leaving(self, name: str) -> str:
        """Leaving while holding the lock: release it if the host lets us; say what was not sent."""
        ds = self.registry.get_dataset(name)
        extras = self._machine(name)[1]
        released = _("the lock could not be released (it expires with its lease)")
        with suppress(errors.CloudShareError, OSError, KeyError, ValueError), \
                self.connect(ds["remote"]) as session:
            area = self._area_of(name, session)
            grant = self.live_grants.get(name) or grant_from_dict(extras["grant"])
            if area.release(grant, self.party):
                released = _("the lock was released")
        path = Path(ds["path"])
        if local_fingerprint(path) == (ds["synced_hash"] or "absent"):
            return _("{released}; you had no unsent changes").format(released=released)
        return _("{released}; your changes since version {version} were NOT sent and stay in {path}").format(
            released=released, version=ds["synced_version"], path=path)

    def _leave_steps(self, name: str, note: str = "") -> Outcome:
        machine, _rest = self._machine(name)
        ds = self.registry.get_dataset(name)
        if machine.context.step == Step.RECEIVE_LATEST and machine.context.mode == LeaveMode.JUST_ME:
            note = self._receive_before_leaving(name, ds)
            self._fire(name, Event.STEP_REACHED, note, step=Step.FORGET)
        self._forget_key_of(ds["area_id"], name)
        self._fire(name, Event.LEAVE_DONE, "stopped Cloud Share for me",
                   fields={"remote": None, "area": None, "area_id": None}, extras={})
        return Outcome((_("{name} no longer uses Cloud Share on this computer; {note}").format(
            name=name, note=note) if note
                       else _("{name} no longer uses Cloud Share on this computer").format(name=name)),
                       {"name": name, "state": "unshared"})

    def _receive_before_leaving(self, name: str, ds: dict[str, Any]) -> str:
        try:
            with self.connect(ds["remote"]) as session:
                area = self._area_of(name, session)
                self._unlock(area, _("share password of {name}").format(name=name))
                newest = area.newest()
                if newest is None or (ds["synced_version"] or 0) >= newest.version:
                    return _("your copy was already the newest")
                changed = local_fingerprint(Path(ds["path"])) != (ds["synced_hash"] or "absent")
                if changed:
                    return _("your local changes were kept; the newest version was not received")
                area.download(newest, Path(ds["path"]), self._cache(area))
                self.registry.update_dataset(name, synced_version=newest.version,
                                             synced_hash=local_fingerprint(Path(ds["path"])))
                return _("received the newest version ({version}) first").format(version=newest.version)
        except (errors.AreaGone, errors.LoginRefused, errors.NetworkDown) as exc:
            return _("could not receive the newest version ({reason})").format(reason=exc.__class__.__name__)

    def delete_area(self, remote: str, area_name: str, yes: bool) -> Outcome:
        """Delete the shared data on the host for everyone (password; not while locked by another)."""
        validate_area_name(area_name)
        names = self._local_users_of(remote, area_name)
        with self.connect(remote) as session:
            area = self._existing_area(session, area_name)
            if not yes and not self.ui.confirm(_("Delete the selected data ({area_name}) on the host?")
                .format(area_name=area_name)):
                raise errors.Declined(_("nothing was deleted"), hint=_("answer yes, or pass --yes"))
            self._unlock(area, _("share password of area {area} (to delete it)").format(
                area=area_name), ask=True)
            names = [n for n in names if self.registry.get_dataset(n)["area_id"] in (None, area.area_id)]
            for name in names:
                self._start_delete(name, area)
            try:
                grant = self._acquire_or_raise(area, DEFAULT_RUN_LEASE, "deleting the area")
            except errors.LockedByOther as exc:
                exc.hint = _("try again once they have closed it (`cloudshare areas REMOTE` shows the lock)")
                for name in names:
                    self._fire(name, Event.LEAVE_ABORTED, "locked by another party")
                raise
            for name in names:  # someone may have sent a version since: receive it too
                self._receive_before_leaving_everyone(name, area, self.registry.get_dataset(name))
                self._fire(name, Event.STEP_REACHED, "lock taken", step=Step.DELETE)
            area.delete(self.party, grant)
            self.secrets.forget_data_key(area.area_id)
        for name in names:
            self._fire(name, Event.STEP_REACHED, "deleted on the host", step=Step.DELETED)
            self._fire(name, Event.LEAVE_DONE, "Cloud Share data deleted",
                       fields={"remote": None, "area": None, "area_id": None}, extras={})
        return Outcome(_("Cloud Share data deleted: area {area_name} on {remote}").format(
            area_name=area_name, remote=remote),
                       {"area": area_name, "datasets": names})

    def _local_users_of(self, remote: str, area_name: str) -> list[str]:
        """Local data sets shared through this area, transient states settled first."""
        names = []
        for row in self.registry.find_by_area(remote, area_name):
            machine, _rest = _load_machine(self._resume(row["name"], Command.DELETE_AREA))
            if machine.state is not State.UNSHARED:
                self._decide(row["name"], Command.DELETE_AREA, machine)  # refused while open by you
                names.append(row["name"])
        return names

    def _start_delete(self, name: str, area: Area) -> None:
        if self._machine(name)[0].state is State.AREA_MISSING:
            self._fire(name, Event.AREA_FOUND, "the area answers again")
        if self._machine(name)[0].state is State.LOCKED_BY_OTHER:
            self._fire(name, Event.LOCK_FREE, "checking the lock before deleting")
        self._fire(name, Event.DELETE_FOR_EVERYONE, "delete for everyone")
        self._receive_before_leaving_everyone(name, area, self.registry.get_dataset(name))
        self._fire(name, Event.STEP_REACHED, "newest version received", step=Step.LOCK)

    def _receive_before_leaving_everyone(self, name: str, area: Area, ds: dict[str, Any]) -> None:
        newest = area.newest()
        if newest is None or (ds["synced_version"] or 0) >= newest.version:
            return
        path = Path(ds["path"])
        if local_fingerprint(path) != (ds["synced_hash"] or "absent") and path.exists():
            kept = keep_aside(path, "local-changes")
            self.ui.say(_("your unsent changes were kept aside as {kept}").format(kept=kept))
        area.download(newest, path, self._cache(area))
        self.registry.update_dataset(name, synced_version=newest.version,
                                     synced_hash=local_fingerprint(path))
        self.ui.say(_("received the newest version ({version}) of {name} first").format(
            version=newest.version, name=name))

    def unlock(self, name: str) -> Outcome:
        """Break another party's lock (password; recorded in the area's history)."""
        ds = self._shared(name)
        with self._observing(name), self.connect(ds["remote"]) as session:
            area = self._area_of(name, session)
            self._unlock(area, _("share password of {name} (to break the lock)").format(name=name), ask=True)
            info = area.lock_info()
            gen = area.break_lock(self.party, f"broken by {self.party.name}: was {describe_lock(info)}")
        machine, _rest = self._machine(name)
        if machine.state is State.LOCKED_BY_ME:
            self._fire(name, Event.LEASE_LOST, "own lock broken", extras={}, token=gen, holder=None)
            self.live_grants.pop(name, None)
        if self._machine(name)[0].state is State.LOCKED_BY_OTHER:
            self._fire(name, Event.LOCK_FREE, f"lock broken (generation {gen})")
        return Outcome(_("the lock on {name} was broken ({lock}); this was recorded in the area").format(
            name=name, lock=describe_lock(info)),
                       {"name": name, "generation": gen})

    def restore(self, name: str, version: int) -> Outcome:
        """Make an old version the newest (a new commit; nothing is deleted)."""
        ds = self._resume(name, Command.RESTORE)
        machine, _rest = _load_machine(ds)
        self._decide(name, Command.RESTORE, machine)
        path = Path(ds["path"])
        if local_fingerprint(path) != (ds["synced_hash"] or "absent"):
            raise errors.InvalidState(
                _("{name} has local changes that were never sent; restoring would replace them").format(
                    name=name),
                hint=_("send them first (`cloudshare open {name}` then `close`), or move them away").format(
                    name=name),
            )
        with self._observing(name), self.connect(ds["remote"]) as session:
            area = self._area_of(name, session)
            self._found_again(name)
            self._unlock(area, _("share password of {name}").format(name=name))
            old = next((v for v in area.versions() if v.version == version), None)
            if old is None:
                raise errors.NoSuchVersion(_("{name} has no version {version}").format(
                    name=name, version=version),
                                             hint=_("see `cloudshare history {name}`").format(name=name))
            try:
                grant = self._acquire_for(name, area, DEFAULT_RUN_LEASE, f"restoring version {version}")
            except errors.LockedByOther as exc:
                exc.hint = _("try again once they have closed it (`cloudshare status --refresh {name}`)"
                             ).format(name=name)
                raise
            self._fire(name, Event.LOCK_GRANTED, f"restore {version}", extras={"grant": grant_to_dict(grant)},
                       token=grant.lease.generation)
            try:
                self._bring_up_to_date(name, area)  # no local changes (checked above): nothing kept aside
                self._fire(name, Event.NEWEST_RECEIVED, "before restoring", token=grant.lease.generation,
                           version=self.registry.get_dataset(name)["synced_version"])
                new = area.recommit(grant, self.party, old, f"restored version {version}")
            except errors.Fenced as exc:
                self._fenced(name, area, exc)
            area.download(area.versions()[new - 1], path, self._cache(area))
            self._record_sync(name, path, new)
            area.release(grant, self.party)
            self._sync_renewal(name, grant)
            self._fire(name, Event.COMMITTED, f"restored {version} as {new}", extras={},
                       token=grant.lease.generation, version=new)
        return Outcome(_("version {version} of {name} is the newest again, as version {new}").format(
            version=version, name=name, new=new),
                       {"name": name, "version": new, "restored_from": version})

    # --- resume -----------------------------------------------------------------------------------------

    def _resume(self, name: str, command: Command) -> dict[str, Any]:
        """A process that died in `initializing` or `leaving` is settled now, as the core's
        recovery table says for `command` (resume, finish or roll back)."""
        ds = self.registry.get_dataset(name)
        machine, _rest = _load_machine(ds)
        if machine.state is State.INITIALIZING:
            self.ui.say(_("{name}: an earlier setup stopped at step '{step}'; resuming").format(
                name=name, step=machine.context.step))
        elif machine.state is State.LEAVING:
            self.ui.say(_("{name}: an earlier stop ({mode}) was interrupted at '{step}'").format(
                name=name, mode=machine.context.mode, step=machine.context.step))
        else:
            return ds
        todo = recovery(command, machine.context)
        if todo is Recovery.RESUME_SETUP and machine.context.mode == SetupMode.UPLOAD:
            self._share(name, None, ds["remote"], ds["area"], yes=True)
        elif todo is Recovery.RESUME_SETUP:
            self._join(name, Path(ds["path"]), ds["remote"], ds["area"])
        elif todo is Recovery.FINISH_LEAVE:
            self._leave_steps(name)
        elif todo is Recovery.FINISH_DELETE_IF_GONE:
            self._finish_interrupted_delete(name, ds)
        else:
            self._fire(name, Event.LEAVE_ABORTED, "interrupted stop rolled back")
        return self.registry.get_dataset(name)

    def _finish_interrupted_delete(self, name: str, ds: dict[str, Any]) -> None:
        try:
            with self.connect(ds["remote"]) as session:
                self._new_area(session, ds["area"]).load()
            self._fire(name, Event.LEAVE_ABORTED, "the area still exists; delete rolled back")
        except errors.AreaGone:
            machine, _rest = self._machine(name)
            if machine.context.step != Step.DELETED:
                self._fire(name, Event.STEP_REACHED, "deleted on the host", step=Step.DELETED)
            self._fire(name, Event.LEAVE_DONE, "Cloud Share data deleted",
                       fields={"remote": None, "area": None, "area_id": None}, extras={})

    # --- helpers -------------------------------------------------------------------------------------------

    def _existing_area(self, session: Session, name: str) -> Area:
        """An area named by the user: a name that is not on the host says so (a typo, likely)."""
        area = self._new_area(session, name)
        if session.stat(area.root) is None:
            names = [a.area for a in list_areas(session)]
            listing = ", ".join(names[:20]) + (" …" if len(names) > 20 else "") if names else _("none yet")
            raise errors.NoSuchArea(_("no area named {name} on this host (areas: {listing})").format(
                name=name, listing=listing),
                                    hint=_("check the spelling; `cloudshare areas REMOTE` lists them"))
        area.load()
        return area

    def _new_area(self, session: Session, name: str) -> Area:
        area = Area(session, name)
        area.interrupted = self._interrupt.is_set
        area.use_cache(self.home / "cache")
        return area

    def _cache(self, area: Area) -> ChunkCache:
        return ChunkCache(self.home / "cache" / area.area_id, area.keys)


def _same_setup(row: dict[str, Any], machine: DataSetMachine, remote: str, area: str) -> None:
    """A resumed setup must target the host and area it started with."""
    if machine.state is State.INITIALIZING and (row["remote"], row["area"]) != (remote, area):
        raise errors.InvalidState(
            _("an interrupted setup of {name} targets {remote}/{area}").format(
                name=row['name'], remote=row['remote'], area=row['area']),
            hint=_("finish it with --remote {remote} --area {area}").format(
                remote=row['remote'], area=row['area']),
        )


def _was_interrupted(exc: BaseException | None) -> bool:
    """Was this error caused by Ctrl-C (perhaps turned into a transport error on the way out)?"""
    for _try in range(10):
        if exc is None:
            return False
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False


def _changed_since_sync(row: dict[str, Any]) -> bool:
    """Has the local data changed since it was last synced? The stamp answers cheaply when it
    matches; otherwise the content fingerprint decides."""
    path = Path(row["path"])
    if row.get("synced_stamp") and row["synced_hash"] and quick_stamp(path) == row["synced_stamp"]:
        return False
    return local_fingerprint(path) != (row["synced_hash"] or "absent")


def _missing_error(name: str, reason: str | None) -> errors.CloudShareError:
    if reason == AreaGoneReason.ID_UNUSABLE:
        return errors.LoginRefused(_("the communication ID of {name} could not be used last time").format(
            name=name),
                                   hint=_("check with the firm, or release it: `cloudshare leave {name}`"
                                          ).format(name=name))
    return errors.AreaGone(_("the shared data of {name} is gone from the host").format(name=name))


def _load_machine(row: dict[str, Any]) -> tuple[DataSetMachine, dict[str, Any]]:
    raw = row.get("machine")
    if not raw:
        return DataSetMachine(row.get("state") or State.UNSHARED), {}
    blob = json.loads(raw) if isinstance(raw, str) else dict(raw)
    machine = DataSetMachine.from_dict(blob.pop("machine"))
    return machine, blob


def _extras(row: dict[str, Any]) -> dict[str, Any]:
    return _load_machine(row)[1]
