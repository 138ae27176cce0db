"""Checking a share area (`cloudshare check`, like `restic check`): find damage, say what it affects.

The config, every lock record and log entry, every manifest a version names and, with the
area's keys, every chunk those manifests name (present, of a plausible sealed size; with
`read_data` decrypted and verified). Without keys (the firm's host, or `--structure`) only
what the format shows in plaintext. Nothing is written except the clock probe that dates
stale temporary files. The rules are in docs/area-format.md, "Checking an area".

`report` holds the result and its wording, `walk` the checks, `host` the host's own disk.
"""

from __future__ import annotations

from .host import HostFolder, check_host_area
from .report import DAMAGE, OBJECTS, READ_DATA, STRUCTURE, WARNING, CheckReport, Problem, render_text
from .walk import check_area

__all__ = ["DAMAGE", "OBJECTS", "READ_DATA", "STRUCTURE", "WARNING", "CheckReport", "HostFolder", "Problem",
           "check_area", "check_host_area", "render_text"]
