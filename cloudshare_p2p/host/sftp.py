"""The SFTP server: asyncssh's, confined to one ID's folder with the holes closed, and audited."""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import stat
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import asyncssh

from .audit import _peer_of, audit
from .auth import _HostSSHServer
from .jail import _parts, _renameat2_noreplace

if TYPE_CHECKING:
    from .server import EmbeddedHost

MAX_LOG_READ = 64 * 1024  # bytes of a log entry read to spot a lock break
FILE_MODE_MAX, DIR_MODE_MAX = 0o600, 0o700  # the only mode bits a client may set


_LOG_NAME = re.compile(rb"^[0-9]{20}$")


class ChrootSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server confined to one ID's folder, with the holes closed.

    - every request first checks that the ID still exists as it was at login (a removed
      ID's connection is closed) and that its folder exists (nothing re-creates it);
    - the root itself cannot be created, removed, renamed, linked over or changed;
    - no ownership changes; modes only within user rw (rwx for folders); files and
      folders are created 0600 / 0700 at most;
    - symlinks cannot be created (SSH_FX_PERMISSION_DENIED);
    - a path whose real location (symlinks resolved) leaves the root is refused, so a
      symlink put there by someone else cannot be used to escape;
    - plain `rename` never overwrites (renameat2 RENAME_NOREPLACE, not check-then-rename);
    - a directory listing skips entries that vanish while it is read;
    - `hardlink@openssh.com` is asyncssh's `link` (advertised by asyncssh);
    - areas created and deleted, and lock breaks written to an area's log, are audited.
    """

    def __init__(self, chan: asyncssh.SSHServerChannel, root: str, host: EmbeddedHost | None = None) -> None:
        super().__init__(chan, chroot=root.encode())
        self._root = root.encode()
        self._root_real = os.path.realpath(root).encode()
        self._host = host
        conn = chan.get_connection()
        owner = conn.get_owner()
        self._session: _HostSSHServer | None = owner if isinstance(owner, _HostSSHServer) else None
        self._who = conn.get_extra_info("username") or "?"
        self._peer = _peer_of(conn)[1]
        self._created_logs: dict[int, bytes] = {}  # id(file) -> client path of a new log entry

    # -- guards ---------------------------------------------------------------

    def _guard(self) -> None:
        """Refuse (and end the connection) once the ID was removed or replaced."""
        if self._host is None or self._session is None:
            return
        problem = self._host.session_problem(self._session)
        if problem:
            self._host.end_session(self._session, problem)
            raise asyncssh.SFTPPermissionDenied("this communication ID was removed from the host")
        if not os.path.isdir(self._root):
            raise asyncssh.SFTPPermissionDenied("this communication ID's folder is gone from the host")

    def map_path(self, path: bytes) -> bytes:
        self._guard()
        mapped = super().map_path(path)
        real = os.path.realpath(mapped)
        if real != self._root_real and not real.startswith(self._root_real + b"/"):
            raise asyncssh.SFTPPermissionDenied("path leaves the share folder")
        return mapped

    @staticmethod
    def _not_root(path: bytes) -> None:
        if not _parts(path):
            raise asyncssh.SFTPPermissionDenied("the root folder cannot be changed")

    def _check_attrs(self, attrs: asyncssh.SFTPAttrs, st: os.stat_result, is_root: bool) -> None:
        """Refuse ownership changes and modes beyond user rw (rwx for folders)."""
        if attrs.uid is not None or attrs.gid is not None or attrs.owner or attrs.group:
            raise asyncssh.SFTPPermissionDenied("ownership cannot be changed on this host")
        if attrs.permissions is None:
            return
        mode = stat.S_IMODE(attrs.permissions)
        if mode == stat.S_IMODE(st.st_mode):
            attrs.permissions = None  # no change
            return
        if is_root:
            raise asyncssh.SFTPPermissionDenied("the mode of the root folder cannot be changed")
        allowed = DIR_MODE_MAX if stat.S_ISDIR(st.st_mode) else FILE_MODE_MAX
        if mode & ~allowed:
            raise asyncssh.SFTPPermissionDenied(
                f"mode {mode:04o} is not allowed on this host (at most {allowed:04o})"
            )
        attrs.permissions = mode

    # -- path operations ----------------------------------------------------------

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        mapped = self.map_path(path)
        self._check_attrs(attrs, os.stat(mapped), not _parts(path))
        super().setstat(path, attrs)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        mapped = self.map_path(path)
        self._check_attrs(attrs, os.lstat(mapped), not _parts(path))
        super().lsetstat(path, attrs)

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        creating = bool(pflags & asyncssh.FXF_CREAT)
        existed = False
        if creating:
            self._not_root(path)
            perms = FILE_MODE_MAX if attrs.permissions is None else attrs.permissions
            attrs.permissions = stat.S_IMODE(perms) & FILE_MODE_MAX
            existed = os.path.lexists(self.map_path(path))
        file_obj = super().open(path, pflags, attrs)
        if creating and not existed:
            parts = _parts(path)
            if len(parts) == 2 and parts[1] == b"config":
                self._area_created(parts[0])
            elif len(parts) == 3 and parts[1] == b"log" and _LOG_NAME.match(parts[2]):
                self._created_logs[id(file_obj)] = path
        return file_obj

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._not_root(path)
        perms = DIR_MODE_MAX if attrs.permissions is None else attrs.permissions
        attrs.permissions = stat.S_IMODE(perms) & DIR_MODE_MAX
        super().mkdir(path, attrs)

    def rmdir(self, path: bytes) -> None:
        self._not_root(path)
        super().rmdir(path)

    def remove(self, path: bytes) -> None:
        self._not_root(path)
        super().remove(path)
        parts = _parts(path)
        if len(parts) == 2 and parts[1] == b"config":
            self._area_deleted(parts[0], how="config removed")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("symbolic links are not allowed on this host")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._not_root(newpath)
        super().link(oldpath, newpath)
        self._published(newpath)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._not_root(oldpath)
        self._not_root(newpath)
        was_area = self._is_area(oldpath)
        old = os.fsdecode(self.map_path(oldpath))
        new = os.fsdecode(self.map_path(newpath))
        try:
            done = _renameat2_noreplace(old, new)
        except FileExistsError as exc:
            raise asyncssh.SFTPFileAlreadyExists("File already exists") from exc
        if not done:  # filesystem without RENAME_NOREPLACE: asyncssh's check-then-rename
            super().rename(oldpath, newpath)
        self._renamed(oldpath, newpath, was_area)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._not_root(oldpath)
        self._not_root(newpath)
        was_area = self._is_area(oldpath)
        super().posix_rename(oldpath, newpath)
        self._renamed(oldpath, newpath, was_area)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        mapped = self.map_path(path)
        for name in (b".", b".."):
            yield await self._to_sftpname(path, name)
        with os.scandir(mapped) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing: OpenSSH skips it too
                yield asyncssh.SFTPName(os.fsencode(entry.name), attrs=asyncssh.SFTPAttrs.from_local(st))

    # -- handle operations (no path: the guard runs explicitly) ---------------------

    def close(self, file_obj: object) -> None:
        """Close (never refused: asyncssh closes every handle this way at the end)."""
        path = self._created_logs.pop(id(file_obj), None)
        super().close(file_obj)
        if path is not None:
            self._log_entry_seen(path)

    def read(self, file_obj: object, offset: int, size: int) -> bytes | Awaitable[bytes]:
        self._guard()
        return super().read(file_obj, offset, size)

    def write(self, file_obj: object, offset: int, data: bytes) -> int | Awaitable[int]:
        self._guard()
        return super().write(file_obj, offset, data)

    def fstat(self, file_obj: object) -> Any:
        self._guard()
        return super().fstat(file_obj)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        self._guard()
        self._check_attrs(attrs, os.fstat(file_obj.fileno()), False)  # type: ignore[attr-defined]
        super().fsetstat(file_obj, attrs)

    def fsync(self, file_obj: object) -> None:
        self._guard()
        super().fsync(file_obj)

    def fstatvfs(self, file_obj: object) -> Any:
        self._guard()
        return super().fstatvfs(file_obj)

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        self._guard()
        super().lock(file_obj, offset, length, flags)

    def unlock(self, file_obj: object, offset: int, length: int) -> None:
        self._guard()
        super().unlock(file_obj, offset, length)

    # -- audit ------------------------------------------------------------------

    def _is_area(self, path: bytes) -> bool:
        parts = _parts(path)
        if len(parts) != 1:
            return False
        try:
            return os.path.isfile(posixpath.join(self.map_path(path), b"config"))
        except asyncssh.SFTPError:
            return False

    def _area_created(self, area: bytes) -> None:
        audit("area-created", id=self._who, area=os.fsdecode(area), peer=self._peer)

    def _area_deleted(self, area: bytes, how: str) -> None:
        audit("area-deleted", id=self._who, area=os.fsdecode(area), how=how, peer=self._peer)

    def _published(self, newpath: bytes) -> None:
        """A name just created by link/rename: an area's config, or a log entry."""
        parts = _parts(newpath)
        if len(parts) == 2 and parts[1] == b"config":
            self._area_created(parts[0])
        elif len(parts) == 3 and parts[1] == b"log" and _LOG_NAME.match(parts[2]):
            self._log_entry_seen(newpath)

    def _renamed(self, oldpath: bytes, newpath: bytes, was_area: bool) -> None:
        if was_area:
            new = _parts(newpath)
            if len(new) == 1 and not new[0].startswith(b"."):
                audit(
                    "area-renamed", id=self._who, area=os.fsdecode(_parts(oldpath)[0]),
                    to=os.fsdecode(new[0]), peer=self._peer,
                )
            else:
                self._area_deleted(_parts(oldpath)[0], how="renamed to " + os.fsdecode(b"/".join(new)))
        else:
            self._published(newpath)

    def _log_entry_seen(self, path: bytes) -> None:
        """Best effort: a new log entry whose JSON says "kind": "break" is a lock break."""
        try:
            with open(self.map_path(path), "rb") as f:
                entry = json.loads(f.read(MAX_LOG_READ))
        except (OSError, ValueError, asyncssh.SFTPError):
            return
        if not isinstance(entry, dict) or entry.get("kind") != "break":
            return
        writer = entry.get("writer")
        if not isinstance(writer, dict):
            writer = {}
        parts = _parts(path)
        audit(
            "lock-break", level=logging.WARNING, id=self._who, area=os.fsdecode(parts[0]),
            seq=os.fsdecode(parts[2]).lstrip("0") or "0", gen=entry.get("gen"),
            broken_holder=entry.get("broken_holder") or "-", by=writer.get("name"),
            note=entry.get("note"), peer=self._peer,
        )
