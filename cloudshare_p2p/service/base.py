"""What every command group shares: the UI hooks, the outcome, and the `ServiceBase` state
(home, registry, secrets, party) with the helpers to load a data set, ask the core and reach
its area.

The methods one command group calls in another are declared (not defined) at the end of
`ServiceBase`, for the type checker only; the mixins define them.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from statemachine import AreaGoneReason, DataSetMachine
from statemachine.plans import Action, Command, Reason, Refusal, plan

from .. import cachedir, errors
from ..area import Area, Grant, LockInfo, Party, Version, list_areas
from ..display import human_size
from ..i18n import _
from ..registry import Registry
from ..secretstore import PROBE_MEMO, SecretStore, remember_enabled
from ..snapshot import ChunkCache
from ..transport import KnownHosts, SftpConnection
from .dataset import DataSet

if TYPE_CHECKING:
    from ..settings import Until


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


class ServiceBase:
    """The commands' common state, bound to one home folder (registry, pinned host keys, cache)."""

    def __init__(self, home: Path, ui: UI, remember: bool | None = None,
                 remember_login: bool | None = None) -> None:
        self.home = Path(home)
        self.registry = Registry(self.home)
        self.cache_root = cachedir.cache_root(self.home)
        cachedir.adopt_old_cache(self.home, self.cache_root)  # before anything is written there
        self.secrets = SecretStore(self.home, enabled=remember_enabled(remember),
                                   probe_memo=self.cache_root / PROBE_MEMO)
        self.remember_login = remember_login
        self.known_hosts = KnownHosts(self.home / "known_hosts")
        self.ui = ui
        self._cache_users: list[Area | ChunkCache] = []  # what may add to the cache this command
        self._started = time.time()
        self._ssh_password: str | None = None
        self.live_grants: dict[str, Grant] = {}  # grants taken by this process (their clock is live)
        self._interrupt = threading.Event()  # a first Ctrl-C, honoured at the next safe point
        name = os.environ.get("CLOUDSHARE_NAME") or self.registry.display_name
        self.party = Party(name, self.registry.install_id, socket.gethostname())

    def shutdown(self) -> None:
        """Trim the cache to its cap and close the registry (the CLI calls this when the command ends)."""
        try:
            self._trim_cache()
        finally:
            self.registry.close()

    # --- the data set and the core ------------------------------------------------------------

    def _load(self, name: str) -> DataSet:
        """The data set NAME, loaded once for the command."""
        return DataSet.load(self.registry, name)

    def _shared(self, name: str) -> DataSet:
        """The data set NAME, which must be connected to an area."""
        ds = self._load(name)
        if not ds.row["remote"] or not ds.row["area"]:
            raise errors.InvalidState(_("{name} is not shared").format(name=name),
                                      hint=_("start with `cloudshare share {name}` or `cloudshare join`"
                                             ).format(name=name))
        return ds

    def _decide(self, ds: DataSet, command: Command) -> Action:
        """What the core says `command` does now; a refusal becomes a plain error."""
        decision = plan(command, ds.state, ds.context)
        if isinstance(decision, Refusal):
            raise _refusal(ds.name, ds.machine, decision)
        return decision

    def _grant_of(self, ds: DataSet) -> Grant:
        """The grant we hold on `ds`: the live one of this process, else the recorded one."""
        return self.live_grants.get(ds.name) or ds.recorded_grant()

    # --- areas -----------------------------------------------------------------------------------

    def _area_of(self, ds: DataSet, session: SftpConnection) -> Area:
        """The area `ds` is shared through; a different area under its name is `errors.AreaGone`."""
        area = self._new_area(session, ds.area)
        if ds.area_id:  # the config is then checked against the copy kept on this computer
            area.use_cache(self.home / "cache", ds.area_id)
        config = area.load()
        if ds.area_id and config["area_id"] != ds.area_id:
            raise errors.AreaGone(_("area {area} was deleted and another one now has its name").format(
                area=ds.area),
                                  hint=_("stop sharing with `cloudshare leave {name}`").format(name=ds.name))
        return area

    def _existing_area(self, session: SftpConnection, name: str) -> Area:
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

    def _new_area(self, session: SftpConnection, name: str) -> Area:
        area = Area(session, name)
        area.interrupted = self._interrupt.is_set
        area.use_cache(self.cache_root)
        self._cache_users.append(area)
        return area

    def _cache(self, area: Area) -> ChunkCache:
        cache = ChunkCache(self.cache_root / area.area_id, area.keys)
        self._cache_users.append(cache)
        return cache

    def cache_cap(self) -> int:
        """The cache's size cap; a CLOUDSHARE_CACHE_MAX that is not a size is said, and the default used."""
        try:
            return cachedir.cache_cap()
        except ValueError:
            self.ui.say(_("warning: {env} is not a size (such as 500MB); the cache is kept under {size}"
                          ).format(env=cachedir.CACHE_MAX_ENV, size=human_size(cachedir.DEFAULT_CACHE_MAX)))
            return cachedir.DEFAULT_CACHE_MAX

    def _trim_cache(self) -> None:
        """After a command that added to the cache: trim it to the cap, least recently used first."""
        users, self._cache_users = self._cache_users, []
        if any(self._added_to_cache(user) for user in users):
            cachedir.trim(self.cache_root, self.cache_cap())

    def _added_to_cache(self, user: Area | ChunkCache) -> bool:
        """Chunks put, or a resolved manifest written in the area's folder, during this command."""
        if isinstance(user, ChunkCache):
            return user.added > 0
        config = user.config
        return config is not None and cachedir.grew_since(self.cache_root / config["area_id"], self._started)

    def _drop_area_cache(self, area_id: str | None, but: str | None = None) -> None:
        """Remove the cache of `area_id`, unless a registered data set other than `but` uses that area."""
        if area_id and not any(row["area_id"] == area_id and row["name"] != but
                               for row in self.registry.list_datasets()):
            cachedir.remove_area(self.cache_root, area_id)

    # --- interrupts ------------------------------------------------------------------------------

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

    # --- defined by the command groups (declared here for the type checker) ------------------------

    if TYPE_CHECKING:
        def connect(self, remote: str) -> SftpConnection: ...
        def open(self, name: str, lease: int = ..., note: str = "",
                 wait: float | Until | None = None, read_only: bool = False) -> Outcome: ...
        def close(self, name: str, note: str = "") -> Outcome: ...
        def _load_keys(self, area: Area, purpose: str, ask_password: bool = False) -> None: ...
        def _remember_key(self, area: Area) -> None: ...
        def _forget_key_of(self, area_id: str | None, name: str | None = None) -> None: ...
        def _observing(self, ds: DataSet) -> AbstractContextManager[None]: ...
        def _found_again(self, ds: DataSet) -> None: ...
        def _follow_lock(self, ds: DataSet, info: LockInfo) -> None: ...
        def _note_held(self, ds: DataSet, info: LockInfo) -> None: ...
        def _resume(self, ds: DataSet, command: Command) -> None: ...
        def _check_target(self, remote: str, area_name: str) -> None: ...
        def _share_dataset(self, ds: DataSet, remote: str, area_name: str, yes: bool) -> Outcome: ...
        def _join_dataset(self, ds: DataSet, remote: str, area_name: str) -> Outcome: ...
        def _leave_steps(self, ds: DataSet, note: str = "") -> Outcome: ...
        def _finish_interrupted_delete(self, ds: DataSet) -> None: ...
        def _acquire_for(self, ds: DataSet, area: Area, lease: int, note: str,
                         wait: float | Until | None = None) -> Grant: ...
        def _acquire_or_raise(self, area: Area, lease: int, note: str) -> Grant: ...
        def _take_lock(self, ds: DataSet, area: Area, lease: int, note: str,
                       wait: float | Until | None) -> Grant: ...
        def _still_holding(self, ds: DataSet, area: Area) -> Grant: ...
        def _give_back(self, ds: DataSet, area: Area, grant: Grant) -> str: ...
        def _sync_renewal(self, ds: DataSet, grant: Grant) -> None: ...
        def _save_grant(self, ds: DataSet, grant: Grant) -> None: ...
        def _lease_lost(self, ds: DataSet, area: Area, detail: str, fields: dict[str, Any]) -> str | None: ...
        def _bring_up_to_date(self, ds: DataSet, area: Area) -> tuple[Version | None, Path | None]: ...
        def _is_copy_of(self, area: Area, target: Path, version: Version) -> bool: ...
        def _received_outcome(self, ds: DataSet, newest: Version | None, kept: Path | None,
                              hold: bool) -> Outcome: ...
        def _fenced(self, ds: DataSet, area: Area, exc: errors.Fenced) -> NoReturn: ...
        def _prune_now_and_then(self, ds: DataSet, area: Area, grant: Grant) -> None: ...
        def _sweep_now_and_then(self, area: Area) -> None: ...


def _refusal(name: str, machine: DataSetMachine, refusal: Refusal) -> errors.CloudShareError:
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
        return missing_error(name, machine.context.missing_reason)
    return errors.InvalidState(_("{name} is already shared ({state})").format(
        name=name, state=machine.state.value))


def missing_error(name: str, reason: str | None) -> errors.CloudShareError:
    """The error for a data set whose area is missing (deleted, or the ID unusable)."""
    if reason == AreaGoneReason.ID_UNUSABLE:
        return errors.LoginRefused(_("the communication ID of {name} could not be used last time").format(
            name=name),
                                   hint=_("check with the firm, or release it: `cloudshare leave {name}`"
                                          ).format(name=name))
    return errors.AreaGone(_("the shared data of {name} is gone from the host").format(name=name))


def was_interrupted(exc: BaseException | None) -> bool:
    """Was this error caused by Ctrl-C (perhaps turned into a transport error on the way out)?"""
    for _try in range(10):
        if exc is None:
            return False
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False
