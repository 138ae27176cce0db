"""The records on the host as data: format constants and the checks on what clients write and read.

Everything here is pure: limits and names of the format (docs/area-format.md), the checks a
client applies before writing (notes, leases, area names, the config), and the field checks
that decide whether a lock record or log entry read from the host is usable or void. Records
come from other installations and are untrusted: a field of the wrong type or out of range
makes its record void, never an exception.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, overload

from .. import errors
from ..i18n import _
from ..textsafe import MAX_NAME, MAX_NOTE, note_problem, printable
from .model import Version

FORMAT = "cloudshare-area"
FORMAT_VERSION = 1  # what `create` writes; the first format-2 commit upgrades the area
FORMAT_VERSIONS = (1, 2)  # what this program reads
RECORD_VERSION = 1
AREA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENTRY_NAME = re.compile(r"[0-9]{20}")
OBJECT_ID = re.compile(r"[0-9a-f]{64}")
FENCING_KINDS = ("fence", "break")
MAX_APPEND_TRIES = 64
MAX_RECORD = 16 << 10  # lock records and log entries; a larger one is void (notes are at most 1 KiB)
MAX_CONFIG = 64 << 10
MAX_LEASE = 7 * 86400  # the longest lease a client may ask for; a record saying more is malformed
MAX_TIME = 1 << 34  # server seconds (year 2514): a larger time in a record is malformed
MAX_COUNT = 1 << 53  # generations, sequence numbers, sizes
MAX_PRUNED = 500  # version numbers in one `prune` entry (16-digit numbers stay far below 16 KiB)
MAX_SEALED_POLICY = 2048  # base64 characters of a `policy` entry's sealed record


def _name(n: int) -> str:
    """The file name of generation or sequence number `n` (20 digits)."""
    return f"{n:020d}"


def _nowiso_utc() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- what a client may write ------------------------------------------------------------------


def check_note(note: str) -> str:
    """A note a client may write: at most 1 KiB (a longer one is refused, not cut)."""
    problem = note_problem(note or "")
    if problem:
        raise errors.InvalidName(problem, hint=_("write a shorter note (about one line)"))
    return note or ""


def check_lease(seconds: int) -> int:
    """A lease a client may ask for: 1 s to 7 days."""
    if not isinstance(seconds, int) or not 1 <= seconds <= MAX_LEASE:
        raise errors.InvalidName(_("a lease of {seconds} s is out of range (at most 7 days)").format(
            seconds=seconds),
                                 hint=_("ask for at most 7 days (for example --lease 8h)"))
    return seconds


def validate_area_name(name: str) -> str:
    """Area names are one path component: letters, digits, ``._-``, at most 64."""
    if not AREA_NAME.fullmatch(name or ""):
        raise errors.InvalidName(
            _("invalid area name {name!r}").format(name=name),
            hint=_("use letters, digits, '.', '_' or '-' (at most 64, not starting with '.')"),
        )
    return name


def parse_config(raw: bytes) -> dict[str, Any]:
    """Check the format and version before anything else."""
    try:
        config = json.loads(raw)
    except ValueError:
        raise errors.AreaCorrupt(_("the area config is not valid JSON")) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise errors.AreaCorrupt(_("this folder is not a cloudshare area"))
    version = config.get("version")
    if isinstance(version, bool) or version not in FORMAT_VERSIONS:
        raise errors.UnsupportedFormat(
            _("the area uses format version {version}; this program knows {format_version}").format(
                version=config.get('version'), format_version=max(FORMAT_VERSIONS))
        )
    for key in ("area_id", "dataset", "kdf", "wrapped_key"):
        if key not in config:
            raise errors.AreaCorrupt(_("the area config lacks {key!r}").format(key=key))
    return config


# --- reading untrusted records ------------------------------------------------------------------


@overload
def _int(value: Any, default: int = 0, limit: int = MAX_COUNT) -> int: ...


@overload
def _int(value: Any, default: None, limit: int = MAX_COUNT) -> int | None: ...


def _int(value: Any, default: int | None = 0, limit: int = MAX_COUNT) -> int | None:
    """A non-negative int up to `limit` from a record field, or `default` (records are untrusted)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
    return value if ok else default


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """A JSON object, or None (torn, malformed, or not an object: void)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _dict(value: Any) -> dict[str, Any]:
    """A party record from the host: only string fields, made printable and bounded."""
    if not isinstance(value, dict):
        return {}
    return {k: printable(v, MAX_NAME) for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _note(value: Any) -> str:
    """A note from the host: printable, at most about 1 KiB shown."""
    return printable(value, MAX_NOTE) if isinstance(value, str) else ""


def commit_version(entry: dict[str, Any], number: int) -> Version:
    """The `Version` number `number` that a valid commit entry stands for (its fields bounded)."""
    return Version(
        version=number, seq=entry["seq"], manifest=entry["manifest"],
        size=_int(entry.get("size"), 0), writer=_dict(entry.get("writer")),
        time=printable(entry.get("time", ""), 40), gen=entry["gen"], note=_note(entry.get("note")),
        restored_from=_int(entry.get("restored_from"), None),
    )


def _entry_time(entry: dict[str, Any]) -> str:
    """The time of a log entry in this computer's time zone (its text if it cannot be read)."""
    raw = entry.get("time")
    try:
        when = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return printable(raw, 40) or "?"


def _optional_int_ok(record: dict[str, Any], key: str, limit: int) -> bool:
    value = record.get(key)
    return value is None or _int(value, None, limit) is not None


def _lock_fields_ok(record: dict[str, Any]) -> bool:
    """Every field a reader uses is of the right type and within range."""
    return (
        _optional_int_ok(record, "lease_seconds", MAX_LEASE)
        and _optional_int_ok(record, "since", MAX_TIME)
        and _optional_int_ok(record, "gen", MAX_COUNT)
        and isinstance(record.get("session", ""), str | None)
        and isinstance(record.get("kind", ""), str)
        and isinstance(record.get("holder", {}), dict | None)
        and isinstance(record.get("note", ""), str | None)
    )


def _entry_fields_ok(entry: dict[str, Any]) -> bool:
    """A log entry whose fields are all usable; otherwise the entry is void."""
    return (
        _int(entry.get("gen"), None) is not None
        and isinstance(entry.get("kind"), str)
        and isinstance(entry.get("session", ""), str | None)
        and isinstance(entry.get("writer", {}), dict)
        and isinstance(entry.get("note", ""), str | None)
        and isinstance(entry.get("time", ""), str)
        and _optional_int_ok(entry, "size", MAX_COUNT)
        and _optional_int_ok(entry, "base", MAX_COUNT)
        and _optional_int_ok(entry, "restored_from", MAX_COUNT)
        and _kind_fields_ok(entry)
    )


def _kind_fields_ok(entry: dict[str, Any]) -> bool:
    """The fields only some kinds carry (format 2): `prune` names version numbers, `policy`
    carries a sealed record. Other kinds have nothing more to check."""
    kind = entry.get("kind")
    if kind == "prune":
        pruned = entry.get("pruned")
        return (isinstance(pruned, list) and 0 < len(pruned) <= MAX_PRUNED
                and all(_int(n, None) is not None and n >= 1 for n in pruned))
    if kind == "policy":
        sealed = entry.get("sealed")
        return isinstance(sealed, str) and 0 < len(sealed) <= MAX_SEALED_POLICY
    return True
