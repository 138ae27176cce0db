"""The SFTP connection (`SftpConnection`): paths under the endpoint's base, metadata,
folders, exclusive publish of records, never-torn publish of immutable objects, fast
transfers bounded by deadlines, and the server's clock. A broken connection is NetworkDown.

A little over ~400 lines because it is one class whose methods are the contract's operations
(transport/contract.py), each a few lines; the transfer loops live in transfer.py.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Callable, Iterator, Sequence
from stat import S_ISDIR
from typing import BinaryIO

import paramiko

from cloudshare_p2p import errors

from ..i18n import _
from .contract import FileTooLarge, Stat
from .endpoint import DEFAULT_TIMEOUTS, Endpoint, Timeouts, remote_path
from .network import describe
from .paramiko_sftp import (
    SFTPClient,
    WriteAcks,
    abandon_file,
    close_file,
    close_handle,
    extended,
    is_sftp_error,
    open_truncated,
    unsupported,
)
from .transfer import REQUEST_SIZE, bounded, copy_out, copy_small, read_ranges, write_stream

HARDLINK = "hardlink@openssh.com"
POSIX_RENAME = "posix-rename@openssh.com"


class SftpConnection:
    """One logged-in SFTP connection, reused for every step of one command; it satisfies
    the `RemoteFiles` contract (contract.py)."""

    def __init__(
        self,
        endpoint: Endpoint,
        transport: paramiko.Transport,
        sftp: SFTPClient,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        self.endpoint = endpoint
        self.timeouts = timeouts
        self.bytes_sent = 0
        self.bytes_received = 0
        self._transport = transport
        self._sftp = sftp

    def __enter__(self) -> SftpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the SFTP channel and the connection."""
        with contextlib.suppress(Exception):
            self._sftp.close()
        with contextlib.suppress(Exception):
            self._transport.close()

    @property
    def extensions(self) -> dict[str, bytes]:
        """SFTP extensions the server advertised."""
        return getattr(self._sftp, "extensions", {})

    def _sent(self, n: int) -> None:
        self.bytes_sent += n

    def _received(self, n: int) -> None:
        self.bytes_received += n

    # -- error mapping --

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """SFTP answers pass through (ENOENT is FileNotFoundError); a dead link -> NetworkDown."""
        try:
            yield
        except errors.CloudShareError:
            raise
        except OSError as e:
            if isinstance(e, PermissionError) and self._transport.is_active():
                raise errors.HostRefused(_("the host refused {what}: permission denied").format(
                    what=what)) from None
            if is_sftp_error(e) and self._transport.is_active():
                raise
            raise self._down(what, e) from None
        except (EOFError, paramiko.SSHException) as e:
            raise self._down(what, e) from None

    def _down(self, what: str, e: BaseException) -> errors.NetworkDown:
        where = f"{self.endpoint.host}:{self.endpoint.port}"
        return errors.NetworkDown(_("connection to {where} lost during {what}: {reason}").format(
            where=where, what=what, reason=describe(e)))

    # -- paths and metadata --

    def path(self, *parts: str) -> str:
        """Join the endpoint's base with `parts` using "/" (base "" -> relative path)."""
        return remote_path(self.endpoint.base, *parts)

    def stat(self, path: str) -> Stat | None:
        """Size, mtime (server clock, whole seconds), is_dir; None if missing."""
        with self._guard("stat"):
            try:
                attr = self._sftp.stat(path)
            except FileNotFoundError:
                return None
        return Stat(attr.st_size or 0, int(attr.st_mtime or 0), S_ISDIR(attr.st_mode or 0))

    def listdir(self, path: str) -> list[str]:
        """Names in a folder; FileNotFoundError if missing."""
        with self._guard("listdir"):
            return self._sftp.listdir(path)

    def mkdir(self, path: str) -> bool:
        """True if created, False if the folder already existed."""
        with self._guard("mkdir"):
            try:
                self._sftp.mkdir(path)
                return True
            except OSError:
                found = self.stat(path)
                if found is not None and found.is_dir:
                    return False
                raise

    def remove(self, path: str) -> None:
        with self._guard("remove"):
            self._sftp.remove(path)

    def rmdir(self, path: str) -> None:
        with self._guard("rmdir"):
            self._sftp.rmdir(path)

    def rename(self, src: str, dst: str) -> None:
        """Plain SFTP rename: never a lock (see sftp-primitives.md)."""
        with self._guard("rename"):
            self._sftp.rename(src, dst)

    def remove_tree(self, path: str) -> None:
        """Delete a folder recursively, tolerating entries that vanish meanwhile."""
        with self._guard("remove_tree"):
            try:
                entries = self._sftp.listdir_attr(path)
            except FileNotFoundError:
                return
            for entry in entries:
                child = f"{path.rstrip('/')}/{entry.filename}"
                with contextlib.suppress(FileNotFoundError):
                    if S_ISDIR(entry.st_mode or 0):
                        self.remove_tree(child)
                    else:
                        self._sftp.remove(child)
            with contextlib.suppress(FileNotFoundError):
                self._sftp.rmdir(path)

    # -- exclusive create and publish --

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create `path` with `data` only if it does not exist: True created, False existed."""
        with self._guard("create"):
            try:
                f = self._sftp.open(path, "wx")
            except OSError:
                if self.stat(path) is not None:
                    return False
                raise
            self._write_new(f, path, data)
        return True

    def _write_new(self, f: paramiko.SFTPFile, path: str, data: bytes) -> None:
        """Write and close a file we just created; on failure try to remove it."""
        try:
            acks = WriteAcks(self._sftp)
            for offset in range(0, len(data), REQUEST_SIZE):
                acks.send(f.handle, offset, memoryview(data)[offset : offset + REQUEST_SIZE])
            acks.drain()
            close_file(self._sftp, f)
        except BaseException:
            abandon_file(f)  # we close the handle ourselves (or the link is gone)
            with contextlib.suppress(Exception):
                close_handle(self._sftp, f.handle)
                self._sftp.remove(path)
            raise
        self.bytes_sent += len(data)

    def publish(self, tmp_path: str, final_path: str) -> bool:
        """Hard-link tmp -> final (fails if final exists), then remove tmp in every case.
        True if we created final, False if it already existed."""
        try:
            with self._guard("publish"):
                if HARDLINK in self.extensions:
                    try:
                        extended(self._sftp, HARDLINK, tmp_path, final_path)
                        return True
                    except OSError as e:
                        if not unsupported(e):
                            if self.stat(final_path) is not None:
                                return False
                            raise
            return self.create_exclusive(final_path, self.read_bytes(tmp_path, max_size=1 << 40))
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.remove(tmp_path)

    # -- immutable content-addressed objects (chunks, manifests) --

    def object_complete(self, final_path: str, size: int) -> bool | None:
        """None: nothing under `final_path`; True: a file of exactly `size` bytes; False: a
        torn or otherwise different file (or a folder). A writer never trusts a name it has
        not checked this way."""
        found = self.stat(final_path)
        if found is None:
            return None
        return not found.is_dir and found.size == size

    def put_object(self, tmp_path: str, final_path: str, data: bytes) -> bool:
        """Upload `data` to `tmp_path` (every write and the close acknowledged), then
        `publish_object` it; True if we created or repaired `final_path`."""
        written = self.upload(tmp_path, data)
        if written != len(data):
            raise errors.TransferError(_("upload of {tmp_path} wrote {written} of {size} bytes").format(
                tmp_path=tmp_path, written=written, size=len(data)))
        return self._publish_object(tmp_path, final_path, len(data), check_tmp=False)

    def publish_object(self, tmp_path: str, final_path: str, size: int) -> bool:
        """Publish a complete temp file as an immutable object whose content is fixed by its
        name (identical content under the name is harmless), so that `final_path` never holds a
        torn file, on every host. The temp file must hold `size` bytes (checked), else
        TransferError and nothing is published. With `hardlink@openssh.com`: exclusive link;
        else `posix-rename@openssh.com` (atomic replace); else plain rename. A file already
        under the name of another size is torn: it is removed and replaced. The temp file is
        removed in every case. True if we created or replaced `final_path`, False if a file of
        `size` bytes was already there."""
        return self._publish_object(tmp_path, final_path, size, check_tmp=True)

    def _publish_object(self, tmp_path: str, final_path: str, size: int, *, check_tmp: bool) -> bool:
        try:
            with self._guard("publish"):
                if check_tmp:
                    found = self.stat(tmp_path)
                    if found is None or found.is_dir or found.size != size:
                        got = _("nothing") if found is None else _("{size} bytes").format(size=found.size)
                        raise errors.TransferError(
                            _("the temporary file {path} holds {got}, not {size} bytes: not published"
                              ).format(path=tmp_path, got=got, size=size)
                        )
                if HARDLINK in self.extensions:
                    won = self._place_object(HARDLINK, tmp_path, final_path, size)
                    if won is not None:
                        return won
                if POSIX_RENAME in self.extensions:
                    if self.object_complete(final_path, size):
                        return False
                    won = self._place_object(POSIX_RENAME, tmp_path, final_path, size)
                    if won is not None:
                        return won
                return bool(self._place_object("rename", tmp_path, final_path, size))
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.remove(tmp_path)

    def _place_object(self, how: str, tmp_path: str, final_path: str, size: int) -> bool | None:
        """Put tmp at final by `how`; a torn final is removed and the move retried once.
        None if the host does not support `how`."""
        for attempt in range(2):
            try:
                if how == "rename":
                    self._sftp.rename(tmp_path, final_path)
                else:
                    extended(self._sftp, how, tmp_path, final_path)
                return True
            except OSError as e:
                if how != "rename" and unsupported(e):
                    return None
                if not self._transport.is_active():
                    raise
                complete = self.object_complete(final_path, size)
                if complete is None or attempt == 1:
                    raise  # a real error (nothing there), or a torn file we could not replace
                if complete:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    self._sftp.remove(final_path)  # torn: a complete copy replaces it
        raise AssertionError("unreachable")

    def require_dir(self, path: str) -> None:
        """CloudShareError in plain words unless `path` is an existing folder on the host."""
        shown = path or "(the login folder)"
        hint = _("check the folder in the URL (sftp://USER@HOST[:PORT]/FOLDER); ask the firm which folder")
        try:
            found = self.stat(path or ".")
        except PermissionError:
            raise errors.HostFolderProblem(
                _("the folder {shown} cannot be read on the host (permission denied)").format(
                    shown=shown), hint=hint
            ) from None
        if found is None:
            raise errors.HostFolderProblem(_("the folder {shown} does not exist on the host").format(
                shown=shown), hint=hint)
        if not found.is_dir:
            raise errors.HostFolderProblem(_("{shown} on the host is a file, not a folder").format(
                shown=shown), hint=hint)

    # -- transfers --

    def upload(
        self,
        path: str,
        src: BinaryIO | bytes,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Create/truncate `path` with the content of `src` (pipelined writes of at most
        REQUEST_SIZE each); returns the bytes written."""
        stream = io.BytesIO(src) if isinstance(src, bytes | bytearray | memoryview) else src
        what = _("upload of {path}").format(path=path)
        with bounded(what, self.timeouts, self._transport) as check, self._guard("upload"):
            handle = open_truncated(self._sftp, path)
            check.arm()
            written = write_stream(self._sftp, handle, stream, check, progress, self._sent)
            close_handle(self._sftp, handle)
        return written

    def download(
        self,
        path: str,
        dst: BinaryIO,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Copy `path` into `dst` with prefetched reads; FileNotFoundError if missing."""
        return self._read_into(path, dst, progress, max_size=None)

    def read_bytes(self, path: str, max_size: int = 64 << 20) -> bytes:
        """The whole content of a (small) file; FileTooLarge past `max_size`."""
        buffer = io.BytesIO()
        self._read_into(path, buffer, None, max_size=max_size)
        return buffer.getvalue()

    def _read_into(
        self,
        path: str,
        dst: BinaryIO,
        progress: Callable[[int], None] | None,
        max_size: int | None,
    ) -> int:
        what = _("download of {path}").format(path=path)
        with bounded(what, self.timeouts, self._transport) as check, self._guard("download"):
            f = self._sftp.open(path, "rb")
            try:
                f.MAX_REQUEST_SIZE = REQUEST_SIZE
                size = f.stat().st_size or 0
                if max_size is not None and size > max_size:
                    raise FileTooLarge(f"{path} is {size} bytes, more than {max_size} allowed")
                if size <= REQUEST_SIZE:  # one request; prefetch's thread start costs ~3 ms
                    return copy_small(f, size, dst, progress, self._received)
                check.arm()
                f.prefetch(size)
                return copy_out(f, dst, check, progress, max_size, self._received)
            finally:
                f.close()

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each (offset, length) range, in order: paramiko's readv, many requests
        in flight, at most RANGES_BATCH bytes asked ahead of what was consumed."""
        what = _("download of {path}").format(path=path)
        with bounded(what, self.timeouts, self._transport) as check, self._guard("download"):
            f = self._sftp.open(path, "rb")
            try:
                f.MAX_REQUEST_SIZE = REQUEST_SIZE
                check.arm()
                yield from read_ranges(f, ranges, check, self._received)
            finally:
                f.close()

    def replace(self, src: str, dst: str) -> bool:
        """posix-rename@openssh.com (atomic replace); False if the host does not offer it."""
        if POSIX_RENAME not in self.extensions:
            return False
        with self._guard("rename"):
            try:
                extended(self._sftp, POSIX_RENAME, src, dst)
            except OSError as e:
                if unsupported(e):
                    return False
                raise
        return True

    # -- the server's clock --

    def server_now(self, scratch_dir: str) -> int:
        """The server's clock (whole seconds): mtime of a freshly created probe file."""
        probe = f"{scratch_dir.rstrip('/')}/.clock-{uuid.uuid4().hex}"
        if not self.create_exclusive(probe, b""):
            raise errors.TransferError(_("clock probe {probe} unexpectedly exists").format(probe=probe))
        try:
            found = self.stat(probe)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.remove(probe)
        if found is None:
            raise errors.TransferError(_("clock probe {probe} vanished").format(probe=probe))
        return found.mtime

