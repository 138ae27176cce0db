"""Format 2 against both real servers (OpenSSH sshd and the embedded host), with the
previous release (git commit 65e4982, format 1 only) run from its own source tree:
its area is read and upgraded in place by the first close of this release; the previous
release then refuses the area with its "unsupported format" message and writes nothing;
two clients close many times and every version restores bit-exact. This release writes
format 2 by default; CLOUDSHARE_WRITE_FORMAT=2 is set here all the same (the test says so)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudshare_p2p.snapshot import PER_FILE
from tests.format2_util import edit_ledger, make_ledger
from tests.homes import SHARE_PASSWORD, Home
from tests.parties import open_area, session_for

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]
PREVIOUS = "65e4982"
FORMAT_2 = {"CLOUDSHARE_WRITE_FORMAT": "2"}


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's source (cloudshare_p2p, statemachine) from git history."""
    where = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS, "cloudshare_p2p", "statemachine"],
                             capture_output=True, timeout=60)
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} (the previous release) is not in this clone's history")
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True, timeout=60)
    return where


class OldHome(Home):
    """A home whose `cloudshare` is the previous release."""

    source: Path = Path()

    def run(self, *args: str, expect: int | None = 0, password: str | None = SHARE_PASSWORD,
            timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items()
                if k not in ("CLOUDSHARE_PASSWORD", "CLOUDSHARE_SSH_PASSWORD", "SSH_AUTH_SOCK")}
        full.update(CLOUDSHARE_NAME=self.name, PYTHONPATH=str(self.source), **env)
        if password is not None:
            full["CLOUDSHARE_PASSWORD"] = password
        command = [sys.executable, "-c", "from cloudshare_p2p.cli import main; main()",
                   "--home", str(self.root / "home"), *args]
        result = subprocess.run(command, env=full, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, cwd=self.root)
        if expect is not None:
            assert result.returncode == expect, (args, result.returncode, result.stdout, result.stderr)
        return result


def _files(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under the area's folder on the host: size and content hash."""
    return {str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_previous_release_area_read_upgraded_then_refused_by_it(share_server, tmp_path, area,
                                                                previous_release) -> None:
    old = OldHome(tmp_path / "old-firm", "Firm (Sato)", share_server)
    old.source = previous_release
    old.root.mkdir(parents=True)
    old.add_remote()
    ledger = make_ledger(old.data / "books.db", 20_000)
    old.run("share", "books", str(ledger), "--remote", "host", "--area", area, "--yes")
    copies = {1: ledger.read_bytes()}
    old.run("open", "books", password=None)
    edit_ledger(ledger, 100, 997, "old")
    old.run("close", "books", password=None)
    copies[2] = ledger.read_bytes()
    host_area = share_server.root / area
    assert json.loads((host_area / "config").read_text())["version"] == 1

    client = Home(tmp_path / "client", "Client (Yamada)", share_server, env=dict(FORMAT_2))
    client.add_remote()
    mine = client.data / "books.db"
    client.run("join", "books", str(mine), "--remote", "host", "--area", area)
    assert mine.read_bytes() == copies[2]  # a version-1 area read by this release
    client.run("open", "books", password=None)
    edit_ledger(mine, 100, 997, "new")
    client.run("close", "books", password=None)
    copies[3] = mine.read_bytes()
    config = json.loads((host_area / "config").read_text())
    assert config["version"] == 2 and "upgraded" in config
    assert list((host_area / "packs").rglob("*"))

    before = _files(host_area)
    refused = old.run("open", "books", password=None, expect=None)
    assert refused.returncode != 0
    assert "format version 2" in refused.stdout + refused.stderr
    assert _files(host_area) == before  # the previous release wrote nothing

    with session_for(share_server, tmp_path / "check") as conn:
        reader = open_area(conn, area, SHARE_PASSWORD)
        versions = reader.versions()
        assert [v.version for v in versions] == [1, 2, 3]
        assert reader.read_manifest(versions[2]).chunker == PER_FILE
        for version in versions:
            target = tmp_path / "check" / f"v{version.version}.db"
            reader.download(version, target)
            assert target.read_bytes() == copies[version.version]


def test_two_clients_many_closes_every_version_restores(firm, client, area, share_server, tmp_path) -> None:
    firm.env.update(FORMAT_2)
    client.env.update(FORMAT_2)
    ledger = make_ledger(firm.data / "books.db", 20_000)
    firm.run("share", "books", str(ledger), "--remote", "host", "--area", area, "--yes")
    mine = client.data / "books.db"
    client.run("join", "books", str(mine), "--remote", "host", "--area", area)
    copies = [ledger.read_bytes()]
    for day in range(6):
        home, path = (client, mine) if day % 2 == 0 else (firm, ledger)
        home.run("open", "books", password=None)
        edit_ledger(path, 40, 997 + day, f"day{day}")
        home.run("close", "books", password=None)
        copies.append(path.read_bytes())
    firm.run("open", "books", "--read-only", password=None)
    assert ledger.read_bytes() == copies[-1]
    with session_for(share_server, tmp_path / "check") as conn:
        reader = open_area(conn, area, SHARE_PASSWORD)
        versions = reader.versions()
        assert len(versions) == len(copies)
        assert all(reader.read_manifest(v).chunker == PER_FILE for v in versions)
        for version, want in zip(versions, copies, strict=True):
            target = tmp_path / "check" / f"v{version.version}.db"
            reader.download(version, target)
            assert target.read_bytes() == want
            assert reader.objects_needed(version)
