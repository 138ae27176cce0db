"""A first share's scan and packing in a second process, so that the upload has a core of its own.

In one process the scan (reading, FastCDC, chunk ids, SHA-256, sealing, pack names) and
paramiko's per-packet work take turns at the GIL: a 256 MB first share used about one core
(issue 11). A large first share (`wanted`) therefore runs `LocalSnapshot.scan` with
`FirstPacking` in a child Python process started from this one (`sys.executable -P`, this very
package, checked); this process only uploads the packs it hands over and publishes the version.
Nothing else changes: the same scan, the same packs and ids, the same refusal of a file changed
while it was read.

The job (data key, data set, language) goes over the child's stdin, never its command line or
environment (the password variables are removed from it). Messages from the child are `tag`
(1 byte), `size` (8 bytes, big endian) and `size` bytes:

- ``R``: ready, empty;
- ``P``: one pack: its id (64 hex), the bytes scanned so far (8 bytes), the count of its frames
  (4 bytes) and each frame's length (8 bytes each), then the frames themselves;
- ``S``: the bytes scanned so far (8 bytes), every `STATUS_EVERY` without a pack (duplicates);
- ``D``: done: the pickled `Result`;
- ``E``: failed: the error as plain values (`_error_state`).

A child that cannot start or is not ready within `START_WAIT` leaves the share to this
process, as before; one that ends early is an error that publishes nothing. The child runs in
a session (POSIX) or process group (Windows) of its own, so the terminal's Ctrl-C reaches only
this process, which stops the child (`close`) at once: a thread reads the pipe, the main thread
waits at most `POLL` between checks of Ctrl-C. The child ends when its stdin closes, so it never
outlives this process, even one killed.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import pickle
import queue
import re
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import crypto, errors, i18n
from ..i18n import _
from ..secretstore import SECRET_ENV
from ..snapshot.manifest2 import MAX_FRAME, MAX_PACK, Frame, Op
from ..snapshot.scan import LocalSnapshot, data_size, write_format

Handed = tuple[str | None, list[bytes], int]
"""What `PackingProcess.packs` yields: (pack id, frames, bytes scanned so far); no id and no
frames while the child scans duplicates."""

ENV = "CLOUDSHARE_PACKING_PROCESS"
"""``0`` keeps every share in one process; ``1`` uses the packing process for any size."""
MIN_SIZE = (256 if os.name == "nt" else 64) << 20
"""A first share of at least this many bytes is packed by a child process. The child starts as
the connection is made (`prestart`); on Linux it saves about 0.5 ms/MB. Windows starts
processes more slowly (and scans them): a larger size there, not measured."""
PIPE_SIZE = 1 << 20  # Linux: the child's pipe holds 1 MiB, not 64 KiB (fewer switches per pack)
START_WAIT = 30.0  # seconds for the child to be ready, else this process packs
POLL = 0.2  # seconds between checks of Ctrl-C while waiting for the child
STATUS_EVERY = 32 << 20  # scanned bytes between messages while no pack goes out
_HEADER = struct.Struct(">cQ")
_PACK_ID = re.compile(r"[0-9a-f]{64}")
_MAX_MESSAGE = 1 << 30  # a pack is at most 64 MiB sealed; a result grows with the ids (32 B/chunk)


@dataclass
class Result:
    """What the child found: the snapshot (no keys), each file's ops, the frames written."""

    snapshot: LocalSnapshot
    ops: list[tuple[Op, ...]]
    frames: tuple[Frame, ...]
    placed: int


def wanted(root: Path) -> bool:
    """True if a first share of `root` should be packed by a child process (`ENV`, `MIN_SIZE`)."""
    setting = os.environ.get(ENV, "").strip()
    if setting == "0" or getattr(sys, "frozen", False) or not sys.executable or write_format() != 2:
        return False
    return setting == "1" or data_size(root, enough=MIN_SIZE) >= MIN_SIZE


class PackingProcess:
    """The child (see the module docstring): `start`, then `packs`, then `result`; `close`
    always (it ends a child still running)."""

    def __init__(self, command: list[str] | None = None) -> None:
        self._command = command or _child_command()
        self._proc: subprocess.Popen[bytes] | None = None
        # one pack waits here: with the one being read, the one being uploaded and the one the
        # main thread holds while that upload ends, at most 4 packs (32 MiB) on this side
        self._inbox: queue.Queue[tuple[bytes, Any]] = queue.Queue(maxsize=1)
        self._closing = threading.Event()
        self.result: Result | None = None

    def spawn(self) -> bool:
        """Start the child (it imports, then waits for its job); False if it cannot start."""
        if self._proc is not None:
            return True
        try:
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k not in SECRET_ENV}, **_apart())
        except Exception:  # noqa: BLE001 - whatever stops a child from starting: this process packs
            return False
        assert self._proc.stdout is not None
        _widen(self._proc.stdout)
        return True

    def start(self, keys: crypto.Keys, root: Path, interrupt: Callable[[], None]) -> bool:
        """Hand the child (started now unless `spawn` did) its job; False if it is not ready
        within START_WAIT (the share is then packed in this process)."""
        if not self.spawn():
            return False
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        job = pickle.dumps((keys.data_key, os.fspath(root), i18n.language(), os.fspath(_package_dir())),
                           protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._proc.stdin.write(struct.pack(">I", len(job)) + job)
            self._proc.stdin.flush()  # stdin stays open: its end tells the child to stop
        except (OSError, ValueError):
            self.close()
            return False
        threading.Thread(target=self._read_all, args=(self._proc.stdout,), name="packer-read",
                         daemon=True).start()
        tag, _item = self._next(interrupt, time.monotonic() + START_WAIT)
        if tag != b"R":
            self.close()
            return False
        return True

    def packs(self, interrupt: Callable[[], None]) -> Iterator[Handed]:
        """What the child hands over, as it comes (`Handed`); then `result` is set. The child's
        error is raised here; `interrupt` (it raises on Ctrl-C) is called at least every POLL."""
        while True:
            tag, item = self._next(interrupt)
            if tag == b"P":
                yield item
            elif tag == b"S":
                yield None, [], item
            elif tag == b"D":
                self.result = pickle.loads(item)  # noqa: S301 - our own child, over its own pipe
                return
            elif tag == b"E":
                raise _error_from(pickle.loads(item))  # noqa: S301 - as above
            else:
                raise self._ended(str(item))

    def _next(self, interrupt: Callable[[], None], deadline: float | None = None) -> tuple[bytes, Any]:
        while True:
            try:
                return self._inbox.get(timeout=POLL)
            except queue.Empty:
                interrupt()
                if deadline is not None and time.monotonic() > deadline:
                    return b"late", "not ready in time"

    def _read_all(self, stream: IO[bytes]) -> None:
        """The reading thread: each message into the inbox, in order; at the end, why."""
        try:
            while True:
                tag, body = _read_message(stream)
                if tag == b"P":
                    item: Any = _pack(body, stream)
                elif tag == b"S":
                    (item,) = struct.unpack(">Q", body)
                elif tag in (b"R", b"D", b"E"):
                    item = body
                else:
                    self._put(b"end", f"an unknown message {tag!r}")
                    return
                if not self._put(tag, item) or tag in (b"D", b"E"):
                    return
        except BaseException as exc:  # noqa: BLE001 - whatever stops the reading ends the wait for it
            self._put(b"end", f"{type(exc).__name__}: {exc}")

    def _put(self, tag: bytes, item: Any) -> bool:
        while not self._closing.is_set():
            try:
                self._inbox.put((tag, item), timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _ended(self, what: str) -> errors.CloudShareError:
        code = None
        if self._proc is not None:
            if self._proc.stdin is not None:  # a child still waiting for us sees its end now
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
            try:
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
        error = errors.CloudShareError(
            _("the packing process ended early (exit code {code}); nothing was published").format(code=code),
            hint=_("try again; if it happens again, set {env}=0 to pack in one process").format(env=ENV))
        error.add_note(what)
        return error

    def close(self) -> None:
        """End the child if it still runs (its stdin closed, then killed), and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._closing.set()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()  # first: the reading thread holds stdout's lock until the child is gone
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()

    def __enter__(self) -> PackingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_early: dict[str, PackingProcess] = {}  # started by `prestart`, each for its data set


def prestart(root: Path) -> None:
    """Start the child for a coming first share of `root` now, if it will be `wanted`: its
    imports then overlap connecting and creating the area. Taken by `for_share`; one never
    taken ends with this process (at its exit, or when its stdin closes). Never raises: the
    share goes on without it."""
    try:
        key = os.fspath(root)
        if key in _early or not wanted(root):
            return
        child = PackingProcess()
        if child.spawn():
            _early[key] = child
            atexit.register(_end_early)
    except Exception:  # noqa: BLE001 - a data set the scan will refuse says so there
        return


def for_share(root: Path) -> PackingProcess | None:
    """The child `prestart` started for `root`, else a new one if `wanted`, else None."""
    early = _early.pop(os.fspath(root), None)
    if early is not None:
        return early
    return PackingProcess() if wanted(root) else None


def _end_early() -> None:
    atexit.unregister(_end_early)
    while _early:
        _early.popitem()[1].close()


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def _child_command() -> list[str]:
    """This interpreter, without the current folder on its path (-P), running `child_main` of
    this very package (its folder added last, so the standard library comes first)."""
    where = os.fspath(_package_dir().parent)
    code = (f"import sys; where = {where!r}; where in sys.path or sys.path.append(where); "
            "from cloudshare_p2p.area.packer import child_main; child_main()")
    return [sys.executable, "-P", "-c", code]


def _apart() -> dict[str, Any]:
    """Popen options that keep the terminal's Ctrl-C (and a window) away from the child."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _widen(stream: IO[bytes]) -> None:
    if sys.platform != "linux":  # F_SETPIPE_SZ is Linux's
        return
    import fcntl
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"{len(data)} of {size} bytes")
    return data


def _read_message(stream: IO[bytes]) -> tuple[bytes, bytes]:
    tag, size = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    if size > _MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes")
    return tag, _read_exact(stream, size)


def _pack(head: bytes, stream: IO[bytes]) -> tuple[str, list[bytes], int]:
    """A pack message's id, frames and count; ValueError unless the id is 64 hex digits and
    every frame, and the pack, within the format's bounds (the id becomes a path on the host)."""
    pack_id, done, count = head[:64].decode("ascii"), *struct.unpack(">QI", head[64:76])
    lengths = struct.unpack(f">{count}Q", head[76:76 + 8 * count])
    if not _PACK_ID.fullmatch(pack_id) or not all(0 < n <= MAX_FRAME for n in lengths) \
            or sum(lengths) > MAX_PACK:
        raise ValueError("a pack out of bounds")
    return pack_id, [_read_exact(stream, n) for n in lengths], done


# --- the child ----------------------------------------------------------------------------


class _Pipe:
    """The child's end: whole messages, one writer at a time."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out, self._lock = out, threading.Lock()
        self.done = 0  # bytes scanned so far
        self._told = 0

    def send(self, tag: bytes, body: bytes, frames: Sequence[bytes] = ()) -> None:
        with self._lock:
            self._out.write(_HEADER.pack(tag, len(body)) + body)
            for frame in frames:
                self._out.write(frame)
            self._out.flush()

    def pack(self, pack_id: str, frames: list[bytes]) -> None:
        lengths = [len(frame) for frame in frames]
        self._told = done = self.done
        head = pack_id.encode("ascii") + struct.pack(f">QI{len(lengths)}Q", done, len(lengths), *lengths)
        self.send(b"P", head, frames)

    def scanned(self, n: int) -> None:
        self.done += n
        if self.done - self._told >= STATUS_EVERY:
            self._told = self.done
            self.send(b"S", struct.pack(">Q", self.done))


def child_main() -> None:
    """The packing process: read the job from stdin, scan and pack, report on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    i18n.setup_language("en")  # click's messages routed now, while the parent connects
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing else may write into the messages
    stdin = sys.stdin.buffer
    try:
        (size,) = struct.unpack(">I", _read_exact(stdin, 4))
        data_key, root, lang, package = pickle.loads(_read_exact(stdin, size))  # noqa: S301 - our parent
    except (OSError, EOFError, ValueError, struct.error, pickle.UnpicklingError):
        os._exit(2)  # the parent went away, or is another program
    if Path(package) != _package_dir():
        os._exit(3)  # another copy of cloudshare: the parent packs itself
    threading.Thread(target=_end_with, args=(stdin,), name="parent-watch", daemon=True).start()
    _pack_job(_Pipe(out), data_key, Path(root), lang)
    with contextlib.suppress(OSError):
        out.close()
    os._exit(0)


def _end_with(stdin: IO[bytes]) -> None:
    """End this process when the parent closes our stdin (or is gone)."""
    with contextlib.suppress(OSError, ValueError):
        while stdin.read(1 << 12):
            pass
    os._exit(1)


def _pack_job(pipe: _Pipe, data_key: bytes, root: Path, lang: str) -> None:
    from .. import malloc
    from .packs import FirstPacking, PackWriter

    writer: PackWriter | None = None
    try:
        i18n.setup_language(lang)
        malloc.tune()
        keys = crypto.keys_from_data_key(data_key)
        pipe.send(b"R", b"")
        writer = PackWriter(keys, pipe.pack)
        packing = FirstPacking(writer, lambda: None, None)

        def sink(number: int, chunk: bytes, key: bytes) -> None:
            packing.add(number, chunk, key)
            pipe.scanned(len(chunk))

        snap = LocalSnapshot.scan(root, keys, format=2, sink=sink)
        frames = writer.finish()
        ops = [packing.ops(n) for n in range(len(snap.manifest.files))]
        result = Result(dataclasses.replace(snap, _keys=None), ops, frames, writer.placed)
        pipe.send(b"D", pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as exc:  # every failure goes to the parent, which says it
        if writer is not None:
            writer.abandon()
        with contextlib.suppress(OSError):
            pipe.send(b"E", pickle.dumps(_error_state(exc)))


def _error_state(exc: BaseException) -> tuple[Any, ...]:
    """An error as plain values: ("cs", class name, message, hint) for ours, ("os", errno,
    text, file name) for the system's, else ("other", class name, message, traceback)."""
    if isinstance(exc, errors.CloudShareError):
        return ("cs", type(exc).__name__, str(exc), exc.__dict__.get("hint"))
    if isinstance(exc, OSError):
        return ("os", exc.errno, exc.strerror or str(exc), exc.filename)
    return ("other", type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))


def _error_from(state: tuple[Any, ...]) -> BaseException:
    """The exception `_error_state` described, raised as if the scan had run here (an
    unexpected one carries the child's traceback as a note, for the error log)."""
    kind = state[0]
    if kind == "cs":
        cls = getattr(errors, state[1], None)
        if not (isinstance(cls, type) and issubclass(cls, errors.CloudShareError)):
            cls = errors.CloudShareError
        try:
            return cls(state[2], hint=state[3])
        except TypeError:
            return errors.CloudShareError(state[2], hint=state[3])
    if kind == "os":
        return OSError(state[1], state[2], state[3]) if state[1] is not None else OSError(state[2])
    error = RuntimeError(f"the packing process failed: {state[1]}: {state[2]}")
    error.add_note(f"in the packing process:\n{state[3]}")
    return error
