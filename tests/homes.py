"""The firm and its clients as homes on one machine, each running the real `cloudshare`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.serverinfo import ShareServer

CLOUDSHARE = str(Path(sys.executable).parent / "cloudshare")
SHARE_PASSWORD = "kaikei-2026"


@dataclass
class Home:
    """One person's computer: its own registry (--home), name and data folder."""

    root: Path
    name: str
    server: ShareServer
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        path = self.root / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, *args: str, expect: int | None = 0, password: str | None = SHARE_PASSWORD,
            timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        """Run `cloudshare --home ROOT ARGS…`; check the exit code unless expect is None."""
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("CLOUDSHARE_PASSWORD", "CLOUDSHARE_SSH_PASSWORD", "SSH_AUTH_SOCK")}
        full_env.update(CLOUDSHARE_NAME=self.name, **self.env, **env)
        if password is not None:
            full_env["CLOUDSHARE_PASSWORD"] = password
        result = subprocess.run(
            [CLOUDSHARE, "--home", str(self.root / "home"), *args],
            env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if expect is not None:
            assert result.returncode == expect, (
                f"cloudshare {' '.join(args)} exited {result.returncode}, expected {expect}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def add_remote(self, name: str = "host", port: int | None = None) -> None:
        self.run("remote", "add", name, self.server.url(port), "--identity", str(self.server.identity),
                 "--accept-host-key", self.server.host_key_fingerprint)
