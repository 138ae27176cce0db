"""The transport contract: `RemoteFiles`, the file operations the share-area format (area.py)
needs from a host, with what each one promises, and the values they exchange (`Stat`,
`FileTooLarge`). `SftpConnection` and `MemoryFiles` satisfy it (mypy checks `_conforming`);
tests/test_transport_contract.py runs one suite against every backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cloudshare_p2p import errors

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .memory import MemoryFiles
    from .sftp import SftpConnection


@dataclass(frozen=True)
class Stat:
    """What `stat` tells: size in bytes, mtime on the server's clock (whole seconds), folder?"""

    size: int
    mtime: int
    is_dir: bool


@dataclass(frozen=True)
class SmallFile:
    """One file read by `read_many`: its bytes (None when it holds more than the cap) and stat."""

    data: bytes | None
    stat: Stat


class FileTooLarge(errors.AreaCorrupt):
    """A file on the host is larger than the reader allows."""


class RemoteFiles(Protocol):
    """Files in one folder tree on a share host, seen through one connection.

    Paths are "/"-separated strings built with `path()`. Errors, on every operation (the
    rclone-style contract):
    - the connection is gone, or drops during the call: `errors.NetworkDown`; the operation
      may or may not have taken effect (read the target to learn which) and every later call
      on the same connection raises NetworkDown too;
    - a name that must exist is missing: `FileNotFoundError`;
    - any other refusal by the host: `OSError`.

    Races between connections, even to different server processes over one folder: exactly
    one caller wins `publish` to the same final name (exclusive create / hard link), and
    exactly one `mkdir` of a new folder returns True. `put_object` promises no single winner,
    only that the final name never holds a torn file. `rename` and `upload` pick no winner
    and are never a lock.
    """

    @property
    def endpoint(self) -> Endpoint:
        """The host and base folder this connection serves (`endpoint.base` "" = login folder)."""
        ...

    def path(self, *parts: str) -> str:
        """The endpoint's base joined with `parts` by "/" (empty parts skipped); no I/O."""
        ...

    def stat(self, path: str) -> Stat | None:
        """Size, mtime (the server's clock, whole seconds) and is_dir; None if nothing is there."""
        ...

    def stat_many(self, paths: Sequence[str]) -> list[Stat | None]:
        """`stat` of each path, in order (None: nothing there), all asked at once: one round trip."""
        ...

    def listdir(self, path: str) -> list[str]:
        """The names in a folder (no "." or ".."), in no set order; FileNotFoundError if the
        folder is missing."""
        ...

    def mkdir(self, path: str) -> bool:
        """Create a folder: True if this call created it, False if a folder was already there.
        A file under the name: OSError. A missing parent folder: OSError (not created)."""
        ...

    def upload(self, path: str, src: bytes) -> int:
        """Create or truncate `path` and write `src`; the number of bytes written. Not atomic:
        readers may see a partial file, and a dropped connection leaves one behind, so final
        names are only ever made by `publish` or `put_object`. A missing parent folder:
        FileNotFoundError (nothing created)."""
        ...

    def read_bytes(self, path: str, max_size: int = ...) -> bytes:
        """The whole content of `path`. FileNotFoundError if missing; `FileTooLarge` (an
        `errors.AreaCorrupt`) if it holds more than `max_size` bytes."""
        ...

    def read_many(self, paths: Sequence[str], max_size: int) -> list[SmallFile | None]:
        """Each small file whole, in order: None if missing, `data` None if it holds more than
        `max_size` bytes (its `stat` still given), all asked at once (two round trips on SFTP).
        A folder or another refusal: OSError. For records (a few KiB), not for bulk data."""
        ...

    def write_record(self, path: str, data: bytes) -> int:
        """Create or truncate `path` holding the small `data` (as `upload`, every answer
        checked); the file's mtime on the server's clock, read after the last write (two round
        trips on SFTP). On an error nothing usable is left under `path`."""
        ...

    def write_records(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """`write_record` of each `(path, data)`, all at once (two round trips on SFTP); their
        mtimes, in order. On an error none of them is left usable."""
        ...

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each `(offset, length)` range of `path` (ascending, not overlapping), in
        that order, with many requests in flight. A range past the end of the file gives fewer
        bytes (the caller checks). FileNotFoundError (at the first item) if `path` is missing."""
        ...

    def replace(self, src: str, dst: str) -> bool:
        """Atomically put the file `src` in place of `dst` (`posix-rename@openssh.com`): readers
        see the old or the new file, never neither. False, with nothing done, if the host
        cannot replace atomically. FileNotFoundError if `src` is missing."""
        ...

    def publish(self, tmp_path: str, final_path: str) -> bool:
        """Make the complete file `tmp_path` appear as `final_path` only if that name is free:
        True if this call created it, False if something was already there (left unchanged).
        Exactly one winner under races. Where the host has hard links readers see nothing or
        the whole file; without them the winner creates the name, then writes it, so a reader
        may briefly see it short. The temp file is removed in every case. A missing temp file:
        FileNotFoundError, nothing published."""
        ...

    def put_object(self, tmp_path: str, final_path: str, data: bytes | Sequence[bytes],
                   folder: str | None = None) -> bool:
        """Publish `data` (bytes, or parts sent one after another: a large object need not be
        joined into one buffer) as an immutable object whose name fixes its content (upload to
        `tmp_path`, then place it). True if this call created `final_path` or replaced a torn
        (wrong-size) file there; False if a file of the data's size was already there. The
        final name never holds a torn file; concurrent callers with the same content all
        succeed. The temp file is removed in every case (on SFTP without waiting for the
        answer). `folder`, the final name's folder, is created if missing (and its parent
        folder too), on SFTP in the same round trip as the temp file."""
        ...

    def publish_object(self, tmp_path: str, final_path: str, size: int) -> bool:
        """`put_object`'s second half for a temp file already written: place it as an object
        if it holds `size` bytes (else TransferError, nothing placed). True if this call created
        or repaired `final_path`, False if a complete one was there. The temp file is removed
        in every case."""
        ...

    def object_complete(self, final_path: str, size: int) -> bool | None:
        """None if nothing is under `final_path`; True if a file of exactly `size` bytes is
        (the whole size check: content is verified by its reader); False for a file of any
        other size, or a folder."""
        ...

    def remove(self, path: str) -> None:
        """Delete a file; FileNotFoundError if it is missing."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Plain rename of a file or folder to a free name; FileNotFoundError if `src` is
        missing. Onto an existing name the outcome differs between hosts: never a lock."""
        ...

    def remove_tree(self, path: str) -> None:
        """Delete a folder and everything in it; nothing there is no error, and entries that
        vanish meanwhile (another remover) are skipped."""
        ...

    def server_now(self, scratch_dir: str) -> int:
        """The server's clock in whole seconds (the mtime of a probe file created in the
        existing folder `scratch_dir` and removed again): the clock `stat` mtimes use."""
        ...


def _conforming(connection: SftpConnection, memory: MemoryFiles) -> tuple[RemoteFiles, RemoteFiles]:
    """Never called: mypy proves here that both backends satisfy the contract."""
    return connection, memory
