"""Ranged reads over a real OpenSSH sshd: each piece is asked once, whatever the timing."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from paramiko.sftp import CMD_READ

from cloudshare_p2p.transport import Credentials, Endpoint, KnownHosts, SftpConnection, connect
from cloudshare_p2p.transport.transfer import REQUEST_SIZE
from tests.serverinfo import ShareServer


@pytest.fixture
def session(openssh_server: ShareServer, tmp_path: Path) -> Iterator[SftpConnection]:
    endpoint = Endpoint(openssh_server.user, openssh_server.host, openssh_server.port, openssh_server.base)
    with connect(endpoint, KnownHosts(tmp_path / "known_hosts"),
                 Credentials(identity=openssh_server.identity, use_agent=False),
                 accept_fingerprint=openssh_server.host_key_fingerprint) as s:
        yield s


@pytest.fixture
def slow_sender(session: SftpConnection) -> Iterator[list[int]]:
    """Every READ request of the connection recorded (its length), each sent 5 ms late: a
    busy machine where a thread sending requests falls behind the answers being read."""
    sftp = session._sftp
    send = sftp._async_request
    asked: list[int] = []
    lock = threading.Lock()

    def slow(fileobj: object, t: int, *args: object) -> int:
        if t == CMD_READ:
            time.sleep(0.005)
            with lock:
                asked.append(int(args[2]))  # type: ignore[call-overload]
        return send(fileobj, t, *args)

    sftp._async_request = slow  # type: ignore[method-assign]
    yield asked
    sftp._async_request = send  # type: ignore[method-assign]


@pytest.mark.server
def test_read_ranges_asks_each_piece_once(session: SftpConnection, slow_sender: list[int]) -> None:
    area = session.path(f"r-{uuid.uuid4().hex[:12]}")
    session.mkdir(area)
    data = os.urandom(3_000_000)
    session.upload(f"{area}/pack", data)
    ranges = [(o, 290_000) for o in range(0, 2_900_000, 290_000)]  # frames: 2 requests each
    before = session.bytes_received
    got = list(session.read_ranges(f"{area}/pack", ranges))
    assert got == [data[o : o + n] for o, n in ranges]
    assert sorted(slow_sender) == sorted([REQUEST_SIZE, 290_000 - REQUEST_SIZE] * len(ranges))
    assert session.bytes_received - before == sum(n for _o, n in ranges)


@pytest.mark.server
def test_read_bytes_asks_each_piece_once_and_nothing_past_the_end(
        session: SftpConnection, slow_sender: list[int]) -> None:
    area = session.path(f"r-{uuid.uuid4().hex[:12]}")
    session.mkdir(area)
    data = os.urandom(2_500_000)  # a large manifest: several requests
    session.upload(f"{area}/manifest", data)
    before = session.bytes_received
    assert session.read_bytes(f"{area}/manifest") == data
    assert sum(slow_sender) == len(data)  # no read past the end, none twice
    assert len(slow_sender) == -(-len(data) // REQUEST_SIZE)
    assert session.bytes_received - before == len(data)
