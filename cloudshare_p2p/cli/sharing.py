"""Starting and stopping Cloud Share: `share`, `join`, `leave`, `delete-area`."""

from __future__ import annotations

from pathlib import Path

import click

from ..i18n import _
from .options import json_option, yes_option
from .output import emit
from .root import main
from .session import service_of, working


@main.command(help=_("Upload your local data and start Cloud Share (sets the share password).\n\n"
                     "Example: cloudshare share books ~/books.db --remote firm --area yamada-books --yes"))
@click.argument("name")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--remote", "remote_name", required=True, help=_("The host to share through."))
@click.option("--area", required=True, help=_("The area to create on the host."))
@yes_option
@json_option
@click.pass_context
def share(ctx: click.Context, name: str, path: Path | None, remote_name: str, area: str, yes: bool,
          as_json: bool) -> None:
    """Upload your local data and start Cloud Share (sets the share password).

    Example: cloudshare share books ~/books.db --remote firm --area yamada-books --yes
    """
    with working(ctx, name):
        emit(service_of(ctx).share(name, path, remote_name, area, yes), as_json)


@main.command(help=_("Receive an area's data into PATH and start sharing (if the password matches).\n\n"
                     "Anything already at PATH is kept aside under a name the message prints.\n"
                     "Example: cloudshare join books ~/books.db --remote firm --area yamada-books"))
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--remote", "remote_name", required=True, help=_("The host to share through."))
@click.option("--area", required=True, help=_("The area to receive from."))
@json_option
@click.pass_context
def join(ctx: click.Context, name: str, path: Path, remote_name: str, area: str, as_json: bool) -> None:
    """Receive an area's data into PATH and start sharing (if the password matches).

    Anything already at PATH is kept aside under a name the message prints.
    Example: cloudshare join books ~/books.db --remote firm --area yamada-books
    """
    with working(ctx, name):
        emit(service_of(ctx).join(name, path, remote_name, area), as_json)


@main.command(help=_("Stop using Cloud Share for this data set on this computer only.\n\n"
                     "The newest version is received first when possible; the others go on sharing.\n"
                     "Example: cloudshare leave books --yes"))
@click.argument("name")
@yes_option
@click.pass_context
def leave(ctx: click.Context, name: str, yes: bool) -> None:
    """Stop using Cloud Share for this data set on this computer only.

    The newest version is received first when possible; the others go on sharing.
    Example: cloudshare leave books --yes
    """
    with working(ctx, name):
        emit(service_of(ctx).leave(name, yes), False)


@main.command("delete-area", help=_(
    "Delete the shared data on the host for everyone (asks for the share password).\n\n"
    "Refused (exit 3) while someone else holds the lock.\n"
    "Example: cloudshare delete-area firm yamada-books"))
@click.argument("remote_name", metavar="REMOTE")
@click.argument("area")
@yes_option
@click.pass_context
def delete_area(ctx: click.Context, remote_name: str, area: str, yes: bool) -> None:
    """Delete the shared data on the host for everyone (asks for the share password).

    Refused (exit 3) while someone else holds the lock.
    Example: cloudshare delete-area firm yamada-books
    """
    emit(service_of(ctx).delete_area(remote_name, area, yes), False)
