"""snapshot names: what Windows cannot hold is refused at scan and in received manifests."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from cloudshare_p2p import crypto, errors
from cloudshare_p2p.snapshot import LocalSnapshot, Manifest, safe_relpath, windows_name_problem


@pytest.fixture(scope="module")
def keys() -> crypto.Keys:
    return crypto.keys_from_data_key(crypto.new_data_key())


NFD = unicodedata.normalize("NFD", "ガイド.txt")
REFUSED = [
    "CON", "con", "Con.txt", "PRN.db", "aux", "NUL.tar.gz", "COM1", "com9.log", "LPT0", "COM\u00b9",
    "lpt\u00b3.txt", "CON .txt", "CONIN$", "a.", "a ", "a<b", "a>b", 'a"b', "a|b", "a?b", "a*b",
    "a:b", "a\\b", "a\x01b", "a\x1fb", NFD, "x" * 256, "\u3042" * 86,
]
ACCEPTED = ["CONSOLE.txt", "COM10", "LPT", "books.db", ".hidden", "a.b.c", "\u5e33\u7c3f.db",
            "Mandant 1", "x" * 255, "\u3042" * 85, "COMX", "nul-file.txt"]


@pytest.mark.parametrize("name", REFUSED)
def test_windows_name_problem_refuses(name: str) -> None:
    assert windows_name_problem(name)


@pytest.mark.parametrize("name", ACCEPTED)
def test_windows_name_problem_accepts(name: str) -> None:
    assert windows_name_problem(name) is None


@pytest.mark.parametrize("name", ["CON.txt", "report.", "a?b", NFD])
def test_scan_refuses_windows_names_naming_the_file(tmp_path: Path, keys: crypto.Keys, name: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / name).write_bytes(b"x")
    (tmp_path / "ok.db").write_bytes(b"ok")
    with pytest.raises(errors.InvalidState) as info:
        LocalSnapshot.scan(tmp_path, keys)
    assert repr(f"sub/{name}") in str(info.value) and repr(name) in info.value.hint


def test_scan_refuses_reserved_folder_name(tmp_path: Path, keys: crypto.Keys) -> None:
    (tmp_path / "aux").mkdir()
    (tmp_path / "aux" / "x.db").write_bytes(b"x")
    with pytest.raises(errors.InvalidState, match="aux/x.db"):
        LocalSnapshot.scan(tmp_path, keys)


@pytest.mark.parametrize("pair", [("Books.db", "books.db"), ("Sub/a", "sub/b"), ("Sub", "sub/x")])
def test_scan_refuses_names_differing_only_in_case(tmp_path: Path, keys: crypto.Keys, pair) -> None:
    for rel in pair:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    with pytest.raises(errors.InvalidState, match="differ only in upper/lower case"):
        LocalSnapshot.scan(tmp_path, keys)


def test_single_file_data_set_name_is_not_checked(tmp_path: Path, keys: crypto.Keys) -> None:
    # the receiver chooses its own local name for a single-file data set
    f = tmp_path / "books."
    f.write_bytes(b"x")
    assert LocalSnapshot.scan(f, keys).manifest.files[0].path == ""


def test_scan_accepts_case_distinct_sharp_s(tmp_path: Path, keys: crypto.Keys) -> None:
    (tmp_path / "stra\u00dfe.txt").write_bytes(b"1")
    (tmp_path / "STRASSE.txt").write_bytes(b"2")
    assert len(LocalSnapshot.scan(tmp_path, keys).manifest.files) == 2


def _manifest_json(paths: list[str], keys: crypto.Keys) -> bytes:
    cid = crypto.chunk_id(keys, b"evil")
    files = [{"path": p, "size": 4, "mode": 0o644, "mtime": 0.0, "chunks": [cid]} for p in paths]
    return json.dumps({"version": 1, "kind": "folder", "chunker": "fixed-1MiB", "files": files}).encode()


@pytest.mark.parametrize("paths", [["CON"], ["sub/nul.txt"], ["a./b"], ["x "], ["a*"], [NFD],
                                   ["A", "a"], ["Dir/x", "dir/y"]])
def test_received_manifest_with_windows_names_refused(keys: crypto.Keys, paths: list[str]) -> None:
    with pytest.raises(errors.UnsafePath):
        Manifest.from_json_bytes(_manifest_json(paths, keys))


def test_safe_relpath_windows_names() -> None:
    assert safe_relpath("Mandant/\u5e33\u7c3f 2026.db") == "Mandant/\u5e33\u7c3f 2026.db"
    for bad in ("sub/COM1.txt", "sub/x.", "LPT\u00b2"):
        with pytest.raises(errors.UnsafePath, match="Windows"):
            safe_relpath(bad)
