"""`cloudshare keep`, `cloudshare prune`, history/restore of pruned versions and the prune of
`close`, against both real servers.

The real program (a subprocess) makes the areas: format 2 since the first version, or format 1
where `CLOUDSHARE_WRITE_FORMAT=1` says so (a version-1 area, which prune refuses). The prune
commands then run in this process (click's runner).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from cloudshare_p2p.cli import main
from cloudshare_p2p.service.retention import LAST_PRUNE, LAST_SWEEP
from tests.homes import SHARE_PASSWORD, Home
from tests.test_prune import backdate_objects, on_disk

pytestmark = pytest.mark.server


def here(home: Home, *args: str, expect: int = 0) -> str:
    """Run `cloudshare --home … ARGS` in this process; its output (stdout and stderr)."""
    env = {"CLOUDSHARE_NAME": home.name, "CLOUDSHARE_PASSWORD": SHARE_PASSWORD, "CLOUDSHARE_LANG": "en"}
    result = CliRunner().invoke(main, ["--home", str(home.root / "home"), *args], env=env)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == expect, f"cloudshare {' '.join(args)} exited {result.exit_code}: {output}"
    return output


def shared_with_versions(firm: Home, area: str, count: int) -> None:
    """Share books.csv and close `count` versions of it (the real program)."""
    books = firm.data / "books.csv"
    books.write_text("date,amount\n")
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes")
    for i in range(2, count + 1):
        firm.run("open", "books")
        books.write_text(f"date,amount\n2026-03-0{i},{i}00\n")
        firm.run("close", "books")


def area_format(server, area: str) -> int:
    return json.loads((server.root / area / "config").read_bytes())["version"]


def test_keep_shows_and_sets_the_policy_and_prune_of_a_version_1_area_says_why_not(firm, client, area,
                                                                                   share_server):
    firm.env["CLOUDSHARE_WRITE_FORMAT"] = "1"  # the fallback: the area stays at format version 1
    shared_with_versions(firm, area, 1)
    assert area_format(share_server, area) == 1
    client.run("join", "books", str(client.data / "books.csv"), "--remote", "host", "--area", area)
    shown = json.loads(firm.run("keep", "books", "--json").stdout)
    assert (shown["last"], shown["daily"], shown["monthly"], shown["default"]) == (30, 90, 84, True)
    assert "(the defaults)" in firm.run("keep", "books").stdout
    firm.run("keep", "books", "--last", "5", "--monthly", "12")
    shown = json.loads(client.run("keep", "books", "--json").stdout)
    assert (shown["last"], shown["daily"], shown["monthly"], shown["default"]) == (5, 90, 12, False)
    refused = firm.run("keep", "books", "--daily", "-1", expect=2)
    assert "--daily -1 is not a valid count" in refused.stderr
    said = firm.run("prune", "books", expect=1)
    assert "uses format version 1, which keeps every version" in said.stderr
    firm.run("open", "books")  # the firm holds the lock: keep uses it and leaves it held
    firm.run("keep", "books", "--last", "7")
    assert json.loads(firm.run("status", "books", "--json").stdout)[0]["state"] == "locked-by-me"
    firm.run("close", "books")
    assert json.loads(client.run("keep", "books", "--json").stdout)["last"] == 7


def test_prune_dry_run_then_prune_history_and_restore(firm, share_server, area):
    shared_with_versions(firm, area, 4)
    assert area_format(share_server, area) == 2
    backdate_objects(share_server, area)
    here(firm, "keep", "books", "--last", "2", "--daily", "0", "--monthly", "0")
    before = on_disk(share_server, area)
    dry = json.loads(here(firm, "prune", "books", "--dry-run", "--json"))
    assert dry["dry_run"] and dry["pruned"] == [1, 2] and dry["kept"] == [3, 4] and dry["objects"] == 4
    assert on_disk(share_server, area) == before
    done = json.loads(here(firm, "prune", "books", "--json"))
    assert done["pruned"] == [1, 2] and done["removed_objects"] == 4 and done["bytes"] == dry["bytes"]
    assert len(on_disk(share_server, area)) == len(before) - 4
    rows = json.loads(here(firm, "history", "books", "--json"))
    assert [(r["version"], r["pruned"]) for r in rows] == [(1, True), (2, True), (3, False), (4, False)]
    assert "(pruned)" in here(firm, "history", "books").splitlines()[1]
    said = here(firm, "restore", "books", "1", expect=1)
    assert "version 1 was pruned by the retention policy" in said
    assert "nothing to prune" in here(firm, "prune", "books")  # idempotent
    here(firm, "restore", "books", "3")  # a kept version still restores
    assert (firm.data / "books.csv").read_text() == "date,amount\n2026-03-03,300\n"


def test_close_prunes_at_most_once_a_day(firm, share_server, area):
    shared_with_versions(firm, area, 3)
    assert area_format(share_server, area) == 2
    here(firm, "keep", "books", "--last", "1", "--daily", "0", "--monthly", "0")
    books = firm.data / "books.csv"
    [mark] = (firm.root / "home" / "cache").glob(f"*/{LAST_PRUNE}")  # the closes above pruned today
    mark.write_text(str(time.time() - 2 * 86400))  # (nothing was due then); make that two days ago

    def edit_and_close(text: str) -> str:
        here(firm, "open", "books")
        books.write_text(text)
        return here(firm, "close", "books")

    said = edit_and_close("date,amount\n2026-04-01,1\n")  # version 4; versions 1-3 pruned
    assert "pruned 3 versions" in said
    edit_and_close("date,amount\n2026-04-02,2\n")  # version 5: pruned today already, so not now
    pruned = [r["version"] for r in json.loads(here(firm, "history", "books", "--json")) if r["pruned"]]
    assert pruned == [1, 2, 3]
    [mark] = (firm.root / "home" / "cache").glob(f"*/{LAST_PRUNE}")
    mark.write_text(str(time.time() - 2 * 86400))  # the last prune was two days ago
    edit_and_close("date,amount\n2026-04-03,3\n")  # version 6: prunes 4 and 5
    pruned = [r["version"] for r in json.loads(here(firm, "history", "books", "--json")) if r["pruned"]]
    assert pruned == [1, 2, 3, 4, 5]


def test_close_sweeps_abandoned_uploads_at_most_once_a_day(firm, share_server, area):
    """A crashed writer's temp file a day old goes with the next close, but a close does not
    list `tmp/` again the same day (the sweep is a third of a close's requests)."""
    shared_with_versions(firm, area, 2)  # its close swept (nothing there yet) and marked the day
    tmp = share_server.root / area / "tmp"
    abandoned = [tmp / f"{i:032x}.tmp" for i in (1, 2)]
    abandoned[0].write_bytes(b"half an upload")
    os.utime(abandoned[0], (1, 1))
    [mark] = (firm.root / "home" / "cache").glob(f"*/{LAST_SWEEP}")
    mark.write_text(str(time.time() - 2 * 86400))
    here(firm, "open", "books")
    here(firm, "close", "books")
    assert not abandoned[0].exists()
    abandoned[1].write_bytes(b"another half upload")
    os.utime(abandoned[1], (1, 1))
    here(firm, "open", "books")
    here(firm, "close", "books")
    assert abandoned[1].exists()  # swept today already: left for tomorrow
    mark.write_text(str(time.time() - 2 * 86400))
    here(firm, "open", "books")
    here(firm, "close", "books")
    assert not abandoned[1].exists()
