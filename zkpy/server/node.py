"""One zkpy server: the listener, the commit pipeline, the session expirer and the
container/TTL sweeper, all under one nursery.

Standalone for now: the pipeline persists locally (or not at all) and this server
is its own leader. The ensemble issue swaps the pipeline's persist step for a
quorum round and adds the peer tasks beside these.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from zkpy.errors import Code
from zkpy.jute.codec import JuteError, encode
from zkpy.jute.ops import DeleteRequest, MultiRequest, OpCode
from zkpy.jute.records import PERM_READ, ConnectRequest, ConnectResponse
from zkpy.server import fourletter
from zkpy.server.connection import ClientConnection, HeldAnswers
from zkpy.server.fourletter import ServerStatus
from zkpy.server.idle import IdleReader
from zkpy.server.latency import BUCKETS_MS, OpLatencies, Summary
from zkpy.server.limits import too_many_ops
from zkpy.server.pipeline import CommitPipeline, Persist, persist_nothing
from zkpy.server.prep import compact_failing_multi, deciding_auth, refuse_early
from zkpy.server.protocol import connect_response
from zkpy.server.reads import Reads
from zkpy.server.sessions import SessionTracker
from zkpy.server.status import build_status
from zkpy.server.tls import server_ssl_context
from zkpy.tree import acl as acls
from zkpy.tree.apply import Applier, Result, allowed
from zkpy.tree.datatree import CONTAINER_OWNER, OPEN_ACL, AclTuple, DataTree, ttl_of
from zkpy.tree.txn import SERVER_AUTH, Txn, session_body
from zkpy.tree.watches import WatchManager

if TYPE_CHECKING:
    from zkpy.server.config import ServerConfig

log = logging.getLogger(__name__)

VERSION = fourletter.VERSION  # clients parse the leading x.y.z as the ZooKeeper release spoken


class ServerStats:
    """The server's request counters: what srvr/stat/mntr show (reset by srst) and, per request
    type, the latency buckets of the metrics endpoint (never reset: Prometheus counters only grow).

    One record() per answered request, kept to a dict lookup, a bisect, two additions and two
    comparisons: counts and sums live only in the per-op rows, and the srst-able summary (count,
    sum, min, max since the last reset) is worked out from them when someone asks.
    """

    def __init__(self, started: float = 0.0) -> None:
        self.packets_received = 0
        self.packets_sent = 0
        self.started = started
        self.by_op = OpLatencies()
        self.bytes_received = 0
        self.bytes_sent = 0  # by connections that have closed; open ones count their own
        self._min = math.inf
        self._max = 0.0
        self._last = 0.0
        self._base_count = 0.0  # totals at the last reset
        self._base_sum = 0.0

    def record(self, op: int, latency_ms: float) -> None:
        rows = self.by_op.rows
        row = rows.get(op)
        if row is None:
            row = rows[op] = [0.0] * (len(BUCKETS_MS) + 2)
        row[bisect_left(BUCKETS_MS, latency_ms)] += 1
        row[-1] += latency_ms
        self._last = latency_ms
        if latency_ms > self._max:
            self._max = latency_ms
        if latency_ms < self._min:
            self._min = latency_ms

    def _totals(self) -> tuple[float, float]:
        count = total = 0.0
        for row in self.by_op.rows.values():
            count += sum(row[:-1])
            total += row[-1]
        return count, total

    @property
    def latency(self) -> Summary:
        """Response times since the last srst, as the four-letter words report them."""
        count, total = self._totals()
        summary = Summary()
        summary.count = int(count - self._base_count)
        if summary.count:
            summary.total = total - self._base_sum
            summary.min, summary.max, summary.last = self._min, self._max, self._last
        return summary

    def reset(self) -> None:
        self.packets_received = self.packets_sent = 0
        self._base_count, self._base_sum = self._totals()
        self._min, self._max, self._last = math.inf, 0.0, 0.0


def _creates_ttl(op: int, body: bytes) -> bool:
    if op == OpCode.CREATE_TTL:
        return True
    if op != OpCode.MULTI:
        return False
    try:
        request, _ = MultiRequest.read(body, 0)
    except JuteError:
        return False  # the apply step answers the malformed multi
    return any(sub_op == OpCode.CREATE_TTL for sub_op, _ in request.ops)


def collectable_nodes(tree: DataTree, now_ms: int) -> list[str]:
    """The sweep's candidates: containers that have had a child and have none now, and
    childless TTL nodes unchanged for longer than their TTL.

    Never-used containers stay (a recipe creates the parent before its first child), and an
    emptied container waits for the sweep rather than going with its last child.
    """
    found: list[str] = []
    nodes = tree.nodes
    for path in [*tree.containers, *tree.ttls]:
        node = nodes.get(path)
        if node is None or node.children:
            continue
        owner = node.ephemeral_owner
        if owner == CONTAINER_OWNER:
            if node.cversion > 0:  # the tree's cversion counts child creations
                found.append(path)
        elif now_ms - node.mtime > ttl_of(owner):
            found.append(path)
    return found


def _may_read(watcher: object, acl: AclTuple) -> bool:
    """Whether a watcher (a client connection) may hear of a change to a node with `acl`."""
    if acl is OPEN_ACL:
        return True
    auth = getattr(watcher, "auth", None)
    return auth is not None and allowed(acl, PERM_READ, auth)


class StartupError(Exception):
    """The server cannot start as configured; str() is one line naming the setting, its value
    and what to do, because that is all an operator sees of a server that exits at once."""


def _listen_error(port_key: str, address_key: str, address: str, port: int, e: OSError) -> StartupError:
    """Turn a failed bind into the zoo.cfg settings to change."""
    reason = e.strerror or str(e)
    if isinstance(e, socket.gaierror):
        return StartupError(
            f"{address_key}={address} cannot be resolved ({reason}): use an IP address or a host name "
            "this machine can resolve"
        )
    if e.errno == errno.EADDRINUSE:
        return StartupError(
            f"{port_key}={port} on {address} is already in use (another ZooKeeper or zkpy?): stop it "
            f"or choose another {port_key}"
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"{address_key}={address} is not an address of this machine ({reason}): use one of its "
            "addresses, or 0.0.0.0 for all of them"
        )
    if e.errno == errno.EACCES:
        return StartupError(
            f"{port_key}={port} on {address}: {reason}: ports below 1024 need privileges; choose a higher "
            f"{port_key}"
        )
    return StartupError(f"cannot listen on {address}:{port} ({port_key}, {address_key}): {reason}")


async def open_client_listeners(config: ServerConfig) -> list[trio.abc.Listener[trio.abc.Stream]]:
    """Bind the client ports: plain first, then TLS when secureClientPort is set.

    Errors surface here, before anything starts: StartupError (a port in use, an address that is
    not this machine's) and TlsConfigError.
    """
    ssl_context = server_ssl_context(config)
    address = config.client_port_address
    port = config.client_port or 0
    backlog = config.client_port_listen_backlog if config.client_port_listen_backlog > 0 else None
    try:
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(
            await trio.open_tcp_listeners(port, host=address, backlog=backlog)
        )
    except OSError as e:
        raise _listen_error("clientPort", "clientPortAddress", address, port, e) from None
    if ssl_context is not None and config.secure_client_port is not None:
        secure_key = (
            "secureClientPortAddress" if config.extra.get("secureClientPortAddress") else "clientPortAddress"
        )
        host = config.extra.get("secureClientPortAddress") or address
        try:
            # https_compatible: closing never waits on a TLS goodbye from a peer that is not reading.
            listeners += await trio.open_ssl_over_tcp_listeners(
                config.secure_client_port, ssl_context, host=host, https_compatible=True, backlog=backlog
            )
        except OSError as e:
            for listener in listeners:
                await listener.aclose()
            raise _listen_error("secureClientPort", secure_key, host, config.secure_client_port, e) from None
    return listeners


class ZooKeeperServer:
    forwards_sync = False  # an ensemble's learner sends sync to its leader

    def __init__(
        self, config: ServerConfig, persist: Persist = persist_nothing, tree: DataTree | None = None
    ) -> None:
        self.config = config
        self.tree = tree or DataTree()
        self.watches = WatchManager()
        self.watches.readable = _may_read
        self.applier = Applier(self.tree)
        self.pipeline = CommitPipeline(self.applier, self.watches, persist)
        self.pipeline.on_applied = self._on_applied
        self.held_answers = HeldAnswers()
        self.idle = IdleReader()  # parked idle connections' pings (idle.py)
        self.pipeline.hold_answers = self.held_answers
        self.reads = Reads(self.tree, self.watches, config.multi_max_ops)
        self.sessions = SessionTracker(config.tick_time, config.server_id or 0, clock=trio.current_time)
        # Insertion-ordered (a dict, not a set of objects ordered by address): whatever walks the
        # connections does so in the same order every run, which a seeded simulation relies on.
        self.connections: dict[ClientConnection, None] = {}
        self._per_address: dict[str, int] = {}  # open client connections by peer address (maxClientCnxns)
        self.by_session: dict[int, ClientConnection] = {}
        self.stats = ServerStats(started=time.time())
        self.random_bytes: Callable[[int], bytes] = os.urandom  # session passwords (seeded in simulation)
        self.state = "standalone"
        # Extra mntr lines from the parts around the server (storage, later replication).
        self.metric_sources: list[Callable[[], dict[str, int | float | str]]] = []
        self.container_check_ms = config.container_check_interval_ms
        self.port = 0
        self._expirer_wakeup = trio.Event()
        self._loop_beat: float | None = None  # when _watch_loop last ran (None: it does not run)
        self._stall_grace_until = 0.0

    # -- lifecycle ------------------------------------------------------------------
    async def serve(
        self,
        listeners: list[trio.abc.Listener[trio.abc.Stream]] | None = None,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; reports the bound port via task_status."""
        config = self.config
        if listeners is None:
            listeners = await open_client_listeners(config)
        self.port = listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
        for sid, (timeout, _) in self.tree.sessions.items():  # restored from disk: a fresh timeout each
            self.sessions.add(sid, timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.pipeline.run)
            nursery.start_soon(self._expire_sessions)
            nursery.start_soon(self._watch_loop)
            nursery.start_soon(self._sweep_containers)
            nursery.start_soon(self.idle.run)
            nursery.start_soon(trio.serve_listeners, self._handle_client, listeners)
            log.debug(
                "serving clients on %s:%d", config.client_port_address, self.port
            )  # run.py logs the banner
            task_status.started(self.port)

    async def _handle_client(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        sock = stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket
        try:
            remote = sock.getpeername()[:2]
        except OSError:
            await stream.aclose()
            return
        limit = self.config.max_client_cnxns
        ip = remote[0]
        count = self._per_address.get(ip, 0)
        if limit and count >= limit:
            # As ZooKeeper's NIOServerCnxnFactory: the connection is closed before anything is read.
            log.warning("Too many connections from %s - max is %d", ip, limit)
            await stream.aclose()
            return
        self._per_address[ip] = count + 1
        conn = ClientConnection(self, stream, remote)
        self.connections[conn] = None
        try:
            await conn.serve()
        except Exception:  # a bug must cost one connection, never the server
            log.exception("connection from %s:%d failed", *remote)
        finally:
            left = self._per_address[ip] - 1
            if left:
                self._per_address[ip] = left
            else:
                del self._per_address[ip]

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.pop(conn, None)
        if self.by_session.get(conn.session_id) is conn:
            del self.by_session[conn.session_id]
        self.watches.remove_watcher(conn)
        self.stats.packets_sent += conn.packets_sent
        self.stats.bytes_sent += conn.sent_bytes

    # -- handshake ------------------------------------------------------------------
    def handle_connect(self, conn: ClientConnection, request: ConnectRequest) -> bool:
        """Start or resume a session; False means close the connection at once."""
        tree = self.tree
        if self.client_is_ahead(conn, request):
            return False
        config = self.config
        timeout = max(config.min_session_timeout, min(config.max_session_timeout, request.timeout))
        read_only = None if request.read_only is None else False
        if request.session_id == 0:
            session_id = self.sessions.new_session_id()
            password = self.random_bytes(16)

            def created(result: Result) -> None:
                if result.err:  # refused (a failing disk): no session exists; the client retries
                    log.warning("creating a session for %s failed (error %d)", conn.remote[0], result.err)
                    conn.close()
                    return
                self._attach(conn, session_id, timeout, password, read_only)

            self.pipeline.submit(
                session_id, 0, OpCode.CREATE_SESSION, session_body(timeout, password), SERVER_AUTH, created
            )
            return True
        known = tree.sessions.get(request.session_id)
        if known is None or known[1] != request.passwd or not self.sessions.is_alive(request.session_id):
            self._refuse_session(conn, read_only)
            return True
        self.resume_session(conn, request.session_id, timeout, known[1], read_only)
        return True

    def resume_session(
        self, conn: ClientConnection, session_id: int, timeout: int, password: bytes, read_only: bool | None
    ) -> None:
        """A known, live session moves to this connection (an ensemble's learner asks its leader
        first: see EnsembleServer)."""
        self.sessions.timeouts[session_id] = timeout
        self._attach(conn, session_id, timeout, password, read_only)

    def _refuse_session(self, conn: ClientConnection, read_only: bool | None) -> None:
        """The session is gone: a zero session id and timeout tell the client it expired."""
        conn.send(connect_response(ConnectResponse(0, 0, 0, b"\x00" * 16, read_only)))
        conn.close()
        conn.attach(0, 0)

    def client_is_ahead(self, conn: ClientConnection, request: ConnectRequest) -> bool:
        """The client has seen a newer zxid than this server has: serving it would take it back in
        time. It is refused (the connection closed) and tries another server, as Apache's."""
        if request.last_zxid_seen <= self.tree.last_zxid:
            return False
        log.info(
            "refusing session from %s: it has seen zxid 0x%x, our last zxid is 0x%x",
            conn.remote[0], request.last_zxid_seen, self.tree.last_zxid,
        )  # fmt: skip
        return True

    def _attach(
        self, conn: ClientConnection, session_id: int, timeout: int, password: bytes, read_only: bool | None
    ) -> None:
        if conn.closing:
            # The client left while its handshake waited (a new session's commit): the
            # connection may be forgotten already (connection_closed), and by_session would keep
            # it for good. The session, if new, expires unused, as Apache's.
            return
        previous = self.by_session.get(session_id)
        if previous is not None and previous is not conn:
            previous.close()  # the session moved to this connection
        self.by_session[session_id] = conn
        self.sessions.touch(session_id)
        conn.send(connect_response(ConnectResponse(0, timeout, session_id, password, read_only)))
        conn.attach(session_id, timeout)

    def refuse_write(
        self,
        op: int,
        body: bytes,
        session_id: int,
        auth: Iterable[tuple[str, str]] | None = None,
        owner: int | None = None,
    ) -> int:
        """An error code for a write this server will not order at all (0: go ahead).

        Decisions that depend on this server's state or config are made here, before the
        transaction exists, so replaying the log never depends on them.
        """
        if self.pipeline.write_error is not None:
            return int(Code.SYSTEM_ERROR)
        if op == OpCode.MULTI and too_many_ops(body, self.config.multi_max_ops):
            log.info(
                "refused a multi of more than %d ops (multiMaxOps) from session 0x%x",
                self.config.multi_max_ops,
                session_id,
            )
            return int(Code.BAD_ARGUMENTS)
        if not self.config.extended_types_enabled and _creates_ttl(op, body):
            return int(Code.UNIMPLEMENTED)
        refusal = self.check_session(session_id, op, owner)
        if refusal or auth is None:
            return refusal
        return self._refuse_early(op, body, session_id, auth)

    def check_session(self, session_id: int, op: int, owner: int | None = None) -> int:
        """Apache's SessionTracker.checkSession, asked of every request but a session's own create
        and close: a session that is closing (closeSession taken, or expired) or unknown gets
        SessionExpired. A request sent after closeSession must not run: a create(ephemeral)
        ordered after the close would leave a node no session owns. `owner` is the server the
        request came through (an ensemble's leader checks it; see EnsembleServer)."""
        if op in (OpCode.CREATE_SESSION, OpCode.CLOSE_SESSION) or self.sessions.is_alive(session_id):
            return 0
        return int(Code.SESSION_EXPIRED)

    def close_session(
        self,
        session_id: int,
        cxid: int = 0,
        auth: tuple[tuple[str, str], ...] = SERVER_AUTH,
        callback: Callable[[Result], None] | None = None,
    ) -> None:
        """Order a closeSession (the client's, or the expirer's). The session is closing from now
        on; if the close is refused (a failing disk), it is live again and expires anew after its
        timeout, so its ephemerals go once writes work again instead of staying for ever."""
        self.sessions.mark_closing(session_id)
        self.sessions.closes_in_flight.add(session_id)

        def closed(result: Result) -> None:
            self.sessions.closes_in_flight.discard(session_id)
            if result.err and session_id in self.sessions.closing:
                self.sessions.closing.discard(session_id)
                if self.sessions.touch(session_id):
                    self._expirer_wakeup.set()
            if callback is not None:
                callback(result)

        self.pipeline.submit(session_id, cxid, OpCode.CLOSE_SESSION, b"", auth, closed)

    @property
    def orders_writes(self) -> bool:
        """A standalone server or an ensemble's leader; a learner forwards its writes."""
        return not self.forwards_sync

    def _refuse_early(self, op: int, body: bytes, session_id: int, auth: Iterable[tuple[str, str]]) -> int:
        """The answer, unlogged, to a write certain to be refused on the tree as it stands (NoAuth, NoNode, a
        malformed request: zkpy.server.prep) -- only where writes are ordered (a learner's tree may lag its
        leader's), and only when no write of this session is in flight (its own setACL or create, still
        unapplied, may change the answer)."""
        in_flight = self.pipeline.in_flight
        if not self.orders_writes or in_flight.sessions.get(session_id):
            return 0
        return refuse_early(self.tree, op, body, acls.as_auth_ids(auth), in_flight.paths)

    def prepare_txn(
        self, op: int, body: bytes, session_id: int, auth: Iterable[tuple[str, str]]
    ) -> tuple[bytes, tuple[tuple[str, str], ...]]:
        """The body and auth ids a write's transaction carries, chosen where the write is ordered (a learner
        forwards the body and all its ids to its leader, which chooses): only the ids that can decide it,
        and for a multi certain to fail, a small one apply answers the same (zkpy.server.prep)."""
        ids = acls.as_auth_ids(auth)
        if not self.orders_writes:
            return body, tuple(ids.java_order())
        in_flight = self.pipeline.in_flight
        if op == OpCode.MULTI and not in_flight.sessions.get(session_id):
            body = compact_failing_multi(self.tree, body, ids, in_flight.paths) or body
        return body, deciding_auth(self.tree, op, body, ids, in_flight)

    # -- commit side effects ----------------------------------------------------------
    def _on_applied(self, txn: Txn, result: Result) -> None:
        if txn.op == OpCode.CREATE_SESSION:
            if result.err:  # a malformed one changed nothing
                return
            timeout = self.tree.sessions[txn.session_id][0]
            self.sessions.add(txn.session_id, timeout)
            self._expirer_wakeup.set()
        elif txn.op == OpCode.CLOSE_SESSION:
            self.sessions.remove(txn.session_id)

    # -- background tasks -------------------------------------------------------------
    async def _watch_loop(self) -> None:
        """Notice when this process did not run for a while (SIGSTOP, a swapped-out VM, a long
        pause): the session expirer must not judge sessions by a silence that was ours. A beat
        every half tick; a gap of more than a tick opens a tick of grace."""
        tick = self.config.tick_time / 1000
        self._loop_beat = trio.current_time()
        while True:
            await trio.sleep(tick / 2)
            self.beat(trio.current_time(), tick / 2)

    def beat(self, now: float, interval: float) -> None:
        """One beat of a loop that runs every `interval` seconds (_watch_loop here; a learner's
        tick, learner.py, which runs no _watch_loop): a gap of more than two intervals means this
        process did not run, and opens a tick of grace; outside it, silent connections close."""
        last = self._loop_beat
        if last is not None and now - last > 2 * interval:
            self._stall_grace_until = now + self.config.tick_time / 1000
        self._loop_beat = now
        if now >= self._stall_grace_until:
            self._close_silent_connections(now)

    def _close_silent_connections(self, now: float) -> None:
        """Close each connection whose client sent nothing for longer than its session's timeout.

        A client pings every third of its timeout or so when it has nothing else to say, so such a
        connection's client has gone: moved to another server while this end stayed half-open
        (no FIN or RST ever came), or its host vanished. Had this been the session's only server,
        the session would have expired by now. Closing it withdraws the claim a learner may hold
        at the leader for it (replication/owners.py), which otherwise stood until the kernel gave
        up on the socket, hours later: the client's writes through the server it moved to were
        refused with SessionMoved meanwhile (issue 14's known limit). Apache keeps such a
        connection open. Only a connection waiting for its client's bytes is judged: one that
        stopped reading (its output above the high-water mark, or the server over its
        outstanding limit) leaves the client's pings queued in its socket, and its silence
        counts from when it reads again. Not judged right after this process was stalled (the
        pings may be queued in the sockets): the caller skips a tick of grace."""
        for conn in self.connections:
            timeout = conn.timeout
            if (
                conn.awaiting_client
                and conn.session_id
                and timeout
                and now - conn.last_read > timeout / 1000
                and not conn.closing
            ):
                log.info(
                    "closing connection from %s:%d (session 0x%x): nothing received for more than "
                    "the session timeout (%d ms)", *conn.remote, conn.session_id, timeout,
                )  # fmt: skip
                conn.close()

    async def _expire_sessions(self) -> None:
        tick = self.config.tick_time / 1000
        while True:
            deadline = self.sessions.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 3600):
                await self._expirer_wakeup.wait()
            self._expirer_wakeup = trio.Event()
            now = trio.current_time()
            beat = self._loop_beat
            if (beat is not None and now - beat > tick) or now < self._stall_grace_until:
                # This process did not run for a while: the pings that arrived meanwhile are still
                # queued behind this task (in sockets, or in a leader's links from its learners).
                # Let them refresh their sessions before judging any session silent.
                wait = max(tick, self._stall_grace_until - now)
                log.info("the server was stalled: session expiry waits %.1fs for queued pings", wait)
                await trio.sleep(wait)
            for session_id in self.sessions.expired():
                log.info("session 0x%x expired", session_id)
                conn = self.by_session.get(session_id)
                if conn is not None:
                    conn.close()  # the client learns of the expiry when it reconnects
                self.close_session(session_id)

    async def _sweep_containers(self) -> None:
        """ZooKeeper's ContainerManager: every checkInterval, delete the collectable nodes.

        Each deletion is an ordinary deleteContainer transaction through the pipeline, so it is
        logged (and, in an ensemble, replicated) like any write; apply re-checks the rule at
        apply time, so a child created meanwhile simply makes the delete fail.
        """
        while True:
            await trio.sleep(self.container_check_ms / 1000)
            for path in collectable_nodes(self.tree, self.pipeline.wall_clock_ms()):
                self.pipeline.submit(0, 0, OpCode.DELETE_CONTAINER, encode(DeleteRequest(path, -1)))

    # -- four-letter words ------------------------------------------------------------
    def four_letter(self, word: str) -> str:
        whitelist = self.config.four_letter_whitelist
        if word not in whitelist or word not in fourletter.COMMANDS:
            # Refused or unknown: answered before any work, whatever the server holds.
            return fourletter.respond(word, ServerStatus(), whitelist)
        if word in fourletter.RESET_WORDS:
            self.stats.reset()
            for conn in self.connections:
                conn.reset_stats()
        return fourletter.respond(word, self.status(word), whitelist)

    def status(self, word: str | None = None) -> ServerStatus:
        """What the four-letter word `word` shows (None: everything)."""
        return build_status(self, word)

