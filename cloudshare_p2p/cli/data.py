"""The data sets on this computer: `add`, `status`, `history`, `forget`, and `whoami`."""

from __future__ import annotations

from pathlib import Path

import click

from ..display import human_size
from ..i18n import _, pad
from .options import json_option
from .output import can_show, emit, iso_local, json_out, safe_text, state_words
from .root import main
from .session import service_of, working


@main.command(help=_("Register local data (a file or a folder); it starts unshared.\n\n"
                     "Example: cloudshare add books ~/accounting/books.db"))
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
def add(ctx: click.Context, name: str, path: Path) -> None:
    """Register local data (a file or a folder); it starts unshared.

    Example: cloudshare add books ~/accounting/books.db
    """
    emit(service_of(ctx).add(name, path), False)


@main.command(help=_("The data list: state, host/area, local version, lock holder (☁ = shared).\n\n"
                     "Without --refresh it shows what this computer last saw, without going online.\n"
                     "Example: cloudshare status --refresh --json"))
@click.argument("name", required=False)
@click.option("--refresh", is_flag=True,
              help=_("Ask the hosts who holds each lock now (else: as last seen)."))
@json_option
@click.pass_context
def status(ctx: click.Context, name: str | None, refresh: bool, as_json: bool) -> None:
    """The data list: state, host/area, local version, lock holder (☁ = shared).

    Without --refresh it shows what this computer last saw, without going online.
    Example: cloudshare status --refresh --json
    """
    service = service_of(ctx)
    rows = service.status(name, refresh)
    if json_out(rows, as_json):
        return
    if not rows:
        click.echo(_("no data sets yet: `cloudshare add NAME PATH` or `cloudshare join`"))
    for row in rows:
        mark = ("☁" if can_show("☁") else "*") if row["shared"] else " "
        where = f"{row['remote']}/{row['area']}" if row["remote"] else "-"
        holder = (" " + _("held by {holder}").format(holder=row["lock_holder"])) if row["lock_holder"] else ""
        version = f"v{row['version']}" if row["version"] is not None else "-"
        newer = (" " + _("(host has v{version})").format(version=row["host_version"])) \
            if row.get("host_version") not in (None, row["version"]) else ""
        state = state_words(row)
        click.echo(safe_text(f"{mark} {pad(row['name'], 16)} {pad(state, 16)} {pad(where, 28)} "
                             f"{pad(version, 6)}{holder}{newer}{_cache_words(row)}"))
        if row.get("problem"):
            click.echo(safe_text(f"  {pad('', 16)} " + _("problem: {problem}").format(
                problem=row["problem"])))
    if rows:
        _echo_cache_total(service.cache_summary())


def _cache_words(row: dict) -> str:
    """" (cache 1.2 MB)" after a data set whose area has a cache here; else nothing."""
    size = row.get("cache_bytes")
    return "  " + _("(cache {size})").format(size=human_size(size)) if size else ""


def _echo_cache_total(summary: dict) -> None:
    """The line under the list: how much the whole cache holds, of how much, and where."""
    click.echo(safe_text(_("cache on this computer: {size} of at most {cap}, in {path}").format(
        size=human_size(summary["bytes"]), cap=human_size(summary["cap"]), path=summary["path"])))


@main.command(help=_("Forget the key and login remembered for NAME on this computer.\n\n"
                     "An unshared registration (a failed join, say) is removed too; the data is never "
                     "touched.\nExample: cloudshare forget books"))
@click.argument("name")
@click.pass_context
def forget(ctx: click.Context, name: str) -> None:
    """Forget the key and login remembered for NAME on this computer.

    An unshared registration (a failed join, say) is removed too; the data is never touched.
    Example: cloudshare forget books
    """
    with working(ctx, name):
        emit(service_of(ctx).forget(name), False)


@main.command(help=_("Every version of the data set, with writer, time and size.\n\n"
                     "Example: cloudshare history books --json"))
@click.argument("name")
@json_option
@click.pass_context
def history(ctx: click.Context, name: str, as_json: bool) -> None:
    """Every version of the data set, with writer, time and size.

    Example: cloudshare history books --json
    """
    rows = service_of(ctx).history(name)
    if json_out(rows, as_json):
        return
    if rows:
        heads = (_("VERSION"), _("TIME"), _("BY"), _("SIZE"), _("NOTE"))
        click.echo(f"{pad(heads[0], 7)} {pad(heads[1], 24)} {pad(heads[2], 24)} {pad(heads[3], 10)} "
                   f"{heads[4]}")
    for row in rows:
        restored = (" " + _("(restored from v{version})").format(version=row["restored_from"])) \
            if row["restored_from"] else ""
        size = human_size(row["size"])
        note = row.get("note") or ""
        pruned = (" " + _("(pruned)")) if row.get("pruned") else ""
        click.echo(safe_text(f"{pad('v' + str(row['version']), 7)} {pad(iso_local(row['time']), 24)} "
                             f"{pad(row['writer'] or '?', 24)} {pad(size, 10)} {note}{restored}{pruned}"))


@main.command(help=_("The name others see while you hold a lock, and this install's id.\n\n"
                     "CLOUDSHARE_NAME overrides the name for one command.\n"
                     "Example: cloudshare whoami --set \"Sato (firm)\""))
@click.option("--set", "new_name", metavar="NAME", help=_("Set the name the others see."))
@json_option
@click.pass_context
def whoami(ctx: click.Context, new_name: str | None, as_json: bool) -> None:
    """The name others see while you hold a lock, and this install's id.

    CLOUDSHARE_NAME overrides the name for one command.
    Example: cloudshare whoami --set "Sato (firm)"
    """
    from ..service import Outcome

    service = service_of(ctx)
    if new_name:
        service.registry.set_display_name(new_name)
        service.party = type(service.party)(new_name, service.party.install, service.party.host)
    data = {"name": service.party.name, "install_id": service.party.install, "home": str(service.home)}
    emit(Outcome(_("{name} (install {install_id}, home {home})").format(**data), data), as_json)
