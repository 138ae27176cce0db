"""Logging in: the identity (private key) file checked in plain words, the SSH agent's
keys, and the password (handed to paramiko only, never logged or put into messages)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import paramiko

from cloudshare_p2p import errors

from ..i18n import _
from .endpoint import Credentials
from .network import describe

MAX_IDENTITY_SIZE = 64 * 1024  # a private key file is a few KiB


class IdentityProblem(errors.CloudShareError):
    """The identity (private key) file cannot be used; the message says why."""


class IdentityEncrypted(IdentityProblem):
    """The identity file is protected by a passphrase (cloudshare never asks for one)."""


_PUBLIC_PREFIXES = (b"ssh-", b"ecdsa-", b"sk-", b"---- BEGIN SSH2 PUBLIC KEY")


def check_identity(path: Path) -> None:
    """Raise IdentityProblem (exit 1) unless `path` is a private key file cloudshare can use:
    missing, a folder, unreadable, a public key (.pub), a PuTTY key, passphrase-protected
    (IdentityEncrypted) or not a key at all each get their own message and hint."""
    _load_identity(Path(path))


def _load_identity(path: Path) -> paramiko.PKey:
    shown = str(path)
    try:
        if path.is_dir():
            raise IdentityProblem(_("the identity {shown} is a folder, not a key file").format(shown=shown),
                                  hint=_("give the private key file, e.g. ~/.ssh/id_ed25519"))
        with open(path, "rb") as f:
            head = f.read(MAX_IDENTITY_SIZE + 1)
    except FileNotFoundError:
        raise IdentityProblem(
            _("the identity file {shown} does not exist").format(shown=shown),
            hint=_("check the path; give the private key file made by ssh-keygen, e.g. ~/.ssh/id_ed25519"),
        ) from None
    except OSError as e:
        raise IdentityProblem(_("cannot read the identity file {shown}: {reason}").format(
            shown=shown, reason=describe(e)),
                              hint=_("check the file's permissions (it must be readable by you)")) from None
    text = head.lstrip()
    if path.suffix == ".pub" or text.startswith(_PUBLIC_PREFIXES):
        private = path.with_suffix("") if path.suffix == ".pub" else None
        where = f" ({private})" if private is not None and private.is_file() else ""
        raise IdentityProblem(
            _("{shown} is a public key; login needs the private key").format(shown=shown),
            hint=_("give the private key file (without .pub){where}; the .pub file is the one the firm "
                   "registers on the host").format(where=where),
        )
    if text.startswith(b"PuTTY-User-Key-File-"):
        raise IdentityProblem(
            _("{shown} is a PuTTY key (.ppk), which cloudshare cannot read").format(shown=shown),
            hint=_("in PuTTYgen, load it and choose Conversions > Export OpenSSH key, then give that "
            "file"),
        )
    if len(head) > MAX_IDENTITY_SIZE:
        raise IdentityProblem(_("{shown} is too large to be a private key file").format(shown=shown),
                              hint=_("give the private key file, e.g. ~/.ssh/id_ed25519"))
    try:
        return paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError):  # cryptography: TypeError
        raise IdentityEncrypted(
            _("the identity file {shown} is protected by a passphrase, which cloudshare does not ask "
              "for").format(shown=shown),
            hint=_('load it into ssh-agent (ssh-add {shown}) and add the remote without --identity, or make '
                   'a key without passphrase (ssh-keygen -t ed25519 -N "")').format(shown=shown),
        ) from None
    except (OSError, ValueError, paramiko.SSHException) as e:
        detail = "" if "PEM" in str(e) else f" ({describe(e)})"
        raise IdentityProblem(
            _("{shown} is not a private key file cloudshare can use{detail}").format(
                shown=shown, detail=detail),
            hint=_("give the OpenSSH private key file made by ssh-keygen, e.g. ~/.ssh/id_ed25519"),
        ) from None


def _agent_keys() -> list[paramiko.PKey]:
    """Keys of the user's SSH agent, wherever paramiko finds one: on Windows Pageant or the
    OpenSSH agent pipe (paramiko looks by itself), elsewhere the SSH_AUTH_SOCK socket.
    No agent or a broken one gives no keys, never an error."""
    if sys.platform != "win32" and not os.environ.get("SSH_AUTH_SOCK"):
        return []
    try:
        return list(paramiko.Agent().get_keys())
    except Exception:  # noqa: BLE001 - an agent problem must never stop a login
        return []


def _try(auth: Callable[[], object]) -> bool:
    try:
        auth()
    except paramiko.AuthenticationException:
        return False
    return True


def authenticate(transport: paramiko.Transport, user: str, credentials: Credentials) -> None:
    """Identity file, then agent keys, then password; all refused -> LoginRefused. A
    passphrase-protected identity is skipped in favour of the agent (which may hold it) and
    reported if nothing else logs in."""
    skipped: IdentityEncrypted | None = None
    if credentials.identity is not None:
        try:
            key = _load_identity(Path(credentials.identity))
        except IdentityEncrypted as e:
            if not credentials.use_agent:
                raise
            skipped = e
        else:
            if _try(lambda: transport.auth_publickey(user, key)):
                return
    if credentials.use_agent:
        for agent_key in _agent_keys():
            if _try(functools.partial(transport.auth_publickey, user, agent_key)):
                return
    if credentials.password is not None and _password_auth(transport, user, credentials):
        return
    if skipped is not None:
        raise skipped
    raise errors.LoginRefused(_("the host refused the login of {user!r}").format(user=user))


def _password_auth(transport: paramiko.Transport, user: str, credentials: Credentials) -> bool:
    password = credentials.password() if credentials.password else None
    if password is None:
        return False
    try:
        transport.auth_password(user, password)
        return True
    except paramiko.BadAuthenticationType as e:
        if "keyboard-interactive" not in e.allowed_types:
            return False
    except paramiko.AuthenticationException:
        return False

    def answer(_title: str, _instructions: str, prompts: list) -> list[str]:
        return [password for _prompt in prompts]

    return _try(lambda: transport.auth_interactive(user, answer))

