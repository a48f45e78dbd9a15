"""The client-facing server of an ensemble member: the standalone ZooKeeperServer, told its
role. The leader orders writes through its CommitPipeline, whose persist step is a quorum round;
a learner's pipeline forwards writes and syncs to the leader and applies what the leader commits.
Only the leader runs the session expirer and the container/TTL sweeper.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import trio

from zkpy.errors import Code
from zkpy.jute.codec import JuteError, read_buffer
from zkpy.jute.ops import OpCode
from zkpy.replication.owners import SessionOwners
from zkpy.server.fourletter import LeaderStats, ServerStatus
from zkpy.server.node import ZooKeeperServer
from zkpy.server.pipeline import Callback, CommitPipeline
from zkpy.server.sessions import SessionTracker
from zkpy.server.status import build_status
from zkpy.tree.apply import Applier, Result
from zkpy.tree.txn import SERVER_AUTH, Txn
from zkpy.tree.watches import WatchManager

if TYPE_CHECKING:
    from zkpy.jute.records import ConnectRequest
    from zkpy.replication.environment import Environment
    from zkpy.server.config import ServerConfig
    from zkpy.server.connection import ClientConnection
    from zkpy.tree.datatree import DataTree

LEADER, FOLLOWER, OBSERVER, READ_ONLY = "leader", "follower", "observer", "read-only"


class RawResponse(bytes):
    """A reply body already encoded (a forwarded sync's path)."""

    def write(self, out: bytearray) -> None:
        out += self


class TouchRecorder(SessionTracker):
    """A learner's sessions: touched locally, reported to the leader with the next ping
    (the leader's tracker is the one that expires sessions)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.touched: set[int] = set()

    def touch(self, session_id: int) -> bool:
        self.touched.add(session_id)
        return super().touch(session_id)

    def take_touched(self) -> list[int]:
        touched, self.touched = self.touched, set()
        return sorted(touched)


class Forwarder:
    """What a learner's pipeline needs from its learner role."""

    def forward(
        self, session_id: int, cxid: int, op: int, body: bytes, auth: tuple[tuple[str, str], ...]
    ) -> None: ...

    def forward_sync(self, session_id: int, cxid: int) -> None: ...

    def revalidate(self, session_id: int, timeout: int, answer: Callable[[bool], None]) -> int:
        """Ask the leader whether the session lives, making this server its owner if it does;
        the question's number on the link (the claim, for withdraw)."""
        return 0

    def withdraw(self, session_id: int, question: int) -> None:
        """The connection `question` was asked for has closed: if it forwarded nothing of the
        session, give the claim back (owners.py says why that is safe)."""


class LearnerPipeline(CommitPipeline):
    """Writes go to the leader; their outcome comes back as the committed transaction itself,
    applied here in zxid order, and is matched to the waiting request by (session, cxid)."""

    def __init__(self, applier: Applier, watches: WatchManager, forwarder: Forwarder) -> None:
        super().__init__(applier, watches)
        self.forwarder = forwarder
        self.waiting: dict[tuple[int, int], Callback] = {}
        self.syncs: dict[tuple[int, int], tuple[Callback, bytes]] = {}

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.syncs)

    def submit(
        self,
        session_id: int,
        cxid: int,
        op: int,
        body: bytes,
        auth: tuple[tuple[str, str], ...] = SERVER_AUTH,
        callback: Callback | None = None,
    ) -> None:
        if op == OpCode.SYNC:
            if callback is not None:
                self.syncs[(session_id, cxid)] = (callback, _sync_path(body))
            self.forwarder.forward_sync(session_id, cxid)
            return
        if callback is not None:
            self.waiting[(session_id, cxid)] = callback
        self.forwarder.forward(session_id, cxid, op, body, auth)

    async def run(self) -> None:
        await trio.sleep_forever()

    def apply_committed(self, txns: list[Txn]) -> None:
        waiting = self.waiting
        self.apply_batch(txns, [waiting.pop((t.session_id, t.cxid), None) for t in txns])

    def refused(self, session_id: int, cxid: int, code: int) -> None:
        """The leader would not order this write. The reply carries this server's zxid, not the
        leader's: a client's lastZxidSeen must never pass the server it is connected to, or it is
        refused at its next connect to this server (and could read older data elsewhere)."""
        callback = self.waiting.pop((session_id, cxid), None)
        if callback is not None:
            callback(Result(self.applier.tree.last_zxid, code))

    def synced(self, session_id: int, cxid: int) -> None:
        entry = self.syncs.pop((session_id, cxid), None)
        if entry is not None:
            callback, path = entry
            callback(Result(self.applier.tree.last_zxid, 0, RawResponse(path)))


def _sync_path(body: bytes) -> bytes:
    """A sync reply echoes the request's path (a jute ustring) as it came."""
    try:
        raw, _ = read_buffer(body, 0)
    except (JuteError, IndexError, ValueError):
        return b"\xff\xff\xff\xff"
    if raw is None:
        return b"\xff\xff\xff\xff"
    return len(raw).to_bytes(4, "big", signed=True) + raw


class EnsembleServer(ZooKeeperServer):
    def __init__(self, config: ServerConfig, tree: DataTree, role: str, epoch: int, env: Environment) -> None:
        super().__init__(config, tree=tree)
        self.pipeline.wall_clock_ms = env.wall_clock_ms
        self.random_bytes = env.random_bytes
        self.observer = env.observer
        # ZooKeeper's session id layout: server id in the top byte, then time, then a count.
        first_id = (env.wall_clock_ms() << 24 & 0x00FFFFFFFFFFFFFF) >> 8 | (config.server_id or 0) << 56
        first_id += env.rng.getrandbits(16)
        self.state = role
        self.forwards_sync = role != LEADER
        self.pipeline.epoch = epoch
        self.peer_state = {
            LEADER: "leading - broadcast",
            FOLLOWER: "following - broadcast",
            OBSERVER: "observing - broadcast",
            READ_ONLY: "looking",
        }[role]
        self.quorum_size = 0
        self.leader_stats: Callable[[], LeaderStats] | None = None
        # The leader's record of which server each session's client is on (Apache's session
        # owner): a request forwarded by any other server is refused with SessionMoved. Without
        # it a write sent through a server the client then left could be applied after a write
        # the client made through the next server: FIFO client order broken (owners.py).
        self.owners = SessionOwners()
        # A learner's connections that asked the leader about their session: (session, question).
        self._claims: dict[ClientConnection, tuple[int, int]] = {}
        # The leader's own connections that resumed a session: (session, claim key), an int key
        # (a learner's keys are (link, question) tuples).
        self._local_claims: dict[ClientConnection, tuple[int, int]] = {}
        self._local_claim_count = 0
        self.my_sid = config.server_id or 0
        self.forwarder: Forwarder | None = None  # a learner's link to its leader
        self._catch_ups = 0  # the last cxid of a sync asked before resuming an unknown session
        tracker = SessionTracker if role == LEADER else TouchRecorder
        self.sessions = tracker(
            config.tick_time, config.server_id or 0, clock=trio.current_time, first_id=first_id
        )

    def status(self, word: str | None = None) -> ServerStatus:
        status = build_status(self, word)
        status.read_only = self.state == READ_ONLY
        status.peer_state = self.peer_state
        status.quorum_size = self.quorum_size
        if self.leader_stats is not None:
            status.leader = self.leader_stats()
        return status

    def use_pipeline(self, pipeline: CommitPipeline) -> None:
        pipeline.on_applied = self._on_applied
        pipeline.hold_answers = self.held_answers
        pipeline.epoch = self.pipeline.epoch
        pipeline.wall_clock_ms = self.pipeline.wall_clock_ms
        self.pipeline = pipeline

    async def serve_role(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The server's background work for this role; clients are routed here by the peer."""
        for sid, (timeout, _) in self.tree.sessions.items():  # a fresh timeout each, as after a restart
            self.sessions.add(sid, timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.pipeline.run)
            if self.state == LEADER:
                nursery.start_soon(self._expire_sessions)
                nursery.start_soon(self._watch_loop)
                nursery.start_soon(self._sweep_containers)
            task_status.started()

    def check_session(self, session_id: int, op: int, owner: int | None = None) -> int:
        refusal = super().check_session(session_id, op, owner)
        if refusal or self.state != LEADER or op == OpCode.CLOSE_SESSION:
            return refusal  # the leader checks owners; the expirer closes without owning
        owner = self.my_sid if owner is None else owner
        if op == OpCode.CREATE_SESSION:
            self.owners.claim(session_id, owner)
            return 0
        # A session with no owner yet (this leader is new) belongs to the first server to ask,
        # as Apache's: clients reconnect through a revalidation when their server changes leader.
        return 0 if self.owners.check(session_id, owner) else int(Code.SESSION_MOVED)

    def handle_connect(self, conn: ClientConnection, request: ConnectRequest) -> bool:
        pipeline = self.pipeline
        if (
            not isinstance(pipeline, LearnerPipeline)
            or not request.session_id
            or request.session_id in self.tree.sessions
        ):
            return super().handle_connect(conn, request)
        if self.client_is_ahead(conn, request):
            return False
        # A session this learner has not heard of may be newer than its tree: created through
        # another server, committed, and resumed here before this learner applied it (a
        # ConnectResponse carries no zxid, so the client is not "ahead"). Catch up with the
        # leader's commit point first (a sync round trip), then decide from the tree as usual;
        # Apache's learner asks the leader about every resumed session (its passwords follow from
        # the session id, so it needs no tree for them).
        self._catch_ups = self._catch_ups - 1 if self._catch_ups > -(2**31) else -1  # clients' are positive

        def caught_up(result: Result) -> None:
            if not super(EnsembleServer, self).handle_connect(conn, request):
                conn.close()

        pipeline.submit(request.session_id, self._catch_ups, OpCode.SYNC, b"", SERVER_AUTH, caught_up)
        return True

    def resume_session(
        self, conn: ClientConnection, session_id: int, timeout: int, password: bytes, read_only: bool | None
    ) -> None:
        # The session's connection here, if any, reads nothing more from now on (Apache's
        # processConnectRequest closes it before revalidating, CLIENT_RECONNECT): a write the
        # client sent on it before leaving, arriving late, would otherwise be forwarded after the
        # revalidation below made this server the owner again, and so ordered after the writes
        # the client made elsewhere meanwhile.
        if conn.closing:
            # The client left while this learner caught up first (handle_connect's sync): a claim
            # asked now would have no connection left to withdraw it, and could be the newest.
            return
        previous = self.by_session.get(session_id)
        if previous is not None and previous is not conn:
            previous.close()
        if self.state == LEADER:
            # Its own connection claims at once, but withdrawably, as a learner's question: the
            # client's ConnectRequest may reach the leader after the client gave up on it (held,
            # or retransmitted after a silent drop) and resumed elsewhere. Closing without having
            # ordered anything gives the session back (connection_closed).
            self._local_claim_count += 1
            key = self._local_claims[conn] = (session_id, self._local_claim_count)
            self.owners.claim(session_id, self.my_sid, key[1])
            super().resume_session(conn, session_id, timeout, password, read_only)
            return
        if self.forwarder is None:
            self._refuse_session(conn, read_only)
            return

        def answered(valid: bool) -> None:
            if conn.closing:
                return  # the client gave up meanwhile: connection_closed withdraws the claim
            if not valid:
                self._refuse_session(conn, read_only)
            elif self.sessions.is_alive(session_id):
                super(EnsembleServer, self).resume_session(conn, session_id, timeout, password, read_only)
            else:
                self._refuse_session(conn, read_only)  # closed here meanwhile

        # Apache's Learner.validateSession: the leader says whether the session lives and makes
        # this server its owner, before the client may send anything through here.
        self._claims[conn] = (session_id, self.forwarder.revalidate(session_id, timeout, answered))

    def connection_closed(self, conn: ClientConnection) -> None:
        super().connection_closed(conn)
        local = self._local_claims.pop(conn, None)
        if local is not None and self.state == LEADER:
            self.owners.relinquish(local[0], self.my_sid, local[1])  # kept if it ordered a request
        claim = self._claims.pop(conn, None)
        if claim is not None and self.forwarder is not None:
            # A client that gave up on its handshake here (the leader's answer was slow), or
            # left before sending a write, must not leave this server the owner: a question
            # that reached the leader after the client's next server asked would otherwise
            # refuse every write the client sends there (owners.py).
            self.forwarder.withdraw(*claim)

    def revalidated(self, session_id: int, owner: int, claim: Hashable = None) -> bool:
        """The leader's side of a learner's revalidation (`claim`: its link and question)."""
        if not self.sessions.is_alive(session_id):
            return False
        self.owners.claim(session_id, owner, claim)
        self.sessions.touch(session_id)
        return True

    def relinquished(self, session_id: int, owner: int, claim: Hashable) -> None:
        """The leader's side of a learner's withdrawn claim (owners.py)."""
        self.owners.relinquish(session_id, owner, claim)

    def link_dropped(self, link: int) -> None:
        """The leader dropped a learner's link: the relinquishes it could still have brought are
        lost, so its claims nothing was ordered under go (owners.py)."""
        self.owners.drop_link(link)

    def _on_applied(self, txn: Txn, result: Result) -> None:
        if txn.op == OpCode.CLOSE_SESSION:
            self.owners.forget(txn.session_id)
        if self.observer is not None:
            self.observer.applied(self.config.server_id or 0, txn.zxid, txn.pack())
        if txn.op == OpCode.CLOSE_SESSION and self.state != LEADER:
            conn = self.by_session.get(txn.session_id)
            if conn is not None and txn.session_id not in self.sessions.closing:
                conn.close()  # expired by the leader: the client learns it when it reconnects
        super()._on_applied(txn, result)

    def touched_sessions(self) -> list[int]:
        """Sessions heard from since the last ping, for the leader's expirer."""
        sessions = self.sessions
        return sessions.take_touched() if isinstance(sessions, TouchRecorder) else []

    def close_all_clients(self) -> None:
        for conn in list(self.connections):
            conn.close()


class ReadOnlyPipeline(CommitPipeline):
    """A server cut off from its quorum orders nothing: every write is NotReadOnly."""

    def submit(
        self,
        session_id: int,
        cxid: int,
        op: int,
        body: bytes,
        auth: tuple[tuple[str, str], ...] = SERVER_AUTH,
        callback: Callback | None = None,
    ) -> None:
        if callback is not None:
            code = 0 if op in (OpCode.CLOSE_SESSION, OpCode.SYNC) else int(Code.NOT_READ_ONLY)
            callback(
                Result(
                    self.applier.tree.last_zxid,
                    code,
                    RawResponse(b"\xff\xff\xff\xff") if op == OpCode.SYNC else None,
                )
            )

    async def run(self) -> None:
        await trio.sleep_forever()


class ReadOnlyServer(EnsembleServer):
    """readonlymode.enabled: while this server has no quorum it serves reads to clients that
    asked for a read-only session, from its own (possibly stale) tree. Their sessions are local,
    never written to the tree: nothing here may diverge from what the ensemble decides."""

    def __init__(self, config: ServerConfig, tree: DataTree, env: Environment) -> None:
        super().__init__(config, tree, READ_ONLY, 0, env)
        self.use_pipeline(ReadOnlyPipeline(self.applier, self.watches))

    def handle_connect(self, conn: ClientConnection, request: ConnectRequest) -> bool:
        if not request.read_only or self.client_is_ahead(conn, request):
            return False  # a read-write client looks for a server with a quorum
        config = self.config
        timeout = max(config.min_session_timeout, min(config.max_session_timeout, request.timeout))
        known = self.tree.sessions.get(request.session_id)
        if request.session_id and known is not None and known[1] == request.passwd:
            session_id, password = request.session_id, known[1]
        else:
            session_id, password = self.sessions.new_session_id(), self.random_bytes(16)
        self.sessions.add(session_id, timeout)
        self._attach(conn, session_id, timeout, password, True)
        return True

    async def serve_role(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
