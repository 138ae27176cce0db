"""The data (`chunks/`, `manifests/`, `tmp/`): upload a snapshot, commit it under the lock, receive a version.

Chunks and manifests are sealed objects named by their keyed hash; a commit is a log entry
naming a manifest, appended only while our lease holds, so the data builds on `LockFolder`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from .. import crypto, errors
from ..i18n import _
from ..snapshot import CHUNK_SIZE, PER_FILE, ChunkCache, LocalSnapshot, Manifest, restore
from ..snapshot.scan import write_format
from . import floor
from .format2 import Format2, body_version
from .model import Grant, Party, Version
from .records import check_note


def same_content(a: Manifest, b: Manifest) -> bool:
    """Same files with the same bytes (modes and times aside)."""
    return a.kind == b.kind and [(f.path, f.chunks) for f in a.files] == [(f.path, f.chunks) for f in b.files]


HELD_MANIFEST_MAX = 1 << 20  # a manifest up to this size travels with its commit entry


class DataStore(Format2):
    """The area's snapshots: chunks and manifests up and down, versions committed to the log."""

    _body_read: tuple[str, bytes] | None = None  # a manifest body read_manifest hands to resolving
    _manifest_held: tuple[str, bytes] | None = None  # a commit's manifest, placed with its entry
    _holding_manifest = False

    # --- sending ---------------------------------------------------------------------------

    def upload_snapshot(self, snap: LocalSnapshot, cache: ChunkCache | None = None,
                        progress: Callable[[int], None] | None = None, *,
                        parent: Version | None = None) -> str:
        """Upload the chunks the area lacks, then the manifest; returns the manifest id.

        A snapshot cut for format 2 goes into packs, its manifest a patch of `parent`'s."""
        if snap.manifest.chunker == PER_FILE:
            return self.upload_format2(snap, parent, progress)
        keys = self.require_keys()
        made_dirs: set[str] = set()
        for chunk_id in sorted(snap.manifest.chunk_ids()):
            self.check_interrupt()
            path = self._chunk_path(chunk_id)
            found = self.session.stat(path)
            if found is not None and cache is not None and cache.has(chunk_id):
                self.stats.chunks_skipped += 1  # verified here before: objects are never torn later
                continue
            plain = snap.read_chunk(chunk_id)
            blob = crypto.seal(keys, crypto.KIND_CHUNK, chunk_id, plain)
            if found is not None and not found.is_dir and found.size == len(blob):
                self.stats.chunks_skipped += 1  # complete (checked by size, never trusted by name)
                continue
            if chunk_id[:2] not in made_dirs:
                self.session.mkdir(self.p("chunks", chunk_id[:2]))
                made_dirs.add(chunk_id[:2])
            self.session.put_object(self._tmp(), path, blob)  # a torn one is replaced
            self.stats.chunks_uploaded += 1
            self.stats.bytes_uploaded += len(blob)
            if cache is not None:
                cache.put(chunk_id, plain)
            if progress:
                progress(len(plain))
        body = snap.manifest.to_json_bytes()
        manifest_id = crypto.chunk_id(keys, body)
        blob = crypto.seal(keys, crypto.KIND_MANIFEST, manifest_id, body)
        if self.session.object_complete(self.p("manifests", manifest_id), len(blob)) is not True:
            self.session.put_object(self._tmp(), self.p("manifests", manifest_id), blob)
            self.stats.bytes_uploaded += len(blob)
        return manifest_id

    def commit(self, grant: Grant, party: Party, snap: LocalSnapshot, note: str = "",
               cache: ChunkCache | None = None, progress: Callable[[int], None] | None = None,
               *, base: int) -> int:
        """Publish a new version built on version `base` (0: none) under our lease.

        Returns its number. `Fenced` if a newer holder exists; `StaleBase` if `base` is not
        the newest version (the work must be kept aside, never published over newer data).
        A retry after a commit that was published but not recorded returns that version.
        """
        note = check_note(note)
        self.ensure_holding(grant, party)
        newest = self._newest_known(grant)
        sent = self._check_base(base, snap.manifest, newest)
        if sent is not None:
            return sent
        if snap.manifest.chunker == PER_FILE and not self.format2_ready():
            snap = LocalSnapshot.scan(snap.root, self.require_keys(), format=1)  # the host stays format 1

        def upload() -> tuple[str, LocalSnapshot]:
            return self.upload_snapshot(snap, cache, progress, parent=newest if base else None), snap

        return self._publish_version(grant, party, upload, note, base)[0]

    def commit_first(self, grant: Grant, party: Party, root: Path, note: str = "",
                     cache: ChunkCache | None = None, progress: Callable[[int], None] | None = None,
                     ) -> tuple[int, LocalSnapshot]:
        """Publish `root` as the area's first version under our lease: scanned and packed in
        one pass (format 2, `upload_scanning`); the version and the snapshot. Where that does
        not apply (a version is there already, format 1 is asked for, the host stays format
        1) it is scanned, then committed as `commit` does with base 0."""
        note = check_note(note)
        self.ensure_holding(grant, party)
        newest = self._newest_known(grant)
        if newest is not None or write_format() != 2 or not self.format2_ready():
            one = newest is None and write_format() == 2  # format2_ready() said no: scanned once, as format 1
            snap = LocalSnapshot.scan(root, self.require_keys(), format=1 if one else None)
            return self.commit(grant, party, snap, note, cache, progress, base=0), snap
        return self._publish_version(grant, party, lambda: self.upload_scanning(root, progress),
                                     note, 0)

    def _publish_version(self, grant: Grant, party: Party, upload: Callable[[], tuple[str, LocalSnapshot]],
                         note: str, base: int) -> tuple[int, LocalSnapshot]:
        """Upload (its manifest held back to travel with the entry), check the lease again,
        append the commit entry on `base`; the version and the snapshot sent. A StaleBase
        whose newest version already is our copy (a retried commit) is that version."""
        self._holding_manifest, self._manifest_held = True, None
        try:
            manifest_id, snap = upload()
        finally:
            self._holding_manifest = False
        held, self._manifest_held = self._manifest_held, None
        self.ensure_holding(grant, party)  # a long upload may have outlived a short lease
        try:
            return self._commit_entry(grant, party, manifest_id, snap.manifest.total_size(), note, None, base,
                                      held), snap
        except errors.StaleBase:  # the log had moved on: our copy may be the newest already
            sent = self._check_base(base, snap.manifest, self.newest())
            if sent is None:
                raise
            return sent, snap

    def _newest_known(self, grant: Grant) -> Version | None:
        """The newest version as this computer knows the log, when it knows it up to the grant's
        own fence at least (nobody else appends while we hold the lock; the append's checks
        decide anyway): no round trip. Else the log is read."""
        head = floor.log_start(self)
        if not 0 < grant.fence_seq <= head:
            return self.newest()
        self._head_read = head  # the append's first try goes to head + 1
        versions = self.view_upto(head).versions
        return versions[-1] if versions else None

    def _check_base(self, base: int, manifest: Manifest, newest: Version | None) -> int | None:
        """None if `base` is the newest version; the newest version's number if our copy
        already is it (sent by an interrupted close); else `StaleBase`."""
        if (newest.version if newest else 0) == base:
            return None
        if newest is not None and same_content(self.read_manifest(newest), manifest):
            return newest.version
        raise errors.StaleBase(base, newest.version if newest else 0)

    def recommit(self, grant: Grant, party: Party, old: Version, note: str = "") -> int:
        """Make an old version the newest again (a new commit built on the newest; nothing is deleted)."""
        note = check_note(note)
        self.ensure_holding(grant, party)
        self.read_manifest(old)  # verify it is still complete and readable
        newest = self.newest()
        base = newest.version if newest else 0
        return self._commit_entry(grant, party, old.manifest, old.size, note, old.version, base)

    def _place_manifest(self, manifest_id: str, blob: bytes) -> None:
        """During a commit, a small manifest is held back and placed by the entry's first try,
        its temp file written with the entry's (two round trips fewer); else placed now."""
        if self._holding_manifest and len(blob) <= HELD_MANIFEST_MAX:
            self._manifest_held = (manifest_id, blob)
        else:
            super()._place_manifest(manifest_id, blob)

    def _commit_entry(self, grant: Grant, party: Party, manifest_id: str, size: int, note: str,
                      restored_from: int | None, base: int, held: tuple[str, bytes] | None = None) -> int:
        entry = {
            "kind": "commit", "gen": grant.lease.generation, "session": grant.session,
            "writer": party.as_dict(), "manifest": manifest_id, "size": size,
            "note": note, "restored_from": restored_from, "base": base,
        }
        with_object = (self.p("manifests", held[0]), held[1]) if held is not None else None
        seq = self._append(entry, grant, base, with_object=with_object)
        version = next((v.version for v in self.view_upto(seq).versions if v.seq == seq), None)
        if version is None:  # only a forged or out-of-order fence can make it invalid
            raise errors.Fenced(_("a newer holder fenced the log; your version does not count"))
        return version

    # --- receiving ---------------------------------------------------------------------------

    def read_manifest(self, version: Version) -> Manifest:
        """The verified manifest of `version` (AreaCorrupt if it is missing), either format."""
        found = self._cached(version.manifest)
        if found is not None:
            return found[0].manifest
        body = self._manifest_body(version.manifest, version.version)
        if body_version(body) == 2:
            self._body_read = (version.manifest, body)  # resolving starts from it: not read twice
            try:
                return self.resolve_manifest(version.manifest, version.version)[0].manifest
            finally:
                self._body_read = None
        return Manifest.from_json_bytes(body)

    def _manifest_body(self, manifest_id: str, number: int) -> bytes:
        """A manifest's verified plaintext; the one `read_manifest` just read is not read again."""
        if self._body_read is not None and self._body_read[0] == manifest_id:
            body, self._body_read = self._body_read[1], None
            return body
        return super()._manifest_body(manifest_id, number)

    def objects_needed(self, version: Version) -> set[str]:
        """Area-relative paths of every manifest, pack and version-1 chunk `version` needs."""
        manifest = self.read_manifest(version)
        if manifest.chunker == PER_FILE:
            return self.objects_needed_format2(version)
        chunks = {f"chunks/{cid[:2]}/{cid}" for cid in manifest.chunk_ids()}
        return {f"manifests/{version.manifest}"} | chunks

    def fetch_chunk(self, chunk_id: str, cache: ChunkCache | None = None) -> bytes:
        """A verified plaintext chunk, from the cache when it has it."""
        keys = self.require_keys()
        if cache is not None:
            data = cache.get(chunk_id)
            if data is not None:
                self.stats.chunks_cached += 1
                return data
        try:
            blob = self.session.read_bytes(self._chunk_path(chunk_id), CHUNK_SIZE + (1 << 16))
        except FileNotFoundError:
            raise errors.AreaCorrupt(_("chunk {chunk_id}… is missing from the area").format(
                chunk_id=chunk_id[:12])) from None
        plain = crypto.open_sealed(keys, crypto.KIND_CHUNK, chunk_id, blob, max_plain=CHUNK_SIZE)
        crypto.verify_chunk(keys, chunk_id, plain)
        self.stats.chunks_downloaded += 1
        self.stats.bytes_downloaded += len(blob)
        if cache is not None:
            cache.put(chunk_id, plain)
        return plain

    def download(self, version: Version, target: Path, cache: ChunkCache | None = None,
                 progress: Callable[[int], None] | None = None) -> Manifest:
        """Receive `version` into `target`: verified first, then swapped in atomically."""
        manifest = self.read_manifest(version)
        if manifest.chunker == PER_FILE:
            return self.download_format2(version, target, progress)
        keys = self.require_keys()

        def fetch(chunk_id: str) -> bytes:
            self.check_interrupt()
            data = self.fetch_chunk(chunk_id, cache)
            if progress:
                progress(len(data))
            return data

        restore(manifest, target, fetch, keys)
        return manifest

    # --- housekeeping ------------------------------------------------------------------------

    def sweep_tmp(self, max_age: int = 86400, limit: int = 200) -> int:
        """Remove temp files a day old or more (abandoned uploads); returns how many."""
        now, removed = self.server_now(), 0
        for name in sorted(self.session.listdir(self.p("tmp")))[:limit]:
            st = self.session.stat(self.p("tmp", name))
            if st is not None and not st.is_dir and st.mtime < now - max_age:
                with suppress(FileNotFoundError):
                    self.session.remove(self.p("tmp", name))
                    removed += 1
        return removed
