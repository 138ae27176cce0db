"""A first share's scan and packing in a second process, so that the upload has a core of its own.

In one process the scan (reading, FastCDC, chunk ids, SHA-256, sealing, pack names) and
paramiko's per-packet work take turns at the GIL: a 256 MB first share used one core and a
half of another's idle time (issue 11: 0.55x of `sftp`). A large first share (`wanted`)
therefore runs `LocalSnapshot.scan` with `FirstPacking` in a child Python process started
from this one (`sys.executable`, this very package); this process only uploads the packs it
hands over and publishes the version. Nothing else changes: the same scan, the same packs and
ids, the same refusal of a file changed while it was read.

The child talks over its own pipes, never the command line or the environment (the data key
goes over its stdin). Messages from the child are `tag` (1 byte), `size` (8 bytes, big
endian) and `size` bytes:

- ``R``: ready (its imports done), empty;
- ``P``: one pack: its id (64 hex), the plaintext bytes cut so far (8 bytes), the count of
  its frames (4 bytes) and each frame's length (8 bytes each), then the frames;
- ``D``: done: the pickled `Result`;
- ``E``: failed: the pickled error (`_error_state`).

A child that cannot start (no ``R``) leaves the share to this process, as before; a child
that ends early is an error naming its exit code. The child ignores Ctrl-C: the parent stops
it at its next pack (`check_interrupt`) and ends it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import crypto, errors
from ..i18n import _
from ..snapshot.manifest2 import Frame, Op
from ..snapshot.scan import LocalSnapshot, data_size

log = logging.getLogger(__name__)

ENV = "CLOUDSHARE_PACKING_PROCESS"
"""``0`` keeps every share in one process; ``1`` uses the packing process for any size."""
MIN_SIZE = 64 << 20
"""A first share of at least this many bytes is packed by a child process: below it, starting
one (about 0.05 s here, more on Windows) costs more than the second core saves (about 1 ms/MB)."""
PIPE_SIZE = 1 << 20  # Linux: the child's pipe holds 1 MiB, not 64 KiB (fewer switches per pack)
_HEADER = struct.Struct(">cQ")
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
    if setting == "0" or getattr(sys, "frozen", False):
        return False
    return setting == "1" or data_size(root) >= MIN_SIZE


class PackingProcess:
    """The child (see the module docstring): `start`, then `packs`, then `result`; `close`
    always (it ends a child still running)."""

    def __init__(self, command: list[str] | None = None) -> None:
        self._command = command or _child_command()
        self._proc: subprocess.Popen[bytes] | None = None
        self.result: Result | None = None

    def spawn(self) -> bool:
        """Start the child (it imports, then waits for its job); False if it cannot start."""
        if self._proc is not None:
            return True
        try:
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except (OSError, ValueError) as exc:
            log.warning("the packing process did not start (%s); packing in this process", exc)
            return False
        assert self._proc.stdout is not None
        _widen(self._proc.stdout)
        return True

    def start(self, keys: crypto.Keys, root: Path) -> bool:
        """Hand the child (started now unless `spawn` did) its job; False if it could not
        take it (the share is packed in this process)."""
        if not self.spawn():
            return False
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        try:
            job = pickle.dumps((keys.data_key, os.fspath(root)), protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.write(struct.pack(">I", len(job)) + job)
            self._proc.stdin.close()
            tag, _body = _read_message(self._proc.stdout)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("the packing process did not start (%s); packing in this process", exc)
            self.close()
            return False
        if tag != b"R":
            log.warning("the packing process said %r first; packing in this process", tag)
            self.close()
            return False
        return True

    def packs(self) -> Iterator[tuple[str, list[bytes], int]]:
        """Each pack as the child hands it over: (id, frames, plaintext bytes cut so far); then
        `result` is set. The child's error is raised here."""
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        while True:
            tag, body = self._next(stream)
            if tag == b"P":
                yield _pack(body, stream)
            elif tag == b"D":
                self.result = pickle.loads(body)  # noqa: S301 - our own child, over its own pipe
                return
            elif tag == b"E":
                raise _error_from(pickle.loads(body))  # noqa: S301 - as above
            else:
                raise self._ended(f"an unknown message {tag!r}")

    def _next(self, stream: IO[bytes]) -> tuple[bytes, bytes]:
        try:
            return _read_message(stream)
        except (EOFError, ValueError) as exc:
            raise self._ended(str(exc)) from None

    def _ended(self, what: str) -> errors.CloudShareError:
        assert self._proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        log.error("the packing process ended early: %s; exit code %s", what, self._proc.returncode)
        return errors.CloudShareError(
            _("the packing process ended early (exit code {code}); nothing was published").format(
                code=self._proc.returncode),
            hint=_("try again; if it happens again, set {env}=0 to pack in one process").format(env=ENV))

    def close(self) -> None:
        """End the child if it still runs, and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        proc.wait()

    def __enter__(self) -> PackingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_early: dict[str, PackingProcess] = {}  # started by `prestart`, each for its data set


def prestart(root: Path) -> None:
    """Start the child for a coming first share of `root` now, if it will be `wanted`: its
    imports then overlap connecting and creating the area. Taken by `for_share`; one never
    taken ends with this process (at its exit, or when its stdin closes)."""
    key = os.fspath(root)
    if key in _early or not wanted(root):
        return
    child = PackingProcess()
    if child.spawn():
        if not _early:
            atexit.register(_end_early)
        _early[key] = child


def for_share(root: Path) -> PackingProcess:
    """The child `prestart` started for `root`, else a new one."""
    return _early.pop(os.fspath(root), None) or PackingProcess()


def _end_early() -> None:
    while _early:
        _early.popitem()[1].close()


def _child_command() -> list[str]:
    """This interpreter running `child_main` of this very package (wherever it was imported from)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
            "from cloudshare_p2p.area.packer import child_main; child_main()")
    return [sys.executable, "-c", code]


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
    pack_id, done, count = head[:64].decode("ascii"), *struct.unpack(">QI", head[64:76])
    lengths = struct.unpack(f">{count}Q", head[76:76 + 8 * count])
    return pack_id, [_read_exact(stream, n) for n in lengths], done


# --- the child ----------------------------------------------------------------------------


class _Pipe:
    """The child's end: whole messages, one writer at a time."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out, self._lock = out, threading.Lock()
        self.done = 0  # plaintext bytes cut so far

    def send(self, tag: bytes, body: bytes, frames: Sequence[bytes] = ()) -> None:
        with self._lock:
            self._out.write(_HEADER.pack(tag, len(body)) + body)
            for frame in frames:
                self._out.write(frame)
            self._out.flush()

    def pack(self, pack_id: str, frames: list[bytes]) -> None:
        lengths = [len(frame) for frame in frames]
        head = pack_id.encode("ascii") + struct.pack(f">QI{len(lengths)}Q", self.done, len(lengths), *lengths)
        self.send(b"P", head, frames)

    def count(self, n: int) -> None:
        self.done += n


def child_main() -> None:
    """The packing process: read the job from stdin, scan and pack, report on stdout."""
    import signal

    from .. import malloc
    from .packs import FirstPacking, PackWriter

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    malloc.tune()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing else may write into the messages
    pipe = _Pipe(out)
    stdin = sys.stdin.buffer
    (size,) = struct.unpack(">I", _read_exact(stdin, 4))
    data_key, root = pickle.loads(_read_exact(stdin, size))  # noqa: S301 - from our parent
    pipe.send(b"R", b"")
    keys = crypto.keys_from_data_key(data_key)
    writer = PackWriter(keys, pipe.pack)
    try:
        packing = FirstPacking(writer, lambda: None, pipe.count)
        snap = LocalSnapshot.scan(Path(root), keys, format=2, sink=packing.add)
        frames = writer.finish()
        ops = [packing.ops(n) for n in range(len(snap.manifest.files))]
        result = Result(dataclasses.replace(snap, _keys=None), ops, frames, writer.placed)
        pipe.send(b"D", pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as exc:  # every failure goes to the parent, which says it
        writer.abandon()
        with contextlib.suppress(OSError):
            pipe.send(b"E", pickle.dumps(_error_state(exc)))
    with contextlib.suppress(OSError):
        out.close()
    os._exit(0)


def _error_state(exc: BaseException) -> tuple[Any, ...]:
    """An error as plain values: ("cs", class name, message, hint) for ours, ("os", errno,
    text, file name) for the system's, else ("other", class name, message, traceback)."""
    if isinstance(exc, errors.CloudShareError):
        return ("cs", type(exc).__name__, str(exc), exc.__dict__.get("hint"))
    if isinstance(exc, OSError):
        return ("os", exc.errno, exc.strerror or str(exc), exc.filename)
    return ("other", type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))


def _error_from(state: tuple[Any, ...]) -> BaseException:
    """The exception `_error_state` described, raised as if the scan had run here."""
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
    log.error("the packing process failed:\n%s", state[3])
    return RuntimeError(f"the packing process failed: {state[1]}: {state[2]}")

