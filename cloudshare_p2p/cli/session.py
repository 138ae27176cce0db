"""One command's working context: the `Service` it talks to and the per-data-set work lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from .output import say
from .terminal import ask_share_password, ask_ssh_password, confirm, progress_bar

if TYPE_CHECKING:
    from ..service import Service


def service_of(ctx: click.Context) -> Service:
    """The command's `Service`, made once per run with the terminal's UI; shut down on exit."""
    from ..service import UI, Service  # paramiko and friends load only when needed

    obj = ctx.ensure_object(dict)
    if "service" not in obj:
        ui = UI(share_password=ask_share_password, ssh_password=ask_ssh_password, confirm=confirm,
                say=say, progress=progress_bar)
        obj["service"] = Service(obj["home"], ui, remember=obj.get("remember"),
                                 remember_login=obj.get("remember_login"))
        ctx.call_on_close(obj["service"].shutdown)
    return obj["service"]


@contextmanager
def working(ctx: click.Context, name: str) -> Iterator[None]:
    """One cloudshare command at a time on a data set (`errors.Busy`, exit 3, after a short wait)."""
    from ..worklock import working_on

    with working_on(ctx.find_root().obj["home"], name):
        yield
