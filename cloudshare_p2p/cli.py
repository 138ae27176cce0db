"""The `cloudshare` command line: parse, call `service`, print, map errors to exit codes.

Data goes to stdout (tables, `--json`); messages, prompts and progress go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextlib import suppress as _suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from statemachine import StateMachineError

from . import __version__, errors
from .display import human_size
from .durations import parse_duration
from .errors import ExitCode
from .hostcli import host
from .i18n import N_, _, pad, setup_language
from .settings import DEFAULT_LEASE, DEFAULT_RUN_LEASE, Until

if TYPE_CHECKING:
    from .service import Outcome, Service

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


def safe_text(text: str) -> str:
    """Escape control characters (but keep line breaks) before anything reaches a terminal."""
    from .textsafe import printable

    return "\n".join(printable(line) for line in str(text).split("\n"))


# --- the person at the terminal -----------------------------------------------------------


def _tty(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _share_password(purpose: str, confirm: bool) -> str:
    value = os.environ.get("CLOUDSHARE_PASSWORD")
    if value:
        return value
    if not _tty(sys.stdin):
        raise errors.InputNeeded(_("the {purpose} is needed").format(purpose=purpose),
                                     hint=_("type it at a terminal, or set CLOUDSHARE_PASSWORD for scripts"))
    return click.prompt(purpose[:1].upper() + purpose[1:], hide_input=True, confirmation_prompt=confirm,
                        err=True)


def _ssh_password() -> str | None:
    value = os.environ.get("CLOUDSHARE_SSH_PASSWORD")
    if value:
        return value
    if not _tty(sys.stdin):
        return None
    return click.prompt(_("Login password of the communication ID"), hide_input=True, err=True)


def _confirm(question: str) -> bool:
    if not _tty(sys.stdin):
        option = _answer_option()
        text = (_("{question} (no terminal to ask: pass {option})").format(question=question, option=option)
                if option else _("{question} (no terminal to ask)").format(question=question))
        click.echo(safe_text(text), err=True)
        return False
    return click.confirm(safe_text(question), err=True)


def _answer_option() -> str | None:
    """The option of the running command that answers its question without a terminal."""
    ctx = click.get_current_context(silent=True)
    names = {p.name for p in ctx.command.params} if ctx else set()
    for name, option in (("accept_host_key", "--accept-host-key"), ("yes", "--yes")):
        if name in names:
            return option
    return None


def _say(text: str) -> None:
    click.echo(safe_text(text), err=True)


PROGRESS_AFTER = 1.0  # seconds: shorter transfers show no bar


def _progress(label: str, total: int) -> Callable[[int], None] | None:
    """A `click.progressbar` on stderr, only on a terminal and only for transfers over a second."""
    if not _tty(sys.stderr) or total <= 0:
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


def _service(ctx: click.Context) -> Service:
    from .service import UI, Service  # paramiko and friends load only when needed

    obj = ctx.ensure_object(dict)
    if "service" not in obj:
        ui = UI(share_password=_share_password, ssh_password=_ssh_password, confirm=_confirm,
                say=_say, progress=_progress)
        obj["service"] = Service(obj["home"], ui, remember=obj.get("remember"),
                                 remember_login=obj.get("remember_login"))
        ctx.call_on_close(obj["service"].shutdown)
    return obj["service"]


def _json_out(data: Any, as_json: bool) -> bool:
    """Print `data` as the stable `--json` form when asked (UTF-8 text, not `\\u` escapes)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    return as_json


def _can_show(text: str, stream: Any = None) -> bool:
    """Can the console encode `text`? (Windows consoles and redirections may be cp932.)"""
    encoding = getattr(stream or sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _suppress_errors() -> Any:
    return _suppress(ValueError, OSError, AttributeError)


def _tolerant_streams() -> None:
    """Never crash on a character the console cannot show: it degrades to '?'."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with _suppress_errors():
                reconfigure(errors="replace")


def _emit(outcome: Outcome, as_json: bool) -> None:
    if not _json_out(outcome.data, as_json):
        click.echo(safe_text(outcome.message))


@contextmanager
def _working(ctx: click.Context, name: str) -> Iterator[None]:
    """One cloudshare command at a time on a data set (`errors.Busy`, exit 3, after a short wait)."""
    from .worklock import working_on

    with working_on(ctx.find_root().obj["home"], name):
        yield


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _note(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from .textsafe import note_problem

    problem = note_problem(value or "")
    if problem:
        raise click.BadParameter(_("{problem}; write a shorter note (about one line)").format(
            problem=problem))
    return value or ""


json_option = click.option("--json", "as_json", is_flag=True,
                           help=_("Machine-readable output (stable keys, always English)."))
yes_option = click.option("--yes", "-y", is_flag=True, help=_("Do not ask for confirmation."))


def _set_lang(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--lang` (read from the command line before the commands were built; set again here)."""
    if value:
        setup_language(value)


# --- the commands ---------------------------------------------------------------------------------
# Help texts are given as `help=_()` (a docstring cannot be translated); the docstrings stay for
# developers and say the same.


@click.group(cls=CloudShareGroup, epilog=EXIT_CODES_HELP, help=_(
    "Share one accounting data set through an SFTP host.\n\n"
    "Opening data receives the newest version and takes an exclusive lock; closing sends\n"
    "it and releases the lock. Others see who holds it.\n\n"
    "\b\nTypical use:\n"
    "  cloudshare remote add firm sftp://yamada@files.example.jp --identity ~/.ssh/id_ed25519\n"
    "  cloudshare join books ~/books.db --remote firm --area yamada-books\n"
    "  cloudshare run books -- accounting-app ~/books.db"))
@click.version_option(__version__, prog_name="cloudshare")
@click.option("--lang", metavar="LANG", expose_value=False, is_eager=True, callback=_set_lang,
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
    from .registry import default_home

    _tolerant_streams()
    obj = ctx.ensure_object(dict)
    obj.update(home=home or default_home(), remember=False if no_remember else None,
               remember_login=True if remember_login else None)
    quiet_threads(obj["home"])


def quiet_threads(home: Path) -> None:
    """A background thread's error never prints a traceback on the terminal.

    paramiko's prefetch thread dies with "Socket is closed" when the line is cut; the command
    itself reports the failure in plain words (exit 9), and the details go to the log file.
    """
    import threading

    def to_the_log(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            with _suppress(Exception):
                write_error_log(home, args.exc_value, f"(thread {getattr(args.thread, 'name', '?')})")

    threading.excepthook = to_the_log


main.add_command(host)


@main.command(help=_("Print the data-set state diagram (Mermaid), generated from the state machine.\n\n"
                     "Example: cloudshare diagram > diagrams/state-machine.mmd"))
def diagram() -> None:
    """Print the data-set state diagram (Mermaid), generated from the state machine.

    Example: cloudshare diagram > diagrams/state-machine.mmd
    """
    from statemachine.diagram import mermaid

    click.echo(mermaid(), nl=False)


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
    _emit(_service(ctx).remote_add(name, url, identity, accept_host_key), False)


@remote.command("list", help=_("List the hosts. Example: cloudshare remote list --json"))
@json_option
@click.pass_context
def remote_list(ctx: click.Context, as_json: bool) -> None:
    """List the hosts. Example: cloudshare remote list --json"""
    rows = _service(ctx).remote_list()
    if _json_out(rows, as_json):
        return
    for row in rows:
        click.echo(safe_text(f"{pad(row['name'], 12)} {pad(row['url'], 40)} {row['host_key']}"))


@remote.command("remove", help=_(
    "Forget a host (refused while a data set uses it). Example: cloudshare remote remove firm"))
@click.argument("name")
@click.pass_context
def remote_remove(ctx: click.Context, name: str) -> None:
    """Forget a host (refused while a data set uses it). Example: cloudshare remote remove firm"""
    _emit(_service(ctx).remote_remove(name), False)


@main.command(help=_("The area selection screen: every area on a host, its data and its lock.\n\n"
                     "Example: cloudshare areas firm --json"))
@click.argument("remote_name", metavar="REMOTE")
@json_option
@click.pass_context
def areas(ctx: click.Context, remote_name: str, as_json: bool) -> None:
    """The area selection screen: every area on a host, its data and its lock.

    Example: cloudshare areas firm --json
    """
    rows = _service(ctx).areas(remote_name)
    if _json_out(rows, as_json):
        return
    if not rows:
        click.echo(_("no areas on this host yet"))
        return
    heads = (_("AREA"), _("DATA"), _("NEWEST VERSION"), _("LOCK"))
    click.echo(f"{pad(heads[0], 20)} {pad(heads[1], 24)} {pad(heads[2], 50)} {heads[3]}")
    for row in rows:
        lock = row["lock"] or {}
        held = _("locked by {who} since {since} until {until}").format(
            who=lock["holder"], since=_local(lock["since"]), until=_local(lock["until"])) \
            if lock.get("state") == "locked" else _("free")
        newest = _("v{version} {size} by {writer} at {time}").format(
            version=row["version"], size=human_size(row["size"]), writer=row["last_writer"],
            time=_local(row["last_time"])) if row["version"] else _("no version yet")
        click.echo(safe_text(f"{pad(row['area'], 20)} {pad(row['dataset'] or '?', 24)} {pad(newest, 50)} "
                             f"{held}"))
        if row["problem"]:
            click.echo(safe_text(f"{pad('', 20)} " + _("problem: {problem}").format(problem=row["problem"])))


@main.command(help=_("Register local data (a file or a folder); it starts unshared.\n\n"
                     "Example: cloudshare add books ~/accounting/books.db"))
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
def add(ctx: click.Context, name: str, path: Path) -> None:
    """Register local data (a file or a folder); it starts unshared.

    Example: cloudshare add books ~/accounting/books.db
    """
    _emit(_service(ctx).add(name, path), False)


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
    with _working(ctx, name):
        _emit(_service(ctx).share(name, path, remote_name, area, yes), as_json)


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
    with _working(ctx, name):
        _emit(_service(ctx).join(name, path, remote_name, area), as_json)


@main.command("open", help=_("Receive the newest version and take the lock.\n\n"
                             "Locked by another: says who, since when and until when, and exits 3.\n"
                             "Example: cloudshare open books --note \"closing March\" --wait 10m"))
@click.argument("name")
@click.option("--lease", default=None, callback=_duration, metavar="DURATION",
              help=_("How long the lock holds without renewal (e.g. 90s, 30m, 8h, 1h30m; at most 7d) "
                     "[default {hours}h].").format(hours=DEFAULT_LEASE // 3600))
@click.option("--note", default="", callback=_note,
              help=_("A note the others see while you hold the lock (at most 1 KiB)."))
@click.option("--wait", default=None, is_flag=False, flag_value="0", metavar="[DURATION]",
              help=_("Wait while another holds the lock (alone: until their lease runs out)."))
@click.option("--read-only", is_flag=True, help=_("Receive the newest version without the lock."))
@json_option
@click.pass_context
def open_(ctx: click.Context, name: str, lease: int | None, note: str, wait: str | None, read_only: bool,
          as_json: bool) -> None:
    """Receive the newest version and take the lock.

    Locked by another: says who, since when and until when, and exits 3.
    Example: cloudshare open books --note "closing March" --wait 10m
    """
    with _working(ctx, name):
        _emit(_service(ctx).open(name, lease or DEFAULT_LEASE, note, _wait(wait), read_only), as_json)


def _wait(value: str | None) -> float | Until | None:
    """`--wait DURATION` in seconds; `--wait` alone (or a zero duration): until the holder's lease ends."""
    if value is None:
        return None
    if value == "0":
        return Until.LEASE_ENDS
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--wait") from None
    return float(seconds) if seconds else Until.LEASE_ENDS


@main.command(help=_("Send the new version and release the lock.\n\n"
                     "If your lease ran out and someone else took the lock, your work is kept aside "
                     "(exit 6).\nExample: cloudshare close books"))
@click.argument("name")
@click.option("--note", default="", callback=_note,
              help=_("A note recorded with the new version (at most 1 KiB)."))
@json_option
@click.pass_context
def close(ctx: click.Context, name: str, note: str, as_json: bool) -> None:
    """Send the new version and release the lock.

    If your lease ran out and someone else took the lock, your work is kept aside (exit 6).
    Example: cloudshare close books
    """
    with _working(ctx, name):
        _emit(_service(ctx).close(name, note), as_json)


@main.command(context_settings={"ignore_unknown_options": True}, help=_(
    "Open, run a program (renewing the lock), close when it exits.\n\n"
    "The program's exit status is passed on.\n"
    "Example: cloudshare run books -- accounting-app ~/books.db"))
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--lease", default=None, callback=_duration, metavar="DURATION",
              help=_("Lease, renewed at a third while the program runs (at most 7d) "
                     "[default {seconds}s].").format(seconds=DEFAULT_RUN_LEASE))
@click.option("--note", default="", callback=_note,
              help=_("A note the others see while the program runs (at most 1 KiB)."))
@click.option("--wait", default=None, is_flag=False, flag_value="0", metavar="[DURATION]",
              help=_("Wait while another holds the lock."))
@click.pass_context
def run(ctx: click.Context, name: str, command: tuple[str, ...], lease: int | None, note: str,
        wait: str | None) -> None:
    """Open, run a program (renewing the lock), close when it exits.

    The program's exit status is passed on.
    Example: cloudshare run books -- accounting-app ~/books.db
    """
    with _working(ctx, name):
        status = _service(ctx).run(name, command, lease or DEFAULT_RUN_LEASE, note, _wait(wait))
    ctx.exit(status)


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
    rows = _service(ctx).status(name, refresh)
    if _json_out(rows, as_json):
        return
    if not rows:
        click.echo(_("no data sets yet: `cloudshare add NAME PATH` or `cloudshare join`"))
    for row in rows:
        mark = ("☁" if _can_show("☁") else "*") if row["shared"] else " "
        where = f"{row['remote']}/{row['area']}" if row["remote"] else "-"
        holder = (" " + _("held by {holder}").format(holder=row["lock_holder"])) if row["lock_holder"] else ""
        version = f"v{row['version']}" if row["version"] is not None else "-"
        newer = (" " + _("(host has v{version})").format(version=row["host_version"])) \
            if row.get("host_version") not in (None, row["version"]) else ""
        state = _state_words(row)
        click.echo(safe_text(f"{mark} {pad(row['name'], 16)} {pad(state, 16)} {pad(where, 28)} "
                             f"{pad(version, 6)}{holder}{newer}"))
        if row.get("problem"):
            click.echo(safe_text(f"  {pad('', 16)} " + _("problem: {problem}").format(
                problem=row["problem"])))


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
    with _working(ctx, name):
        _emit(_service(ctx).forget(name), False)


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
    with _working(ctx, name):
        _emit(_service(ctx).leave(name, yes), False)


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
    _emit(_service(ctx).delete_area(remote_name, area, yes), False)


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
    from .check import render_text

    if read_data and structure:
        raise click.UsageError(_("--read-data needs the share password; leave out --structure"))
    report = _service(ctx).check_area(remote_name, area, read_data, structure)
    if not _json_out(report.as_json(), as_json):
        click.echo(safe_text(render_text(report)))
    ctx.exit(int(report.exit_code))


@main.command(help=_("Break another party's lock (needs the share password; recorded in the area).\n\n"
                     "Example: cloudshare unlock books --force"))
@click.argument("name")
@click.option("--force", is_flag=True, required=True, help=_("Really break another party's lock."))
@click.pass_context
def unlock(ctx: click.Context, name: str, force: bool) -> None:
    """Break another party's lock (needs the share password; recorded in the area).

    Example: cloudshare unlock books --force
    """
    with _working(ctx, name):
        _emit(_service(ctx).break_lock(name), False)


@main.command(help=_("Every version of the data set, with writer, time and size.\n\n"
                     "Example: cloudshare history books --json"))
@click.argument("name")
@json_option
@click.pass_context
def history(ctx: click.Context, name: str, as_json: bool) -> None:
    """Every version of the data set, with writer, time and size.

    Example: cloudshare history books --json
    """
    rows = _service(ctx).history(name)
    if _json_out(rows, as_json):
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
        click.echo(safe_text(f"{pad('v' + str(row['version']), 7)} {pad(_local(row['time']), 24)} "
                             f"{pad(row['writer'] or '?', 24)} {pad(size, 10)} {note}{restored}{pruned}"))


@main.command(help=_("Make an old version the newest again (a new version; nothing is deleted).\n\n"
                     "Example: cloudshare restore books 12"))
@click.argument("name")
@click.argument("version", type=int)
@json_option
@click.pass_context
def restore(ctx: click.Context, name: str, version: int, as_json: bool) -> None:
    """Make an old version the newest again (a new version; nothing is deleted).

    Example: cloudshare restore books 12
    """
    with _working(ctx, name):
        _emit(_service(ctx).restore(name, version), as_json)


@main.command(help=_("Show the area's retention policy; with any option, change it (needs the password).\n\n"
                     "A version is kept if any rule keeps it; the newest always is.\n"
                     "Example: cloudshare keep books --last 30 --daily 90 --monthly 84"))
@click.argument("name")
@click.option("--last", type=int, default=None, metavar="N", help=_("Keep the last N versions."))
@click.option("--daily", type=int, default=None, metavar="D",
              help=_("Keep the newest version of each of the last D days that have versions."))
@click.option("--monthly", type=int, default=None, metavar="M",
              help=_("Keep the newest version of each of the last M months that have versions."))
@json_option
@click.pass_context
def keep(ctx: click.Context, name: str, last: int | None, daily: int | None, monthly: int | None,
         as_json: bool) -> None:
    """Show the area's retention policy; with any option, change it (needs the password).

    A version is kept if any rule keeps it; the newest always is.
    Example: cloudshare keep books --last 30 --daily 90 --monthly 84
    """
    with _working(ctx, name):
        _emit(_service(ctx).keep(name, last, daily, monthly), as_json)


@main.command(help=_("Remove the versions the retention policy no longer keeps, then their data.\n\n"
                     "Runs under the lock; data written in the last 24 hours is never removed.\n"
                     "Example: cloudshare prune books --dry-run"))
@click.argument("name")
@click.option("--dry-run", is_flag=True, help=_("Only say what would be removed."))
@json_option
@click.pass_context
def prune(ctx: click.Context, name: str, dry_run: bool, as_json: bool) -> None:
    """Remove the versions the retention policy no longer keeps, then their data.

    Runs under the lock; data written in the last 24 hours is never removed.
    Example: cloudshare prune books --dry-run
    """
    with _working(ctx, name):
        _emit(_service(ctx).prune(name, dry_run), as_json)


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
    from .service import Outcome

    service = _service(ctx)
    if new_name:
        service.registry.set_display_name(new_name)
        service.party = type(service.party)(new_name, service.party.install, service.party.host)
    data = {"name": service.party.name, "install_id": service.party.install, "home": str(service.home)}
    _emit(Outcome(_("{name} (install {install_id}, home {home})").format(**data), data), as_json)


@main.command(help=_("Run the whole story on an embedded host in a temporary folder, narrated.\n\n"
                     "Example: cloudshare demo"))
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help=_("Run in this folder and keep it (default: a temporary folder)."))
def demo(keep: Path | None) -> None:
    """Run the whole story on an embedded host in a temporary folder, narrated.

    Example: cloudshare demo
    """
    from .demo import run_demo

    sys.exit(run_demo(keep))


def _local(iso: str | None) -> str:
    """An ISO 8601 UTC time (`…Z`) in this computer's time zone, for people."""
    from datetime import datetime

    if not iso:
        return "?"
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    except ValueError:
        return iso


def _state_words(row: dict[str, Any]) -> str:
    """The state as a person reads it (`--json` keeps the machine's name)."""
    if row["state"] == "area-missing" and row.get("missing_reason") == "id-unusable":
        return _("ID unusable")
    if row["state"] == "area-missing":
        return _("area deleted")
    return _(STATE_WORDS.get(row["state"], row["state"]))


#: The data set states as people read them (the English keeps the machine's names).
STATE_WORDS = {
    "unshared": N_("unshared"),
    "initializing": N_("initializing"),
    "shared-idle": N_("shared-idle"),
    "locked-by-me": N_("locked-by-me"),
    "locked-by-other": N_("locked-by-other"),
    "leaving": N_("leaving"),
    "area-missing": N_("area-missing"),
}


