"""`cloudshare host` CLI details (issues 9 and 13): lazy import, add-id's password prompts,
exit codes, the rate limiter's rules and the audit line format, and the hosting guide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudshare_p2p import host as hostlib
from cloudshare_p2p import hostcli
from cloudshare_p2p.cli import main
from cloudshare_p2p.errors import ExitCode
from cloudshare_p2p.hostcli import host as host_cli
from tests.fixtures_host import REPO, make_client_key

NO_ENV = {"CLOUDSHARE_ID_PASSWORD": None}
HOSTING = REPO / "docs" / "hosting.md"


def record(d: Path, comm_id: str) -> dict:
    return json.loads((d / "accounts.json").read_text())["ids"][comm_id]


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    d = tmp_path / "h"
    hostlib.init_host(d)
    return d


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    p = tmp_path / "k.pub"
    p.write_text(make_client_key(tmp_path / "k") + "\n")
    return p


# --- issue 9: a client command does not load the host's SSH server ---------------------------


def test_client_cli_import_does_not_load_asyncssh():
    code = "import cloudshare_p2p.cli, sys; assert 'asyncssh' not in sys.modules, 'asyncssh loaded'"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_cli_defaults_equal_the_library_defaults():
    limits = hostlib.RateLimits()
    assert hostcli.SHUTDOWN_GRACE == hostlib.SHUTDOWN_GRACE
    cli_defaults = (hostcli.MAX_FAILURES, hostcli.FAILURE_WINDOW, hostcli.PENALTY)
    assert cli_defaults == (limits.max_failures, limits.window, limits.penalty)
    assert limits.penalty_max == hostcli.PENALTY * 16


# --- issue 9: add-id asks for a password only when one is wanted ------------------------------


def test_add_id_with_key_asks_no_password(host_dir, pub):
    r = CliRunner().invoke(host_cli, ["add-id", str(host_dir), "keyed", "--authorized-key", str(pub)],
                           input="", env=NO_ENV)
    assert r.exit_code == 0, r.output + r.stderr
    assert "password" not in r.stderr.lower()
    assert "login by key" in r.stdout
    assert record(host_dir, "keyed")["password"] is None


def test_add_id_with_key_and_password_flag_asks_twice(host_dir, pub):
    r = CliRunner().invoke(
        host_cli, ["add-id", str(host_dir), "both", "--authorized-key", str(pub), "--password"],
        input="first-try\nother\npw-ok\npw-ok\n", env=NO_ENV,
    )
    assert r.exit_code == 0, r.output + r.stderr
    assert "differ" in r.stderr and "pw-ok" not in r.output + r.stderr
    assert hostlib.verify_password(record(host_dir, "both")["password"], "pw-ok")
    assert len(record(host_dir, "both")["authorized_keys"]) == 1


def test_add_id_empty_password_names_the_key_only_way(host_dir):
    r = CliRunner().invoke(host_cli, ["add-id", str(host_dir), "nopw"], input="\n", env=NO_ENV)
    assert r.exit_code == ExitCode.USAGE, r.output + r.stderr
    assert "--no-password" in r.stderr and "--authorized-key" in r.stderr
    assert hostlib.list_ids(host_dir) == []


def test_add_id_password_and_no_password_exclude_each_other(host_dir, pub):
    r = CliRunner().invoke(host_cli, ["add-id", str(host_dir), "x", "--authorized-key", str(pub),
                                      "--password", "--no-password"], env=NO_ENV)
    assert r.exit_code == ExitCode.USAGE and "exclude" in r.stderr


# --- exit codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, inp, code, needle",
    [
        (["add-id", "{d}", "bad/id"], None, ExitCode.USAGE, "invalid communication ID"),
        (["remove-id", "{d}", "nobody"], None, ExitCode.ERROR, "no communication ID nobody"),
        (["add-id", "{d}", "eof"], "", ExitCode.INTERRUPTED, "nothing was changed"),
        (["init", "/proc/self/cloudshare-host"], None, ExitCode.LOCAL_DISK, "local disk refused"),
        (["serve", "{d}", "--log-file", "{d}/no/such/dir/log"], None, ExitCode.LOCAL_DISK, "log file"),
        (["openssh-config", "../etc"], None, ExitCode.USAGE, "invalid communication ID"),
    ],
)
def test_host_commands_exit_with_documented_codes(host_dir, args, inp, code, needle):
    argv = [a.format(d=host_dir) for a in args]
    for cli, prefix in ((host_cli, []), (main, ["host"])):  # standalone and under `cloudshare`
        r = CliRunner().invoke(cli, prefix + argv, input=inp, env=NO_ENV)
        assert r.exit_code == code, (prefix, r.output, r.stderr)
        assert needle in r.stderr
        assert "Traceback" not in r.stderr


# --- the rate limiter's rules (its own clock; the served behaviour is in test_host_attack) ---------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_rules():
    clock = Clock()
    limits = hostlib.RateLimits(max_failures=3, window=60, penalty=10, penalty_max=40)
    lim = hostlib.LoginLimiter(limits, clock)
    for _ in range(3):
        assert lim.check("A", "id") == (0.0, "")
        lim.failed("A", "id")
    assert lim.check("A", "id") == (10.0, "addr")  # over the limit: wait
    assert lim.check("A", "other-id")[1] == "addr"  # any ID from that address
    assert lim.check("B", "id") == (0.0, "")  # a clean address is not slowed by the ID's count
    clock.now += 10
    assert lim.check("A", "id") == (0.0, "")  # one attempt; it takes the slot
    assert lim.check("A", "id")[0] == 10.0  # a concurrent one waits
    lim.failed("A", "id")
    assert lim.check("A", "id") == (20.0, "addr")  # the delay doubles
    for _ in range(5):
        clock.now += 100
        lim.check("A", "id")
    # failures spread over addresses: the ID counts for addresses that failed themselves
    for addr in ("C", "D", "E"):
        lim.failed(addr, "victim")
    assert lim.check("C", "victim")[1] == "id"
    assert lim.check("F", "victim") == (0.0, "")
    # a pair that logged in before is judged by its own failures only
    lim.succeeded("C", "victim")
    assert lim.check("C", "victim") == (0.0, "")
    # the window forgets
    clock.now += 61
    assert lim.check("D", "victim") == (0.0, "")
    assert hostlib.RateLimits(max_failures=3, penalty=10, penalty_max=40).delay(50) == 40


def test_limiter_memory_is_bounded():
    clock = Clock()
    lim = hostlib.LoginLimiter(hostlib.RateLimits(max_tracked=100), clock)
    for i in range(1000):
        lim.failed(f"10.0.{i // 250}.{i % 250}", f"user{i}")
    assert len(lim._fails) <= 3 * 100 + 3


# --- the audit line format ---------------------------------------------------------------------


def test_logfmt_cannot_be_forged_by_client_text():
    line = hostlib.logfmt(event="lock-break", by='Acme "Ltd"\nevent=login result=ok', note="", n=3)
    assert "\n" not in line
    assert line.startswith('event=lock-break by="Acme \\"Ltd\\"\\nevent=login result=ok" note="" n=3')
    assert hostlib.logfmt(a=None, b="x y") == 'b="x y"'


# --- the hosting guide ---------------------------------------------------------------------------


def test_hosting_guide_covers_issue_13():
    text = HOSTING.read_text(encoding="utf-8")
    assert "Until `cloudshare` itself lists" not in text
    for needle in ("--log-file", "--max-failures", "--penalty", "MaxAuthTries", "PerSourcePenalties",
                   "fail2ban", "unprivileged", "event=lock-break", "`id-removed`", "| 10 |"):
        assert needle in text, needle
