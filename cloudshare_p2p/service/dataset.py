"""One data set as a command sees it: loaded once, stepped and saved through `DataSet.fire`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from statemachine import Context, DataSetMachine, Event, State

from ..area import Grant, grant_from_dict, grant_to_dict
from ..registry import Registry
from ..snapshot import local_fingerprint, quick_stamp

UNSHARED_FIELDS: dict[str, Any] = {"remote": None, "area": None, "area_id": None}
"""The registry columns a data set that stops being shared clears."""


class DataSet:
    """A registry row, its `DataSetMachine` and the extras saved with it (the grant we hold,
    a claim in flight).

    A command loads it once (`DataSet.load`) and hands it to its steps. `fire` steps the
    machine and saves it with an audit record in one write transaction; the stored machine
    is compared first, so a `status --refresh` of another process is followed, not overwritten.
    """

    def __init__(self, registry: Registry, row: dict[str, Any]) -> None:
        self.registry = registry
        self._adopt(row)

    def _adopt(self, row: dict[str, Any]) -> None:
        self.row = row
        self.machine, self.extras = load_machine(row)
        self._saved = row.get("machine")  # the machine blob as stored, to see another process's write

    @classmethod
    def load(cls, registry: Registry, name: str) -> DataSet:
        """The data set NAME (`errors.NotRegistered` if there is none)."""
        return cls(registry, registry.get_dataset(name))

    # --- the row ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.row["name"])

    @property
    def path(self) -> Path:
        return Path(self.row["path"])

    @property
    def remote(self) -> str:
        return str(self.row["remote"])

    @property
    def area(self) -> str:
        return str(self.row["area"])

    @property
    def area_id(self) -> str | None:
        return self.row["area_id"]

    @property
    def synced_version(self) -> int | None:
        return self.row["synced_version"]

    @property
    def synced_hash(self) -> str | None:
        return self.row["synced_hash"]

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def context(self) -> Context:
        return self.machine.context

    def recorded_grant(self) -> Grant:
        """The grant saved with the machine (`KeyError` if none is recorded)."""
        return grant_from_dict(self.extras["grant"])

    def reload(self) -> None:
        """Read the row and machine again (after another process may have written them)."""
        self._adopt(self.registry.get_dataset(self.name))

    def update(self, **fields: Any) -> None:
        """Change registry columns (not the machine)."""
        self.row = self.registry.update_dataset(self.name, **fields)

    # --- stepping ----------------------------------------------------------------------------------

    def fire(self, event: Event, detail: str = "", *, grant: Grant | None = None,
             forget_grant: bool = False, fields: dict[str, Any] | None = None, **data: Any) -> State:
        """Step the machine with `event` (its `data` goes to the guards and effects) and save it.

        `grant`: record this grant as the one we hold (a claim in flight is done with);
        `forget_grant`: we hold no lock any more (grant and claim in flight are forgotten);
        neither: the extras stay. `fields`: registry columns changed in the same write.
        """
        with self._writing():
            self._follow_other_writer()
            before = self.machine.state
            after = self.machine.fire(event, **data)
            if grant is not None:
                self.extras = {"grant": grant_to_dict(grant)}
            elif forget_grant:
                self.extras = {}
            self._save(state=after.value, step=self.machine.context.step, **(fields or {}))
            self.registry.record(self.name, event.value, before.value, after.value, detail)
        return after

    def set_extras(self, **values: Any) -> None:
        """Save more extras with the machine (e.g. the session id of a claim about to be made)."""
        with self._writing():
            self._follow_other_writer()
            self.extras = {**self.extras, **values}
            self._save()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction; if it fails, what is in memory is read back from the registry."""
        try:
            with self.registry.write():
                yield
        except BaseException:
            with suppress(Exception):
                self.reload()
            raise

    def _save(self, **fields: Any) -> None:
        blob = json.dumps({"machine": self.machine.to_dict(), **self.extras})
        self.row = self.registry.update_dataset(self.name, machine=blob, **fields)
        self._saved = blob

    def _follow_other_writer(self) -> None:
        current = self.registry.get_dataset(self.name)
        if current.get("machine") != self._saved:
            self.machine, self.extras = load_machine(current)
            self._saved = current.get("machine")
        self.row = current

    # --- the local copy -----------------------------------------------------------------------------

    def record_sync(self, version: int | None) -> None:
        """The local data now is `version`: remember its stamp (taken first) and fingerprint."""
        stamp = quick_stamp(self.path)
        self.update(synced_version=version, synced_hash=local_fingerprint(self.path), synced_stamp=stamp)

    def unsent_changes(self) -> bool:
        """Does the local data differ from the version last synced (by content)?"""
        return local_fingerprint(self.path) != (self.synced_hash or "absent")

    def changed_since_sync(self) -> bool:
        """`unsent_changes`, answered cheaply by the stamp when it matches."""
        row = self.row
        if row.get("synced_stamp") and row["synced_hash"] and quick_stamp(self.path) == row["synced_stamp"]:
            return False
        return self.unsent_changes()


def load_machine(row: dict[str, Any]) -> tuple[DataSetMachine, dict[str, Any]]:
    """The machine and extras stored in a registry row."""
    raw = row.get("machine")
    if not raw:
        return DataSetMachine(row.get("state") or State.UNSHARED), {}
    blob = json.loads(raw) if isinstance(raw, str) else dict(raw)
    machine = DataSetMachine.from_dict(blob.pop("machine"))
    return machine, blob
