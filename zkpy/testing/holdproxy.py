"""A TCP proxy for client links that holds bytes instead of cutting connections.

Clients reach a server through it. `hold()` stops forwarding in both directions while every
connection stays open and every byte is kept, to be delivered in order by `release()`: a link
that stalls, so only the client's own read timeout notices, and a request sent during the stall
reaches the server late, possibly after its client gave up and moved to another server.
`move_clients()` makes that move happen at once: it holds the link, hangs up on every client (so
each reconnects elsewhere, with its last request still on this link) and keeps the requests
already read, delivering them to the server when the hold is released: the interleaving behind
ZooKeeper's SessionMoved (a client's write through server 1 applied after its next write through
server 2 unless the old server's request is refused). `late` counts chunks delivered to the
server after their client was gone.

Threads, not trio: scripts/jepsen.py drives blocking kazoo clients beside it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

__all__ = ["HoldingProxy"]

_HOST = "127.0.0.1"


class _Pair:
    def __init__(self, conn: socket.socket, up: socket.socket) -> None:
        self.conn, self.up = conn, up
        self.client_gone = False


class HoldingProxy:
    """Listens on a port of its own and forwards each connection to `target_port`."""

    def __init__(self, name: str, target_port: int, stopping: threading.Event) -> None:
        self.name, self.target_port, self.stopping = name, target_port, stopping
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.pairs: set[_Pair] = set()
        self.late = 0  # chunks delivered to the server after their client had gone
        self.held = 0  # bytes read from clients and not yet delivered
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((_HOST, 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept_loop, daemon=True, name=f"hold-{name}").start()

    # --- faults

    def hold(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    @property
    def holding(self) -> bool:
        return not self.open.is_set()

    def move_clients(self) -> int:
        """Hold the link and hang up on every client; returns how many were cut off. What they
        had sent stays held until `release()`."""
        self.hold()
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            pair.client_gone = True
            with contextlib.suppress(OSError):
                pair.conn.shutdown(socket.SHUT_RDWR)
        return len(pairs)

    def close(self) -> None:
        self.open.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._end(pair)

    # --- forwarding

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                ready, _, _ = select.select([self.listener], [], [], 0.25)
                if not ready:
                    continue
                conn, _ = self.listener.accept()
            except (OSError, ValueError):
                if self.stopping.is_set() or self.listener.fileno() < 0:
                    return
                continue
            try:
                up = socket.create_connection((_HOST, self.target_port), timeout=2.0)
            except OSError:  # the server is down: the client sees what it would see without us
                with contextlib.suppress(OSError):
                    conn.close()
                continue
            up.settimeout(None)
            for s in (conn, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(conn, up)
            with self.lock:
                self.pairs.add(pair)
            threading.Thread(target=self._to_server, args=(pair,), daemon=True).start()
            threading.Thread(target=self._to_client, args=(pair,), daemon=True).start()

    def _to_server(self, pair: _Pair) -> None:
        """Client to server. Reads eagerly while held (so a request is kept even if its client
        hangs up), forwards when open; when the client is gone, delivers what is held first."""
        held = bytearray()
        client_open = True
        try:
            while not self.stopping.is_set():
                if held and self.open.is_set():
                    pair.up.sendall(held)
                    with self.lock:
                        self.held -= len(held)
                        self.late += pair.client_gone
                    held.clear()
                if not client_open:
                    if not held:
                        break
                    self.open.wait(0.25)
                    continue
                if not select.select([pair.conn], [], [], 0.1)[0]:
                    continue
                try:
                    data = pair.conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    client_open = False
                    pair.client_gone = True
                    continue
                held += data
                with self.lock:
                    self.held += len(data)
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.held -= len(held)
            self._end(pair)

    def _to_client(self, pair: _Pair) -> None:
        """Server to client; while held, stops reading (the server's replies wait in the kernel)."""
        try:
            while not self.stopping.is_set():
                if not select.select([pair.up], [], [], 0.25)[0]:
                    continue
                data = pair.up.recv(65536)
                if not data:
                    break
                while not self.open.is_set() and not self.stopping.is_set():
                    self.open.wait(0.25)
                if not pair.client_gone:
                    try:
                        pair.conn.sendall(data)
                    except OSError:
                        pair.client_gone = True
        except (OSError, ValueError):
            pass
        finally:
            # the server hung up (or we stop): the client must see it; the other direction
            # ends when it has delivered what it holds
            pair.client_gone = True
            with contextlib.suppress(OSError):
                pair.conn.shutdown(socket.SHUT_RDWR)

    def _end(self, pair: _Pair) -> None:
        with self.lock:
            self.pairs.discard(pair)
        for s in (pair.conn, pair.up):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
