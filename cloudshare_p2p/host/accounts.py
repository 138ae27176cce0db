"""accounts.json: read, replaced atomically (0600, fsync), locked for admin commands, re-read on change."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..i18n import _
from ..localfiles import atomic_write
from .layout import ACCOUNTS, HostError


def _read_accounts(path: Path) -> dict[str, Any]:
    """The parsed accounts.json of host folder `path` (empty if missing)."""
    try:
        with open(path / ACCOUNTS, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {"version": 1, "ids": {}}
    except ValueError as exc:
        raise HostError(_("{path} is damaged: {error}").format(
            path=path / ACCOUNTS, error=exc), hint=_("restore it from a backup")) from exc
    if not isinstance(data, dict) or not isinstance(data.get("ids"), dict):
        raise HostError(_("{path} is damaged").format(path=path / ACCOUNTS), hint=_("restore it from a "
                                                                                    "backup"))
    return data


def _write_accounts(path: Path, data: dict[str, Any]) -> None:
    """Replace accounts.json atomically (temp file, fsync, rename), mode 0600."""
    atomic_write(path / ACCOUNTS, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"), 0o600)


@contextlib.contextmanager
def _accounts_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of accounts.json between admin commands."""
    import fcntl

    with open(path / ".accounts.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _record_token(record: dict[str, Any]) -> str:
    """What identifies one incarnation of an ID: its serial (or, for old records, a hash)."""
    serial = record.get("serial")
    if isinstance(serial, str) and serial:
        return serial
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


class _Accounts:
    """accounts.json, re-read only when its `stat` (device, inode, mtime, size) changes."""

    def __init__(self, host_dir: Path) -> None:
        self._dir = host_dir
        self._sig: tuple[int, ...] | None = None
        self._ids: dict[str, Any] = {}
        self.removed: list[dict[str, Any]] = []  # the tombstones of the last read

    def ids(self) -> dict[str, Any]:
        """The current IDs; raises HostError if the file is damaged or unreadable."""
        sig: tuple[int, ...]
        try:
            st = os.stat(self._dir / ACCOUNTS)
            sig = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = ()
        except OSError as exc:
            raise HostError(_("cannot read {path}: {error}").format(
                path=self._dir / ACCOUNTS, error=exc)) from exc
        if sig != self._sig:
            try:
                data = _read_accounts(self._dir)
            except OSError as exc:
                raise HostError(_("cannot read {path}: {error}").format(
                    path=self._dir / ACCOUNTS, error=exc)) from exc
            self._ids = {k: v for k, v in data["ids"].items() if isinstance(v, dict)}
            removed = data.get("removed")
            self.removed = [r for r in removed if isinstance(r, dict)] if isinstance(removed, list) else []
            self._sig = sig
        return self._ids

    def token(self, comm_id: str) -> str | None:
        """The ID's current token, or None if it does not exist (or the file is damaged)."""
        try:
            record = self.ids().get(comm_id)
        except HostError:
            return None
        return _record_token(record) if record is not None else None
