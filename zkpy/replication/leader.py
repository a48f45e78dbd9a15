"""The leader's role for one epoch (ZAB phases 1-3, as Apache's Leader and LearnerHandler).

Discovery: learners send their acceptedEpoch; once a quorum (the leader included) has, the
new epoch is max + 1, persisted as acceptedEpoch, and offered. Each learner answers with its
currentEpoch and last zxid; a learner ahead of the leader ends this leadership (the election
was wrong about who is most up to date).

Synchronisation: each learner gets DIFF, TRUNC or SNAP (history.plan_sync) and NEWLEADER; it
acknowledges NEWLEADER only after all it was sent is on its disk. A quorum of those
acknowledgements commits the leader's whole history: currentEpoch is persisted, the history is
applied, and clients are served. Learners that come later sync the same way and join the
broadcast in the same step, so no proposal falls between their sync and the stream.

Broadcast: the CommitPipeline's persist step is `replicate`: propose to every learner, log
locally, and wait until a quorum of voters (the leader among them) has the batch fsynced.
Acks are cumulative, as logs are prefixes. Heartbeats every tick; a learner silent for syncLimit
ticks is dropped, and a leader that no longer hears a quorum steps down.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from zkpy.jute.ops import OpCode
from zkpy.replication import leader_core as core
from zkpy.replication import messages as m
from zkpy.replication.leader_core import LeaderCore
from zkpy.replication.link import LINK_ERRORS, PeerLink, root_cause, why_role_ended
from zkpy.replication.roles import RoleContext
from zkpy.replication.serving import LEADER, EnsembleServer
from zkpy.replication.wire import MAX_HANDSHAKE_FRAME, encode_frame
from zkpy.server.fourletter import LeaderStats
from zkpy.storage.errors import StorageError
from zkpy.tree.txn import Txn

if TYPE_CHECKING:
    from zkpy.replication.environment import SnapshotSource

log = logging.getLogger(__name__)

# Bytes queued to one learner and not yet written to its socket (beyond its sync frame) at which
# the leader drops it: a learner that cannot keep up (a slow disk: it stops reading) must not
# grow the leader's memory. It syncs again when it reconnects.
MAX_QUEUED_TO_LEARNER = 128 * 1024 * 1024
# Learners' messages waiting for the driver at which their links stop being read: a learner
# flooding forwarded requests fills its socket, not the leader's memory (each at most
# jute.maxbuffer). The driver's other inputs are bounded at their sources (batches in flight,
# one tick, one log write at a time).
MAX_WAITING_MESSAGES = 1024
# What is broadcast while a learner's sync streams waits for it (its order matters: after its
# NEWLEADER). A SNAP of a large tree takes a while, so this bound is larger; past it the learner
# would only fall further behind, and it is dropped (it syncs again).
MAX_HELD_FOR_SYNC = 1024 * 1024 * 1024

# A streamed SNAP keeps at most this many bytes queued on its link: the forked child's pipe and
# the link's socket carry the rest, so the leader never holds the tree's image in memory.
STREAM_WINDOW = 4 * 1024 * 1024
SYNC_PIECE = 1024 * 1024  # a large DIFF's transactions go in pieces of about this size

# Proposal batches the leader has out at once (issue 17: pipelined proposals). One batch in flight
# bound write throughput by fsync + round-trip latency; several keep the log writer and the
# learners busy. Commits stay in zxid order (acks are cumulative) and each batch is answered only
# once a quorum, the leader included, has it durable; the bound is the back-pressure.
BATCHES_IN_FLIGHT = 4
# Inputs the role takes in one turn of the event loop when they are queued already (see _run).
EVENTS_PER_TURN = 64


def new_leader_core(ctx: RoleContext, init_limit: float, sync_limit: float, now: float) -> LeaderCore:
    """A leader's core for a new epoch: it plans syncs from the server's history window and SNAPs
    the server's tree as it stands at that moment."""
    return LeaderCore(
        ctx.my_id, ctx.quorum, ctx.epochs.accepted, ctx.epochs.current, ctx.history.last,
        frozenset(ctx.config.servers), init_limit, sync_limit, now,
        history=ctx.history, tree=lambda: ctx.tree,
        max_snap_syncs=ctx.config.max_concurrent_snap_syncs, max_diff_syncs=ctx.config.max_concurrent_diff_syncs,
        stream_snapshots=True,
    )  # fmt: skip


class Leader:
    """The trio glue around LeaderCore: learner links, the local log, the tree and the client
    server. Every input of the core (a link connected, a message, a link gone, a tick, the
    pipeline's batch, the local log's completion) arrives through one channel, `_events`, and
    one task feeds it to the core and carries out the effects in order."""

    def __init__(self, peer: RoleContext) -> None:
        self.peer = peer
        self.me = peer.my_id
        self.quorum = peer.quorum
        self.tick = peer.config.tick_time / 1000
        init_limit = (peer.config.init_limit or 10) * self.tick
        sync_limit = (peer.config.sync_limit or 5) * self.tick
        self.core = new_leader_core(peer, init_limit, sync_limit, trio.current_time())
        self.links: dict[int, PeerLink] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self._conn_ids = itertools.count(1)
        self._events_in, self._events = trio.open_memory_channel[tuple[str, int, Any]](math.inf)
        self._to_log_in, self._to_log = trio.open_memory_channel[list[Txn]](math.inf)
        self._commit_changed = trio.Event()
        self._progress = trio.Event()  # set each time an event was handled
        self._waiting_messages = 0  # learners' messages in _events, not yet handled
        self.established = trio.Event()
        self.server: EnsembleServer | None = None
        self._nursery: trio.Nursery | None = None
        self._sync_started: dict[int, float] = {}
        self._sync_frames: dict[int, int] = {}  # conn -> bytes of its sync (SNAP) frames
        # A learner whose SNAP is being streamed: what is broadcast meanwhile waits here (frames,
        # bytes) and follows its NEWLEADER, in order; the stream's task is cancelled with the link.
        self._holding: dict[int, tuple[deque[tuple[bytes, str]], list[int]]] = {}
        self._pumps: dict[int, trio.CancelScope] = {}
        self.started_at = trio.current_time()
        self.proposal_sizes = (-1, -1, -1)  # last, min, max bytes of a proposal frame (mntr)

    @property
    def epoch(self) -> int:
        return self.core.epoch

    @property
    def committed(self) -> int:
        return self.core.committed

    @property
    def counter_limit(self) -> int:
        return self.core.counter_limit

    @counter_limit.setter
    def counter_limit(self, value: int) -> None:
        self.core.counter_limit = value

    # -- the role ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except BaseException as group:  # a nursery's group may also hold Cancelled
            ended = why_role_ended(group, self.peer, "leading failed")
            if ended is None:
                raise
            raise ended from None
        finally:
            self._nursery = None
            if self.server is not None:
                self.server.close_all_clients()

    async def _run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._ticks)
            nursery.start_soon(self._log_proposals)
            await self._carry_out(self.core.start())
            async for event in self._events:
                await self._handle(*event)
                # What else is queued is taken in the same turn, in order, without a trip through
                # the scheduler for each (one per forwarded client write: ~4 us of CPU each); a
                # bounded number, so the clients' tasks still get their turns.
                for _ in range(EVENTS_PER_TURN):
                    try:
                        event = self._events.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    await self._handle(*event)

    async def _handle(self, kind: str, conn: int, value: Any) -> None:
        """One input of the role, carried to the core and its effects carried out."""
        now = trio.current_time()
        if kind == "message":
            self._waiting_messages -= 1
            if self.peer.env.observer is not None:  # not formatted on every message otherwise
                self._point(f"leader got {value[0] if isinstance(value, list) and value else '?'}")
            effects = self.core.receive_wire(conn, value, now)
            self._note_ack(conn, value)
            self._identified(conn)
        elif kind == "connected":
            self.core.connected(conn, now)
            effects = []
        elif kind == "gone":
            effects = self.core.disconnected(conn)
            # Also a link the core never knew by a sid (it hung up or sent junk before
            # its info): nothing else would forget it, and its buffer with it.
            self.links.pop(conn, None)
            self.scopes.pop(conn, None)
            self._sync_started.pop(conn, None)
            self._sync_frames.pop(conn, None)
            self._stop_stream(conn)
        elif kind == "propose":
            effects = self.core.propose(value)
            self._record_size(effects)
        elif kind == "logged":
            self._point("leader logged")
            effects = self.core.logged(value)
        elif kind == "sync sent":
            self.core.sync_sent(conn, now)
            effects = []
        else:
            effects = self.core.tick(now)
        await self._carry_out(effects)
        self._progress.set()
        self._progress = trio.Event()

    async def _ticks(self) -> None:
        while True:
            await trio.sleep(self.tick)
            self._events_in.send_nowait(("tick", 0, None))

    async def _log_proposals(self) -> None:
        """The core's WriteLog batches, in order, whatever queued meanwhile in one fsync (several
        batches are in flight: BATCHES_IN_FLIGHT). A failing log ends the role
        (StorageError: why_role_ended keeps the server out of elections until its disk works);
        nothing in the batch is acknowledged, as its `logged` never arrives."""
        async for txns in self._to_log:
            while True:  # group commit: batches proposed meanwhile go in the same fsync
                try:
                    txns = txns + self._to_log.receive_nowait()
                except trio.WouldBlock:
                    break
            await self.peer.store.persist(txns)
            self._events_in.send_nowait(("logged", 0, txns[-1].zxid))

    # -- effects --------------------------------------------------------------------------
    async def _carry_out(self, effects: list[core.Effect]) -> None:
        peer = self.peer
        for effect in effects:
            if isinstance(effect, core.Broadcast):
                frame = encode_frame(effect.message.to_wire())
                tag = effect.message.TAG
                for conn in effect.conns:
                    link = self.links.get(conn)
                    if link is None:
                        continue
                    holding = self._holding.get(conn)
                    if holding is not None:
                        holding[0].append((frame, tag))
                        holding[1][0] += len(frame)
                    else:
                        link.send_frame(frame, tag)
                    self._check_queue(conn, link)
            elif isinstance(effect, core.SendTo):
                link = self.links.get(effect.conn)
                if link is not None:
                    link.send(effect.message)
                if isinstance(effect.message, m.UpToDate):
                    self._sync_frames.pop(effect.conn, None)  # its acknl says it read them all
                if isinstance(effect.message, m.UpToDate) and effect.conn in self._sync_started:
                    peer.stats.follower_sync_ms.record((trio.current_time() - self._sync_started.pop(effect.conn)) * 1000)
            elif isinstance(effect, core.ForwardRequest):
                self._forward(effect)
            elif isinstance(effect, core.TouchSessions):
                if self.server is not None:
                    for session_id in effect.session_ids:
                        self.server.sessions.touch(session_id)
            elif isinstance(effect, core.Committed):
                self._point("leader committed")
                peer.stats.quorum_acked(effect.zxid, trio.current_time())
                self._report_committed(effect.zxid)
                self._commit_changed.set()
                self._commit_changed = trio.Event()
            elif isinstance(effect, core.SyncLearner):
                self._sync(effect)
            elif isinstance(effect, core.Revalidate):
                claim = (effect.conn, effect.question)
                valid = self.server is not None and self.server.revalidated(effect.session_id, effect.sid, claim)
                link = self.links.get(effect.conn)
                if link is not None:
                    link.send(m.Revalidated(effect.session_id, valid))
            elif isinstance(effect, core.Relinquish):
                if self.server is not None:
                    self.server.relinquished(effect.session_id, effect.sid, (effect.conn, effect.question))
            elif isinstance(effect, core.Close | core.DropLearner):
                self._stop_stream(effect.conn)
                scope = self.scopes.pop(effect.conn, None)
                self.links.pop(effect.conn, None)
                if scope is not None:
                    scope.cancel()
                if isinstance(effect, core.Close):
                    log.info("closing learner link %d: %s", effect.conn, effect.reason)
                elif self.server is not None:
                    self.server.link_dropped(effect.conn)
            elif isinstance(effect, core.AcceptEpoch):
                peer.epochs.accept(effect.epoch)
                self._point("leader accepted epoch")
                log.info("new epoch %d", effect.epoch)
            elif isinstance(effect, core.Establish):
                await self._establish(effect)
            elif isinstance(effect, core.WriteLog):
                self._to_log_in.send_nowait(effect.txns)

    def _check_queue(self, conn: int, link: PeerLink) -> None:
        queued = link.queued_bytes - self._sync_frames.get(conn, 0)
        limit = MAX_QUEUED_TO_LEARNER
        holding = self._holding.get(conn)
        if holding is not None:  # its sync still streams: the held broadcasts have their own bound
            queued += holding[1][0]
            limit = MAX_HELD_FOR_SYNC
        stats = self.peer.stats
        stats.most_queued_to_learner = max(stats.most_queued_to_learner, queued)
        if queued > limit and not link.closed:
            log.warning("learner link %d: %d bytes queued, not read: dropping the learner (too slow)", conn, queued)
            link.closed = True  # nothing more is queued to it; its link task ends the link
            scope = self.scopes.get(conn)
            if scope is not None:
                scope.cancel()

    def _sync(self, effect: core.SyncLearner) -> None:
        """Send one learner the sync its plan says and NEWLEADER (the core planned it)."""
        peer = self.peer
        plan = effect.plan
        link = self.links.get(effect.conn)
        if link is None:
            return
        self._sync_started[effect.conn] = trio.current_time()
        peer.stats.syncs[plan.mode] += 1
        if effect.streamed or sum(map(len, plan.txns)) > STREAM_WINDOW:
            source = None
            if effect.streamed:
                # The image is taken now, in the step the core planned it in: the tree is at the
                # plan's zxid, and what follows it is in plan.txns or will be broadcast (and held).
                if peer.tree.last_zxid != plan.zxid:
                    raise AssertionError(f"SNAP planned at 0x{plan.zxid:x}, the tree is at 0x{peer.tree.last_zxid:x}")
                try:
                    source = peer.store.snapshot_source(peer.tree)
                except (OSError, StorageError) as e:
                    # os.pipe/os.fork failing (ENOMEM, EAGAIN, EMFILE): as a failed image read in
                    # _stream_sync, it costs this learner's link, not the leadership.
                    log.error("learner link %d: the SNAP's image could not be taken: %s", effect.conn, e)
                    link.closed = True  # nothing more is queued to it; its link task ends the link
                    link_scope = self.scopes.get(effect.conn)
                    if link_scope is not None:
                        link_scope.cancel()
                    return
            self._holding[effect.conn] = (deque(), [0])
            scope = self._pumps[effect.conn] = trio.CancelScope()
            assert self._nursery is not None
            self._nursery.start_soon(self._stream_sync, effect, link, source, scope)
            log.info(
                "learner %d: %s from 0x%x streamed, %d transactions (its last zxid 0x%x)",
                effect.sid, plan.mode.upper(), plan.zxid, len(plan.txns), effect.last_zxid,
            )  # fmt: skip
            return
        before = link.queued_bytes
        for message in effect.messages():
            link.send(message)
        self._sync_frames[effect.conn] = link.queued_bytes - before  # not counted against its bound
        log.info(
            "learner %d: %s from 0x%x, %d transactions (its last zxid 0x%x)",
            effect.sid, plan.mode.upper(), plan.zxid, len(plan.txns), effect.last_zxid,
        )  # fmt: skip

    async def _stream_sync(
        self, effect: core.SyncLearner, link: PeerLink, source: SnapshotSource | None, scope: trio.CancelScope
    ) -> None:
        """Pump a large sync to its learner with flow control: a SNAP's image (from `source`),
        then the sync's transactions in pieces, its SyncData, NEWLEADER and whatever was broadcast
        meanwhile, in that order. A failed image costs the link only."""
        conn = effect.conn
        try:
            with scope:
                while source is not None:
                    data = await source.read()
                    if not data:
                        break
                    link.send(m.SnapshotChunk(data))
                    while link.queued_bytes > STREAM_WINDOW and not link.closed:
                        await link.wait_sent()
                piece: list[bytes] = []
                size = 0
                for raw in effect.plan.txns:
                    piece.append(raw)
                    size += len(raw)
                    if size >= SYNC_PIECE:
                        link.send(m.SyncTxns(piece))
                        piece, size = [], 0
                        while link.queued_bytes > STREAM_WINDOW and not link.closed:
                            await link.wait_sent()
                sync_data, newleader = effect.messages()
                assert isinstance(sync_data, m.SyncData)
                link.send(m.SyncData(sync_data.mode, sync_data.zxid, sync_data.items, piece))
                link.send(newleader)
                self._events_in.send_nowait(("sync sent", conn, None))
                # Then what was held, under the same window (it may be large after a long SNAP,
                # and more is held meanwhile): the learner joins the broadcast once it is empty.
                frames, held = self._holding.get(conn, (deque(), [0]))
                while frames:
                    frame, tag = frames.popleft()
                    held[0] -= len(frame)
                    link.send_frame(frame, tag)
                    while link.queued_bytes > STREAM_WINDOW and not link.closed:
                        await link.wait_sent()
                self._holding.pop(conn, None)
        except StorageError as e:
            log.error("learner link %d: the SNAP could not be streamed: %s", conn, e)
            link_scope = self.scopes.get(conn)
            if link_scope is not None:
                link_scope.cancel()
        finally:
            if source is not None:
                source.close()
            self._holding.pop(conn, None)
            self._pumps.pop(conn, None)

    def _stop_stream(self, conn: int) -> None:
        pump = self._pumps.pop(conn, None)
        if pump is not None:
            pump.cancel()
        self._holding.pop(conn, None)

    async def _establish(self, effect: core.Establish) -> None:
        """A quorum holds the leader's whole history: it is committed; serve it."""
        peer = self.peer
        peer.epochs.make_current(effect.epoch)
        self._point("leader epoch written")
        server = EnsembleServer(peer.config, peer.tree, LEADER, effect.epoch, peer.env)
        server.pipeline.persist = self.replicate
        server.pipeline.max_in_flight = BATCHES_IN_FLIGHT
        server.pipeline.after_batch = lambda: peer.store.maybe_snapshot(peer.tree)
        server.metric_sources.append(peer.store.metrics)
        server.metric_sources.append(peer.metrics)
        server.leader_stats = self.stats
        server.quorum_size = len(self.quorum.voters)
        self.server = server
        observer = peer.env.observer
        if observer is not None:
            observer.established(self.me, effect.epoch)
            # The whole history is committed now, also what lies below the in-memory window
            # (commitLogCount): a restarted leader holds older proposals nobody committed yet.
            for zxid, raw in peer.store.logged_before(peer.history.base, 1 << 62):
                observer.committed(self.me, zxid, raw)
            for zxid, raw in zip(peer.history.zxids, peer.history.packed, strict=True):
                observer.committed(self.me, zxid, raw)
        self._reported = effect.committed
        pending = [Txn.unpack(p) for p in peer.history.after(peer.tree.last_zxid)]
        if pending:
            server.pipeline.apply_batch(pending, [None] * len(pending))
        assert self._nursery is not None
        await self._nursery.start(server.serve_role)
        peer.serving = server
        if observer is not None:
            observer.serving(self.me, peer.tree.last_zxid)
        self.established.set()
        self._point("leader established")
        log.info(
            "leading epoch %d: %d of %d voters synced in %.3fs; serving clients",
            effect.epoch, sum(1 for x in self.core.learners.values() if x.voter) + 1, len(self.quorum.voters),
            trio.current_time() - self.started_at,
        )  # fmt: skip

    def _forward(self, effect: core.ForwardRequest) -> None:
        server = self.server
        assert server is not None
        refusal = server.refuse_write(effect.op, effect.body, effect.session_id, effect.auth, effect.owner)
        if refusal:
            link = self.links.get(effect.conn)
            if link is not None:
                link.send(m.Refused(effect.session_id, effect.cxid, refusal, server.tree.last_zxid))
            return
        if effect.op == OpCode.CLOSE_SESSION:
            server.close_session(effect.session_id, effect.cxid)
            return
        body, auth = server.prepare_txn(effect.op, effect.body, effect.session_id, effect.auth)
        server.pipeline.submit(effect.session_id, effect.cxid, effect.op, body, auth, None)

    def _report_committed(self, point: int) -> None:
        observer = self.peer.env.observer
        if observer is None:
            return
        history = self.peer.history
        start = bisect.bisect_right(history.zxids, self._reported)
        end = bisect.bisect_right(history.zxids, point)
        for i in range(start, end):
            observer.committed(self.me, history.zxids[i], history.packed[i])
        self._reported = point

    # -- learners -------------------------------------------------------------------
    async def adopt(self, stream: trio.abc.Stream) -> None:
        """A learner connected to the quorum port: serve its link for the life of this role."""
        nursery = self._nursery
        if nursery is None:
            await stream.aclose()
            return
        conn = next(self._conn_ids)
        # Until it has said which server it is, a connection may send only a small frame.
        link = PeerLink(stream, self._point_hook("leader sent"), MAX_HANDSHAKE_FRAME)
        scope = trio.CancelScope()
        done = trio.Event()

        async def serve() -> None:
            try:
                with scope:
                    await self._serve_link(conn, link)
            finally:
                done.set()

        try:
            nursery.start_soon(serve)
        except RuntimeError:  # the role is over
            await stream.aclose()
            return
        self.links[conn] = link
        self.scopes[conn] = scope
        self._events_in.send_nowait(("connected", conn, None))  # before any of its messages
        await done.wait()

    def _identified(self, conn: int) -> None:
        """Once a link's learner is known, it may send acks, pings and forwarded client requests
        (each at most jute.maxbuffer): a bigger frame is garbage, refused before it is buffered."""
        link = self.links.get(conn)
        learner = self.core.learners.get(conn)
        if link is not None and learner is not None and learner.sid >= 0:
            link.max_frame = self.peer.config.jute_max_buffer + 64 * 1024

    async def _serve_link(self, conn: int, link: PeerLink) -> None:
        stats = self.peer.stats
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.send_loop)
                while True:
                    self._events_in.send_nowait(("message", conn, await link.receive()))
                    self._waiting_messages += 1
                    stats.most_waiting_messages = max(stats.most_waiting_messages, self._waiting_messages)
                    while self._waiting_messages > MAX_WAITING_MESSAGES:
                        await self._progress.wait()  # read no more (TCP pushes back on the learner)
        except BaseException as group:  # a nursery's group may also hold Cancelled
            e = root_cause(group)
            if not isinstance(e, LINK_ERRORS):
                raise
            log.info("learner link %d closed: %s", conn, e or type(e).__name__)
        finally:
            self._events_in.send_nowait(("gone", conn, None))
            await link.aclose()

    def _point_hook(self, prefix: str) -> Callable[[str], None] | None:
        observer = self.peer.env.observer
        if observer is None:
            return None
        me = self.me
        return lambda tag: observer.point(me, f"{prefix} {tag}")

    def _point(self, name: str) -> None:
        if self.peer.env.observer is not None:
            self.peer.env.observer.point(self.me, name)

    # -- broadcast ------------------------------------------------------------------
    async def replicate(self, txns: list[Txn]) -> None:
        """The pipeline's persist step: durable on a quorum, the leader's own log included,
        before it returns. The batch goes to the core through the role's one input channel; a
        role that ends meanwhile cancels this task with it (the pipeline runs in its nursery)."""
        proposed_at = trio.current_time()
        self.peer.stats.proposed(txns[-1].zxid, proposed_at)
        self._point("leader proposing")
        self._events_in.send_nowait(("propose", 0, txns))
        target = txns[-1].zxid
        while self.core.committed < target:
            await self._commit_changed.wait()
        self.peer.stats.proposal_ms.record((trio.current_time() - proposed_at) * 1000)

    def _note_ack(self, conn: int, message: list[Any]) -> None:
        """Per-learner ack latency (metrics): an ack names the last zxid of the batch it covers.
        Called after the core took the message, so a malformed one has already closed its link."""
        if not (isinstance(message, list) and len(message) == 2 and message[0] == m.Ack.TAG):
            return
        learner = self.core.learners.get(conn)
        if learner is not None and learner.sid >= 0 and isinstance(message[1], int):
            self.peer.stats.acked(learner.sid, message[1], trio.current_time())

    def _record_size(self, effects: list[core.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, core.Broadcast) and isinstance(effect.message, m.Proposal):
                size = sum(len(p) for p in effect.message.txns)
                _, low, high = self.proposal_sizes
                self.proposal_sizes = (size, size if low < 0 else min(low, size), max(high, size))

    def stats(self) -> LeaderStats:
        learners = [x for x in self.core.learners.values() if x.sid >= 0]
        synced = [x for x in learners if x.stage == core.SYNCED]
        sizes = self.proposal_sizes
        return LeaderStats(
            learners=len(learners),
            synced_followers=sum(1 for x in synced if x.voter),
            synced_non_voting_followers=0,
            synced_observers=sum(1 for x in synced if not x.voter),
            pending_syncs=sum(1 for x in learners if x.stage != core.SYNCED),
            last_proposal_size=sizes[0],
            min_proposal_size=sizes[1],
            max_proposal_size=sizes[2],
        )
