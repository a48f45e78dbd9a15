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
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from zkpy.replication.history import SNAP, TRUNC
from zkpy.replication.leader import RoleEnded, why_role_ended
from zkpy.replication.learner_core import (
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
    TakeSync,
)
from zkpy.replication.link import PeerLink
from zkpy.replication.serving import FOLLOWER, OBSERVER, EnsembleServer, Forwarder, LearnerPipeline
from zkpy.tree.serialize import load_tree
from zkpy.tree.txn import Txn

if TYPE_CHECKING:
    from zkpy.replication.peer import QuorumPeer

log = logging.getLogger(__name__)


class Learner(Forwarder):
    """The trio glue around LearnerCore: one link to the leader, a task feeding it what arrives,
    a ticker, a log writer doing one batch at a time; every effect is carried out here."""

    def __init__(self, peer: QuorumPeer, leader_id: int) -> None:
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
        self._revalidations: dict[int, deque[Callable[[bool], None]]] = {}

    async def run(self) -> None:
        try:
            await self._run()
        except BaseException as group:  # a nursery's group may also hold Cancelled
            ended = why_role_ended(group, self.peer, f"leader {self.leader_id} lost")
            if ended is None:
                raise
            raise ended from None
        finally:
            if self.server is not None:
                self.server.close_all_clients()
            if self.link is not None:
                await self.link.aclose()

    async def _run(self) -> None:
        peer = self.peer
        link = await self._connect()
        core = LearnerCore(
            peer.my_id, self.role, peer.epochs.accepted, peer.epochs.current, peer.history.last,
            peer.store.last_snapshot_zxid, self.init_limit, self.sync_limit, trio.current_time(),
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.send_loop)
            nursery.start_soon(self._receive, link)
            nursery.start_soon(self._ticks)
            nursery.start_soon(self._log_proposals)
            await self._carry_out(core.start(), core, nursery)
            async for kind, value in self._events:
                if kind == "message":
                    self._point(f"learner got {value[0] if value else '?'}")
                    effects = core.receive(value, trio.current_time())
                elif kind == "logged":
                    effects = core.logged(value)
                else:
                    effects = core.tick(trio.current_time())
                await self._carry_out(effects, core, nursery)

    async def _receive(self, link: PeerLink) -> None:
        while True:
            self._events_in.send_nowait(("message", await link.receive()))

    async def _ticks(self) -> None:
        while True:
            await trio.sleep(self.tick)
            self._events_in.send_nowait(("tick", None))

    async def _log_proposals(self) -> None:
        """One batch at a time (the core hands out the next when this one is durable)."""
        async for batch in self._to_log:
            await self.peer.store.persist(batch)
            self._point("learner logged")
            for txn in batch:
                self.peer.history.append(txn.zxid, txn.pack())
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
                self.link.send(["ping", self.server.touched_sessions()])
            elif isinstance(effect, AnswerSync):
                assert self.pipeline is not None
                self.pipeline.synced(effect.session_id, effect.cxid)
            elif isinstance(effect, Revalidated):
                waiting = self._revalidations.get(effect.session_id)
                if waiting:  # the leader answers a link's questions in the order they were asked
                    answer = waiting.popleft()
                    if not waiting:
                        del self._revalidations[effect.session_id]
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
                if peer.store.needs_resync:  # the leader's whole history is durable here now
                    peer.store.resynced()
                    peer.election.abstaining = False
                    log.info("re-synced after damaged data: voting again")
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
        """Make the leader's sync durable here: SNAP or TRUNC, then its transactions logged."""
        peer = self.peer
        store = peer.store
        if sync.mode == SNAP:
            assert sync.items is not None
            self._point("learner installing snapshot")
            await store.install_snapshot(sync.zxid, sync.items)
            self._point("learner installed snapshot")
            peer.tree = load_tree(sync.items)
            peer.history.reset(sync.zxid)
        elif sync.mode == TRUNC:
            await store.truncate_after(sync.zxid)
            self._point("learner truncated")
            peer.history.truncate_after(sync.zxid)
            if peer.tree.last_zxid > sync.zxid:  # the tree holds what was cut: rebuild it from disk
                await peer.reload_tree()
        if sync.txns:
            await store.persist(sync.txns)
            for txn in sync.txns:
                peer.history.append(txn.zxid, txn.pack())
        if peer.env.observer is not None:
            peer.env.observer.synced(peer.my_id, peer.tree.last_zxid)
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
        if self.peer.env.observer is not None:
            self.peer.env.observer.point(self.peer.my_id, name)

    def _sent_hook(self) -> Callable[[str], None] | None:
        if self.peer.env.observer is None:
            return None
        return lambda tag: self._point(f"learner sent {tag}")

    # -- Forwarder ----------------------------------------------------------------------
    def forward(
        self, session_id: int, cxid: int, op: int, body: bytes, auth: tuple[tuple[str, str], ...]
    ) -> None:
        assert self.link is not None
        self.link.send(["request", session_id, cxid, op, body, [list(a) for a in auth]])

    def forward_sync(self, session_id: int, cxid: int) -> None:
        assert self.link is not None
        self.link.send(["sync", session_id, cxid])

    def revalidate(self, session_id: int, timeout: int, answer: Callable[[bool], None]) -> None:
        """One question per connect, as Apache's Learner.validateSession: an answer given before
        the session moved elsewhere and back must not stand for a later connect here (the leader
        made another server the owner meanwhile; every write from here would be SessionMoved)."""
        assert self.link is not None
        self._revalidations.setdefault(session_id, deque()).append(answer)
        self.link.send(["revalidate", session_id, timeout])
