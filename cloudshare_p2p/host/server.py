"""Serving: EmbeddedHost listens, watches accounts.json, ends removed IDs' sessions, stops on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import asyncssh

from .accounts import _Accounts, _record_token
from .audit import audit
from .auth import _HostSSHServer
from .layout import ACCOUNTS, DATA, HOST_KEY, HostError, _require_host_dir, fingerprint, validate_comm_id
from .passwords import hash_password
from .sftp import ChrootSFTPServer
from .throttle import LoginLimiter, RateLimits

LOGIN_TIMEOUT = 30.0  # seconds from connect to successful login
SHUTDOWN_GRACE = 5.0  # seconds live connections get to finish on SIGINT/SIGTERM
WATCH_INTERVAL = 1.0  # seconds between checks of accounts.json for idle connections


ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]


class EmbeddedHost:
    """An SFTP host serving `host_dir` on `bind:port` until `stop()`.

    >>> host = EmbeddedHost(path, "127.0.0.1", 0); await host.start(); host.port
    """

    def __init__(
        self,
        host_dir: str | os.PathLike[str],
        bind: str = "127.0.0.1",
        port: int = 2222,
        *,
        login_timeout: float = LOGIN_TIMEOUT,
        grace: float = SHUTDOWN_GRACE,
        limits: RateLimits | None = None,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self.host_dir = _require_host_dir(Path(host_dir)).resolve()
        self.bind, self.port = bind, port
        self.login_timeout, self.grace = login_timeout, grace
        self.watch_interval = watch_interval
        self.limiter = LoginLimiter(limits or RateLimits())
        self.accounts = _Accounts(self.host_dir)
        # checked instead of a real hash when the ID is unknown or has no password:
        # every failed password costs the same scrypt whatever the ID
        self.dummy_password = hash_password(secrets.token_urlsafe(24))
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._sessions: dict[asyncssh.SSHServerConnection, _HostSSHServer] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- accounts -----------------------------------------------------------

    def session_valid(self, session: _HostSSHServer) -> bool:
        """True while the session's ID still exists as it was when it logged in."""
        return self.session_problem(session) is None

    def session_problem(self, session: _HostSSHServer) -> str | None:
        """None while the session's ID is as it was at login; else "id-removed" or
        "accounts-unreadable" (a damaged accounts.json closes connections: fail closed)."""
        try:
            record = self.accounts.ids().get(session.comm_id)
        except HostError:
            return "accounts-unreadable"
        if session.token is None or record is None or _record_token(record) != session.token:
            return "id-removed"
        return None

    def end_session(self, session: _HostSSHServer, reason: str) -> None:
        """Close a logged-in connection (once), logging why."""
        if session.ending or session.conn is None:
            return
        session.ending = True
        audit("session-closed", level=logging.WARNING, id=session.comm_id, peer=session._peer, reason=reason)
        session.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "communication ID removed from this host")

    def _snapshot(self) -> dict[str, tuple[str, dict[str, Any]]] | None:
        """Each ID's (token, record); None if accounts.json is unreadable."""
        try:
            return {cid: (_record_token(rec), rec) for cid, rec in self.accounts.ids().items()}
        except HostError:
            return None

    def _audit_id_changes(
        self, before: dict[str, tuple[str, dict[str, Any]]], after: dict[str, tuple[str, dict[str, Any]]]
    ) -> None:
        """One line per ID removed or added (a remove + add in between shows as both)."""
        fates = {(r.get("id"), r.get("token")): r.get("data") for r in self.accounts.removed}
        for cid in sorted(before.keys() | after.keys()):
            old, new = before.get(cid), after.get(cid)
            replaced = old is not None and new is not None and new[0] != old[0]
            if old is not None and (new is None or replaced):
                fate = fates.get((cid, old[0]))
                if fate is None:  # removed by hand, not by remove-id
                    fate = "kept" if new is None and (self.host_dir / DATA / cid).is_dir() else "unknown"
                audit("id-removed", id=cid, data=fate)
            if new is not None and (old is None or replaced):
                rec = new[1]
                audit(
                    "id-added", id=cid, password="yes" if rec.get("password") else "no",
                    keys=len(rec.get("authorized_keys") or []),
                )

    async def _watch_accounts(self) -> None:
        """Until stopped: log ID changes and close connections of removed IDs."""
        known = self._snapshot() or {}
        damaged = False
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.watch_interval)
            now = self._snapshot()
            if now is None:
                if not damaged:
                    audit("accounts-unreadable", level=logging.ERROR, path=str(self.host_dir / ACCOUNTS))
                damaged = True
                continue
            damaged = False
            if now != known:
                self._audit_id_changes(known, now)
                known = now
            for session in list(self._sessions.values()):
                problem = self.session_problem(session) if session._authed else None
                if problem and not session.ending:
                    self.end_session(session, problem)

    # -- SFTP -----------------------------------------------------------------

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel) -> ChrootSFTPServer:
        conn = chan.get_connection()
        user = conn.get_extra_info("username")
        validate_comm_id(user)
        owner = conn.get_owner()
        problem = self.session_problem(owner) if isinstance(owner, _HostSSHServer) else None
        if isinstance(owner, _HostSSHServer) and problem:
            self.end_session(owner, problem)  # its requests are refused meanwhile
        # never create the root here: only add-id does, so a removed ID stays removed
        return ChrootSFTPServer(chan, str(self.host_dir / DATA / user), self)

    async def start(self) -> None:
        """Listen (port 0 picks a free port, then `.port`) and start watching the accounts."""
        key = asyncssh.read_private_key(str(self.host_dir / HOST_KEY))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            audit(
                "running-as-root", level=logging.WARNING,
                msg="run `cloudshare host serve` as an unprivileged user that owns the host folder",
            )
        self._acceptor = await asyncssh.listen(
            self.bind,
            self.port,
            config=None,
            server_host_keys=[key],
            server_factory=lambda: _HostSSHServer(self),
            sftp_factory=self._sftp_factory,
            allow_scp=False,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            kbdint_auth=False,
            gss_auth=False,
            host_based_auth=False,
            rdns_lookup=False,
            login_timeout=self.login_timeout,
            encryption_algs=ENCRYPTION_ALGS,
            sftp_version=3,
        )
        if self.port == 0:
            self.port = self._acceptor.get_port()
        self._stopping.clear()
        self._watcher = asyncio.create_task(self._watch_accounts())
        limits = self.limiter.limits
        audit(
            "serving", dir=str(self.host_dir), listen=f"{self.bind}:{self.port}",
            host_key=fingerprint(self.host_dir), max_failures=limits.max_failures,
            window=f"{limits.window:g}", penalty=f"{limits.penalty:g}",
        )

    async def stop(self) -> None:
        """Stop accepting, give live connections `grace` seconds, then close them."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        deadline = time.monotonic() + self.grace
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._stopping.set()
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._watcher, timeout=5)
            self._watcher = None
        conns = list(self._connections)
        if conns:
            audit("closing", connections=len(conns))
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), timeout=5)
        self._connections.clear()
        # let asyncssh's per-channel cleanup tasks finish before the loop goes away
        for _try in range(5):
            await asyncio.sleep(0)
        audit("stopped")

    async def run_until_signalled(self) -> None:
        """Serve until SIGINT or SIGTERM, then `stop()`."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
            audit("signal-received", msg="stopping")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()


def serve_forever(
    host_dir: str | os.PathLike[str],
    bind: str = "127.0.0.1",
    port: int = 2222,
    *,
    grace: float = SHUTDOWN_GRACE,
    limits: RateLimits | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then stop cleanly and return."""
    host = EmbeddedHost(host_dir, bind, port, grace=grace, limits=limits)
    asyncio.run(host.run_until_signalled())
