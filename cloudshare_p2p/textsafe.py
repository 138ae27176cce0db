"""Text that came from the host, made safe to print and bounded in size.

Anyone with the SFTP login can write lock records and log entries, so holder names, notes
and writer names are untrusted: a terminal must never receive their control characters
(ESC sequences, BEL, OSC 52 clipboard writes) nor their bidi overrides.
"""

from __future__ import annotations

import unicodedata

from .i18n import _

MAX_NOTE = 1024  # bytes of UTF-8 in a note (lock records and log entries)
MAX_NAME = 200  # characters of a party's name or host shown to others
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, limit: int | None = None) -> str:
    """`value` as text with control and bidi characters escaped (``\\x1b``), cut to `limit`."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return "".join(
        _escape(ch) if (unicodedata.category(ch) == "Cc" or ch in _BIDI) else ch for ch in text
    )


def note_problem(note: str) -> str | None:
    """Why a note cannot be used (too long), or None."""
    size = len(note.encode("utf-8", "surrogatepass"))
    if size > MAX_NOTE:
        return _("the note is {size} bytes; at most {limit} are allowed").format(size=size, limit=MAX_NOTE)
    return None
