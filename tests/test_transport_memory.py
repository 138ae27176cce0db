"""`MemoryFiles` beyond the contract (which tests/test_transport_contract.py runs on it too):
an injectable clock shared by the handles of one folder, and the faults a test can inject."""

from __future__ import annotations

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.transport import MemoryFiles, MemoryFolder


def test_memory_clock_is_injectable_and_shared_by_handles() -> None:
    now = [1_700_000_000.7]
    folder = MemoryFolder(clock=lambda: now[0])
    one, two = MemoryFiles(folder), MemoryFiles(folder)
    one.mkdir("tmp")
    one.upload("f", b"x")
    assert two.stat("f").mtime == 1_700_000_000  # type: ignore[union-attr]
    now[0] += 90
    assert two.server_now("tmp") == 1_700_000_090


def test_memory_cut_before_during_after() -> None:
    files = MemoryFiles()
    files.mkdir("tmp")
    files.cut(after=1)
    assert files.stat("tmp") is not None  # the one operation still allowed
    with pytest.raises(errors.NetworkDown):
        files.mkdir("d")  # cut before: nothing happened
    fresh = files.reconnect()
    assert fresh.stat("d") is None
    fresh.cut(when="during")
    with pytest.raises(errors.NetworkDown):
        fresh.upload("f", b"0123456789")
    again = fresh.reconnect()
    assert again.read_bytes("f") == b"01234"  # a cut upload leaves a partial file
    again.upload("tmp/t", b"record")
    again.cut(when="after")
    with pytest.raises(errors.NetworkDown):
        again.publish("tmp/t", "final")  # it took effect, the answer was lost
    assert again.reconnect().read_bytes("final") == b"record"


def test_memory_cut_during_publish_places_nothing() -> None:
    files = MemoryFiles()
    files.mkdir("tmp")
    files.upload("tmp/t", b"record")
    files.cut(when="during")
    with pytest.raises(errors.NetworkDown):
        files.publish("tmp/t", "final")
    assert files.reconnect().listdir("") == ["tmp"]
