"""The firm and the client as two homes on one machine, each with the host registered
(pytest plugin listed in conftest's pytest_plugins); `area` is a fresh area name.

`cloudshare remote add` runs once per server and person in a session (each xdist worker has
its own): each test's home is a copy of that registered template with a fresh install id, as
if it had run `remote add` itself (the command is tested on its own in the e2e tests).
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest

from cloudshare_p2p.registry import DB_NAME
from tests.homes import Home
from tests.serverinfo import ShareServer


class HomeTemplates:
    """Registered homes, one per (server, person), copied into each test's folder."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._made: dict[tuple[str, int, str], Path] = {}

    def _template(self, server: ShareServer, name: str) -> Path:
        key = (server.kind, server.port, name)
        if key not in self._made:
            root = self.base / f"{server.kind}-{server.port}-{len(self._made)}"
            Home(root, name, server).add_remote()
            self._made[key] = root / "home"
        return self._made[key]

    def home(self, server: ShareServer, root: Path, name: str, env: dict[str, str] | None = None) -> Home:
        """A home at `root` with the host registered as "host" and an install id of its own;
        `env` is added to each command's environment."""
        shutil.copytree(self._template(server, name), root / "home")
        with sqlite3.connect(root / "home" / DB_NAME) as db:
            changed = db.execute("UPDATE meta SET value = ? WHERE key = 'install_id'",
                                 [uuid.uuid4().hex[:16]]).rowcount
        db.close()
        assert changed == 1, "the registry has no install_id row: update tests/fixtures_homes.py"
        return Home(root, name, server, env=dict(env or {}))


@pytest.fixture(scope="session")
def home_templates(tmp_path_factory: pytest.TempPathFactory) -> HomeTemplates:
    return HomeTemplates(tmp_path_factory.mktemp("home-templates"))


@pytest.fixture
def firm(share_server, tmp_path, home_templates: HomeTemplates) -> Home:
    return home_templates.home(share_server, tmp_path / "firm", "Firm (Sato)")


@pytest.fixture
def client(share_server, tmp_path, home_templates: HomeTemplates) -> Home:
    return home_templates.home(share_server, tmp_path / "client", "Client (Yamada)")


@pytest.fixture
def area() -> str:
    return f"books-{uuid.uuid4().hex[:8]}"
