"""`cloudshare host`: the embedded asyncssh SFTP host, its CLI, and the OpenSSH recipe."""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner
from paramiko.sftp import CMD_EXTENDED

from cloudshare_p2p import host as hostlib
from cloudshare_p2p.hostcli import host as host_cli
from tests.fixtures_host import (
    REPO,
    assert_clean_stop,
    make_client_key,
    make_host_dir,
    start_host_process,
    stop_host_process,
)
from tests.serverinfo import ShareServer

ENV_PW = {"CLOUDSHARE_ID_PASSWORD": "s3cret-pw"}


# --- helpers --------------------------------------------------------------------


def key_fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def open_transport(server: ShareServer, port: int | None = None) -> paramiko.Transport:
    sock = socket.create_connection((server.host, port or server.port), timeout=10)
    t = paramiko.Transport(sock)
    t.banner_timeout = t.auth_timeout = 10
    t.start_client(timeout=10)
    got = key_fingerprint(t.get_remote_server_key())
    if got != server.host_key_fingerprint:
        t.close()
        raise AssertionError(f"host key {got} != pinned {server.host_key_fingerprint}")
    return t


def login(
    server: ShareServer, *, port: int | None = None, password: str | None = None, user: str | None = None
) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """Log in with the password if given, else with the fixture's key; open SFTP."""
    t = open_transport(server, port)
    try:
        if password is not None:
            t.auth_password(user or server.user, password)
        else:
            key = paramiko.Ed25519Key.from_private_key_file(str(server.identity))
            t.auth_publickey(user or server.user, key)
        sftp = paramiko.SFTPClient.from_transport(t)
        sftp.get_channel().settimeout(10)
        return t, sftp
    except BaseException:
        t.close()
        raise


def hardlink(sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
    sftp._request(CMD_EXTENDED, "hardlink@openssh.com", src, dst)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"


# --- host folder and CLI --------------------------------------------------------


def test_init_prints_fingerprint_and_keeps_key(tmp_path):
    runner = CliRunner()
    d = tmp_path / "h"
    r1 = runner.invoke(host_cli, ["init", str(d)])
    assert r1.exit_code == 0, r1.output + r1.stderr
    fp = r1.stdout.split("host key fingerprint: ")[1].strip()
    assert fp.startswith("SHA256:") and len(fp) == 7 + 43
    key_bytes = (d / "host_key").read_bytes()
    assert stat.S_IMODE((d / "host_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "accounts.json").stat().st_mode) == 0o600
    assert (d / "data").is_dir()
    assert b"OPENSSH PRIVATE KEY" in key_bytes
    # re-init is idempotent: same key, same fingerprint
    r2 = runner.invoke(host_cli, ["init", str(d)])
    assert r2.exit_code == 0
    assert fp in r2.stdout and "already" in r2.stdout
    assert (d / "host_key").read_bytes() == key_bytes


def test_init_refuses_non_empty_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "something").write_text("hi")
    r = CliRunner().invoke(host_cli, ["init", str(tmp_path / "x")])
    assert r.exit_code == 1
    assert "not a host folder" in r.stderr


def test_add_list_remove_ids(tmp_path):
    runner = CliRunner()
    d = tmp_path / "h"
    assert runner.invoke(host_cli, ["init", str(d)]).exit_code == 0
    r = runner.invoke(host_cli, ["add-id", str(d), "client-1"], env=ENV_PW)
    assert r.exit_code == 0, r.output + r.stderr
    pub = tmp_path / "k.pub"
    pub.write_text(make_client_key(tmp_path / "k") + "\n")
    r = runner.invoke(host_cli, ["add-id", str(d), "client-2", "--authorized-key", str(pub), "--no-password"])
    assert r.exit_code == 0, r.output + r.stderr
    r = runner.invoke(host_cli, ["list-ids", str(d)])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("client-1\tpassword\t")
    assert lines[1].startswith("client-2\tkeys=1\t")
    assert (d / "data" / "client-1").is_dir() and (d / "data" / "client-2").is_dir()
    # the password is stored only as a slow hash
    text = (d / "accounts.json").read_text()
    assert "s3cret-pw" not in text
    rec = json.loads(text)["ids"]["client-1"]["password"]
    assert rec["alg"] == "scrypt" and rec["n"] >= 2**14 and rec["salt"]
    assert hostlib.verify_password(rec, "s3cret-pw")
    assert not hostlib.verify_password(rec, "s3cret-pw!")
    # remove
    r = runner.invoke(host_cli, ["remove-id", str(d), "client-1"])
    assert r.exit_code == 0 and "kept" in r.stdout
    assert [i.comm_id for i in hostlib.list_ids(d)] == ["client-2"]
    r = runner.invoke(host_cli, ["remove-id", str(d), "client-1"])
    assert r.exit_code == 1 and "list-ids" in r.stderr


def test_add_existing_id_is_a_clear_error(tmp_path):
    runner = CliRunner()
    d = tmp_path / "h"
    runner.invoke(host_cli, ["init", str(d)])
    assert runner.invoke(host_cli, ["add-id", str(d), "dup"], env=ENV_PW).exit_code == 0
    before = (d / "accounts.json").read_bytes()
    r = runner.invoke(host_cli, ["add-id", str(d), "dup"], env=ENV_PW)
    assert r.exit_code == 1
    assert "communication ID dup already exists" in r.stderr
    assert f"cloudshare host remove-id {d} dup" in r.stderr
    assert (d / "accounts.json").read_bytes() == before


def test_add_id_prompts_twice_without_env(tmp_path):
    runner = CliRunner()
    d = tmp_path / "h"
    runner.invoke(host_cli, ["init", str(d)])
    env = {"CLOUDSHARE_ID_PASSWORD": None}
    r = runner.invoke(host_cli, ["add-id", str(d), "p1"], input="pw1\npw1\n", env=env)
    assert r.exit_code == 0, r.output + r.stderr
    assert "pw1" not in r.output
    rec = json.loads((d / "accounts.json").read_text())["ids"]["p1"]["password"]
    assert hostlib.verify_password(rec, "pw1")


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["add-id", "{d}", "bad/id"], 2, "invalid communication ID"),
        (["add-id", "{d}", ".hidden"], 2, "invalid communication ID"),
        (["remove-id", "{d}", "bad/id"], 2, "invalid communication ID"),
        (["add-id", "{d}", "ok", "--no-password"], 2, "--authorized-key"),
        (["add-id", "{d}/nope", "ok"], 1, "cloudshare host init"),
        (["list-ids", "{d}/nope"], 1, "cloudshare host init"),
        (["add-id", "{d}"], 2, "Missing argument"),
    ],
)
def test_cli_errors(tmp_path, args, code, needle):
    runner = CliRunner()
    d = tmp_path / "h"
    runner.invoke(host_cli, ["init", str(d)])
    r = runner.invoke(host_cli, [a.format(d=d) for a in args], env=ENV_PW)
    assert r.exit_code == code, r.output + r.stderr
    assert needle in r.stderr


def test_add_id_rejects_bad_public_key(tmp_path):
    d = tmp_path / "h"
    hostlib.init_host(d)
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    r = CliRunner().invoke(host_cli, ["add-id", str(d), "x", "--authorized-key", str(bad)], env=ENV_PW)
    assert r.exit_code == 1 and "not an OpenSSH public key" in r.stderr
    assert hostlib.list_ids(d) == []


def test_module_runs_as_script(tmp_path):
    d = tmp_path / "h"
    r = subprocess.run(
        [sys.executable, "-m", "cloudshare_p2p.hostcli", "init", str(d)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert hostlib.fingerprint(d) in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "cloudshare_p2p.hostcli", "add-id", str(d), "a"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV_PW},
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "cloudshare_p2p.hostcli", "add-id", str(d), "a"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV_PW},
    )
    assert r.returncode == 1 and "already exists" in r.stderr


def test_openssh_config_block():
    r = CliRunner().invoke(host_cli, ["openssh-config", "client-7", "--data-root", "/srv/cs"])
    assert r.exit_code == 0
    out = r.stdout
    for line in [
        "Match User client-7",
        "ChrootDirectory /srv/cs/client-7",
        "ForceCommand internal-sftp",
        "AllowTcpForwarding no",
        "PermitTTY no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
    ]:
        assert line in out
    r = CliRunner().invoke(host_cli, ["openssh-config", "x", "--no-password"])
    assert "PasswordAuthentication no" in r.stdout and "AuthenticationMethods publickey\n" in (r.stdout)


# --- the running embedded host --------------------------------------------------


@pytest.mark.server
def test_login_with_key_and_password(embedded_server):
    t, sftp = login(embedded_server)
    try:
        name = unique("keylogin")
        with sftp.open(f"/{name}", "wx") as f:
            f.write(b"hello")
        assert (embedded_server.root / name).read_bytes() == b"hello"
        assert sftp.normalize(".") == "/"
    finally:
        t.close()
    t, sftp = login(embedded_server, password=embedded_server.password)
    try:
        assert name in sftp.listdir("/")
        sftp.remove(f"/{name}")
    finally:
        t.close()


@pytest.mark.server
def test_host_key_matches_printed_fingerprint(embedded_server):
    host_dir = embedded_server.root.parent.parent
    assert hostlib.fingerprint(host_dir) == embedded_server.host_key_fingerprint
    t = open_transport(embedded_server)  # raises if it does not match
    t.close()


@pytest.mark.server
@pytest.mark.parametrize("user, password", [("firm-test", "wrong"), ("nobody-here", "x")])
def test_wrong_password_or_unknown_id_refused(embedded_server, user, password):
    t = open_transport(embedded_server)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_password(user, password)
    finally:
        t.close()


@pytest.mark.server
def test_foreign_key_refused(embedded_server, tmp_path):
    make_client_key(tmp_path / "other")
    t = open_transport(embedded_server)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey(
                embedded_server.user, paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "other"))
            )
    finally:
        t.close()


def test_failed_login_cap_closes_connection(tmp_path, caplog):
    """After MAX_AUTH_FAILURES wrong passwords on one connection the host hangs up.

    (paramiko cannot show this: it re-sends the ssh-userauth service request before every
    attempt, and asyncssh hangs up on the second one, so a paramiko client gets one
    attempt per connection anyway. asyncssh's client retries on one connection.)
    """
    import asyncssh

    host_dir, _identity, _fp = make_host_dir(tmp_path)
    attempts = 0

    class Guesser(asyncssh.SSHClient):
        def password_auth_requested(self) -> str:
            nonlocal attempts
            attempts += 1
            return f"guess-{attempts}"

    async def main() -> None:
        h = hostlib.EmbeddedHost(host_dir, "127.0.0.1", 0, grace=0.2)
        await h.start()
        try:
            with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
                async with asyncssh.connect(
                    "127.0.0.1",
                    h.port,
                    username="firm-test",
                    client_factory=Guesser,
                    client_keys=None,
                    known_hosts=None,
                    config=None,
                    preferred_auth="password",
                ):
                    pass
        finally:
            await h.stop()

    caplog.set_level("INFO", logger="cloudshare.host")
    asyncio.run(asyncio.wait_for(main(), 60))
    assert attempts == hostlib.MAX_AUTH_FAILURES
    assert "result=disconnected" in caplog.text and "too many failures" in caplog.text
    assert "guess-" not in caplog.text


@pytest.mark.server
def test_confined_to_own_folder(embedded_server):
    data = embedded_server.root.parent
    other = data / unique("neighbour")
    other.mkdir()
    (other / "secret.txt").write_text("not yours")
    outside = embedded_server.root.parent.parent / "accounts.json"
    link = embedded_server.root / unique("escape")
    os.symlink(outside, link)  # planted on the server, not by the client
    t, sftp = login(embedded_server)
    try:
        assert other.name not in sftp.listdir("/")
        assert other.name not in sftp.listdir("/..")
        assert sftp.normalize("/../..") == "/"
        for path in (
            f"/../{other.name}/secret.txt",
            f"../{other.name}/secret.txt",
            f"/../../data/{other.name}/secret.txt",
        ):
            with pytest.raises(OSError):
                sftp.open(path).read()
        with pytest.raises(OSError):
            sftp.listdir(f"/../{other.name}")
        # a symlink pointing outside is not followed
        with pytest.raises(PermissionError):
            sftp.open(f"/{link.name}").read()
        with pytest.raises(PermissionError):
            sftp.stat(f"/{link.name}")
        # the client cannot create symlinks
        with pytest.raises(PermissionError):
            sftp.symlink("/", f"/{unique('mylink')}")
    finally:
        t.close()
        link.unlink()
        shutil.rmtree(other)


@pytest.mark.server
def test_shell_exec_and_forwarding_refused(embedded_server):
    t, _sftp = login(embedded_server)
    try:
        for action in ("exec", "shell", "subsystem"):
            chan = t.open_session(timeout=10)
            chan.settimeout(10)
            with pytest.raises(paramiko.SSHException):
                if action == "exec":
                    chan.exec_command("id")
                elif action == "shell":
                    chan.invoke_shell()
                else:
                    chan.invoke_subsystem("not-sftp")
            chan.close()
        with pytest.raises(paramiko.ChannelException):
            t.open_channel("direct-tcpip", ("127.0.0.1", embedded_server.port), ("127.0.0.1", 0), timeout=10)
        with pytest.raises(paramiko.SSHException):
            t.request_port_forward("127.0.0.1", 0)
    finally:
        t.close()


@pytest.mark.server
def test_hardlink_and_noreplace_rename(embedded_server):
    t, sftp = login(embedded_server)
    area = f"/{unique('area')}"
    try:
        sftp.mkdir(area)
        with sftp.open(f"{area}/tmp", "wx") as f:
            f.write(b"one")
        with sftp.open(f"{area}/other", "wx") as f:
            f.write(b"two")
        hardlink(sftp, f"{area}/tmp", f"{area}/final")
        assert sftp.open(f"{area}/final").read() == b"one"
        with pytest.raises(OSError):
            hardlink(sftp, f"{area}/other", f"{area}/final")
        assert sftp.open(f"{area}/final").read() == b"one"
        with pytest.raises(OSError):  # exclusive create of an existing name
            sftp.open(f"{area}/final", "wx")
        with pytest.raises(OSError):  # plain rename never overwrites
            sftp.rename(f"{area}/other", f"{area}/final")
        assert sftp.open(f"{area}/final").read() == b"one"
        sftp.rename(f"{area}/other", f"{area}/moved")
        assert sorted(sftp.listdir(area)) == ["final", "moved", "tmp"]
    finally:
        for name in ("tmp", "final", "moved", "other"):
            try:
                sftp.remove(f"{area}/{name}")
            except OSError:
                pass
        sftp.rmdir(area)
        t.close()


@pytest.mark.server
def test_four_processes_serve_one_folder(embedded_x4_server):
    srv = embedded_x4_server
    assert len(set(srv.all_ports())) == 4
    name = f"/{unique('x4')}"
    sessions = [login(srv, port=p) for p in srv.all_ports()]
    try:
        sessions[0][1].mkdir(name)
        for i, (_t, sftp) in enumerate(sessions):
            with sftp.open(f"{name}/from-{i}", "wx") as f:
                f.write(str(i).encode())
        for _t, sftp in sessions:
            assert sorted(sftp.listdir(name)) == [f"from-{i}" for i in range(4)]
        # exactly one exclusive create wins across processes
        wins = 0
        for _t, sftp in sessions:
            try:
                hardlink(sftp, f"{name}/from-0", f"{name}/winner")
                wins += 1
            except OSError:
                pass
        assert wins == 1
    finally:
        for t, _sftp in sessions:
            t.close()
        shutil.rmtree(srv.root / name.lstrip("/"))


@pytest.mark.server
def test_sigterm_stops_cleanly_with_live_connection(tmp_path):
    host_dir, identity, fp = make_host_dir(tmp_path)
    hp = start_host_process(host_dir)
    server = ShareServer(
        kind="embedded",
        host="127.0.0.1",
        port=hp.port,
        user="firm-test",
        base="/",
        root=host_dir / "data" / "firm-test",
        identity=identity,
        host_key_fingerprint=fp,
    )
    t, sftp = login(server)
    try:
        sftp.mkdir("/area-a")
        with sftp.open("/area-a/file", "wx") as f:
            f.write(b"x" * 1000)
        bad = open_transport(server)
        with pytest.raises(paramiko.AuthenticationException):
            bad.auth_password("firm-test", "nope")
        bad.close()
        started = time.monotonic()
        assert_clean_stop(hp)  # the idle client is closed after the grace period
        assert time.monotonic() - started < 10
    finally:
        t.close()
    err = hp.stderr_text()
    assert re.search(r"event=login result=ok peer=127\.0\.0\.1:\d+ method=publickey id=firm-test", err)
    assert re.search(r"event=login result=failed peer=127\.0\.0\.1:\d+ method=password id=firm-test", err)
    assert "nope" not in err and "correct horse" not in err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", hp.port), timeout=1).close()


@pytest.mark.server
def test_serve_reports_busy_port(tmp_path):
    host_dir, _identity, _fp = make_host_dir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "cloudshare_p2p.hostcli", "serve", str(host_dir), "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_library_api_in_process(tmp_path):
    """EmbeddedHost start/stop in one event loop, with an asyncssh client, no warnings."""
    import asyncssh

    host_dir, identity, _fp = make_host_dir(tmp_path)

    async def main() -> list[str]:
        h = hostlib.EmbeddedHost(host_dir, "127.0.0.1", 0, grace=0.2)
        await h.start()
        try:
            async with (
                asyncssh.connect(
                    "127.0.0.1",
                    h.port,
                    username="firm-test",
                    client_keys=[str(identity)],
                    known_hosts=None,
                    config=None,
                ) as conn,
                conn.start_sftp_client() as sftp,
            ):
                await sftp.mkdir("/lib")
                names = await sftp.listdir("/")
            # a second, still-open connection is closed by stop()
            conn2 = await asyncssh.connect(
                "127.0.0.1",
                h.port,
                username="firm-test",
                password="correct horse battery staple",
                known_hosts=None,
                config=None,
                client_keys=None,
            )
            sftp2 = await conn2.start_sftp_client()
            await sftp2.listdir("/")
        finally:
            await h.stop()
        await asyncio.wait_for(conn2.wait_closed(), 5)
        return names

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = asyncio.run(main())
    assert "lib" in names
    assert not [w for w in caught if "destroyed" in str(w.message) or "never awaited" in str(w.message)]


# --- the OpenSSH recipe ------------------------------------------------------------


def _chroot_capable_dir() -> Path:
    """A temp folder whose every ancestor is root-owned and not group/world-writable."""
    for base in (Path(tempfile.gettempdir()), Path("/run"), Path("/srv"), Path("/var/lib")):
        try:
            d = Path(tempfile.mkdtemp(prefix="cloudshare-chroot-", dir=base))
        except OSError:
            continue
        os.chmod(d, 0o755)
        ok = all(
            p.stat().st_uid == 0 and not (p.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH))
            for p in [d, *d.parents]
        )
        if ok:
            return d
        d.rmdir()
    pytest.skip("no folder whose ancestors are all root-owned and not group/world-writable")


@pytest.mark.server
def test_openssh_recipe_confines_id(tmp_path):
    fixtures_sshd = pytest.importorskip("tests.fixtures_sshd")
    if not hasattr(fixtures_sshd, "start_sshd"):
        pytest.skip("tests.fixtures_sshd has no start_sshd yet")
    fixtures_sshd.skip_or_fail_without_sshd()
    if os.geteuid() != 0:
        if os.environ.get("CLOUDSHARE_REQUIRE_OPENSSH") == "1":
            pytest.fail("the ChrootDirectory recipe test needs root (sshd chroots)")
        pytest.skip("the ChrootDirectory recipe test needs root (sshd chroots)")
    data_root = _chroot_capable_dir()
    try:
        me = getpass.getuser()
        for cid in ("alice", "bob"):
            (data_root / cid).mkdir(mode=0o755)
            os.chmod(data_root / cid, 0o755)
            (data_root / cid / "share").mkdir()
        (data_root / "bob" / "share" / "secret.txt").write_text("bob's data")
        block = hostlib.openssh_config("alice", str(data_root))
        # adapt: the test logs in as the current user instead of a system user "alice"
        block = block.replace("Match User alice", f"Match User {me}")
        assert f"ChrootDirectory {data_root}/alice" in block
        proc, srv = fixtures_sshd.start_sshd(tmp_path / "sshd", extra_config=block)
        try:
            t, sftp = login(srv)
            try:
                assert sftp.normalize(".") == "/share"
                assert sorted(sftp.listdir("/")) == ["share"]
                with sftp.open("/share/mine", "wx") as f:
                    f.write(b"alice")
                assert (data_root / "alice" / "share" / "mine").read_bytes() == b"alice"
                for path in (
                    "/../bob/share/secret.txt",
                    f"{data_root}/bob/share/secret.txt",
                    "../../bob/share/secret.txt",
                ):
                    with pytest.raises(OSError):
                        sftp.open(path).read()
                with pytest.raises(OSError):
                    sftp.listdir(f"{data_root}/bob")
                hardlink(sftp, "/share/mine", "/share/linked")
                with pytest.raises(OSError):
                    hardlink(sftp, "/share/mine", "/share/linked")
                chan = t.open_session(timeout=10)
                chan.settimeout(10)
                chan.exec_command("cat /etc/passwd")  # ForceCommand: runs internal-sftp
                assert b"root:" not in chan.recv(4096)
                chan.close()
            finally:
                t.close()
        finally:
            fixtures_sshd.stop_sshd(proc)
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def test_stop_helper_reports_status(tmp_path):
    """The fixture helper returns the exit status and stderr (used by the fixtures)."""
    host_dir, _i, _f = make_host_dir(tmp_path)
    hp = start_host_process(host_dir)
    rc, err = stop_host_process(hp)
    assert rc == 0 and "serving" in err and "stopped" in err


@pytest.mark.server
def test_sigint_during_upload_fails_it_cleanly(tmp_path):
    """Ctrl-C while a transfer is in flight: the host closes it after the grace and exits 0."""
    import threading

    host_dir, identity, fp = make_host_dir(tmp_path)
    hp = start_host_process(host_dir, grace=0.3)
    server = ShareServer(
        kind="embedded",
        host="127.0.0.1",
        port=hp.port,
        user="firm-test",
        base="/",
        root=host_dir / "data" / "firm-test",
        identity=identity,
        host_key_fingerprint=fp,
    )
    t, sftp = login(server)
    outcome: dict[str, str] = {}
    started = threading.Event()

    def upload() -> None:
        deadline = time.monotonic() + 20
        try:
            with sftp.open("/big", "wb") as f:
                f.set_pipelined(True)
                while time.monotonic() < deadline:
                    f.write(b"x" * (1 << 20))
                    started.set()
            outcome["result"] = "finished"
        except Exception as exc:  # any clean client-side error will do
            outcome["result"] = f"failed: {exc!r}"
        finally:
            started.set()

    th = threading.Thread(target=upload, daemon=True)
    th.start()
    try:
        assert started.wait(10)
        hp.proc.send_signal(signal.SIGINT)
        assert_clean_stop(hp)
        th.join(15)
        assert not th.is_alive()
        assert outcome["result"].startswith("failed")
    finally:
        t.close()
