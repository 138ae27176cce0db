"""The `cloudshare` group: every error to one plain line and its exit code, nothing else.

No traceback reaches the user: library errors map to their documented exit codes, an unexpected
exception goes to the internal-error log (exit 70), and background threads log instead of printing.
The console never crashes on a character it cannot show.
"""

from __future__ import annotations

import sys
from contextlib import suppress as _suppress
from pathlib import Path
from typing import Any

import click

from statemachine import StateMachineError

from .. import errors
from ..errors import ExitCode
from ..i18n import N_, _
from .output import STATE_WORDS, safe_text

#: English (the source language); `--help` shows them translated.
EXIT_MEANINGS = {
    ExitCode.OK: N_("done"),
    ExitCode.ERROR: N_("other error"),
    ExitCode.USAGE: N_("usage error"),
    ExitCode.LOCKED: N_("locked by another party"),
    ExitCode.AREA_GONE: N_("the area's data is gone from the host (deleted)"),
    ExitCode.ID_UNUSABLE: N_("the communication ID cannot be used (login refused)"),
    ExitCode.CONFLICT: N_("conflict: your changes were kept aside, nothing overwritten"),
    ExitCode.WRONG_PASSWORD: N_("wrong share password"),
    ExitCode.HOST_KEY: N_("host key unknown or changed"),
    ExitCode.UNREACHABLE: N_("host unreachable (network down or timed out)"),
    ExitCode.LOCAL_DISK: N_("the local disk refused a write (full, read-only, name too long, file in use)"),
    ExitCode.AREA_DAMAGED: N_("the share area is damaged or uses an unknown format"),
    ExitCode.INTERNAL: N_("internal error (details in the log file named)"),
    ExitCode.CANNOT_EXECUTE: N_("run: the program cannot be executed"),
    ExitCode.NOT_FOUND: N_("run: the program was not found"),
    ExitCode.INTERRUPTED: N_("interrupted (Ctrl-C); what was left is said"),
}


def exit_codes_help() -> str:
    """The `Exit codes:` block of `cloudshare --help`, in the user's language."""
    return "\b\n" + _("Exit codes:") + "\n" + "\n".join(
        f"  {c.value}  {_(m)}" for c, m in EXIT_MEANINGS.items())


EXIT_CODES_HELP = exit_codes_help()


class CommandError(click.ClickException):
    """A library error on its way out, with its own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click declares exit_code as a class variable; ours differs per error
        self.exit_code = exit_code  # type: ignore[misc]


class CloudShareGroup(click.Group):
    """Turns every error into one plain `Error: …` on stderr and the documented exit code.

    No traceback ever reaches the user: an unexpected exception is written to a log file
    in the home, and the message names that file (exit 70).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except errors.CloudShareError as exc:
            raise CommandError(safe_text(exc.user_message()), int(exc.exit_code)) from None
        except StateMachineError as exc:
            raise CommandError(_state_refusal(exc), int(ExitCode.ERROR)) from None
        except KeyboardInterrupt:
            raise CommandError(_("interrupted"), int(ExitCode.INTERRUPTED)) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            local = _local_disk_error(exc)
            if local is not None:
                raise CommandError(local.user_message(), int(local.exit_code)) from None
            log = _log_internal_error(ctx, exc)
            raise CommandError(_("an internal error happened ({kind}); details were written to {log}\n"
                                 "  next: try again; if it happens again, send that file to your support"
                                 ).format(kind=type(exc).__name__, log=log), int(ExitCode.INTERNAL)) from None


def _state_refusal(exc: StateMachineError) -> str:
    """A state-machine refusal in plain words (internal event names never reach a user)."""
    state = getattr(exc, "state", None)
    value = str(getattr(state, "value", state))
    text = (_("that cannot be done now while it is {state}").format(state=_(STATE_WORDS.get(value, value)))
            if state else _("that cannot be done now"))
    return _("{message}\n  next: see `cloudshare status` for the data set's state, then open, close or "
             "leave it as shown there").format(message=text)


def _local_disk_error(exc: BaseException) -> errors.CloudShareError | None:
    """A full or read-only disk (also under the registry's SQLite) as a clear local error."""
    import errno
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError) and any(
            word in str(exc) for word in ("full", "readonly", "read-only", "unable to open", "disk I/O")):
        return errors.LocalDiskError(_("the local registry could not be written: {error}").format(error=exc))
    known = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EDQUOT}
    if isinstance(exc, OSError) and exc.errno in known:
        if exc.filename:
            return errors.LocalDiskError(_("a local write failed: {reason} ({path})").format(
                reason=exc.strerror, path=exc.filename))
        return errors.LocalDiskError(_("a local write failed: {reason}").format(reason=exc.strerror))
    return None


def _log_internal_error(ctx: click.Context, exc: BaseException) -> Path:
    """Write the traceback to the home's log folder (or the temp folder); return the file."""
    return write_error_log((ctx.find_root().obj or {}).get("home"), exc)


def write_error_log(home: Path | str | None, exc: BaseException, where: str = "") -> Path:
    """Append `exc` with its traceback to HOME/logs/cloudshare-errors.log (else the temp folder)."""
    import tempfile
    import time
    import traceback

    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} cloudshare {' '.join(sys.argv[1:2])} {where}\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    for folder in ([Path(home) / "logs"] if home else []) + [Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "cloudshare-errors.log"
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")
            return path
        except OSError:
            continue
    return Path(_("(no log could be written)"))


def _suppress_errors() -> Any:
    return _suppress(ValueError, OSError, AttributeError)


def tolerant_streams() -> None:
    """Never crash on a character the console cannot show: it degrades to '?'."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with _suppress_errors():
                reconfigure(errors="replace")


def quiet_threads(home: Path) -> None:
    """A background thread's error never prints a traceback on the terminal.

    A thread that moves data (paramiko's own, the upload and sealing threads) may die with
    "Socket is closed" when the line is cut; the command itself reports the failure in plain
    words (exit 9), and the details go to the log file.
    """
    import threading

    def to_the_log(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            with _suppress(Exception):
                write_error_log(home, args.exc_value, f"(thread {getattr(args.thread, 'name', '?')})")

    threading.excepthook = to_the_log


def spare_invoke() -> None:
    """Keep paramiko from importing `invoke` (with unittest.mock and asyncio: about 0.1 s per
    command). paramiko needs it only for `Match exec` in ssh_config files, which cloudshare
    never reads; a process that already imported it keeps it."""
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
