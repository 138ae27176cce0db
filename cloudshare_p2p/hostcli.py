"""`cloudshare host ...`: run the embedded SFTP host (see docs/hosting.md).

Operator-facing messages and help go through gettext (`_`); the audit log lines that `host/`
writes (key=value, logfmt) stay English on purpose: they are machine-parsed.

`cloudshare_p2p.host` (and with it asyncssh) is imported only inside the commands, so the
client commands of `cloudshare` never load the host's SSH server.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from cloudshare_p2p.errors import CloudShareError, ExitCode
from cloudshare_p2p.i18n import _

PASSWORD_ENV = "CLOUDSHARE_ID_PASSWORD"
#: default of `serve --grace`; equals host.SHUTDOWN_GRACE (checked by the tests)
SHUTDOWN_GRACE = 5.0
#: defaults of the login rate limits; equal host.RateLimits() (checked by the tests)
MAX_FAILURES, FAILURE_WINDOW, PENALTY = 5, 600.0, 30.0
PASSWORD_TRIES = 3  # prompts before giving up when the two answers differ

HOST_DIR = click.argument("host_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))


def _hostlib() -> ModuleType:
    """The host library, imported on first use (it loads asyncssh)."""
    from cloudshare_p2p import host

    return host


class HostCommandError(click.ClickException):
    """An error on its way out of `cloudshare host`, with its documented exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click types it ClassVar, yet reads it per instance


class HostGroup(click.Group):
    """Maps errors to the exit codes of `cloudshare` (cloudshare_p2p.errors.ExitCode)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except CloudShareError as exc:
            raise HostCommandError(exc.user_message(), int(exc.exit_code)) from None
        except (click.Abort, KeyboardInterrupt):
            raise HostCommandError(_("stopped; nothing was changed"), int(ExitCode.INTERRUPTED)) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise HostCommandError(
                _("the local disk refused: {reason}{where}\n"
                  "  next: check the folder's space and permissions, then try again").format(
                    reason=exc.strerror or exc, where=where),
                int(ExitCode.LOCAL_DISK),
            ) from None
        except Exception as exc:
            if os.environ.get("CLOUDSHARE_DEBUG") == "1":
                traceback.print_exc()
            raise HostCommandError(
                _("internal error: {kind}: {error}\n"
                  "  next: run again with CLOUDSHARE_DEBUG=1 and report the output").format(
                    kind=type(exc).__name__, error=exc),
                int(ExitCode.INTERNAL),
            ) from None


def _invalid_id(comm_id: str) -> None:
    """Bad communication ID on the command line: a usage error (exit 2)."""
    try:
        _hostlib().validate_comm_id(comm_id)
    except CloudShareError as exc:
        raise HostCommandError(exc.user_message(), int(ExitCode.USAGE)) from None


def _ask_password(comm_id: str) -> str:
    """The new ID's login password: $CLOUDSHARE_ID_PASSWORD, or asked twice (not shown)."""
    password = os.environ.get(PASSWORD_ENV)
    if password is not None:
        if not password:
            raise click.UsageError(_("${variable} is empty").format(variable=PASSWORD_ENV))
        return password
    hint = _("for a key-only ID, pass --authorized-key KEY.pub --no-password")
    for _try in range(PASSWORD_TRIES):
        first = click.prompt(
            _("login password for {comm_id}").format(comm_id=comm_id), hide_input=True, default="",
            show_default=False, err=True
        )
        if not first:
            raise click.UsageError(_("empty password ({hint})").format(hint=hint))
        again = click.prompt(
            _("the same password again"), hide_input=True, default="", show_default=False, err=True
        )
        if again == first:
            return first
        click.echo(_("the two passwords differ; try again"), err=True)
    raise click.UsageError(_("the two passwords differed {count} times").format(count=PASSWORD_TRIES))


@click.group("host", cls=HostGroup, help=_("Run the embedded SFTP host that clients share data through."))
def host() -> None:
    """Run the embedded SFTP host that clients share data through."""


@host.command("init", help=_(
    "Create a host folder DIR (host key, accounts, data root); print the host key.\n\n"
    "Safe to run again: an existing host folder is kept as it is and its fingerprint printed.\n"
    "Example: cloudshare host init ./host"))
@HOST_DIR
def init_cmd(host_dir: Path) -> None:
    """Create a host folder DIR (host key, accounts, data root); print the host key.

    Safe to run again: an existing host folder is kept as it is and its fingerprint printed.
    Example: cloudshare host init ./host
    """
    hostlib = _hostlib()
    existed = (host_dir / hostlib.HOST_KEY).exists()
    fp = hostlib.init_host(host_dir)
    done = _("host folder already set up: {folder}") if existed else _("created host folder: {folder}")
    click.echo(done.format(folder=host_dir))
    click.echo(_("host key fingerprint: {fingerprint}").format(fingerprint=fp))
    click.echo(_("give this fingerprint to your clients so they can check the host"), err=True)


@host.command("add-id", help=_(
    "Create communication ID COMM_ID, confined to its own folder.\n\n"
    "Without --authorized-key the ID logs in by password: asked twice (not shown), or read\n"
    "from $CLOUDSHARE_ID_PASSWORD. With --authorized-key it logs in by key only, unless\n"
    "--password is given too.\n"
    "Example: cloudshare host add-id ./host yamada --authorized-key yamada.pub"))
@HOST_DIR
@click.argument("comm_id")
@click.option(
    "--authorized-key",
    "pubkey_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help=_("OpenSSH public key file (.pub) allowed to log in as this ID (then no password is asked)."),
)
@click.option(
    "--password", "want_password", is_flag=True,
    help=_("With --authorized-key: also give the ID a login password."),
)
@click.option(
    "--no-password", is_flag=True, help=_("No login password: the ID logs in with --authorized-key only.")
)
def add_id_cmd(
    host_dir: Path, comm_id: str, pubkey_file: Path | None, want_password: bool, no_password: bool
) -> None:
    """Create communication ID COMM_ID, confined to its own folder.

    Without --authorized-key the ID logs in by password: asked twice (not shown), or read
    from $CLOUDSHARE_ID_PASSWORD. With --authorized-key it logs in by key only, unless
    --password is given too.
    Example: cloudshare host add-id ./host yamada --authorized-key yamada.pub
    """
    hostlib = _hostlib()
    if want_password and no_password:
        raise click.UsageError(_("--password and --no-password exclude each other"))
    if no_password and pubkey_file is None:
        raise click.UsageError(_("--no-password needs --authorized-key PUBKEYFILE"))
    hostlib._require_host_dir(host_dir)
    _invalid_id(comm_id)
    key = pubkey_file.read_text(encoding="utf-8") if pubkey_file else None
    password = _ask_password(comm_id) if (pubkey_file is None or want_password) else None
    hostlib.add_id(host_dir, comm_id, password, key)
    how = (_("password and key") if password and key else _("password") if password else _("key"))
    click.echo(_("added communication ID {comm_id} (login by {how}); its folder: {folder}").format(
        comm_id=comm_id, how=how, folder=host_dir / hostlib.DATA / comm_id))


@host.command("remove-id", help=_(
    "Remove communication ID COMM_ID (its folder is kept unless --delete-data).\n\n"
    "A running `host serve` closes the ID's open connections within about a second.\n"
    "Example: cloudshare host remove-id ./host yamada"))
@HOST_DIR
@click.argument("comm_id")
@click.option("--delete-data", is_flag=True, help=_("Also delete the ID's folder and its areas."))
def remove_id_cmd(host_dir: Path, comm_id: str, delete_data: bool) -> None:
    """Remove communication ID COMM_ID (its folder is kept unless --delete-data).

    A running `host serve` closes the ID's open connections within about a second.
    Example: cloudshare host remove-id ./host yamada
    """
    hostlib = _hostlib()
    _invalid_id(comm_id)
    hostlib.remove_id(host_dir, comm_id, delete_data=delete_data)
    if delete_data:
        click.echo(_("removed communication ID {comm_id}").format(comm_id=comm_id))
    else:
        click.echo(_("removed communication ID {comm_id} (its folder {folder} was kept)").format(
            comm_id=comm_id, folder=host_dir / hostlib.DATA / comm_id))


@host.command("list-ids", help=_(
    "List the communication IDs of host folder DIR.\n\nExample: cloudshare host list-ids ./host"))
@HOST_DIR
def list_ids_cmd(host_dir: Path) -> None:
    """List the communication IDs of host folder DIR.

    Example: cloudshare host list-ids ./host
    """
    ids = _hostlib().list_ids(host_dir)
    if not ids:
        click.echo(_("no communication IDs yet; add one with `cloudshare host add-id {folder} ID`").format(
            folder=host_dir), err=True)
    for i in ids:
        how = ",".join(x for x in ("password" if i.password else "", f"keys={i.keys}" if i.keys else "") if x)
        click.echo(f"{i.comm_id}\t{how}\t{i.created}")


@host.command("serve", help=_(
    "Serve DIR over SFTP until interrupted (Ctrl-C or SIGTERM).\n\n"
    "Run it as an unprivileged user that owns DIR, never as root.\n"
    "Example: cloudshare host serve ./host --port 2222 --log-file /var/log/cloudshare-host.log"))
@HOST_DIR
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    help=_("Address to listen on (0.0.0.0 for every interface)."),
)
@click.option("--port", default=2222, show_default=True, type=click.IntRange(0, 65535),
              help=_("Port to listen on."))
@click.option(
    "--grace",
    default=SHUTDOWN_GRACE,
    show_default=True,
    type=click.FloatRange(min=0),
    help=_("Seconds live connections get to finish after SIGINT/SIGTERM."),
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=_("Also append the audit log (key=value lines) to this file (created 0600)."),
)
@click.option(
    "--max-failures", default=MAX_FAILURES, show_default=True, type=click.IntRange(min=1),
    help=_("Failed password logins (per address, per ID) before attempts are delayed."),
)
@click.option(
    "--failure-window", default=FAILURE_WINDOW, show_default=True, type=click.FloatRange(min=0.1),
    help=_("Seconds a failed login is remembered."),
)
@click.option(
    "--penalty", default=PENALTY, show_default=True, type=click.FloatRange(min=0),
    help=_("Seconds between allowed attempts once over the limit (doubles per failure, up to 16x)."),
)
def serve_cmd(
    host_dir: Path, bind: str, port: int, grace: float, log_file: Path | None,
    max_failures: int, failure_window: float, penalty: float,
) -> None:
    """Serve DIR over SFTP until interrupted (Ctrl-C or SIGTERM).

    Run it as an unprivileged user that owns DIR, never as root.
    Example: cloudshare host serve ./host --port 2222 --log-file /var/log/cloudshare-host.log
    """
    hostlib = _hostlib()
    limits = hostlib.RateLimits(
        max_failures=max_failures, window=failure_window, penalty=penalty, penalty_max=penalty * 16
    )
    hostlib._require_host_dir(host_dir)
    try:
        hostlib.setup_logging(log_file=log_file)
    except OSError as exc:
        raise HostCommandError(
            _("cannot write the log file {log_file}: {reason}\n"
              "  next: choose another --log-file, or create its folder").format(
                log_file=log_file, reason=exc.strerror or exc),
            int(ExitCode.LOCAL_DISK),
        ) from None
    try:
        hostlib.serve_forever(host_dir, bind, port, grace=grace, limits=limits)
    except CloudShareError:
        raise
    except OSError as exc:
        raise HostCommandError(
            _("cannot listen on {bind}:{port}: {reason}\n"
              "  next: choose another --port, or stop the program using it").format(
                bind=bind, port=port, reason=exc.strerror or exc),
            int(ExitCode.ERROR),
        ) from None


@host.command("openssh-config", help=_(
    "Print the sshd_config block that serves COMM_ID with OpenSSH instead.\n\n"
    "Example: cloudshare host openssh-config yamada --data-root /srv/cloudshare"))
@click.argument("comm_id")
@click.option(
    "--data-root",
    default="/srv/cloudshare",
    show_default=True,
    help=_("Folder that holds one chroot folder per communication ID."),
)
@click.option("--no-password", is_flag=True, help=_("Key login only."))
def openssh_config_cmd(comm_id: str, data_root: str, no_password: bool) -> None:
    """Print the sshd_config block that serves COMM_ID with OpenSSH instead.

    Example: cloudshare host openssh-config yamada --data-root /srv/cloudshare
    """
    _invalid_id(comm_id)
    click.echo(_hostlib().openssh_config(comm_id, data_root, password=not no_password), nl=False)


if __name__ == "__main__":
    sys.exit(host())


@host.command("check", help=_(
    "Check area AREA in FOLDER without the share password (structure only).\n\n"
    "FOLDER holds the areas: for the embedded host DIR/data/COMM_ID, for OpenSSH the\n"
    "client's base folder. Exits 11 when the area is damaged.\n"
    "Example: cloudshare host check ./host/data/yamada yamada-books"))
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("area")
@click.option("--json", "as_json", is_flag=True, help=_("Print the report as JSON."))
def check_cmd(folder: Path, area: str, as_json: bool) -> None:
    """Check area AREA in FOLDER without the share password (structure only).

    FOLDER holds the areas: for the embedded host DIR/data/COMM_ID, for OpenSSH the
    client's base folder. Exits 11 when the area is damaged.
    Example: cloudshare host check ./host/data/yamada yamada-books
    """
    import json

    from cloudshare_p2p.check import check_host_area, render_text

    report = check_host_area(folder, area)
    if as_json:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=1))
    else:
        click.echo(render_text(report))
    sys.exit(int(report.exit_code))
