"""The local memory of an area: log entries and the lock's top generation, kept between commands."""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..localfiles import atomic_write


class AreaCache:
    """What never changes on the host, remembered locally: log entries, the lock's top.

    Log entries are immutable and lock generations are never removed, so this cache is
    never wrong, only behind; it turns each command's log scan into a probe for new slots.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[int, dict[str, Any] | None] = {}
        self.lock_top = 0
        self._saved: tuple[int, int] = (0, 0)
        if path is not None and path.exists():
            with suppress(ValueError, OSError, TypeError, AttributeError):
                data = json.loads(path.read_text())
                self.entries = {int(k): v for k, v in data["entries"].items()}
                self.lock_top = int(data["lock_top"])
        self._saved = (len(self.entries), self.lock_top)

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
        if self.path is None or (len(self.entries), self.lock_top) == self._saved:
            return
        with suppress(OSError):
            # Void entries are not kept: on a host without hard links one may have been torn
            # while being written, and must be read again next time.
            entries = {k: v for k, v in self.entries.items() if v is not None}
            body = json.dumps({"entries": entries, "lock_top": self.lock_top}).encode()
            atomic_write(self.path, body, durable=False)
            self._saved = (len(self.entries), self.lock_top)
