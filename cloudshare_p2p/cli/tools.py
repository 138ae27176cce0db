"""Commands about the program itself: `diagram` (the state machine) and `demo` (the narrated story)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..i18n import _
from .root import main


@main.command(help=_("Print the data-set state diagram (Mermaid), generated from the state machine.\n\n"
                     "Example: cloudshare diagram > diagrams/state-machine.mmd"))
def diagram() -> None:
    """Print the data-set state diagram (Mermaid), generated from the state machine.

    Example: cloudshare diagram > diagrams/state-machine.mmd
    """
    from statemachine.diagram import mermaid

    click.echo(mermaid(), nl=False)


@main.command(help=_("Run the whole story on an embedded host in a temporary folder, narrated.\n\n"
                     "Example: cloudshare demo"))
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help=_("Run in this folder and keep it (default: a temporary folder)."))
def demo(keep: Path | None) -> None:
    """Run the whole story on an embedded host in a temporary folder, narrated.

    Example: cloudshare demo
    """
    from ..demo import run_demo

    sys.exit(run_demo(keep))
