"""A follower's or observer's role for one epoch (Apache's Learner/Follower/Observer).

Connect to the leader, report acceptedEpoch, accept the new epoch, report where the log ends,
then take the sync (DIFF, TRUNC or SNAP). Everything the sync sent is fsynced before NEWLEADER
is acknowledged, and a SNAP is on disk before anything after it. UPTODATE starts serving.

Broadcast: proposals are logged in batches (one fsync each) and acknowledged cumulatively;
commits are applied in zxid order, never beyond what this server has on disk, so its last
applied zxid never goes back across a restart. Client writes and syncs are forwarded to the
leader and answered when the committed transaction is applied here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from zkpy.replication import messages as m
from zkpy.replication.history import SNAP, TRUNC
from zkpy.replication.learner_core import (
    BROADCAST,
    AcceptEpoch,
    AnswerSync,
    Apply,
    Effect,
    LearnerCore,
    Log,
    MakeCurrent,
    Pong,
    Refuse,
    Revalidated,
    Send,
    Serve,
    SnapshotPiece,
    TakeSync,
)
from zkpy.replication.link import PeerLink, why_role_ended
from zkpy.replication.roles import RoleContext, RoleEnded

if TYPE_CHECKING:
    from zkpy.replication.environment import SnapshotSink
from zkpy.replication.serving import FOLLOWER, OBSERVER, EnsembleServer, Forwarder, LearnerPipeline
from zkpy.tree.serialize import load_tree
from zkpy.tree.txn import Txn

log = logging.getLogger(__name__)

# Back-pressure (issue 17, bounded memory): a learner whose disk is slower than the leader's
# write rate stops reading its link while this many bytes of proposals wait for its log or for
# its driver (which also holds them while it writes a sync), or while this many messages wait. The leader's queue to it then grows instead, and the
# leader drops it at its own bound (leader.MAX_QUEUED_TO_LEARNER): a slow learner costs nobody
# but itself, and it syncs again when it reconnects.
MAX_UNLOGGED_BYTES = 64 * 1024 * 1024
MAX_WAITING_MESSAGES = 1024


def new_learner_core(ctx: RoleContext, init_limit: float, sync_limit: float, now: float) -> LearnerCore:
    """A learner's core for a new link. It reports where the log ends (the durable history), not
    what the tree applied: a proposal logged here but never committed must be seen by the leader,
    to be truncated (ZOOKEEPER-2845: reporting the applied zxid got an empty DIFF and kept it)."""
    role = OBSERVER if ctx.is_observer else FOLLOWER
    return LearnerCore(
        ctx.my_id, role, ctx.epochs.accepted, ctx.epochs.current, ctx.history.last,
        ctx.store.last_snapshot_zxid, init_limit, sync_limit, now,
    )  # fmt: skip


async def take_sync(ctx: RoleContext, sync: TakeSync, received: SnapshotSink | None = None) -> None:
    """Make the leader's sync durable here (the TakeSync effect): SNAP or TRUNC, then its
    transactions logged; the tree and the history follow. A streamed SNAP's pieces are already
    in `received` (SnapshotPiece effects). Shared with the interaction harness
    (zkpy.testing.interaction), which drives the cores without sockets."""
    store = ctx.store
    if sync.mode == SNAP:
        _point(ctx, "learner installing snapshot")
        if sync.items is None:
            assert received is not None, "a streamed SNAP without its pieces"
            ctx.tree = await store.install_received(sync.zxid, received)
        else:
            await store.install_snapshot(sync.zxid, sync.items)
            ctx.tree = load_tree(sync.items)
        _point(ctx, "learner installed snapshot")
        ctx.history.reset(sync.zxid)
    elif sync.mode == TRUNC:
        await store.truncate_after(sync.zxid)
        _point(ctx, "learner truncated")
        ctx.history.truncate_after(sync.zxid)
        if ctx.tree.last_zxid > sync.zxid:  # the tree holds what was cut: rebuild it from disk
            await ctx.reload_tree()
    if sync.txns:
        await store.persist(sync.txns)
        for txn in sync.txns:
            ctx.history.append(txn.zxid, txn.pack())
    if ctx.env.observer is not None:
        ctx.env.observer.synced(ctx.my_id, ctx.tree.last_zxid)


async def log_batch(ctx: RoleContext, batch: list[Txn]) -> None:
    """The Log effect: the proposals durable here, then in the history learners sync from."""
    await ctx.store.persist(batch)
    _point(ctx, "learner logged")
    for txn in batch:
        ctx.history.append(txn.zxid, txn.pack())


def _proposal_bytes(message: Any) -> int:
    """The bytes a proposal or a SNAP's piece carries (0 for anything else, or a malformed one:
    the core refuses that)."""
    if not (isinstance(message, list) and len(message) == 2):
        return 0
    if message[0] == m.Proposal.TAG and isinstance(message[1], list):
        return sum(len(p) for p in message[1] if isinstance(p, bytes))
    if message[0] == m.SnapshotChunk.TAG and isinstance(message[1], bytes):
        return len(message[1])
    return 0


def _point(ctx: RoleContext, name: str) -> None:
    if ctx.env.observer is not None:
        ctx.env.observer.point(ctx.my_id, name)


class Learner(Forwarder):
    """The trio glue around LearnerCore: one link to the leader, a task feeding it what arrives,
    a ticker, a log writer doing one batch at a time; every effect is carried out here."""

    def __init__(self, peer: RoleContext, leader_id: int) -> None:
        self.peer = peer
        self.leader_id = leader_id
        self.role = OBSERVER if peer.is_observer else FOLLOWER
        self.tick = peer.config.tick_time / 1000
        self.init_limit = (peer.config.init_limit or 10) * self.tick
        self.sync_limit = (peer.config.sync_limit or 5) * self.tick
        self.link: PeerLink | None = None
        self.server: EnsembleServer | None = None
        self.pipeline: LearnerPipeline | None = None
        self.started_at = trio.current_time()
        self._events_in, self._events = trio.open_memory_channel[tuple[str, Any]](math.inf)
        self._to_log_in, self._to_log = trio.open_memory_channel[list[Txn]](math.inf)
        self._revalidations: dict[int, Callable[[bool], None]] = {}  # by question
        self._core: LearnerCore | None = None
        self._progress = trio.Event()  # set each time the driver has handled an input
        self._waiting_bytes = 0  # proposal bytes received and not yet handed to the core
        self._not_reading = False  # the reader stopped: too much waits for the log (_behind)
        self._received: SnapshotSink | None = None  # a streamed SNAP being written

    async def run(self) -> None:
        try:
            await self._run()
        except BaseException as group:  # a nursery's group may also hold Cancelled
            ended = why_role_ended(group, self.peer, f"leader {self.leader_id} lost")
            if ended is None:
                raise
            raise ended from None
        finally:
            if self._received is not None:  # a SNAP cut off halfway: its temp file goes
                self._received.abort()
            if self.server is not None:
                self.server.close_all_clients()
            if self.link is not None:
                await self.link.aclose()

    async def _run(self) -> None:
        peer = self.peer
        link = await self._connect()
        core = self._core = new_learner_core(peer, self.init_limit, self.sync_limit, trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.send_loop)
            nursery.start_soon(self._receive, link)
            nursery.start_soon(self._ticks)
            nursery.start_soon(self._log_proposals)
            try:
                await self._drive(core, link, nursery)
            except BaseException:
                # Out of service at once: the nursery may yet wait for a log write in a thread
                # (a slow disk's fsync cannot be cancelled), and reads must not be served meanwhile.
                if self.server is not None and peer.serving is self.server:
                    peer.serving = None
                    self.server.close_all_clients()
                raise

    async def _drive(self, core: LearnerCore, link: PeerLink, nursery: trio.Nursery) -> None:
        """The role's one input channel into the core, and the effects out, in order."""
        peer = self.peer
        await self._carry_out(core.start(), core, nursery)
        async for kind, value in self._events:
            if kind == "message":
                self._waiting_bytes -= _proposal_bytes(value)
                self._point(f"learner got {value[0] if isinstance(value, list) and value else '?'}")
                effects = core.receive_wire(value, trio.current_time())
            elif kind == "logged":
                effects = core.logged(value, trio.current_time())
            else:
                now = trio.current_time()
                if self.server is not None:
                    # The silence rule (node.py): a half-open client connection here would keep
                    # the claim its question made at the leader (owners.py). On the tick, not in
                    # a task of its own: a learner's schedule stays as it was.
                    self.server.beat(now, self.tick)
                effects = core.tick(now)
                if self._not_reading and core.state == BROADCAST and self.server is not None:
                    # The leader's pings wait unread behind the proposals: tell it of the
                    # sessions this server's clients keep alive anyway, or they expire there.
                    link.send(m.LearnerPing(self.server.touched_sessions()))
            await self._carry_out(effects, core, nursery)
            self._progress.set()
            self._progress = trio.Event()
            unlogged = core.unlogged_bytes + self._waiting_bytes
            if unlogged > peer.stats.most_unlogged_bytes:
                peer.stats.most_unlogged_bytes = unlogged

    async def _receive(self, link: PeerLink) -> None:
        while True:
            message = await link.receive()
            self._waiting_bytes += _proposal_bytes(message)
            self._events_in.send_nowait(("message", message))
            while self._behind():  # read no more until the log and the driver catch up
                self._not_reading = True
                await self._progress.wait()
            self._not_reading = False

    def _behind(self) -> bool:
        core = self._core
        unlogged = self._waiting_bytes + (core.unlogged_bytes if core is not None else 0)
        return unlogged > MAX_UNLOGGED_BYTES or self._events_in.statistics().current_buffer_used > MAX_WAITING_MESSAGES

    async def _ticks(self) -> None:
        while True:
            await trio.sleep(self.tick)
            self._events_in.send_nowait(("tick", None))

    async def _log_proposals(self) -> None:
        """One batch at a time (the core hands out the next when this one is durable)."""
        async for batch in self._to_log:
            await log_batch(self.peer, batch)
            self._events_in.send_nowait(("logged", batch))

    async def _carry_out(self, effects: list[Effect], core: LearnerCore, nursery: trio.Nursery) -> None:
        peer = self.peer
        for effect in effects:
            if isinstance(effect, Send):
                assert self.link is not None
                self.link.send(effect.message)
            elif isinstance(effect, Apply):
                assert self.pipeline is not None
                self.pipeline.apply_committed(effect.txns)
                self._point("learner applied")
                if effect.txns:  # one sample a batch: its newest transaction, ordered last
                    peer.stats.commit_propagation_ms.record(peer.env.wall_clock_ms() - effect.txns[-1].time)
            elif isinstance(effect, Log):
                self._to_log_in.send_nowait(effect.txns)
            elif isinstance(effect, Pong):
                assert self.link is not None and self.server is not None
                self.link.send(m.LearnerPing(self.server.touched_sessions()))
            elif isinstance(effect, AnswerSync):
                assert self.pipeline is not None
                self.pipeline.synced(effect.session_id, effect.cxid)
            elif isinstance(effect, Revalidated):
                answer = self._revalidations.pop(effect.question, None)
                if answer is not None:
                    answer(effect.valid)
            elif isinstance(effect, Refuse):
                assert self.pipeline is not None
                self.pipeline.refused(effect.session_id, effect.cxid, effect.code)
            elif isinstance(effect, AcceptEpoch):
                peer.epochs.accept(effect.epoch)
                self._point("learner accepted epoch")
            elif isinstance(effect, MakeCurrent):
                peer.epochs.make_current(effect.epoch)
                self._point("learner epoch written")
                peer.resynced()  # the leader's whole history is durable here now
            elif isinstance(effect, SnapshotPiece):
                if self._received is None:
                    self._received = peer.store.snapshot_receiver()
                self._received.write(effect.data)
            elif isinstance(effect, TakeSync):
                await self._take_sync(effect)
                self._make_server(core.epoch)
                pending = [Txn.unpack(p) for p in peer.history.after(peer.tree.last_zxid)]
                await self._carry_out(
                    core.sync_taken(peer.tree.last_zxid, pending, peer.history.last), core, nursery
                )
            elif isinstance(effect, Serve):
                assert self.server is not None
                await nursery.start(self.server.serve_role)
                peer.serving = self.server
                self._point("learner serving")
                if peer.env.observer is not None:
                    peer.env.observer.serving(peer.my_id, peer.tree.last_zxid)
                log.info(
                    "following leader %d (%s); serving clients, %.3fs after the election",
                    self.leader_id, self.role, trio.current_time() - self.started_at,
                )  # fmt: skip

    async def _connect(self) -> PeerLink:
        """A link to the leader once it leads: it may still be finishing its own election, and
        then closes the connection at once; try again until initLimit runs out."""
        spec = self.peer.config.servers[self.leader_id]
        deadline = trio.current_time() + self.init_limit
        while True:
            try:
                # A leader whose host vanished answers nothing: without a deadline the connect
                # waits for the kernel's SYN timeout (minutes), all the while this server telling
                # looking peers that it follows that leader.
                with trio.fail_at(deadline):
                    stream = await self.peer.env.network.connect(spec.host, spec.peer_port)
                self.link = PeerLink(stream, self._sent_hook())
                self._point("learner connected")
                return self.link
            except (OSError, trio.TooSlowError) as e:
                if trio.current_time() >= deadline:
                    raise RoleEnded(
                        f"cannot reach leader {self.leader_id} at {spec.host}:{spec.peer_port} "
                        f"within initLimit ({self.init_limit:.1f}s): {e or 'no answer'}"
                    ) from None
                await trio.sleep(min(self.tick, 0.1))

    async def _take_sync(self, sync: TakeSync) -> None:
        peer = self.peer
        received, self._received = self._received, None
        await take_sync(peer, sync, received)
        log.info(
            "synced with leader %d by %s: 0x%x, %d transactions, in %.3fs",
            self.leader_id, sync.mode.upper(), sync.zxid, len(sync.txns), trio.current_time() - self.started_at,
        )  # fmt: skip

    def _make_server(self, epoch: int) -> None:
        peer = self.peer
        # After a restart the tree already holds the whole log; what it lacks the core applies.
        server = EnsembleServer(peer.config, peer.tree, self.role, epoch, peer.env)
        server.forwarder = self
        pipeline = LearnerPipeline(server.applier, server.watches, self)
        server.use_pipeline(pipeline)
        pipeline.after_batch = lambda: peer.store.maybe_snapshot(peer.tree)
        server.metric_sources.append(peer.store.metrics)
        server.metric_sources.append(peer.metrics)
        server.quorum_size = len(peer.quorum.voters)
        self.server = server
        self.pipeline = pipeline

    def _point(self, name: str) -> None:
        _point(self.peer, name)

    def _sent_hook(self) -> Callable[[str], None] | None:
        if self.peer.env.observer is None:
            return None
        return lambda tag: self._point(f"learner sent {tag}")

    # -- Forwarder ----------------------------------------------------------------------
    def forward(
        self, session_id: int, cxid: int, op: int, body: bytes, auth: tuple[tuple[str, str], ...]
    ) -> None:
        assert self.link is not None and self._core is not None
        self._core.forwarded(session_id)
        self.link.send(m.ForwardedRequest(session_id, cxid, op, body, [list(a) for a in auth]))

    def forward_sync(self, session_id: int, cxid: int) -> None:
        assert self.link is not None
        self.link.send(m.ForwardedSync(session_id, cxid))

    def revalidate(self, session_id: int, timeout: int, answer: Callable[[bool], None]) -> int:
        """One question per connect, as Apache's Learner.validateSession: an answer given before
        the session moved elsewhere and back must not stand for a later connect here (the leader
        made another server the owner meanwhile; every write from here would be SessionMoved)."""
        assert self.link is not None and self._core is not None
        question, effects = self._core.revalidate(session_id, timeout)
        self._revalidations[question] = answer
        self._send(effects)
        return question

    def withdraw(self, session_id: int, question: int) -> None:
        """The connection closed: the core says whether its claim goes back (a Relinquish)."""
        self._revalidations.pop(question, None)
        if self._core is not None:
            self._send(self._core.withdraw(session_id, question))

    def _send(self, effects: list[Effect]) -> None:
        for effect in effects:
            assert isinstance(effect, Send) and self.link is not None
            self.link.send(effect.message)
