"""cloudshare_p2p/malloc.py: glibc's allocator is tuned in the `cloudshare` process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cloudshare_p2p import malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_sets_glibcs_threshold_and_arenas() -> None:
    """In a fresh interpreter (the setting is process-wide): both settings are accepted."""
    code = "from cloudshare_p2p import malloc; print(malloc.tune())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_tune_does_nothing_off_linux(monkeypatch) -> None:
    monkeypatch.setattr(malloc.sys, "platform", "win32")
    assert malloc.tune() is False
