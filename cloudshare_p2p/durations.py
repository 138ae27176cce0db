"""Durations as people type and read them: ``90s``, ``30m``, ``8h``, ``1h30m``, ``1d``."""

from __future__ import annotations

import re

from .i18n import _

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
MAX_DURATION = 7 * 86400  # the longest lease a client may ask for


def parse_duration(text: str, maximum: int | None = MAX_DURATION) -> int:
    """Whole seconds (>= 1) from ``90s``, ``30m``, ``8h``, ``1h30m``; a bare number is refused."""
    raw = (text or "").strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        raise ValueError(_("{raw!r} has no unit: say {raw}h or {raw}m (or {raw}s)").format(raw=raw))
    parts = list(_PART.finditer(raw))
    if not parts or "".join(m.group(0) for m in parts).replace(" ", "") != raw.replace(" ", ""):
        raise ValueError(_("not a duration: {text!r} (use e.g. 90s, 30m, 8h, 1h30m)").format(text=text))
    seconds = sum(float(m.group(1)) * _UNITS[m.group(2).lower()] for m in parts)
    if seconds < 1:
        raise ValueError(_("duration too short: {text!r} (at least 1s)").format(text=text))
    if maximum is not None and seconds > maximum:
        raise ValueError(_("duration too long: {text!r} (at most {maximum})").format(
            text=text, maximum=format_duration(maximum)))
    return int(seconds)


def format_duration(seconds: float) -> str:
    """Human form of a duration, e.g. ``8h``, ``1h30m``, ``45s`` (what `parse_duration` reads)."""
    seconds = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
