"""The firm and the client as two homes on one machine, each with the host registered
(pytest plugin listed in conftest's pytest_plugins); `area` is a fresh area name."""

from __future__ import annotations

import uuid

import pytest

from tests.homes import Home


@pytest.fixture
def firm(share_server, tmp_path) -> Home:
    home = Home(tmp_path / "firm", "Firm (Sato)", share_server)
    home.add_remote()
    return home


@pytest.fixture
def client(share_server, tmp_path) -> Home:
    home = Home(tmp_path / "client", "Client (Yamada)", share_server)
    home.add_remote()
    return home


@pytest.fixture
def area() -> str:
    return f"books-{uuid.uuid4().hex[:8]}"
