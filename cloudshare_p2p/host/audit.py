"""The audit trail: logfmt lines (`event=... key=value`), their formatter and the log set-up."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncssh.connection import SSHConnection  # a channel's connection (client or server side)


log = logging.getLogger("cloudshare.host")


_BARE = re.compile(r"^[A-Za-z0-9._:/@+\-]{1,200}$")


def _logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare when safe, else a JSON string (one line, escaped)."""
    text = str(value)
    if _BARE.match(text):
        return text
    if len(text) > 300:
        text = text[:300] + "…"
    return json.dumps(text, ensure_ascii=False)


def logfmt(**fields: object) -> str:
    """`key=value key="value with spaces"` (None values are left out)."""
    return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items() if v is not None)


def audit(event: str, level: int = logging.INFO, **fields: object) -> None:
    """One audit line: `event=EVENT key=value ...` (see docs/hosting.md for the events)."""
    log.log(level, logfmt(event=event, **fields), extra={"logfmt": True})


class LogfmtFormatter(logging.Formatter):
    """`time=... level=... pid=... event=...`: one line per record, whatever it holds."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        head = f"time={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} pid={record.process}"
        if getattr(record, "logfmt", False):
            body = record.getMessage()
        else:
            body = logfmt(logger=record.name, msg=record.getMessage())
        if record.exc_info:
            body += " " + logfmt(exc=self.formatException(record.exc_info))
        return f"{head} {body}"


def _peer_of(conn: SSHConnection) -> tuple[str, str]:
    """(address, "address:port") of a connection's peer; IPv6 as "[address]:port"."""
    peer = conn.get_extra_info("peername") or ("?", 0)
    addr = str(peer[0])
    return addr, f"[{addr}]:{peer[1]}" if ":" in addr else f"{addr}:{peer[1]}"


def _shown_id(name: str) -> str:
    """A client-given login name as logged (bounded; escaping is logfmt's)."""
    return name if len(name) <= 64 else name[:64] + "…"


def _open_log_file(path: Path) -> logging.Handler:
    """An appending handler for the audit file (created 0600; reopened after rotation)."""
    import logging.handlers

    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    return logging.handlers.WatchedFileHandler(path, encoding="utf-8")


def setup_logging(level: int = logging.INFO, log_file: str | os.PathLike[str] | None = None) -> None:
    """Audit lines (logfmt) to stderr, and appended to `log_file` if given."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        handlers.append(_open_log_file(Path(log_file)))
    for handler in handlers:
        handler.setFormatter(LogfmtFormatter())
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    ssh_log = logging.getLogger("asyncssh")
    ssh_log.setLevel(logging.WARNING)
    for handler in handlers:
        ssh_log.addHandler(handler)
    ssh_log.propagate = False
