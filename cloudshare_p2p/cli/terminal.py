"""The person at the terminal: passwords, confirmations and progress bars (all on stderr).

Without a terminal nothing is asked: the environment variables or options answer, or the
command says what is needed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import errors
from ..i18n import _
from .output import safe_text


def is_tty(stream: Any) -> bool:
    """Is `stream` a terminal (a person who can be asked)?"""
    return bool(getattr(stream, "isatty", lambda: False)())


def ask_share_password(purpose: str, confirm: bool) -> str:
    """The share password: CLOUDSHARE_PASSWORD, else asked at the terminal."""
    value = os.environ.get("CLOUDSHARE_PASSWORD")
    if value:
        return value
    if not is_tty(sys.stdin):
        raise errors.InputNeeded(_("the {purpose} is needed").format(purpose=purpose),
                                     hint=_("type it at a terminal, or set CLOUDSHARE_PASSWORD for scripts"))
    return click.prompt(purpose[:1].upper() + purpose[1:], hide_input=True, confirmation_prompt=confirm,
                        err=True)


def ask_ssh_password() -> str | None:
    """The communication ID's login password: CLOUDSHARE_SSH_PASSWORD, else asked, else None."""
    value = os.environ.get("CLOUDSHARE_SSH_PASSWORD")
    if value:
        return value
    if not is_tty(sys.stdin):
        return None
    return click.prompt(_("Login password of the communication ID"), hide_input=True, err=True)


def confirm(question: str) -> bool:
    """Ask yes/no at the terminal; without one, say which option answers and refuse."""
    if not is_tty(sys.stdin):
        option = answer_option()
        text = (_("{question} (no terminal to ask: pass {option})").format(question=question, option=option)
                if option else _("{question} (no terminal to ask)").format(question=question))
        click.echo(safe_text(text), err=True)
        return False
    return click.confirm(safe_text(question), err=True)


def answer_option() -> str | None:
    """The option of the running command that answers its question without a terminal."""
    ctx = click.get_current_context(silent=True)
    names = {p.name for p in ctx.command.params} if ctx else set()
    for name, option in (("accept_host_key", "--accept-host-key"), ("yes", "--yes")):
        if name in names:
            return option
    return None


PROGRESS_AFTER = 1.0  # seconds: shorter transfers show no bar


def progress_bar(label: str, total: int) -> Callable[[int], None] | None:
    """A `click.progressbar` on stderr, only on a terminal and only for transfers over a second."""
    if not is_tty(sys.stderr) or total <= 0:
        return None
    import time

    started, done = time.monotonic(), [0]
    bar: list[Any] = []

    def advance(n: int) -> None:
        done[0] += n
        if not bar and time.monotonic() - started >= PROGRESS_AFTER and done[0] < total:
            bar.append(click.progressbar(length=total, label=label, file=sys.stderr, show_pos=False))
            bar[0].__enter__()
            bar[0].update(done[0] - n)
        if bar:
            bar[0].update(n)
            if done[0] >= total:
                bar[0].__exit__(None, None, None)
                bar.clear()

    return advance
