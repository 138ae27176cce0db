"""Logging in: password and public-key checks against accounts.json, throttled and audited; SFTP only."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

import asyncssh

from .accounts import _record_token
from .audit import _peer_of, _shown_id, audit
from .layout import COMM_ID_RE, HostError
from .passwords import verify_password

if TYPE_CHECKING:
    from .server import EmbeddedHost

MAX_AUTH_FAILURES = 5  # failed logins per connection before it is closed


class _HostSSHServer(asyncssh.SSHServer):
    """Authentication against accounts.json (re-read when it changes), SFTP only."""

    def __init__(self, host: EmbeddedHost) -> None:
        self._host = host
        self.conn: asyncssh.SSHServerConnection | None = None
        self.comm_id = ""  # the logged-in ID
        self.token: str | None = None  # its account's token at login
        self.ending = False
        self._user = ""
        self._account: dict[str, Any] | None = None
        self._token: str | None = None
        self._failures = 0
        self._authed = False
        self._method = ""
        self._addr = "?"
        self._peer = "?"
        self._since = time.monotonic()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self._addr, self._peer = _peer_of(conn)
        self._host._connections.add(conn)
        self._host._sessions[conn] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self._host._connections.discard(self.conn)
            self._host._sessions.pop(self.conn, None)
        if self._authed:
            audit(
                "logout", id=self.comm_id, peer=self._peer,
                seconds=f"{time.monotonic() - self._since:.0f}",
            )

    def begin_auth(self, username: str) -> bool:
        self._user = username
        try:
            ids = self._host.accounts.ids()
        except HostError as exc:
            audit("accounts-unreadable", level=logging.ERROR, error=str(exc))
            ids = {}
        self._account = ids.get(username) if COMM_ID_RE.match(username) else None
        self._token = _record_token(self._account) if self._account is not None else None
        return True  # unknown IDs still go through (and fail) auth: no user enumeration

    def auth_completed(self) -> None:
        self._authed = True
        self.comm_id, self.token = self._user, self._token
        self._since = time.monotonic()
        self._host.limiter.succeeded(self._addr, self._user)
        audit("login", result="ok", peer=self._peer, method=self._method, id=self._user)

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= MAX_AUTH_FAILURES and self.conn is not None:
            audit(
                "login", level=logging.WARNING, result="disconnected", peer=self._peer,
                id=_shown_id(self._user), attempts=self._failures, why="too many failures on one connection",
            )
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures"
            )

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        """One scrypt check per attempt whatever the ID; refused early while throttled."""
        wait, which = self._host.limiter.check(self._addr, username)
        if wait > 0:
            audit(
                "login", level=logging.WARNING, result="throttled", peer=self._peer, method="password",
                id=_shown_id(username), limit=which, retry_in=f"{wait:.1f}",
            )
            self._failed()
            return False
        record = (self._account or {}).get("password") or None
        checked = record if isinstance(record, dict) else self._host.dummy_password
        ok = await asyncio.to_thread(verify_password, checked, password)
        ok = ok and checked is record
        if ok:
            self._method = "password"
            return True
        recent = self._host.limiter.failed(self._addr, username)
        audit(
            "login", level=logging.WARNING, result="failed", peer=self._peer, method="password",
            id=_shown_id(username), known="yes" if self._account is not None else "no", failures=recent,
        )
        self._failed()
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        offered = key.public_data
        ok = False
        for line in (self._account or {}).get("authorized_keys") or []:
            try:
                known = asyncssh.import_public_key(line).public_data
            except (asyncssh.KeyImportError, ValueError):
                continue
            if hmac.compare_digest(known, offered):
                ok = True
        if ok:
            self._method = "publickey"
        else:
            audit(
                "login", level=logging.WARNING, result="failed", peer=self._peer, method="publickey",
                id=_shown_id(username), known="yes" if self._account is not None else "no",
                key=key.get_fingerprint("sha256"),
            )
            self._failed()
        return ok

    # no forwarding of any kind (these are asyncssh's defaults, stated here on purpose)
    def connection_requested(self, *args: Any) -> bool:
        return False

    def server_requested(self, *args: Any) -> bool:
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        return False
