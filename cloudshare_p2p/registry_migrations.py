"""The local registry's schema: its `sqlite_utils` migrations, applied in order at open.

Append new migrations to :data:`STEPS`; never edit one that has been applied (a home keeps the
names of the migrations it has run). Importing this module does not import sqlite-utils
(:func:`migrations` does): the registry checks :data:`NAMES` against the home first.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database, Migrations

MIGRATION_SET = "cloudshare_registry"


def m001_initial(db: Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key", not_null={"value"})
    db.table("remotes").create(
        {
            "name": str,
            "url": str,
            "identity": str,  # path of the SSH key file, or None (password login)
            "host_fingerprint": str,  # "SHA256:..." pinned at `remote add`, for display
            "added": str,
        },
        pk="name",
        not_null={"url", "added"},
    )
    db.table("datasets").create(
        {
            "name": str,
            "path": str,
            "state": str,
            "step": str,
            "remote": str,
            "area": str,
            "area_id": str,
            "synced_version": int,
            "synced_hash": str,
            "machine": str,  # JSON text: the state machine's persisted context
            "created": str,
            "updated": str,
        },
        pk="name",
        not_null={"path", "state", "created", "updated"},
        defaults={"state": "unshared"},
    )
    db.table("datasets").create_index(["remote", "area"])
    db.table("audit").create(
        {
            "id": int,
            "time": str,
            "dataset": str,
            "event": str,
            "from_state": str,
            "to_state": str,
            "detail": str,
        },
        pk="id",
        not_null={"time", "dataset", "event", "detail"},
        defaults={"detail": ""},
    )
    db.table("audit").create_index(["dataset", "id"])
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('install_id', ?)",
        [uuid.uuid4().hex[:16]],
    )


def m002_synced_stamp(db: Database) -> None:
    """A cheap stamp (names, sizes, times, inodes) of the data as last synced: `close` with
    nothing changed need not re-read the data."""
    db.table("datasets").add_column("synced_stamp", str)


#: the migrations, in the order they are applied
STEPS: tuple[Callable[[Database], None], ...] = (m001_initial, m002_synced_stamp)
NAMES = tuple(step.__name__ for step in STEPS)


@functools.cache
def migrations() -> Migrations:
    """:data:`STEPS` as the sqlite-utils migration set (imports sqlite-utils)."""
    from sqlite_utils import Migrations

    found = Migrations(MIGRATION_SET)
    for step in STEPS:
        found()(step)
    return found
