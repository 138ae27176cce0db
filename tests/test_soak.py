"""The fault suite (issue 8): contention, kills, connection cuts, paused holders and hostile
records, against the private OpenSSH sshd and the embedded host, with the real `cloudshare`.

Scale with CLOUDSHARE_SOAK=short (default, inside `make test-slow`) or long (`make soak`);
CLOUDSHARE_SOAK_SEED=N repeats the random choices of a run. Each test prints its figure as one
line starting with "SOAK " (shown live, and again at the end of the session).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

from tests import soak_common as sc
from tests.homes import Home

pytestmark = [pytest.mark.soak, pytest.mark.server, pytest.mark.slow]

_LINES: list[str] = []


def _show(config: pytest.Config, text: str) -> None:
    """Print past pytest's capture, so the figures show without -s too."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(text, flush=True)
        return
    with capman.global_and_fixture_disabled():
        print(text, flush=True)


@pytest.fixture(scope="session")
def soak_lines(request: pytest.FixtureRequest):
    """Every figure of the session, printed again together when the session ends."""
    yield _LINES
    if _LINES:
        _show(request.config, "\n" + "\n".join([f"SOAK summary ({sc.SOAK}, seed {sc.SEED}):", *_LINES]))


@pytest.fixture
def figure(request: pytest.FixtureRequest, soak_lines: list[str], share_server):
    """figure(name, **numbers): one 'SOAK …' line for this test and server."""
    started = time.monotonic()

    def emit(name: str, **numbers: object) -> None:
        parts = " ".join(f"{k}={v}" for k, v in numbers.items())
        line = (f"SOAK {share_server.kind} {name} {parts} seconds={time.monotonic() - started:.1f} "
                f"{sc.load_note()}")
        soak_lines.append(line)
        _show(request.config, "\n" + line)

    return emit


def _home(server, tmp_path: Path, who: str) -> Home:
    home = Home(tmp_path / who.replace(" ", "-"), f"Soak {who}", server)
    home.add_remote()
    return home


# --- 1. N parties x K cycles of open --wait / increment / close ----------------------------------

PARTIES = int(sc.scale(2, 4))
# (lease, cycles per party): the default 8-hour lease, and a 3-second one that runs out
# while others wait (--wait covers it; a fenced close is retried, its work kept aside)
PHASES = (("3s", 2),) if not sc.LONG else (("8h", 10), ("3s", 5))
CYCLE_DEADLINE = float(sc.scale(75, 900))  # seconds for all parties of one phase


def _counter_worker(home: Home, path: Path, cycles: int, extra: tuple[str, ...], deadline: float,
                    stats: dict, lock: threading.Lock) -> None:
    done = attempts = 0
    while done < cycles:
        attempts += 1
        assert attempts <= cycles * 6, f"{home.name}: {done} of {cycles} cycles after {attempts} tries"
        assert time.monotonic() < deadline, f"{home.name}: {done} of {cycles} cycles before the deadline"
        opened = sc.run(home, "open", "ctr", "--wait", "60s", *extra)
        if opened.returncode == 3:  # still locked when the wait ran out: try again
            with lock:
                stats["waited_out"] += 1
            continue
        assert opened.returncode == 0, opened.stderr
        value = int(path.read_text().strip())
        path.write_text(f"{value + 1}\n")
        closed = sc.run(home, "close", "ctr")
        if closed.returncode == 6:  # fenced: our lease ran out and another took the lock
            kept = sc.kept_aside(path.parent, path.name)
            assert any(p.read_text().strip() == str(value + 1) for p in kept), (closed.stderr, kept)
            with lock:
                stats["fenced"] += 1
            continue
        assert closed.returncode == 0 and "sent as version" in closed.stdout, closed
        done += 1


def test_parties_increment_a_counter_without_losing_an_update(share_server, tmp_path, figure):
    area = sc.new_area()
    homes = [_home(share_server, tmp_path, f"party {i}") for i in range(PARTIES)]
    paths = [h.data / "counter.txt" for h in homes]
    paths[0].write_text("0\n")
    sc.ok(homes[0], "share", "ctr", str(paths[0]), "--remote", "host", "--area", area, "--yes")
    for home, path in zip(homes[1:], paths[1:], strict=True):
        sc.ok(home, "join", "ctr", str(path), "--remote", "host", "--area", area)
    expected = 0
    stats = {"fenced": 0, "waited_out": 0}
    lock = threading.Lock()
    for lease, cycles in PHASES:
        extra = () if lease == "8h" else ("--lease", lease)
        deadline = time.monotonic() + CYCLE_DEADLINE
        with concurrent.futures.ThreadPoolExecutor(PARTIES) as pool:
            futures = [pool.submit(_counter_worker, h, p, cycles, extra, deadline, stats, lock)
                       for h, p in zip(homes, paths, strict=True)]
            for f in futures:
                f.result(timeout=CYCLE_DEADLINE + 2 * sc.COMMAND_TIMEOUT)
        expected += PARTIES * cycles
    checker = _home(share_server, tmp_path, "checker")
    final = checker.data / "counter.txt"
    sc.ok(checker, "join", "ctr", str(final), "--remote", "host", "--area", area)
    counter = int(final.read_text().strip())
    versions = sc.every_version(share_server, area, tmp_path / "versions")
    leases = "+".join(f"{lease}x{cycles}" for lease, cycles in PHASES)
    figure("counter", parties=PARTIES, cycles=leases, counter=counter, expected=expected,
           lost=expected - counter, versions=len(versions), fenced=stats["fenced"],
           waited_out=stats["waited_out"])
    assert counter == expected
    assert len(versions) == 1 + expected  # the first share, then one version per close


# --- 2. SIGKILL at random moments of open, close, share, join; then recovery ----------------------

KILL_ROUNDS = int(sc.scale(4, 48))
LEDGER = int(sc.scale(3 << 20, 6 << 20))  # several 1 MiB chunks: a kill lands mid-transfer


class _Kills:
    """What the kill rounds wrote, sent and killed, for the final accounting."""

    def __init__(self) -> None:
        self.written: dict[str, str] = {}  # digest -> label, every content written locally
        self.sent: set[str] = set()  # a close (or a recovered close) said "sent as version"
        self.committed: set[str] = set()  # a killed close that had finished: must be a version
        self.unsent: list[tuple[Home, Path, str]] = []  # work not reported sent: (home, path, digest)
        self.killed = dict.fromkeys(("open", "close", "share", "join"), 0)
        self.finished = dict.fromkeys(("open", "close", "share", "join"), 0)  # ended before the kill
        self.areas: dict[str, set[str]] = {}  # extra areas (share rounds) -> contents allowed
        self.joined: list[tuple[str, str | None]] = []  # (label, digest) of copies a join received


def _killed_run(home: Home, args: tuple[str, ...], delay: float, kills: _Kills, op: str) -> int | None:
    """Start `cloudshare ARGS`, SIGKILL it after `delay`; its exit code if it ended before."""
    proc = sc.start(home, *args)
    if proc.kill_after(delay):
        kills.killed[op] += 1
        return None
    kills.finished[op] += 1
    result = proc.finish()
    sc.assert_clean(result, " ".join(args))
    return result[0]


def _timed(home: Home, *args: str) -> float:
    t0 = time.monotonic()
    sc.ok(home, *args)
    return time.monotonic() - t0


def test_kills_at_random_moments_lose_no_work_and_leave_no_half_version(share_server, tmp_path, figure):
    rand = sc.rng("kills", share_server.kind)
    area = sc.new_area()
    firm, client = _home(share_server, tmp_path, "firm"), _home(share_server, tmp_path, "client")
    books = {firm.name: firm.data / "books", client.name: client.data / "books"}
    kills = _Kills()
    d = sc.write_folder(books[firm.name], "version 1 by firm", LEDGER, rand)
    kills.written[d] = "v1"
    window = {"share": _timed(firm, "share", "books", str(books[firm.name]), "--remote", "host",
                              "--area", area, "--yes")}
    kills.sent.add(d)
    window["join"] = _timed(client, "join", "books", str(books[client.name]), "--remote", "host",
                            "--area", area)
    window["open"] = _timed(firm, "open", "books")
    d = sc.write_folder(books[firm.name], "version 2 by firm", LEDGER, rand)
    kills.written[d] = "v2"
    window["close"] = _timed(firm, "close", "books")
    kills.sent.add(d)
    ops = ["open", "close", "share", "join"]
    plan = [ops[i % 4] for i in range(KILL_ROUNDS)]
    rand.shuffle(plan)
    for r, op in enumerate(plan):
        # even rounds kill within the first half of the op's time (it is surely still running),
        # odd ones anywhere up to 130 % (the op may be done): most rounds kill, some finish
        delay = rand.uniform(0.0, (0.5 if r % 2 == 0 else 1.3) * window[op])
        if op in ("open", "close"):
            actor = (firm, client)[r % 2]
            _open_close_round(actor, books[actor.name], r, op, delay, kills, rand)
        elif op == "share":
            _share_round(firm, r, delay, kills, rand, share_server)
        else:
            _join_round(client, area, r, delay, kills, rand)
    # the accounting: every version receives fully and is something written; nothing is lost
    versions = sc.every_version(share_server, area, tmp_path / "versions")
    contents = {dg for _, dg in versions}
    half = [v for v, dg in versions if dg not in kills.written]
    half += [label for label, dg in kills.joined if dg not in contents]  # a torn or foreign copy
    lost_sent = [kills.written[dg] for dg in kills.sent | kills.committed if dg not in contents]
    lost_unsent = [label for home, path, dg, label in _unsent_missing(kills, contents)]
    extra_half = 0
    for extra_area, allowed in kills.areas.items():
        extra = sc.every_version(share_server, extra_area, tmp_path / "versions" / extra_area)
        extra_half += sum(1 for _, dg in extra if dg not in allowed)
    fresh = _home(share_server, tmp_path, "fresh")
    sc.ok(fresh, "join", "books", str(fresh.data / "books"), "--remote", "host", "--area", area)
    fresh_ok = sc.digest(fresh.data / "books") == versions[-1][1]
    killed = sum(kills.killed.values())
    figure("kills", rounds=KILL_ROUNDS, killed=killed,
           per_op="/".join(f"{op}:{kills.killed[op]}+{kills.finished[op]}" for op in ops),
           versions=len(versions), extra_areas=len(kills.areas), half=len(half) + extra_half,
           lost=len(lost_sent) + len(lost_unsent), fresh_join_ok=fresh_ok)
    assert not half and not extra_half, (half, extra_half)
    assert not lost_sent, f"sent but in no version: {lost_sent}"
    assert not lost_unsent, f"not sent, not kept: {lost_unsent}"
    assert fresh_ok
    assert killed >= KILL_ROUNDS // 2, kills.killed  # most rounds really killed something


def _unsent_missing(kills: _Kills, contents: set[str]):
    """Unsent work that is neither a version, nor the local data, nor a copy kept aside."""
    for home, path, dg in kills.unsent:
        if dg in contents:
            continue
        here = {sc.digest(path)} | {sc.digest(p) for p in sc.kept_aside(path.parent, path.name)}
        if dg not in here:
            yield home, path, dg, kills.written[dg]


def _open_close_round(actor: Home, path: Path, r: int, op: str, delay: float, kills: _Kills,
                      rand) -> None:
    if op == "open":
        code = _killed_run(actor, ("open", "books", "--wait", "60s"), delay, kills, op)
        assert code in (None, 0), code
        if code is None:  # recovery: the next open
            sc.ok(actor, "open", "books", "--wait", "60s")
    else:
        sc.ok(actor, "open", "books", "--wait", "60s")
    d = sc.write_folder(path, f"work of round {r} by {actor.name}", LEDGER, rand)
    kills.written[d] = f"r{r}"
    if op != "close":
        assert "sent as version" in sc.ok(actor, "close", "books").stdout
        kills.sent.add(d)
        return
    code = _killed_run(actor, ("close", "books"), delay, kills, op)
    if code == 0:
        kills.sent.add(d)
        return
    assert code is None, code
    now = sc.state(actor, "books")
    if now == "shared-idle":  # it finished everything before the kill
        kills.committed.add(d)
        return
    assert now == "locked-by-me", now
    again = sc.run(actor, "close", "books")  # recovery: close again
    if again.returncode == 0 and "sent as version" in again.stdout:
        kills.sent.add(d)
    elif again.returncode == 0:  # "closed without changes": the killed close had sent it
        kills.committed.add(d)
    else:
        assert again.returncode == 6, again  # kept aside, never lost
        kills.unsent.append((actor, path, d))
        if sc.state(actor, "books") == "locked-by-me":
            sc.ok(actor, "close", "books")


def _share_round(firm: Home, r: int, delay: float, kills: _Kills, rand, server) -> None:
    name, area = f"s{r}", sc.new_area()
    path = firm.data / name
    d = sc.write_folder(path, f"shared in round {r}", LEDGER, rand)
    kills.written[d] = f"share r{r}"
    args = ("share", name, str(path), "--remote", "host", "--area", area, "--yes")
    code = _killed_run(firm, args, delay, kills, "share")
    assert code in (None, 0), code
    kills.areas[area] = {d}
    if code == 0:
        return
    now = sc.state(firm, name)
    if rand.random() < 0.3 and now not in ("unregistered", "unshared"):  # recovery: leave
        sc.ok(firm, "leave", name, "--yes")
        assert sc.digest(path) == d  # the local data stays
        kills.areas.pop(area)
        if (server.root / area / "config").exists():
            kills.areas[area] = {d}  # whatever was published must be exactly this content
        return
    if now != "shared-idle":  # recovery: share again (resumes the interrupted setup)
        sc.ok(firm, *args)
    assert sc.state(firm, name) == "shared-idle"
    assert sc.digest(path) == d


def _join_round(client: Home, area: str, r: int, delay: float, kills: _Kills, rand) -> None:
    name = f"j{r}"
    path = client.data / name
    args = ("join", name, str(path), "--remote", "host", "--area", area)
    code = _killed_run(client, args, delay, kills, "join")
    assert code in (None, 0), code
    if code is None:
        now = sc.state(client, name)
        if rand.random() < 0.3 and now not in ("unregistered", "unshared"):  # recovery: leave
            sc.ok(client, "leave", name, "--yes")
        elif now != "shared-idle":
            sc.ok(client, *args)  # recovery: join again
    if path.exists():  # a received copy is whole: one of the versions of the area
        kills.joined.append((f"join r{r}", sc.digest(path)))


# --- 3. connection cuts mid-upload and mid-download, a silent network --------------------------

CUT_ROUNDS = int(sc.scale(1, 6))
CUT_DATA = int(sc.scale(2 << 20, 8 << 20))
CUT_ERROR_LIMIT = 30.0  # a cut line is noticed at once; this bounds it generously
SILENT_CLI = bool(sc.scale(0, 1))  # the CLI's silent network waits out its 30 s channel timeout
CLI_STALL = 20  # CLOUDSHARE_STALL_SECONDS for the client: a silent transfer ends after this
CLI_SILENT_LIMIT = CLI_STALL + 15.0 + 10.0  # + the SSH banner timeout of giving the lock back + margin
LIB_DEADLINE = 2.0  # Timeouts(transfer=, channel=) of the library-level silent network
CLEAR_CODES = {1, 9}  # TransferError (deadline) / NetworkDown (unreachable, cut)


def _cut_command(relay, home: Home, args: tuple[str, ...], nbytes: int, direction: str) -> tuple[int, float]:
    """Run `cloudshare ARGS` with the line cut after `nbytes` in `direction`: (exit, seconds)."""
    cuts = relay.cuts
    relay.cut_after(nbytes, direction)
    t0 = time.monotonic()
    result = sc.run(home, *args)
    took = time.monotonic() - t0
    relay.cancel_cut()
    assert relay.cuts == cuts + 1, f"the cut after {nbytes} {direction} never fired: {result}"
    assert result.returncode in CLEAR_CODES, result
    assert took < CUT_ERROR_LIMIT, took
    return result.returncode, took


def _silent_command(relay, home: Home, args: tuple[str, ...], nbytes: int, direction: str,
                    limit: float) -> tuple[int, float]:
    """Run `cloudshare ARGS`; the relay stops forwarding once `nbytes` passed in `direction`."""
    proc = sc.start(home, *args)
    base = relay.bytes_up if direction == "up" else relay.bytes_down
    moved = (lambda: relay.bytes_up - base) if direction == "up" else (lambda: relay.bytes_down - base)
    sc.wait_for(lambda: moved() >= nbytes or proc.proc.poll() is not None, 60, "the transfer", step=0.002)
    relay.go_silent()
    t0 = time.monotonic()
    try:
        code, out, err = proc.finish(timeout=limit + 30)
    finally:
        relay.resume()
    took = time.monotonic() - t0
    sc.assert_clean((code, out, err), " ".join(args))
    assert code in CLEAR_CODES, (code, out, err)
    assert took < limit, took
    return code, took


def test_connection_cuts_and_a_silent_network_give_a_clear_error_and_lose_nothing(
        share_server, tmp_path, figure):
    from tests.relay import Relay

    rand = sc.rng("cuts", share_server.kind)
    area = sc.new_area()
    firm, client = _home(share_server, tmp_path, "firm"), _home(share_server, tmp_path, "client")
    firm_books, client_books = firm.data / "books", client.data / "books"
    sc.write_folder(firm_books, "version 1", CUT_DATA, rand)
    sc.ok(firm, "share", "books", str(firm_books), "--remote", "host", "--area", area, "--yes")
    codes: list[int] = []
    slowest = 0.0
    silent = []
    with Relay(share_server.port, lifetime=1800) as relay:
        client.add_remote("relay", port=relay.port)
        client.env["CLOUDSHARE_STALL_SECONDS"] = str(CLI_STALL)
        sc.ok(client, "join", "books", str(client_books), "--remote", "relay", "--area", area)
        for r in range(CUT_ROUNDS):
            # mid-download: the firm sent a new version; the client's open is cut while receiving
            sc.ok(firm, "open", "books")
            firm_version = sc.write_folder(firm_books, f"firm's round {r}", CUT_DATA, rand)
            sc.ok(firm, "close", "books")
            at = int(rand.uniform(0.2, 0.7) * CUT_DATA)
            code, took = _cut_command(relay, client, ("open", "books"), at, "down")
            codes.append(code)
            slowest = max(slowest, took)
            sc.ok(client, "open", "books")  # the retry
            assert sc.digest(client_books) == firm_version
            # mid-upload: the client's close is cut while sending
            mine = sc.write_folder(client_books, f"client's round {r}", CUT_DATA, rand)
            at = int(rand.uniform(0.2, 0.7) * CUT_DATA)
            code, took = _cut_command(relay, client, ("close", "books"), at, "up")
            codes.append(code)
            slowest = max(slowest, took)
            assert sc.digest(client_books) == mine  # nothing of the work was touched
            assert "sent as version" in sc.ok(client, "close", "books").stdout  # the retry
            sc.ok(firm, "open", "books")
            assert sc.digest(firm_books) == mine
            sc.ok(firm, "close", "books")
        if SILENT_CLI:  # a silent line: the stall watchdog (CLOUDSHARE_STALL_SECONDS) ends the transfer
            sc.ok(client, "open", "books")
            mine = sc.write_folder(client_books, "client's silent round", CUT_DATA, rand)
            silent.append(_silent_command(relay, client, ("close", "books"), CUT_DATA // 3, "up",
                                          CLI_SILENT_LIMIT))
            assert "sent as version" in sc.ok(client, "close", "books").stdout
            sc.ok(firm, "open", "books")
            assert sc.digest(firm_books) == mine
            new = sc.write_folder(firm_books, "firm's silent round", CUT_DATA, rand)
            sc.ok(firm, "close", "books")
            silent.append(_silent_command(relay, client, ("open", "books"), CUT_DATA // 3, "down",
                                          CLI_SILENT_LIMIT))
            sc.ok(client, "open", "books")
            assert sc.digest(client_books) == new
            sc.ok(client, "close", "books")
        lib = _library_cuts(share_server, relay, tmp_path, rand)
    versions = sc.every_version(share_server, area, tmp_path / "versions")
    figure("cuts", rounds=CUT_ROUNDS, cli_cuts=len(codes), exits="/".join(map(str, sorted(set(codes)))),
           slowest_error=f"{slowest:.1f}s",
           cli_silent=",".join(f"exit{c}:{t:.1f}s" for c, t in silent) or "skipped(short)",
           lib=lib, versions=len(versions), lost=0)


def _library_cuts(server, relay, tmp_path: Path, rand) -> str:
    """Area.commit / Area.download cut and silenced through the relay, with and without hard
    links (the client's view of hardlink@openssh.com removed); each retried on a new connection."""
    from cloudshare_p2p import errors
    from cloudshare_p2p.area import Area
    from cloudshare_p2p.snapshot import LocalSnapshot
    from cloudshare_p2p.transport import (
        HARDLINK,
        Credentials,
        Endpoint,
        KnownHosts,
        Timeouts,
        connect,
    )
    from tests.parties import PASSWORD, create_area, new_area_name, party, session_for

    def via_relay(hardlinks: bool, **timeouts: float):
        session = connect(Endpoint.parse(server.url(relay.port)),
                          KnownHosts(tmp_path / "lib-known_hosts"),
                          Credentials(identity=server.identity, use_agent=False),
                          accept_fingerprint=server.host_key_fingerprint, timeouts=Timeouts(**timeouts))
        if not hardlinks:
            session._sftp.extensions.pop(HARDLINK, None)
        area = Area(session, name)
        area.unlock_keys(PASSWORD)
        return session, area

    broken = (errors.NetworkDown, errors.TransferError)
    name = new_area_name("soak-lib")
    me = party("lib")
    direct = session_for(server, tmp_path / "lib-direct")
    figures = []
    try:
        create_area(direct, name, me)
        done, wants = 0, []
        for hardlinks in (True, False):
            for r in range(CUT_ROUNDS):
                folder = tmp_path / f"lib-{hardlinks}-{r}"
                want = sc.write_folder(folder, f"lib {hardlinks} {r}", CUT_DATA, rand)
                # a commit cut mid-upload, retried on a new connection with the same grant
                session, area = via_relay(hardlinks)
                grant = area.acquire(me, 300)
                snap = LocalSnapshot.scan(folder, area.keys)
                relay.cut_after(int(rand.uniform(0.2, 0.7) * CUT_DATA), "up")
                with pytest.raises(broken):
                    area.commit(grant, me, snap, base=done)
                relay.cancel_cut()
                session.close()
                session, area = via_relay(hardlinks)
                assert area.commit(grant, me, LocalSnapshot.scan(folder, area.keys), base=done) == done + 1
                done += 1
                wants.append(want)
                # a download cut mid-way: nothing is put in place; the retry receives it whole
                target = tmp_path / f"lib-got-{hardlinks}-{r}"
                relay.cut_after(int(rand.uniform(0.2, 0.7) * CUT_DATA), "down")
                with pytest.raises(broken):
                    area.download(area.newest(), target)
                relay.cancel_cut()
                session.close()
                assert not target.exists()
                session, area = via_relay(hardlinks)
                area.download(area.newest(), target)
                assert sc.digest(target) == want
                # a silent network mid-upload: an error within the transfer deadline
                session.close()
                session, area = via_relay(hardlinks, transfer=LIB_DEADLINE, channel=LIB_DEADLINE)
                folder2 = tmp_path / f"lib-silent-{hardlinks}-{r}"
                want2 = sc.write_folder(folder2, f"lib silent {hardlinks} {r}", CUT_DATA, rand)
                snap = LocalSnapshot.scan(folder2, area.keys)
                t0 = time.monotonic()
                try:  # silent from the moment the first chunk went up
                    with pytest.raises(broken):
                        area.commit(grant, me, snap, base=done, progress=lambda _n: relay.go_silent())
                finally:
                    relay.resume()
                took = time.monotonic() - t0
                assert took < 2 * LIB_DEADLINE + 10, took
                figures.append(took)
                session.close()
                session, area = via_relay(hardlinks)
                assert area.commit(grant, me, LocalSnapshot.scan(folder2, area.keys), base=done) == done + 1
                done += 1
                wants.append(want2)
                area.release(grant, me)
                session.close()
        # every version receives whole on a direct connection
        reader = Area(direct, name)
        reader.unlock_keys(PASSWORD)
        assert len(reader.versions()) == done
        for version, want in zip(reader.versions(), wants, strict=True):
            reader.download(version, tmp_path / f"lib-check-{version.version}")
            assert sc.digest(tmp_path / f"lib-check-{version.version}") == want
    finally:
        direct.close()
    return f"commits:{done},silent_max:{max(figures):.1f}s(deadline {LIB_DEADLINE:g}s)"


# --- 4. a paused holder: fenced, its work kept aside -----------------------------------------------

PAUSE_ROUNDS = int(sc.scale(1, 5))
HOLDER_PROGRAM = """\
import os, sys, time
path, work, flag = sys.argv[1:4]
with open(path, "w") as f:
    f.write(work)
end = time.monotonic() + 60
while not os.path.exists(flag) and time.monotonic() < end:
    time.sleep(0.05)
"""


def _shared_books(server, tmp_path: Path) -> tuple[Home, Home, Path, Path, str]:
    area = sc.new_area()
    firm, client = _home(server, tmp_path, "firm"), _home(server, tmp_path, "client")
    firm_books, client_books = firm.data / "books.csv", client.data / "books.csv"
    firm_books.write_text("version 1\n")
    sc.ok(firm, "share", "books", str(firm_books), "--remote", "host", "--area", area, "--yes")
    sc.ok(client, "join", "books", str(client_books), "--remote", "host", "--area", area)
    return firm, client, firm_books, client_books, area


def _fenced_close_kept_aside(code: int, err: str, path: Path, work: str, newest: str) -> None:
    assert code == 6, (code, err)
    assert "kept aside" in err, err
    kept = sc.kept_aside(path.parent, path.name)
    assert any(p.read_text() == work for p in kept), [p.name for p in kept]
    assert path.read_text() == newest  # the newest version was received in its place


def test_a_paused_holder_is_fenced_and_its_work_kept_aside(share_server, tmp_path, figure):
    import os
    import signal
    import sys

    firm, client, firm_books, client_books, area = _shared_books(share_server, tmp_path)
    program = tmp_path / "holder.py"
    program.write_text(HOLDER_PROGRAM)
    fenced = {"run-sigstop": 0, "open-lease-ran-out": 0}
    took_over = []
    for r in range(PAUSE_ROUNDS):
        # (a) `cloudshare run` paused with SIGSTOP past its 3-second lease
        work, flag = f"client's work {r} (paused run)\n", tmp_path / f"flag-{r}"
        holder = sc.start(client, "run", "books", "--lease", "3s", "--", sys.executable, str(program),
                          str(client_books), work, str(flag))
        sc.wait_for(lambda w=work, h=holder: client_books.exists() and client_books.read_text() == w
                    or h.proc.poll() is not None, 60, "the held program's work")
        assert holder.proc.poll() is None, holder.finish()
        os.kill(holder.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            sc.ok(firm, "open", "books", "--wait", "60s")
            took_over.append(time.monotonic() - t0)
            newest = f"firm's work {r} while the client was paused\n"
            firm_books.write_text(newest)
            assert "sent as version" in sc.ok(firm, "close", "books").stdout
        finally:
            os.kill(holder.proc.pid, signal.SIGCONT)
        flag.touch()
        code, _out, err = holder.finish()
        sc.assert_clean((code, _out, err), "run (paused)")
        _fenced_close_kept_aside(code, err, client_books, work, newest)
        fenced["run-sigstop"] += 1
        # (b) an open-ed holder whose lease ran out (its lock backdated on the host's disk)
        sc.ok(client, "open", "books")
        work = f"client's work {r} (lease ran out)\n"
        client_books.write_text(work)
        sc.backdate_top_lock(share_server, area, seconds=9 * 3600)  # older than the 8 h lease
        sc.ok(firm, "open", "books")  # no wait: the lease has run out
        newest = f"firm's work {r} after the client's lease ran out\n"
        firm_books.write_text(newest)
        assert "sent as version" in sc.ok(firm, "close", "books").stdout
        closed = sc.run(client, "close", "books")
        _fenced_close_kept_aside(closed.returncode, closed.stderr, client_books, work, newest)
        fenced["open-lease-ran-out"] += 1
        assert sc.state(client, "books") in ("shared-idle", "locked-by-other")  # no longer holds it
    versions = sc.every_version(share_server, area, tmp_path / "versions")
    firm_works = {sc.digest(firm_books)}
    assert versions[-1][1] in firm_works
    figure("paused", rounds=PAUSE_ROUNDS, fenced=sum(fenced.values()), expected=2 * PAUSE_ROUNDS,
           kept_aside=len(sc.kept_aside(client.data, "books.csv")),
           takeover=f"{max(took_over):.1f}s(lease 3s)", versions=len(versions), lost=0)
    assert sum(fenced.values()) == 2 * PAUSE_ROUNDS


# --- 5. hostile records on the host: oversized, out of range, terminal escapes --------------------

ESCAPES = "\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b[31mEvil\x07"  # OSC 52 clipboard write, clear, red, BEL
READERS = (("status", "--refresh"), ("areas", "host"), ("history", "books"),
           ("open", "books", "--read-only"), ("open", "books"))


def _lock_record(gen: int, **fields: object) -> dict:
    record = {"v": 1, "gen": gen, "kind": "claim", "session": "evil-session",
              "holder": {"name": "Evil", "install": "0" * 16, "host": "evil"}, "lease_seconds": 60,
              "since": None, "note": "", "client_time": "2026-01-01T00:00:00Z"}
    record.update(fields)
    return record


def _hostile_locks() -> list[tuple[str, object]]:
    """(label, record or raw bytes); a record gets the next generation number."""
    return [
        ("oversized-70KB", {"note": "x" * 70_000}),
        ("lease_seconds=10**30", {"lease_seconds": 10**30}),
        ("since=10**30", {"since": 10**30}),
        ("holder-a-list", {"holder": ["Evil", 1]}),
        ("torn", b'{"v": 1, "gen": '),
        ("escapes", {"holder": {"name": ESCAPES, "host": ESCAPES}, "note": ESCAPES, "lease_seconds": 30}),
    ]


def _read_all(client: Home, readers: tuple[tuple[str, ...], ...], seen: dict) -> None:
    """Every reader exits without a traceback and prints no control byte; an open is closed."""
    for args in readers:
        result = sc.run(client, *args)  # checks: no traceback, no exit 70, no ESC/BEL
        seen[result.returncode] = seen.get(result.returncode, 0) + 1
        escaped = "\\x1b]52" in result.stdout + result.stderr or "\\u001b]52" in result.stdout
        seen["escaped"] = seen.get("escaped", 0) + escaped  # the hostile text was shown, made harmless
        if args == ("open", "books") and result.returncode == 0:
            sc.ok(client, "close", "books")


def test_hostile_records_never_crash_a_reader_nor_reach_the_terminal(share_server, tmp_path, figure):
    import json

    firm, client, firm_books, client_books, area = _shared_books(share_server, tmp_path)
    lock_dir, log_dir = share_server.root / area / "lock", share_server.root / area / "log"
    seen: dict[int, int] = {}
    planted = 0
    for i, (label, body) in enumerate(_hostile_locks()):
        gen = sc.lock_generations(share_server, area)[-1] + 1
        raw = body if isinstance(body, bytes) else json.dumps(_lock_record(gen, **body)).encode()
        sc.plant(lock_dir / f"{gen:020d}", raw)
        planted += 1
        readers = READERS if sc.LONG or label == "escapes" else (READERS[i % 4], READERS[4])
        _read_all(client, (*readers, ("status",)), seen)
        if label == "escapes":
            assert seen.pop("escaped", 0) >= 2, "the escaping holder's name was never shown"
        seen.pop("escaped", None)
    # the escaping holder's claim is let go the way any party could: a release record
    gen = sc.lock_generations(share_server, area)[-1] + 1
    release = _lock_record(gen, kind="release", lease_seconds=0)
    sc.plant(lock_dir / f"{gen:020d}", json.dumps(release).encode())
    # the log: an oversized entry, out-of-range values, a writer that is a list, escapes
    entries = [json.loads((log_dir / f"{s:020d}").read_text()) for s in sc.log_sequences(share_server, area)]
    manifest = next(e["manifest"] for e in entries if e.get("kind") == "commit")
    top_gen = sc.lock_generations(share_server, area)[-1]
    newest = 1
    hostile_entries = [
        ("oversized-70KB", {"kind": "commit", "gen": top_gen, "manifest": manifest, "note": "x" * 70_000}),
        ("writer-a-list", {"kind": "commit", "gen": top_gen, "manifest": manifest, "writer": ["Evil", 1]}),
        ("size=10**30", {"kind": "commit", "gen": top_gen, "manifest": manifest, "size": 10**30}),
        ("fence-gen=10**30", {"kind": "fence", "gen": 10**30, "session": "evil-session"}),
        ("escapes", {"kind": "commit", "gen": top_gen, "manifest": manifest, "note": ESCAPES,
                     "writer": {"name": ESCAPES, "host": ESCAPES}, "time": ESCAPES}),
    ]
    for _label, fields in hostile_entries:
        seq = sc.log_sequences(share_server, area)[-1] + 1
        entry = {"v": 1, "seq": seq, "session": "evil-session", "writer": {"name": "Evil"}, "size": 1,
                 "note": "", "time": "2026-01-01T00:00:00Z", "restored_from": None, "base": newest}
        entry.update(fields)
        sc.plant(log_dir / f"{seq:020d}", json.dumps(entry).encode())
        planted += 1
    _read_all(client, (*READERS, ("history", "books", "--json"), ("status",)), seen)
    assert seen.pop("escaped", 0) >= 2, "the escaping writer's name was never shown"
    # nobody is locked out: the client opens, changes, sends; the firm receives it
    sc.ok(client, "open", "books", "--wait", "60s")
    client_books.write_text("the client's work after the hostile records\n")
    assert "sent as version" in sc.ok(client, "close", "books").stdout
    sc.ok(firm, "open", "books", "--wait", "60s")
    assert firm_books.read_text() == "the client's work after the hostile records\n"
    sc.ok(firm, "close", "books")
    history = json.loads(sc.ok(firm, "history", "books", "--json").stdout)
    versions = sc.every_version(share_server, area, tmp_path / "versions")
    figure("hostile", planted=planted, reader_runs=sum(seen.values()),
           exits=",".join(f"{c}:{n}" for c, n in sorted(seen.items())), tracebacks=0, control_bytes=0,
           versions=len(versions), locked_out=0)
    assert len(history) == len(versions) and len(versions) >= 2
