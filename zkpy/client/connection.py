"""The IO task: owns the socket, the handshake, pings, dead-server detection and reconnects.

Thin trio glue around ClientProtocol. One task per client runs `run()`: it connects to the next
host, resumes the session, and while connected runs a reader (which also enforces the read
timeout) and a writer (which batches queued requests into one send and pings when idle). A lost
connection fails the requests in flight with ConnectionLossError and moves on to the next host,
keeping the session; only the server can say the session expired.

Read-only mode (`read_only=True`), as Apache's ClientCnxn: a server cut off from its quorum may accept
the connection read-only (state CONNECTED_RO). While so connected the IO task asks the other hosts, one
at a time with a backoff from 0.5 s up to 60 s, whether they are read-write (the `isro` four-letter word
on a fresh connection); the first that says "rw" gets the next connection attempt, and the read-only one
is dropped. A session made on a read-only server is local to it, so until the client has once been
connected read-write it asks the next server for a new session instead of presenting that one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
from typing import Any

import trio

from zkpy.client.events import EventDispatcher, EventType, State, WatchedEvent
from zkpy.client.protocol import (
    ClientProtocol,
    Connected,
    Expired,
    Notification,
    Pending,
    ProtocolError,
    Replied,
)
from zkpy.errors import ConnectionLossError, SessionExpiredError, ZooKeeperError

log = logging.getLogger(__name__)

EXPIRED_STATE = -112  # the `state` of the WatchedEvent every watcher gets when the session expires

# States in which requests may be sent: a connection with a handshake done.
LIVE_STATES = (State.CONNECTED, State.RECONNECTED, State.CONNECTED_RO)

# Apache's pingRwServer backoff between read-write probes, in seconds (it starts at 0.1 s; a probe is a
# TCP connect per host, so zkpy starts a little slower), and how long one probe may take.
RW_PROBE_FIRST = 0.5
RW_PROBE_MAX = 60.0
RW_PROBE_TIMEOUT = 1.0


class ConnectionClosedError(ZooKeeperError):
    """The client was closed: no more requests."""

    code = ConnectionLossError.code


class _ConnectionDropped(Exception):
    pass


_DROPPED = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    _ConnectionDropped,
    ProtocolError,
)


def parse_hosts(hosts: str) -> tuple[list[tuple[str, int]], str]:
    """'h1:2181,h2:2181/chroot' -> ([(h1, 2181), (h2, 2181)], '/chroot')."""
    chroot = ""
    if "/" in hosts:
        hosts, chroot = hosts.split("/", 1)
        chroot = "/" + chroot.rstrip("/")
        if chroot == "/":
            chroot = ""
    out = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, port = item[1:].partition("]")
            out.append((host, int(port.lstrip(":") or 2181)))
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "2181")
            out.append((host, int(port)))
    if not out:
        raise ValueError(f"no hosts in {hosts!r}")
    return out, chroot


async def probe_read_write(host: tuple[str, int], timeout: float = RW_PROBE_TIMEOUT) -> bool:
    """Whether the server at `host` says it serves read-write: `isro` on a fresh connection answers
    "rw" or "ro" (a server without read-only mode enabled may not allow the word: that is a no)."""
    answer = b""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(*host)
            async with stream:
                await stream.send_all(b"isro")
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    await stream.send_eof()
                while len(answer) < 64:
                    data = await stream.receive_some(64)
                    if not data:
                        break
                    answer += data
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
    return answer.strip() == b"rw"


class Connection:
    def __init__(
        self,
        hosts: str,
        timeout: float,
        dispatcher: EventDispatcher,
        read_only: bool = False,
        auto_restart: bool = False,
        randomize: bool = True,
    ) -> None:
        self.hosts, chroot = parse_hosts(hosts)
        if randomize:
            random.shuffle(self.hosts)
        self.protocol = ClientProtocol(chroot=chroot)
        self.requested_timeout_ms = int(timeout * 1000)
        self.read_only = read_only
        self.auto_restart = auto_restart
        self.dispatcher = dispatcher
        self.state = State.CONNECTING
        self.server: tuple[str, int] | None = None
        self.connected_read_only = False
        # False until a handshake with a read-write server: a session a read-only server made is local.
        self._seen_rw_server = False
        self._rw_server: tuple[str, int] | None = None  # a probe found it read-write: connect there next
        self._host_index = -1
        self._state_changed = trio.Event()
        self._restart = trio.Event()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._closing = False
        self._fd = -1
        self._writer_busy = False
        self._leftover = b""
        self._cancel = trio.CancelScope()

    # -- used by the API --------------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """The negotiated session timeout in seconds (the requested one before the first handshake)."""
        return (self.protocol.timeout_ms or self.requested_timeout_ms) / 1000

    async def wait_connected(self, limit: float | None = None) -> None:
        """Wait for a live connection; raise if the session expired, the client closed, or `limit` passes."""
        deadline = trio.current_time() + (self.timeout if limit is None else limit)
        while self.state not in LIVE_STATES:
            if self.state is State.EXPIRED:
                raise SessionExpiredError()
            if self.state is State.CLOSED:
                raise ConnectionClosedError("client is closed")
            with trio.move_on_at(deadline):
                await self._state_changed.wait()
                continue
            raise ConnectionLossError("not connected")

    async def call(
        self, op: int, record: Any, path: str | None = None, watch: tuple[str, Any] | None = None
    ) -> Any:
        if self.state not in LIVE_STATES:
            await self.wait_connected()
        pending = self.protocol.request(op, record, path, watch)
        self._flush()
        return await self.wait(pending)

    def _flush(self) -> None:
        """Send queued bytes now if the socket takes them without blocking, else wake the writer.

        A non-blocking write from the caller's task saves two task switches per round-trip; it is
        only tried while the writer is idle with nothing left over, so bytes never go out of order,
        and whatever the kernel does not take right away is left to the writer.
        """
        if self._fd >= 0 and not self._writer_busy and not self._leftover:
            data = self.protocol.data_to_send()
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # the reader will notice the broken connection
            if sent < len(data):
                self._leftover = data[sent:]
                self._writer_lot.unpark_all()
            return
        self._writer_lot.unpark_all()

    async def wait(self, pending: Pending) -> Any:
        if not pending.done:
            pending.waiter = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                pending.waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def add_auth(self, scheme: str, credential: bytes) -> None:
        await self.wait_connected()
        pending = self.protocol.add_auth(scheme, credential)
        self._flush()
        await self.wait(pending)

    def restart(self) -> None:
        """After an expiry: start a fresh session."""
        self._restart.set()

    async def close(self, close_session: bool = True) -> None:
        if self.state is State.CLOSED:
            return
        if close_session and self.state in LIVE_STATES:
            from zkpy.jute.ops import EmptyRecord, OpCode

            with trio.move_on_after(min(self.timeout, 5)):
                self._closing = True  # the server hangs up after answering: not a suspension
                with contextlib.suppress(ZooKeeperError):
                    await self.call(OpCode.CLOSE_SESSION, EmptyRecord())
        self._closing = True
        self._cancel.cancel()
        self._set_state(State.CLOSED)
        for pending in self.protocol.connection_lost():
            self._wake(pending)

    # -- the IO task ------------------------------------------------------------------------------

    async def run(self) -> None:
        with self._cancel:
            failures = 0
            while not self._closing:
                if self.state is State.EXPIRED:
                    if not self.auto_restart:
                        await self._restart.wait()
                    self._restart = trio.Event()
                host = self._rw_server or self._next_host()
                if self._rw_server is not None:
                    self._host_index = self.hosts.index(self._rw_server)
                    self._rw_server = None
                try:
                    stream = await self._open(host)
                except (OSError, trio.TooSlowError) as exc:
                    log.debug("connect to %s failed: %s", host, exc)
                    failures += 1
                    if failures % len(self.hosts) == 0:
                        await trio.sleep(min(1.0, 0.05 * failures) * random.uniform(0.5, 1.0))
                    continue
                reached = False
                try:
                    async with stream:
                        reached = await self._session(stream, host)
                except ProtocolError as exc:
                    log.warning("protocol error from %s: %s", host, exc)
                except _DROPPED as exc:
                    log.debug("connection to %s lost: %r", host, exc)
                finally:
                    self._fd = -1
                    self._leftover = b""
                    self.server = None
                    for pending in self.protocol.connection_lost():
                        self._wake(pending)
                    if self.state in LIVE_STATES and not self._closing:
                        self._set_state(State.SUSPENDED)
                if reached or self.state is State.EXPIRED:
                    failures = 0
                else:  # refused before the handshake finished (e.g. a server still starting): back off
                    failures += 1
                    if failures % len(self.hosts) == 0:
                        await trio.sleep(min(1.0, 0.05 * failures) * random.uniform(0.5, 1.0))

    def _next_host(self) -> tuple[str, int]:
        self._host_index = (self._host_index + 1) % len(self.hosts)
        return self.hosts[self._host_index]

    async def _open(self, host: tuple[str, int]) -> trio.SocketStream:
        connect_timeout = max(self.timeout / len(self.hosts), 0.5)
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(*host)
        stream.setsockopt(6, 1, 1)  # TCP_NODELAY
        return stream

    async def _session(self, stream: trio.SocketStream, host: tuple[str, int]) -> bool:
        """Handshake, then serve the connection until it drops; False if the handshake did not finish."""
        protocol = self.protocol
        if not self._seen_rw_server and protocol.session_id:
            protocol.forget_session()  # ClientCnxn: sessId = seenRwServerBefore ? sessionId : 0
        protocol.connect(self.requested_timeout_ms, self.read_only)
        await stream.send_all(protocol.data_to_send())
        outcome: Connected | Expired | None = None
        leftover: list[Any] = []
        with trio.fail_after(max(self.timeout / len(self.hosts), 1.0)):
            while outcome is None:
                data = await stream.receive_some(65536)
                if not data:
                    raise _ConnectionDropped("closed during handshake")
                events = protocol.receive_data(data)
                if events:
                    outcome, leftover = events[0], events[1:]  # type: ignore[assignment]
        if isinstance(outcome, Expired):
            self._expire()
            return False
        assert isinstance(outcome, Connected)
        self.server = host
        self.connected_read_only = outcome.read_only
        if outcome.read_only:
            self._set_state(State.CONNECTED_RO)
        else:
            self._seen_rw_server = True
            self._set_state(State.CONNECTED if outcome.new_session else State.RECONNECTED)
        self._handle(leftover)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._until_dropped, self._writer, stream, nursery.cancel_scope)
                if outcome.read_only and len(self.hosts) > 1:
                    nursery.start_soon(self._until_dropped, self._seek_rw_server, host, nursery.cancel_scope)
                await self._until_dropped(self._reader, stream, nursery.cancel_scope)
        finally:
            if trio.current_effective_deadline() == -math.inf and self.state in LIVE_STATES:
                # Cancelled from outside (close() sets CLOSED before it cancels us): the block around
                # connect() is being left, and the close() there can no longer reach the server
                # through this task. Close the session here while the socket is open, so that its
                # ephemerals go now, not at expiry.
                with trio.CancelScope(shield=True):
                    await self._say_goodbye(stream)
        return True

    async def _say_goodbye(self, stream: trio.SocketStream) -> None:
        """closeSession on `stream` (close()'s, if it queued one already) and wait briefly for the
        reply, which also wakes close() if it is waiting; best effort."""
        from zkpy.jute.ops import EmptyRecord, OpCode

        self._closing = True
        pending = self.protocol.in_flight_op(OpCode.CLOSE_SESSION)
        if pending is None:
            pending = self.protocol.request(OpCode.CLOSE_SESSION, EmptyRecord())
        with trio.move_on_after(min(self.timeout, 2.0)), contextlib.suppress(*_DROPPED):
            data = self._leftover + self.protocol.data_to_send()
            self._leftover = b""
            await stream.send_all(data)
            while not pending.done:
                data = await stream.receive_some(65536)
                if not data:
                    break
                self._receive(data)
        self._set_state(State.CLOSED)  # a close() that comes after has nothing left to do

    async def _seek_rw_server(self, current: tuple[str, int]) -> None:
        """While connected read-only: probe the other hosts in turn, backing off as Apache's pingRwServer
        does, until one answers "rw"; then drop this connection (the next attempt goes there)."""
        others = [h for h in self.hosts if h != current]
        interval = RW_PROBE_FIRST
        for i in itertools.count():
            await trio.sleep(interval)
            interval = min(2 * interval, RW_PROBE_MAX)
            candidate = others[i % len(others)]
            if await probe_read_write(candidate):
                log.info("read-write server found at %s:%d; leaving the read-only one", *candidate)
                self._rw_server = candidate
                raise _ConnectionDropped(f"read-write server found at {candidate}")

    @staticmethod
    async def _until_dropped(loop: Any, arg: Any, scope: trio.CancelScope) -> None:
        """Run the reader, the writer or the read-write seeker; when one finds the connection broken (or
        not worth keeping), stop them all."""
        try:
            await loop(arg)
        except _DROPPED as exc:
            log.debug("connection dropped: %r", exc)
        finally:
            scope.cancel()

    def _expire(self) -> None:
        failed, callbacks = self.protocol.expire()
        for pending in failed:
            self._wake(pending)
        self._set_state(State.EXPIRED)
        self.dispatcher.watch(WatchedEvent(EventType.NONE, "", EXPIRED_STATE), tuple(callbacks))

    async def _reader(self, stream: trio.SocketStream) -> None:
        read_timeout = self.protocol.timeout_ms / 1000 * 2 / 3
        sock = stream.socket
        fd = sock.fileno()
        with trio.CancelScope(deadline=trio.current_time() + read_timeout) as scope:
            while True:
                # Wait for readability, then read what is there straight from the fd: one syscall per
                # wake-up instead of trio's try-recv/wait/recv, which matters for round-trip latency.
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = os.read(fd, 262144)
                except BlockingIOError:
                    continue
                if not data:
                    raise _ConnectionDropped("server closed the connection")
                scope.deadline = trio.current_time() + read_timeout
                self._receive(data)
        raise _ConnectionDropped(f"no answer in {read_timeout:.2f}s")

    def _receive(self, data: bytes) -> None:
        """Feed the protocol and deliver what it decoded; on a bad frame, deliver what came before
        it first (those replies have left the in-flight queue), then drop the connection."""
        try:
            events = self.protocol.receive_data(data)
        except ProtocolError as exc:
            self._handle(exc.events)
            raise
        self._handle(events)

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Replied):
                self._wake(event.pending)
            elif isinstance(event, Notification):
                self.dispatcher.watch(event.event, event.callbacks)

    async def _writer(self, stream: trio.SocketStream) -> None:
        protocol = self.protocol
        ping_interval = protocol.timeout_ms / 1000 / 3
        while True:
            if not self._leftover and not protocol.has_data_to_send():
                self._fd = stream.socket.fileno()  # idle: callers may write directly (see _flush)
                try:
                    with trio.move_on_after(ping_interval) as scope:
                        await self._writer_lot.park()
                finally:
                    # Also when cancelled (the connection dropped): the socket closes next, and its
                    # number may be reused at once; a caller must never write to it after that.
                    self._fd = -1
                if scope.cancelled_caught and not self._leftover and not protocol.has_data_to_send():
                    protocol.ping()
            data, self._leftover = self._leftover + protocol.data_to_send(), b""
            self._writer_busy = True
            try:
                await stream.send_all(data)
            finally:
                self._writer_busy = False

    @staticmethod
    def _wake(pending: Pending) -> None:
        if pending.waiter is not None:
            trio.lowlevel.reschedule(pending.waiter)
            pending.waiter = None

    def _set_state(self, state: State) -> None:
        if state is self.state:
            return
        self.state = state
        self._state_changed.set()
        self._state_changed = trio.Event()
        self.dispatcher.state(state)
