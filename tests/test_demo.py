"""`cloudshare demo`: the real executable tells the whole story and exits 0."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEMO_TIMEOUT = 180
# one long run of the whole story (every step is tested on its own too), on one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


def _cloudshare() -> list[str]:
    exe = shutil.which("cloudshare", path=str(Path(sys.executable).parent))
    if exe:
        return [exe]
    return [sys.executable, "-c", "from cloudshare_p2p.cli import main; main()"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSHARE_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cloudshare(), "demo"],
        cwd=tmp_path_factory.mktemp("demo-cwd"),
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=DEMO_TIMEOUT,
    )


def test_demo_exits_zero(demo_run: subprocess.CompletedProcess[str]) -> None:
    assert demo_run.returncode == 0, demo_run.stdout[-4000:] + demo_run.stderr[-2000:]
    assert "All " in demo_run.stdout and "checks passed" in demo_run.stdout


def test_demo_tells_the_key_moments(demo_run: subprocess.CompletedProcess[str]) -> None:
    out = demo_run.stdout
    # the firm is refused while the client holds the lock, and sees who, since and until
    assert re.search(r"locked by Client \(Yamada Trading\) since .* until .*entering March receipts", out)
    assert out.count("(exit 3, as expected)") >= 2
    # the vanished laptop: the firm waits the lease out, the late close is fenced, work kept aside
    assert "locked by Client laptop" in out
    assert "(exit 6, as expected)" in out
    assert "kept aside as" in out and "not-sent" in out
    assert "nothing was overwritten" in out
    # history, leave, delete for everyone, area gone
    assert re.search(r"v3 .*Firm \(Sato\)", out)
    assert "no longer uses Cloud Share" in out
    assert "received the newest version (4) of books first" in out
    assert "Cloud Share data deleted" in out
    assert "gone from the host" in out and "(exit 4, as expected)" in out
    assert "the host stopped cleanly (exit 0)" in out
    # each step has its header, commands are echoed with short paths
    for step in range(1, 10):
        assert f"── {step}. " in out
    assert "$ cloudshare --home firm open books" in out


def test_demo_cleans_up_its_temporary_folder(demo_run: subprocess.CompletedProcess[str]) -> None:
    match = re.search(r"Everything happens in (\S+)", demo_run.stdout)
    assert match, demo_run.stdout[:500]
    assert not Path(match.group(1)).exists()


def test_demo_refuses_a_non_empty_keep_folder(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("mine")
    res = subprocess.run(
        [*_cloudshare(), "demo", "--keep", str(tmp_path)],
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "not empty" in res.stderr
    assert (tmp_path / "something").read_text() == "mine"
