"""The firm and its clients as parties of one share area, for the protocol tests."""

from __future__ import annotations

import uuid
from pathlib import Path

from cloudshare_p2p.area import Area, Party
from cloudshare_p2p.transport import Credentials, Endpoint, KnownHosts, SftpConnection, connect
from tests.serverinfo import ShareServer

PASSWORD = "share-pass-4711"
FAST_KDF = {"name": "scrypt", "n": 2**14, "r": 8, "p": 1, "length": 32}


def session_for(server: ShareServer, home: Path, port: int | None = None) -> SftpConnection:
    """One SSH connection, as one party's computer would open it."""
    endpoint = Endpoint(user=server.user, host=server.host, port=port or server.port, base=server.base)
    return connect(
        endpoint,
        KnownHosts(home / "known_hosts"),
        Credentials(identity=server.identity, use_agent=False),
        accept_fingerprint=server.host_key_fingerprint,
    )


def party(name: str) -> Party:
    return Party(name=name, install=uuid.uuid4().hex[:16], host="test")


def new_area_name(prefix: str = "books") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_area(session: SftpConnection, name: str, who: Party, dataset: str = "books") -> Area:
    area = Area(session, name)
    area.create(dataset, PASSWORD, who, kdf=FAST_KDF)
    return area


def open_area(session: SftpConnection, name: str, password: str = PASSWORD) -> Area:
    area = Area(session, name)
    area.unlock_keys(password)
    return area
