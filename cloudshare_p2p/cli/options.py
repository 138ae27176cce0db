"""Options and argument parsing shared by the commands: durations, notes, `--wait`, `--lang`."""

from __future__ import annotations

import click

from ..durations import parse_duration
from ..i18n import _, setup_language
from ..settings import Until


def parse_duration_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """`--lease DURATION` (e.g. 90s, 30m, 1h30m) in seconds; a bad one is a usage error."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def check_note(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """`--note`: refused (usage error) when longer than the area allows."""
    from ..textsafe import note_problem

    problem = note_problem(value or "")
    if problem:
        raise click.BadParameter(_("{problem}; write a shorter note (about one line)").format(
            problem=problem))
    return value or ""


json_option = click.option("--json", "as_json", is_flag=True,
                           help=_("Machine-readable output (stable keys, always English)."))
yes_option = click.option("--yes", "-y", is_flag=True, help=_("Do not ask for confirmation."))


def set_lang(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--lang` (read from the command line before the commands were built; set again here)."""
    if value:
        setup_language(value)


def wait_until(value: str | None) -> float | Until | None:
    """`--wait DURATION` in seconds; `--wait` alone (or a zero duration): until the holder's lease ends."""
    if value is None:
        return None
    if value == "0":
        return Until.LEASE_ENDS
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--wait") from None
    return float(seconds) if seconds else Until.LEASE_ENDS
