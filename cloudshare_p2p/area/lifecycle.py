"""The `Area` whole: its lifecycle (create, unlock with the share password, delete) on top of its parts.

`Area` is the top of the stack `AreaBase` → `Log` → `LockFolder` → `DataStore` (see the
package docstring); what is left for this module is what concerns the area as a whole.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

from .. import crypto, errors
from ..i18n import _
from ..snapshot import CHUNKER
from .data import DataStore
from .model import Grant, Party
from .records import FORMAT, FORMAT_VERSION, _nowiso_utc


class Area(DataStore):
    """One share area (a folder on the host) reached through a `RemoteFiles` connection."""

    def create(self, dataset_name: str, password: str, creator: Party,
               kdf: dict[str, Any] | None = None) -> None:
        """Create the area; refuses an area that exists. The config is published last."""
        if self.session.stat(self.p("config")) is not None:
            raise errors.AreaExists(_("area {name} already exists on the host").format(name=self.name))
        if not self.session.mkdir(self.root) and self._leftovers():
            raise errors.AreaExists(
                _("the folder of area {name} holds leftovers of an earlier area").format(name=self.name),
                hint=_("choose another area name, or ask the firm to remove that folder on the host"),
            )
        for sub in ("lock", "log", "manifests", "chunks", "tmp"):
            self.session.mkdir(self.p(sub))
        params = dict(kdf or crypto.KDF_DEFAULTS)
        salt = crypto.new_salt()
        area_id = uuid.uuid4().hex
        data_key = crypto.new_data_key()
        wrapped = crypto.wrap_key(crypto.derive_kek(password, salt, params), data_key, area_id)
        config = {
            "format": FORMAT, "version": FORMAT_VERSION, "area_id": area_id,
            "dataset": dataset_name, "created": _nowiso_utc(), "created_by": creator.as_dict(),
            "kdf": {**params, "salt": base64.b64encode(salt).decode()},
            "wrapped_key": base64.b64encode(wrapped).decode(), "chunker": CHUNKER,
        }
        body = json.dumps(config, indent=1, sort_keys=True).encode()
        if not self._publish(self.p("config"), body):
            raise errors.AreaExists(_("area {name} already exists on the host").format(name=self.name))
        self.config = config
        self.data_key = data_key
        self.keys = crypto.keys_from_data_key(data_key)

    def _leftovers(self) -> bool:
        for sub in ("lock", "log"):
            try:
                if self.session.listdir(self.p(sub)):
                    return True
            except FileNotFoundError:
                continue
        return False

    def unlock_keys(self, password: str) -> crypto.Keys:
        """Check the share password against the area; WrongPassword changes nothing."""
        config = self.load()
        kdf = dict(config["kdf"])
        try:
            salt = base64.b64decode(kdf.pop("salt"))
            wrapped = base64.b64decode(config["wrapped_key"])
            kek = crypto.derive_kek(password, salt, kdf)
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.AreaCorrupt(_("area {name} has unusable key parameters: {error}").format(
                name=self.name, error=exc)) from None
        self.data_key = crypto.unwrap_key(kek, wrapped, config["area_id"])
        self.keys = crypto.keys_from_data_key(self.data_key)
        return self.keys

    def use_data_key(self, data_key: bytes) -> crypto.Keys:
        """Use a data key remembered on this computer (it belongs to this area's id)."""
        self.load()
        self.data_key = data_key
        self.keys = crypto.keys_from_data_key(data_key)
        return self.keys

    def delete(self, party: Party, grant: Grant) -> None:
        """Delete the area for everyone (we hold the lock; keys were checked)."""
        self.require_keys()
        self._append({"kind": "delete", "gen": grant.lease.generation, "session": grant.session,
                      "writer": party.as_dict()}, grant)
        # Move the whole folder aside first (the area disappears at once), then empty it.
        aside = self.session.path(f".deleted-{self.name}-{secrets.token_hex(4)}")
        try:
            self.session.rename(self.root, aside)
        except (OSError, errors.CloudShareError):
            self.session.remove(self.p("config"))  # the area is gone from here on
            aside = self.root
        self.session.remove_tree(aside)
