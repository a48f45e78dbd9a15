"""One client connection: trio glue around ServerProtocol.

Two tasks share a nursery: the receiver turns frames into requests, the sender
writes whatever the connection has queued (replies and watch events, in the order
they were queued). Replies leave in request order: a read waits behind its
connection's earlier writes, so clients read their own writes, and the watch
events of a commit are queued before any later reply that could show it.
A connection that does not read its replies stops being read from (bounded
buffers), so one slow or hostile client never stalls another.

What one connection can make the server hold is bounded: requests are taken one at a time, and
none is taken while the connection's unsent output is above OUTPUT_HIGH_WATER, while it has
global_outstanding_limit requests waiting for their turn, or (as ZooKeeper's throttle) while the
server's outstanding writes exceed globalOutstandingLimit and this connection has some of them.
A peer that stops reading is cut off (its output dropped, a warning logged) when its unsent
output passes OUTPUT_LIMIT (watch events and write replies still arrive while it is not read),
or when it stays above the high-water mark for SLOW_READER_TIMEOUT without the peer taking a byte.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

import trio

from zkpy.errors import Code, ZooKeeperError
from zkpy.jute.codec import JuteError
from zkpy.jute.ops import WRITE_OPS, XID_PING, OpCode
from zkpy.jute.records import AuthPacket
from zkpy.server.latency import Summary
from zkpy.server.protocol import (
    ConnectRequested,
    FourLetterWord,
    ProtocolError,
    RequestReceived,
    ServerProtocol,
    reply,
    watch_event,
)
from zkpy.server.reads import SetWatchesParse
from zkpy.server.steps import STEP_BUDGET, run_in_steps
from zkpy.tree import acl
from zkpy.tree.apply import Result
from zkpy.tree.txn import SERVER_AUTH
from zkpy.tree.watches import STATE_SYNC_CONNECTED

if TYPE_CHECKING:
    from zkpy.server.node import ZooKeeperServer

log = logging.getLogger(__name__)

SESSIONLESS_TIMEOUT = 10  # seconds, ZooKeeper's zookeeper.nio.sessionlessCnxnTimeout default
OUTPUT_HIGH_WATER = 1024 * 1024  # take no more requests from a client whose unsent output exceeds this
OUTPUT_LIMIT = 16 * 1024 * 1024  # cut off a client whose unsent output passes this (it is not reading)
SLOW_READER_TIMEOUT = 10.0  # seconds above the high-water mark without taking a byte: cut off
_SEND_CHUNK = 256 * 1024  # what the sender hands the socket at a time (what is unsent stays in _out)
_DIRECT_MAX = 64 * 1024  # answers up to this size are written at once when nothing is queued (see send)
_CLIENT_WRITE_OPS = WRITE_OPS - {OpCode.CREATE_SESSION, OpCode.DELETE_CONTAINER}
# The request types ZooKeeper's Request.isValid accepts. Anything else is answered Unimplemented and the
# connection is closed, as ZooKeeper's UnimplementedRequestProcessor does.
_VALID_OPS = frozenset(OpCode) - {OpCode.NOTIFICATION, OpCode.ERROR}
_SET_WATCHES_OPS = frozenset({OpCode.SET_WATCHES, OpCode.SET_WATCHES2})
_CHILDREN_OPS = frozenset({OpCode.GET_CHILDREN, OpCode.GET_CHILDREN2})


class _Pending:
    """A request waiting for its turn to be answered."""

    __slots__ = ("body", "op", "reply", "started", "xid")

    def __init__(self, xid: int, op: int, body: bytes | None, started: float) -> None:
        self.xid = xid
        self.op = op
        self.body = body  # None for writes: their reply arrives via `reply`
        self.reply: bytes | None = None
        self.started = started


class _ReadAhead:
    """The read a connection keeps going while its handshake waits (see _await_handshake)."""

    __slots__ = ("data", "done", "scope")

    def __init__(self) -> None:
        self.data = b""  # b"": the client closed (or the read was cut short by close())
        self.done = trio.Event()
        self.scope = trio.CancelScope()


def plain_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The operating system socket under a plain TCP stream (None for TLS or an in-memory stream).

    Most of what a connection does is small: a ping in, a 20-byte answer out. Through trio's stream
    each costs a failed recv before every wait, and a second task (the sender) woken for every answer;
    with the socket itself the receiver waits for readability and reads once, and an answer that fits
    in the socket's buffer while nothing is queued is written at once (issue 17: 10,000 idle sessions
    pinging). trio's socket wrapper keeps the standard socket as `_sock`."""
    if type(stream) is not trio.SocketStream:
        return None
    raw = getattr(stream.socket, "_sock", None)
    return raw if isinstance(raw, socket.socket) else None


class HeldAnswers:
    """While a batch of commits is applied and answered, answers that would go straight to a socket
    (ClientConnection.send) wait, and each connection writes what the batch gave it in one send at
    the end (CommitPipeline.apply_batch holds them).

    A batch answers up to a thousand writes, dozens of them on one connection. Written one by one,
    each answer was a send() of its own and a TCP segment the client woke up for: with 8
    connections each keeping 64 writes in flight, about 10 us of the load generator's CPU per write
    instead of 4, and a system call per answer on every server. Nothing is held longer than the
    batch's own (synchronous) apply loop, and the order of a connection's output is unchanged."""

    def __init__(self) -> None:
        self.holding = False
        self.connections: list[ClientConnection] = []

    def __enter__(self) -> None:
        self.holding = True

    def __exit__(self, *exc_info: object) -> None:
        self.holding = False
        connections, self.connections = self.connections, []
        for connection in connections:
            connection.release_held()


class ClientConnection:
    def __init__(self, server: ZooKeeperServer, stream: trio.abc.Stream, remote: tuple[str, int]) -> None:
        self.server = server
        self.stream = stream
        self._sock = plain_socket(stream)
        self._sending = False  # the sender holds a chunk that is not all written yet
        self._held = False  # answers wait in _out for the end of a batch (HeldAnswers)
        self.remote = remote
        self.protocol = ServerProtocol(server.config.jute_max_buffer)
        self.session_id = 0
        self.timeout = 0
        self.auth = acl.AuthIds([("ip", remote[0])], eager_hash=True)
        self._out = bytearray()
        self._out_ready = trio.Event()
        self._progress = trio.Event()  # the sender wrote a chunk, or a queued request was answered
        self._sent_bytes = 0
        self._pending: deque[_Pending] = deque()
        self._closing = False
        self._cut_off = False
        self._gone = False  # serve() has ended: the server forgot this connection
        self._recv_scope = trio.CancelScope()
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._handshake_done = trio.Event()
        self._ahead: _ReadAhead | None = None
        self._only_pings = False  # the last read held pings only: the next wait may park
        # The client's last bytes, and whether this connection waits for more: ZooKeeperServer
        # closes one that waited longer than its session timeout (not one that stopped reading).
        self.last_read = trio.current_time()
        self.awaiting_client = False
        self.established = time.time()
        self.reset_stats()

    def reset_stats(self) -> None:
        """Counters for `cons` and `stat` (crst resets them)."""
        self.packets_received = 0
        self.packets_sent = 0
        self.last_op = "NA"
        self.last_cxid = -1
        self.last_zxid = -1
        self.last_response = 0.0  # time.monotonic() of the last answer (cons: lresp)
        self.latency = Summary()

    # -- public -------------------------------------------------------------------
    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self._nursery = nursery
                nursery.start_soon(self._send_loop)
                nursery.start_soon(self._handshake_deadline)
                with self._recv_scope:
                    await self._recv_loop()
                self.close()
                # Give the sender a bounded time to flush the last replies to a peer that may not read.
                nursery.cancel_scope.deadline = trio.current_time() + 5
        finally:
            self._gone = True
            with trio.CancelScope(shield=True):  # its watches, in steps (600k of them took ~0.5 s)
                await run_in_steps(self.server.watches.remove_watcher_steps(self))
            self.server.connection_closed(self)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    def close(self) -> None:
        """Stop reading; the sender flushes what is queued, then the connection ends."""
        self._closing = True
        self._handshake_done.set()
        self._recv_scope.cancel()
        if self._ahead is not None:
            self._ahead.scope.cancel()
        self._out_ready.set()

    @property
    def closing(self) -> bool:
        """close() was called: nothing more is read, and nothing more should be attached."""
        return self._closing

    def send(self, data: bytes) -> None:
        queued = len(self._out)
        if queued > OUTPUT_HIGH_WATER and queued + len(data) > OUTPUT_LIMIT:
            # Not reading: only events and write replies got here (no request is taken above the
            # high-water mark). A single large reply into a short queue is fine.
            self.cut_off(f"{queued + len(data)} bytes of unsent output (limit {OUTPUT_LIMIT})")
            return
        if self._cut_off:
            return
        self.packets_sent += 1
        if self._held:
            self._out += data  # written with the rest of the batch's answers (release_held)
            return
        if (
            self._sock is not None
            and not self._out
            and not self._sending
            and not self._gone
            and len(data) <= _DIRECT_MAX
        ):
            # Small, and nothing queued ahead of it: straight to the socket, without waking the sender (a
            # large answer goes through the sender, in chunks, as before); at a batch's end if one is
            # being answered.
            held = self.server.held_answers
            if held.holding:
                self._held = True
                self._out += data
                held.connections.append(self)
                return
            rest = self._write_now(data)
            if not rest:
                return
            self._out += rest
        else:
            self._out += data
        self._out_ready.set()

    def release_held(self) -> None:
        """The batch is answered: what it gave this connection goes out, at once if it is small and
        the sender has nothing in hand (as send's direct write), through the sender otherwise."""
        self._held = False
        out = self._out
        if not out:  # cut off meanwhile, or the sender took it
            return
        if not self._sending and not self._gone and len(out) <= _DIRECT_MAX:
            self._out = bytearray(self._write_now(out))
            if not self._out:
                return
        self._out_ready.set()

    def _write_now(self, data: bytes | bytearray) -> bytes | bytearray:
        """Write to the socket without waiting; what it did not take (all of it when the peer is gone:
        the connection is closed then, as the sender does) is returned."""
        assert self._sock is not None
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the peer is gone: as the sender does, stop
            self.close()
            return b""
        self._sent_bytes += sent
        if sent == len(data):
            self._progress.set()
            return b""
        return data[sent:]

    def cut_off(self, why: str) -> None:
        """Drop a peer that does not read: its unsent output is discarded, not flushed."""
        if self._cut_off:
            return
        self._cut_off = True
        log.warning("cutting off client %s:%d (session 0x%x): %s", *self.remote, self.session_id, why)
        self._out = bytearray()
        self.close()
        if self._scope is not None:
            self._scope.cancel()

    def notify(self, event_type: int, path: str) -> None:
        """A watch fired (Watcher protocol): queue the event now, ahead of later replies."""
        self.send(watch_event(event_type, STATE_SYNC_CONNECTED, path))

    def attach(self, session_id: int, timeout: int) -> None:
        self.session_id = session_id
        self.timeout = timeout
        # The client's pings are timed from this answer, not from its ConnectRequest (a slow
        # handshake must not count as its silence), as the session's expiry is (_attach).
        self.last_read = trio.current_time()
        self._handshake_done.set()

    @property
    def sent_bytes(self) -> int:
        return self._sent_bytes

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def _handshake_deadline(self) -> None:
        """A connection that never completes its handshake is dropped, as ZooKeeper's sessionless timeout."""
        with trio.move_on_after(SESSIONLESS_TIMEOUT):
            await self._handshake_done.wait()
            return
        log.info("closing connection from %s:%d: no handshake in %ss", *self.remote, SESSIONLESS_TIMEOUT)
        self.close()

    # -- loops ----------------------------------------------------------------------
    async def _send_loop(self) -> None:
        stream = self.stream
        try:
            while True:
                await self._out_ready.wait()
                self._out_ready = trio.Event()
                while self._out:
                    if len(self._out) <= _SEND_CHUNK:
                        data, self._out = self._out, bytearray()
                    else:
                        data = self._out[:_SEND_CHUNK]
                        del self._out[:_SEND_CHUNK]
                    self._sending = True
                    try:
                        await stream.send_all(data)
                    finally:
                        self._sending = False
                    self._sent_bytes += len(data)
                    self._progress.set()
                if self._closing:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()

    async def _receive_bytes(self) -> bytes | bytearray:
        """The client's next bytes; b"" once it closed (or the connection broke). Meanwhile the
        connection is `awaiting_client` (the silence rule judges only such a connection)."""
        self.awaiting_client = True
        sock = self._sock
        try:
            while True:
                try:
                    if sock is not None:
                        if self._only_pings and self._may_park():
                            return await self.server.idle.park(self, sock)
                        await trio.lowlevel.wait_readable(sock)
                        return sock.recv(65536)
                    return await self.stream.receive_some(65536)
                except BlockingIOError:
                    continue
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return b""
        finally:
            self.awaiting_client = False

    def _may_park(self) -> bool:
        """Idle with nothing in flight either way: the shared reader may wait for this client
        (idle.py), which answers its pings without waking this connection's task."""
        return (
            self.session_id != 0
            and not self._pending
            and not self._out
            and not self._sending
            and not self._held
            and not self._closing
            and self.protocol.between_frames()
            and self.server.idle.available
        )

    def answer_idle_pings(self, count: int, received: int) -> None:
        """The shared reader read `count` pings (`received` bytes) for this parked connection:
        what the receive loop does with a read of pings."""
        server = self.server
        server.stats.bytes_received += received
        self.last_read = trio.current_time()
        server.sessions.touch(self.session_id)
        for _ in range(count):
            self._on_request(XID_PING, OpCode.PING, b"")

    async def _await_handshake(self) -> None:
        """Until the handshake is answered or the connection closes. Meanwhile one read goes on,
        so a client that gives up while its handshake waits (a learner asking its leader about
        the session, a new session waiting for its commit) is noticed at once: the connection
        closes, and a learner withdraws the claim its question made at the leader (owners.py).
        Apache's processConnectRequest stops reading (cnxn.disableRecv) until the session is
        set up, so it learns of the close only afterwards. Bytes that come (a client sending
        ahead of the answer) are the receiver's next read."""
        if self._handshake_done.is_set() or self._nursery is None:
            await self._handshake_done.wait()
            return
        ahead = self._ahead = _ReadAhead()
        self._nursery.start_soon(self._read_ahead, ahead)
        await self._handshake_done.wait()

    async def _read_ahead(self, ahead: _ReadAhead) -> None:
        with ahead.scope:
            ahead.data = bytes(await self._receive_bytes())
            if not ahead.data:
                self.close()
        ahead.done.set()

    async def _recv_loop(self) -> None:
        server = self.server
        pipeline = server.pipeline
        limit = server.config.global_outstanding_limit
        data: bytes | bytearray
        while True:
            ahead = self._ahead
            if ahead is not None:  # the read the handshake's wait started is this one
                await ahead.done.wait()
                self._ahead = None
                data = ahead.data
            else:
                data = await self._receive_bytes()
            if not data:
                return
            server.stats.bytes_received += len(data)
            self.last_read = trio.current_time()
            try:
                events = self.protocol.receive(data)
            except ProtocolError as e:
                log.info("closing connection from %s:%d: %s", *self.remote, e)
                return
            if self.session_id:
                server.sessions.touch(self.session_id)  # once per read, not per request
            # A read of pings alone (an idle client) lets the next wait park (idle.py).
            self._only_pings = bool(events) and all(
                type(event) is RequestReceived and event.op == OpCode.PING for event in events
            )
            budget_start = time.perf_counter()
            for event in events:
                if time.perf_counter() - budget_start >= STEP_BUDGET:  # a read of 2,000 small requests
                    await trio.sleep(0)
                    budget_start = time.perf_counter()
                if isinstance(event, RequestReceived):
                    if (
                        len(self._out) > OUTPUT_HIGH_WATER
                        or len(self._pending) >= limit
                        or (pipeline.outstanding > limit and self._pending)
                    ):
                        await self._throttle()
                        if self._closing:
                            return
                        self.last_read = trio.current_time()  # what queued meanwhile is not silence
                    if event.op in _SET_WATCHES_OPS and self.session_id and not self._closing:
                        await self._set_watches(event.xid, event.op, event.body)
                        continue
                    if event.op in _CHILDREN_OPS and self.session_id and not self._closing:
                        await self._prepare_children_order(event.op, event.body)
                    self._on_request(event.xid, event.op, event.body)
                elif isinstance(event, ConnectRequested):
                    self._count_received()
                    started = time.monotonic()
                    if not server.handle_connect(self, event.request):
                        return
                    await self._await_handshake()
                    if self._closing:
                        return
                    if event.request.session_id == 0:  # ZooKeeper's cons shows a new session as SESS
                        self._record(OpCode.CREATE_SESSION, 0, started)
                elif isinstance(event, FourLetterWord):
                    self._count_received()  # as ZooKeeper: the word is a packet (cons: recved=1)
                    self.send(server.four_letter(event.word).encode())
                    return

    async def _answered_so_far(self) -> None:
        """Until this connection's earlier requests are answered (or it closes)."""
        while self._pending and not self._closing:
            self._progress = trio.Event()
            await self._progress.wait()

    async def _prepare_children_order(self, op: int, body: bytes) -> None:
        """A getChildren of a node with many children whose order must be built afresh (the first call after
        a restart: 100,000 children held every client ~0.6 s) has it built in steps first; the answer, in its
        turn, then only brings it up to date. Nothing later is read meanwhile, so replies keep their order."""
        steps = self.server.reads.children_order_steps(op, body)
        if steps is None:
            return
        await self._answered_so_far()
        if not self._closing:
            await run_in_steps(steps)

    async def _set_watches(self, xid: int, op: int, body: bytes) -> None:
        """setWatches in steps (Reads.set_watches_steps), yielding to the event loop between them: a frame of
        60,000 paths held every other client ~100 ms at once. Its turn comes after this connection's earlier
        requests are answered, and nothing later is read until it is done, so replies keep their order."""
        await self._answered_so_far()
        if self._closing:
            return
        self._count_received()
        started = time.monotonic()
        tree = self.server.tree
        try:
            parse = SetWatchesParse(op, body)
            await run_in_steps(parse.steps())
            await run_in_steps(self.server.reads.set_watches_steps(parse.request, self))
        except JuteError:
            self.send(reply(xid, tree.last_zxid, int(Code.MARSHALLING_ERROR)))
        else:
            self.send(reply(xid, tree.last_zxid, 0))
        self._record(op, xid, started)

    async def _throttle(self) -> None:
        """Take no request until this connection may have another (see the module docstring)."""
        pipeline = self.server.pipeline
        limit = self.server.config.global_outstanding_limit
        while not self._closing:
            if len(self._out) > OUTPUT_HIGH_WATER:
                sent = self._sent_bytes
                with trio.move_on_after(SLOW_READER_TIMEOUT):
                    while len(self._out) > OUTPUT_HIGH_WATER and not self._closing:
                        self._progress = trio.Event()
                        await self._progress.wait()
                if len(self._out) > OUTPUT_HIGH_WATER and self._sent_bytes == sent:
                    self.cut_off(
                        f"{len(self._out)} bytes of unsent output and nothing read for {SLOW_READER_TIMEOUT:g}s"
                    )
            elif len(self._pending) >= limit or (pipeline.outstanding > limit and self._pending):
                # Apache's throttle: a connection with requests in flight waits while the server has
                # more than globalOutstandingLimit; each answer it gets is a moment to look again.
                self._progress = trio.Event()
                await self._progress.wait()
            else:
                return

    # -- requests -------------------------------------------------------------------
    def _count_received(self) -> None:
        self.packets_received += 1
        self.server.stats.packets_received += 1

    def _on_request(self, xid: int, op: int, body: bytes) -> None:
        if self._closing:  # requests behind a closeSession or a refused op are never answered
            return
        server = self.server
        self._count_received()
        if op == OpCode.AUTH:
            self._auth(xid, body)
            return
        if op not in _VALID_OPS:  # answered in turn; the connection closes after it (see _drain)
            refused = _Pending(xid, op, None, time.monotonic())
            refused.reply = reply(xid, server.tree.last_zxid, int(Code.UNIMPLEMENTED))
            self._pending.append(refused)
            self._drain()
            return
        now = time.monotonic()
        if op in _CLIENT_WRITE_OPS or (op == OpCode.SYNC and server.forwards_sync):
            pending = _Pending(xid, op, None, now)
            self._pending.append(pending)
            refusal = server.refuse_write(op, body, self.session_id, self.auth)
            if refusal:
                pending.reply = reply(xid, server.tree.last_zxid, refusal)
                self._drain()
                return

            def done(result: Result) -> None:
                self._write_done(pending, result)

            if op == OpCode.CLOSE_SESSION:
                server.close_session(self.session_id, xid, SERVER_AUTH, done)
            else:
                txn_body, txn_auth = server.prepare_txn(op, body, self.session_id, self.auth)
                server.pipeline.submit(self.session_id, xid, op, txn_body, txn_auth, done)
        elif op != OpCode.PING and server.check_session(self.session_id, op):
            # A read after this session's closeSession: answered in turn, as Apache's checkSession.
            refused = _Pending(xid, op, None, now)
            refused.reply = reply(xid, server.tree.last_zxid, server.check_session(self.session_id, op))
            self._pending.append(refused)
            self._drain()
        elif self._pending:
            self._pending.append(_Pending(xid, op, body, now))
        else:
            self.send(self._read(xid, op, body))
            self._record(op, xid, now)

    def _write_done(self, pending: _Pending, result: Result) -> None:
        body = b""
        if result.response is not None and not result.err:
            out = bytearray()
            result.response.write(out)
            body = bytes(out)
        pending.reply = reply(pending.xid, result.zxid, result.err, body)
        self.last_zxid = result.zxid
        self._drain()

    def _drain(self) -> None:
        pending = self._pending
        if self._gone:
            # The connection ended while these waited behind a write: nobody reads the answers,
            # and a read run now would register a watch after close removed this connection's.
            pending.clear()
            return
        while pending:
            head = pending[0]
            if head.body is None:
                if head.reply is None:
                    return
                self.send(head.reply)
                if head.op == OpCode.CLOSE_SESSION or head.op not in _VALID_OPS:
                    # The connection ends with this reply, as Apache's: what was pipelined behind
                    # it is not answered (and, refused by check_session, was never run).
                    self.close()
                    self._record(head.op, head.xid, head.started)
                    pending.clear()
                    self._progress.set()
                    return
            else:
                self.send(self._read(head.xid, head.op, head.body))
            pending.popleft()
            self._record(head.op, head.xid, head.started)
            self._progress.set()

    def _read(self, xid: int, op: int, body: bytes) -> bytes:
        tree = self.server.tree
        if op == OpCode.PING:
            return reply(XID_PING, tree.last_zxid, 0)  # whatever xid the ping came with, as ZooKeeper does
        try:
            return reply(xid, tree.last_zxid, 0, self.server.reads.handle(op, body, self))
        except ZooKeeperError as e:
            return reply(xid, tree.last_zxid, int(e.code))
        except JuteError:
            return reply(xid, tree.last_zxid, int(Code.MARSHALLING_ERROR))
        except Exception:
            # As ZooKeeper's FinalRequestProcessor: a request that fails unexpectedly is logged and
            # answered MarshallingError. Never raised: a read queued behind a write is answered from
            # the commit pipeline's task, where an exception would stop the whole server.
            log.exception("failed to process request op %d xid %d from %s:%d", op, xid, *self.remote)
            return reply(xid, tree.last_zxid, int(Code.MARSHALLING_ERROR))

    def _auth(self, xid: int, body: bytes) -> None:
        tree = self.server.tree
        try:
            packet, _ = AuthPacket.read(body, 0)
            ids = acl.authenticate(
                packet.scheme or "",
                packet.auth or b"",
                self.server.config.super_digest,
                client_ip=self.remote[0],
            )
        except (ZooKeeperError, JuteError):
            self.send(reply(xid, tree.last_zxid, int(Code.AUTH_FAILED)))
            self.close()
            return
        # A set, as ZooKeeper's: an addauth costs O(1); the Java hash-set order whoAmI and `auth` ACLs show
        # is built only when asked for (AuthIds.java_order).
        for ident in ids:
            self.auth.add((ident.scheme or "", ident.id or ""))
        self.send(reply(xid, tree.last_zxid, 0))  # the request's own xid (clients send -4)

    def _record(self, op: int, xid: int, started: float) -> None:
        """ZooKeeper's updateStatsForResponse: what `cons` shows of the last answer."""
        now = time.monotonic()
        latency = (now - started) * 1000
        self.latency.record(latency)
        if xid >= 0:  # pings (-2) and auth (-4) keep the last real cxid
            self.last_cxid = xid
        if op not in _CLIENT_WRITE_OPS:  # a write's zxid was set when it committed
            self.last_zxid = self.server.tree.last_zxid
        self.last_response = now
        self.last_op = _OP_ABBREV.get(op, "NA")
        self.server.stats.record(op, latency)


_OP_ABBREV: dict[int, str] = {  # FinalRequestProcessor's lastOp names
    OpCode.CREATE_SESSION: "SESS",
    OpCode.CREATE: "CREA",
    OpCode.CREATE2: "CREA",
    OpCode.CREATE_CONTAINER: "CREA",
    OpCode.CREATE_TTL: "CREA",
    OpCode.DELETE: "DELE",
    OpCode.EXISTS: "EXIS",
    OpCode.GET_DATA: "GETD",
    OpCode.SET_DATA: "SETD",
    OpCode.GET_ACL: "GETA",
    OpCode.SET_ACL: "SETA",
    OpCode.GET_CHILDREN: "GETC",
    OpCode.GET_CHILDREN2: "GETC",
    OpCode.SYNC: "SYNC",
    OpCode.PING: "PING",
    OpCode.CHECK: "CHEC",
    OpCode.MULTI: "MULT",
    OpCode.CLOSE_SESSION: "CLOS",
    OpCode.SET_WATCHES: "SETW",
    OpCode.SET_WATCHES2: "STW2",
    OpCode.ADD_WATCH: "ADDW",
    OpCode.MULTI_READ: "MLTR",
    OpCode.CHECK_WATCHES: "CHKW",
    OpCode.REMOVE_WATCHES: "REMW",
    OpCode.GET_EPHEMERALS: "GETE",
    OpCode.GET_ALL_CHILDREN_NUMBER: "GETACN",
    OpCode.WHO_AM_I: "HOMI",
}
