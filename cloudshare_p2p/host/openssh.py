"""The OpenSSH recipe: the sshd_config block that confines one ID (see docs/hosting.md)."""

from __future__ import annotations

import posixpath

from .layout import validate_comm_id


def openssh_config(comm_id: str, data_root: str, *, password: bool = True) -> str:
    """The `sshd_config` block that confines `comm_id` to DATA_ROOT/COMM_ID (see hosting.md).

    The chroot folder DATA_ROOT/COMM_ID must be owned by root and not writable by group or
    others; the client writes into DATA_ROOT/COMM_ID/share (its start folder).
    """
    validate_comm_id(comm_id)
    root = posixpath.join(data_root.rstrip("/") or "/", comm_id)
    methods = "publickey password" if password else "publickey"
    return (
        f"# cloudshare: communication ID {comm_id} (a system user with no shell)\n"
        f"# {root} must be owned by root, mode 0755; the ID's data goes in {root}/share\n"
        f"Match User {comm_id}\n"
        f"    ChrootDirectory {root}\n"
        f"    ForceCommand internal-sftp -d /share\n"
        f"    AuthenticationMethods {methods}\n"
        f"    PasswordAuthentication {'yes' if password else 'no'}\n"
        f"    AllowTcpForwarding no\n"
        f"    AllowStreamLocalForwarding no\n"
        f"    AllowAgentForwarding no\n"
        f"    X11Forwarding no\n"
        f"    PermitTunnel no\n"
        f"    PermitTTY no\n"
        f"    PermitUserRC no\n"
    )
