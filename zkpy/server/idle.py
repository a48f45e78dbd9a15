"""Idle connections parked on one shared epoll: their pings are answered without waking them.

Why: a connection waiting for its client's next bytes holds a handful of objects trio makes for
every wait (the coroutines of the wait, the abort closure, the fd's waiter record), and replaces
them at every request. An idle session's client pings every third of its timeout, so at 15,000
sessions every young collection of the cycle collector walked 100-200k such objects (the
allocation counter never saw them: each ping frees as many as it makes) and held the server for
0.2-0.5 s of CPU, seconds of wall time on a busy machine: pings answered after 4-8 s, and sessions
lost (docs/measurements.md, idle sessions).

So a connection whose last read held only pings, with nothing pending or queued, parks: it
registers its socket with this reader's epoll (one-shot) and waits on one event, made once per
park. The reader, one task, waits for that epoll's descriptor and reads each ready socket itself.
Bytes that are whole pings are answered as the connection would answer them (the same counters,
latency record and session touch), and the socket is re-armed: the parked task never runs, and a
ping costs no lasting objects. Anything else (a request, part of a frame, the client's close) is
handed to the connection, which wakes, handles it as if it had read it, and parks again only
after its next read of pings alone. A connection with a request in flight never parks, so its
answers and a ping's keep their order.

Linux only (select.epoll); elsewhere, and for TLS and in-memory streams, connections wait as
before.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from typing import Protocol

import trio

from zkpy.jute.ops import XID_PING, OpCode

log = logging.getLogger(__name__)

# The frame a client sends to ping: length 8, xid -2, op 11 (kazoo's, Apache's Java and C clients').
PING_FRAME = b"\x00\x00\x00\x08" + XID_PING.to_bytes(4, "big", signed=True) + int(OpCode.PING).to_bytes(4, "big")
_READ_SIZE = 65536
_EVENTS_PER_ROUND = 256  # ready sockets handled between checkpoints

_ARMED = select.EPOLLIN | select.EPOLLONESHOT if hasattr(select, "epoll") else 0


class Parkable(Protocol):
    """What the reader needs of a connection (ClientConnection)."""

    def answer_idle_pings(self, count: int, received: int) -> None: ...


class _Parked:
    __slots__ = ("conn", "data", "sock", "woken")

    def __init__(self, conn: Parkable, sock: socket.socket) -> None:
        self.conn = conn
        self.sock = sock
        self.data = b""
        self.woken = trio.Event()


class IdleReader:
    """The shared epoll and the task that reads it (`run`, in the server's nursery)."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._parked: dict[int, _Parked] = {}
        self.running = False
        self.pings_answered = 0  # by the reader, without waking a connection (tests, bench)
        self.handed = 0  # reads handed back to their connection

    @property
    def available(self) -> bool:
        return self.running and self._epoll is not None

    async def park(self, conn: Parkable, sock: socket.socket) -> bytes:
        """Wait, parked, until the client sends something other than pings; return what it sent
        (b"" when it closed or the connection broke). Cancellation unparks."""
        assert self._epoll is not None
        fd = sock.fileno()
        parked = _Parked(conn, sock)
        self._parked[fd] = parked
        try:
            self._epoll.register(fd, _ARMED)
            await parked.woken.wait()
            return parked.data
        finally:
            del self._parked[fd]
            with contextlib.suppress(OSError, ValueError):  # not registered, or the epoll closed
                self._epoll.unregister(fd)

    async def run(self) -> None:
        """Answer parked connections' pings until cancelled."""
        epoll = self._epoll
        if epoll is None:
            return
        self.running = True
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0, _EVENTS_PER_ROUND):
                    parked = self._parked.get(fd)
                    if parked is not None and not parked.woken.is_set():
                        self._ready(fd, parked)
        finally:
            self.running = False
            for parked in list(self._parked.values()):  # nobody reads for them any more
                parked.woken.set()
            epoll.close()

    def _ready(self, fd: int, parked: _Parked) -> None:
        try:
            data = parked.sock.recv(_READ_SIZE)
        except BlockingIOError:
            self._rearm(fd)
            return
        except OSError:
            data = b""
        count, extra = divmod(len(data), len(PING_FRAME))
        if data and not extra and data == PING_FRAME * count:
            try:
                parked.conn.answer_idle_pings(count, len(data))
            except Exception:  # a bug costs this connection, never the reader
                log.exception("answering a parked connection's ping failed")
                self._hand(parked, b"")
                return
            self.pings_answered += count
            self._rearm(fd)
            return
        self._hand(parked, data)

    def _hand(self, parked: _Parked, data: bytes) -> None:
        self.handed += 1
        parked.data = data
        parked.woken.set()

    def _rearm(self, fd: int) -> None:
        assert self._epoll is not None
        with contextlib.suppress(OSError):  # closed under us: its connection unparks when cancelled
            self._epoll.modify(fd, _ARMED)
