"""The admin commands' work on a host folder: create it, add, remove and list communication IDs."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from ..i18n import _
from .accounts import _accounts_lock, _read_accounts, _record_token, _write_accounts
from .layout import ACCOUNTS, DATA, HOST_KEY, HostError, _require_host_dir, fingerprint, validate_comm_id
from .passwords import hash_password

MAX_TOMBSTONES = 200  # removals remembered in accounts.json ("removed") for the audit log


def init_host(host_dir: str | os.PathLike[str]) -> str:
    """Create a host folder (idempotent): keeps an existing host key; returns its fingerprint.

    Running it again on a host folder changes nothing and prints the same fingerprint, so a
    firm can always re-read the fingerprint it must give its clients.
    """
    path = Path(host_dir)
    if path.exists() and not path.is_dir():
        raise HostError(_("{path} exists and is not a folder").format(path=path), hint=_("choose another "
                                                                                         "path"))
    if path.is_dir() and any(path.iterdir()) and not (path / HOST_KEY).exists():
        raise HostError(
            _("{path} is not empty and is not a host folder").format(path=path),
            hint=_("choose an empty or new folder for the host"),
        )
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = path / HOST_KEY
    if not key_path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="cloudshare host key")
        data = key.export_private_key("openssh")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        pub = path / (HOST_KEY + ".pub")
        pub.write_bytes(key.export_public_key("openssh"))
    (path / DATA).mkdir(exist_ok=True, mode=0o700)
    if not (path / ACCOUNTS).exists():
        _write_accounts(path, {"version": 1, "ids": {}})
    return fingerprint(path)


def _parse_public_key(line: str) -> str:
    """Validate one OpenSSH public key line; return it normalised ("type base64 comment")."""
    line = line.strip()
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise HostError(
            _("not an OpenSSH public key: {error}").format(error=exc),
            hint=_("pass the .pub file (one line starting with ssh-ed25519, ssh-rsa, ...)"),
        ) from exc
    return key.export_public_key("openssh").decode().strip()


def add_id(
    host_dir: str | os.PathLike[str],
    comm_id: str,
    password: str | None,
    authorized_key: str | None,
) -> None:
    """Create communication ID `comm_id` with a password and/or one authorized public key."""
    path = _require_host_dir(Path(host_dir))
    validate_comm_id(comm_id)
    if not password and not authorized_key:
        raise HostError(
            _("communication ID {comm_id} would have no way to log in").format(comm_id=comm_id),
            hint=_("give it a password, or --authorized-key PUBKEYFILE, or both"),
        )
    keys = [_parse_public_key(authorized_key)] if authorized_key else []
    record: dict[str, Any] = {
        "password": hash_password(password) if password else None,
        "authorized_keys": keys,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # a fresh serial per ID: a connection logged in before a remove + add is recognised
        "serial": secrets.token_hex(8),
    }
    with _accounts_lock(path):
        data = _read_accounts(path)
        if comm_id in data["ids"]:
            raise HostError(
                _("communication ID {comm_id} already exists").format(comm_id=comm_id),
                hint=_("remove it first with `cloudshare host remove-id {path} {comm_id}`").format(
                    path=path, comm_id=comm_id),
            )
        root = path / DATA / comm_id
        root.mkdir(mode=0o700, exist_ok=True)
        data["ids"][comm_id] = record
        _write_accounts(path, data)


def remove_id(host_dir: str | os.PathLike[str], comm_id: str, *, delete_data: bool = False) -> None:
    """Remove a communication ID (its data folder is kept unless `delete_data`).

    A running `serve` notices the change and closes the ID's live connections. With
    `delete_data` the folder is first renamed aside (`data/.removed-ID-XXXXXXXX`, so it is
    gone at once and nothing can write into it under its name), then deleted.
    """
    path = _require_host_dir(Path(host_dir))
    validate_comm_id(comm_id)
    aside: Path | None = None
    with _accounts_lock(path):
        data = _read_accounts(path)
        if comm_id not in data["ids"]:
            raise HostError(
                _("no communication ID {comm_id} on this host").format(comm_id=comm_id),
                hint=_("see `cloudshare host list-ids {path}`").format(path=path),
            )
        root = path / DATA / comm_id
        if delete_data and root.exists():
            aside = path / DATA / f".removed-{comm_id}-{secrets.token_hex(4)}"
            os.rename(root, aside)
        record = data["ids"].pop(comm_id)
        # a short memory of removals, so a running `serve` can log what happened exactly
        tombstone = {
            "id": comm_id,
            "token": _record_token(record) if isinstance(record, dict) else "",
            "data": "kept" if root.is_dir() else "deleted",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        removed = data.get("removed")
        if not isinstance(removed, list):
            removed = []
        data["removed"] = [*removed, tombstone][-MAX_TOMBSTONES:]
        _write_accounts(path, data)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@dataclass(frozen=True)
class IdInfo:
    """One line of `list-ids`."""

    comm_id: str
    password: bool
    keys: int
    created: str


def list_ids(host_dir: str | os.PathLike[str]) -> list[IdInfo]:
    """The communication IDs of a host folder, sorted."""
    path = _require_host_dir(Path(host_dir))
    data = _read_accounts(path)
    return [
        IdInfo(cid, bool(rec.get("password")), len(rec.get("authorized_keys") or []), rec.get("created", ""))
        for cid, rec in sorted(data["ids"].items())
    ]
