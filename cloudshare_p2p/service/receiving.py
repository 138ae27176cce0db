"""Bringing the local copy to the newest version, keeping unsent local changes aside."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from .. import errors
from ..area import Area, Version, check_not_pruned, same_content
from ..i18n import _
from ..snapshot import LocalSnapshot, keep_aside
from .base import Outcome, ServiceBase
from .dataset import DataSet


class Receiving(ServiceBase):
    """Receive the newest version of a data set (with or without the lock) and word the result."""

    def _bring_up_to_date(self, ds: DataSet, area: Area) -> tuple[Version | None, Path | None]:
        """Receive the newest version if ours is older, keeping unsent local changes aside.

        Returns the version received (None: already up to date) and where local changes
        were kept (None: there were none). A local copy that already is the newest version
        (a receive killed after it swapped the data in) is recorded, not kept aside.
        """
        newest = area.newest()
        target = ds.path
        synced = ds.synced_version
        if newest is None or (synced is not None and newest.version <= synced):
            return None, None
        changed = ds.changed_since_sync()
        if changed and target.exists() and self._is_copy_of(area, target, newest):
            ds.record_sync(newest.version)
            return newest, None
        kept = keep_aside(target, "local-changes") if changed and target.exists() else None
        try:
            self._download_newest(area, newest, target)
        except BaseException:
            if kept is not None and not os.path.lexists(target):
                with suppress(OSError):
                    os.replace(kept, target)  # nothing arrived: the unsent changes go back in place
            raise
        ds.record_sync(newest.version)
        return newest, kept

    def _download_newest(self, area: Area, newest: Version, target: Path) -> None:
        """Receive the newest version; a pruned one is refused (`VersionPruned`) when its data
        went missing while it was read. No check before: a `prune` entry counts only if every
        number it names is older than the newest version at its place (area/log.py, `log_view`),
        so none in the log the newest was just chosen from names it; that check would read the
        log again for nothing."""
        try:
            area.download(newest, target, self._cache(area), self.ui.progress(_("receiving"), newest.size))
        except errors.AreaCorrupt:
            check_not_pruned(area, newest)
            raise

    def _is_copy_of(self, area: Area, target: Path, version: Version) -> bool:
        """Does the local data hold exactly the bytes of `version`? (Cut as its manifest is.)"""
        try:
            wanted = area.read_manifest(version)
            local = LocalSnapshot.scan(target, area.require_keys(), like=wanted).manifest
            return same_content(local, wanted)
        except (errors.CloudShareError, OSError):
            return False

    def _received_outcome(self, ds: DataSet, newest: Version | None, kept: Path | None,
                          hold: bool) -> Outcome:
        """What a receive did, in words; local changes kept aside are `errors.Conflict`."""
        name = ds.name
        if newest is None:
            synced = ds.synced_version
            return Outcome(_("{name} is up to date (version {synced})").format(
                name=name, synced=synced), {"name": name, "version": synced})
        writer = newest.writer.get("name", "?")
        if kept is not None:
            raise errors.Conflict(
                _("both you and {writer} changed {name}: your copy was kept aside as {kept}; version "
                  "{version} was received").format(
                      writer=writer, name=name, kept=kept, version=newest.version)
                + (_("; you hold the lock") if hold else "")
            )
        return Outcome(_("{name} received version {version} (by {writer})").format(
            name=name, version=newest.version, writer=writer),
                       {"name": name, "version": newest.version})
