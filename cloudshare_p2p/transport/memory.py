"""`MemoryFiles`: the `RemoteFiles` contract kept in memory, for tests and in-process logic.

Several handles may share one `MemoryFolder` (like several connections to one host); every
change holds the folder's lock, so exclusive create has exactly one winner across threads.
Faults are injected per handle with `cut`: the connection drops at a chosen operation and
every later call raises NetworkDown, as a real connection does; `reconnect` gives a new handle.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from cloudshare_p2p import errors

from ..i18n import _
from .contract import FileTooLarge, SmallFile, Stat
from .endpoint import Endpoint, remote_path

WHEN = ("before", "during", "after")


@dataclass
class _Node:
    data: bytes | None  # None: a folder
    mtime: int


def _key(path: str) -> str:
    """One spelling per name: no empty or "." parts, no leading "/"."""
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def _parent(key: str) -> str:
    return key.rpartition("/")[0]


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "No such file", path)


class MemoryFolder:
    """One in-memory folder tree (the host's disk); `clock` gives the server's time."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.nodes: dict[str, _Node] = {"": _Node(None, self.now())}

    def now(self) -> int:
        """The server's clock in whole seconds."""
        return int(self.clock())

    def set_mtime(self, path: str, mtime: int) -> None:
        """Backdate (or postdate) a file or folder, as `touch -d` on the host would."""
        with self.lock:
            self.node(path).mtime = int(mtime)

    def node(self, path: str) -> _Node:
        """The node under `path`; FileNotFoundError if none."""
        found = self.nodes.get(_key(path))
        if found is None:
            raise _missing(path)
        return found

    def file(self, path: str) -> bytes:
        """The content of the file `path`; FileNotFoundError / IsADirectoryError."""
        data = self.node(path).data
        if data is None:
            raise IsADirectoryError(errno.EISDIR, "Is a folder", path)
        return data

    def children(self, key: str) -> list[str]:
        """Keys directly inside the folder `key`."""
        return [k for k in self.nodes if k and _parent(k) == key]

    def put(self, path: str, node: _Node) -> None:
        """Store `node` under `path`; its parent must be a folder."""
        key = _key(path)
        parent = self.nodes.get(_parent(key))
        if parent is None or parent.data is not None:
            raise _missing(path)
        self.nodes[key] = node

    def delete_tree(self, key: str) -> None:
        """Drop `key` and everything under it."""
        for k in [k for k in self.nodes if k == key or k.startswith(key + "/")]:
            del self.nodes[k]


class MemoryFiles:
    """One "connection" to a `MemoryFolder`, honouring the `RemoteFiles` contract."""

    def __init__(self, folder: MemoryFolder | None = None, endpoint: Endpoint | None = None) -> None:
        self.folder = folder if folder is not None else MemoryFolder()
        self.endpoint = endpoint or Endpoint(user="memory", host="memory", base="")
        self.bytes_sent = 0
        self.bytes_received = 0
        self.operations = 0  # calls so far on this handle
        self._cut_at: int | None = None
        self._cut_when = "before"
        self._down_now = False

    def __enter__(self) -> MemoryFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release; later calls raise NetworkDown like a closed connection."""
        self._down_now = True

    def reconnect(self) -> MemoryFiles:
        """A fresh handle on the same folder (what `connect()` again would give)."""
        return MemoryFiles(self.folder, self.endpoint)

    # -- faults --

    def cut(self, after: int = 0, when: str = "before") -> None:
        """Drop the connection at the operation after the next `after` ones. `when`: "before"
        it takes effect, "during" it (an upload leaves half its bytes behind; a publish places
        nothing) or "after" it took effect (the answer is lost). Later calls all fail."""
        if when not in WHEN:
            raise ValueError(f"when must be one of {WHEN}")
        self._cut_at, self._cut_when = self.operations + after, when

    @contextlib.contextmanager
    def _op(self, what: str, staged: bool = False) -> Iterator[str | None]:
        """Count one operation; yields the fault point ("during") a `staged` operation must
        honour (for the others "during" is "before")."""
        number, self.operations = self.operations, self.operations + 1
        fault = self._cut_when if number == self._cut_at else None
        if self._down_now or fault == "before" or (fault == "during" and not staged):
            raise self._down(what)
        try:
            with self.folder.lock:
                yield fault
        except errors.NetworkDown:
            raise
        except Exception as exc:
            if fault == "after":  # the answer (an error) was lost with the connection
                raise self._down(what) from exc
            raise
        if fault == "after":
            raise self._down(what)

    def _down(self, what: str) -> errors.NetworkDown:
        self._down_now = True
        where = f"{self.endpoint.host}:{self.endpoint.port}"
        return errors.NetworkDown(_("connection to {where} lost during {what}: {reason}").format(
            where=where, what=what, reason="connection cut"))

    def _during(self, fault: str | None, what: str) -> None:
        if fault == "during":
            raise self._down(what)

    # -- the contract --

    def path(self, *parts: str) -> str:
        """Join the endpoint's base with `parts` using "/" (base "" -> relative path)."""
        return remote_path(self.endpoint.base, *parts)

    def stat(self, path: str) -> Stat | None:
        """Size, mtime, is_dir; None if missing."""
        with self._op("stat"):
            found = self.folder.nodes.get(_key(path))
            if found is None:
                return None
            return Stat(len(found.data or b""), found.mtime, found.data is None)

    def stat_many(self, paths: Sequence[str]) -> list[Stat | None]:
        """`stat` of each path (None: missing), as one operation."""
        with self._op("stat"):
            nodes = [self.folder.nodes.get(_key(p)) for p in paths]
            return [None if n is None else Stat(len(n.data or b""), n.mtime, n.data is None) for n in nodes]

    def listdir(self, path: str) -> list[str]:
        """Names in a folder; FileNotFoundError if missing."""
        with self._op("listdir"):
            if self.folder.node(path).data is not None:
                raise NotADirectoryError(errno.ENOTDIR, "Not a folder", path)
            return [k.rpartition("/")[2] for k in self.folder.children(_key(path))]

    def mkdir(self, path: str) -> bool:
        """True if created, False if the folder already existed."""
        with self._op("mkdir"):
            found = self.folder.nodes.get(_key(path))
            if found is not None:
                if found.data is None:
                    return False
                raise FileExistsError(errno.EEXIST, "A file is in the way", path)
            self.folder.put(path, _Node(None, self.folder.now()))
            return True

    def upload(self, path: str, src: bytes) -> int:
        """Create/truncate `path` with `src`; a cut "during" leaves half of it."""
        with self._op("upload", staged=True) as fault:
            self._write(path, bytes(src[: len(src) // 2]) if fault == "during" else bytes(src))
            self._during(fault, "upload")
        return len(src)

    def _write(self, path: str, data: bytes) -> None:
        found = self.folder.nodes.get(_key(path))
        if found is not None and found.data is None:
            raise IsADirectoryError(errno.EISDIR, "Is a folder", path)
        self.folder.put(path, _Node(data, self.folder.now()))
        self.bytes_sent += len(data)

    def read_bytes(self, path: str, max_size: int = 64 << 20) -> bytes:
        """The whole content of a (small) file; FileTooLarge past `max_size`."""
        with self._op("download"):
            data = self.folder.file(path)
            if len(data) > max_size:
                raise FileTooLarge(f"{path} is {len(data)} bytes, more than {max_size} allowed")
            self.bytes_received += len(data)
            return data

    def read_many(self, paths: Sequence[str], max_size: int) -> list[SmallFile | None]:
        """Each small file (None: missing; `data` None: over `max_size`), as one operation."""
        with self._op("download"):
            out: list[SmallFile | None] = []
            for path in paths:
                node = self.folder.nodes.get(_key(path))
                if node is None:
                    out.append(None)
                    continue
                data = self.folder.file(path)
                fits = len(data) <= max_size
                self.bytes_received += len(data) if fits else 0
                out.append(SmallFile(data if fits else None, Stat(len(data), node.mtime, False)))
            return out

    def write_record(self, path: str, data: bytes) -> int:
        """Create/truncate `path` with `data`; its mtime (a cut "during" leaves nothing usable)."""
        with self._op("upload", staged=True) as fault:
            self._write(path, bytes(data[: len(data) // 2]) if fault == "during" else bytes(data))
            self._during(fault, "upload")
            return self.folder.node(path).mtime

    def write_records(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """`write_record` of each, as one operation (a cut "during" leaves each one half written)."""
        with self._op("upload", staged=True) as fault:
            try:
                for path, data in items:
                    self._write(path, bytes(data[: len(data) // 2]) if fault == "during" else bytes(data))
            except OSError:
                for path, _data in items:  # none is left usable
                    self.folder.nodes.pop(_key(path), None)
                raise
            self._during(fault, "upload")
            return [self.folder.node(path).mtime for path, _data in items]

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each (offset, length) range of `path`, in order (short past the end)."""
        with self._op("download"):
            data = self.folder.file(path)
        for offset, length in ranges:
            piece = data[offset : offset + length]
            self.bytes_received += len(piece)
            yield piece

    def replace(self, src: str, dst: str) -> bool:
        """Atomic replace of the file `dst` by `src` (always offered here)."""
        with self._op("rename"):
            node = self.folder.node(src)
            self.folder.put(dst, node)
            del self.folder.nodes[_key(src)]
        return True

    def publish(self, tmp_path: str, final_path: str) -> bool:
        """Link tmp -> final unless final exists (one winner), then remove tmp."""
        with self._op("publish", staged=True) as fault:
            tmp = self.folder.node(tmp_path)
            try:
                self._during(fault, "publish")
                if self.folder.nodes.get(_key(final_path)) is not None:
                    return False
                self.folder.put(final_path, _Node(self.folder.file(tmp_path), tmp.mtime))
                return True
            finally:
                self.folder.nodes.pop(_key(tmp_path), None)

    def put_object(self, tmp_path: str, final_path: str, data: bytes | Sequence[bytes],
                   folder: str | None = None) -> bool:
        """Upload to tmp, then place it at final unless a complete copy is there; `folder`
        (and its parent) made if missing."""
        if not isinstance(data, bytes | bytearray | memoryview):
            data = b"".join(data)
        with self._op("publish", staged=True) as fault:
            for made in (_parent(_key(folder)), _key(folder)) if folder else ():
                if made and made not in self.folder.nodes:
                    self.folder.put(made, _Node(None, self.folder.now()))
            self._write(tmp_path, bytes(data))
            try:
                self._during(fault, "publish")
                found = self.folder.nodes.get(_key(final_path))
                if found is not None and found.data is not None and len(found.data) == len(data):
                    return False
                if found is not None and found.data is None:
                    raise IsADirectoryError(errno.EISDIR, "Is a folder", final_path)
                self.folder.put(final_path, _Node(bytes(data), self.folder.now()))
                return True
            finally:
                self.folder.nodes.pop(_key(tmp_path), None)

    def publish_object(self, tmp_path: str, final_path: str, size: int) -> bool:
        """Place the temp file of `size` bytes at final unless a complete copy is there."""
        with self._op("publish", staged=True) as fault:
            try:
                data = self.folder.file(tmp_path)
                if len(data) != size:
                    raise errors.TransferError(_("the temporary file {path} holds {got}, not {size} bytes: "
                                                 "not published").format(
                        path=tmp_path, got=_("{size} bytes").format(size=len(data)), size=size))
                self._during(fault, "publish")
                found = self.folder.nodes.get(_key(final_path))
                if found is not None and found.data is not None and len(found.data) == size:
                    return False
                if found is not None and found.data is None:
                    raise IsADirectoryError(errno.EISDIR, "Is a folder", final_path)
                self.folder.put(final_path, _Node(data, self.folder.now()))
                return True
            finally:
                self.folder.nodes.pop(_key(tmp_path), None)

    def object_complete(self, final_path: str, size: int) -> bool | None:
        """None: nothing there; True: a file of exactly `size` bytes; False: anything else."""
        found = self.stat(final_path)
        if found is None:
            return None
        return not found.is_dir and found.size == size

    def remove(self, path: str) -> None:
        """Delete a file; FileNotFoundError if missing."""
        with self._op("remove"):
            self.folder.file(path)
            del self.folder.nodes[_key(path)]

    def rename(self, src: str, dst: str) -> None:
        """Move a file or folder to a free name (never overwrites)."""
        with self._op("rename"):
            old, new = _key(src), _key(dst)
            self.folder.node(src)
            if new in self.folder.nodes:
                raise FileExistsError(errno.EEXIST, "Name taken", dst)
            moved = {k: n for k, n in self.folder.nodes.items() if k == old or k.startswith(old + "/")}
            self.folder.put(dst, moved[old])
            self.folder.delete_tree(old)
            for k, n in moved.items():
                self.folder.nodes[new + k[len(old):]] = n

    def remove_tree(self, path: str) -> None:
        """Delete a folder recursively; nothing there is fine."""
        with self._op("remove_tree"):
            self.folder.delete_tree(_key(path))

    def server_now(self, scratch_dir: str) -> int:
        """The folder's clock, read through a probe file as the real host does."""
        probe = f"{scratch_dir.rstrip('/')}/.clock-{uuid.uuid4().hex}"
        with self._op("create"):
            self.folder.put(probe, _Node(b"", self.folder.now()))
            mtime = self.folder.nodes.pop(_key(probe)).mtime
        return mtime
