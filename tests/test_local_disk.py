"""A home folder on a full disk: a clear message and exit 10, never a traceback.

The full disk is real: a tiny tmpfs mounted for the test (root only; skipped with the reason
elsewhere), filled to the last byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLOUDSHARE = str(Path(sys.executable).parent / "cloudshare")


@pytest.fixture
def full_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(1024):  # bounded: 256 KiB of tmpfs fills long before
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                return
    finally:
        os.close(fd)


def test_a_home_on_a_full_disk_says_so_and_exits_10(full_disk, tmp_path):
    home = full_disk / "home"
    data = tmp_path / "books.csv"
    data.write_text("ledger\n")
    env = dict(os.environ, CLOUDSHARE_NAME="Clerk")
    first = subprocess.run([CLOUDSHARE, "--home", str(home), "add", "books", str(data)], env=env,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    _fill(full_disk)
    (tmp_path / "more.csv").write_text("x\n")
    full = subprocess.run([CLOUDSHARE, "--home", str(home), "add", "more", str(tmp_path / "more.csv")],
                          env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert "Traceback" not in full.stderr and "internal error" not in full.stderr, full.stderr
    assert full.returncode == 10, full.stderr
    assert "could not be written" in full.stderr and "free some space" in full.stderr
