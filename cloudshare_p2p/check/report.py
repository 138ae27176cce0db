"""The result of a check: problems (what, where, which versions) and the summary, as text or JSON."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..display import human_size
from ..errors import ExitCode
from ..i18n import _
from ..textsafe import printable

DAMAGE, WARNING = "damage", "warning"
STRUCTURE, OBJECTS, READ_DATA = "structure", "objects", "read-data"


@dataclass(frozen=True)
class Problem:
    """One finding: how bad, where in the area, what, and which versions it makes unreadable."""

    severity: str  # DAMAGE (the area is damaged, exit 11) or WARNING (harmless, reported)
    where: str  # a path inside the area, host text escaped
    what: str
    versions: tuple[int, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "where": self.where, "what": self.what,
                "versions": list(self.versions)}


@dataclass
class CheckReport:
    """What a check found, with its summary (versions readable or damaged, work done)."""

    area: str
    mode: str = STRUCTURE  # STRUCTURE (no keys), OBJECTS (manifests read, chunks stat'ed), READ_DATA
    versions: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    log_entries: int = 0
    lock_records: int = 0
    manifests_checked: int = 0
    chunks_checked: int = 0
    bytes_read: int = 0

    def add(self, severity: str, where: str, what: str, versions: Iterable[int] = ()) -> None:
        self.problems.append(Problem(severity, where, what, tuple(sorted(set(versions)))))

    @property
    def damaged(self) -> bool:
        return any(p.severity == DAMAGE for p in self.problems)

    @property
    def damaged_versions(self) -> list[int]:
        return sorted({v for p in self.problems if p.severity == DAMAGE for v in p.versions})

    @property
    def readable_versions(self) -> list[int]:
        """Versions no damage was found in (in STRUCTURE mode their chunks were not checked)."""
        bad = set(self.damaged_versions)
        return [v for v in self.versions if v not in bad]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.AREA_DAMAGED if self.damaged else ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        """The stable `--json` form."""
        return {
            "area": self.area, "mode": self.mode, "ok": not self.damaged,
            "versions": self.versions, "readable_versions": self.readable_versions,
            "damaged_versions": self.damaged_versions, "log_entries": self.log_entries,
            "lock_records": self.lock_records, "manifests_checked": self.manifests_checked,
            "chunks_checked": self.chunks_checked, "bytes_read": self.bytes_read,
            "problems": [p.as_json() for p in self.problems],
        }


def render_text(report: CheckReport) -> str:
    """The report for people: one line per problem, then the summary and the verdict."""
    lines = [_describe_mode(report)]
    for p in report.problems:
        label = _("DAMAGED") if p.severity == DAMAGE else _("warning")
        line = f"{label}: {p.where}: {p.what}"
        if p.versions:
            line += " " + _("(affects {versions})").format(versions=_versions_text(p.versions))
        elif p.severity == DAMAGE and report.mode == STRUCTURE:
            line += " " + _("(which versions it affects is known only with the share password)")
        lines.append(printable(line))
    lines.append(_("versions: {total}; readable: {readable}; damaged: {damaged}").format(
        total=len(report.versions), readable=_versions_text(report.readable_versions),
        damaged=_versions_text(report.damaged_versions)))
    lines.append(_("{entries} log entries, {records} lock records, {manifests} manifests and {chunks} "
                   "chunks checked; {size} read").format(
        entries=report.log_entries, records=report.lock_records, manifests=report.manifests_checked,
        chunks=report.chunks_checked, size=human_size(report.bytes_read)))
    lines.append(_("the area is damaged (exit 11)") if report.damaged else _("no damage found"))
    return "\n".join(lines)


def _describe_mode(report: CheckReport) -> str:
    if report.mode == STRUCTURE:
        return _("area {area}: structure only (no share password: manifests and chunks were not "
                 "opened)").format(area=report.area)
    if report.mode == OBJECTS:
        return _("area {area}: manifests opened, chunks checked by size (--read-data reads them "
                 "all)").format(area=report.area)
    return _("area {area}: every manifest and chunk read and verified").format(area=report.area)


def _versions_text(numbers: Iterable[int]) -> str:
    shown = [f"v{n}" for n in numbers]
    return ", ".join(shown) if shown else _("none")
