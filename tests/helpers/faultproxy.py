"""A loopback TCP proxy that can forward, freeze, blackhole and cut.

For fault tests: a receiver connects to the proxy instead of the server,
and the test changes what happens to the bytes in flight.

* ``forward`` (the default): bytes go both ways as they come.
* ``freeze``: nothing is read from either side any more; both TCP
  connections stay open and their buffers fill (a process that stopped,
  as far as the peers can tell).
* ``blackhole``: bytes are read and dropped in both directions; the
  connections stay open (a path that lost its route without a reset).
* ``cut_after(n)``: forward, then close both sides of a connection once *n*
  more bytes went from the server to the client (a connection cut in the
  middle of a message).
* ``refuse``: every connection is closed at once, new ones as soon as they
  are accepted (a service that is down behind a load balancer).
* :meth:`FaultProxy.reset`: close every connection now.

One thread serves all connections with ``selectors``; it only ever binds
127.0.0.1 and forwards to the target on loopback.  Closed with :meth:`close`
(or as a context manager), which also closes every connection.
"""

from __future__ import annotations

import selectors
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["FaultProxy"]

_CHUNK = 65536


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    #: server->client bytes forwarded so far
    down: int = 0
    #: close once `down` reaches this (None: never)
    cut_at: int | None = None
    pending: dict[socket.socket, bytes] = field(default_factory=dict)


class FaultProxy:
    """Listen on 127.0.0.1 (a free port) and forward to *target_port* on
    127.0.0.1."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._pairs: list[_Pair] = []
        self._mode = "forward"
        self._cut_after: int | None = None
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._closed = False
        #: connections accepted so far
        self.connections = 0
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()

    # ---- what the test controls ------------------------------------------------

    def forward(self) -> None:
        self._set_mode("forward")

    def freeze(self) -> None:
        self._set_mode("freeze")

    def blackhole(self) -> None:
        self._set_mode("blackhole")

    def refuse(self) -> None:
        self._set_mode("refuse")
        self.reset()

    def cut_after(self, nbytes: int) -> None:
        """Close each current connection (and new ones) once *nbytes* more
        bytes went from the server to the client."""
        with self._lock:
            self._cut_after = nbytes
            for pair in self._pairs:
                pair.cut_at = pair.down + nbytes
        self._wake()

    def reset(self) -> None:
        """Close every connection now (both sides)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._drop(pair)

    @property
    def mode(self) -> str:
        return self._mode

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(10)
        self.reset()
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- the forwarding thread -------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        with self._lock:
            self._mode = mode
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _drop(self, pair: _Pair) -> None:
        for s in (pair.client, pair.server):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._mode == "refuse":
            client.close()
            return
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, server)
        with self._lock:
            if self._cut_after is not None:
                pair.cut_at = self._cut_after
            self._pairs.append(pair)
            self.connections += 1
        self._sel.register(client, selectors.EVENT_READ, pair)
        self._sel.register(server, selectors.EVENT_READ, pair)

    def _run(self) -> None:
        while not self._closed:
            frozen = self._mode == "freeze"
            ready = self._sel.select(timeout=0.1)
            for key, _ in ready:
                sock = key.fileobj
                if sock is self._wake_r:
                    self._wake_r.recv(4096)
                elif sock is self._listener:
                    self._accept()
                elif not frozen:
                    self._pump(key.data, sock)   # type: ignore[arg-type]
            if frozen and ready:
                # Readable sockets are left unread: do not spin on them.
                self._wake_r.settimeout(0.05)
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
                self._wake_r.setblocking(False)

    def _pump(self, pair: _Pair, src: socket.socket) -> None:
        dst = pair.server if src is pair.client else pair.client
        try:
            data = src.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:                                # one side closed: close both
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            self._drop(pair)
            return
        if self._mode == "blackhole":
            return
        cut = False
        if src is pair.server and pair.cut_at is not None:
            room = pair.cut_at - pair.down
            if len(data) >= room:
                data, cut = data[:max(room, 0)], True
            pair.down += len(data)
        elif src is pair.server:
            pair.down += len(data)
        try:
            dst.setblocking(True)
            dst.sendall(data)
            dst.setblocking(False)
        except OSError:
            cut = True
        if cut:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            self._drop(pair)
