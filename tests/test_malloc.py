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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_one_mib_buffers_are_reused_not_faulted_in_afresh() -> None:
    """A transfer passes thousands of ~1 MiB buffers; each must not be a new mapping whose
    pages the kernel faults in and zeroes again (at a 1 MiB threshold: 256 faults a buffer)."""
    code = (
        "import resource, sys\n"
        "from cloudshare_p2p import malloc\n"
        "assert malloc.tune()\n"
        "keep = bytes(1 << 20)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for i in range(64):\n"
        "    piece = keep[: (1 << 20) - i] + b'x'\n"
        "    del piece\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) < 64 * 256 // 4  # ~16,000 when every buffer was mapped afresh
