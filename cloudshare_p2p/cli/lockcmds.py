"""The lock and the versions under it: `open`, `close`, `run`, `unlock`, `restore`."""

from __future__ import annotations

import click

from ..i18n import _
from ..settings import DEFAULT_LEASE, DEFAULT_RUN_LEASE
from .options import check_note, json_option, parse_duration_option, wait_until
from .output import emit
from .root import main
from .session import service_of, working


@main.command("open", help=_("Receive the newest version and take the lock.\n\n"
                             "Locked by another: says who, since when and until when, and exits 3.\n"
                             "Example: cloudshare open books --note \"closing March\" --wait 10m"))
@click.argument("name")
@click.option("--lease", default=None, callback=parse_duration_option, metavar="DURATION",
              help=_("How long the lock holds without renewal (e.g. 90s, 30m, 8h, 1h30m; at most 7d) "
                     "[default {hours}h].").format(hours=DEFAULT_LEASE // 3600))
@click.option("--note", default="", callback=check_note,
              help=_("A note the others see while you hold the lock (at most 1 KiB)."))
@click.option("--wait", default=None, is_flag=False, flag_value="0", metavar="[DURATION]",
              help=_("Wait while another holds the lock (alone: until their lease runs out)."))
@click.option("--read-only", is_flag=True, help=_("Receive the newest version without the lock."))
@json_option
@click.pass_context
def open_(ctx: click.Context, name: str, lease: int | None, note: str, wait: str | None, read_only: bool,
          as_json: bool) -> None:
    """Receive the newest version and take the lock.

    Locked by another: says who, since when and until when, and exits 3.
    Example: cloudshare open books --note "closing March" --wait 10m
    """
    with working(ctx, name):
        emit(service_of(ctx).open(name, lease or DEFAULT_LEASE, note, wait_until(wait), read_only), as_json)


@main.command(help=_("Send the new version and release the lock.\n\n"
                     "If your lease ran out and someone else took the lock, your work is kept aside "
                     "(exit 6).\nExample: cloudshare close books"))
@click.argument("name")
@click.option("--note", default="", callback=check_note,
              help=_("A note recorded with the new version (at most 1 KiB)."))
@json_option
@click.pass_context
def close(ctx: click.Context, name: str, note: str, as_json: bool) -> None:
    """Send the new version and release the lock.

    If your lease ran out and someone else took the lock, your work is kept aside (exit 6).
    Example: cloudshare close books
    """
    with working(ctx, name):
        emit(service_of(ctx).close(name, note), as_json)


@main.command(context_settings={"ignore_unknown_options": True}, help=_(
    "Open, run a program (renewing the lock), close when it exits.\n\n"
    "The program's exit status is passed on.\n"
    "Example: cloudshare run books -- accounting-app ~/books.db"))
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--lease", default=None, callback=parse_duration_option, metavar="DURATION",
              help=_("Lease, renewed at a third while the program runs (at most 7d) "
                     "[default {seconds}s].").format(seconds=DEFAULT_RUN_LEASE))
@click.option("--note", default="", callback=check_note,
              help=_("A note the others see while the program runs (at most 1 KiB)."))
@click.option("--wait", default=None, is_flag=False, flag_value="0", metavar="[DURATION]",
              help=_("Wait while another holds the lock."))
@click.pass_context
def run(ctx: click.Context, name: str, command: tuple[str, ...], lease: int | None, note: str,
        wait: str | None) -> None:
    """Open, run a program (renewing the lock), close when it exits.

    The program's exit status is passed on.
    Example: cloudshare run books -- accounting-app ~/books.db
    """
    with working(ctx, name):
        status = service_of(ctx).run(name, command, lease or DEFAULT_RUN_LEASE, note, wait_until(wait))
    ctx.exit(status)


@main.command(help=_("Break another party's lock (needs the share password; recorded in the area).\n\n"
                     "Example: cloudshare unlock books --force"))
@click.argument("name")
@click.option("--force", is_flag=True, required=True, help=_("Really break another party's lock."))
@click.pass_context
def unlock(ctx: click.Context, name: str, force: bool) -> None:
    """Break another party's lock (needs the share password; recorded in the area).

    Example: cloudshare unlock books --force
    """
    with working(ctx, name):
        emit(service_of(ctx).break_lock(name), False)


@main.command(help=_("Make an old version the newest again (a new version; nothing is deleted).\n\n"
                     "Example: cloudshare restore books 12"))
@click.argument("name")
@click.argument("version", type=int)
@json_option
@click.pass_context
def restore(ctx: click.Context, name: str, version: int, as_json: bool) -> None:
    """Make an old version the newest again (a new version; nothing is deleted).

    Example: cloudshare restore books 12
    """
    with working(ctx, name):
        emit(service_of(ctx).restore(name, version), as_json)
