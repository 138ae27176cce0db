"""The local registry: CRUD, errors, migrations, install id, audit, concurrent processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudshare_p2p import errors
from cloudshare_p2p.registry import Registry, default_home
from cloudshare_p2p.registry_migrations import NAMES, migrations

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def reg(tmp_path: Path):
    with Registry(tmp_path / "home") as registry:
        yield registry


# --- home -------------------------------------------------------------------------------


def test_default_home_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDSHARE_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"


def test_default_home_platformdirs(monkeypatch):
    monkeypatch.delenv("CLOUDSHARE_HOME", raising=False)
    import platformdirs

    assert default_home() == platformdirs.user_data_path("cloudshare-p2p")
    monkeypatch.setenv("CLOUDSHARE_HOME", "")
    assert default_home() == platformdirs.user_data_path("cloudshare-p2p")


def test_home_created_private_with_wal(tmp_path):
    home = tmp_path / "a" / "b"
    with Registry(home) as reg:
        assert reg.home == home
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert (home / "registry.db").is_file()
        assert reg.db.journal_mode == "wal"
        timeout = reg.db.execute("PRAGMA busy_timeout").fetchone()[0]
        assert timeout >= 5000


# --- identity ---------------------------------------------------------------------------


def test_install_id_stable_across_opens(tmp_path):
    with Registry(tmp_path) as first:
        install_id = first.install_id
    assert len(install_id) == 16
    int(install_id, 16)
    with Registry(tmp_path) as second:
        assert second.install_id == install_id
    with Registry(tmp_path / "other") as other:
        assert other.install_id != install_id


def test_display_name_default_and_set(tmp_path):
    with Registry(tmp_path) as reg:
        assert "@" in reg.display_name
        reg.set_display_name("Anna (Kanzlei)")
        assert reg.display_name == "Anna (Kanzlei)"
        reg.set_display_name("Anna")
        with pytest.raises(ValueError):
            reg.set_display_name("  ")
    with Registry(tmp_path) as reg:
        assert reg.display_name == "Anna"


# --- migrations -------------------------------------------------------------------------


def test_migrations_idempotent(tmp_path):
    with Registry(tmp_path) as reg:
        reg.add_dataset("books", tmp_path / "books")
        applied = [m.name for m in migrations().applied(reg.db)]
        assert applied == ["m001_initial", "m002_synced_stamp"]
        assert migrations().pending(reg.db) == []
    with Registry(tmp_path) as reg:  # second open: nothing re-applied, data kept
        assert [m.name for m in migrations().applied(reg.db)] == applied
        assert reg.get_dataset("books")["state"] == "unshared"
        tables = set(reg.db.table_names())
        assert {"meta", "remotes", "datasets", "audit", "_sqlite_migrations"} <= tables


def test_an_up_to_date_home_opens_without_sqlite_utils(tmp_path):
    """sqlite-utils (slow to import) is needed only while a migration is pending."""
    with Registry(tmp_path) as reg:
        reg.add_dataset("books", tmp_path / "books")
    code = ("import sys; from cloudshare_p2p.registry import Registry; r = Registry(sys.argv[1]); "
            "r.update_dataset('books', state='x'); print(r.get_dataset('books')['state'], r.install_id); "
            "print('sqlite_utils' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=str(REPO))).stdout.split()
    with Registry(tmp_path) as reg:
        assert out == ["x", reg.install_id, "False"]


def test_a_home_with_a_migration_pending_gets_it(tmp_path):
    """A home made before the newest migration (here: m002 not applied) is brought up to date."""
    with Registry(tmp_path) as reg:
        reg.add_dataset("books", tmp_path / "books")
    with sqlite3.connect(tmp_path / "registry.db") as db:
        db.execute("ALTER TABLE datasets DROP COLUMN synced_stamp")
        db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_synced_stamp'")
    db.close()
    with Registry(tmp_path) as reg:
        assert [m.name for m in migrations().applied(reg.db)] == list(NAMES)
        assert reg.update_dataset("books", synced_stamp="s")["synced_stamp"] == "s"
        assert reg.get_dataset("books")["state"] == "unshared"


def test_writes_outside_a_transaction_are_committed(tmp_path):
    with Registry(tmp_path) as reg:
        reg._execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        assert not reg.conn.in_transaction
        with pytest.raises(sqlite3.IntegrityError):
            reg._execute("INSERT INTO meta (key, value) VALUES ('k', 'again')")
        assert not reg.conn.in_transaction
    with sqlite3.connect(tmp_path / "registry.db") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'k'").fetchone() == ("v",)
    db.close()


# --- remotes ----------------------------------------------------------------------------


def test_remote_crud(reg):
    reg.add_remote("firm", "sftp://client7@host.example:22/", "/k/id_ed25519", "SHA256:abc")
    reg.add_remote("backup", "sftp://b@h2/", None, None)
    firm = reg.get_remote("firm")
    assert firm["url"] == "sftp://client7@host.example:22/"
    assert firm["identity"] == "/k/id_ed25519"
    assert firm["host_fingerprint"] == "SHA256:abc"
    assert firm["added"].endswith("+00:00")
    assert [r["name"] for r in reg.list_remotes()] == ["backup", "firm"]
    reg.remove_remote("backup")
    assert [r["name"] for r in reg.list_remotes()] == ["firm"]
    with pytest.raises(errors.NotRegistered):
        reg.get_remote("backup")
    with pytest.raises(errors.NotRegistered):
        reg.remove_remote("backup")


def test_remote_duplicate(reg):
    reg.add_remote("firm", "sftp://a@h/", None, None)
    with pytest.raises(errors.CloudShareError, match="remote firm already exists") as info:
        reg.add_remote("firm", "sftp://other@h/", None, None)
    assert info.value.hint
    assert reg.get_remote("firm")["url"] == "sftp://a@h/"


def test_remove_remote_in_use_refused(reg, tmp_path):
    reg.add_remote("firm", "sftp://a@h/", None, None)
    reg.add_dataset("books", tmp_path / "books")
    reg.add_dataset("payroll", tmp_path / "payroll")
    reg.update_dataset("books", remote="firm", area="a1")
    reg.update_dataset("payroll", remote="firm", area="a2")
    with pytest.raises(errors.CloudShareError, match="books, payroll"):
        reg.remove_remote("firm")
    assert reg.get_remote("firm")
    reg.update_dataset("books", remote=None, area=None)
    reg.remove_dataset("payroll")
    reg.remove_remote("firm")
    assert reg.list_remotes() == []


# --- data sets --------------------------------------------------------------------------


def test_dataset_crud(reg, tmp_path):
    row = reg.add_dataset("books", tmp_path / "books")
    assert row["name"] == "books"
    assert row["path"] == str(tmp_path / "books")
    assert row["state"] == "unshared"
    for empty in ("step", "remote", "area", "area_id", "synced_version", "synced_hash"):
        assert row[empty] is None
    assert row["machine"] is None
    assert row["updated"].endswith("+00:00")

    reg.add_remote("firm", "sftp://a@h/", None, None)
    new = reg.update_dataset(
        "books",
        state="shared",
        step=None,
        remote="firm",
        area="books-2026",
        area_id="0f3c",
        synced_version=3,
        synced_hash="sha256:beef",
        machine={"lease": {"until": 12}},
    )
    assert new == reg.get_dataset("books")
    assert new["state"] == "shared"
    assert new["synced_version"] == 3
    assert new["synced_hash"] == "sha256:beef"
    assert json.loads(new["machine"]) == {"lease": {"until": 12}}
    assert new["updated"] >= row["updated"]
    assert reg.update_dataset("books", machine='{"a": 1}')["machine"] == '{"a": 1}'

    reg.add_dataset("payroll", Path("relative/payroll"))
    assert reg.get_dataset("payroll")["path"] == os.path.abspath("relative/payroll")
    assert [d["name"] for d in reg.list_datasets()] == ["books", "payroll"]
    assert [d["name"] for d in reg.find_by_area("firm", "books-2026")] == ["books"]
    assert reg.find_by_area("firm", "other") == []
    assert reg.find_by_area("elsewhere", "books-2026") == []

    reg.remove_dataset("payroll")
    with pytest.raises(errors.NotRegistered):
        reg.get_dataset("payroll")
    with pytest.raises(errors.NotRegistered):
        reg.remove_dataset("payroll")
    with pytest.raises(errors.NotRegistered):
        reg.update_dataset("payroll", state="shared")


def test_dataset_duplicate(reg, tmp_path):
    reg.add_dataset("books", tmp_path / "books")
    with pytest.raises(errors.CloudShareError, match="data set books already exists"):
        reg.add_dataset("books", tmp_path / "elsewhere")
    assert reg.get_dataset("books")["path"] == str(tmp_path / "books")


def test_update_dataset_rejects_unknown_fields_and_remotes(reg, tmp_path):
    reg.add_dataset("books", tmp_path / "books")
    with pytest.raises(ValueError, match="created"):
        reg.update_dataset("books", created="2000-01-01")
    with pytest.raises(ValueError, match="bogus"):
        reg.update_dataset("books", bogus=1)
    with pytest.raises(errors.NotRegistered, match="no remote named nowhere"):
        reg.update_dataset("books", remote="nowhere")
    assert reg.get_dataset("books")["remote"] is None


# --- transactions -----------------------------------------------------------------------


def test_write_rolls_back_on_error(reg, tmp_path):
    reg.add_dataset("books", tmp_path / "books")
    with pytest.raises(RuntimeError), reg.write():
        reg.update_dataset("books", state="shared")
        reg.record("books", "share", "unshared", "shared")
        raise RuntimeError("boom")
    assert reg.get_dataset("books")["state"] == "unshared"
    assert reg.audit("books") == []
    assert not reg.db.conn.in_transaction


def test_write_nested_inner_error_caught(reg, tmp_path):
    reg.add_dataset("books", tmp_path / "books")
    with reg.write():
        reg.update_dataset("books", step="uploading")
        with pytest.raises(errors.CloudShareError):
            reg.add_dataset("books", tmp_path / "x")  # inner write fails, outer continues
        reg.record("books", "share", "unshared", "sharing")
    assert reg.get_dataset("books")["step"] == "uploading"
    assert len(reg.audit("books")) == 1


# --- audit ------------------------------------------------------------------------------


def test_audit_ordering_and_filter(reg):
    for i in range(5):
        reg.record("books", f"e{i}", f"s{i}", f"s{i + 1}", detail=f"d{i}")
        reg.record("payroll", f"p{i}", "a", "b")
    books = reg.audit("books")
    assert [e["event"] for e in books] == ["e0", "e1", "e2", "e3", "e4"]
    assert books[0]["from_state"] == "s0" and books[0]["to_state"] == "s1"
    assert books[0]["detail"] == "d0"
    times = [e["time"] for e in books]
    assert times == sorted(times) and times[0].endswith("+00:00")
    assert [e["event"] for e in reg.audit("books", limit=2)] == ["e3", "e4"]
    everything = reg.audit()
    assert len(everything) == 10
    assert [e["event"] for e in everything[:2]] == ["e0", "p0"]
    assert [e["event"] for e in reg.audit(limit=3)] == ["p3", "e4", "p4"]
    assert len(reg.audit(limit=None)) == 10
    assert reg.audit("nothing") == []
    assert reg.audit("payroll")[0]["detail"] == ""


# --- several processes ------------------------------------------------------------------

WORKERS = 6
TRANSACTIONS = 100


def _wait_until(start_at: float) -> None:
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)


def _open_worker(args: tuple[str, float]) -> str:
    home, start_at = args
    _wait_until(start_at)
    with Registry(Path(home)) as reg:
        return reg.install_id


def _write_worker(args: tuple[str, int, float]) -> tuple[int, list[str]]:
    home, worker, start_at = args
    failures: list[str] = []
    with Registry(Path(home)) as reg:
        _wait_until(start_at)
        for i in range(TRANSACTIONS):
            try:
                with reg.write():
                    row = reg.get_dataset("books")
                    version = (row["synced_version"] or 0) + 1  # read-modify-write
                    reg.update_dataset("books", synced_version=version, step=f"w{worker}")
                    reg.record("books", "bump", str(version - 1), str(version), f"w{worker}-{i}")
            except sqlite3.Error as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
    return len(failures), failures[:5]


def _run_pool(func, jobs: list, timeout: float) -> list:
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(len(jobs))
    try:
        return pool.map_async(func, jobs).get(timeout=timeout)
    finally:
        pool.terminate()
        pool.join()


def test_concurrent_first_open(tmp_path):
    home = tmp_path / "fresh"
    start_at = time.time() + 1.5
    ids = _run_pool(_open_worker, [(str(home), start_at)] * WORKERS, timeout=120)
    assert len(set(ids)) == 1
    with Registry(home) as reg:
        assert reg.install_id == ids[0]
        assert [m.name for m in migrations().applied(reg.db)] == ["m001_initial", "m002_synced_stamp"]


def test_concurrent_writers_never_locked(tmp_path):
    home = tmp_path / "home"
    with Registry(home) as reg:
        reg.add_dataset("books", tmp_path / "books")
    start_at = time.time() + 1.5
    jobs = [(str(home), w, start_at) for w in range(WORKERS)]
    results = _run_pool(_write_worker, jobs, timeout=240)
    failures = [msg for _count, msgs in results for msg in msgs]
    assert sum(count for count, _ in results) == 0, failures
    with Registry(home) as reg:
        total = WORKERS * TRANSACTIONS
        assert reg.get_dataset("books")["synced_version"] == total  # no lost update
        log = reg.audit("books", limit=None)
        assert len(log) == total
        assert [int(e["to_state"]) for e in log] == list(range(1, total + 1))
