"""Loopback ports and SSH keys for the test servers: the one copy of `free_port` and the
Ed25519 key writer that the sshd, embedded-host and transport tests share."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (it may be taken before the caller binds:
    the server starters retry, and check that the process listening is their own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_ed25519_keypair(private_path: Path) -> str:
    """Write a new Ed25519 private key (OpenSSH format, 0600) and `<path>.pub`; return the public
    key line."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    private_path = Path(private_path)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(private_path, 0o600)
    line = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    Path(str(private_path) + ".pub").write_text(line + "\n")
    return line


def public_line_fingerprint(public_line: str) -> str:
    """`SHA256:...` of an OpenSSH public key line, like `ssh-keygen -l`."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
