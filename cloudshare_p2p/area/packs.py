"""Format 2 packs on the host: new chunks written as sealed frames into packs, and read back.

`PackWriter` gathers a commit's new chunks into frames of at most 1 MiB of plaintext
(sealed on a second thread: zstd and AES release the GIL) and frames into packs of about
`PACK_TARGET`, each uploaded as one object named by its SHA-256 on an uploader thread while
the next pack is sealed. `read_chunks` fetches the
frames holding the wanted chunks with many requests in flight (`read_ranges`), opens each
frame and verifies every chunk against its id.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from .. import crypto, errors
from ..i18n import _
from ..snapshot.chunkids import IdIndex
from ..snapshot.manifest2 import MAX_CHUNK, Frame, Loc, Op, OpsBuilder

if TYPE_CHECKING:  # not at run time: the packing process (`packer`) needs no transport
    from ..transport import RemoteFiles

KIND_FRAME = b"frame"
FRAME_AAD_ID = ""  # a frame's AAD is "frame:" alone: later versions may not list its first chunk
OPEN_AHEAD = 4  # frames being opened ahead of the one consumed
PACK_TARGET = 8 << 20  # plaintext per pack (the format allows sealed packs up to 64 MiB)


def pack_path(pack_id: str) -> tuple[str, str, str]:
    """A pack's place in the area: ("packs", id[:2], id)."""
    return ("packs", pack_id[:2], pack_id)


def pack_id_of(blobs: Iterable[bytes]) -> str:
    """A pack's id: the SHA-256 (hex) of its frames, one after another."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(blob)
    return digest.hexdigest()


class PackUploader:
    """Places packs in the area, each one object at `pack_path(id)` (its folder made in the
    round trip of the temp file); counts the bytes sent."""

    def __init__(self, session: RemoteFiles, area_path: Callable[..., str], tmp: Callable[[], str]) -> None:
        self._session, self._p, self._tmp = session, area_path, tmp
        self._dirs: set[str] = set()
        self.bytes_sent = 0
        self.placed: set[str] = set()  # ids of the packs put

    def put(self, pack_id: str, blobs: list[bytes]) -> None:
        """Publish one pack, its frames sent one after another, never joined into one buffer."""
        folder, sub, name = pack_path(pack_id)
        made = self._p(folder, sub)
        self._session.put_object(self._tmp(), self._p(folder, sub, name), blobs,
                                 folder=None if made in self._dirs else made)
        self._dirs.add(made)
        self.placed.add(pack_id)
        self.bytes_sent += sum(len(blob) for blob in blobs)


Publish = Callable[[str, list[bytes]], None]
"""Where `PackWriter` hands each pack (its id and frames), on its uploader thread."""


class PackWriter:
    """The new chunks of one commit, in file order: frames, packs, uploads (`publish`, for
    instance `PackUploader.put`)."""

    def __init__(self, keys: crypto.Keys, publish: Publish) -> None:
        self._keys, self._publish = keys, publish
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="seal")
        self._uploader = ThreadPoolExecutor(1, thread_name_prefix="upload")
        self._uploading: Future[None] | None = None
        self._parts: list[bytes] = []  # the open frame's chunks
        self._checks: list[Callable[[], None]] = []  # their re-verifications, run while sealing
        self._size = 0
        self._sealing: list[Future[bytes]] = []  # the open pack's frames
        self._pack_plain = 0
        self._frames: list[tuple[int, int, int]] = []  # (pack number, offset, length)
        self._packs: dict[int, str] = {}  # pack number -> id, once uploaded
        self._pack_count = 0
        self.placed = 0  # chunks added

    def add(self, data: bytes, check: Callable[[], None] | None = None) -> tuple[int, int]:
        """Store one chunk: (frame number, offset in the frame's plaintext). `check` (it raises
        if `data` is not the chunk it should be) runs on a sealing thread before the frame is
        sealed: a failed check fails `finish`, and nothing of that frame is uploaded."""
        if self._size + len(data) > MAX_CHUNK:
            self._close_frame()
        where = (len(self._frames) + len(self._sealing), self._size)
        self._parts.append(data)
        self.placed += 1
        if check is not None:
            self._checks.append(check)
        self._size += len(data)
        return where

    def _close_frame(self) -> None:
        if not self._parts:
            return
        plain = b"".join(self._parts)
        checks = self._checks
        self._parts, self._checks, self._size = [], [], 0
        self._sealing.append(self._pool.submit(_seal_frame, self._keys, checks, plain))
        self._pack_plain += len(plain)
        if self._pack_plain >= PACK_TARGET:
            self._flush_pack()

    def _flush_pack(self) -> None:
        if not self._sealing:
            return
        blobs = [f.result() for f in self._sealing]
        self._sealing, self._pack_plain = [], 0
        offset, number = 0, self._pack_count
        self._pack_count += 1
        for blob in blobs:
            self._frames.append((number, offset, len(blob)))
            offset += len(blob)
        if self._uploading is not None:
            self._uploading.result()  # one pack on the wire while the next one is sealed
        self._uploading = self._uploader.submit(self._upload, number, blobs)
        del blobs

    def _upload(self, number: int, blobs: list[bytes]) -> None:
        """Name one pack and publish it (on the uploader thread: the only one publishing)."""
        pack_id = pack_id_of(blobs)
        self._publish(pack_id, blobs)
        self._packs[number] = pack_id
        del blobs  # an error caught by the caller keeps these frames alive until gc

    def finish(self) -> tuple[Frame, ...]:
        """Upload what is left; the frames written, numbered as `add` said."""
        try:
            self._close_frame()
            self._flush_pack()
            if self._uploading is not None:
                self._uploading.result()
        finally:
            self._pool.shutdown()
            self._uploader.shutdown()
        return tuple(Frame(self._packs[n], offset, length) for n, offset, length in self._frames)

    def abandon(self) -> None:
        """Stop sealing and uploading (after an error)."""
        self._pool.shutdown(cancel_futures=True)
        self._uploader.shutdown(cancel_futures=True)


class FirstPacking:
    """A scan's sink for a first version: each chunk not seen before in the snapshot is
    packed, and every file's ops are built as its chunks are cut."""

    def __init__(self, writer: PackWriter, interrupt: Callable[[], None],
                 progress: Callable[[int], None] | None) -> None:
        self._writer, self._interrupt, self._progress = writer, interrupt, progress
        self._ids = bytearray()  # every id cut, in order: the index's one growing buffer
        self._seen = IdIndex()
        self._seen.append_buffer(self._ids)
        self._ops: dict[int, OpsBuilder] = {}

    def add(self, number: int, chunk: bytes, key: bytes) -> None:
        ops = self._ops.get(number)
        if ops is None:
            ops = self._ops[number] = OpsBuilder()
        pos = len(self._ids) // len(key)
        self._ids += key
        if self._seen.add(pos) != pos:
            ops.stored(key)
            return
        self._interrupt()
        frame, at = self._writer.add(chunk)
        ops.new(frame, at, key, len(chunk))
        if self._progress:
            self._progress(len(chunk))

    def ops(self, number: int) -> tuple[Op, ...]:
        """File `number`'s ops (none for an empty file)."""
        ops = self._ops.get(number)
        return ops.ops() if ops is not None else ()


def _seal_frame(keys: crypto.Keys, checks: list[Callable[[], None]], plain: bytes) -> bytes:
    for check in checks:
        check()
    return crypto.seal(keys, KIND_FRAME, FRAME_AAD_ID, plain)


def read_chunks(session: RemoteFiles, area_path: Callable[..., str], keys: crypto.Keys,
                wanted: dict[str, Loc],
                count: Callable[[int], None] | None = None,
                only: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Each wanted chunk (id, plaintext), verified, read frame by frame, pack by pack (in the
    order `wanted` first names them, each pack's frames ascending); with `only`, just those
    ids of `wanted` (no copy of a large `wanted` needed)."""
    frames: dict[tuple[str, int, int], list[str]] = {}  # ids only: one reference per chunk
    for cid in wanted if only is None else only:
        loc = wanted[cid]
        frames.setdefault((loc.pack, loc.frame_offset, loc.frame_length), []).append(cid)
    by_pack: dict[str, list[tuple[int, int]]] = {}  # packs in the order first asked for
    for pack, offset, length in frames:
        by_pack.setdefault(pack, []).append((offset, length))
    for ranges in by_pack.values():
        ranges.sort()
    with ThreadPoolExecutor(2, thread_name_prefix="open") as pool:  # AES, zstd and HMAC release the GIL
        opening: deque[Future[list[tuple[str, bytes]]]] = deque()
        for pack, ranges in by_pack.items():
            for group in _ascending(ranges):
                for (offset, length), blob in zip(group, _read(session, area_path(*pack_path(pack)), group),
                                                  strict=True):
                    if count is not None:
                        count(len(blob))
                    wanted_here = frames.pop((pack, offset, length))
                    opening.append(pool.submit(_open_frame, keys, blob, length, wanted_here, wanted))
                    while len(opening) > OPEN_AHEAD:
                        yield from opening.popleft().result()
        while opening:
            yield from opening.popleft().result()


def _ascending(ranges: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    """Sorted ranges split so that none overlaps the one before it (a hostile manifest may)."""
    group: list[tuple[int, int]] = []
    for offset, length in ranges:
        if group and offset < group[-1][0] + group[-1][1]:
            yield group
            group = []
        group.append((offset, length))
    if group:
        yield group


def _read(session: RemoteFiles, path: str, ranges: list[tuple[int, int]]) -> Iterable[bytes]:
    try:
        yield from session.read_ranges(path, ranges)
    except FileNotFoundError:
        raise errors.AreaCorrupt(_("chunk {chunk_id}… is missing from the area").format(
            chunk_id=path.rsplit("/", 1)[-1][:12])) from None


def _open_frame(keys: crypto.Keys, blob: bytes, length: int, chunks: list[str],
                where: dict[str, Loc]) -> list[tuple[str, bytes]]:
    """The frame's wanted chunks, each verified against its id."""
    if len(blob) != length:
        raise errors.AreaCorrupt(_("chunk {chunk_id}… is missing from the area").format(
            chunk_id=chunks[0][:12]))
    plain = crypto.open_sealed(keys, KIND_FRAME, FRAME_AAD_ID, blob, max_plain=MAX_CHUNK)
    out = []
    for cid in sorted(chunks, key=lambda c: where[c].offset):  # in frame order: neighbours in the file
        loc = where[cid]
        piece = plain[loc.offset : loc.offset + loc.length]
        crypto.verify_chunk(keys, cid, piece)
        out.append((cid, piece))
    return out
