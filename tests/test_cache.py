"""The local cache (issue 11): where it lives, its cap (least recently used first, protected files
stay), what leave/forget/prune remove, and the sizes `status` shows."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import platformdirs
import pytest

from cloudshare_p2p import cachedir
from cloudshare_p2p.area import format2
from cloudshare_p2p.registry import APP_NAME, HOME_ENV
from cloudshare_p2p.service import UI, Service
from cloudshare_p2p.service.retention import LAST_PRUNE
from cloudshare_p2p.snapshot import ChunkCache
from tests.homes import Home

AREA = "0123456789abcdef0123456789abcdef"


def _ui() -> UI:
    return UI(share_password=lambda purpose, confirm: "unused", ssh_password=lambda: None,
              confirm=lambda question: True, say=lambda text: None)


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cache or home chosen; platformdirs' folders under tmp_path."""
    for name in (cachedir.CACHE_ENV, cachedir.CACHE_MAX_ENV, HOME_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path


def _age(path: Path, seconds_ago: float) -> None:
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def _chunk(area_dir: Path, n: int, size: int, seconds_ago: float) -> Path:
    cid = f"{n:064x}"
    path = area_dir / cid[:2] / cid
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    _age(path, seconds_ago)
    return path


# --- where it lives -------------------------------------------------------------------------------


def test_the_names_match_the_writers():
    assert cachedir.MANIFEST_PREFIX == format2.CACHED_PREFIX and LAST_PRUNE in cachedir.PROTECTED


def test_the_user_cache_folder_unless_a_home_or_cache_is_given(dirs: Path, monkeypatch):
    default_home = platformdirs.user_data_path(APP_NAME)
    user_cache = platformdirs.user_cache_path("cloudshare", appauthor=False)
    assert str(user_cache).startswith(str(dirs / "xdg-cache"))
    assert cachedir.cache_root(default_home) == user_cache
    assert cachedir.cache_root(dirs / "portable") == dirs / "portable" / "cache"  # --home
    monkeypatch.setenv(HOME_ENV, str(default_home))
    assert cachedir.cache_root(default_home) == default_home / "cache"  # CLOUDSHARE_HOME
    monkeypatch.setenv(cachedir.CACHE_ENV, str(dirs / "mine"))
    assert cachedir.cache_root(dirs / "portable") == dirs / "mine"


def test_the_cache_of_an_earlier_release_moves_to_the_user_cache_folder(dirs: Path):
    home = platformdirs.user_data_path(APP_NAME)
    (home / "cache" / AREA).mkdir(parents=True)
    (home / "cache" / AREA / "area.json").write_text("{}")
    service = Service(home, _ui())
    try:
        assert service.cache_root == platformdirs.user_cache_path("cloudshare", appauthor=False)
        assert (service.cache_root / AREA / "area.json").read_text() == "{}"
        assert not (home / "cache").exists()
    finally:
        service.shutdown()


def test_sizes_parse_as_human_size_shows_them(tmp_path: Path, monkeypatch):
    assert cachedir.parse_size("500MB") == 500 << 20
    assert cachedir.parse_size("2 GiB") == 2 << 30
    assert cachedir.parse_size("1.5g") == 3 << 29
    assert cachedir.parse_size("4096") == 4096
    for bad in ("", "lots", "-1MB", "5 PB"):
        with pytest.raises(ValueError):
            cachedir.parse_size(bad)
    monkeypatch.setenv(cachedir.CACHE_MAX_ENV, "lots")
    said: list[str] = []
    ui = _ui()
    ui.say = said.append
    service = Service(tmp_path / "home", ui)
    try:
        assert service.cache_cap() == cachedir.DEFAULT_CACHE_MAX
    finally:
        service.shutdown()
    assert said and cachedir.CACHE_MAX_ENV in said[0]


# --- the cap --------------------------------------------------------------------------------------


def test_a_cache_past_its_cap_is_trimmed_least_recently_used_first(tmp_path: Path):
    root = tmp_path / "cache"
    area_dir = root / AREA
    area_dir.mkdir(parents=True)
    held_id, old_id = "a" * 64, "b" * 64
    protected = {name: area_dir / name for name in ("area.json", "held.json", "last-prune")}
    protected["area.json"].write_bytes(b"a" * 1000)
    protected["held.json"].write_text(json.dumps({"/books.db": held_id}))
    protected["last-prune"].write_text("0")
    held_manifest = area_dir / f"m2-{held_id}"
    old_manifest = area_dir / f"m2-{old_id}"
    for path in (held_manifest, old_manifest):
        path.write_bytes(b"m" * 1000)
    for path in (*protected.values(), held_manifest, old_manifest):
        _age(path, 10_000)  # older than every chunk: age alone never protects
    chunks = [_chunk(area_dir, n, 1000, seconds_ago=1000 - n) for n in range(6)]  # chunk 0 the oldest
    cache = ChunkCache(area_dir)
    assert cache.get(chunks[0].name) is not None  # used now: the newest
    stale_temp = area_dir / f".{'c' * 64}.0123abcd.tmp"
    stale_temp.write_bytes(b"t" * 1000)
    _age(stale_temp, 2 * cachedir.STALE_TEMP_S)
    fresh_temp = area_dir / ".area.json.89abcdef.tmp"  # another command is writing it now
    fresh_temp.write_bytes(b"t" * 10)
    total = cachedir.folder_size(root)

    removed, freed = cachedir.trim(root, cap=total - 3500)

    assert (removed, freed) == (4, 4000)
    assert not old_manifest.exists() and not stale_temp.exists()  # the least recently used
    assert not chunks[1].exists() and not chunks[2].exists()
    assert all(p.exists() for p in (*protected.values(), held_manifest, fresh_temp, chunks[0], *chunks[3:]))
    assert cachedir.folder_size(root) == total - 4000
    assert cachedir.trim(root, cap=0)[0] == 4  # only re-creatable entries, ever
    assert all(p.exists() for p in (*protected.values(), held_manifest, fresh_temp))
    assert sorted(p.name for p in area_dir.iterdir() if p.is_dir()) == []  # empty chunk folders gone


def test_a_command_that_added_to_the_cache_trims_it_at_its_end(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(cachedir.CACHE_MAX_ENV, "2KB")
    service = Service(tmp_path / "home", _ui())
    area_dir = service.cache_root / AREA
    chunks = [_chunk(area_dir, n, 1000, seconds_ago=100 - n) for n in range(4)]
    service._cache_users.append(ChunkCache(area_dir))  # used, nothing added: no walk
    service.shutdown()
    assert all(p.exists() for p in chunks)
    assert not cachedir.grew_since(area_dir, time.time())
    service = Service(tmp_path / "home", _ui())
    cache = ChunkCache(area_dir)
    cache.put(f"{9:064x}", b"new")
    service._cache_users.append(cache)
    service.shutdown()
    assert [p.exists() for p in chunks] == [False, False, True, True]
    (area_dir / f"m2-{'e' * 64}").write_bytes(b"resolved")
    assert cachedir.grew_since(area_dir, time.time())


def test_chunk_cache_counts_what_it_adds_and_a_prune_drops_what_the_area_no_longer_needs(tmp_path):
    area_dir = tmp_path / AREA
    cache = ChunkCache(area_dir)
    ids = [f"{n:064x}" for n in range(3)]
    for cid in ids:
        cache.put(cid, b"plain")
    assert cache.added == 15
    held_id = "d" * 64
    (area_dir / "held.json").write_text(json.dumps({"/books.db": held_id}))
    for mid in (held_id, "e" * 64):
        (area_dir / f"m2-{mid}").write_bytes(b"resolved")
    assert cachedir.drop_objects(area_dir, [ids[0], ids[2], held_id, "e" * 64, "f" * 64]) == 3
    assert [cache.has(c) for c in ids] == [False, True, False]
    assert (area_dir / f"m2-{held_id}").exists() and not (area_dir / f"m2-{'e' * 64}").exists()


# --- leave, forget, status ------------------------------------------------------------------------


def test_forget_removes_the_areas_cache_unless_another_data_set_uses_the_area(tmp_path: Path):
    service = Service(tmp_path / "home", _ui())
    try:
        for name in ("books", "copy", "other"):
            (tmp_path / name).write_text("x")
            service.add(name, tmp_path / name)
        service.registry.update_dataset("books", area_id=AREA)
        service.registry.update_dataset("copy", area_id=AREA)
        area_dir = service.cache_root / AREA
        _chunk(area_dir, 1, 1000, 0)
        (area_dir / "area.json").write_bytes(b"{}")
        rows = {r["name"]: r for r in service.status()}
        assert rows["books"]["cache_bytes"] == rows["copy"]["cache_bytes"] == 1002
        assert rows["other"]["cache_bytes"] == 0
        assert service.cache_summary() == {"bytes": 1002, "cap": cachedir.DEFAULT_CACHE_MAX,
                                           "path": str(service.cache_root)}
        service.forget("books")
        assert area_dir.is_dir()  # "copy" still uses the area
        service.forget("copy")
        assert not area_dir.exists()
    finally:
        service.shutdown()


@pytest.mark.server
def test_status_shows_the_cache_and_leave_and_forget_remove_it(embedded_server, tmp_path, home_templates,
                                                              area):
    firm = home_templates.home(embedded_server, tmp_path / "firm", "Firm (Sato)")
    client: Home = home_templates.home(embedded_server, tmp_path / "client", "Client (Yamada)")
    books = firm.data / "books.csv"
    books.write_text("date,amount\n" + "2026-03-01,100\n" * 2000)
    firm.run("share", "books", str(books), "--remote", "host", "--area", area, "--yes",
             CLOUDSHARE_WRITE_FORMAT="1")  # format 1 first: its chunks are what the cache holds
    client.run("join", "books", str(client.data / "books.csv"), "--remote", "host", "--area", area)
    [row] = json.loads(client.run("status", "--json").stdout)
    assert row["cache_bytes"] > 0
    [area_dir] = [p for p in (client.root / "home" / "cache").iterdir() if p.is_dir()]
    assert row["cache_bytes"] == cachedir.folder_size(area_dir)
    shown = client.run("status").stdout
    assert "(cache " in shown and "cache on this computer:" in shown and str(area_dir.parent) in shown

    assert any(len(p.name) == 2 for p in area_dir.iterdir())  # format 1: chunks cached by the join
    client.run("open", "books", CLOUDSHARE_CACHE_MAX="0")  # nothing received, nothing added: kept
    assert any(len(p.name) == 2 for p in area_dir.iterdir())
    client.run("close", "books")
    firm.run("open", "books")
    books.write_text("date,amount\n" + "2026-03-01,150\n" * 2000)
    firm.run("close", "books", CLOUDSHARE_WRITE_FORMAT="1")
    client.run("open", "books", CLOUDSHARE_CACHE_MAX="0")  # receives: only what it may not remove stays
    left = {p.name for p in area_dir.iterdir()}
    assert "area.json" in left and not any(len(n) == 2 for n in left)  # format 1: its chunks went
    (client.data / "books.csv").write_text("date,amount\n" + "2026-03-02,200\n" * 2000)
    client.run("close", "books", CLOUDSHARE_WRITE_FORMAT="2")  # the area is upgraded to format 2
    firm.run("open", "books", CLOUDSHARE_CACHE_MAX="0")  # receives it: resolved manifests cached
    [firm_dir] = [p for p in (firm.root / "home" / "cache").iterdir() if p.is_dir()]
    left = {p.name for p in firm_dir.iterdir()}
    held = set(json.loads((firm_dir / "held.json").read_text()).values())
    assert {"area.json", "held.json"} <= left and held
    assert {n for n in left if n.startswith("m2-")} <= {f"m2-{m}" for m in held}
    firm.run("close", "books")

    client.run("leave", "books", "--yes")
    assert not area_dir.exists()
    firm_cache = firm.root / "home" / "cache"
    assert any(firm_cache.iterdir())
    firm.run("forget", "books")
    assert not any(p.is_dir() for p in firm_cache.iterdir())
