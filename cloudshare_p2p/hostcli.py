"""`cloudshare host ...`: run the embedded SFTP host (see docs/hosting.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cloudshare_p2p.errors import CloudShareError


class _LazyHost:
    """`cloudshare_p2p.host` (asyncssh) is imported only when a host command runs."""

    def __getattr__(self, name: str):
        from cloudshare_p2p import host

        return getattr(host, name)


hostlib = _LazyHost()

PASSWORD_ENV = "CLOUDSHARE_ID_PASSWORD"

HOST_DIR = click.argument("host_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))


def _fail(exc: CloudShareError) -> click.ClickException:
    return click.ClickException(exc.user_message())


@click.group("host")
def host() -> None:
    """Run the embedded SFTP host that clients share data through."""


@host.command("init")
@HOST_DIR
def init_cmd(host_dir: Path) -> None:
    """Create a host folder DIR (host key, accounts, data root); print the host key.

    Safe to run again: an existing host folder is kept as it is and its fingerprint printed.
    Example: cloudshare host init ./host
    """
    existed = (host_dir / hostlib.HOST_KEY).exists()
    try:
        fp = hostlib.init_host(host_dir)
    except CloudShareError as exc:
        raise _fail(exc) from exc
    click.echo(f"{'host folder already set up' if existed else 'created host folder'}: {host_dir}")
    click.echo(f"host key fingerprint: {fp}")
    click.echo("give this fingerprint to your clients so they can check the host", err=True)


@host.command("add-id")
@HOST_DIR
@click.argument("comm_id")
@click.option(
    "--authorized-key",
    "pubkey_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="OpenSSH public key file (.pub) allowed to log in as this ID.",
)
@click.option(
    "--no-password", is_flag=True, help="No login password: the ID logs in with --authorized-key only."
)
def add_id_cmd(host_dir: Path, comm_id: str, pubkey_file: Path | None, no_password: bool) -> None:
    """Create communication ID COMM_ID, confined to its own folder.

    The password is asked twice (not shown), or read from $CLOUDSHARE_ID_PASSWORD.
    Example: cloudshare host add-id ./host yamada --authorized-key yamada.pub
    """
    try:
        hostlib._require_host_dir(host_dir)
        hostlib.validate_comm_id(comm_id)
    except CloudShareError as exc:
        raise _fail(exc) from exc
    if no_password and pubkey_file is None:
        raise click.UsageError("--no-password needs --authorized-key PUBKEYFILE")
    key = pubkey_file.read_text(encoding="utf-8") if pubkey_file else None
    password: str | None = None
    if not no_password:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            password = click.prompt(
                f"login password for {comm_id}", hide_input=True, confirmation_prompt=True
            )
        if not password:
            raise click.UsageError(f"empty password (from ${PASSWORD_ENV} or the prompt)")
    try:
        hostlib.add_id(host_dir, comm_id, password, key)
    except CloudShareError as exc:
        raise _fail(exc) from exc
    how = " and ".join(x for x in ("password" if password else "", "key" if key else "") if x)
    click.echo(
        f"added communication ID {comm_id} (login by {how}); its folder: {host_dir / hostlib.DATA / comm_id}"
    )


@host.command("remove-id")
@HOST_DIR
@click.argument("comm_id")
@click.option("--delete-data", is_flag=True, help="Also delete the ID's folder and its areas.")
def remove_id_cmd(host_dir: Path, comm_id: str, delete_data: bool) -> None:
    """Remove communication ID COMM_ID (its folder is kept unless --delete-data).

    Example: cloudshare host remove-id ./host yamada
    """
    try:
        hostlib.remove_id(host_dir, comm_id, delete_data=delete_data)
    except CloudShareError as exc:
        raise _fail(exc) from exc
    kept = "" if delete_data else f" (its folder {host_dir / hostlib.DATA / comm_id} was kept)"
    click.echo(f"removed communication ID {comm_id}{kept}")


@host.command("list-ids")
@HOST_DIR
def list_ids_cmd(host_dir: Path) -> None:
    """List the communication IDs of host folder DIR.

    Example: cloudshare host list-ids ./host
    """
    try:
        ids = hostlib.list_ids(host_dir)
    except CloudShareError as exc:
        raise _fail(exc) from exc
    if not ids:
        click.echo(f"no communication IDs yet; add one with `cloudshare host add-id {host_dir} ID`", err=True)
    for i in ids:
        how = ",".join(x for x in ("password" if i.password else "", f"keys={i.keys}" if i.keys else "") if x)
        click.echo(f"{i.comm_id}\t{how}\t{i.created}")


@host.command("serve")
@HOST_DIR
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 for every interface).",
)
@click.option("--port", default=2222, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--grace",
    default=hostlib.SHUTDOWN_GRACE,
    show_default=True,
    type=float,
    help="Seconds live connections get to finish after SIGINT/SIGTERM.",
)
def serve_cmd(host_dir: Path, bind: str, port: int, grace: float) -> None:
    """Serve DIR over SFTP until interrupted (Ctrl-C or SIGTERM).

    Example: cloudshare host serve ./host --port 2222
    """
    hostlib.setup_logging()
    try:
        hostlib.serve_forever(host_dir, bind, port, grace=grace)
    except CloudShareError as exc:
        raise _fail(exc) from exc
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {bind}:{port}: {exc.strerror or exc}\n"
            "  next: choose another --port, or stop the program using it"
        ) from exc


@host.command("openssh-config")
@click.argument("comm_id")
@click.option(
    "--data-root",
    default="/srv/cloudshare",
    show_default=True,
    help="Folder that holds one chroot folder per communication ID.",
)
@click.option("--no-password", is_flag=True, help="Key login only.")
def openssh_config_cmd(comm_id: str, data_root: str, no_password: bool) -> None:
    """Print the sshd_config block that serves COMM_ID with OpenSSH instead.

    Example: cloudshare host openssh-config yamada --data-root /srv/cloudshare
    """
    try:
        click.echo(hostlib.openssh_config(comm_id, data_root, password=not no_password), nl=False)
    except CloudShareError as exc:
        raise _fail(exc) from exc


if __name__ == "__main__":
    host()
