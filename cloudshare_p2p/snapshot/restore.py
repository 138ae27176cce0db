"""Restoring a manifest: build it in a temp sibling, verify every chunk, then swap it in."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .. import crypto, errors
from ..i18n import _
from .diskerrors import _disk_error, _FetchFailed, _in_use, _tagged
from .fileops import _fsync_dir, _remove
from .leftovers import clean_leftovers
from .manifest import FileEntry, Manifest, validate_manifest
from .names import safe_relpath
from .pending import _keep_pending, finish_pending
from .swap import _swap_in
from .tempnames import _temp_path

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _write_entry(
    entry: FileEntry, dest: Path, fetch: Callable[[str], bytes], keys: crypto.Keys
) -> None:
    """Write one file from verified chunks, check its size, then set mode and mtime."""
    written = 0
    fd = os.open(dest, _OPEN_FLAGS, 0o600)
    with os.fdopen(fd, "wb") as fh:
        for cid in entry.chunks:
            data = fetch(cid)
            crypto.verify_chunk(keys, cid, data)
            written += len(data)
            if written > entry.size:
                break
            fh.write(data)
        if written != entry.size:
            raise errors.AreaCorrupt(_("file {path!r}: size {written} != {size}").format(
                path=entry.path, written=written, size=entry.size))
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(dest, entry.mode & 0o777)
    os.utime(dest, (entry.mtime, entry.mtime))


def _inside(tmp_root: Path, rel: str) -> Path:
    """Join `rel` under `tmp_root`, create its folders, and check it stays inside."""
    dest = tmp_root.joinpath(*safe_relpath(rel).split("/"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(tmp_root):
        raise errors.UnsafePath(_("the manifest path {rel!r} leaves the data set").format(rel=rel))
    return dest


def _build(manifest: Manifest, tmp: Path, fetch: Callable[[str], bytes], keys: crypto.Keys) -> None:
    if manifest.kind == "file":
        _write_entry(manifest.files[0], tmp, fetch, keys)
        return
    tmp.mkdir()
    tmp_root = tmp.resolve()
    for entry in manifest.files:
        _write_entry(entry, _inside(tmp_root, entry.path), fetch, keys)


def _build_temp(target: Path, build: Callable[[Path], None]) -> Path:
    """`build` the version in a fresh temp sibling; on any error remove it (disk errors ->
    LocalDiskError, a failed fetch -> its own error)."""
    tmp = _temp_path(target, "t")
    try:
        build(tmp)
    except _FetchFailed as exc:
        _remove(tmp)
        raise exc.original from None
    except OSError as exc:
        _remove(tmp)
        raise _disk_error(exc, tmp, target) from exc
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _put_in_place(tmp: Path, target: Path, manifest: Manifest) -> None:
    """Swap the built version in; if `target` is in use keep the build as pending (FileInUse)."""
    try:
        _swap_in(tmp, target)
    except PermissionError as exc:  # Windows: WinError 5 / 32 / 33, held open; POSIX: immutable
        raise _in_use(target, _keep_pending(tmp, target, manifest)) from exc
    except OSError as exc:
        _remove(tmp)
        raise _disk_error(exc, tmp, target) from exc
    except BaseException:
        _remove(tmp)
        raise


def restore(
    manifest: Manifest, target: Path, fetch: Callable[[str], bytes], keys: crypto.Keys
) -> None:
    """Build the version in a temp sibling, verifying every chunk, then swap it in.

    `fetch(chunk_id)` returns plaintext (downloaded and opened, or from a ChunkCache).
    On any error the temp is removed and `target` is left untouched; a disk that refuses
    a write raises LocalDiskError. If `target` is in use (FileInUse), what was received
    is kept and the next restore of the same manifest puts it in place without fetching.
    Leftovers of killed restores are cleaned first.
    """
    restore_with(manifest, target, keys, lambda tmp: _build(manifest, tmp, _tagged(fetch), keys))


def restore_with(manifest: Manifest, target: Path, keys: crypto.Keys,
                 build: Callable[[Path], None]) -> None:
    """What every restore does around `build(tmp)` (which writes the version into `tmp`):
    validate, clean leftovers, finish a pending copy, build in a temp sibling, swap it in."""
    validate_manifest(manifest)
    target = Path(target)
    clean_leftovers(target)
    if finish_pending(target, manifest, keys):
        return
    tmp = _build_temp(target, build)
    _put_in_place(tmp, target, manifest)
    _fsync_dir(target.parent)
