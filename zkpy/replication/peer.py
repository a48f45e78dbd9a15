"""One ensemble member (Apache's QuorumPeer): elect, lead or follow, and elect again.

The client, quorum and election ports are bound once for the life of the process. Clients are
served only while this server is an up-to-date leader or learner; between roles every client
connection is closed so the client moves to a server that serves. The election keeps running
beside the roles, so a server that is LEADING or FOLLOWING answers a LOOKING one with the leader
it follows: that is how a restarted server finds a running ensemble.
"""

from __future__ import annotations

import errno
import logging
import math
from functools import partial

import trio

from zkpy.replication import election as fle
from zkpy.replication.election_net import ElectionNet
from zkpy.replication.environment import Environment, Store
from zkpy.replication.history import History
from zkpy.replication.leader import Leader
from zkpy.replication.learner import Learner
from zkpy.replication.quorum import Quorum
from zkpy.replication.roles import AboveEpoch, RoleEnded
from zkpy.replication.serving import EnsembleServer, ReadOnlyServer
from zkpy.replication.stats import ReplicationStats
from zkpy.server.config import ServerConfig
from zkpy.server.node import StartupError, ZooKeeperServer
from zkpy.server.not_serving import answer_while_not_serving
from zkpy.storage.errors import CorruptLogError, CorruptSnapshotError, StorageError
from zkpy.tree.datatree import DataTree

log = logging.getLogger(__name__)


class QuorumPeer:
    def __init__(self, config: ServerConfig, store: Store, env: Environment | None = None) -> None:
        assert config.server_id is not None
        self.config = config
        self.my_id = config.server_id
        self.is_observer = config.servers[self.my_id].role == "observer"
        voters = [sid for sid, spec in config.servers.items() if spec.role != "observer"]
        observers = [sid for sid, spec in config.servers.items() if spec.role == "observer"]
        self.quorum = Quorum(voters)
        self.store = store
        self.env = env or Environment()
        self.epochs = store.epochs()
        self.history = History()
        self.tree = self._recover()
        self.serving: EnsembleServer | None = None
        self.role: Leader | Learner | None = None
        self.election = fle.Election(self.my_id, frozenset(voters), frozenset(observers))
        self.net = ElectionNet(
            self.my_id,
            {sid: (spec.host, spec.election_port) for sid, spec in config.servers.items()},
            network=self.env.network,
        )
        self._decided = trio.Event()
        self.state = "looking"
        self.disk_failed: str | None = None  # why the log refused a write; None while it works
        self._disk_backoff = 0.1  # between probes of a failed disk; grows across quick relapses
        self._disk_rejoined_at = -math.inf
        # election_time, follower_sync_time, proposal and ack latencies, sync modes (mntr, metrics)
        self.stats = ReplicationStats()

    def _recover(self) -> DataTree:
        replayed: list[tuple[int, bytes]] = []
        try:
            tree = self.store.recover(lambda zxid, raw: replayed.append((zxid, raw)))
        except (CorruptLogError, CorruptSnapshotError) as e:
            # Never serve or vote on damaged data; the ensemble has the data, so start empty and
            # take it back from a leader (a standalone server refuses to start instead, and so
            # does the only voter: no leader could ever be elected without its vote).
            if self.quorum.voters == frozenset({self.my_id}):
                raise
            where = self.store.discard_damaged(str(e))
            log.error(
                "damaged data: %s. Moved aside (to %s); this server re-syncs from the leader and does "
                "not vote until it has", e, where,
            )  # fmt: skip
            replayed.clear()
            tree = self.store.recover(lambda zxid, raw: replayed.append((zxid, raw)))
        limit = self.config.commit_log_count
        base = max(self.store.last_snapshot_zxid, 0)
        if base > 0:
            # The log behind the snapshot still serves DIFFs (as Apache syncs from its txn log),
            # if it reaches the snapshot's own zxid: then nothing is missing in between.
            older = self.store.logged_before(base, limit)
            if older and older[-1][0] == base:
                replayed = older[1:] + replayed
                base = older[0][0]
        self.history = History(base=base, limit=limit)
        self.history.floor = self._applied_zxid
        for zxid, raw in replayed:
            if zxid > self.history.last:
                self.history.append(zxid, raw)
        return tree

    def metrics(self) -> dict[str, int | float | str]:
        return self.stats.metrics()

    def _applied_zxid(self) -> int:
        tree = getattr(self, "tree", None)  # None while the first recovery builds it
        return self.history.last if tree is None else tree.last_zxid

    def resynced(self) -> None:
        if self.store.needs_resync:
            self.store.resynced()
            self.election.abstaining = False
            log.info("re-synced after damaged data: voting again")

    def history_to_disk(self) -> None:
        """Before each election: a leader puts a batch in its history before its own fsync ends
        (learners may sync from it meanwhile). A role that ended inside that window leaves the
        history ahead of the disk: vote and sync only with what is durable. (The interaction
        harness calls this where a role ends, too.)"""
        durable = max(self.store.last_durable_zxid(), 0)  # 0: the empty tree every server starts from
        if self.history.last > durable:
            log.warning(
                "history holds 0x%x but the log ends at 0x%x: dropping the rest", self.history.last, durable
            )
            self.history.truncate_after(durable)

    async def reload_tree(self) -> None:
        """After a TRUNC below what the tree holds: rebuild the tree from disk. Rare, and on the
        event loop on purpose: recovery is CPU work, and the simulator's clock must not run on
        while a thread works."""
        self.store.close_log()
        self.tree = self._recover()

    # -- the process ----------------------------------------------------------------
    async def run(
        self,
        client_listeners: list[trio.abc.Listener[trio.abc.Stream]] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled. Client listeners are bound by the caller (run.py binds them
        before recovery, to fail fast on a port in use), or here through the environment."""
        spec = self.config.servers[self.my_id]
        network = self.env.network
        if client_listeners is None:
            client_listeners = await network.listen(
                self.config.client_port_address, self.config.client_port or 0
            )
        # Both peer ports are bound before anything runs: one in use is a one-line StartupError.
        quorum_listeners = await self._listen(spec.host, spec.peer_port, "quorum")
        election_listeners = await self._listen(spec.host, spec.election_port, "election")
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(self.net.run, listeners=election_listeners))
            nursery.start_soon(self._votes)
            nursery.start_soon(trio.serve_listeners, self._handle_peer, quorum_listeners)
            nursery.start_soon(trio.serve_listeners, self._handle_client, client_listeners)
            log.info(
                "server %d of %d (%s): quorum port %d, election port %d",
                self.my_id, len(self.config.servers), spec.role, spec.peer_port, spec.election_port,
            )  # fmt: skip
            task_status.started()
            while True:
                await self._lead_or_follow()

    async def _listen(self, host: str, port: int, kind: str) -> list[trio.abc.Listener[trio.abc.Stream]]:
        try:
            return await self.env.network.listen(host, port)
        except OSError as e:
            line = self.config.servers[self.my_id].render()
            if e.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"{line}: its {kind} port {port} on {host} is already in use (another ZooKeeper or "
                    f"zkpy?): stop it or choose another port in the server.{self.my_id} line"
                ) from None
            raise StartupError(
                f"{line}: cannot listen on its {kind} port {host}:{port}: {e.strerror or e}"
            ) from None

    async def _lead_or_follow(self) -> None:
        started = trio.current_time()
        self.state = "looking"
        self.history_to_disk()
        self._decided = trio.Event()
        resyncing = self.store.needs_resync
        self._send(self.election.start(started, self.epochs.current, self.history.last, abstain=resyncing))
        if self.config.read_only_mode and not resyncing:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_only_after, max(2.0, self.config.tick_time / 1000))
                await self._decided.wait()
                nursery.cancel_scope.cancel()
            if self.serving is not None:  # the read-only server: its clients go find the quorum
                self.serving.close_all_clients()
                self.serving = None
        await self._decided.wait()
        vote = self.election.decided
        assert vote is not None
        self.stats.election_ms.record((trio.current_time() - started) * 1000)
        log.info(
            "election: leader is %d (zxid 0x%x, epoch %d), decided in %.3fs",
            vote.leader, vote.zxid, vote.peer_epoch, trio.current_time() - started,
        )  # fmt: skip
        if self.env.observer is not None:
            self.env.observer.point(self.my_id, f"elected {vote.leader}")
        try:
            if vote.leader == self.my_id:
                self.state = "leading"
                self.election.set_role(fle.LEADING)
                self.role = Leader(self)
            else:
                self.state = "observing" if self.is_observer else "following"
                self.election.set_role(fle.OBSERVING if self.is_observer else fle.FOLLOWING)
                self.role = Learner(self, vote.leader)
            await self.role.run()
        except RoleEnded as e:
            log.warning("%s; back to election", e)
            if isinstance(e, AboveEpoch) and e.accepted > self.epochs.accepted:
                try:
                    self.epochs.accept(e.accepted)  # see AboveEpoch
                except OSError as failed:  # only a shortcut: the step-downs converge without it
                    log.warning("could not take accepted epoch %d: %s", e.accepted, failed)
        except OSError as e:
            log.warning("peer I/O failed: %s; back to election", e)
        finally:
            self.role = None
            if self.serving is not None:
                self.serving.close_all_clients()
            self.serving = None
        if self.disk_failed is not None:
            await self._wait_for_disk()
        await trio.sleep(0.05)  # let the others notice too before voting again

    async def _read_only_after(self, delay: float) -> None:
        """Still no leader after `delay`: serve read-only clients until there is one."""
        await trio.sleep(delay)
        log.info("no quorum for %.1fs: serving read-only clients", delay)
        self.serving = ReadOnlyServer(self.config, self.tree, self.env)

    async def _wait_for_disk(self) -> None:
        """Out of elections until the disk takes writes again: a server whose log failed must
        not lead or acknowledge. Recovering from disk is the probe (a reopened log repairs its
        tail and refuses nothing); then it rejoins and syncs like any restarted server."""
        self.election.set_role(fle.LOOKING)  # answer no votes meanwhile
        self.state = "disk failed"
        now = trio.current_time()
        if now - self._disk_rejoined_at > 60.0:  # not a relapse: start the back-off afresh
            self._disk_backoff = max(self.config.tick_time / 1000, 0.1)
        log.error("disk failed (%s): out of the ensemble until it works again", self.disk_failed)
        while True:
            await trio.sleep(self._disk_backoff)
            self._disk_backoff = min(self._disk_backoff * 2, 30.0)
            try:
                self.store.check_writable()  # a full disk still reads: recovery alone proves little
                self.store.close_log()
                self.tree = self._recover()
                self.epochs = self.store.epochs()
            except (StorageError, OSError) as e:
                log.error("disk still failing: %s (next try in %.1fs)", e, self._disk_backoff)
                continue
            if self.env.observer is not None:  # the tree was rebuilt from disk, as at a restart
                self.env.observer.synced(self.my_id, self.tree.last_zxid)
            log.info("disk works again: rejoining at zxid 0x%x", self.history.last)
            self.disk_failed = None
            self._disk_rejoined_at = trio.current_time()
            return

    def _send(self, messages: list[tuple[int, fle.Notification]]) -> None:
        for sid, notification in messages:
            self.net.send(sid, notification)

    async def _votes(self) -> None:
        """Feed the election every notification and every deadline, in every state."""
        election = self.election
        incoming = self.net.incoming
        tick = self.config.tick_time / 1000
        while True:
            # Wake at least every tick: start() (from the role loop) may set a deadline sooner
            # than the one this wait began with; sleeping past it lost a round's re-sends.
            deadline = election.deadline()
            wake = (
                trio.current_time() + tick if deadline is None else min(deadline, trio.current_time() + tick)
            )
            with trio.move_on_at(wake):
                notification = await incoming.receive()
                self._send(election.receive(trio.current_time(), notification))
            deadline = election.deadline()
            if deadline is not None and trio.current_time() >= deadline:
                self._send(election.tick(trio.current_time()))
            if election.decided is not None and election.state != fle.LOOKING:
                self._decided.set()

    # -- connections ------------------------------------------------------------------
    async def _handle_peer(self, stream: trio.SocketStream) -> None:
        """A learner's link. It may arrive while this server still finishes the election that
        makes it leader (the others decided first): give that a moment rather than refuse."""
        with trio.move_on_after(1.0):
            while self.role is None:
                await trio.sleep(0.01)
        role = self.role
        if isinstance(role, Leader):
            await role.adopt(stream)
        else:
            await stream.aclose()

    async def _handle_client(self, stream: trio.SocketStream) -> None:
        server: ZooKeeperServer | None = self.serving
        if server is None:  # four-letter words answered as Apache's; a client tries another server
            await answer_while_not_serving(stream, self.config, self.state)
            return
        await server._handle_client(stream)
