"""The SFTP connection (`SftpConnection`): paths under the endpoint's base, metadata,
folders, exclusive publish of records, never-torn publish of immutable objects, fast
transfers bounded by deadlines, and the server's clock. A broken connection is NetworkDown.

Over ~400 lines because it is one class whose methods are the contract's operations
(transport/contract.py), each a few lines; the transfer loops live in transfer.py and the
requests sent several at a time in batch.py.
"""

from __future__ import annotations

import contextlib
import errno
import io
import uuid
from collections.abc import Callable, Iterator, Sequence
from stat import S_ISDIR
from typing import BinaryIO

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_FSTAT, CMD_MKDIR, CMD_OPEN, CMD_REMOVE
from paramiko.sftp_attr import SFTPAttributes

from cloudshare_p2p import errors

from ..i18n import _
from . import batch
from .contract import FileTooLarge, SmallFile, Stat
from .endpoint import DEFAULT_TIMEOUTS, Endpoint, Timeouts, remote_path
from .network import describe
from .paramiko_sftp import (
    Answers,
    Forgotten,
    SFTPClient,
    WriteAcks,
    abandon_file,
    close_file,
    close_handle,
    extended,
    is_sftp_error,
    unsupported,
)
from .transfer import REQUEST_SIZE, Parts, Reader, bounded, copy_out, read_ranges, write_stream

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
        self._forgotten = Forgotten(sftp)
        self._written: dict[str, int] = {}  # temp files write_records wrote whole (every answer checked)

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
        except (EOFError, paramiko.SSHException, paramiko.SFTPError) as e:  # SFTPError: a garbled answer
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

    def stat_many(self, paths: Sequence[str]) -> list[Stat | None]:
        """`stat` of each path (None: missing), all in flight at once."""
        with self._guard("stat"):
            return batch.stat_many(self._sftp, paths)

    def listdir(self, path: str) -> list[str]:
        """Names in a folder; FileNotFoundError if missing."""
        with self._guard("listdir"):
            self._forgotten.drain()  # paramiko's listing reads answers in sequence
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
            self._forgotten.drain()
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

    def _forget_remove(self, path: str) -> None:
        """Remove a temp file without waiting for the answer (a leftover is swept after a day)."""
        with contextlib.suppress(Exception):
            self._forgotten.send(CMD_REMOVE, path)

    def publish(self, tmp_path: str, final_path: str) -> bool:
        """Hard-link tmp -> final (fails if final exists), then remove tmp in every case
        (not waiting for that answer). True if we created final, False if it already existed."""
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
            self._written.pop(tmp_path, None)
            self._forget_remove(tmp_path)

    # -- immutable content-addressed objects (chunks, manifests) --

    def object_complete(self, final_path: str, size: int) -> bool | None:
        """None: nothing under `final_path`; True: a file of exactly `size` bytes; False: a
        torn or otherwise different file (or a folder). A writer never trusts a name it has
        not checked this way."""
        found = self.stat(final_path)
        if found is None:
            return None
        return not found.is_dir and found.size == size

    def put_object(self, tmp_path: str, final_path: str, data: bytes | Sequence[bytes],
                   folder: str | None = None) -> bool:
        """Upload `data` (or its parts, one after another) to `tmp_path` (every write and the
        close acknowledged), then `publish_object` it; True if we created or repaired
        `final_path`. `folder` is made (if missing) in the round trip that opens the temp file."""
        src: Reader | bytes
        if isinstance(data, bytes | bytearray | memoryview):
            size, src = len(data), bytes(data) if not isinstance(data, bytes) else data
        else:
            size, src = sum(len(part) for part in data), Parts(data)
        written = self.upload(tmp_path, src, folder=folder)
        if written != size:
            raise errors.TransferError(_("upload of {tmp_path} wrote {written} of {size} bytes").format(
                tmp_path=tmp_path, written=written, size=size))
        return self._publish_object(tmp_path, final_path, size, check_tmp=False)

    def publish_object(self, tmp_path: str, final_path: str, size: int) -> bool:
        """Publish a complete temp file as an immutable object whose content is fixed by its
        name (identical content under the name is harmless), so that `final_path` never holds a
        torn file, on every host. The temp file must hold `size` bytes (checked), else
        TransferError and nothing is published. With `hardlink@openssh.com`: exclusive link;
        else `posix-rename@openssh.com` (atomic replace); else plain rename. A file already
        under the name of another size is torn: it is removed and replaced. The temp file is
        removed in every case. True if we created or replaced `final_path`, False if a file of
        `size` bytes was already there."""
        known = self._written.pop(tmp_path, None) == size  # written whole here: no stat needed
        return self._publish_object(tmp_path, final_path, size, check_tmp=not known)

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
            self._forget_remove(tmp_path)

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
                if complete is None and attempt == 0 and self._made_folders(final_path):
                    continue  # its folder was missing: made now, placed again
                if complete is None or attempt == 1:
                    raise  # a real error (nothing there), or a torn file we could not replace
                if complete:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    self._sftp.remove(final_path)  # torn: a complete copy replaces it
        raise AssertionError("unreachable")

    def _made_folders(self, final_path: str) -> bool:
        """Create the folder of `final_path` (and its parent) if it is missing; True if made."""
        folder = final_path.rpartition("/")[0]
        if not folder or self.stat(folder) is not None:
            return False
        parent = folder.rpartition("/")[0]
        if parent:
            with contextlib.suppress(OSError):
                self.mkdir(parent)
        self.mkdir(folder)
        return True

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
        src: Reader | bytes,
        *,
        progress: Callable[[int], None] | None = None,
        folder: str | None = None,
    ) -> int:
        """Create/truncate `path` with the content of `src` (pipelined writes of at most
        REQUEST_SIZE each, the close sent behind them); returns the bytes written. `folder`
        is made (an "exists" ignored) in the same round trip as the open."""
        stream = io.BytesIO(src) if isinstance(src, bytes | bytearray | memoryview) else src
        what = _("upload of {path}").format(path=path)
        with bounded(what, self.timeouts, self._transport) as check, self._guard("upload"):
            handle = self._open_beside(path, folder)
            check.arm()
            return write_stream(self._sftp, handle, stream, check, progress, self._sent, close=True)

    def _open_beside(self, path: str, folder: str | None) -> bytes:
        """Open `path` for writing; with `folder`, its mkdir travels with the open (its
        failure, e.g. "exists", is left to the step that needs the folder)."""
        answers = Answers(self._sftp)
        made = [answers.send(CMD_MKDIR, folder, SFTPAttributes())] if folder else []
        opened = answers.send(CMD_OPEN, path, batch.WRITE_FLAGS, SFTPAttributes())
        try:
            return answers.checked(opened, batch.CMD_HANDLE).get_binary()
        finally:
            answers.drop(made)

    def write_record(self, path: str, data: bytes) -> int:
        """Create/truncate `path` with small `data` in two round trips; its server mtime."""
        return self.write_records([(path, data)])[0]

    def write_records(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """Create/truncate each path with its small data, all in two round trips; their mtimes."""
        with self._guard("upload"):
            try:
                found = batch.write_many(self._sftp, items)
            except BaseException:
                for path, _data in items:
                    self._forget_remove(path)
                raise
        self.bytes_sent += sum(len(data) for _path, data in items)
        self._written.update((path, len(data)) for path, data in items)
        mtimes = []
        for (path, _data), mtime in zip(items, found, strict=True):
            if mtime is None:  # a host whose fstat answer leaves times out
                st = self.stat(path)
                if st is None:
                    raise FileNotFoundError(errno.ENOENT, "vanished after writing", path)
                mtime = st.mtime
            mtimes.append(mtime)
        return mtimes

    def read_many(self, paths: Sequence[str], max_size: int) -> list[SmallFile | None]:
        """Each small file (None: missing; `data` None: over `max_size`) in two round trips."""
        with self._guard("download"):
            found, short = batch.read_many(self._sftp, paths, max_size)
        for i in short:  # a host that caps reads lower: read that one the slow way
            try:
                data = self.read_bytes(paths[i], max_size)
                found[i] = SmallFile(data, Stat(len(data), 0, False))
            except FileNotFoundError:
                found[i] = None
            except FileTooLarge:
                found[i] = SmallFile(None, Stat(max_size + 1, 0, False))
        self.bytes_received += sum(len(f.data) for f in found if f is not None and f.data)
        return found

    def download(
        self,
        path: str,
        dst: BinaryIO,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Copy `path` into `dst` with pipelined reads; FileNotFoundError if missing."""
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
            done = False
            try:
                f.MAX_REQUEST_SIZE = REQUEST_SIZE
                size, first = self._first_read(f.handle)
                if max_size is not None and size > max_size:
                    raise FileTooLarge(f"{path} is {size} bytes, more than {max_size} allowed")
                self._received(len(first))
                dst.write(first)
                if progress:
                    progress(len(first))
                if len(first) >= size:  # the whole file in the first answer
                    done = True
                    return len(first)
                check.arm()
                return copy_out(self._sftp, f.handle, size, dst, check, progress, self._received,
                                start=len(first))
            finally:
                if done:  # nothing else in flight on the handle: its close need not be waited for
                    abandon_file(f)
                    self._forgotten.send(CMD_CLOSE, f.handle)
                else:
                    f.close()

    def _first_read(self, handle: bytes) -> tuple[int, bytes]:
        """The file's size and its first REQUEST_SIZE bytes: fstat and read in one round trip."""
        answers = Answers(self._sftp)
        fstat = answers.send(CMD_FSTAT, handle)
        read = answers.read(handle, 0, REQUEST_SIZE)
        try:
            size = answers.attrs(fstat).st_size or 0
        except BaseException:
            answers.drop([read])
            raise
        return size, answers.data(read)

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each (offset, length) range, in order: pipelined read requests, each
        piece asked once, at most RANGES_AHEAD bytes asked ahead of what was consumed."""
        what = _("download of {path}").format(path=path)
        with bounded(what, self.timeouts, self._transport) as check, self._guard("download"):
            f = self._sftp.open(path, "rb")
            try:
                f.MAX_REQUEST_SIZE = REQUEST_SIZE
                check.arm()
                yield from read_ranges(self._sftp, f.handle, ranges, check, self._received)
            except BaseException:
                f.close()
                raise
            abandon_file(f)  # every answer read: the close need not be waited for
            self._forgotten.send(CMD_CLOSE, f.handle)

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
        """The server's clock (whole seconds): mtime of a freshly created probe file, read by
        fstat with its close (two round trips); the probe's removal is not waited for."""
        probe = f"{scratch_dir.rstrip('/')}/.clock-{uuid.uuid4().hex}"
        with self._guard("create"):
            try:
                mtime = batch.write_small(self._sftp, probe, b"", exclusive=True)
                if mtime is None:  # a host whose fstat answer leaves times out
                    found = self.stat(probe)
                    if found is None:
                        raise errors.TransferError(_("clock probe {probe} vanished").format(probe=probe))
                    mtime = found.mtime
                return mtime
            except OSError:
                if self.stat(probe) is not None:
                    raise errors.TransferError(_("clock probe {probe} unexpectedly exists").format(
                        probe=probe)) from None
                raise
            finally:
                self._forget_remove(probe)
