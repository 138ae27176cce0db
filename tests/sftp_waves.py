"""Count SFTP requests and sequential waits ("waves") made by this process, for tests and benches.

A wave is one wait for the host's answers after a burst of requests: on a line with a 40 ms
round trip each wave costs about 40 ms however many requests it carries, so waves, not
requests, decide how long a command waits. `counting()` patches paramiko's SFTPClient in this
process (request sends and response reads); several threads using the connection at once
(the pack uploader) are counted together, so a figure is an upper bound.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import paramiko.sftp as sftp
import paramiko.sftp_client as client

NAMES = {v: k[4:] for k, v in vars(sftp).items() if k.startswith("CMD_") and isinstance(v, int)}


@dataclass
class Waves:
    """Requests sent and waves waited so far; `log` lists each request's name, "|" between waves."""

    requests: int = 0
    waves: int = 0
    log: list[str] = field(default_factory=list)
    _sent: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, kind: int) -> None:
        with self._lock:
            self.requests += 1
            self._sent = True
            self.log.append(NAMES.get(kind, str(kind)))

    def waiting(self) -> None:
        with self._lock:
            if self._sent:
                self.waves += 1
                self._sent = False
                self.log.append("|")

    def reset(self) -> None:
        with self._lock:
            self.requests = self.waves = 0
            self._sent = False
            self.log.clear()


@contextlib.contextmanager
def counting() -> Iterator[Waves]:
    """Count every SFTP request and wave of this process while the block runs."""
    waves = Waves()
    send, read = client.SFTPClient._async_request, client.SFTPClient._read_response

    def counted_send(self, fileobj, t, *args):  # type: ignore[no-untyped-def]
        waves.sent(t)
        return send(self, fileobj, t, *args)

    def counted_read(self, waitfor=None):  # type: ignore[no-untyped-def]
        waves.waiting()
        return read(self, waitfor)

    client.SFTPClient._async_request = counted_send  # type: ignore[method-assign]
    client.SFTPClient._read_response = counted_read  # type: ignore[method-assign]
    try:
        yield waves
    finally:
        client.SFTPClient._async_request = send  # type: ignore[method-assign]
        client.SFTPClient._read_response = read  # type: ignore[method-assign]
