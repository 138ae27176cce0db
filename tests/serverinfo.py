"""What a test needs to know about a running share host (OpenSSH or embedded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ShareServer:
    """A running SFTP host on loopback that the tests may use.

    `base` is the folder (as the client sees it) under which areas live; `root` is the
    same folder on the local disk, so tests can tamper with files "on the server".
    """

    kind: str  # "openssh" | "embedded" | "embedded-x4"
    host: str
    port: int
    user: str
    base: str
    root: Path
    identity: Path  # private key file (OpenSSH format) that may log in as `user`
    host_key_fingerprint: str  # "SHA256:..."
    password: str | None = None  # login password, where the server has one
    ports: tuple[int, ...] = field(default=())  # every port serving the same root

    def url(self, port: int | None = None) -> str:
        """The remote URL the `cloudshare remote add` command takes."""
        base = self.base if self.base.startswith("/") else "/" + self.base
        return f"sftp://{self.user}@{self.host}:{port or self.port}{base.rstrip('/')}"

    def all_ports(self) -> tuple[int, ...]:
        return self.ports or (self.port,)
