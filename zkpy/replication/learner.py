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
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from zkpy.replication.history import SNAP, TRUNC
from zkpy.replication.leader import LINK_ERRORS, RoleEnded
from zkpy.replication.link import PeerLink, root_cause
from zkpy.replication.serving import FOLLOWER, OBSERVER, EnsembleServer, Forwarder, LearnerPipeline
from zkpy.storage.errors import StorageError
from zkpy.tree.serialize import load_tree
from zkpy.tree.txn import Txn

if TYPE_CHECKING:
    from zkpy.replication.peer import QuorumPeer

log = logging.getLogger(__name__)


class Learner(Forwarder):
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
        self.commit_zxid = -1
        self.unapplied: deque[Txn] = deque()  # logged here, not yet known committed
        self._to_log: list[Txn] = []
        self._log_wake = trio.Event()
        self._sync_waits: list[tuple[int, int, int]] = []  # (zxid, session, cxid)
        self.started_at = trio.current_time()

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as group:
            e = root_cause(group)
            if isinstance(e, RoleEnded):
                raise e from None
            if isinstance(e, StorageError):
                self.peer.disk_failed = str(e)
                raise RoleEnded(f"the local log failed: {e}") from None
            if isinstance(e, AssertionError):
                raise e from None  # a broken invariant: stop, never carry on past it
            if not isinstance(e, LINK_ERRORS):
                log.exception("following failed")
            raise RoleEnded(f"leader {self.leader_id} lost: {e or type(e).__name__}") from None
        finally:
            if self.server is not None:
                self.server.close_all_clients()
            if self.link is not None:
                await self.link.aclose()

    async def _run(self) -> None:
        link = await self._connect()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.send_loop)
            with trio.fail_after(self.init_limit):
                await self._handshake(link)
            nursery.start_soon(self._log_proposals)
            await self._follow(link, nursery)

    async def _connect(self) -> PeerLink:
        """A link to the leader once it leads: it may still be finishing its own election, and
        then closes the connection at once; try again until initLimit runs out."""
        spec = self.peer.config.servers[self.leader_id]
        deadline = trio.current_time() + self.init_limit
        while True:
            try:
                stream = await self.peer.env.network.connect(spec.host, spec.peer_port)
                self.link = PeerLink(stream, self._sent_hook())
                return self.link
            except OSError as e:
                if trio.current_time() > deadline:
                    raise RoleEnded(
                        f"cannot reach leader {self.leader_id} at {spec.host}:{spec.peer_port}: {e}"
                    ) from None
                await trio.sleep(min(self.tick, 0.1))

    async def _handshake(self, link: PeerLink) -> None:
        peer = self.peer
        link.send(["info", peer.my_id, peer.epochs.accepted, self.role])
        tag, epoch = await link.receive()
        if tag != "leaderinfo":
            raise ValueError(f"expected leaderinfo, got {tag}")
        if epoch < peer.epochs.accepted:
            raise RoleEnded(
                f"leader {self.leader_id} offers epoch {epoch}, older than accepted {peer.epochs.accepted}"
            )
        peer.epochs.accept(epoch)
        link.send(["ackepoch", peer.epochs.current, peer.history.last, peer.store.last_snapshot_zxid])
        tag, mode, zxid, items, packed = await link.receive()
        if tag != "syncdata":
            raise ValueError(f"expected syncdata, got {tag}")
        await self._take_sync(mode, zxid, items, packed)
        tag, new_epoch = await link.receive()
        if tag != "newleader" or new_epoch != epoch:
            raise ValueError(f"expected newleader {epoch}, got {tag} {new_epoch}")
        peer.epochs.make_current(epoch)
        link.send(["acknl", peer.history.last])
        self._make_server(epoch)

    async def _take_sync(self, mode: str, zxid: int, items: list[Any] | None, packed: list[bytes]) -> None:
        peer = self.peer
        store = peer.store
        if mode == SNAP:
            assert items is not None
            self._point("learner installing snapshot")
            await store.install_snapshot(zxid, items)
            self._point("learner installed snapshot")
            peer.tree = load_tree(items)
            peer.history.reset(zxid)
        elif mode == TRUNC:
            await store.truncate_after(zxid)
            peer.history.truncate_after(zxid)
            if peer.tree.last_zxid > zxid:  # the tree holds what was cut: rebuild it from disk
                await peer.reload_tree()
        txns = [Txn.unpack(p) for p in packed]
        if txns:
            await store.persist(txns)
            for txn, raw in zip(txns, packed, strict=True):
                peer.history.append(txn.zxid, raw)
        # Everything logged but not yet applied: what the sync sent, and what this server had
        # logged in an earlier role without hearing it committed (the new leader's history has it).
        self.unapplied = deque(Txn.unpack(p) for p in peer.history.after(peer.tree.last_zxid))
        if peer.env.observer is not None:
            peer.env.observer.synced(peer.my_id, peer.tree.last_zxid)
        log.info(
            "synced with leader %d by %s: 0x%x, %d transactions, in %.3fs",
            self.leader_id, mode.upper(), zxid, len(txns), trio.current_time() - self.started_at,
        )  # fmt: skip

    def _make_server(self, epoch: int) -> None:
        peer = self.peer
        # After a restart the tree already holds the whole log; what it lacks is in `unapplied`.
        server = EnsembleServer(peer.config, peer.tree, self.role, epoch, peer.env)
        pipeline = LearnerPipeline(server.applier, server.watches, self)
        server.use_pipeline(pipeline)
        pipeline.after_batch = lambda: peer.store.maybe_snapshot(peer.tree)
        server.metric_sources.append(peer.store.metrics)
        server.metric_sources.append(peer.metrics)
        server.quorum_size = len(peer.quorum.voters)
        self.server = server
        self.pipeline = pipeline

    async def _follow(self, link: PeerLink, nursery: trio.Nursery) -> None:
        peer = self.peer
        server = self.server
        pipeline = self.pipeline
        assert server is not None and pipeline is not None
        serving = False
        while True:
            with trio.fail_after(self.sync_limit if serving else self.init_limit):
                message = await link.receive()
            tag = message[0]
            if tag == "proposal":
                self._to_log.extend(Txn.unpack(p) for p in message[1])
                self._log_wake.set()
            elif tag == "commit":
                self.commit_zxid = max(self.commit_zxid, message[1])
                self._apply()
            elif tag == "ping":
                link.send(["ping", server.touched_sessions()])
            elif tag == "uptodate":
                self.commit_zxid = max(self.commit_zxid, message[1])
                self._apply()
                if not serving:
                    await nursery.start(server.serve_role)
                    peer.serving = server
                    serving = True
                    log.info(
                        "following leader %d (%s); serving clients, %.3fs after the election",
                        self.leader_id, self.role, trio.current_time() - self.started_at,
                    )  # fmt: skip
            elif tag == "refused":
                _, session_id, cxid, code, zxid = message
                pipeline.refused(session_id, cxid, code, zxid)
            elif tag == "syncreply":
                _, session_id, cxid, zxid = message
                self._sync_waits.append((zxid, session_id, cxid))
                self._apply()
            else:
                raise ValueError(f"unexpected message {tag!r} from the leader")

    async def _log_proposals(self) -> None:
        """Group commit: whatever arrived during one fsync is the next batch."""
        peer = self.peer
        link = self.link
        assert link is not None
        while True:
            await self._log_wake.wait()
            self._log_wake = trio.Event()
            batch, self._to_log = self._to_log, []
            if not batch:
                continue
            await peer.store.persist(batch)
            self._point("learner logged")
            for txn in batch:
                peer.history.append(txn.zxid, txn.pack())
            self.unapplied.extend(batch)
            link.send(["ack", batch[-1].zxid])
            self._apply()

    def _apply(self) -> None:
        """Apply what is both committed and on this server's disk, in zxid order."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        unapplied = self.unapplied
        ready: list[Txn] = []
        while unapplied and unapplied[0].zxid <= self.commit_zxid:
            ready.append(unapplied.popleft())
        if ready:
            pipeline.apply_committed(ready)
        if self._sync_waits:
            applied = self.peer.tree.last_zxid
            still = []
            for zxid, session_id, cxid in self._sync_waits:
                if zxid <= applied:
                    pipeline.synced(session_id, cxid)
                else:
                    still.append((zxid, session_id, cxid))
            self._sync_waits = still

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
