"""Where the local cache lives, how much it holds, and trimming it to its cap (least recently used first).

The cache is one folder per area id under the cache root. In each: `area.json` (log entries),
`held.json` (which version each local copy holds), `last-prune`, resolved format-2 manifests
`m2-<id>`, and format-1 plaintext chunks `<id[:2]>/<id>`. Only the chunks, the resolved
manifests of versions no local copy holds, and stale temp files are re-creatable: trimming
removes only those, oldest use (mtime; `ChunkCache.get` touches it) first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path

import platformdirs

CACHE_ENV = "CLOUDSHARE_CACHE"
CACHE_MAX_ENV = "CLOUDSHARE_CACHE_MAX"
DEFAULT_CACHE_MAX = 2 << 30  # 2 GiB over all areas
CACHE_APP = "cloudshare"
HELD = "held.json"  # which version each local copy holds (area/format2.py)
MANIFEST_PREFIX = "m2-"  # resolved format-2 manifests (area/format2.py)
LAST_PRUNE = "last-prune"  # when this computer's close last pruned the area (service/retention.py)
LAST_SWEEP = "last-sweep"  # …and when it last swept the area's tmp/
PROTECTED = frozenset({"area.json", HELD, LAST_PRUNE, LAST_SWEEP})  # never trimmed
STALE_TEMP_S = 3600  # a temp file older than this was left by a killed command
_ID = re.compile(r"[0-9a-f]{64}")
_TEMP = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # localfiles.atomic_write's temp names
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


# --- where ----------------------------------------------------------------------------------------


def cache_root(home: Path) -> Path:
    """`$CLOUDSHARE_CACHE`; else `<home>/cache` for a home given explicitly (CLOUDSHARE_HOME or
    --home: tests and portable installs keep everything together); else the user's cache folder."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if home_given(home):
        return Path(home) / "cache"
    return platformdirs.user_cache_path(CACHE_APP, appauthor=False)


def home_given(home: Path) -> bool:
    """Whether `home` was chosen (CLOUDSHARE_HOME or --home) rather than the default data folder."""
    from .registry import APP_NAME, HOME_ENV

    return bool(os.environ.get(HOME_ENV, "").strip()) or Path(home) != platformdirs.user_data_path(APP_NAME)


def adopt_old_cache(home: Path, root: Path) -> None:
    """Move the cache an earlier release kept in `<home>/cache` to `root` (best effort, once)."""
    old = Path(home) / "cache"
    if old == root or not old.is_dir() or root.exists():
        return
    with suppress(OSError):
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, root)


# --- how much -------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Bytes of "500MB", "2 GiB", "1.5g", "4096" (K/M/G/T are powers of 1024, as `human_size` shows
    them). ValueError if it is not such a size."""
    found = _SIZE.fullmatch(text)
    if not found:
        raise ValueError(text)
    return int(float(found.group(1)) * _UNITS[found.group(2).lower()])


def cache_cap() -> int:
    """The cap from `$CLOUDSHARE_CACHE_MAX` (default 2 GiB); ValueError if it is not a size."""
    text = os.environ.get(CACHE_MAX_ENV, "").strip()
    return parse_size(text) if text else DEFAULT_CACHE_MAX


def _files(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every regular file below `folder` with its stat (vanishing ones skipped)."""
    with suppress(OSError):
        for entry in os.scandir(folder):
            with suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    yield from _files(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield Path(entry.path), entry.stat(follow_symlinks=False)


def folder_size(folder: Path) -> int:
    """Bytes of the files below `folder` (0 if it does not exist)."""
    return sum(st.st_size for _path, st in _files(folder))


def area_cache_bytes(root: Path, area_id: str | None) -> int:
    """Bytes the cache holds for area `area_id` (0 for none)."""
    return folder_size(Path(root) / area_id) if area_id else 0


# --- trimming -------------------------------------------------------------------------------------


def _held_manifests(area_dir: Path) -> set[str]:
    """The manifest ids of the versions the local copies hold (from `held.json`)."""
    try:
        held = json.loads((area_dir / HELD).read_bytes())
    except (OSError, ValueError):
        return set()
    return {v for v in held.values() if isinstance(v, str)} if isinstance(held, dict) else set()


def _removable(area_dir: Path, path: Path, st: os.stat_result, held: set[str], now: float) -> bool:
    """Whether `path` (in `area_dir`) is a re-creatable entry the cap may remove."""
    name = path.name
    if _TEMP.fullmatch(name):
        return now - st.st_mtime > STALE_TEMP_S
    if path.parent == area_dir:
        return name.startswith(MANIFEST_PREFIX) and name[len(MANIFEST_PREFIX):] not in held
    return path.parent.parent == area_dir and bool(_ID.fullmatch(name)) and path.parent.name == name[:2]


def grew_since(area_dir: Path, since: float) -> bool:
    """Whether a resolved manifest was written in `area_dir` at `since` or later (one listing)."""
    with suppress(OSError):
        for entry in os.scandir(area_dir):
            if entry.name.startswith(MANIFEST_PREFIX) and entry.stat().st_mtime >= since - 2:
                return True
    return False


def trim(root: Path, cap: int) -> tuple[int, int]:
    """Remove re-creatable entries, least recently used first, until the cache holds at most `cap`
    bytes (protected files still count); returns (files removed, bytes freed)."""
    root, now = Path(root), time.time()
    total, candidates = 0, []
    with suppress(OSError):
        for area_dir in (Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)):
            held = _held_manifests(area_dir)
            for path, st in _files(area_dir):
                total += st.st_size
                if _removable(area_dir, path, st, held, now):
                    candidates.append((st.st_mtime, st.st_size, path))
    removed = freed = 0
    for _mtime, size, path in sorted(candidates, key=lambda c: c[0]):
        if total - freed <= cap:
            break
        with suppress(OSError):
            path.unlink()
            removed, freed = removed + 1, freed + size
    _drop_empty_folders(root)
    return removed, freed


def _drop_empty_folders(root: Path) -> None:
    """Remove the empty chunk folders a trim left (a folder in use again is re-made)."""
    with suppress(OSError):
        for area_dir in os.scandir(root):
            if area_dir.is_dir(follow_symlinks=False):
                for sub in os.scandir(area_dir.path):
                    if sub.is_dir(follow_symlinks=False) and len(sub.name) == 2:
                        with suppress(OSError):
                            os.rmdir(sub.path)


def drop_objects(area_dir: Path, object_ids: Iterable[str]) -> int:
    """Remove the cached chunks and resolved manifests (of versions no local copy holds) whose id is
    in `object_ids` (objects the area no longer needs); returns the count."""
    area_dir, ids = Path(area_dir), set(object_ids)
    if not ids or not area_dir.is_dir():
        return 0
    held, now, removed = _held_manifests(area_dir), time.time(), 0
    for path, st in list(_files(area_dir)):
        oid = path.name.removeprefix(MANIFEST_PREFIX)
        if oid in ids and _removable(area_dir, path, st, held, now):
            with suppress(OSError):
                path.unlink()
                removed += 1
    return removed


def remove_area(root: Path, area_id: str | None) -> None:
    """Remove the cache of area `area_id` (leave, forget, delete-area); best effort."""
    if area_id and re.fullmatch(r"[0-9A-Za-z_-]+", area_id):  # never a path outside the cache root
        shutil.rmtree(Path(root) / area_id, ignore_errors=True)
