"""`connect()`: reach the host, check its key, log in, open the SFTP channel; any failure
on the way is a CloudShareError in plain words and leaves no connection open."""

from __future__ import annotations

import paramiko

from cloudshare_p2p import errors

from ..i18n import _
from .endpoint import DEFAULT_TIMEOUTS, Credentials, Endpoint, Timeouts
from .hostkeys import KnownHosts, check_host_key
from .identity import authenticate
from .network import describe, open_transport
from .paramiko_sftp import SFTPClient
from .sftp import SftpConnection


def connect(
    endpoint: Endpoint,
    known_hosts: KnownHosts,
    credentials: Credentials,
    *,
    accept_fingerprint: str | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> SftpConnection:
    """Open a checked, logged-in SFTP connection (see the module docstring for the rules)."""
    pinned = known_hosts.lookup(endpoint.hostport())
    transport = open_transport(endpoint, timeouts, pinned.get_name() if pinned else None)
    try:
        check_host_key(transport, endpoint, known_hosts, accept_fingerprint)
        authenticate(transport, endpoint.user, credentials)
        sftp = SFTPClient.from_transport(transport)
        if sftp is None:
            raise paramiko.SSHException("the host refused the sftp subsystem")
        sftp.get_channel().settimeout(timeouts.channel)
    except errors.CloudShareError:
        transport.close()
        raise
    except (OSError, EOFError, paramiko.SSHException) as e:
        transport.close()
        where = f"{endpoint.host}:{endpoint.port}"
        raise errors.NetworkDown(_("connection to {where} failed: {reason}").format(
            where=where, reason=describe(e))) from None
    return SftpConnection(endpoint, transport, sftp, timeouts)
