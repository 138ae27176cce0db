"""The SFTP transport against a real OpenSSH sshd (see tests/fixtures_sshd.py)."""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
import socket
import stat
import time
import uuid
from pathlib import Path

import paramiko
import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.transport import (
    Credentials,
    Endpoint,
    KnownHosts,
    SftpConnection,
    Timeouts,
    connect,
    fingerprint,
    probe_host_key,
)
from tests.fixtures_sshd import generate_ed25519_keypair
from tests.serverinfo import ShareServer

# --- no server needed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sftp://alice@host.example", Endpoint("alice", "host.example", 22, "")),
        ("sftp://alice@host.example:2222", Endpoint("alice", "host.example", 2222, "")),
        ("sftp://alice@host:22/srv/share/", Endpoint("alice", "host", 22, "/srv/share")),
        ("sftp://alice@host/~/areas", Endpoint("alice", "host", 22, "areas")),
        ("sftp://a.b@[::1]:2200/x", Endpoint("a.b", "::1", 2200, "/x")),
        ("SFTP://u@[fe80::1]", Endpoint("u", "fe80::1", 22, "")),
        ("sftp://u@h/with%20space", Endpoint("u", "h", 22, "/with space")),
    ],
)
def test_parse_and_url_round_trip(url: str, expected: Endpoint) -> None:
    endpoint = Endpoint.parse(url)
    assert endpoint == expected
    assert Endpoint.parse(endpoint.url()) == endpoint


@pytest.mark.parametrize(
    "url",
    [
        "",
        "host:/path",
        "ssh://u@h",
        "sftp://host",
        "sftp://@host",
        "sftp://u@",
        "sftp://u@h:0",
        "sftp://u@h:70000",
        "sftp://u@h:abc",
        "sftp://u@h:",
        "sftp://u@::1:22",
        "sftp://u@[::1",
        "sftp://u@[::1]x",
    ],
)
def test_parse_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(url)


def test_hostport() -> None:
    assert Endpoint("u", "h").hostport() == "h"
    assert Endpoint("u", "h", 2222).hostport() == "[h]:2222"
    assert Endpoint("u", "::1", 2222).hostport() == "[::1]:2222"


def test_known_hosts_pin_remove(tmp_path: Path) -> None:
    key = paramiko.Ed25519Key.from_path(_new_key(tmp_path / "k"))
    hosts = KnownHosts(tmp_path / "sub" / "known_hosts")
    assert hosts.lookup("h") is None and hosts.fingerprints() == {}
    hosts.pin("[h]:2222", key)
    assert hosts.lookup("[h]:2222").asbytes() == key.asbytes()
    assert hosts.lookup("h") is None
    assert hosts.fingerprints() == {"[h]:2222": fingerprint(key)}
    assert stat.S_IMODE(hosts.path.stat().st_mode) == 0o600
    assert hosts.remove("[h]:2222") is True
    assert hosts.remove("[h]:2222") is False
    assert hosts.lookup("[h]:2222") is None


def test_closed_port_is_network_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        endpoint = Endpoint("nobody", "127.0.0.1", port)
        with pytest.raises(errors.NetworkDown):
            connect(endpoint, KnownHosts(tmp_path / "kh"), Credentials(use_agent=False))


# --- helpers -------------------------------------------------------------------------


def _new_key(path: Path) -> Path:
    generate_ed25519_keypair(path)
    return path


def _endpoint(server: ShareServer) -> Endpoint:
    return Endpoint.parse(server.url())


def _pinned(server: ShareServer, tmp_path: Path) -> KnownHosts:
    hosts = KnownHosts(tmp_path / "known_hosts")
    key_type, fp = probe_host_key(_endpoint(server))
    assert fp == server.host_key_fingerprint and key_type == "ssh-ed25519"
    return hosts


def _connect(server: ShareServer, known_hosts: KnownHosts) -> SftpConnection:
    return connect(
        _endpoint(server),
        known_hosts,
        Credentials(identity=server.identity, use_agent=False),
        accept_fingerprint=server.host_key_fingerprint,
    )


@pytest.fixture
def session(openssh_server: ShareServer, tmp_path: Path):
    with _connect(openssh_server, KnownHosts(tmp_path / "known_hosts")) as s:
        yield s


@pytest.fixture
def area(session: SftpConnection) -> str:
    """A fresh folder on the host for one test."""
    path = session.path(f"t-{uuid.uuid4().hex[:12]}")
    assert session.mkdir(path) is True
    return path


# --- host keys and login -------------------------------------------------------------


@pytest.mark.server
def test_unknown_host_key_then_accepted_and_pinned(openssh_server, tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path / "kh" / "known_hosts")
    endpoint = _endpoint(openssh_server)
    creds = Credentials(identity=openssh_server.identity, use_agent=False)
    with pytest.raises(errors.HostKeyUnknown) as info:
        connect(endpoint, hosts, creds)
    assert info.value.fingerprint == openssh_server.host_key_fingerprint
    assert info.value.key_type == "ssh-ed25519"
    assert not hosts.path.exists()
    with pytest.raises(errors.HostKeyChanged):  # HostKeyMismatch: a fingerprint given, not this key's
        connect(endpoint, hosts, creds, accept_fingerprint="SHA256:not-this-one")
    assert not hosts.path.exists()
    with connect(endpoint, hosts, creds, accept_fingerprint=info.value.fingerprint) as s:
        assert s.stat(s.path()) is not None
    assert stat.S_IMODE(hosts.path.stat().st_mode) == 0o600
    assert hosts.fingerprints() == {endpoint.hostport(): openssh_server.host_key_fingerprint}
    with connect(endpoint, hosts, creds) as s:  # pinned now: no acceptance needed
        assert s.listdir(s.path()) is not None


@pytest.mark.server
def test_changed_host_key_is_refused_always(openssh_server, tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path / "known_hosts")
    endpoint = _endpoint(openssh_server)
    other = paramiko.Ed25519Key.from_path(_new_key(tmp_path / "other"))
    hosts.pin(endpoint.hostport(), other)
    creds = Credentials(identity=openssh_server.identity, use_agent=False)
    with pytest.raises(errors.HostKeyChanged) as info:
        connect(endpoint, hosts, creds, accept_fingerprint=openssh_server.host_key_fingerprint)
    assert info.value.expected == fingerprint(other)
    assert info.value.got == openssh_server.host_key_fingerprint
    assert hosts.lookup(endpoint.hostport()).asbytes() == other.asbytes()


@pytest.mark.server
def test_wrong_identity_is_login_refused(openssh_server, tmp_path: Path) -> None:
    asked = []

    def password() -> str:
        asked.append(1)
        return "not-the-password"

    creds = Credentials(identity=_new_key(tmp_path / "stranger"), password=password, use_agent=False)
    with pytest.raises(errors.LoginRefused) as info:
        connect(
            _endpoint(openssh_server),
            KnownHosts(tmp_path / "known_hosts"),
            creds,
            accept_fingerprint=openssh_server.host_key_fingerprint,
        )
    assert "not-the-password" not in str(info.value)
    assert asked == [1]  # the provider was consulted only after the keys failed


@pytest.mark.server
def test_probe_host_key(openssh_server) -> None:
    assert probe_host_key(_endpoint(openssh_server)) == (
        "ssh-ed25519",
        openssh_server.host_key_fingerprint,
    )


# --- primitives --------------------------------------------------------------------


@pytest.mark.server
def test_create_exclusive_twice(session: SftpConnection, area: str) -> None:
    path = f"{area}/gen.1"
    assert session.create_exclusive(path, b"first") is True
    assert session.create_exclusive(path, b"second") is False
    assert session.read_bytes(path) == b"first"


@pytest.mark.server
def test_publish_twice(session: SftpConnection, area: str, openssh_server) -> None:
    assert "hardlink@openssh.com" in session.extensions
    final = f"{area}/final"
    for content, expected in ((b"one", True), (b"two", False)):
        tmp = f"{area}/tmp-{uuid.uuid4().hex}"
        session.upload(tmp, content)
        assert session.publish(tmp, final) is expected
        assert session.stat(tmp) is None
    assert session.read_bytes(final) == b"one"


@pytest.mark.server
def test_publish_fallback_without_hardlink(session: SftpConnection, area: str) -> None:
    session._sftp.extensions.pop("hardlink@openssh.com")
    final = f"{area}/final"
    session.upload(f"{area}/a", b"A")
    session.upload(f"{area}/b", b"B")
    assert session.publish(f"{area}/a", final) is True
    assert session.publish(f"{area}/b", final) is False
    assert session.listdir(area) == ["final"]
    assert session.read_bytes(final) == b"A"


@pytest.mark.server
def test_mkdir_twice(session: SftpConnection, area: str) -> None:
    assert session.mkdir(f"{area}/d") is True
    assert session.mkdir(f"{area}/d") is False
    session.create_exclusive(f"{area}/f", b"")
    with pytest.raises(OSError):
        session.mkdir(f"{area}/f")  # a file of that name is not "already existed"


@pytest.mark.server
def test_missing_files(session: SftpConnection, area: str) -> None:
    assert session.stat(f"{area}/nope") is None
    with pytest.raises(FileNotFoundError):
        session.listdir(f"{area}/nope")
    with pytest.raises(FileNotFoundError):
        session.read_bytes(f"{area}/nope")
    with pytest.raises(FileNotFoundError):
        session.download(f"{area}/nope", io.BytesIO())
    with pytest.raises(FileNotFoundError):
        session.remove(f"{area}/nope")


@pytest.mark.server
def test_read_bytes_limit(session: SftpConnection, area: str) -> None:
    session.upload(f"{area}/big", b"x" * 1000)
    assert session.read_bytes(f"{area}/big", max_size=1000) == b"x" * 1000
    with pytest.raises(errors.AreaCorrupt):
        session.read_bytes(f"{area}/big", max_size=999)


@pytest.mark.server
def test_upload_download_8mb(session: SftpConnection, area: str, openssh_server) -> None:
    data = os.urandom(8 * 1000 * 1000 + 12345)
    seen: list[int] = []
    t0 = time.perf_counter()
    assert session.upload(f"{area}/blob", io.BytesIO(data), progress=seen.append) == len(data)
    t1 = time.perf_counter()
    out = io.BytesIO()
    assert session.download(f"{area}/blob", out) == len(data)
    t2 = time.perf_counter()
    print(f"8 MB upload {t1 - t0:.3f} s, download {t2 - t1:.3f} s")
    assert out.getvalue() == data
    assert seen[-1] == len(data)
    assert session.bytes_sent == len(data) and session.bytes_received == len(data)
    on_disk = openssh_server.root / area.rsplit("/", 1)[1] / "blob"
    assert on_disk.read_bytes() == data
    assert session.upload(f"{area}/blob", b"short") == 5  # truncates
    assert session.read_bytes(f"{area}/blob") == b"short"


@pytest.mark.server
def test_upload_into_missing_folder(session: SftpConnection, area: str) -> None:
    with pytest.raises(FileNotFoundError):
        session.upload(f"{area}/nope/blob", b"x" * 100)


@pytest.mark.server
def test_transfer_deadline(openssh_server, tmp_path: Path, area: str) -> None:
    s = connect(
        _endpoint(openssh_server),
        KnownHosts(tmp_path / "kh"),
        Credentials(identity=openssh_server.identity, use_agent=False),
        accept_fingerprint=openssh_server.host_key_fingerprint,
        timeouts=Timeouts(transfer=0.001),
    )
    with s, pytest.raises(errors.TransferError):
        s.upload(f"{area}/slow", io.BytesIO(os.urandom(4 << 20)))


@pytest.mark.server
def test_server_now(session: SftpConnection, area: str) -> None:
    now = session.server_now(area)
    assert abs(now - time.time()) < 3
    assert session.listdir(area) == []


@pytest.mark.server
def test_listdir_stat_remove_tree(session: SftpConnection, area: str) -> None:
    session.mkdir(f"{area}/a")
    session.mkdir(f"{area}/a/b")
    session.create_exclusive(f"{area}/a/b/f", b"12345")
    session.create_exclusive(f"{area}/top", b"")
    assert sorted(session.listdir(area)) == ["a", "top"]
    found = session.stat(f"{area}/a/b/f")
    assert found is not None and found.size == 5 and not found.is_dir
    assert session.stat(f"{area}/a").is_dir
    session.rename(f"{area}/a", f"{area}/moved")
    session.remove_tree(area)
    assert session.stat(area) is None
    session.remove_tree(area)  # already gone: fine


@pytest.mark.server
def test_path_joins_base(session: SftpConnection, openssh_server) -> None:
    assert session.path() == openssh_server.base
    assert session.path("x", "y") == f"{openssh_server.base}/x/y"


@pytest.mark.server
def test_dead_connection_is_network_down(openssh_server, tmp_path: Path) -> None:
    s = _connect(openssh_server, KnownHosts(tmp_path / "known_hosts"))
    s._transport.close()
    with pytest.raises(errors.NetworkDown):
        s.stat(s.path())
    with pytest.raises(errors.NetworkDown):
        s.create_exclusive(s.path("x"), b"")
    s.close()


# --- race: exactly one exclusive create wins ------------------------------------------------

RACERS = 8
ROUNDS = 5


def _racer(server: ShareServer, known_hosts: str, folder: str, barrier, results) -> None:
    try:
        with _connect(server, KnownHosts(Path(known_hosts))) as s:
            for r in range(ROUNDS):
                barrier.wait(timeout=30)
                results.put((r, s.create_exclusive(f"{folder}/round-{r}", str(os.getpid()).encode())))
    except BaseException as e:  # reported to the parent instead of hanging it
        results.put((-1, repr(e)))


@pytest.mark.server
def test_exclusive_create_race(openssh_server, session: SftpConnection, area: str, tmp_path) -> None:
    known = tmp_path / "known_hosts"
    _connect(openssh_server, KnownHosts(known)).close()  # pin once, read-only afterwards
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(openssh_server, str(known), area, barrier, results))
        for _ in range(RACERS)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=60) for _ in range(RACERS * ROUNDS)]
    except queue.Empty:
        pytest.fail("racers did not finish in time")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert [o for o in outcomes if o[0] == -1] == []
    for r in range(ROUNDS):
        assert sum(1 for rr, won in outcomes if rr == r and won is True) == 1, r


@pytest.mark.server
def test_a_garbled_answer_is_network_down_not_a_crash(session: SftpConnection, area: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer of the wrong kind (paramiko's SFTPError) from a batch of requests is said like a
    broken connection, never an unexpected error."""
    from cloudshare_p2p.transport import batch

    def garbled(*_args: object, **_kwargs: object) -> None:
        raise paramiko.SFTPError("unexpected answer 101 to request 7")

    monkeypatch.setattr(batch, "read_many", garbled)
    with pytest.raises(errors.NetworkDown, match="unexpected answer"):
        session.read_many([f"{area}/x"], 100)
