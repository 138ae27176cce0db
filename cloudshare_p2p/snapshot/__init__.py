"""The local side of a version: scan a data set into chunks, restore a manifest safely.

This package re-exports the names the rest of cloudshare imports; each module has one job:
`names` (what a share may be called), `manifest` (FileEntry, Manifest, validation), `scan`
(LocalSnapshot, fingerprints, quick_stamp), `chunkcache` (ChunkCache), `restore` (build and
swap in), `swap` (put in place, settle the old copy), `pending` (targets in use), `diskerrors`,
`tempnames` and `leftovers` (our temps and their cleanup), `aside` (keep_aside), `fileops`.

A data set is one file (manifest kind "file", one entry with path "") or a folder
(kind "folder", one entry per regular file, "/"-separated relative paths, sorted).

Chunking is fixed-size (1 MiB): accounting databases are page files edited in place, so
an in-place edit changes only the chunks it touches. The manifest records the chunker.

Folder rules (scan): walked in sorted order; only regular files are kept; symlinks and
special files are SKIPPED (never followed) and listed in `LocalSnapshot.skipped` so the
caller can warn. Empty folders are not recorded. Only permission bits (mode & 0o777) are
kept. A data set path that is itself a symlink is refused (restore would replace the link).

Names (scan and received manifests): every name must be one a Windows computer can hold
(`windows_name_problem`: no reserved device names, no `<>:"/\\|?*` or control characters,
no trailing dot or space, NFC only, at most 255 UTF-8 bytes) and no two names in one folder
may differ only in case. Names are refused, never rewritten, so a fingerprint always
describes the names on disk.

Restore (`restore`): the version is built in a hidden temp sibling `.~cs-t…` (a short name,
whatever the target's length), then swapped in. A disk that refuses a write raises
`errors.LocalDiskError` and leaves the target untouched; a target held open by another
program raises `errors.FileInUse` and keeps what was received as `.~cs-p…`, which the next
restore of the same version puts in place without receiving again. Local items the scan
does not share (symlinks, pipes, devices) are carried into the new version, never deleted.
Leftovers of a killed restore are removed by `clean_leftovers` (run by `restore`).
"""

from .aside import keep_aside
from .chunkcache import ChunkCache
from .leftovers import clean_leftovers
from .manifest import (
    CHUNK_SIZE,
    CHUNKER,
    KINDS,
    MANIFEST_VERSION,
    PER_FILE,
    FileEntry,
    Manifest,
    validate_manifest,
)
from .names import safe_relpath, windows_name_problem
from .pending import finish_pending, pending_restore
from .restore import restore
from .scan import LocalSnapshot, data_size, local_fingerprint, quick_stamp
from .tempnames import TEMP_PREFIX, _tag, _temp_path

__all__ = [
    "CHUNKER",
    "CHUNK_SIZE",
    "KINDS",
    "MANIFEST_VERSION",
    "PER_FILE",
    "TEMP_PREFIX",
    "ChunkCache",
    "FileEntry",
    "LocalSnapshot",
    "Manifest",
    "_tag",
    "_temp_path",
    "clean_leftovers",
    "data_size",
    "finish_pending",
    "keep_aside",
    "local_fingerprint",
    "pending_restore",
    "quick_stamp",
    "restore",
    "safe_relpath",
    "validate_manifest",
    "windows_name_problem",
]
