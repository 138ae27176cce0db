"""What the host was seen to say about a data set, recorded on its machine.

Each helper reads the data set again before it decides: `status --refresh` observes without
the per-data-set work lock, so another process may have stepped the machine meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from statemachine import AreaGoneReason, Event
from statemachine.plans import area_answers, area_gone_recorded, lock_seen

from .. import errors
from ..area import LockInfo
from ..display import describe_lock
from .base import ServiceBase
from .dataset import DataSet


class Observing(ServiceBase):
    """Follow what the host shows: the area gone or back, a lock held or free."""

    @contextmanager
    def _observing(self, ds: DataSet) -> Iterator[None]:
        """Record 'area gone' (deleted or ID unusable) on the machine, then re-raise."""
        try:
            yield
        except errors.AreaGone as exc:
            self._mark_missing(ds, AreaGoneReason.DELETED, str(exc))
            raise
        except errors.LoginRefused as exc:
            self._mark_missing(ds, AreaGoneReason.ID_UNUSABLE, str(exc))
            raise

    def _mark_missing(self, ds: DataSet, reason: AreaGoneReason, detail: str) -> None:
        ds.reload()
        if area_gone_recorded(ds.state, reason):
            ds.fire(Event.AREA_GONE, detail, reason=reason.value)

    def _found_again(self, ds: DataSet) -> None:
        ds.reload()
        if area_answers(ds.state):
            ds.fire(Event.AREA_FOUND, "the area answers again")

    def _follow_lock(self, ds: DataSet, info: LockInfo) -> None:
        """Record the lock as seen: free again, or held by someone."""
        ds.reload()
        event = lock_seen(ds.state, free=info.status.claimable)
        if event is Event.LOCK_FREE:
            ds.fire(Event.LOCK_FREE, describe_lock(info))
        elif event is Event.LOCK_HELD:
            self._note_held(ds, info)

    def _note_held(self, ds: DataSet, info: LockInfo) -> None:
        """Record that someone holds the lock (if the machine does not know better)."""
        ds.reload()
        if lock_seen(ds.state, free=False):
            ds.fire(Event.LOCK_HELD, describe_lock(info), token=info.status.generation,
                    holder=info.holder.get("name"), until=info.status.until)
