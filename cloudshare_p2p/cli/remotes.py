"""Hosts: `remote add/list/remove`, and `areas` (the area selection screen of one host)."""

from __future__ import annotations

import click

from ..display import human_size
from ..i18n import _, pad
from .group import CloudShareGroup
from .options import json_option
from .output import emit, iso_local, json_out, safe_text
from .root import main
from .session import service_of


@main.group(cls=CloudShareGroup, help=_("Hosts (communication IDs) you share through."))
def remote() -> None:
    """Hosts (communication IDs) you share through."""


@remote.command("add", help=_(
    "Add a host: sftp://COMM_ID@HOST[:PORT][/BASE].\n\n"
    "The host key is shown and must be confirmed (or given with --accept-host-key); login is\n"
    "tried once. Example: cloudshare remote add firm sftp://yamada@127.0.0.1:2222 --identity key"))
@click.argument("name")
@click.argument("url")
@click.option("--identity", type=click.Path(), help=_("Private key file for login (not the .pub file)."))
@click.option("--accept-host-key", metavar="SHA256:…",
    help=_("Pin this host key fingerprint without asking."))
@click.pass_context
def remote_add(ctx: click.Context, name: str, url: str, identity: str | None,
               accept_host_key: str | None) -> None:
    """Add a host: sftp://COMM_ID@HOST[:PORT][/BASE].

    The host key is shown and must be confirmed (or given with --accept-host-key); login is
    tried once. Example: cloudshare remote add firm sftp://yamada@127.0.0.1:2222 --identity key
    """
    emit(service_of(ctx).remote_add(name, url, identity, accept_host_key), False)


@remote.command("list", help=_("List the hosts. Example: cloudshare remote list --json"))
@json_option
@click.pass_context
def remote_list(ctx: click.Context, as_json: bool) -> None:
    """List the hosts. Example: cloudshare remote list --json"""
    rows = service_of(ctx).remote_list()
    if json_out(rows, as_json):
        return
    for row in rows:
        click.echo(safe_text(f"{pad(row['name'], 12)} {pad(row['url'], 40)} {row['host_key']}"))


@remote.command("remove", help=_(
    "Forget a host (refused while a data set uses it). Example: cloudshare remote remove firm"))
@click.argument("name")
@click.pass_context
def remote_remove(ctx: click.Context, name: str) -> None:
    """Forget a host (refused while a data set uses it). Example: cloudshare remote remove firm"""
    emit(service_of(ctx).remote_remove(name), False)


@main.command(help=_("The area selection screen: every area on a host, its data and its lock.\n\n"
                     "Example: cloudshare areas firm --json"))
@click.argument("remote_name", metavar="REMOTE")
@json_option
@click.pass_context
def areas(ctx: click.Context, remote_name: str, as_json: bool) -> None:
    """The area selection screen: every area on a host, its data and its lock.

    Example: cloudshare areas firm --json
    """
    rows = service_of(ctx).areas(remote_name)
    if json_out(rows, as_json):
        return
    if not rows:
        click.echo(_("no areas on this host yet"))
        return
    heads = (_("AREA"), _("DATA"), _("NEWEST VERSION"), _("LOCK"))
    click.echo(f"{pad(heads[0], 20)} {pad(heads[1], 24)} {pad(heads[2], 50)} {heads[3]}")
    for row in rows:
        lock = row["lock"] or {}
        held = _("locked by {who} since {since} until {until}").format(
            who=lock["holder"], since=iso_local(lock["since"]), until=iso_local(lock["until"])) \
            if lock.get("state") == "locked" else _("free")
        newest = _("v{version} {size} by {writer} at {time}").format(
            version=row["version"], size=human_size(row["size"]), writer=row["last_writer"],
            time=iso_local(row["last_time"])) if row["version"] else _("no version yet")
        click.echo(safe_text(f"{pad(row['area'], 20)} {pad(row['dataset'] or '?', 24)} {pad(newest, 50)} "
                             f"{held}"))
        if row["problem"]:
            click.echo(safe_text(f"{pad('', 20)} " + _("problem: {problem}").format(problem=row["problem"])))
