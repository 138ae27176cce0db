"""The share area on the host: layout, lease lock with fencing, commit log, snapshots.

The format is specified in docs/area-format.md; this package is its reference
implementation. Mutual exclusion rests only on exclusive creation (hard link or
``open(..., 'wx')``) of never-rewritten files; lease expiry is judged on the server's
clock by the pure core (``statemachine.lease``).

One module per job:

- `records`: format constants, the checks on what a client writes, the field checks that
  make an untrusted record usable or void (pure);
- `model`: the values handed out (`Party`, `LockInfo`, `Grant`, `Version`, `AreaSummary`…);
- `cache`: `AreaCache`, log entries and the lock's top remembered on this computer;
- `base`: `AreaBase`, the state every part shares (connection, paths, publishing, config);
- `log`: `Log`, the commit log (slots, fenced appends, versions);
- `lock`: `LockFolder`, the lease lock (observe, acquire, adopt, renew, release, break);
- `data`: `DataStore`, chunks and manifests, commit and receive;
- `format2`: `Format2`, the upgrade, manifests as patches, packs up and frames down;
- `packs`: frames and packs written (`PackWriter`, `PackUploader`) and read back;
- `packer`: a large first share scanned and packed by a second process;
- `lifecycle`: `Area`, create, unlock and delete the area as a whole;
- `listing`: `list_areas`;
- `floor`: the floor of format 2, where readers start the log and below which `prune`
  compacts `log/` and `lock/`;
- `retention`: the sealed retention policy, `prune` under the lock, pruned versions refused
  (format 2; functions over an `Area`).

`Area` is built by inheritance, one layer per file, rather than by composition with
delegates: each layer needs the one below it (the lock fences itself in the log; a commit
is a log entry appended under the lock), so the parts form a stack
``AreaBase → Log → LockFolder → DataStore → Area``, not a diamond. All state (the
connection, the cache, the keys, the transfer counters) lives in `AreaBase`, so every
method keeps its name and a caller (or a test replacing `area.release`) sees one object,
exactly as before the split.

The names below are the package's public API, importable from ``cloudshare_p2p.area``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time each name is imported on first use (`__getattr__`): a
    # process that needs one module of the package (the packing process) loads only it
    from .cache import AreaCache
    from .data import same_content
    from .lifecycle import Area
    from .listing import list_areas
    from .lock import new_session_id
    from .model import (
        AreaSummary,
        Grant,
        LockInfo,
        Party,
        TransferStats,
        Version,
        grant_from_dict,
        grant_to_dict,
        iso_utc,
    )
    from .records import (
        AREA_NAME,
        ENTRY_NAME,
        FENCING_KINDS,
        FORMAT,
        FORMAT_VERSION,
        MAX_APPEND_TRIES,
        MAX_CONFIG,
        MAX_COUNT,
        MAX_LEASE,
        MAX_RECORD,
        MAX_TIME,
        OBJECT_ID,
        RECORD_VERSION,
        check_lease,
        check_note,
        parse_config,
        validate_area_name,
    )
    from .retention import (
        PruneNeedsFormat2,
        PruneReport,
        VersionPruned,
        check_not_pruned,
        download_unless_pruned,
        plan_prune,
        prune,
        prune_allowed,
        read_policy,
        set_policy,
    )

_WHERE = {
    "AreaCache": "cache",
    "same_content": "data",
    "Area": "lifecycle",
    "list_areas": "listing",
    "new_session_id": "lock",
    "AreaSummary": "model",
    "Grant": "model",
    "LockInfo": "model",
    "Party": "model",
    "TransferStats": "model",
    "Version": "model",
    "grant_from_dict": "model",
    "grant_to_dict": "model",
    "iso_utc": "model",
    "AREA_NAME": "records",
    "ENTRY_NAME": "records",
    "FENCING_KINDS": "records",
    "FORMAT": "records",
    "FORMAT_VERSION": "records",
    "MAX_APPEND_TRIES": "records",
    "MAX_CONFIG": "records",
    "MAX_COUNT": "records",
    "MAX_LEASE": "records",
    "MAX_RECORD": "records",
    "MAX_TIME": "records",
    "OBJECT_ID": "records",
    "RECORD_VERSION": "records",
    "check_lease": "records",
    "check_note": "records",
    "parse_config": "records",
    "validate_area_name": "records",
    "PruneNeedsFormat2": "retention",
    "PruneReport": "retention",
    "VersionPruned": "retention",
    "check_not_pruned": "retention",
    "download_unless_pruned": "retention",
    "plan_prune": "retention",
    "prune": "retention",
    "prune_allowed": "retention",
    "read_policy": "retention",
    "set_policy": "retention",
}


if not TYPE_CHECKING:  # for mypy the imports above are the names: a misspelt one is an error

    def __getattr__(name: str) -> Any:
        """The public name `name`, imported from its module on first use."""
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "AREA_NAME", "ENTRY_NAME", "FENCING_KINDS", "FORMAT", "FORMAT_VERSION", "MAX_APPEND_TRIES",
    "MAX_CONFIG", "MAX_COUNT", "MAX_LEASE", "MAX_RECORD", "MAX_TIME", "OBJECT_ID", "RECORD_VERSION",
    "Area", "AreaCache", "AreaSummary", "Grant", "LockInfo", "Party",
    "TransferStats", "Version", "check_lease", "check_note", "grant_from_dict", "grant_to_dict",
    "iso_utc", "list_areas", "new_session_id", "parse_config", "same_content", "validate_area_name",
    "PruneNeedsFormat2", "PruneReport", "VersionPruned", "check_not_pruned", "download_unless_pruned",
    "plan_prune", "prune", "prune_allowed", "read_policy", "set_policy",
]
