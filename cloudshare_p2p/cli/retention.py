"""Retention: `keep` (show or change the area's policy) and `prune` (apply it)."""

from __future__ import annotations

import click

from ..i18n import _
from .options import json_option
from .output import emit
from .root import main
from .session import service_of, working


@main.command(help=_("Show the area's retention policy; with any option, change it (needs the password).\n\n"
                     "A version is kept if any rule keeps it; the newest always is.\n"
                     "Example: cloudshare keep books --last 30 --daily 90 --monthly 84"))
@click.argument("name")
@click.option("--last", type=int, default=None, metavar="N", help=_("Keep the last N versions."))
@click.option("--daily", type=int, default=None, metavar="D",
              help=_("Keep the newest version of each of the last D days that have versions."))
@click.option("--monthly", type=int, default=None, metavar="M",
              help=_("Keep the newest version of each of the last M months that have versions."))
@json_option
@click.pass_context
def keep(ctx: click.Context, name: str, last: int | None, daily: int | None, monthly: int | None,
         as_json: bool) -> None:
    """Show the area's retention policy; with any option, change it (needs the password).

    A version is kept if any rule keeps it; the newest always is.
    Example: cloudshare keep books --last 30 --daily 90 --monthly 84
    """
    with working(ctx, name):
        emit(service_of(ctx).keep(name, last, daily, monthly), as_json)


@main.command(help=_("Remove the versions the retention policy no longer keeps, then their data.\n\n"
                     "Runs under the lock; data written in the last 24 hours is never removed.\n"
                     "Example: cloudshare prune books --dry-run"))
@click.argument("name")
@click.option("--dry-run", is_flag=True, help=_("Only say what would be removed."))
@json_option
@click.pass_context
def prune(ctx: click.Context, name: str, dry_run: bool, as_json: bool) -> None:
    """Remove the versions the retention policy no longer keeps, then their data.

    Runs under the lock; data written in the last 24 hours is never removed.
    Example: cloudshare prune books --dry-run
    """
    with working(ctx, name):
        emit(service_of(ctx).prune(name, dry_run), as_json)
