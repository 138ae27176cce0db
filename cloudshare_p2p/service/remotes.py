"""Hosts and what opens them: remote add/list/remove, the connection, login passwords, area keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from statemachine import State
from statemachine.plans import is_shared

from .. import errors
from ..area import Area, list_areas
from ..i18n import _
from ..transport import Credentials, Endpoint, SftpConnection, check_identity, connect, probe_host_key
from .base import Outcome, ServiceBase


class RemoteCommands(ServiceBase):
    """`remote add/list/remove`, `areas`, and the connection and keys every other command uses."""

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
        """The registered hosts."""
        return [{"name": r["name"], "url": r["url"], "identity": r["identity"],
                 "host_key": r["host_fingerprint"]} for r in self.registry.list_remotes()]

    def remote_remove(self, name: str) -> Outcome:
        """Forget a host (and its pinned key, unless another remote uses the same host)."""
        remote = self.registry.get_remote(name)
        self.registry.remove_remote(name)
        hostport = Endpoint.parse(remote["url"]).hostport()
        if not any(Endpoint.parse(r["url"]).hostport() == hostport for r in self.registry.list_remotes()):
            self.known_hosts.remove(hostport)
        return Outcome(_("remote {name} removed").format(name=name))

    def areas(self, remote: str) -> list[dict[str, Any]]:
        """The areas on a host, with their locks."""
        with self.connect(remote) as session:
            return [row.as_json() for row in list_areas(session)]

    # --- the connection -----------------------------------------------------------------------

    def connect(self, remote: str) -> SftpConnection:
        """One connection per command, reused for every step."""
        row = self.registry.get_remote(remote)
        self.secrets.probe_soon()  # its answer is ready when the area's key is looked up
        return self._connect_endpoint(Endpoint.parse(row["url"]), row["identity"])

    def _connect_endpoint(self, endpoint: Endpoint, identity: str | None,
                          accept: str | None = None) -> SftpConnection:
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

    # --- the area's keys ----------------------------------------------------------------------

    def _load_keys(self, area: Area, purpose: str, ask_password: bool = False) -> None:
        """The area's keys: remembered on this computer, else from the share password.

        `ask_password` forces the password where the page asks for it (join, delete, breaking
        a lock). A key that does not fit the area is forgotten and the password asked instead.
        """
        if not ask_password:
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
                  if r["area_id"] == area_id and r["name"] != name and is_shared(State(r["state"]))]
        if area_id and not others:
            self.secrets.forget_data_key(area_id)

    def _remember_key(self, area: Area) -> None:
        if area.data_key is not None:
            self.secrets.put_data_key(area.area_id, area.data_key)
