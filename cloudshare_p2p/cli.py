"""The `cloudshare` command line: parse, call the library, print, map errors to exit codes."""

from __future__ import annotations

import click

from . import __version__
from .errors import ExitCode

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code.value}  {code.name.lower().replace('_', ' ')}" for code in ExitCode
)


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="cloudshare")
def main() -> None:
    """Share one accounting data set through an SFTP host.

    Opening data receives the newest version and takes an exclusive lock; closing sends
    it and releases the lock. Others see who holds it.
    """


@main.command()
def diagram() -> None:
    """Print the data-set state diagram (Mermaid), generated from the state machine.

    Example: cloudshare diagram > diagrams/state-machine.mmd
    """
    from statemachine.diagram import mermaid

    click.echo(mermaid(), nl=False)
