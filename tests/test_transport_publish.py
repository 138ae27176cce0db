"""Immutable objects (chunks, manifests) never appear torn under their final name (issue 8,
item 2): publish_object / put_object / object_complete on both hosts, with hard links, with
only posix-rename, with only plain rename, and with the connection cut through a relay."""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.transport import (
    HARDLINK,
    POSIX_RENAME,
    Credentials,
    Endpoint,
    KnownHosts,
    SftpConnection,
    Timeouts,
    connect,
)
from tests.relay import Relay
from tests.serverinfo import ShareServer

# how the host places a complete temp file under the final name
MODES = {
    "hardlink": (),
    "posix-rename": (HARDLINK,),
    "rename": (HARDLINK, POSIX_RENAME),
}


def _connect(
    server: ShareServer, tmp_path: Path, port: int | None = None, **timeouts: float
) -> SftpConnection:
    endpoint = Endpoint.parse(server.url(port))
    return connect(
        endpoint,
        KnownHosts(tmp_path / f"known_hosts-{uuid.uuid4().hex[:6]}"),
        Credentials(identity=server.identity, use_agent=False),
        accept_fingerprint=server.host_key_fingerprint,
        timeouts=Timeouts(**timeouts),
    )


def _hide(session: SftpConnection, mode: str) -> SftpConnection:
    """Remove extensions from the client's view, as on a host that lacks them."""
    for name in MODES[mode]:
        session._sftp.extensions.pop(name, None)
    return session


@pytest.fixture
def session(share_server: ShareServer, tmp_path: Path) -> Iterator[SftpConnection]:
    with _connect(share_server, tmp_path) as s:
        yield s


@pytest.fixture
def area(session: SftpConnection) -> str:
    path = session.path(f"t-{uuid.uuid4().hex[:12]}")
    session.mkdir(path)
    session.mkdir(f"{path}/tmp")
    return path


def _tmp(area: str) -> str:
    return f"{area}/tmp/{uuid.uuid4().hex}.tmp"


@pytest.mark.server
@pytest.mark.parametrize("mode", list(MODES))
def test_publish_object_new_present_torn(session: SftpConnection, area: str, mode: str) -> None:
    _hide(session, mode)
    final, data = f"{area}/obj", os.urandom(300_000)
    assert session.object_complete(final, len(data)) is None
    assert session.put_object(_tmp(area), final, data) is True
    assert session.object_complete(final, len(data)) is True
    assert session.put_object(_tmp(area), final, data) is False  # complete one already there
    session.upload(final, data[:1234])  # plant a torn copy under the final name
    assert session.object_complete(final, len(data)) is False
    assert session.put_object(_tmp(area), final, data) is True  # replaced
    assert session.read_bytes(final) == data
    assert session.listdir(f"{area}/tmp") == []  # temp files removed in every case
    assert sorted(session.listdir(area)) == ["obj", "tmp"]


@pytest.mark.server
@pytest.mark.parametrize("mode", list(MODES))
def test_publish_object_checks_the_temp_file(session: SftpConnection, area: str, mode: str) -> None:
    _hide(session, mode)
    final, tmp = f"{area}/obj", _tmp(area)
    session.upload(tmp, b"x" * 99)  # one byte short: as if the upload had been cut
    with pytest.raises(errors.TransferError, match="not published"):
        session.publish_object(tmp, final, 100)
    assert session.stat(final) is None and session.stat(tmp) is None
    session.upload(tmp, b"x" * 100)
    assert session.publish_object(tmp, final, 100) is True
    assert session.object_complete(final, 100) is True


@pytest.mark.server
def test_object_complete_folder_is_not_an_object(session: SftpConnection, area: str) -> None:
    session.mkdir(f"{area}/d")
    assert session.object_complete(f"{area}/d", 0) is False


@pytest.mark.server
def test_records_still_publish_exclusively(session: SftpConnection, area: str) -> None:
    """`publish` (locks, log entries) keeps its first-wins semantics without hard links."""
    _hide(session, "rename")
    final = f"{area}/00000000000000000001"
    for content, won in ((b"first", True), (b"second!", False)):
        tmp = _tmp(area)
        session.upload(tmp, content)
        assert session.publish(tmp, final) is won
    assert session.read_bytes(final) == b"first"


# --- the connection cut mid-transfer through a relay ---------------------------------------

CUT_POINTS = (2_000, 150_000, 700_000, 1_500_000)  # bytes client -> host after login
DATA_SIZE = 1_300_000


@pytest.fixture
def relay(share_server: ShareServer) -> Iterator[Relay]:
    with Relay(share_server.port) as r:
        yield r


@pytest.mark.server
@pytest.mark.parametrize("mode", ["posix-rename", "rename", "hardlink"])
def test_cut_mid_upload_never_leaves_a_torn_object(
    share_server: ShareServer, session: SftpConnection, area: str, relay: Relay, tmp_path: Path, mode: str
) -> None:
    data = os.urandom(DATA_SIZE)
    with _hide(_connect(share_server, tmp_path, relay.port), mode) as calibrate:
        before = relay.bytes_up
        calibrate.put_object(_tmp(area), f"{area}/calibration", data)
        total = relay.bytes_up - before  # bytes up for one whole put_object
    # cut at fixed points, and in the last few requests (close, link or rename, remove)
    cuts = [*CUT_POINTS, total - 400, total - 250, total - 120, total - 40]
    outcomes = []
    for i, cut in enumerate(cuts):
        final = f"{area}/obj-{i}"
        with _hide(_connect(share_server, tmp_path, relay.port), mode) as cut_session:
            relay.cut_after(cut, "up")
            t0 = time.monotonic()
            try:
                outcomes.append(cut_session.put_object(_tmp(area), final, data))
            except (errors.NetworkDown, errors.TransferError) as exc:
                outcomes.append(type(exc).__name__)
                assert time.monotonic() - t0 < 10
            complete = session.object_complete(final, len(data))
            tmp_left = len(session.listdir(f"{area}/tmp"))
            print(f"{mode} cut at {cut}: {outcomes[-1]}, final {complete}, temp files {tmp_left}")
        # whatever happened: the final name is absent or complete, never torn
        assert session.object_complete(final, len(data)) in (None, True), (cut, outcomes)
        relay.cancel_cut()  # a cut point past the whole upload did not fire
        # the retry (after a fresh connection) completes it
        _hide(session, mode)
        session.put_object(_tmp(area), final, data)
        assert session.read_bytes(final, max_size=len(data)) == data
    # a cut in the temp file's removal, which is not waited for, is not felt by put_object
    assert relay.cuts >= 6 and outcomes.count("NetworkDown") >= 5, outcomes


@pytest.mark.server
@pytest.mark.parametrize("mode", ["posix-rename", "rename"])
def test_torn_object_left_by_an_old_writer_is_repaired(
    share_server: ShareServer, session: SftpConnection, area: str, relay: Relay, tmp_path: Path, mode: str
) -> None:
    """What the old fallback left: a cut while writing directly under the final name."""
    data = os.urandom(DATA_SIZE)
    final = f"{area}/obj"
    with _connect(share_server, tmp_path, relay.port) as old_writer:
        relay.cut_after(400_000, "up")
        with pytest.raises(errors.NetworkDown):
            old_writer.upload(final, data)  # the old fallback wrote here directly
    assert session.object_complete(final, len(data)) is False  # torn, and detected
    _hide(session, mode)
    assert session.put_object(_tmp(area), final, data) is True
    assert session.object_complete(final, len(data)) is True
    assert session.read_bytes(final, max_size=len(data)) == data


@pytest.mark.server
def test_cut_mid_download_is_network_down(
    share_server: ShareServer, session: SftpConnection, area: str, relay: Relay, tmp_path: Path
) -> None:
    data = os.urandom(DATA_SIZE)
    session.put_object(_tmp(area), f"{area}/obj", data)
    with _connect(share_server, tmp_path, relay.port) as reader:
        relay.cut_after(300_000, "down")
        with pytest.raises(errors.NetworkDown):
            reader.download(f"{area}/obj", io.BytesIO())
    with _connect(share_server, tmp_path, relay.port) as reader:  # retry works
        out = io.BytesIO()
        assert reader.download(f"{area}/obj", out) == len(data) and out.getvalue() == data


@pytest.mark.server
def test_silent_network_fails_within_the_deadline(
    share_server: ShareServer, area: str, relay: Relay, tmp_path: Path
) -> None:
    with _connect(share_server, tmp_path, relay.port, transfer=2.0, channel=2.0) as s:
        relay.go_silent()
        t0 = time.monotonic()
        with pytest.raises((errors.TransferError, errors.NetworkDown)):
            s.put_object(_tmp(area), f"{area}/obj", os.urandom(DATA_SIZE))
        assert time.monotonic() - t0 < 8
    relay.resume()
    with _connect(share_server, tmp_path) as s:
        assert s.stat(f"{area}/obj") is None


@pytest.mark.server
def test_a_download_that_goes_silent_stops_after_the_stall_time(
    share_server: ShareServer, session: SftpConnection, area: str, relay: Relay, tmp_path: Path
) -> None:
    """A silent network mid-download: a clear NetworkDown after `stall` seconds, long
    before the whole-transfer deadline (the channel timeout does not bound prefetched reads)."""
    data = os.urandom(8 * DATA_SIZE)
    session.put_object(_tmp(area), f"{area}/big", data)
    with _connect(share_server, tmp_path, relay.port, transfer=900.0, channel=900.0, stall=2.0) as s:
        def go_silent_after_some(done: int) -> None:
            if done > len(data) // 4:
                relay.go_silent()

        t0 = time.monotonic()
        with pytest.raises(errors.NetworkDown, match="stalled"):
            s.download(f"{area}/big", io.BytesIO(), progress=go_silent_after_some)
        assert time.monotonic() - t0 < 15
    relay.resume()
