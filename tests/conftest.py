"""Shared fixtures: the real servers live in their own plugin modules."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fixtures_sshd", "tests.fixtures_host", "tests.fixtures_homes"]

REQUIRE_OPENSSH = os.environ.get("CLOUDSHARE_REQUIRE_OPENSSH") == "1"

# the suite decides itself where a share is packed (a developer's setting would change what
# the one-process tests prove)
os.environ.pop("CLOUDSHARE_PACKING_PROCESS", None)


@pytest.fixture(params=["openssh", "embedded"])
def share_server(request):
    """One share host of each kind: the protocol suite runs against both."""
    return request.getfixturevalue(f"{request.param}_server")
