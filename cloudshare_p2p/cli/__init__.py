"""The `cloudshare` command line: parse, call `service`, print, map errors to exit codes.

Data goes to stdout (tables, `--json`); messages, prompts and progress go to stderr.
One module per job: `group` (errors to exit codes), `output`, `terminal`, `session`, `options`,
`root` (the `main` group) and the command modules, which register on `main` when imported here.
"""

from __future__ import annotations

from . import check, data, lockcmds, remotes, retention, sharing, tools  # noqa: F401 - registers the commands
from .group import (
    EXIT_CODES_HELP,
    EXIT_MEANINGS,
    CloudShareGroup,
    CommandError,
    exit_codes_help,
    quiet_threads,
    write_error_log,
)
from .output import STATE_WORDS, safe_text
from .root import main

__all__ = [
    "EXIT_CODES_HELP", "EXIT_MEANINGS", "STATE_WORDS", "CloudShareGroup", "CommandError", "exit_codes_help",
    "main", "quiet_threads", "safe_text", "write_error_log",
]
