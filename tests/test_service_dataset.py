"""The DataSet a command loads once: one save per transition, explicit grant bookkeeping,
and another process's write followed rather than overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudshare_p2p.area import Grant
from cloudshare_p2p.registry import Registry
from cloudshare_p2p.service import DataSet
from statemachine import DataSetMachine, Event, IllegalEvent, State
from statemachine.lease import HolderLease


@pytest.fixture
def reg(tmp_path: Path):
    with Registry(tmp_path / "home") as registry:
        registry.add_dataset("books", tmp_path / "books")
        blob = {"machine": DataSetMachine(State.SHARED_IDLE).to_dict()}
        registry.update_dataset("books", state="shared-idle", machine=json.dumps(blob))
        yield registry


def _grant(generation: int) -> Grant:
    return Grant("s1", HolderLease(generation, 0.0, 60.0), 3, 100, 160)


def test_fire_saves_the_machine_and_one_audit_record(reg):
    ds = DataSet.load(reg, "books")
    ds.fire(Event.LOCK_HELD, "seen", token=1, holder="firm", until=200)
    assert reg.get_dataset("books")["state"] == "locked-by-other"
    assert DataSet.load(reg, "books").context.holder == "firm"
    assert [(a["event"], a["from_state"], a["to_state"]) for a in reg.audit("books")] == [
        ("lock_held", "shared-idle", "locked-by-other")]


def test_a_grant_is_recorded_kept_and_forgotten_explicitly(reg):
    ds = DataSet.load(reg, "books")
    ds.set_extras(pending_session="s1")
    ds.fire(Event.LOCK_GRANTED, "taken", grant=_grant(2), token=2)
    again = DataSet.load(reg, "books")
    assert again.extras == {"grant": again.extras["grant"]}  # the claim in flight is done with
    assert again.recorded_grant().lease.generation == 2
    ds.fire(Event.NEWEST_RECEIVED, "in place", token=2, version=1)  # neither: the grant stays
    assert DataSet.load(reg, "books").recorded_grant().fence_seq == 3
    ds.fire(Event.LOCK_RETURNED, "given back", forget_grant=True, token=2)
    assert DataSet.load(reg, "books").extras == {}


def test_another_writer_is_followed_not_overwritten(reg):
    mine, status_refresh = DataSet.load(reg, "books"), DataSet.load(reg, "books")
    status_refresh.fire(Event.LOCK_HELD, "seen", token=1, holder="firm", until=200)
    mine.fire(Event.LOCK_GRANTED, "taken", grant=_grant(2), token=2)
    assert [a["from_state"] for a in reg.audit("books")] == ["shared-idle", "locked-by-other"]
    assert reg.get_dataset("books")["state"] == "locked-by-me"


def test_a_refused_event_changes_nothing_in_memory_or_registry(reg):
    ds = DataSet.load(reg, "books")
    with pytest.raises(IllegalEvent):
        ds.fire(Event.COMMITTED, "not open", token=1, version=1)
    assert ds.state is State.SHARED_IDLE
    assert reg.get_dataset("books")["state"] == "shared-idle" and reg.audit("books") == []


def test_update_changes_columns_not_the_machine(reg):
    ds = DataSet.load(reg, "books")
    ds.update(synced_version=4, synced_hash="h")
    assert (ds.synced_version, ds.synced_hash, ds.state) == (4, "h", State.SHARED_IDLE)
