"""The `cloudshare` root group and its global options; the commands register on `main`.

Help texts are given as `help=_()` (a docstring cannot be translated); the docstrings stay for
developers and say the same.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..hostcli import host
from ..i18n import _
from .group import EXIT_CODES_HELP, CloudShareGroup, quiet_threads, spare_invoke, tolerant_streams
from .options import set_lang


@click.group(cls=CloudShareGroup, epilog=EXIT_CODES_HELP, help=_(
    "Share one accounting data set through an SFTP host.\n\n"
    "Opening data receives the newest version and takes an exclusive lock; closing sends\n"
    "it and releases the lock. Others see who holds it.\n\n"
    "\b\nTypical use:\n"
    "  cloudshare remote add firm sftp://yamada@files.example.jp --identity ~/.ssh/id_ed25519\n"
    "  cloudshare join books ~/books.db --remote firm --area yamada-books\n"
    "  cloudshare run books -- accounting-app ~/books.db"))
@click.version_option(__version__, prog_name="cloudshare")
@click.option("--lang", metavar="LANG", expose_value=False, is_eager=True, callback=set_lang,
              help=_("Language of messages and help: en or ja (default: CLOUDSHARE_LANG, then the "
                     "computer's language) [env CLOUDSHARE_LANG]."))
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="CLOUDSHARE_HOME",
              help=_("Folder of the local registry and pinned host keys [env CLOUDSHARE_HOME]."))
@click.option("--no-remember", is_flag=True,
              help=_("Remember no key or login on this computer (shared computers) "
                     "[env CLOUDSHARE_REMEMBER=0]."))
@click.option("--remember-login", is_flag=True,
              help=_("Remember a login password typed now, without asking."))
@click.pass_context
def main(ctx: click.Context, home: Path | None, no_remember: bool, remember_login: bool) -> None:
    """Share one accounting data set through an SFTP host.

    Opening data receives the newest version and takes an exclusive lock; closing sends
    it and releases the lock. Others see who holds it.

    \b
    Typical use:
      cloudshare remote add firm sftp://yamada@files.example.jp --identity ~/.ssh/id_ed25519
      cloudshare join books ~/books.db --remote firm --area yamada-books
      cloudshare run books -- accounting-app ~/books.db
    """
    from ..malloc import tune
    from ..registry import default_home

    tune()  # before any thread: freed transfer buffers go back to the system (malloc.py)
    tolerant_streams()
    spare_invoke()
    obj = ctx.ensure_object(dict)
    obj.update(home=home or default_home(), remember=False if no_remember else None,
               remember_login=True if remember_login else None)
    quiet_threads(obj["home"])


main.add_command(host)
