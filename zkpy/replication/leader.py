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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from zkpy.jute.ops import OpCode
from zkpy.replication import leader_core as core
from zkpy.replication.history import SNAP
from zkpy.replication.leader_core import LeaderCore
from zkpy.replication.learner_core import RoleEnded
from zkpy.replication.link import PeerGone, PeerLink, root_cause
from zkpy.replication.serving import LEADER, EnsembleServer
from zkpy.replication.wire import MAX_HANDSHAKE_FRAME, WireError, encode_frame
from zkpy.server.fourletter import LeaderStats
from zkpy.storage.errors import StorageError
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn

if TYPE_CHECKING:
    from zkpy.replication.peer import QuorumPeer

log = logging.getLogger(__name__)

__all__ = ["LINK_ERRORS", "Leader", "RoleEnded"]

# What a misbehaving or vanished peer can cause: it costs that link, never the server.
LINK_ERRORS = (PeerGone, WireError, trio.TooSlowError, ValueError, TypeError, IndexError, KeyError, OSError)


def why_role_ended(group: BaseException, peer: QuorumPeer, what: str) -> BaseException | None:
    """What a role's failure means, for the leader and a learner alike: None when it must go on
    as it is (a cancellation: the server stops; an interrupt); the AssertionError of a broken
    invariant (never carried on past); else the RoleEnded that sends the server back to election
    (a failed disk also keeps it out of elections until the disk works). Call it in the except."""
    e = root_cause(group)
    if not isinstance(e, Exception):
        return None
    if isinstance(e, (RoleEnded, AssertionError)):
        return e
    if isinstance(e, StorageError):
        peer.disk_failed = str(e)
        return RoleEnded(f"the local log failed: {e}")
    if not isinstance(e, LINK_ERRORS):
        log.exception("%s", what)
    return RoleEnded(f"{what}: {e or type(e).__name__}")


class Leader:
    """The trio glue around LeaderCore: learner links, the local log, the tree and the client
    server. Every input goes through `_feed`, which carries out the core's effects in order."""

    def __init__(self, peer: QuorumPeer) -> None:
        self.peer = peer
        self.me = peer.my_id
        self.quorum = peer.quorum
        self.tick = peer.config.tick_time / 1000
        init_limit = (peer.config.init_limit or 10) * self.tick
        sync_limit = (peer.config.sync_limit or 5) * self.tick
        self.core = LeaderCore(
            self.me, peer.quorum, peer.epochs.accepted, peer.epochs.current, peer.history.last,
            frozenset(peer.config.servers), init_limit, sync_limit, trio.current_time(),
            history=peer.history, tree_zxid=lambda: peer.tree.last_zxid,
        )  # fmt: skip
        self.links: dict[int, PeerLink] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self._conn_ids = itertools.count(1)
        self._events_in, self._events = trio.open_memory_channel[tuple[str, int, Any]](math.inf)
        self._commit_changed = trio.Event()
        self.established = trio.Event()
        self.server: EnsembleServer | None = None
        self._nursery: trio.Nursery | None = None
        self.failure: str | None = None  # why the pipeline's side gave up leadership
        self._sync_started: dict[int, float] = {}
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
            await self._carry_out(self.core.start())
            async for kind, conn, value in self._events:
                if kind == "message":
                    self._point(f"leader got {value[0] if value else '?'}")
                    effects = self.core.receive(conn, value, trio.current_time())
                    self._note_ack(conn, value)
                    self._identified(conn)
                elif kind == "gone":
                    effects = self.core.disconnected(conn)
                    # Also a link the core never knew by a sid (it hung up or sent junk before
                    # its info): nothing else would forget it, and its buffer with it.
                    self.links.pop(conn, None)
                    self.scopes.pop(conn, None)
                    self._sync_started.pop(conn, None)
                else:
                    effects = self.core.tick(trio.current_time())
                await self._carry_out(effects)
        if self.failure is not None:
            raise RoleEnded(self.failure)

    async def _ticks(self) -> None:
        while True:
            await trio.sleep(self.tick)
            self._events_in.send_nowait(("tick", 0, None))

    def _fail(self, reason: str) -> None:
        """Give up leadership from outside the driver (the pipeline's task)."""
        self.failure = reason
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- effects --------------------------------------------------------------------------
    async def _carry_out(self, effects: list[core.Effect]) -> None:
        peer = self.peer
        for effect in effects:
            if isinstance(effect, core.Broadcast):
                frame = encode_frame(effect.message)
                tag = effect.message[0]
                for conn in effect.conns:
                    link = self.links.get(conn)
                    if link is not None:
                        link.send_frame(frame, tag)
            elif isinstance(effect, core.SendTo):
                link = self.links.get(effect.conn)
                if link is not None:
                    link.send(effect.message)
                if effect.message[0] == "uptodate" and effect.conn in self._sync_started:
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
                valid = self.server is not None and self.server.revalidated(effect.session_id, effect.sid)
                link = self.links.get(effect.conn)
                if link is not None:
                    link.send(["revalidated", effect.session_id, valid])
            elif isinstance(effect, core.Close | core.DropLearner):
                scope = self.scopes.pop(effect.conn, None)
                self.links.pop(effect.conn, None)
                if scope is not None:
                    scope.cancel()
                if isinstance(effect, core.Close):
                    log.info("closing learner link %d: %s", effect.conn, effect.reason)
            elif isinstance(effect, core.AcceptEpoch):
                peer.epochs.accept(effect.epoch)
                self._point("leader accepted epoch")
                log.info("new epoch %d", effect.epoch)
            elif isinstance(effect, core.Establish):
                await self._establish(effect)

    def _sync(self, effect: core.SyncLearner) -> None:
        """Send one learner the sync its plan says and NEWLEADER (the core planned it)."""
        peer = self.peer
        plan = effect.plan  # a SNAP's zxid is the tree's as it stands: planned in this same step
        items: list[Any] | None = list(tree_items(peer.tree)) if plan.mode == SNAP else None
        link = self.links.get(effect.conn)
        if link is None:
            return
        self._sync_started[effect.conn] = trio.current_time()
        peer.stats.syncs[plan.mode] += 1
        link.send(["syncdata", plan.mode, plan.zxid, items, plan.txns])
        link.send(["newleader", self.core.epoch])
        log.info(
            "learner %d: %s from 0x%x, %d transactions (its last zxid 0x%x)",
            effect.sid, plan.mode.upper(), plan.zxid, len(plan.txns), effect.last_zxid,
        )  # fmt: skip

    async def _establish(self, effect: core.Establish) -> None:
        """A quorum holds the leader's whole history: it is committed; serve it."""
        peer = self.peer
        peer.epochs.make_current(effect.epoch)
        self._point("leader epoch written")
        server = EnsembleServer(peer.config, peer.tree, LEADER, effect.epoch, peer.env)
        server.pipeline.persist = self.replicate
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
                link.send(["refused", effect.session_id, effect.cxid, refusal, server.tree.last_zxid])
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
        self.core.connected(conn, trio.current_time())
        await done.wait()

    def _identified(self, conn: int) -> None:
        """Once a link's learner is known, it may send acks, pings and forwarded client requests
        (each at most jute.maxbuffer): a bigger frame is garbage, refused before it is buffered."""
        link = self.links.get(conn)
        learner = self.core.learners.get(conn)
        if link is not None and learner is not None and learner.sid >= 0:
            link.max_frame = self.peer.config.jute_max_buffer + 64 * 1024

    async def _serve_link(self, conn: int, link: PeerLink) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.send_loop)
                while True:
                    self._events_in.send_nowait(("message", conn, await link.receive()))
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
        """The pipeline's persist step: durable on a quorum before it returns."""
        peer = self.peer
        packed = [txn.pack() for txn in txns]
        proposed_at = trio.current_time()
        peer.stats.proposed(txns[-1].zxid, proposed_at)
        self._point("leader proposing")
        try:
            effects = self.core.propose(txns, packed)
        except RoleEnded as e:
            self._fail(str(e))
            await trio.sleep_forever()
        for txn, raw in zip(txns, packed, strict=True):
            peer.history.append(txn.zxid, raw)
        self._record_size(effects)
        await self._carry_out(effects)
        try:
            await peer.store.persist(txns)
        except StorageError as e:
            # Nothing in this batch may be acknowledged; a leader that cannot log steps aside
            # (the peer keeps it out of elections until its disk works again).
            peer.disk_failed = str(e)
            self._fail(f"the local log failed: {e}")
            await trio.sleep_forever()
        self._point("leader logged")
        await self._carry_out(self.core.logged(txns[-1].zxid))
        target = txns[-1].zxid
        while self.core.committed < target:
            await self._commit_changed.wait()
        peer.stats.proposal_ms.record((trio.current_time() - proposed_at) * 1000)

    def _note_ack(self, conn: int, message: list[Any]) -> None:
        """Per-learner ack latency (metrics): an ack names the last zxid of the batch it covers.
        Called after the core took the message, so a malformed one has already closed its link."""
        if not (isinstance(message, list) and len(message) == 2 and message[0] == "ack"):
            return
        learner = self.core.learners.get(conn)
        if learner is not None and learner.sid >= 0 and isinstance(message[1], int):
            self.peer.stats.acked(learner.sid, message[1], trio.current_time())

    def _record_size(self, effects: list[core.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, core.Broadcast) and effect.message[0] == "proposal":
                size = sum(len(p) for p in effect.message[1])
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
