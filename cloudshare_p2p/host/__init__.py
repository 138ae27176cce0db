"""Embedded SFTP host for `cloudshare host`: asyncssh's SFTP server, one chroot per ID.

Host folder layout (see docs/hosting.md):

    DIR/host_key          Ed25519 host key, OpenSSH private format, 0600 (generated once)
    DIR/accounts.json     {"version": 1, "ids": {COMM_ID: {...}}}, 0600, replaced atomically
    DIR/data/COMM_ID/     the ID's root as its client sees it ("/"); areas live here

No file data is kept in memory between requests: several processes may serve the same
folder at once (the stand-in for several machines over shared storage). `accounts.json` is
re-read whenever it changes (checked by `stat` at every login and every SFTP request, and
once a second for idle connections), so `add-id`/`remove-id` take effect at once: a removed
ID's live connections are closed.

Security notes: one slow scrypt check for every failed password attempt whatever the ID
(no timing oracle); growing delays after repeated failures per source address and per ID
(`RateLimits`); no ownership changes and no mode beyond user rw (rwx for folders); an
audit trail in key=value lines (`audit`).

This package re-exports the names the rest of cloudshare imports; each module has one job:
`layout` (the folder's names, HostError), `ids` (init, add, remove, list IDs), `accounts`
(accounts.json), `passwords` (scrypt), `openssh` (the sshd_config recipe), `audit` (logfmt
lines, log set-up), `throttle` (login rate limits), `auth` (logging in), `jail` (chroot path
primitives), `sftp` (the confined SFTP server), `server` (EmbeddedHost, serve_forever).
"""

from .accounts import _Accounts, _accounts_lock, _read_accounts, _record_token, _write_accounts
from .audit import LogfmtFormatter, audit, log, logfmt, setup_logging
from .auth import MAX_AUTH_FAILURES
from .ids import MAX_TOMBSTONES, IdInfo, add_id, init_host, list_ids, remove_id
from .layout import (
    ACCOUNTS,
    COMM_ID_RE,
    DATA,
    HOST_KEY,
    HostError,
    _require_host_dir,
    fingerprint,
    validate_comm_id,
)
from .openssh import openssh_config
from .passwords import SCRYPT_LEN, SCRYPT_N, SCRYPT_P, SCRYPT_R, hash_password, verify_password
from .server import (
    ENCRYPTION_ALGS,
    LOGIN_TIMEOUT,
    SHUTDOWN_GRACE,
    WATCH_INTERVAL,
    EmbeddedHost,
    serve_forever,
)
from .sftp import DIR_MODE_MAX, FILE_MODE_MAX, MAX_LOG_READ, ChrootSFTPServer
from .throttle import LoginLimiter, RateLimits

__all__ = [
    "ACCOUNTS",
    "COMM_ID_RE",
    "ChrootSFTPServer",
    "DATA",
    "DIR_MODE_MAX",
    "ENCRYPTION_ALGS",
    "EmbeddedHost",
    "FILE_MODE_MAX",
    "HOST_KEY",
    "HostError",
    "IdInfo",
    "LOGIN_TIMEOUT",
    "LogfmtFormatter",
    "LoginLimiter",
    "MAX_AUTH_FAILURES",
    "MAX_LOG_READ",
    "MAX_TOMBSTONES",
    "RateLimits",
    "SCRYPT_LEN",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "SHUTDOWN_GRACE",
    "WATCH_INTERVAL",
    "_Accounts",
    "_accounts_lock",
    "_read_accounts",
    "_record_token",
    "_require_host_dir",
    "_write_accounts",
    "add_id",
    "audit",
    "fingerprint",
    "hash_password",
    "init_host",
    "list_ids",
    "log",
    "logfmt",
    "openssh_config",
    "remove_id",
    "serve_forever",
    "setup_logging",
    "validate_comm_id",
    "verify_password",
]
