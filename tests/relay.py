"""A TCP relay on 127.0.0.1 for fault tests: cut connections after N bytes, or go silent.

    relay = Relay(server.port)
    port = relay.start()          # connect to 127.0.0.1:port instead of the server
    relay.cut_after(1 << 20)      # the next MiB in either direction passes, then every
                                  # connection is reset (like a pulled cable); once
    relay.cancel_cut()            # disarm a cut that has not fired
    relay.go_silent()             # forward nothing from now on (connections stay open)
    relay.resume()
    relay.stop()

One thread serves every connection (a selector loop), so the relay never holds more than
one thread, at most `max_connections` pairs of sockets, and lives at most `lifetime` seconds.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from typing import Literal

Direction = Literal["up", "down", "both"]
_SELECT_TICK = 0.05
_SEND_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 5.0
_RECV_SIZE = 64 * 1024


class _Pair:
    """One relayed connection: the client's socket and ours to the target."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client


class Relay:
    """Forwards 127.0.0.1:<port> to target_host:target_port, with faults on request."""

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        *,
        max_connections: int = 16,
        lifetime: float = 600.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.lifetime = lifetime
        self.port = 0
        self.cuts = 0  # how many times cut_after fired
        self.bytes_up = 0  # client -> target, forwarded
        self.bytes_down = 0  # target -> client, forwarded
        self._lock = threading.Lock()
        self._budget: int | None = None
        self._direction: Direction = "both"
        self._silent = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, _Pair] = {}
        self._selector = selectors.DefaultSelector()

    # --- control (any thread) ---

    def start(self) -> int:
        """Listen on a free port of 127.0.0.1 and start forwarding; returns the port."""
        if self._thread is not None:
            raise RuntimeError("relay already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(self.max_connections)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._selector.register(listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name=f"relay-{self.port}", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Close every connection and the listener; waits (bounded) for the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                raise RuntimeError("relay thread did not stop within 5 s")
        self._close_all()
        if self._listener is not None:
            self._listener.close()
        self._selector.close()

    def cut_after(self, nbytes: int, direction: Direction = "both") -> None:
        """Forward `nbytes` more bytes in `direction` ("up" = client to target, "down", or
        "both" counting either), then reset every open connection. Fires once; connections
        made afterwards are forwarded normally."""
        if nbytes < 0 or direction not in ("up", "down", "both"):
            raise ValueError("cut_after needs nbytes >= 0 and direction up, down or both")
        with self._lock:
            self._budget, self._direction = nbytes, direction

    def cancel_cut(self) -> None:
        """Disarm a cut_after that has not fired yet."""
        with self._lock:
            self._budget = None

    def go_silent(self) -> None:
        """From now on read and drop everything, both ways: the peers see a silent network."""
        with self._lock:
            self._silent = True

    def resume(self) -> None:
        """Forward again (data dropped while silent stays lost)."""
        with self._lock:
            self._silent = False

    @property
    def connections(self) -> int:
        """Relayed connections open now."""
        return len(self._pairs) // 2

    def __enter__(self) -> Relay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the relay thread ---

    def _serve(self) -> None:
        end = time.monotonic() + self.lifetime
        while not self._stopping.is_set() and time.monotonic() < end:
            for key, _ in self._selector.select(_SELECT_TICK):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif sock in self._pairs:  # may have been closed by a cut in this round
                    self._forward(sock)
        self._close_all()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if len(self._pairs) // 2 >= self.max_connections:
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=_CONNECT_TIMEOUT)
        except OSError:
            _reset(client)
            return
        pair = _Pair(client, upstream)
        for s in (client, upstream):
            s.settimeout(_SEND_TIMEOUT)  # bounds sendall; reads happen only when readable
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pairs[s] = pair
            self._selector.register(s, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        pair = self._pairs[sock]
        try:
            data = sock.recv(_RECV_SIZE)
        except OSError:
            data = b""
        if not data:
            self._close(pair)
            return
        up = sock is pair.client
        with self._lock:
            if self._silent:
                return
            cut = False
            if self._budget is not None and self._direction in ("both", "up" if up else "down"):
                if len(data) >= self._budget:
                    data, cut = data[: self._budget], True
                    self._budget = None
                    self.cuts += 1
                else:
                    self._budget -= len(data)
        try:
            pair.peer(sock).sendall(data)
        except OSError:
            self._close(pair)
            return
        if up:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        if cut:
            self._close_all()

    def _close(self, pair: _Pair, *, reset: bool = False) -> None:
        for s in (pair.client, pair.upstream):
            if self._pairs.pop(s, None) is not None:
                try:
                    self._selector.unregister(s)
                except (KeyError, ValueError, OSError):
                    pass
            if reset:
                _reset(s)
            else:
                s.close()

    def _close_all(self) -> None:
        for pair in list({id(p): p for p in self._pairs.values()}.values()):
            self._close(pair, reset=True)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (linger 0), as a cut line looks to a peer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
