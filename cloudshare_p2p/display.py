"""How things read for people: sizes and the lock line. Display only; nothing here decides.

The area reports facts (`LockInfo`: verdict, holder record, times); the CLI and the messages of
the commands word them through these functions, so wording lives in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from statemachine import Verdict

from .i18n import _

if TYPE_CHECKING:
    from .area import LockInfo


def human_size(n: int | None) -> str:
    """Bytes for people: `512 B`, `1.5 MB`, `2.0 GB` (powers of 1024); None is `-`."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def local_time(ts: int | None) -> str:
    """Server seconds in this computer's time zone, for people."""
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def describe_lock(info: LockInfo) -> str:
    """One line for humans: who holds it, since when, until when (and the holder's note)."""
    if info.status.verdict in (Verdict.FREE, Verdict.EXPIRED):
        return _("free") if info.status.verdict is Verdict.FREE else _("free (the last lease expired)")
    who = info.holder.get("name", "?")
    since, until = local_time(info.status.since), local_time(info.status.until)
    text = _("locked by {who} since {since} until {until}").format(who=who, since=since, until=until)
    return _("{lock} - note: {note}").format(lock=text, note=info.note) if info.note else text
