#!/usr/bin/env python3
"""Format 2 deltas: bytes an edit costs with each chunker, beside rsync and the changed pages.

Everything is local (files in one temporary folder, removed at the end) and measured in
this run; nothing is asserted. Scenarios:

* ``day``    — a SQLite ledger (~23 MB, ~320,000 journal rows, built deterministically), edit =
               1 % new rows + a memo corrected in every 997th row (one transaction);
* ``append`` — the same ledger, 1 % new rows only;
* ``csv``    — a CSV export of the ledger before/after the day's edit (a file that is not a
               database: bytes shift, so content-defined chunking is what matters);
* ``big``    — with ``--big``: the day's edit on a ~230 MB ledger (~3.2 M rows).

Per chunker: chunks of the new version not in the old one ("changed"), their zstd -3 size
compressed one by one, plus an estimated per-chunk overhead (id 32 B + AEAD 28 B + index
entry 48 B = 108 B), plus the manifest: flat = chunk count x 32 B; tree = the nodes of a
content-defined tree of chunk ids (fanout ~64, every node 32 B/entry + 108 B) that are new
in this version. "send" = data + overhead + manifest tree delta; the other side's `open`
receives the same bytes. "first" = all distinct chunks compressed + overhead + the whole
tree, against `zstd -3` of the whole file.

Peers: rsync (--no-whole-file, with and without -z, through a local stand-in remote shell so
the real sender/receiver protocol runs; "Total bytes sent" of the pushing side, the
checksums coming back listed separately), changed 4 KiB pages raw and zstd -3 (all changed
pages as one stream = the target's "changed pages compressed"; and page by page).

Run from the repository root:  .venv/bin/python bench/bench_delta.py [--big]

Over ~400 lines because a benchmark is one self-contained script read top to bottom (the ledger
generator and edits, each chunker's measurement, the peers, the verdict), not a library.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cloudshare_p2p import chunking  # noqa: E402

OVERHEAD = 32 + 28 + 48  # id + AEAD (nonce 12 + tag 16) + index entry
ID = 32
FANOUT_BITS = 6  # content-defined manifest tree: ~64 entries per node
ROWS = 320_000
BIG_ROWS = 3_200_000
PAGE = 4096
FRAME = 1 << 20  # scheme B: input bytes per compressed frame
DICT_SIZE = 112 << 10  # scheme C: dictionary size
SCHEMES = "ABC"

ACCOUNTS = [1110, 1120, 1130, 1210, 1310, 1410, 1510, 2110, 2120, 2210, 2310, 3110, 4110, 4120, 4210,
            5110, 5210, 6110, 6120, 6130, 6140, 6150, 6210, 6220, 6230, 6310, 6410, 6510, 7110, 7210]
MEMOS = ["売上 請求書", "仕入 納品書", "交通費 電車", "会議費 打合せ", "通信費 携帯", "消耗品 文具",
         "水道光熱費", "家賃 事務所", "給与 支払", "源泉所得税 納付", "社会保険料", "支払手数料 振込",
         "広告宣伝費", "接待交際費 会食", "外注費 デザイン", "租税公課 印紙", "修繕費", "保険料"]
VENDORS = ["山田商事", "佐藤工業", "鈴木物産", "高橋電機", "田中建設", "伊藤食品", "渡辺印刷", "中村運輸",
           "小林商店", "加藤設計", "吉田薬品", "山口製作所", "松本不動産", "井上電工", "木村交通"]


# --- the ledger -----------------------------------------------------------------------------


def _row(rng: random.Random, i: int, scale: int) -> tuple:
    day = 18000 + i * 2200 // scale  # ~6 years of days over the base ledger, increasing with id
    return (
        i,
        time.strftime("%Y-%m-%d", time.gmtime(day * 86400)),
        rng.choice(ACCOUNTS),
        rng.choice(ACCOUNTS),
        rng.randrange(100, 3_000_000),
        rng.choice((0, 8, 10)),
        rng.choice(MEMOS) if rng.random() < 0.7 else rng.choice(VENDORS),
        f"V{i:07d}" if rng.random() < 0.4 else None,  # a voucher number on some entries
    )


def build_ledger(path: Path, rows: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    con.executescript(
        """
        PRAGMA page_size=4096; PRAGMA journal_mode=DELETE;
        CREATE TABLE journal(id INTEGER PRIMARY KEY, entry_date TEXT NOT NULL, account INTEGER NOT NULL,
            counter_account INTEGER NOT NULL, amount INTEGER NOT NULL, tax_rate INTEGER NOT NULL,
            memo TEXT NOT NULL, voucher TEXT);
        CREATE INDEX journal_account ON journal(account, entry_date);
        """
    )
    batch = 20_000
    for start in range(1, rows + 1, batch):
        con.executemany("INSERT INTO journal VALUES (?,?,?,?,?,?,?,?)",
                        [_row(rng, i, rows) for i in range(start, min(rows, start + batch - 1) + 1)])
        con.commit()
    con.close()


def edit_ledger(path: Path, base_rows: int, *, memos: bool, seed: int = 12) -> None:
    """1 % new rows (the next ids and dates) and, with `memos`, every 997th memo corrected."""
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    with con:
        new = base_rows // 100
        con.executemany("INSERT INTO journal VALUES (?,?,?,?,?,?,?,?)",
                        [_row(rng, i, base_rows) for i in range(base_rows + 1, base_rows + new + 1)])
        if memos:
            con.execute("UPDATE journal SET memo = memo || '（訂正）' WHERE id % 997 = 0")
    con.close()


def export_csv(db: Path, out: Path) -> None:
    con = sqlite3.connect(db)
    with open(out, "w", encoding="utf-8", newline="") as fh:
        for row in con.execute("SELECT * FROM journal ORDER BY id"):
            fh.write(",".join(str(v) for v in row) + "\r\n")
    con.close()


# --- measuring --------------------------------------------------------------------------------


_zc = zstandard.ZstdCompressor(level=3)


def zlen(data: bytes) -> int:
    return len(_zc.compress(data))


def chunk_ids(path: Path, chunker: chunking.Chunker) -> tuple[list[bytes], list[int], float]:
    ids, sizes = [], []
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        for _off, data in chunking.chunks(fh, chunker):
            ids.append(hashlib.sha256(data).digest())
            sizes.append(len(data))
    return ids, sizes, time.perf_counter() - t0


def tree_nodes(ids: list[bytes]) -> dict[bytes, int]:
    """All nodes of a content-defined tree over `ids`: node id -> entries (the root included)."""
    nodes: dict[bytes, int] = {}
    level = ids
    mask = (1 << FANOUT_BITS) - 1
    for _ in range(16):  # bounded: each level is ~64x shorter
        if len(level) <= 1 and nodes:
            break
        up, group = [], []
        for cid in level:
            group.append(cid)
            if cid[0] & mask == mask:  # a boundary after this entry
                up.append(_node(nodes, group))
                group = []
        if group:
            up.append(_node(nodes, group))
        level = up
    return nodes


def _node(nodes: dict[bytes, int], group: list[bytes]) -> bytes:
    nid = hashlib.sha256(b"".join(group)).digest()
    nodes[nid] = len(group)
    return nid


def tree_bytes(nodes: dict[bytes, int], only: set[bytes] | None = None) -> int:
    return sum(ID * n + OVERHEAD for nid, n in nodes.items() if only is None or nid in only)


class Packer:
    """Bytes one set of new chunks costs under the three packing schemes (streaming, bounded).

    A: each chunk zstd -3 alone + 108 B (id, AEAD, index entry);
    B: chunks laid in file order, zstd -3 in frames of <= 1 MiB input, each frame sealed
       (28 B), + 48 B index entry per chunk (id + frame, offset, length);
    C: each chunk zstd -3 alone with the area's dictionary (trained on the first version)
       + 108 B.
    """

    def __init__(self, zdict: zstandard.ZstdCompressionDict | None) -> None:
        self.a = self.b = self.c = 0
        self._frame: list[bytes] = []
        self._frame_len = 0
        self._zc_frame = zstandard.ZstdCompressor(level=3)
        self._zc_dict = zstandard.ZstdCompressor(level=3, dict_data=zdict) if zdict else None

    def add(self, data: bytes) -> None:
        self.a += zlen(data) + OVERHEAD
        self.c += (len(self._zc_dict.compress(data)) if self._zc_dict else 0) + OVERHEAD
        self.b += 48
        self._frame.append(data)
        self._frame_len += len(data)
        if self._frame_len >= FRAME:
            self._flush()

    def _flush(self) -> None:
        if self._frame:
            self.b += len(self._zc_frame.compress(b"".join(self._frame))) + 28
            self._frame, self._frame_len = [], 0

    def done(self) -> tuple[int, int, int]:
        self._flush()
        return self.a, self.b, self.c


def train_dict(path: Path) -> zstandard.ZstdCompressionDict:
    """A zstd dictionary from <= 4000 evenly spread 4 KiB samples of `path` (the first version)."""
    size = path.stat().st_size
    step = max(PAGE, size // 4000 // PAGE * PAGE)
    samples = []
    with open(path, "rb") as fh:
        for off in range(0, size, step):
            fh.seek(off)
            samples.append(fh.read(PAGE))
    return zstandard.train_dictionary(DICT_SIZE, samples, level=3)


def patch_bytes(old_ids: list[bytes], new_ids: list[bytes]) -> int:
    """A manifest as a patch of the parent's id list: 8 B per copied run, 32 B per new id."""
    pos: dict[bytes, int] = {}
    for i, cid in enumerate(old_ids):
        pos.setdefault(cid, i)
    runs = lits = 0
    prev: int | None = None
    for cid in new_ids:
        j = pos.get(cid)
        if j is None:
            lits += 1
            prev = None
        elif prev is None or j != prev + 1:
            runs += 1
            prev = j
        else:
            prev = j
    return runs * 8 + lits * ID + OVERHEAD


@dataclass
class Row:
    name: str
    count: int
    mean: float
    changed: int
    raw: int
    manifest_flat: int
    tree_delta: int
    patch: int
    tree_full: int
    send: tuple[int, int, int]  # data under schemes A, B, C (manifest not included)
    first: tuple[int, int, int]
    mbps: float


def measure(old: Path, new: Path, chunker: chunking.Chunker, first: bool,
            zdict: zstandard.ZstdCompressionDict) -> Row:
    old_ids, _old_sizes, _ = chunk_ids(old, chunker)
    old_set = set(old_ids)
    new_ids, sizes = [], []
    changed, raw, seen = 0, 0, set()
    packer = Packer(zdict)
    t0 = time.perf_counter()
    with open(new, "rb") as fh:
        for _off, data in chunking.chunks(fh, chunker):
            cid = hashlib.sha256(data).digest()
            new_ids.append(cid)
            sizes.append(len(data))
            if cid not in old_set and cid not in seen:
                seen.add(cid)
                changed += 1
                raw += len(data)
                packer.add(data)
    secs = time.perf_counter() - t0  # chunking + hashing + packing the changed chunks
    send = packer.done()
    old_nodes, new_nodes = tree_nodes(old_ids), tree_nodes(new_ids)
    delta = tree_bytes(new_nodes, set(new_nodes) - set(old_nodes))
    first_bytes = (0, 0, 0)
    if first:  # the old version sent to an empty area (the dictionary, if used, counted by the caller)
        done: set[bytes] = set()
        fp = Packer(zdict)
        with open(old, "rb") as fh:
            for _off, data in chunking.chunks(fh, chunker):
                cid = hashlib.sha256(data).digest()
                if cid not in done:
                    done.add(cid)
                    fp.add(data)
        first_bytes = fp.done()
    mean = sum(sizes) / max(1, len(sizes))
    return Row(chunker.name, len(new_ids), mean, changed, raw, len(new_ids) * ID, delta,
               patch_bytes(old_ids, new_ids), tree_bytes(old_nodes), send, first_bytes,
               new.stat().st_size / 1e6 / max(secs, 1e-9))


def changed_pages(old: Path, new: Path, page: int = PAGE) -> tuple[int, int, int, int]:
    """(pages changed, raw bytes, zstd -3 of them as one stream, zstd -3 page by page)."""
    n = raw = per_page = 0
    stream = zstandard.ZstdCompressor(level=3).compressobj()  # its own context: zlen() interleaves
    out = 0
    with open(old, "rb") as fo, open(new, "rb") as fn:
        while True:
            b = fn.read(page)
            if not b:
                break
            if fo.read(page) != b:
                n += 1
                raw += len(b)
                per_page += zlen(b)
                out += len(stream.compress(b))
    out += len(stream.flush())
    return n, raw, out, per_page


def zstd_cli(path: Path, work: Path) -> int | str:
    if not shutil.which("zstd"):
        return "zstd CLI missing"
    out = work / "whole.zst"
    subprocess.run(["zstd", "-3", "-q", "-f", "-o", str(out), str(path)], check=True)
    size = out.stat().st_size
    out.unlink()
    return size


_STAT_RE = {k: re.compile(rf"^{k}: ([0-9,]+)", re.M)
            for k in ("Total bytes sent", "Total bytes received", "Literal data", "Matched data")}


def rsync(old: Path, new: Path, work: Path, compress: bool) -> dict[str, int] | str:
    """Push `new` onto a copy of `old` through a local stand-in remote shell; rsync's --stats."""
    if not shutil.which("rsync"):
        return "rsync missing (apt-get install rsync)"
    rsh = work / "local-rsh"
    rsh.write_text('#!/bin/sh\nshift\nexec "$@"\n')
    rsh.chmod(0o755)
    dest = work / "rsync-dest"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    shutil.copyfile(old, dest / new.name)
    cmd = ["rsync", "--no-whole-file", "--ignore-times", "--stats", "-e", str(rsh)]
    if compress:
        cmd.append("-z")
    proc = subprocess.run([*cmd, str(new), f"localhost:{dest}/"], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        return f"rsync failed: {proc.stderr.strip()[:200]}"
    if _digest(dest / new.name) != _digest(new):
        return "rsync result differs from the source"
    stats = {}
    for key, rx in _STAT_RE.items():
        m = rx.search(proc.stdout)
        stats[key] = int(m[1].replace(",", "")) if m else -1
    shutil.rmtree(dest, ignore_errors=True)
    return stats


def _digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while b := fh.read(1 << 20):
            h.update(b)
    return h.digest()


# --- reporting --------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:.3f}"


def ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}x" if b else "—"


def chunkers_for(path: Path) -> list[chunking.Chunker]:
    found = chunking.detect(path)
    out: list[chunking.Chunker] = [chunking.FixedChunker(1 << 20)]
    if isinstance(found, chunking.PageChunker):
        out += [chunking.PageChunker(found.page_size, k) for k in (1, 2, 4, 8, 16)]
    for avg in (4, 8, 16, 32, 64):
        a = avg << 10
        out.append(chunking.CdcChunker(avg=a, min=a // 4, max=a * 4))
    return out


def scenario(title: str, old: Path, new: Path, work: Path, first: bool) -> dict:
    print(f"\n## {title}")
    print(f"old {old.stat().st_size:,} B, new {new.stat().st_size:,} B; detect(new) = "
          f"{chunking.detect(new).name}")
    peers: dict = {}
    rz, rn = rsync(old, new, work, True), rsync(old, new, work, False)
    for label, r in (("rsync --no-whole-file -z", rz), ("rsync --no-whole-file", rn)):
        if isinstance(r, str):
            print(f"  {label}: skipped: {r}")
        else:
            print(f"  {label}: sent {mb(r['Total bytes sent'])} MB (literal {mb(r['Literal data'])} MB, "
                  f"matched {mb(r['Matched data'])} MB), checksums back {mb(r['Total bytes received'])} MB")
    peers["rsync_z"] = rz["Total bytes sent"] if isinstance(rz, dict) else None
    if chunking.sqlite_page_size(_head(new)) is not None:
        n, raw, zs, zp = changed_pages(old, new)
        print(f"  changed 4 KiB pages: {n} pages, raw {mb(raw)} MB, zstd -3 as one stream {mb(zs)} MB "
              f"(= the target's 'changed pages compressed'), zstd -3 page by page {mb(zp)} MB")
        peers["pages_z"] = zs
    else:
        peers["pages_z"] = None
        print("  changed 4 KiB pages: not a page file (bytes shift)")
    wz = zstd_cli(old, work) if first else None
    if first:
        print(f"  zstd -3 CLI of the whole old file (first-transfer target): "
              f"{mb(wz) if isinstance(wz, int) else wz} MB")
    peers["zstd_whole"] = wz if isinstance(wz, int) else None
    t0 = time.perf_counter()
    zdict = train_dict(old)
    dict_len = len(zdict.as_bytes())
    print(f"  scheme C dictionary: {dict_len:,} B trained on the old version in "
          f"{time.perf_counter() - t0:.1f} s")
    rows = [measure(old, new, c, first, zdict) for c in chunkers_for(new)]
    print(f"\n  {'chunker':34} {'chunks':>7} {'meanKiB':>7} {'changed':>7} {'raw MB':>7} "
          f"{'mflat KB':>8} {'treeΔ KB':>8} {'patch KB':>8} {'MB/s':>5}")
    for r in rows:
        print(f"  {r.name:34} {r.count:7d} {r.mean / 1024:7.1f} {r.changed:7d} {mb(r.raw):>7} "
              f"{r.manifest_flat / 1e3:8.1f} {r.tree_delta / 1e3:8.1f} {r.patch / 1e3:8.1f} {r.mbps:5.0f}")
    print("\n  bytes sent by the edit = data under scheme + manifest patch "
          "(MB; × rsync -z | × changed pages zstd)")
    print(f"  {'chunker':34} " + " ".join(f"{'send ' + k:>8} {'×rs-z':>6} {'×pg-z':>6}" for k in SCHEMES))
    for r in rows:
        cells = []
        for i in range(3):
            tot = r.send[i] + r.patch
            cells.append(f"{mb(tot):>8} {ratio(tot, peers['rsync_z']):>6} {ratio(tot, peers['pages_z']):>6}")
        print(f"  {r.name:34} " + " ".join(cells))
    if first:
        print("\n  first transfer = all distinct chunks under scheme + full manifest tree "
              "(+ dictionary for C) (MB; × zstd -3)")
        print(f"  {'chunker':34} " + " ".join(f"{'first ' + k:>8} {'×zstd':>6}" for k in SCHEMES))
        for r in rows:
            cells = []
            for i in range(3):
                tot = r.first[i] + r.tree_full + (dict_len if i == 2 else 0)
                cells.append(f"{mb(tot):>8} {ratio(tot, peers['zstd_whole']):>6}")
            print(f"  {r.name:34} " + " ".join(cells))
    return {"title": title, "peers": peers, "rows": rows, "first": first, "dict": dict_len}


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(chunking.HEADER_BYTES)


def _checks(res: dict, r: Row, i: int) -> tuple[bool, bool, bool]:
    p = res["peers"]
    send = r.send[i] + r.patch
    first = r.first[i] + r.tree_full + (res["dict"] if i == 2 else 0)
    t1 = p["rsync_z"] is not None and send <= 1.5 * p["rsync_z"]
    t2 = p["pages_z"] is None or send <= 1.1 * p["pages_z"]
    t3 = not res["first"] or (p["zstd_whole"] is not None and first <= 1.1 * p["zstd_whole"])
    return t1, t2, t3


def verdict(results: list[dict]) -> None:
    print("\n## Verdict per target: (1) send ≤ 1.5× rsync -z, (2) send ≤ changed pages zstd + 10 %, "
          "(3) first ≤ 1.1× zstd -3")
    for i, scheme in enumerate(SCHEMES):
        print(f"  scheme {scheme}:")
        for res in results:
            cells = []
            for r in res["rows"]:
                marks = "".join("✔" if ok else "✘" for ok in _checks(res, r, i))
                cells.append(f"{r.name.replace('fastcdc2020-', 'cdc-').replace('-nc1', '')} {marks}")
            print(f"    {res['title'].split(':')[0]:9} " + ", ".join(cells))
    print("  best per scheme and kind (most checks met over all scenarios, then fewest bytes sent + first):")
    for i, scheme in enumerate(SCHEMES):
        for kind in ("pages-", "fastcdc2020-"):
            best = None
            for name in [r.name for r in results[0]["rows"] if r.name.startswith(kind)]:
                met = total = 0
                for res in results:
                    r = next((x for x in res["rows"] if x.name == name), None)
                    if r is None:
                        continue
                    met += sum(_checks(res, r, i))
                    total += r.send[i] + r.patch + r.first[i] + r.tree_full
                if best is None or (met, -total) > (best[1], -best[2]):
                    best = (name, met, total)
            if best:
                print(f"    {scheme} {kind[:-1]:11}: {best[0]} ({best[1]} checks met, send + first summed "
                      f"{mb(best[2])} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big", action="store_true", help="also the ~230 MB ledger")
    ap.add_argument("--rows", type=int, default=ROWS, help="journal rows of the base ledger")
    args = ap.parse_args()
    with open("/proc/loadavg") as fh:
        load0 = fh.read().strip()
    print("# bench_delta — format 2 chunkers against rsync and the changed pages")
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
          f"pyfastcdc {importlib.metadata.version('pyfastcdc')}, zstandard {zstandard.__version__}, "
          f"cpus {os.cpu_count()}, load at start {load0}")
    print(f"per-chunk overhead {OVERHEAD} B (id 32 + AEAD 28 + index 48); manifest flat = chunks x 32 B; "
          f"tree = content-defined, ~{1 << FANOUT_BITS} ids per node")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        base = work / "base" / "ledger.db"
        base.parent.mkdir()
        build_ledger(base, args.rows)
        print(f"built {args.rows:,}-row ledger: {base.stat().st_size:,} B in "
              f"{time.perf_counter() - t0:.1f} s")
        day = work / "day" / "ledger.db"
        day.parent.mkdir()
        shutil.copyfile(base, day)
        edit_ledger(day, args.rows, memos=True)
        app = work / "append" / "ledger.db"
        app.parent.mkdir()
        shutil.copyfile(base, app)
        edit_ledger(app, args.rows, memos=False)
        results.append(scenario(f"day: {args.rows:,}-row ledger, 1 % new rows + memo in every 997th row",
                                base, day, work, first=True))
        results.append(scenario("append: 1 % new rows", base, app, work, first=False))
        csv_old, csv_new = work / "base" / "ledger.csv", work / "day" / "ledger.csv"
        export_csv(base, csv_old)
        export_csv(day, csv_new)
        results.append(scenario("csv: export of the ledger, before/after the day's edit",
                                csv_old, csv_new, work, first=True))
        for p in (csv_old, csv_new, app):
            p.unlink()
        if args.big:
            for p in (base, day):
                p.unlink()
            t0 = time.perf_counter()
            big = work / "base" / "big.db"
            build_ledger(big, BIG_ROWS)
            print(f"\nbuilt {BIG_ROWS:,}-row ledger: {big.stat().st_size:,} B in "
                  f"{time.perf_counter() - t0:.1f} s")
            bigday = work / "day" / "big.db"
            shutil.copyfile(big, bigday)
            edit_ledger(bigday, BIG_ROWS, memos=True)
            results.append(scenario(f"big day: {BIG_ROWS:,}-row ledger, same edit", big, bigday, work,
                                    first=True))
    verdict(results)
    with open("/proc/loadavg") as fh:
        print(f"\nload at end {fh.read().strip()}")


if __name__ == "__main__":
    main()
