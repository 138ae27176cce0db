"""Walking one area through the public `Area` API and collecting what is wrong with it.

The order is the format's: the config first (a broken one stops the walk), the floor (format 2:
a malformed top floor stops it too, nothing below it can be known), then the lock records above
the floor, the log from the floor and its versions, the manifests they name, the chunks and packs, and `tmp/`.
Versions a `prune` entry names are not checked: their removed objects are expected.
Without keys only plaintext is checked; every read goes through the format's size limits.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any

from statemachine.floor import NO_FLOOR, Floor

from .. import crypto, errors
from ..area import ENTRY_NAME, MAX_RECORD, OBJECT_ID, Area, Version
from ..area import floor as area_floor
from ..area.packs import pack_path, read_chunks
from ..i18n import _
from ..snapshot import CHUNK_SIZE, CHUNKER, PER_FILE, Manifest
from ..snapshot.manifest2 import MAX_PACK, Loc
from ..textsafe import printable
from ..transport import FileTooLarge, Stat
from .report import DAMAGE, OBJECTS, READ_DATA, STRUCTURE, WARNING, CheckReport

SEAL_OVERHEAD = crypto.HEADER_SIZE + crypto.NONCE_SIZE + crypto.TAG_SIZE  # 33 bytes around the zstd frame
MIN_SEALED = SEAL_OVERHEAD + 1
MAX_SEALED_CHUNK = CHUNK_SIZE + (1 << 16)  # what a reader reads of a chunk
MAX_SEALED_MANIFEST = 64 << 20  # what a reader reads of a manifest
STALE_TMP = 86400  # temporary files older than this may be removed by anyone
TMP_NAME = re.compile(r"[0-9a-f]{32}\.tmp|\.clock-[0-9a-f]{32}")
SHOWN_NAME = 80  # characters of a foreign file name shown


def check_area(area: Area, read_data: bool = False) -> CheckReport:
    """Check `area`; with its keys unlocked also manifests and chunks (`read_data`: every byte)."""
    mode = STRUCTURE if area.keys is None else (READ_DATA if read_data else OBJECTS)
    report = CheckReport(area.name, mode)
    if not _config_ok(area, report):
        return report
    floor = _check_floor(area, report)
    if floor is None:
        return report
    _check_lock(area, report, floor)
    pruned = area.pruned_versions()
    versions = [v for v in _check_log(area, report, floor) if v.version not in pruned]
    report.versions = [v.version for v in versions]
    manifests = _check_manifests(area, versions, report)
    if area.keys is None:
        _check_object_store(area, "chunks", MAX_SEALED_CHUNK, report)
        _check_object_store(area, "packs", MAX_PACK, report, missing_ok=True)
    else:
        _check_chunks(area, versions, manifests, report, read_data)
    _check_tmp(area, report)
    return report


def _config_ok(area: Area, report: CheckReport) -> bool:
    """The config first (format, version, fields); a broken one stops the check.

    An unknown format version is not damage: `UnsupportedFormat` goes to the caller (exit 11).
    """
    try:
        config = area.load()
    except errors.AreaCorrupt as exc:
        report.add(DAMAGE, "config", _("the config is unusable: {error}").format(error=exc))
        return False
    for problem in _config_problems(config):
        report.add(DAMAGE, "config", problem)
    return not report.damaged


def _config_problems(config: dict[str, Any]) -> list[str]:
    """Field checks a reader makes only when it unlocks the keys (none needs the password)."""
    out = []
    if not (isinstance(config.get("area_id"), str) and _hex(config["area_id"], 32)):
        out.append(_("area_id is not 32 lowercase hex digits"))
    kdf = config.get("kdf")
    if not (isinstance(kdf, dict) and kdf.get("name") == "scrypt"
            and all(_positive_int(kdf.get(k)) for k in ("n", "r", "p", "length"))
            and _b64_size(kdf.get("salt")) == 16):
        out.append(_("kdf is not scrypt with integer n, r, p, length and a 16-byte salt"))
    wrapped = crypto.NONCE_SIZE + crypto.KEY_SIZE + crypto.TAG_SIZE
    if _b64_size(config.get("wrapped_key")) != wrapped:
        out.append(_("wrapped_key is not {size} bytes of base64").format(size=wrapped))
    return out


def _check_floor(area: Area, report: CheckReport) -> Floor | None:
    """The floor chain (format 2): the highest floor that is not void MUST be valid (else
    damage, and None: stop); a void one above it (torn, not JSON) is a warning, as is a missing
    floor below the top (clients read only the top). In a version-1 area a floor means nothing
    and is a warning."""
    numbers = _numbered(area, area_floor.FOLDER, report, missing_ok=True)
    if not numbers:
        return NO_FLOOR
    if area.load().get("version") == 1:
        report.add(WARNING, f"{area_floor.FOLDER}/", _("a floor in a version-1 area: clients ignore it"))
        return NO_FLOOR
    top = area_floor.top_number(area, numbers[-1])
    floor = NO_FLOOR
    for number in range(top, max(0, top - area_floor.MAX_VOID), -1):
        try:
            got = area_floor.read_floor(area, number)
        except errors.AreaCorrupt:
            report.add(DAMAGE, f"{area_floor.FOLDER}/{number:020d}", _(
                "the floor is malformed: what lies below it (the compacted log and lock) cannot be known, "
                "so no version can be numbered"))
            return None
        if got is not None:
            floor = got[0]
            break
        report.add(WARNING, f"{area_floor.FOLDER}/{number:020d}", _(
            "void floor (torn or not JSON): clients use the floor below it"))
    if floor is NO_FLOOR and top > area_floor.MAX_VOID:
        report.add(DAMAGE, f"{area_floor.FOLDER}/", _("no floor among the highest is valid: clients stop"))
        return None
    _report_gap(report, area_floor.FOLDER, numbers, WARNING)
    return floor


def _check_lock(area: Area, report: CheckReport, floor: Floor) -> None:
    """Generations contiguous from the floor's (1 without one); the top record (the one clients
    judge) readable, `gen` its name.

    Records below the top are never read by a client (renewals make thousands), so they are
    listed, not read. Records below the floor are compacted history or void re-creations.
    """
    gens = [g for g in _numbered(area, "lock", report) if g >= floor.lock]
    report.lock_records = len(gens)
    for gen in gens[-1:]:
        record = _read_record(area, "lock", gen)
        if record is None or type(record.get("gen")) is not int or record["gen"] != gen:
            report.add(WARNING, f"lock/{gen:020d}", _(
                "void lock record (torn, too large, or not its generation): it counts as a claim "
                "with no lease"))
    _report_gap(report, "lock", gens, WARNING, floor.lock)


def _check_log(area: Area, report: CheckReport, floor: Floor) -> list[Version]:
    """Void entries and gaps in the log from the floor on (slots below it are compacted, not
    missing); returns the versions, by the validity rule."""
    seqs = [s for s in _numbered(area, "log", report) if s >= floor.seq]
    report.log_entries = len(seqs)
    readable = {entry["seq"] for entry in area.log()}
    head = _contiguous_head(seqs, floor.seq)
    for seq in seqs:
        if seq <= head and seq not in readable:
            report.add(WARNING, f"log/{seq:020d}", _(
                "void log entry (torn, too large or malformed): every client skips it"))
    _report_gap(report, "log", seqs, DAMAGE, floor.seq)
    return area.versions()


def _check_manifests(area: Area, versions: list[Version], report: CheckReport) -> dict[str, Manifest]:
    """Every manifest a version names: present, of a plausible size, and with keys, opened."""
    users: dict[str, list[Version]] = {}
    for version in versions:
        users.setdefault(version.manifest, []).append(version)
    opened: dict[str, Manifest] = {}
    for manifest_id, named_by in users.items():
        area.check_interrupt()
        where, numbers = f"manifests/{manifest_id}", [v.version for v in named_by]
        st = _object_stat(area, where, MAX_SEALED_MANIFEST, numbers, report)
        if st is None:
            continue
        report.manifests_checked += 1
        if area.keys is None:
            continue
        report.bytes_read += st.size
        try:
            opened[manifest_id] = area.read_manifest(named_by[0])
        except (errors.AreaCorrupt, errors.UnsupportedFormat) as exc:
            report.add(DAMAGE, where, _("the manifest does not open: {error}").format(error=exc), numbers)
    return opened


def _check_chunks(area: Area, versions: list[Version], manifests: dict[str, Manifest], report: CheckReport,
                  read_data: bool) -> None:
    """Every chunk the manifests name: present, plausibly sized; `read_data`: opens and verifies."""
    numbers: dict[str, set[int]] = {}
    for version in versions:
        numbers.setdefault(version.manifest, set()).add(version.version)
    expected: dict[str, int] = {}
    users: dict[str, set[int]] = {}
    for manifest_id, manifest in manifests.items():
        for chunk_id, size in _chunk_sizes(manifest):
            expected[chunk_id] = size
            users.setdefault(chunk_id, set()).update(numbers.get(manifest_id, ()))
    _check_packs(area, versions, manifests, report, read_data)
    for chunk_id in sorted(expected):
        area.check_interrupt()
        where, affected = f"chunks/{chunk_id[:2]}/{chunk_id}", users[chunk_id]
        report.chunks_checked += 1
        limit = min(MAX_SEALED_CHUNK, _sealed_bound(expected[chunk_id]))
        st = _object_stat(area, where, limit, affected, report)
        if st is not None and read_data:
            report.bytes_read += st.size
            _read_chunk(area, chunk_id, expected[chunk_id], where, affected, report)


def _check_packs(area: Area, versions: list[Version], manifests: dict[str, Manifest], report: CheckReport,
                 read_data: bool) -> None:
    """Format 2: every pack a version needs, present and plausibly sized; `read_data`: every
    chunk of every such version opened and verified (frames read as a reader does)."""
    users: dict[str, set[int]] = {}
    wanted: dict[str, Loc] = {}
    for version in versions:
        manifest = manifests.get(version.manifest)
        if manifest is None or manifest.chunker != PER_FILE:
            continue
        resolved, _chain = area.resolve_manifest(version.manifest, version.version)
        wanted.update(resolved.where)
        for pack in resolved.packs():
            users.setdefault("/".join(pack_path(pack)), set()).add(version.version)
    present = [where for where in sorted(users)
               if _object_stat(area, where, MAX_PACK, sorted(users[where]), report) is not None]
    report.chunks_checked += len(wanted)
    if not read_data:
        return
    for where in present:  # pack by pack, so that a damaged one names only its versions
        area.check_interrupt()
        inside = {cid: loc for cid, loc in wanted.items() if "/".join(pack_path(loc.pack)) == where}
        try:
            for _cid, data in read_chunks(area.session, area.p, area.require_keys(), inside):
                report.bytes_read += len(data)
        except errors.AreaCorrupt as exc:
            report.add(DAMAGE, where, _("the chunk does not open: {error}").format(error=exc),
                       sorted(users[where]))


def _read_chunk(area: Area, chunk_id: str, size: int, where: str, affected: set[int],
                report: CheckReport) -> None:
    """Download, decrypt and verify one chunk (`size` < 0: its length is not known)."""
    try:
        plain = area.fetch_chunk(chunk_id)
    except errors.AreaCorrupt as exc:
        report.add(DAMAGE, where, _("the chunk does not open: {error}").format(error=exc), affected)
        return
    if size >= 0 and len(plain) != size:
        report.add(DAMAGE, where, _("the chunk holds {got} bytes; the manifest expects {size}").format(
            got=len(plain), size=size), affected)


def _check_object_store(area: Area, store: str, limit: int, report: CheckReport,
                        missing_ok: bool = False) -> None:
    """Without keys: the folders and names of `store` (`chunks` or format 2's `packs`)
    well-formed, every object in it of a plausible size (at most `limit`)."""
    for folder in _listing(area, store, report, missing_ok):
        area.check_interrupt()
        if not _hex(folder, 2):
            report.add(WARNING, f"{store}/{_shown(folder)}", _("unexpected name (clients ignore it)"))
            continue
        for name in _listing(area, f"{store}/{folder}", report):
            where = f"{store}/{folder}/{_shown(name)}"
            if not (OBJECT_ID.fullmatch(name) and name.startswith(folder)):
                report.add(WARNING, where, _("unexpected name (clients ignore it)"))
                continue
            report.chunks_checked += 1
            _object_stat(area, where, limit, (), report)


def _check_tmp(area: Area, report: CheckReport) -> None:
    """Temporary files a day old or more (left by interrupted uploads; anyone may remove them)."""
    try:
        names = [n for n in _listing(area, "tmp", report, missing_ok=True) if TMP_NAME.fullmatch(n)]
    except OSError as exc:  # asyncssh fails a listing when a file vanishes during it
        report.add(WARNING, "tmp/", _("the folder could not be listed: {error}").format(error=exc))
        return
    if not names:
        return
    try:
        now = area.server_now()
    except (errors.TransferError, OSError):
        return  # a read-only login cannot probe the clock (HostRefused): the ages stay unknown
    stale = 0
    for name in names:
        st = area.session.stat(area.p("tmp", name))
        stale += st is not None and not st.is_dir and st.mtime < now - STALE_TMP
    if stale:
        report.add(WARNING, "tmp/", _(
            "temporary files more than a day old: {count} (left by interrupted uploads; anyone may "
            "remove them)").format(count=stale))


# --- helpers ----------------------------------------------------------------------------------------


def _object_stat(area: Area, where: str, limit: int, versions: Iterable[int],
                 report: CheckReport) -> Stat | None:
    """The stat of a sealed object present with a size a reader accepts; else one DAMAGE problem."""
    st = area.session.stat(area.p(*where.split("/")))
    if st is None or st.is_dir:
        report.add(DAMAGE, where, _("the file is missing"), versions)
        return None
    if not MIN_SEALED <= st.size <= limit:
        report.add(DAMAGE, where, _("implausible size {size} bytes (a sealed object here has "
                                    "{low} to {high}): torn or damaged").format(
            size=st.size, low=MIN_SEALED, high=limit), versions)
        return None
    return st


def _chunk_sizes(manifest: Manifest) -> Iterable[tuple[str, int]]:
    """(chunk id, plaintext size) of every version-1 chunk; -1 where the chunker does not fix the size."""
    if manifest.chunker == PER_FILE:
        return  # format 2: chunks live in packs (`_check_packs`)
    for entry in manifest.files:
        for i, chunk_id in enumerate(entry.chunks):
            fixed = manifest.chunker == CHUNKER
            yield chunk_id, min(CHUNK_SIZE, entry.size - i * CHUNK_SIZE) if fixed else -1


def _sealed_bound(plain: int) -> int:
    """The largest sealed size of `plain` bytes: zstd's worst case (ZSTD_COMPRESSBOUND) + the seal."""
    plain = CHUNK_SIZE if plain < 0 else plain
    return SEAL_OVERHEAD + plain + (plain >> 8) + 128


def _numbered(area: Area, folder: str, report: CheckReport, missing_ok: bool = False) -> list[int]:
    """The numbered names of `lock/`, `log/` or `floor/`; other names are reported and ignored."""
    numbers = []
    for name in _listing(area, folder, report, missing_ok):
        if ENTRY_NAME.fullmatch(name):
            numbers.append(int(name))
        else:
            report.add(WARNING, f"{folder}/{_shown(name)}", _("unexpected name (clients ignore it)"))
    return sorted(numbers)


def _listing(area: Area, folder: str, report: CheckReport, missing_ok: bool = False) -> list[str]:
    try:
        return sorted(area.session.listdir(area.p(*folder.split("/"))))
    except FileNotFoundError:
        if not missing_ok:
            report.add(DAMAGE, f"{folder}/", _("the folder is missing"))
        return []


def _read_record(area: Area, folder: str, number: int) -> dict[str, Any] | None:
    """A lock record or log entry as a JSON object, or None (missing, too large, torn)."""
    try:
        raw = area.session.read_bytes(area.p(folder, f"{number:020d}"), MAX_RECORD)
        data = json.loads(raw)
    except (FileNotFoundError, FileTooLarge, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _contiguous_head(numbers: list[int], start: int = 1) -> int:
    head, present = start - 1, set(numbers)
    while head + 1 in present:
        head += 1
    return head


def _report_gap(report: CheckReport, folder: str, numbers: list[int], severity: str, start: int = 1) -> None:
    """A missing number below the highest (from `start`, the floor): clients probing upwards stop at it."""
    head = _contiguous_head(numbers, start)
    hidden = [n for n in numbers if n > head]
    if not hidden:
        return
    if folder == "log":
        what = _("log slot {slot} is missing: clients stop reading there and never see what follows "
                 "({count} entries)").format(slot=head + 1, count=len(hidden))
    elif folder == "lock":
        what = _("lock generation {slot} is missing ({count} records follow it)").format(
            slot=head + 1, count=len(hidden))
    else:
        what = _("floor {slot} is missing ({count} floors follow it; clients read only the highest)").format(
            slot=head + 1, count=len(hidden))
    report.add(severity, f"{folder}/{head + 1:020d}", what)


def _hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _b64_size(value: Any) -> int:
    try:
        return len(base64.b64decode(value, validate=True)) if isinstance(value, str) else -1
    except (binascii.Error, ValueError):
        return -1


def _shown(name: str) -> str:
    return printable(name, SHOWN_NAME)
