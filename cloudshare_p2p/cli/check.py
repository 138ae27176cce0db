"""`check`: verify an area on the host and report what each problem affects."""

from __future__ import annotations

import click

from ..i18n import _
from .options import json_option
from .output import json_out, safe_text
from .root import main
from .session import service_of


@main.command(help=_("Verify an area on the host: config, lock, log, manifests and chunks.\n\n"
                     "Each problem names the versions it affects; a damaged area exits 11. Uses the\n"
                     "share password (or the key remembered here) unless --structure is given.\n"
                     "Example: cloudshare check firm yamada-books --read-data"))
@click.argument("remote_name", metavar="REMOTE")
@click.argument("area")
@click.option("--read-data", is_flag=True, help=_("Also download, decrypt and verify every chunk."))
@click.option("--structure", is_flag=True,
              help=_("Check only what needs no share password (manifests and chunks are not opened)."))
@json_option
@click.pass_context
def check(ctx: click.Context, remote_name: str, area: str, read_data: bool, structure: bool,
          as_json: bool) -> None:
    """Verify an area on the host: config, lock, log, manifests and chunks.

    Each problem names the versions it affects; a damaged area exits 11. Uses the share
    password (or the key remembered here) unless --structure is given.
    Example: cloudshare check firm yamada-books --read-data
    """
    from ..check import render_text

    if read_data and structure:
        raise click.UsageError(_("--read-data needs the share password; leave out --structure"))
    report = service_of(ctx).check_area(remote_name, area, read_data, structure)
    if not json_out(report.as_json(), as_json):
        click.echo(safe_text(render_text(report)))
    ctx.exit(int(report.exit_code))
