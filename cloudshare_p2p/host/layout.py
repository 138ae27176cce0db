"""The host folder's layout and names: host key, accounts.json, data/ID; valid IDs; HostError."""

from __future__ import annotations

import re
from pathlib import Path

import asyncssh

from ..errors import CloudShareError
from ..i18n import _

COMM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOST_KEY = "host_key"
ACCOUNTS = "accounts.json"
DATA = "data"


class HostError(CloudShareError):
    """A `cloudshare host` command cannot be carried out."""


def validate_comm_id(comm_id: str) -> str:
    """Return `comm_id` if it is a valid communication ID, else raise HostError."""
    if not COMM_ID_RE.match(comm_id or ""):
        raise HostError(
            _("invalid communication ID {comm_id!r}").format(comm_id=comm_id),
            hint=_("use 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"),
        )
    return comm_id


def _is_host_dir(path: Path) -> bool:
    return (path / HOST_KEY).is_file() and (path / ACCOUNTS).is_file()


def _require_host_dir(path: Path) -> Path:
    path = Path(path)
    if not _is_host_dir(path):
        raise HostError(
            _("{path} is not a host folder (no {host_key} / {accounts})").format(
                path=path, host_key=HOST_KEY, accounts=ACCOUNTS),
            hint=_("create it first with `cloudshare host init {path}`").format(path=path),
        )
    return path


def fingerprint(host_dir: Path) -> str:
    """The host key's `SHA256:` fingerprint, as OpenSSH prints it."""
    key = asyncssh.read_private_key(str(Path(host_dir) / HOST_KEY))
    return key.get_fingerprint("sha256")
