"""The transport: one SFTP connection to a share host (paramiko), reached and logged in
with plain-words errors, and the contract (`RemoteFiles`) it keeps for the share-area format.

Modules, one job each: endpoint (URL, time limits, login means), network (lookup, connect,
handshake), hostkeys (known_hosts, fingerprints, the pin check), identity (key files, agent,
password), connect (`connect()`), paramiko_sftp (all use of paramiko's private API), deadline
(transfer watchdog), sftp (`SftpConnection`), contract (`RemoteFiles`), memory (`MemoryFiles`).
"""

import logging

# paramiko logs a traceback for every failed connection; without a handler of our own,
# Python's last-resort handler would print it on the user's terminal.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

from .connect import connect  # noqa: E402
from .contract import FileTooLarge, RemoteFiles, SmallFile, Stat  # noqa: E402
from .endpoint import Credentials, Endpoint, Timeouts  # noqa: E402
from .hostkeys import HostKeyMismatch, KnownHosts, fingerprint, probe_host_key  # noqa: E402
from .identity import IdentityEncrypted, IdentityProblem, _agent_keys, check_identity  # noqa: E402
from .memory import MemoryFiles, MemoryFolder  # noqa: E402
from .sftp import HARDLINK, POSIX_RENAME, REQUEST_SIZE, SftpConnection  # noqa: E402

__all__ = [
    "HARDLINK",
    "POSIX_RENAME",
    "REQUEST_SIZE",
    "Credentials",
    "Endpoint",
    "FileTooLarge",
    "HostKeyMismatch",
    "IdentityEncrypted",
    "IdentityProblem",
    "KnownHosts",
    "MemoryFiles",
    "MemoryFolder",
    "RemoteFiles",
    "SftpConnection",
    "SmallFile",
    "Stat",
    "Timeouts",
    "_agent_keys",
    "check_identity",
    "connect",
    "fingerprint",
    "probe_host_key",
]
