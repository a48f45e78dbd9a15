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
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from zkpy.replication.history import SNAP
from zkpy.replication.link import PeerGone, PeerLink, root_cause
from zkpy.replication.serving import LEADER, EnsembleServer
from zkpy.replication.wire import WireError, encode_frame
from zkpy.server.fourletter import LeaderStats
from zkpy.storage.errors import StorageError
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn

if TYPE_CHECKING:
    from zkpy.replication.peer import QuorumPeer

log = logging.getLogger(__name__)


# What a misbehaving or vanished peer can cause: it costs that link, never the server.
LINK_ERRORS = (PeerGone, WireError, trio.TooSlowError, ValueError, TypeError, IndexError, KeyError, OSError)


COUNTER_MASK = 0xFFFFFFFF


class RoleEnded(Exception):
    """This server stops leading or following; it goes back to election."""


class _Learner:
    def __init__(self, sid: int, link: PeerLink, voter: bool) -> None:
        self.sid = sid
        self.link = link
        self.voter = voter
        self.synced = False
        self.last_heard = trio.current_time()
        self.scope = trio.CancelScope()


class Leader:
    def __init__(self, peer: QuorumPeer) -> None:
        self.peer = peer
        self.me = peer.my_id
        self.quorum = peer.quorum
        self.tick = peer.config.tick_time / 1000
        self.init_limit = (peer.config.init_limit or 10) * self.tick
        self.sync_limit = (peer.config.sync_limit or 5) * self.tick
        self.accepted: dict[int, int] = {self.me: peer.epochs.accepted}
        self.epoch = 0
        self.epoch_ready = trio.Event()
        self.epoch_acks = {self.me}
        self.epoch_acked = trio.Event()
        self.newleader_acks = {self.me}
        self.established = trio.Event()
        self.learners: dict[int, _Learner] = {}
        self.acks: dict[int, int] = {}
        self.committed = -1
        self._commit_changed = trio.Event()
        self.server: EnsembleServer | None = None
        self._nursery: trio.Nursery | None = None
        self._failure: str | None = None
        self.started_at = trio.current_time()
        self.counter_limit = COUNTER_MASK - 0x10000  # room for the largest batch the pipeline makes
        self.proposal_sizes = (-1, -1, -1)  # last, min, max bytes of a proposal frame (mntr)

    # -- the role ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except Exception as group:
            e = root_cause(group)
            if isinstance(e, (RoleEnded, AssertionError)):  # an AssertionError: a broken invariant
                raise e from None
            log.exception("leading failed")
            raise RoleEnded(f"leading failed: {e!r}") from None
        finally:
            self._nursery = None
            if self.server is not None:
                self.server.close_all_clients()

    async def _run(self) -> None:
        peer = self.peer
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._check_epoch_quorum()
            await self._within(self.init_limit, self.epoch_ready, "no quorum of learners connected")
            await self._within(self.init_limit, self.epoch_acked, "no quorum acknowledged the epoch")
            self._check_newleader_quorum()
            await self._within(self.init_limit, self.established, "no quorum synced")
            assert self.server is not None
            await nursery.start(self.server.serve_role)
            peer.serving = self.server
            log.info(
                "leading epoch %d: %d of %d voters synced in %.3fs; serving clients",
                self.epoch, len(self.newleader_acks), len(self.quorum.voters),
                trio.current_time() - self.started_at,
            )  # fmt: skip
            await self._heartbeats()

    async def _within(self, seconds: float, event: trio.Event, what: str) -> None:
        with trio.move_on_after(seconds):
            await event.wait()
        if self._failure is not None:
            raise RoleEnded(self._failure)
        if not event.is_set():
            raise RoleEnded(f"{what} within initLimit ({seconds:.1f}s)")

    def _fail(self, reason: str) -> None:
        """Give up leadership from inside a learner's task: the role's nursery is cancelled."""
        self._failure = reason
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _heartbeats(self) -> None:
        ping = encode_frame(["ping"])
        while True:
            await trio.sleep(self.tick)
            if self._failure is not None:
                raise RoleEnded(self._failure)
            now = trio.current_time()
            heard = {self.me}
            for learner in list(self.learners.values()):
                if now - learner.last_heard > self.sync_limit:
                    log.warning(
                        "learner %d silent for %.1fs: dropping it", learner.sid, now - learner.last_heard
                    )
                    learner.scope.cancel()
                    continue
                learner.link.send_frame(ping, "ping")
                if learner.synced:
                    heard.add(learner.sid)
            if not self.quorum.contains_quorum(heard):
                raise RoleEnded(f"lost the quorum: only {sorted(heard)} heard within syncLimit")

    # -- learners -------------------------------------------------------------------
    async def adopt(self, stream: trio.abc.Stream) -> None:
        """A learner connected to the quorum port: serve it for the life of this role."""
        done = trio.Event()
        nursery = self._nursery
        if nursery is None:
            await stream.aclose()
            return

        async def serve() -> None:
            try:
                # Learners send acks, pings and forwarded client requests (each at most
                # jute.maxbuffer): a bigger frame is garbage, refused before it is buffered.
                max_frame = self.peer.config.jute_max_buffer + 64 * 1024
                await self._serve_learner(PeerLink(stream, self._point_hook("leader sent"), max_frame))
            finally:
                done.set()

        try:
            nursery.start_soon(serve)
        except RuntimeError:  # the role is over
            await stream.aclose()
            return
        await done.wait()

    def _point_hook(self, prefix: str) -> Callable[[str], None] | None:
        observer = self.peer.env.observer
        if observer is None:
            return None
        me = self.me
        return lambda tag: observer.point(me, f"{prefix} {tag}")

    def _point(self, name: str) -> None:
        if self.peer.env.observer is not None:
            self.peer.env.observer.point(self.me, name)

    async def _serve_learner(self, link: PeerLink) -> None:
        learner: _Learner | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.send_loop)
                with trio.fail_after(self.init_limit):
                    learner = await self._handshake(link)
                with learner.scope:
                    await self._sync(learner)
                    while True:
                        message = await link.receive()
                        learner.last_heard = trio.current_time()
                        self._on_message(learner, message)
                nursery.cancel_scope.cancel()
        except Exception as group:
            e = root_cause(group)
            if not isinstance(e, LINK_ERRORS):
                raise
            who = f"learner {learner.sid}" if learner else "a learner"
            log.info("%s disconnected: %s", who, e or type(e).__name__)
        finally:
            if learner is not None and self.learners.get(learner.sid) is learner:
                del self.learners[learner.sid]
                self.acks.pop(learner.sid, None)
            await link.aclose()

    async def _handshake(self, link: PeerLink) -> _Learner:
        peer = self.peer
        tag, sid, accepted, *_ = await link.receive()
        if tag != "info" or sid not in peer.config.servers or sid == self.me:
            raise ValueError(f"not a learner of this ensemble: {tag} from {sid}")
        voter = sid in self.quorum.voters
        old = self.learners.pop(sid, None)
        if old is not None:
            old.scope.cancel()
        if voter and not self.epoch_ready.is_set():
            self.accepted[sid] = accepted
            self._check_epoch_quorum()
        await self.epoch_ready.wait()
        link.send(["leaderinfo", self.epoch])
        tag, current, last_zxid, snap_zxid = await link.receive()
        if tag != "ackepoch":
            raise ValueError(f"expected ackepoch, got {tag}")
        learner = _Learner(sid, link, voter)
        learner.last_zxid, learner.snap_zxid = last_zxid, snap_zxid  # type: ignore[attr-defined]
        if voter and not self.established.is_set():
            mine = (peer.epochs.current, peer.history.last)
            if (current, last_zxid) > mine:
                self._fail(
                    f"learner {sid} is ahead (epoch {current}, zxid {last_zxid:#x}) of this leader "
                    f"(epoch {mine[0]}, zxid {mine[1]:#x})"
                )
                raise RoleEnded("learner ahead")
            self.epoch_acks.add(sid)
            if self.quorum.contains_quorum(self.epoch_acks):
                self.epoch_acked.set()
        await self.epoch_acked.wait()
        return learner

    def _check_epoch_quorum(self) -> None:
        if self.epoch_ready.is_set() or not self.quorum.contains_quorum(self.accepted):
            return
        self.epoch = max(self.accepted.values()) + 1
        self.peer.epochs.accept(self.epoch)
        log.info("new epoch %d (acceptedEpochs of %s)", self.epoch, sorted(self.accepted))
        self.epoch_ready.set()
        if self.quorum.contains_quorum(self.epoch_acks):
            self.epoch_acked.set()

    async def _sync(self, learner: _Learner) -> None:
        """Bring one learner to the leader's history, then into the broadcast, in one step."""
        peer = self.peer
        history = peer.history
        tree = peer.tree
        plan = history.plan_sync(learner.last_zxid, learner.snap_zxid, tree.last_zxid)  # type: ignore[attr-defined]
        items: list[Any] | None = list(tree_items(tree)) if plan.mode == SNAP else None
        link = learner.link
        link.send(["syncdata", plan.mode, plan.zxid, items, plan.txns])
        link.send(["newleader", self.epoch])
        self.learners[learner.sid] = learner  # every proposal from now on reaches it too
        log.info(
            "learner %d: %s from 0x%x, %d transactions (its last zxid 0x%x)",
            learner.sid, plan.mode.upper(), plan.zxid, len(plan.txns), learner.last_zxid,  # type: ignore[attr-defined]
        )  # fmt: skip
        sync_started = trio.current_time()
        tag, zxid = await link.receive()
        if tag != "acknl":
            raise ValueError(f"expected acknl, got {tag}")
        self.peer.sync_ms.record((trio.current_time() - sync_started) * 1000)
        learner.last_heard = trio.current_time()
        if learner.voter:
            self.acks[learner.sid] = zxid
            self.newleader_acks.add(learner.sid)
            self._check_newleader_quorum()
        await self.established.wait()
        learner.synced = True
        link.send(["uptodate", self.committed])
        self._advance_commit()

    def _check_newleader_quorum(self) -> None:
        if self.established.is_set() or not self.epoch_acked.is_set():
            return
        if not self.quorum.contains_quorum(self.newleader_acks):
            return
        self._establish()

    def _establish(self) -> None:
        """A quorum holds the leader's whole history: it is committed; serve it."""
        peer = self.peer
        peer.epochs.make_current(self.epoch)
        server = EnsembleServer(peer.config, peer.tree, LEADER, self.epoch, peer.env)
        server.pipeline.persist = self.replicate
        server.pipeline.after_batch = lambda: peer.store.maybe_snapshot(peer.tree)
        server.metric_sources.append(peer.store.metrics)
        server.metric_sources.append(peer.metrics)
        server.leader_stats = self.stats
        server.quorum_size = len(self.quorum.voters)
        self.server = server
        observer = peer.env.observer
        if observer is not None:
            observer.established(self.me, self.epoch)
            for zxid, raw in zip(peer.history.zxids, peer.history.packed, strict=True):
                observer.committed(self.me, zxid, raw)
        pending = [Txn.unpack(p) for p in peer.history.after(peer.tree.last_zxid)]
        if pending:
            server.pipeline.apply_batch(pending, [None] * len(pending))
        self.committed = peer.history.last
        self.acks[self.me] = peer.history.last
        self.established.set()

    # -- broadcast ------------------------------------------------------------------
    async def replicate(self, txns: list[Txn]) -> None:
        """The pipeline's persist step: durable on a quorum before it returns."""
        peer = self.peer
        history = peer.history
        if txns[-1].zxid >> 32 != self.epoch or txns[-1].zxid & COUNTER_MASK > self.counter_limit:
            # The 32-bit counter would run into the next epoch's zxids: a new epoch starts over.
            self._fail(f"zxid counter of epoch {self.epoch} nearly exhausted: forcing a new election")
            await trio.sleep_forever()
        packed = []
        for txn in txns:
            raw = txn.pack()
            history.append(txn.zxid, raw)
            packed.append(raw)
        frame = encode_frame(["proposal", packed])
        size = len(frame)
        _, low, high = self.proposal_sizes
        self.proposal_sizes = (size, size if low < 0 else min(low, size), max(high, size))
        for learner in self.learners.values():
            learner.link.send_frame(frame, "proposal")
        try:
            await peer.store.persist(txns)
        except StorageError as e:
            # Nothing in this batch may be acknowledged; a leader that cannot log steps aside
            # (the peer keeps it out of elections until its disk works again).
            peer.disk_failed = str(e)
            self._fail(f"the local log failed: {e}")
            await trio.sleep_forever()
        self._point("leader logged")
        self.acks[self.me] = txns[-1].zxid
        self._advance_commit()
        target = txns[-1].zxid
        while self.committed < target:
            event = self._commit_changed
            await event.wait()

    def _advance_commit(self) -> None:
        point = min(self.quorum.commit_point(self.acks), self.acks.get(self.me, -1))
        if point <= self.committed:
            return
        observer = self.peer.env.observer
        if observer is not None:
            history = self.peer.history
            start = bisect.bisect_right(history.zxids, self.committed)
            end = bisect.bisect_right(history.zxids, point)
            for i in range(start, end):
                observer.committed(self.me, history.zxids[i], history.packed[i])
        self.committed = point
        frame = encode_frame(["commit", point])
        for learner in self.learners.values():
            learner.link.send_frame(frame, "commit")
        self._commit_changed.set()
        self._commit_changed = trio.Event()

    def _on_message(self, learner: _Learner, message: list[Any]) -> None:
        tag = message[0]
        server = self.server
        assert server is not None
        if tag == "ack":
            if learner.voter and message[1] > self.acks.get(learner.sid, -1):
                self.acks[learner.sid] = message[1]
                self._advance_commit()
        elif tag == "ping":
            for session_id in message[1]:
                server.sessions.touch(session_id)
        elif tag == "request":
            _, session_id, cxid, op, body, auth = message
            refusal = server.refuse_write(op, body)
            if refusal:
                learner.link.send(["refused", session_id, cxid, refusal, server.tree.last_zxid])
                return
            from zkpy.jute.ops import OpCode

            if op == OpCode.CLOSE_SESSION:
                server.sessions.mark_closing(session_id)
            server.pipeline.submit(session_id, cxid, op, body, tuple((s, i) for s, i in auth), None)
        elif tag == "sync":
            # Everything acknowledged to any client before this sync is committed by now; the
            # learner answers once it has applied up to here (the commits precede this reply).
            learner.link.send(["syncreply", message[1], message[2], self.committed])
        else:
            raise ValueError(f"unexpected message {tag!r} from learner {learner.sid}")

    def stats(self) -> LeaderStats:
        learners = list(self.learners.values())
        synced = [x for x in learners if x.synced]
        sizes = self.proposal_sizes
        return LeaderStats(
            learners=len(learners),
            synced_followers=sum(1 for x in synced if x.voter),
            synced_non_voting_followers=0,
            synced_observers=sum(1 for x in synced if not x.voter),
            pending_syncs=sum(1 for x in learners if not x.synced),
            last_proposal_size=sizes[0],
            min_proposal_size=sizes[1],
            max_proposal_size=sizes[2],
        )
