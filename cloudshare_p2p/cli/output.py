"""What the commands print: `--json`, safe text, messages on stderr, and how values read.

Data goes to stdout (tables, `--json`); messages go to stderr. Control characters are escaped
before anything reaches a terminal.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from ..i18n import N_, _

if TYPE_CHECKING:
    from ..service import Outcome


def safe_text(text: str) -> str:
    """Escape control characters (but keep line breaks) before anything reaches a terminal."""
    from ..textsafe import printable

    return "\n".join(printable(line) for line in str(text).split("\n"))


def say(text: str) -> None:
    """A message for the person, on stderr."""
    click.echo(safe_text(text), err=True)


def json_out(data: Any, as_json: bool) -> bool:
    """Print `data` as the stable `--json` form when asked (UTF-8 text, not `\\u` escapes)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    return as_json


def can_show(text: str, stream: Any = None) -> bool:
    """Can the console encode `text`? (Windows consoles and redirections may be cp932.)"""
    encoding = getattr(stream or sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def emit(outcome: Outcome, as_json: bool) -> None:
    """A command's outcome: its `--json` data, or its message."""
    if not json_out(outcome.data, as_json):
        click.echo(safe_text(outcome.message))


def iso_local(iso: str | None) -> str:
    """An ISO 8601 UTC time (`…Z`) in this computer's time zone, for people."""
    from datetime import datetime

    if not iso:
        return "?"
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    except ValueError:
        return iso


def state_words(row: dict[str, Any]) -> str:
    """The state as a person reads it (`--json` keeps the machine's name)."""
    if row["state"] == "area-missing" and row.get("missing_reason") == "id-unusable":
        return _("ID unusable")
    if row["state"] == "area-missing":
        return _("area deleted")
    return _(STATE_WORDS.get(row["state"], row["state"]))


#: The data set states as people read them (the English keeps the machine's names).
STATE_WORDS = {
    "unshared": N_("unshared"),
    "initializing": N_("initializing"),
    "shared-idle": N_("shared-idle"),
    "locked-by-me": N_("locked-by-me"),
    "locked-by-other": N_("locked-by-other"),
    "leaving": N_("leaving"),
    "area-missing": N_("area-missing"),
}
