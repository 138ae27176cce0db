"""The local memory of an area: log entries, the lock's top generation and the config, between commands."""

from __future__ import annotations

import base64
import json
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..localfiles import atomic_write


class AreaCache:
    """What never changes on the host, remembered locally: log entries, the lock's top, the config.

    Log entries are immutable and lock generations are never removed, so this cache is
    never wrong, only behind; it turns each command's log scan into a probe for new slots.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[int, dict[str, Any] | None] = {}
        self.lock_top = 0
        self.config: dict[str, Any] | None = None  # {"size", "mtime", "raw" (base64)} of `config`
        self._saved: tuple[int, int, Any] = (0, 0, None)
        if path is not None and path.exists():
            with suppress(ValueError, OSError, TypeError, AttributeError):
                data = json.loads(path.read_text())
                self.entries = {int(k): v for k, v in data["entries"].items()}
                self.lock_top = int(data["lock_top"])
                config = data.get("config")
                self.config = config if isinstance(config, dict) else None
        self._saved = self._state()

    def _state(self) -> tuple[int, int, Any]:
        return len(self.entries), self.lock_top, self.config

    def config_if(self, size: int, mtime: int) -> bytes | None:
        """The config's bytes as last read, if `stat` still shows the same size and mtime."""
        kept = self.config or {}
        if (kept.get("size"), kept.get("mtime")) != (size, mtime):
            return None
        with suppress(ValueError, TypeError):
            raw = base64.b64decode(kept.get("raw", ""), validate=True)
            return raw if len(raw) == size else None
        return None

    def remember_config(self, raw: bytes, size: int, mtime: int) -> None:
        """Keep the config's bytes with the size and mtime `stat` showed for them."""
        if len(raw) == size:  # else it was replaced between reading and `stat`: keep nothing
            self.config = {"size": size, "mtime": mtime, "raw": base64.b64encode(raw).decode("ascii")}

    def log_head(self) -> int:
        """The highest sequence number below which every slot is known."""
        head = 0
        while head + 1 in self.entries:
            head += 1
        return head

    def remember_entry(self, seq: int, entry: dict[str, Any] | None) -> None:
        """Keep log entry `seq` (None: void)."""
        self.entries[seq] = entry

    def save(self) -> None:
        """Write atomically, only when something new was learnt (best effort)."""
        if self.path is None or self._state() == self._saved:
            return
        with suppress(OSError):
            # Void entries are not kept: on a host without hard links one may have been torn
            # while being written, and must be read again next time.
            entries = {k: v for k, v in self.entries.items() if v is not None}
            body = json.dumps({"entries": entries, "lock_top": self.lock_top, "config": self.config}).encode()
            atomic_write(self.path, body, durable=False)
            self._saved = self._state()
