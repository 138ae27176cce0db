"""Our hidden temporary names next to a target: building, replaced and pending copies."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import secrets
from pathlib import Path

from .manifest import Manifest

# Our own temporary names, next to the target: short whatever the target's name (so never
# over 255 bytes, and as little as possible towards Windows' 260-character paths), never a
# Windows reserved name. t = a version being built, o = the replaced copy during a swap,
# p = a version received but not yet put in place (the target was in use).
TEMP_PREFIX = ".~cs-"
_TEMP_RE = re.compile(
    r"\.~cs-(?P<kind>[to])(?P<tag>[0-9a-f]{6})-(?P<host>[0-9a-f]{4})-(?P<pid>[0-9]{1,10})-[0-9a-f]{6}"
)
_LEGACY_RE = re.compile(r"\.cloudshare-(?P<kind>tmp|old)-[0-9a-f]{8,12}")  # before 2026-12
_HOST = hashlib.sha256(platform.node().encode("utf-8", "replace")).hexdigest()[:4]


def _tag(target: Path) -> str:
    return hashlib.sha256(target.name.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def _temp_path(target: Path, kind: str) -> Path:
    """A fresh temp sibling of `target`: `.~cs-<kind><tag>-<host>-<pid>-<random>`."""
    return target.with_name(
        f"{TEMP_PREFIX}{kind}{_tag(target)}-{_HOST}-{os.getpid()}-{secrets.token_hex(3)}"
    )


def _pending_path(target: Path, manifest: Manifest) -> Path:
    h = hashlib.sha256()
    for part in manifest.json_parts():  # the manifest's JSON, never held whole
        h.update(part)
    digest = h.hexdigest()[:12]
    return target.with_name(f"{TEMP_PREFIX}p{_tag(target)}-{digest}")
