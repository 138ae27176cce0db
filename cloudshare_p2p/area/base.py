"""What every part of an area shares: the connection, its paths, publishing, the config and keys.

`AreaBase` holds the state of one area reached through a `RemoteFiles` connection
(transport/contract.py); the lock, log, data and lifecycle parts (the other modules) build on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import crypto, errors
from ..i18n import _
from ..transport import RemoteFiles, Stat
from .cache import AreaCache
from .model import TransferStats
from .records import ENTRY_NAME, MAX_CONFIG, parse_config, validate_area_name

CLOCK_REUSE = 60.0  # seconds a reading of the host's clock is carried forward (see `server_now`)


class AreaBase:
    """One share area (a folder on the host) reached through a `RemoteFiles` connection: the shared state."""

    def __init__(self, session: RemoteFiles, name: str, clock: Callable[[], float] | None = None) -> None:
        self.session = session
        self.name = validate_area_name(name)
        self.root = session.path(name)
        self.config: dict[str, Any] | None = None
        self.keys: crypto.Keys | None = None
        self.data_key: bytes | None = None  # the unwrapped key, for remembering on this computer
        self.stats = TransferStats()
        self._clock = clock or time.monotonic
        self.cache = AreaCache(None)
        self._cache_dir: Path | None = None
        self._expected_id: str | None = None
        self.interrupted: Callable[[], bool] = lambda: False  # a Ctrl-C waiting for a safe point
        self._claimed_at = 0  # server mtime of the lock generation this object last won
        self._held_checked = 0  # the generation whose lease this object last checked or renewed
        self._clock_seen: tuple[float, int] | None = None  # (our clock, the server's) read together
        self._head_read: int | None = None  # the log's head as this object last read or appended it
        self._appended = False  # this object has just won an append (see `Log._sync_log`)
        self._release_wanted = False  # see `LockFolder.prepare_release`
        self._release_ready: tuple[int, str] | None = None  # (generation, temp file) written ahead

    def check_interrupt(self) -> None:
        """Stop at a safe point (between chunks) when the person pressed Ctrl-C."""
        if self.interrupted():
            raise KeyboardInterrupt

    def use_cache(self, cache_dir: Path, area_id: str | None = None) -> None:
        """Remember log entries, the lock's top generation and the config under cache_dir/<area_id>/.

        Takes effect once the config is read (the cache is per area id). With `area_id` (the
        id this computer expects the area to have), `load` checks the config kept there with
        one `stat` instead of reading it again.
        """
        self._cache_dir = cache_dir
        self._expected_id = area_id or self._expected_id
        if self.config is not None:
            self.cache = AreaCache(cache_dir / self.config["area_id"] / "area.json")

    # --- paths --------------------------------------------------------------------

    def p(self, *parts: str) -> str:
        """The host path of `parts` inside the area."""
        return "/".join([self.root, *parts])

    def _chunk_path(self, chunk_id: str) -> str:
        return self.p("chunks", chunk_id[:2], chunk_id)

    def _tmp(self) -> str:
        return self.p("tmp", f"{uuid.uuid4().hex}.tmp")

    def _entries(self, folder: str) -> list[int]:
        """The numbered files of `lock/` or `log/`, sorted (AreaCorrupt if the folder is gone)."""
        try:
            names = self.session.listdir(self.p(folder))
        except FileNotFoundError:
            self.check_present()
            raise errors.AreaCorrupt(_("area {name} lacks its {folder}/ folder").format(
                name=self.name, folder=folder)) from None
        return sorted(int(n) for n in names if ENTRY_NAME.fullmatch(n))

    # --- publishing and reading records -------------------------------------------------

    def _publish(self, final: str, data: bytes) -> bool:
        """Write `data` under a private temp name, then create `final` exclusively."""
        tmp = self._tmp()
        self.session.upload(tmp, data)
        return self.session.publish(tmp, final)

    def server_now(self) -> int:
        """The host's clock (the mtime of a file it has just created). A reading this object made
        less than CLOCK_REUSE seconds ago (a probe, or a claim's write) is carried forward by our
        own clock instead of probing again: counted from after its answer arrived and rounded
        down, it never runs ahead of the host's clock (it may lag by a round trip and a second)."""
        if self._clock_seen is not None:
            elapsed = self._clock() - self._clock_seen[0]
            if 0 <= elapsed < CLOCK_REUSE:
                return self._clock_seen[1] + int(elapsed)
        return self._saw_server_time(self.session.server_now(self.p("tmp")))

    def _saw_server_time(self, mtime: int) -> int:
        """Note a reading of the host's clock that has just arrived; returns it."""
        self._clock_seen = (self._clock(), mtime)
        return mtime

    # --- the config and keys --------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Read and check the config; AreaGone if the area was deleted or emptied."""
        if self.config is not None:
            return self.config
        raw, stamp = self._kept_config(), None
        if raw is None:
            raw, stamp = self._read_config()
        self.config = parse_config(raw)
        if self._cache_dir is not None:
            self.use_cache(self._cache_dir)
            if stamp is not None:  # kept under the id it names: only a command expecting that id uses it
                self.cache.remember_config(raw, stamp.size, stamp.mtime)
                self.cache.save()
        return self.config

    def _read_config(self) -> tuple[bytes, Stat]:
        """The config's bytes and the stat read with them (the size and mtime that `_kept_config`
        compares next time)."""
        found = self.session.read_many([self.p("config")], MAX_CONFIG)[0]
        if found is None:
            raise self._gone()
        if found.data is None:
            raise errors.AreaCorrupt(_("the config of area {name} is too large").format(name=self.name))
        return found.data, found.stat

    def _kept_config(self) -> bytes | None:
        """The config as this computer last read it, if one `stat` shows it unchanged.

        `config` is created once and never changes (docs/area-format.md, rules 5 and 7); the
        format-2 upgrade replaces it by a rename with a longer record, a new size and mtime.
        So an unchanged size and mtime mean the same bytes: it is still checked before any
        other file of the area (rule 1), one request instead of four.
        """
        if self._cache_dir is None or self._expected_id is None:
            return None
        kept = AreaCache(self._cache_dir / self._expected_id / "area.json")
        if kept.config is None:
            return None
        st = self.session.stat(self.p("config"))
        if st is None:
            raise self._gone()
        return None if st.is_dir else kept.config_if(st.size, st.mtime)

    def _gone(self) -> errors.AreaGone:
        what = "emptied" if self.session.stat(self.root) is not None else "deleted"
        return errors.AreaGone(_("the data of area {name} is gone from the host ({what})").format(
            name=self.name, what=what))

    def check_present(self) -> None:
        """Raise AreaGone if the area's config is no longer on the host."""
        if self.session.stat(self.p("config")) is None:
            raise self._gone()

    @property
    def area_id(self) -> str:
        """The area's id from its config (fixed at creation)."""
        return self.load()["area_id"]

    def require_keys(self) -> crypto.Keys:
        """The unlocked keys (set by `create`, `unlock_keys` or `use_data_key`), else CloudShareError."""
        if self.keys is None:
            raise errors.KeysMissing(_("the share password was not given for this area"))
        return self.keys
