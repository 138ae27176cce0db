"""Format 2 data in the area: the upgrade, manifests as patches, packs up and frames down.

`Format2` sits between the lock and `DataStore` in the stack (`AreaBase → Log → LockFolder
→ Format2 → DataStore → Area`): it upgrades a version-1 area under the lock, writes a
version's new chunks into packs and its manifest as a patch of the base version's,
resolves manifests (fetching parents until one is cached on this computer) and receives a
version from the local copy plus frames. Spec: docs/area-format.md, "Format version 2".
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from .. import crypto, errors
from ..cachedir import HELD
from ..cachedir import MANIFEST_PREFIX as CACHED_PREFIX  # files: ChunkCache prunes folders
from ..i18n import _
from ..localfiles import atomic_write
from ..snapshot import LocalSnapshot, Manifest
from ..snapshot import manifest2 as m2
from ..snapshot import resolve2 as r2
from ..snapshot.chunkids import ChunkIds, IdIndex
from ..snapshot.restore2 import LocalChunks, restore_chunks
from . import packer
from .lock import LockFolder
from .model import Version
from .packs import FirstPacking, PackUploader, PackWriter, pack_path, read_chunks
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

    # The last manifest fetched and resolved, kept for the next call (`read_manifest` then `download`
    # did each twice); ids name content: never stale. Steps done with them drop them (`_forget`).
    _last_body: tuple[str, bytes] | None = None
    _last_resolved: tuple[str, r2.Resolved, list[str]] | None = None

    def _forget(self) -> None:
        self._last_body = self._last_resolved = None

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
        if self._last_body is not None and self._last_body[0] == manifest_id:
            return self._last_body[1]
        keys = self.require_keys()
        try:
            blob = self.session.read_bytes(self.p("manifests", manifest_id), m2.MAX_MANIFEST + (1 << 20))
        except FileNotFoundError:
            raise errors.AreaCorrupt(_("the manifest of version {version} is missing").format(
                version=number)) from None
        body = crypto.open_sealed(keys, crypto.KIND_MANIFEST, manifest_id, blob, max_plain=m2.MAX_MANIFEST)
        crypto.verify_chunk(keys, manifest_id, body)
        self._last_body = (manifest_id, body)
        return body

    def _manifest_doc(self, manifest_id: str, number: int) -> object:
        """A manifest's parsed JSON (None if it is not JSON; AreaCorrupt if it is missing)."""
        body = self._manifest_body(manifest_id, number)
        self._last_body = None  # parsed now: not needed again
        try:
            return m2.load(body)
        except errors.AreaCorrupt:
            return None

    def _cache_file(self, manifest_id: str) -> Path | None:
        if self._cache_dir is None or self.config is None:
            return None
        return self._cache_dir / self.config["area_id"] / f"{CACHED_PREFIX}{manifest_id}"

    def _cached(self, manifest_id: str) -> tuple[r2.Resolved, list[str]] | None:
        if self._last_resolved is not None and self._last_resolved[0] == manifest_id:
            return self._last_resolved[1], self._last_resolved[2]
        path = self._cache_file(manifest_id)
        if path is None or not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:  # the head line, then the body: one copy of it in memory
                head = fh.readline(1 << 16)
                body = fh.read()
            depth, *chain = head.rstrip(b"\n").decode("ascii").split(",")
            doc = m2.load(body)
            del body
            patch = m2.decode_doc(doc)
            del doc
            resolved = r2.resolve(patch, None)
            del patch
            resolved.depth = int(depth)  # the full form says 0: the chain's depth is kept here
            if not 0 <= resolved.depth <= m2.MAX_DEPTH or len(chain) != resolved.depth + 1:
                raise ValueError(depth)
            self._last_resolved = (manifest_id, resolved, chain)
            return resolved, chain
        except (OSError, ValueError, errors.CloudShareError):
            path.unlink(missing_ok=True)  # local damage: fetched again
            return None

    def _remember(self, manifest_id: str, resolved: r2.Resolved, chain: list[str]) -> None:
        path = self._cache_file(manifest_id)
        if path is not None:
            head = ",".join([str(resolved.depth), *chain]).encode() + b"\n"
            with suppress(OSError):
                _write_parts(path, [head], m2.encode_parts(r2.full_form(resolved)))
                self._trim_cache(path.parent)

    def _remember_body(self, manifest_id: str, body: bytes) -> None:
        """Cache a full manifest (depth 0) from its body: the cache holds a full form, any will do."""
        if (path := self._cache_file(manifest_id)) is not None:
            with suppress(OSError):
                _write_parts(path, [f"0,{manifest_id}\n".encode()], [body])
                self._trim_cache(path.parent)

    def _trim_cache(self, folder: Path) -> None:
        """Keep the newest KEEP_CACHED resolved manifests and those of the copies held here."""
        held = {f"{CACHED_PREFIX}{mid}" for mid in self._held().values()}
        found = sorted(folder.glob(f"{CACHED_PREFIX}*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in found[KEEP_CACHED:]:
            if old.name not in held:
                old.unlink(missing_ok=True)

    def resolve_manifest(self, manifest_id: str, number: int) -> tuple[r2.Resolved, list[str]]:
        """A format-2 version's chunk lists and locations, and its manifest chain (itself first):
        parents are fetched until one is cached here or full. AreaCorrupt if any is unreadable."""
        found = self._cached(manifest_id)
        if found is not None:
            return found
        patches: list[tuple[str, m2.Patch]] = []
        base: tuple[r2.Resolved, list[str]] | None = None
        current: str | None = manifest_id
        while current is not None and base is None:
            if len(patches) > m2.MAX_DEPTH:
                raise errors.AreaCorrupt(_("the manifest has a malformed file entry"))
            if patches and (base := self._cached(current)) is not None:
                break
            doc = self._manifest_doc(current, number)  # parsed once, the body freed before decoding
            if not m2.is_version2(doc):
                raise errors.AreaCorrupt(_("the manifest has a malformed file entry"))
            patch = m2.decode_doc(doc)
            del doc
            patches.append((current, patch))
            current = patch.parent
        resolved, chain = base if base is not None else (None, [])
        for mid, patch in reversed(patches):
            resolved, chain = r2.resolve(patch, resolved), [mid, *chain]
        assert resolved is not None
        self._remember(manifest_id, resolved, chain)
        self._last_resolved = (manifest_id, resolved, chain)
        return resolved, chain

    # --- writing -------------------------------------------------------------------------------

    def upload_format2(self, snap: LocalSnapshot, parent: Version | None,
                       progress: Callable[[int], None] | None = None) -> str:
        """Pack the chunks `parent` lacks, publish the manifest (a patch of the parent's when
        that is smaller); returns the manifest id."""
        keys = self.require_keys()
        base, chain = self._parent(parent)
        uploader = PackUploader(self.session, self.p, self._tmp)
        writer = PackWriter(keys, uploader.put)
        try:
            files = self._patch_files(snap, base, writer, progress)
            frames = writer.finish()
        except BaseException:
            writer.abandon()
            raise
        parent_id = chain[0] if base is not None else None
        patch = m2.Patch(snap.manifest.kind, parent_id, base.depth + 1 if base else 0, frames, files)
        del files
        return self._publish_patch(snap.root, patch, base, chain, writer.placed, uploader.bytes_sent)

    def upload_scanning(self, root: Path, progress: Callable[[int], None] | None = None,
                        ) -> tuple[str, LocalSnapshot]:
        """A first version (no parent): scan `root` and pack its chunks in the same pass, each
        file read once and the bytes sent the bytes hashed (no second reading to check them);
        its manifest id and the snapshot. A file changed during its reading: InvalidState.
        A large one is scanned and packed by a second process (`packer`) while this one uploads."""
        keys = self.require_keys()
        uploader = PackUploader(self.session, self.p, self._tmp)
        child = packer.for_share(root)
        if child is not None:
            with child:
                if child.start(keys, root, self.check_interrupt):
                    result = self._upload_from(child, uploader, progress)
                    snap = dataclasses.replace(result.snapshot, _keys=keys)
                    return self._publish_first(snap, result.ops, result.frames, result.placed, uploader), snap
        writer = PackWriter(keys, uploader.put)
        packing = FirstPacking(writer, self.check_interrupt, progress)
        try:
            snap = LocalSnapshot.scan(root, keys, format=2, sink=packing.add)
            frames = writer.finish()
        except BaseException:
            writer.abandon()
            raise
        ops = [packing.ops(n) for n in range(len(snap.manifest.files))]
        del packing
        return self._publish_first(snap, ops, frames, writer.placed, uploader), snap

    def _upload_from(self, child: packer.PackingProcess, uploader: PackUploader,
                     progress: Callable[[int], None] | None) -> packer.Result:
        """Upload each pack `child` hands over (one on the wire while the next one comes);
        what it found. Ctrl-C stops it between packs."""
        shown = 0
        with ThreadPoolExecutor(1, thread_name_prefix="upload") as pool:
            pending: Future[None] | None = None
            try:
                for pack_id, frames, done in child.packs(self.check_interrupt):
                    self.check_interrupt()
                    if pack_id is not None:
                        if pending is not None:
                            pending.result()
                        pending = pool.submit(uploader.put, pack_id, frames)
                    del frames
                    if progress is not None and done > shown:
                        progress(done - shown)
                        shown = done
            finally:
                child.close()  # a child still packing ends before the error (or Ctrl-C) goes on
            if pending is not None:
                pending.result()
        result = child.result
        assert result is not None
        missing = {frame.pack for frame in result.frames} - uploader.placed
        if missing:
            raise RuntimeError(f"the packing process named {len(missing)} packs it did not hand over")
        return result

    def _publish_first(self, snap: LocalSnapshot, ops: list[tuple[m2.Op, ...]], frames: tuple[m2.Frame, ...],
                       placed: int, uploader: PackUploader) -> str:
        files = tuple(m2.PatchFile(e.path, e.size, e.mode, e.mtime, e.chunker, ops[n])
                      for n, e in enumerate(snap.manifest.files))
        patch = m2.Patch(snap.manifest.kind, None, 0, frames, files)
        del files
        return self._publish_patch(snap.root, patch, None, [], placed, uploader.bytes_sent)

    def _publish_patch(self, root: Path, patch: m2.Patch, base: r2.Resolved | None, chain: list[str],
                       placed: int, sent: int) -> str:
        """Encode, seal and place a version's manifest (rewritten in full when that is smaller
        than a patch of `base`), cache it; its id. `placed` chunks were packed, in `sent` bytes."""
        keys = self.require_keys()
        parent_id = patch.parent
        body, resolved = m2.encode(patch), None
        if parent_id is not None:  # a patch: resolved, and rewritten in full when that is smaller
            resolved = r2.resolve(patch, base)
            base = None  # each of these is a few dozen bytes per chunk: freed as soon as done with
            full = r2.full_form(resolved)
            if patch.depth > m2.WRITE_MAX_DEPTH or 2 * len(body) >= m2.encoded_size(full):
                del body
                body, chain, resolved.depth = m2.encode(full), [], 0
            del full
        del patch
        manifest_id = crypto.chunk_id(keys, body)
        if not chain:  # a full manifest is cached as it is sent: not resolved nor encoded again
            resolved = None
            self._remember_body(manifest_id, body)
        blob = crypto.seal(keys, crypto.KIND_MANIFEST, manifest_id, body)
        del body
        self._place_manifest(manifest_id, blob)
        self.stats.chunks_uploaded += placed
        self.stats.bytes_uploaded += sent + len(blob)
        if resolved is not None:
            self._remember(manifest_id, resolved, [manifest_id, *chain])
        self.remember_held(root, manifest_id)
        return manifest_id

    def _place_manifest(self, manifest_id: str, blob: bytes) -> None:
        """Publish a sealed manifest as an object (put_object checks a name already there)."""
        self.session.put_object(self._tmp(), self.p("manifests", manifest_id), blob)

    def _parent(self, parent: Version | None) -> tuple[r2.Resolved | None, list[str]]:
        """The base version resolved, when it is format 2 and readable (else a full manifest)."""
        if parent is None:
            return None, []
        try:
            return self.resolve_manifest(parent.manifest, parent.version)
        except errors.AreaCorrupt:
            return None, []
        finally:
            self._forget()  # freed with `base` as the commit goes on

    def _patch_files(self, snap: LocalSnapshot, base: r2.Resolved | None, writer: PackWriter,
                     progress: Callable[[int], None] | None) -> tuple[m2.PatchFile, ...]:
        opened: dict[Path, BinaryIO] = {}
        seen = IdIndex(sum(len(f.chunks) for f in snap.manifest.files))  # placed or known before
        try:
            return tuple(self._patch_entry(snap, number, base, seen, opened, writer, progress)
                         for number in range(len(snap.manifest.files)))
        finally:
            for fh in opened.values():
                fh.close()

    def _patch_entry(self, snap: LocalSnapshot, number: int, base: r2.Resolved | None, seen: IdIndex,
                     opened: dict[Path, BinaryIO], writer: PackWriter,
                     progress: Callable[[int], None] | None) -> m2.PatchFile:
        """One file's ops: the parent's same entry copied, a chunk stored before named, a new
        one read from the file (by its place, no index of ids) and packed.

        A file the parent lacks (nearly every chunk new: a file added to a folder; a first
        share takes `upload_scanning` instead) is read again whole and checked against the
        scan's SHA-256 before its ops are returned; else each new chunk is checked against its
        id. Either way, no manifest names bytes the scan did not hash."""
        entry = snap.manifest.files[number]
        ops, ids = m2.OpsBuilder(), entry.chunks
        before = base.lists().get(entry.path, ChunkIds()) if base is not None else ChunkIds()
        whole = snap.reread(number) if not before else None
        start, offset, known = seen.append_buffer(ids.raw), 0, len(before)
        try:
            for i, length in enumerate(entry.lengths):
                key = ids.key(i)
                first = seen.add(start + i) == start + i
                if i < known and before.key(i) == key:
                    ops.copy(i)
                elif not first or (base is not None and base.index.find(key) >= 0):
                    ops.stored(key)
                else:
                    self.check_interrupt()
                    if whole is not None:
                        data = whole.at(offset, length)
                    else:
                        path, data = snap.read_at(number, offset, length, opened)
                        snap.verify(key, path, data)  # here, not on the sealing threads: no GIL convoy
                    frame, at = writer.add(data)
                    ops.new(frame, at, key, length)
                    if progress:
                        progress(length)
                offset += length
            if whole is not None:
                whole.finish()
        finally:
            if whole is not None:
                whole.close()
        return m2.PatchFile(entry.path, entry.size, entry.mode, entry.mtime, entry.chunker, ops.ops())

    # --- reading ---------------------------------------------------------------------------------

    def download_format2(self, version: Version, target: Path,
                         progress: Callable[[int], None] | None = None) -> Manifest:
        """Receive a format-2 version into `target`: the local copy's chunks, then frames."""
        keys = self.require_keys()
        resolved, _chain = self.resolve_manifest(version.manifest, version.version)
        self._forget()  # `resolved` is freed when this returns

        def count(n: int) -> None:
            self.stats.bytes_downloaded += n

        def remote(missing: array[int]) -> Iterator[tuple[int, bytes]]:
            for batch in _batches(resolved, missing):  # id -> position: no id looked up per chunk
                where = {cid: resolved.loc_at(pos) for cid, pos in batch.items()}
                for cid, data in read_chunks(self.session, self.p, keys, where, count):
                    self.check_interrupt()
                    self.stats.chunks_downloaded += 1
                    if progress:
                        progress(len(data))
                    yield batch[cid], data

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

    def held_manifest(self, target: Path) -> Manifest | None:
        """The manifest of the format-2 version this computer holds at `target`, when it is
        cached here (no round trip): a close cuts each file again with the chunker named
        there, so a file that grew past a size keeps its chunks (the commit resolves the same
        manifest next, from memory)."""
        held = self._held().get(str(Path(target).absolute()))
        found = self._cached(held) if held else None
        return found[0].manifest if found is not None else None

    def _local_chunks(self, target: Path, wanted: r2.Resolved) -> LocalChunks:
        """Where the local copy may hold each chunk: the layout of the version this computer
        holds (when its manifest is cached), else the same place in the same file. Each one is
        verified before use, so a local copy changed since costs only its chunks."""
        local = LocalChunks()
        held = self._held().get(str(Path(target).absolute()))
        found = self._cached(held) if held else None
        self._forget()
        layouts = [found[0].manifest] if found is not None else []
        del found  # its locations are not needed: free them before the layout grows
        for manifest in [*layouts, wanted.manifest]:
            for entry in manifest.files:
                path = Path(target) / entry.path if entry.path else Path(target)
                if path.is_file():  # else nothing to read there (a join): no entry per chunk
                    local.add(path, entry.chunks, entry.lengths)
        return local

    def objects_needed_format2(self, version: Version) -> set[str]:
        """Area-relative paths of a format-2 version's manifest chain and packs."""
        resolved, chain = self.resolve_manifest(version.manifest, version.version)
        self._forget()
        return {f"manifests/{mid}" for mid in chain} | {"/".join(pack_path(p)) for p in resolved.packs()}


BATCH = 8192  # chunks asked of read_chunks at a time: its bookkeeping stays small (whole frames)


def _batches(resolved: r2.Resolved, positions: array[int]) -> Iterator[dict[str, int]]:
    """The ids (hex) at `positions` (first occurrences in `resolved`) and their positions, in batches
    of about BATCH, a frame never split between two (fetched twice), frames in the order they
    were written (a first share's: the file's order, so a join writes it front to back)."""
    by_frame: dict[int, array[int]] = {}
    for pos in positions:
        by_frame.setdefault(resolved.frame_of(pos), array("I")).append(pos)
    batch: dict[str, int] = {}
    for frame in sorted(by_frame):
        batch.update((resolved.index.key_at(pos).hex(), pos) for pos in by_frame.pop(frame))
        if len(batch) >= BATCH:
            yield batch
            batch = {}
    if batch:
        yield batch
