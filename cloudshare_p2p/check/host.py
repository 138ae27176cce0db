"""The host's side: check an area on the host's own disk, without SFTP and without the password.

`cloudshare-host check` (wired in hostcli) runs this on the firm's host, which never has
the share password: the structural checks of `walk.check_area`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from stat import S_ISDIR
from typing import cast

from ..area import Area
from ..transport import FileTooLarge, RemoteFiles, SmallFile, Stat
from .report import CheckReport
from .walk import check_area


class HostFolder:
    """The host's own folder read like a `RemoteFiles` connection (read-only), for checking without SFTP.

    The firm's host runs `cloudshare-host check` on its disk, without the share password.
    """

    def __init__(self, base: Path) -> None:
        self.base = Path(base)

    def path(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in parts if p.strip("/"))

    def _local(self, path: str) -> Path:
        return self.base.joinpath(*[p for p in path.split("/") if p])

    def stat(self, path: str) -> Stat | None:
        try:
            st = os.stat(self._local(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Stat(st.st_size, int(st.st_mtime), S_ISDIR(st.st_mode))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._local(path))

    def read_bytes(self, path: str, max_size: int = 64 << 20) -> bytes:
        with open(self._local(path), "rb") as fh:
            data = fh.read(max_size + 1)
        if len(data) > max_size:
            raise FileTooLarge(f"{path} is more than {max_size} bytes")
        return data

    def stat_many(self, paths: Sequence[str]) -> list[Stat | None]:
        return [self.stat(path) for path in paths]

    def read_many(self, paths: Sequence[str], max_size: int) -> list[SmallFile | None]:
        """Each small file (None: missing; `data` None: over `max_size`), as the contract says."""
        out: list[SmallFile | None] = []
        for path in paths:
            st = self.stat(path)
            try:
                out.append(None if st is None else SmallFile(self.read_bytes(path, max_size), st))
            except FileNotFoundError:
                out.append(None)
            except FileTooLarge:
                out.append(SmallFile(None, st) if st is not None else None)
        return out

    def server_now(self, _scratch_dir: str) -> int:
        return int(time.time())


def check_host_area(base: Path, name: str) -> CheckReport:
    """Check area `name` under the host folder `base` (the communication ID's data folder)."""
    return check_area(Area(cast(RemoteFiles, HostFolder(base)), name))
