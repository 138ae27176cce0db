"""Every use of paramiko's private API, in this one module: the SFTP client subclass that
keeps the server's extensions and tags errors with the SFTP status code, pipelined writes
whose answers are checked (`WriteAcks`), extended requests, and handles opened and closed
with checked answers. paramiko is pinned `<6` in pyproject.toml because of this module:
a new major release must be checked against it first."""

from __future__ import annotations

import contextlib
import errno
import struct

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_INIT,
    CMD_READ,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

MAX_WRITES_IN_FLIGHT = 32
SFTP_VERSION = 3


class SFTPClient(paramiko.SFTPClient):
    """SFTPClient that keeps the server's extensions and tags errors with the SFTP code."""

    extensions: dict[str, bytes]

    def _send_version(self):
        self.extensions = {}
        msg = paramiko.Message()
        msg.add_int(SFTP_VERSION)
        self._send_packet(CMD_INIT, msg)
        t, data = self._read_packet()
        if t != CMD_VERSION:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        self.extensions = _parse_extensions(data[4:])
        return struct.unpack(">I", data[:4])[0]

    def _convert_status(self, msg):
        code = msg.get_int()
        text = msg.get_text()
        if code == SFTP_OK:
            return
        if code == SFTP_EOF:
            raise EOFError(text)
        number = {SFTP_NO_SUCH_FILE: errno.ENOENT, SFTP_PERMISSION_DENIED: errno.EACCES}.get(code)
        error = OSError(number, text) if number else OSError(text)
        error.sftp_code = code  # type: ignore[attr-defined]
        raise error


def _parse_extensions(data: bytes) -> dict[str, bytes]:
    result = {}
    msg = paramiko.Message(data)
    with contextlib.suppress(Exception):
        while msg.get_remainder():
            name = msg.get_text()
            result[name] = msg.get_binary()
    return result


class WriteAcks:
    """Collects the answers to pipelined write requests (paramiko drops their errors)."""

    def __init__(self, sftp: SFTPClient) -> None:
        self.sftp = sftp
        self.pending: set[int] = set()
        self.error: BaseException | None = None

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.pending.discard(num)
        try:
            if t != CMD_STATUS:
                raise paramiko.SFTPError("Expected status")
            self.sftp._convert_status(msg)
        except (OSError, EOFError, paramiko.SFTPError) as e:
            self.error = self.error or e

    def send(self, handle: bytes, offset: int, data: bytes | memoryview) -> None:
        self._track(self.sftp._async_request(self, CMD_WRITE, handle, int64(offset), bytes(data)))

    def close(self, handle: bytes) -> None:
        """Close `handle` behind the writes already sent (its answer checked with theirs): one
        round trip fewer than waiting for the writes first. A write the host would run after
        the close fails, and that failure is reported like any other."""
        self._track(self.sftp._async_request(self, CMD_CLOSE, handle))

    def _track(self, num: int) -> None:
        self.pending.add(num)
        while len(self.pending) >= MAX_WRITES_IN_FLIGHT:
            self.sftp._read_response()
        self.check()

    def drain(self) -> None:
        while self.pending:
            self.sftp._read_response()
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


class Answers:
    """Several requests in flight at once, their answers collected by request number in
    whatever order the host sends them (paramiko's own wait drops answers it did not ask for)."""

    def __init__(self, sftp: SFTPClient) -> None:
        self.sftp = sftp
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (t, msg)

    def send(self, kind: int, *args: object) -> int:
        """Send one request without waiting; its number, for `wait`."""
        return self.sftp._async_request(self, kind, *args)

    def wait(self, num: int) -> tuple[int, paramiko.Message]:
        """The answer to request `num` (a status answer is returned unchecked: see `checked`)."""
        while num not in self.got:
            self.sftp._read_response()
        return self.got.pop(num)

    def checked(self, num: int, expect: int | None = None) -> paramiko.Message:
        """The answer to `num`; an error status raises (OSError, EOFError), another kind than
        `expect` is a protocol error."""
        t, msg = self.wait(num)
        if t == CMD_STATUS:
            self.sftp._convert_status(msg)  # raises unless OK
            if expect is None:
                return msg
        if expect is not None and t != expect:
            raise paramiko.SFTPError(f"unexpected answer {t} to request {num}")
        return msg

    def read(self, handle: bytes, offset: int, length: int) -> int:
        """Send a read of `length` bytes at `offset`; its number, for `data`."""
        return self.send(CMD_READ, handle, int64(offset), length)

    def data(self, num: int) -> bytes:
        """The bytes answering read request `num` (b"" past the end of the file)."""
        try:
            return self.checked(num, CMD_DATA).get_binary()
        except EOFError:
            return b""

    def attrs(self, num: int) -> SFTPAttributes:
        """The attributes answering a stat or fstat request."""
        return SFTPAttributes._from_msg(self.checked(num, CMD_ATTRS))

    def drop(self, nums: list[int]) -> None:
        """Read and ignore the answers of `nums` still owed (those not read yet)."""
        for num in nums:
            if num in self.got or num in self.sftp._expecting:
                self.wait(num)


class Forgotten:
    """Requests whose answers nobody waits for (removing a temp file, closing a read handle):
    a later wait reads past their answers and drops them. `drain` before anything that reads
    answers in sequence itself (paramiko's listdir)."""

    def __init__(self, sftp: SFTPClient) -> None:
        self.sftp = sftp
        self.pending: set[int] = set()

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.pending.discard(num)

    def send(self, kind: int, *args: object) -> None:
        self.pending.add(self.sftp._async_request(self, kind, *args))

    def drain(self) -> None:
        while self.pending:
            self.sftp._read_response()



# --- requests paramiko has no public call for ---------------------------------


def extended(sftp: SFTPClient, name: str, *args: object) -> None:
    """Send the extended request `name` (e.g. `hardlink@openssh.com`) and check its answer."""
    sftp._request(CMD_EXTENDED, name, *args)


def unsupported(e: BaseException) -> bool:
    """True if the server answered "operation unsupported"."""
    return getattr(e, "sftp_code", None) == SFTP_OP_UNSUPPORTED


def is_sftp_error(e: BaseException) -> bool:
    """True if `e` is the server's answer (a status code), not a broken connection."""
    return hasattr(e, "sftp_code") or isinstance(e, FileNotFoundError | PermissionError)


def close_handle(sftp: SFTPClient, handle: bytes) -> None:
    """Close a raw handle with a checked answer."""
    sftp._request(CMD_CLOSE, handle)


def close_file(sftp: SFTPClient, f: paramiko.SFTPFile) -> None:
    """Close with a checked answer (paramiko's close ignores errors)."""
    abandon_file(f)
    close_handle(sftp, f.handle)


def abandon_file(f: paramiko.SFTPFile) -> None:
    """Tell paramiko not to close `f` itself (we close its handle, or the link is gone)."""
    f._closed = True
