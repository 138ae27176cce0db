"""The local registry: one SQLite database in the home folder.

It keeps the data sets this machine shares (name, local path, state and its step, remote, area,
synced version and hash, the state machine's persisted context), the remotes, this install's id
and display name, and an audit log of every transition. Pinned host keys themselves live in the
OpenSSH-format ``known_hosts`` file next to the database (owned by ``transport.py``); the
``remotes`` table only keeps the fingerprint pinned at ``remote add`` for display. Secrets
(passwords) are never stored here.

Several ``cloudshare`` processes may use the same home at once. Every write runs inside
:meth:`Registry.write`, a ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front and
waits (busy timeout) instead of failing with "database is locked" when it later tries to
upgrade a read lock. The database is in WAL mode so readers never block the writer.

Schema changes go through ``sqlite_utils.Migrations`` (``registry_migrations.py``); append new
migrations at the end, never edit an applied one. sqlite-utils is imported only when one is
pending (a new or older home) or :attr:`Registry.db` is asked for: a command on an up-to-date
home talks to ``sqlite3`` alone (importing sqlite-utils costs about 0.02 s).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from cloudshare_p2p import errors

from .i18n import _
from .registry_migrations import MIGRATION_SET, NAMES, migrations

if TYPE_CHECKING:
    from sqlite_utils import Database

APP_NAME = "cloudshare-p2p"
HOME_ENV = "CLOUDSHARE_HOME"
DB_NAME = "registry.db"
BUSY_TIMEOUT_S = 10.0

#: Columns of ``datasets`` that :meth:`Registry.update_dataset` may change.
DATASET_FIELDS = frozenset(
    {
        "path",
        "state",
        "step",
        "remote",
        "area",
        "area_id",
        "synced_version",
        "synced_hash",
        "synced_stamp",
        "machine",
    }
)


def default_home() -> Path:
    """The home folder: ``$CLOUDSHARE_HOME`` if set (and not empty), else the user data folder."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return platformdirs.user_data_path(APP_NAME)


def _now() -> str:
    """ISO 8601 UTC time with microseconds, e.g. ``2026-11-28T23:19:00.123456+00:00``."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _default_display_name() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (containers)
        user = "user"
    return f"{user}@{socket.gethostname()}"


class Registry:
    """The local registry of one home folder (see the module docstring)."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home).expanduser()
        if not self.home.is_dir():
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.home, 0o700)  # mkdir's mode is filtered by the umask
        self.path = self.home / DB_NAME
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S)
        self.conn = conn
        self._db: Database | None = None
        try:
            self._execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._enable_wal()
            self._migrate()
            self.install_id = self._ensure_install_id()
        except BaseException:
            conn.close()
            raise

    @property
    def db(self) -> Database:
        """The connection as a sqlite-utils ``Database`` (migrations, tests); imports sqlite-utils."""
        if self._db is None:
            from sqlite_utils import Database

            self._db = Database(self.conn, execute_plugins=False)
        return self._db

    def _execute(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """``conn.execute`` as sqlite-utils' ``Database.execute`` does it: a write outside a
        transaction is committed at once, and a failed one leaves no transaction open."""
        conn = self.conn
        was_in_transaction = conn.in_transaction
        try:
            cursor = conn.execute(sql, params)
        except Exception:
            if not was_in_transaction and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if not was_in_transaction and conn.in_transaction and cursor.description is None:
            conn.execute("COMMIT")
        return cursor

    # -- setup ---------------------------------------------------------------

    def _enable_wal(self) -> None:
        # Switching a fresh file to WAL needs an exclusive lock; when several processes open a
        # new home at the same moment the switch can report "locked" without waiting.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                if self._execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._execute("PRAGMA journal_mode=wal")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        if not self._maybe_pending() or not migrations().pending(self.db):
            return
        # Apply under the write lock: two processes opening a new home at once must not both
        # run the same migration. apply() re-reads what is pending inside the transaction, and
        # its own per-migration transactions become savepoints of this one.
        with self.write():
            migrations().apply(self.db)

    def _maybe_pending(self) -> bool:
        """Whether a migration may be pending: False only when sqlite-utils' own table lists
        every one as applied (read with sqlite3 alone; anything unexpected asks sqlite-utils)."""
        try:
            rows = self._execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                                 [MIGRATION_SET]).fetchall()
        except sqlite3.DatabaseError:  # no such table (a new home), or another shape
            return True
        return not set(NAMES) <= {row[0] for row in rows}

    def _ensure_install_id(self) -> str:
        value = self._meta("install_id")
        if value is None:  # only if someone deleted the row
            with self.write():
                self._execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('install_id', ?)",
                    [uuid.uuid4().hex[:16]],
                )
            value = self._meta("install_id")
        assert value is not None
        return value

    def _meta(self, key: str) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Registry]:
        """A write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, ``ROLLBACK`` on error.

        Nested calls join the outer transaction through a savepoint (an error inside the inner
        block undoes only that block if the caller catches it).
        """
        conn = self.conn
        if conn.in_transaction:
            name = f"cs_{uuid.uuid4().hex}"
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield self
            except BaseException:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    conn.execute(f"RELEASE SAVEPOINT {name}")
                raise
            else:
                conn.execute(f"RELEASE SAVEPOINT {name}")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _rows(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict]:
        cursor = self._execute(sql, list(params))
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]

    # -- identity ------------------------------------------------------------

    @property
    def display_name(self) -> str:
        """How this install is shown to others; defaults to ``user@host``."""
        return self._meta("display_name") or _default_display_name()

    def set_display_name(self, name: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError(_("the display name must not be empty"))
        with self.write():
            self._execute(
                "INSERT INTO meta (key, value) VALUES ('display_name', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [name],
            )

    # -- remotes -------------------------------------------------------------

    def add_remote(
        self, name: str, url: str, identity: str | None, host_fingerprint: str | None
    ) -> None:
        if not name:
            raise ValueError(_("the remote name must not be empty"))
        with self.write():
            if self._rows("SELECT 1 FROM remotes WHERE name = ?", [name]):
                raise errors.AlreadyRegistered(
                    _("remote {name} already exists").format(name=name),
                    hint=_("choose another name, or remove it first with `cloudshare remote remove {name}`"
                           ).format(name=name),
                )
            self._execute(
                "INSERT INTO remotes (name, url, identity, host_fingerprint, added) "
                "VALUES (?, ?, ?, ?, ?)",
                [name, url, identity, host_fingerprint, _now()],
            )

    def get_remote(self, name: str) -> dict:
        rows = self._rows("SELECT * FROM remotes WHERE name = ?", [name])
        if not rows:
            raise errors.NotRegistered(_("no remote named {name}").format(name=name))
        return rows[0]

    def list_remotes(self) -> list[dict]:
        return self._rows("SELECT * FROM remotes ORDER BY name")

    def remove_remote(self, name: str) -> None:
        with self.write():
            self.get_remote(name)
            users = [
                r["name"]
                for r in self._rows(
                    "SELECT name FROM datasets WHERE remote = ? ORDER BY name", [name]
                )
            ]
            if users:
                raise errors.InvalidState(
                    _("remote {name} is still used by: {names}").format(name=name, names=', '.join(users)),
                    hint=_("stop sharing those data sets first (`cloudshare leave NAME`)"),
                )
            self._execute("DELETE FROM remotes WHERE name = ?", [name])

    # -- data sets -----------------------------------------------------------

    def add_dataset(self, name: str, path: Path | str) -> dict:
        """Register a data set in state ``unshared``; the path is stored absolute."""
        if not name:
            raise ValueError(_("the data set name must not be empty"))
        with self.write():
            if self._rows("SELECT 1 FROM datasets WHERE name = ?", [name]):
                raise errors.AlreadyRegistered(
                    _("data set {name} already exists").format(name=name),
                    hint=_("choose another name; see `cloudshare status`"),
                )
            other = self._rows("SELECT name FROM datasets WHERE path = ?", [_abspath(path)])
            if other:
                raise errors.AlreadyRegistered(
                    _("{abspath} is already registered as {name}").format(
                        abspath=_abspath(path), name=other[0]['name']),
                    hint=_("use the name {name}, or `cloudshare forget {name}` first").format(
                        name=other[0]['name']),
                )
            now = _now()
            self._execute(
                "INSERT INTO datasets (name, path, state, step, created, updated) "
                "VALUES (?, ?, 'unshared', NULL, ?, ?)",
                [name, _abspath(path), now, now],
            )
            return self.get_dataset(name)

    def get_dataset(self, name: str) -> dict:
        rows = self._rows(f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE name = ?", [name])
        if not rows:
            raise errors.NotRegistered(_("no data set named {name}").format(name=name))
        return rows[0]

    def list_datasets(self) -> list[dict]:
        return self._rows(f"SELECT {_DATASET_COLUMNS} FROM datasets ORDER BY name")

    def update_dataset(self, name: str, **fields: Any) -> dict:
        """Change some columns (see :data:`DATASET_FIELDS`) and return the new row.

        ``path`` is stored absolute; ``machine`` may be JSON text or a JSON-able dict/list;
        ``remote`` must name a registered remote (or be None).
        """
        unknown = set(fields) - DATASET_FIELDS
        if unknown:
            raise ValueError(f"unknown data set fields: {', '.join(sorted(unknown))}")
        values = dict(fields)
        if "path" in values:
            values["path"] = _abspath(values["path"])
        if "state" in values and not values["state"]:
            raise ValueError("the state must not be empty")
        if isinstance(values.get("machine"), dict | list):
            values["machine"] = json.dumps(values["machine"], sort_keys=True)
        if values.get("synced_version") is not None:
            values["synced_version"] = int(values["synced_version"])
        if "synced_hash" in values and "synced_stamp" not in values:
            values["synced_stamp"] = None  # a new fingerprint without a stamp: re-read next time
        with self.write():
            self.get_dataset(name)
            if values.get("remote") is not None:
                self.get_remote(values["remote"])
            values["updated"] = _now()
            assignments = ", ".join(f"{column} = ?" for column in values)
            self._execute(
                f"UPDATE datasets SET {assignments} WHERE name = ?", [*values.values(), name]
            )
            return self.get_dataset(name)

    def remove_dataset(self, name: str) -> None:
        """Forget a data set (its audit entries are kept)."""
        with self.write():
            self.get_dataset(name)
            self._execute("DELETE FROM datasets WHERE name = ?", [name])

    def find_by_area(self, remote: str, area: str) -> list[dict]:
        return self._rows(
            f"SELECT {_DATASET_COLUMNS} FROM datasets WHERE remote = ? AND area = ? ORDER BY name",
            [remote, area],
        )

    # -- audit ---------------------------------------------------------------

    def record(
        self, dataset: str, event: str, from_state: str, to_state: str, detail: str = ""
    ) -> None:
        """Append one transition to the audit log (time in ISO UTC)."""
        with self.write():
            self._execute(
                "INSERT INTO audit (time, dataset, event, from_state, to_state, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [_now(), dataset, event, from_state, to_state, detail or ""],
            )

    def audit(self, dataset: str | None = None, limit: int | None = 100) -> list[dict]:
        """The newest ``limit`` entries (all if None), returned oldest first (log order)."""
        params: list[str | int] = [dataset] if dataset is not None else []
        where = "WHERE dataset = ?" if dataset is not None else ""
        sql = f"SELECT * FROM audit {where} ORDER BY id DESC"
        if limit is not None:
            if limit < 0:
                raise ValueError("limit must not be negative")
            sql += " LIMIT ?"
            params.append(int(limit))
        return list(reversed(self._rows(sql, params)))


_DATASET_COLUMNS = (
    "name, path, state, step, remote, area, area_id, synced_version, synced_hash, synced_stamp, "
    "machine, created, updated"
)


def _abspath(path: Path | str) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))
