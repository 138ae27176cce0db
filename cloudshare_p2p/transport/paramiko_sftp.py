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
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
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
        num = self.sftp._async_request(self, CMD_WRITE, handle, int64(offset), bytes(data))
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


def open_truncated(sftp: SFTPClient, path: str) -> bytes:
    """Open `path` for writing (created or truncated); the raw handle."""
    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
    t, msg = sftp._request(CMD_OPEN, path, flags, SFTPAttributes())
    if t != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    return msg.get_binary()


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
