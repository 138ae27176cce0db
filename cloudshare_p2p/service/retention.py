"""`keep` (the area's retention policy) and `prune` (remove what it no longer keeps), and the
cheap prune a `close` runs at most once a day per data set on this computer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from statemachine.retention import RetentionPolicy, RetentionPolicyError

from .. import cachedir, errors
from ..area import Area, Grant, PruneReport, plan_prune, prune, prune_allowed, read_policy, set_policy
from ..area.retention import PruneNeedsFormat2
from ..cachedir import LAST_PRUNE, LAST_SWEEP
from ..display import human_size
from ..i18n import _
from ..localfiles import atomic_write
from .base import Outcome, ServiceBase
from .dataset import DataSet

PRUNE_LEASE = 600  # a keep or prune holds the lock this long at a time (prune renews as it goes)
PRUNE_EVERY = 86400  # seconds between the cheap prunes a close runs (this computer's clock)


class RetentionCommands(ServiceBase):
    """`keep`, `prune`, and the prune a `close` runs now and then."""

    def keep(self, name: str, last: int | None = None, daily: int | None = None,
             monthly: int | None = None) -> Outcome:
        """Show the area's retention policy; with any count given, change it (needs the lock)."""
        ds = self._shared(name)
        with self._observing(ds), self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            self._found_again(ds)
            self._load_keys(area, _("share password of {name}").format(name=name))
            current, seq = read_policy(area)
            if last is None and daily is None and monthly is None:
                return _policy_outcome(name, current, seq is None, changed=False)
            wanted = _wanted(current, last, daily, monthly)
            with self._briefly_holding(ds, area, _("setting the retention policy")) as grant:
                set_policy(area, grant, self.party, wanted)
        return _policy_outcome(name, wanted, False, changed=True)

    def prune(self, name: str, dry_run: bool = False) -> Outcome:
        """Remove the versions the policy no longer keeps, then the objects no kept version needs."""
        ds = self._shared(name)
        with self._observing(ds), self.connect(ds.remote) as session:
            area = self._area_of(ds, session)
            self._found_again(ds)
            self._load_keys(area, _("share password of {name}").format(name=name))
            if not prune_allowed(area):
                raise PruneNeedsFormat2(
                    _("area {name} uses format version 1, which keeps every version; the next close "
                      "upgrades it, and prune works from then on").format(name=area.name))
            if dry_run:  # reads only: no lock needed
                report = plan_prune(area)
            else:
                with self._briefly_holding(ds, area, _("pruning old versions")) as grant:
                    report = prune(area, grant, self.party)
                _mark_done_now(self._prune_mark(area))
                self._drop_pruned(area, report)
        assert report is not None  # only a cheap prune answers None
        return _prune_outcome(name, report)

    # --- from close ---------------------------------------------------------------------------

    def _prune_now_and_then(self, ds: DataSet, area: Area, grant: Grant) -> None:
        """The cheap prune of `close`, while it still holds the lock: at most once a day here.

        It never fails the close: a problem is said as a warning and tried again tomorrow.
        """
        mark = self._prune_mark(area)
        if not _due(mark):
            return
        try:
            if not prune_allowed(area):
                return
            _mark_done_now(mark)
            report = prune(area, grant, self.party, cheap=True)
            self._drop_pruned(area, report)
        except (errors.CloudShareError, OSError, KeyboardInterrupt) as exc:
            if not isinstance(exc, KeyboardInterrupt):
                self.ui.say(_("warning: pruning old versions of {name} failed ({error}); it is tried again "
                              "tomorrow").format(name=ds.name, error=exc))
            return
        if report is not None and not report.plan.empty:
            self.ui.say(_prune_outcome(ds.name, report).message)

    def _sweep_now_and_then(self, area: Area) -> None:
        """Remove abandoned uploads in the area's `tmp/` (a day old or more), at most once a day
        from this computer: the sweep costs a clock probe and a listing, a third of a close's
        requests, and temp files only matter after a day (docs/area-format.md, "Temporary files")."""
        mark = self.cache_root / area.area_id / LAST_SWEEP
        if not _due(mark):
            return
        _mark_done_now(mark)
        with suppress(errors.CloudShareError, OSError):
            area.sweep_tmp()

    def _prune_mark(self, area: Area) -> Path:
        return self.cache_root / area.area_id / LAST_PRUNE

    def _drop_pruned(self, area: Area, report: PruneReport | None) -> None:
        """Drop from this computer's cache what a prune found no kept version needs (no host I/O)."""
        if report is not None and not report.dry_run:
            unneeded = (rel.rsplit("/", 1)[-1] for rel in (*report.plan.remove_objects, *report.plan.young))
            cachedir.drop_objects(self.cache_root / area.area_id, unneeded)

    @contextmanager
    def _briefly_holding(self, ds: DataSet, area: Area, note: str) -> Iterator[Grant]:
        """The lock for a keep or prune: ours if this computer holds it (kept), else taken and released."""
        if ds.extras.get("grant"):
            grant = self._still_holding(ds, area)
            yield grant
            self._sync_renewal(ds, grant)
            return
        grant = self._acquire_or_raise(area, PRUNE_LEASE, note)
        try:
            yield grant
        finally:
            with suppress(errors.CloudShareError, OSError):
                area.release(grant, self.party)


def _wanted(current: RetentionPolicy, last: int | None, daily: int | None,
            monthly: int | None) -> RetentionPolicy:
    """The current policy with the counts given changed; InvalidName (a usage error) if out of bounds."""
    try:
        return RetentionPolicy(last=current.last if last is None else last,
                               daily=current.daily if daily is None else daily,
                               monthly=current.monthly if monthly is None else monthly,
                               utc_offset_minutes=current.utc_offset_minutes)
    except RetentionPolicyError as exc:
        raise errors.InvalidName(
            _("--{field} {value} is not a valid count").format(field=exc.field, value=exc.value),
            hint=_("give whole numbers from 0 to 10000, and at least one of --last, --daily, --monthly "
                   "above 0")) from None


def _policy_outcome(name: str, policy: RetentionPolicy, default: bool, changed: bool) -> Outcome:
    words = _("{name} keeps the last {last} versions, one a day for {daily} days and one a month for "
              "{monthly} months").format(name=name, last=policy.last, daily=policy.daily,
                                         monthly=policy.monthly)
    if default:
        words += _(" (the defaults)")
    elif changed:
        words = _("retention policy set: {policy}").format(policy=words)
    record = policy.to_record()
    record.pop("v", None)
    return Outcome(words, {"name": name, **record, "default": default})


def _prune_outcome(name: str, report: PruneReport) -> Outcome:
    plan = report.plan
    data = {"name": name, "dry_run": report.dry_run, "kept": list(report.decision.keep),
            "pruned": list(plan.remove_versions), "objects": len(plan.remove_objects),
            "removed_objects": report.removed_objects, "bytes": report.freed_bytes,
            "young": len(plan.young), "missing": len(plan.missing)}
    if plan.empty:
        return Outcome(_("{name}: nothing to prune; {kept} versions kept").format(
            name=name, kept=len(report.decision.keep)), data)
    size = human_size(report.freed_bytes)
    if report.dry_run:
        return Outcome(_("{name}: a prune would remove {versions} versions and {objects} objects ({size}); "
                         "{kept} versions kept").format(
                             name=name, versions=len(plan.remove_versions), objects=len(plan.remove_objects),
                             size=size, kept=len(report.decision.keep)), data)
    return Outcome(_("{name}: pruned {versions} versions and removed {objects} objects ({size}); {kept} "
                     "versions kept").format(
                         name=name, versions=len(plan.remove_versions), objects=report.removed_objects,
                         size=size, kept=len(report.decision.keep)), data)


def _due(mark: Path) -> bool:
    """A day has passed since `mark` was last set (or it never was): the once-a-day prune and sweep."""
    try:
        return time.time() - float(mark.read_text()) >= PRUNE_EVERY
    except (OSError, ValueError):
        return True


def _mark_done_now(mark: Path) -> None:
    with suppress(OSError):
        mark.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(mark, str(time.time()).encode(), durable=False)
