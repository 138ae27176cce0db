"""Format 2 data in the area: the upgrade, manifests as patches, packs up and frames down.

`Format2` sits between the lock and `DataStore` in the stack (`AreaBase → Log → LockFolder
→ Format2 → DataStore → Area`): it upgrades a version-1 area under the lock, writes a
version's new chunks into packs and its manifest as a patch of the base version's,
resolves manifests (fetching parents until one is cached on this computer) and receives a
version from the local copy plus frames. Spec: docs/area-format.md, "Format version 2".
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import BinaryIO

from .. import crypto, errors
from ..cachedir import HELD
from ..cachedir import MANIFEST_PREFIX as CACHED_PREFIX  # files: ChunkCache prunes folders
from ..i18n import _
from ..localfiles import atomic_write
from ..snapshot import LocalSnapshot, Manifest
from ..snapshot import manifest2 as m2
from ..snapshot.restore2 import LocalChunks, restore_chunks
from .lock import LockFolder
from .model import Version
from .packs import PackWriter, pack_path, read_chunks
from .records import _nowiso_utc

KEEP_CACHED = 8


def body_version(body: bytes) -> int | None:
    """The format version a manifest body declares (None if it is not a JSON object)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _write_parts(path: Path, *parts: Iterable[bytes]) -> None:
    """Replace `path` with the concatenated parts (streamed to a temp sibling, then renamed;
    not fsynced: a cache), so a large resolved manifest is never one string in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            for group in parts:
                fh.writelines(group)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


class Format2(LockFolder):
    """Format 2's part of the area's data (see the module docstring)."""

    # --- the upgrade ---------------------------------------------------------------------

    def format2_ready(self) -> bool:
        """True if the area is (now) format 2: upgrades a version-1 area in place, under our
        lock, by an atomic replace of its config; False if the host cannot replace atomically."""
        config = self.load()
        if config.get("version") == 2:
            return True
        new = {**config, "version": 2, "upgraded": _nowiso_utc()}
        tmp = self._tmp()
        self.session.upload(tmp, json.dumps(new, indent=1, sort_keys=True).encode())
        if not self.session.replace(tmp, self.p("config")):
            with suppress(FileNotFoundError):
                self.session.remove(tmp)
            return False
        self.session.mkdir(self.p("packs"))
        self.config = new
        return True

    # --- manifests ---------------------------------------------------------------------------

    def _manifest_body(self, manifest_id: str, number: int) -> bytes:
        """A manifest's verified plaintext (AreaCorrupt if it is missing)."""
        keys = self.require_keys()
        try:
            blob = self.session.read_bytes(self.p("manifests", manifest_id), m2.MAX_MANIFEST + (1 << 20))
        except FileNotFoundError:
            raise errors.AreaCorrupt(_("the manifest of version {version} is missing").format(
                version=number)) from None
        body = crypto.open_sealed(keys, crypto.KIND_MANIFEST, manifest_id, blob, max_plain=m2.MAX_MANIFEST)
        crypto.verify_chunk(keys, manifest_id, body)
        return body

    def _cache_file(self, manifest_id: str) -> Path | None:
        if self._cache_dir is None or self.config is None:
            return None
        return self._cache_dir / self.config["area_id"] / f"{CACHED_PREFIX}{manifest_id}"

    def _cached(self, manifest_id: str) -> tuple[m2.Resolved, list[str]] | None:
        path = self._cache_file(manifest_id)
        if path is None or not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:  # the head line, then the body: one copy of it in memory
                head = fh.readline(1 << 16)
                body = fh.read()
            depth, *chain = head.rstrip(b"\n").decode("ascii").split(",")
            patch = m2.decode(body)
            del body
            resolved = m2.resolve(patch, None)
            resolved.depth = int(depth)  # the full form says 0: the chain's depth is kept here
            if not 0 <= resolved.depth <= m2.MAX_DEPTH or len(chain) != resolved.depth + 1:
                raise ValueError(depth)
            return resolved, chain
        except (OSError, ValueError, errors.CloudShareError):
            path.unlink(missing_ok=True)  # local damage: fetched again
            return None

    def _remember(self, manifest_id: str, resolved: m2.Resolved, chain: list[str]) -> None:
        path = self._cache_file(manifest_id)
        if path is not None:
            head = ",".join([str(resolved.depth), *chain]).encode() + b"\n"
            with suppress(OSError):
                _write_parts(path, [head], m2.encode_parts(m2.full_form(resolved)))
                self._trim_cache(path.parent)

    def _trim_cache(self, folder: Path) -> None:
        """Keep the newest KEEP_CACHED resolved manifests and those of the copies held here."""
        held = {f"{CACHED_PREFIX}{mid}" for mid in self._held().values()}
        found = sorted(folder.glob(f"{CACHED_PREFIX}*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in found[KEEP_CACHED:]:
            if old.name not in held:
                old.unlink(missing_ok=True)

    def resolve_manifest(self, manifest_id: str, number: int) -> tuple[m2.Resolved, list[str]]:
        """A format-2 version's chunk lists and locations, and its manifest chain (itself first):
        parents are fetched until one is cached here or full. AreaCorrupt if any is unreadable."""
        found = self._cached(manifest_id)
        if found is not None:
            return found
        patches: list[tuple[str, m2.Patch]] = []
        base: tuple[m2.Resolved, list[str]] | None = None
        current: str | None = manifest_id
        while current is not None and base is None:
            if len(patches) > m2.MAX_DEPTH:
                raise errors.AreaCorrupt(_("the manifest has a malformed file entry"))
            if patches and (base := self._cached(current)) is not None:
                break
            body = self._manifest_body(current, number)
            if body_version(body) != m2.VERSION:
                raise errors.AreaCorrupt(_("the manifest has a malformed file entry"))
            patch = m2.decode(body)
            patches.append((current, patch))
            current = patch.parent
        resolved, chain = base if base is not None else (None, [])
        for mid, patch in reversed(patches):
            resolved, chain = m2.resolve(patch, resolved), [mid, *chain]
        assert resolved is not None
        self._remember(manifest_id, resolved, chain)
        return resolved, chain

    # --- writing -------------------------------------------------------------------------------

    def upload_format2(self, snap: LocalSnapshot, parent: Version | None,
                       progress: Callable[[int], None] | None = None) -> str:
        """Pack the chunks `parent` lacks, publish the manifest (a patch of the parent's when
        that is smaller); returns the manifest id."""
        keys = self.require_keys()
        base, chain = self._parent(parent)
        writer = PackWriter(self.session, self.p, self._tmp, keys)
        try:
            files, placed = self._patch_files(snap, base, writer, progress)
            frames = writer.finish()
        except BaseException:
            writer.abandon()
            raise
        parent_id = chain[0] if base is not None else None
        patch = m2.Patch(snap.manifest.kind, parent_id, base.depth + 1 if base else 0, frames, files)
        resolved = m2.resolve(patch, base)
        body = m2.encode(patch)
        if base is not None:
            full = m2.full_form(resolved)
            if patch.depth > m2.WRITE_MAX_DEPTH or 2 * len(body) >= m2.encoded_size(full):
                body, chain, resolved.depth = m2.encode(full), [], 0
        manifest_id = crypto.chunk_id(keys, body)
        blob = crypto.seal(keys, crypto.KIND_MANIFEST, manifest_id, body)
        self._place_manifest(manifest_id, blob)
        self.stats.chunks_uploaded += placed
        self.stats.bytes_uploaded += writer.bytes_sent + len(blob)
        self._remember(manifest_id, resolved, [manifest_id, *chain])
        self.remember_held(snap.root, manifest_id)
        return manifest_id

    def _place_manifest(self, manifest_id: str, blob: bytes) -> None:
        """Publish a sealed manifest as an object (put_object checks a name already there)."""
        self.session.put_object(self._tmp(), self.p("manifests", manifest_id), blob)

    def _parent(self, parent: Version | None) -> tuple[m2.Resolved | None, list[str]]:
        """The base version resolved, when it is format 2 and readable (else a full manifest)."""
        if parent is None:
            return None, []
        try:
            return self.resolve_manifest(parent.manifest, parent.version)
        except errors.AreaCorrupt:
            return None, []

    def _patch_files(self, snap: LocalSnapshot, base: m2.Resolved | None, writer: PackWriter,
                     progress: Callable[[int], None] | None) -> tuple[tuple[m2.PatchFile, ...], int]:
        lists = base.lists() if base is not None else {}
        known = base.where if base is not None else {}
        placed: set[str] = set()
        opened: dict[Path, BinaryIO] = {}
        try:
            return self._patch_entries(snap, lists, known, placed, opened, writer, progress)
        finally:
            for fh in opened.values():
                fh.close()

    def _patch_entries(self, snap: LocalSnapshot, lists: dict[str, tuple[str, ...]],
                       known: Mapping[str, object], placed: set[str], opened: dict[Path, BinaryIO],
                       writer: PackWriter, progress: Callable[[int], None] | None,
                       ) -> tuple[tuple[m2.PatchFile, ...], int]:
        files = []
        for entry in snap.manifest.files:
            ops, before = m2.OpsBuilder(), lists.get(entry.path, ())
            for i, (cid, length) in enumerate(zip(entry.chunks, entry.lengths, strict=True)):
                if i < len(before) and before[i] == cid:
                    ops.copy(i)
                elif cid in known or cid in placed:
                    ops.stored(cid)
                else:
                    self.check_interrupt()
                    path, data = snap.read_unverified(cid, opened)
                    frame, offset = writer.add(data, partial(snap.verify, cid, path, data))
                    ops.new(frame, offset, cid, length)
                    placed.add(cid)
                    if progress:
                        progress(length)
            files.append(m2.PatchFile(entry.path, entry.size, entry.mode, entry.mtime, entry.chunker,
                                      ops.ops()))
        return tuple(files), len(placed)

    # --- reading ---------------------------------------------------------------------------------

    def download_format2(self, version: Version, target: Path,
                         progress: Callable[[int], None] | None = None) -> Manifest:
        """Receive a format-2 version into `target`: the local copy's chunks, then frames."""
        keys = self.require_keys()
        resolved, _chain = self.resolve_manifest(version.manifest, version.version)

        def count(n: int) -> None:
            self.stats.bytes_downloaded += n

        def remote(missing: set[str]) -> Iterator[tuple[str, bytes]]:
            for cid, data in read_chunks(self.session, self.p, keys, resolved.where, count, missing):
                self.check_interrupt()
                self.stats.chunks_downloaded += 1
                if progress:
                    progress(len(data))
                yield cid, data

        restore_chunks(resolved.manifest, target, keys, self._local_chunks(target, resolved), remote)
        self.remember_held(target, version.manifest)
        return resolved.manifest

    def _held_file(self) -> Path | None:
        if self._cache_dir is None or self.config is None:
            return None
        return self._cache_dir / self.config["area_id"] / HELD

    def remember_held(self, target: Path, manifest_id: str) -> None:
        """Note that `target` on this computer now holds the version of `manifest_id`."""
        path = self._held_file()
        if path is None:
            return
        held = self._held()
        held[str(Path(target).absolute())] = manifest_id
        with suppress(OSError):
            atomic_write(path, json.dumps(held).encode(), durable=False)

    def _held(self) -> dict[str, str]:
        path = self._held_file()
        try:
            held = json.loads(path.read_bytes()) if path is not None else {}
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in held.items() if isinstance(v, str)} if isinstance(held, dict) else {}

    def _local_chunks(self, target: Path, wanted: m2.Resolved) -> LocalChunks:
        """Where the local copy may hold each chunk: the layout of the version this computer
        holds (when its manifest is cached), else the same place in the same file. Each one is
        verified before use, so a local copy changed since costs only its chunks."""
        local = LocalChunks()
        held = self._held().get(str(Path(target).absolute()))
        found = self._cached(held) if held else None
        layouts = [found[0].manifest] if found is not None else []
        del found  # its locations are not needed: free them before the layout grows
        for manifest in [*layouts, wanted.manifest]:
            for entry in manifest.files:
                path = Path(target) / entry.path if entry.path else Path(target)
                if not path.is_file():
                    continue  # nothing to read there (a join): no entry per chunk
                offset = 0
                for cid, length in zip(entry.chunks, entry.lengths, strict=True):
                    local.setdefault(cid, (path, offset, length))
                    offset += length
        return local

    def objects_needed_format2(self, version: Version) -> set[str]:
        """Area-relative paths of a format-2 version's manifest chain and packs."""
        resolved, chain = self.resolve_manifest(version.manifest, version.version)
        return {f"manifests/{mid}" for mid in chain} | {"/".join(pack_path(p)) for p in resolved.packs()}
