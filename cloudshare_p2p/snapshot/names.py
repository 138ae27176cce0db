"""Names a share may hold: safe relative paths, names Windows accepts, no case clashes."""

from __future__ import annotations

import re
import unicodedata

from .. import errors
from ..i18n import _

_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def _malformed(p: str) -> bool:
    """True if `p` is not a "/"-separated relative path of plain components."""
    if not isinstance(p, str) or not p or p.startswith("/") or _DRIVE_RE.match(p):
        return True
    if "\\" in p or ":" in p or any(ord(ch) < 0x20 for ch in p):
        return True
    return any(part in ("", ".", "..") for part in p.split("/"))


def safe_relpath(p: str) -> str:
    """Return `p` if it is a safe "/"-separated relative path, else raise UnsafePath.

    Refused: empty, absolute, "." / ".." / empty components, backslashes, NUL or other
    control characters, ":" (drive letters, Windows alternate data streams), and any
    component that `windows_name_problem` refuses.
    """
    if _malformed(p):
        raise errors.UnsafePath(_("the manifest names an unsafe path: {p!r}").format(p=p))
    for part in p.split("/"):
        if problem := windows_name_problem(part):
            raise errors.UnsafePath(_("the manifest names a path Windows cannot hold: {p!r} ({problem})")
                .format(p=p, problem=problem))
    return p


_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)
_WINDOWS_BAD_CHARS = frozenset('<>:"/\\|?*')


def windows_name_problem(name: str) -> str | None:
    """Why a file or folder called `name` cannot be shared with Windows (or any) clients; None if fine."""
    if not name:
        return _("the name is empty")
    bad = next((ch for ch in name if ch in _WINDOWS_BAD_CHARS or ord(ch) < 0x20), None)
    if bad is not None:
        return _("it contains {char!r}, which Windows does not allow in names").format(char=bad)
    if name[-1] in ". ":
        return _("it ends with a dot or a space, which Windows drops")
    device = name.partition(".")[0].rstrip(" ")
    if device.upper() in _RESERVED:
        return _("{device} is a device name Windows reserves (even with an extension)").format(device=device)
    if unicodedata.normalize("NFC", name) != name:
        return _("it is not in Unicode NFC form (as older Mac disks write it); Windows sees another name")
    if len(name.encode("utf-8")) > 255:
        return _("it is longer than 255 bytes, which Linux and Mac computers cannot hold")
    return None


def _case_key(name: str) -> str:
    """Upper case by simple 1:1 mapping, as Windows compares names (so "ß" stays "ß")."""
    return "".join(up if len(up := ch.upper()) == 1 else ch for ch in name)


def _case_clash(paths: list[str]) -> tuple[str, str] | None:
    """Two paths (or their folders) that differ only in case, if any."""
    seen: dict[str, str] = {}
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            first = seen.setdefault(_case_key(prefix), prefix)
            if first != prefix:
                return first, prefix
    return None
