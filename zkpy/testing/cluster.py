"""A whole ensemble in one process, deterministic: the real QuorumPeer code of every server on
trio's MockClock, simulated links (zkpy.testing.network) and disks (zkpy.testing.disk), and one
seed that drives every latency, fault and client choice. Same seed, same run.

Invariants are checked as the run goes (ClusterInvariants) and at the end (check_final):
- at most one leader per epoch;
- the committed history is one sequence: no two leaders commit different transactions at a zxid;
- a server applies only committed transactions, each exactly as committed, in zxid order;
- a server's last zxid never goes back across a crash and restart (unless its data was damaged
  by a fault and set aside: then it re-syncs, and it never finds damage no fault made);
- nothing a client saw acknowledged is lost: its zxid is committed, and the write is in the tree;
- every serving server's tree equals the committed history applied up to its last zxid;
- at most one leader per epoch gets past its ackepoch quorum (to syncing learners): two would
  mean a learner acknowledged one epoch to two leaders (ZAB's epoch promise broken);
- every snapshot a server writes, at a committed zxid, is the committed history replayed to it
  (checked when it is written, or when its zxid is committed).

`swarm(seed)` draws a run's configuration (swarm testing): tick, initLimit, syncLimit, snapCount,
commitLogCount, the voters and observers, the fsync times and which faults the nemesis may use.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio
import trio.testing

from zkpy.replication import leader_core
from zkpy.replication.environment import Environment
from zkpy.replication.leader import Leader
from zkpy.replication.learner import Learner
from zkpy.replication.peer import QuorumPeer
from zkpy.server.config import ServerConfig, parse_config
from zkpy.server.sessions import orphan_ephemerals, session_problems
from zkpy.testing.disk import MemoryDisk, MemoryStore
from zkpy.testing.nemesis import Buggify, Reach, log_uniform
from zkpy.testing.network import SimNetwork
from zkpy.testing.simclient import Op, SimClient
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn

log = logging.getLogger(__name__)

CLIENT_PORT, PEER_PORT, ELECTION_PORT = 2181, 2888, 3888
WALL_CLOCK_BASE_MS = 1_700_000_000_000  # virtual time 0 as a wall clock, for ctime/mtime


class InvariantViolation(AssertionError):
    """The simulated ensemble did something ZooKeeper must never do."""


class ClusterInvariants:
    """The Observer every simulated server reports to; raises at the first violation."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # epoch -> sid
        self.committed: dict[int, bytes] = {}  # zxid -> packed txn
        self._sorted: list[int] = []
        self.applied_last: dict[int, int] = {}  # sid -> last zxid applied this incarnation
        self.max_applied: dict[int, int] = {}  # sid -> highest zxid ever applied (across restarts)
        self.acknowledged: list[Op] = []
        self.last_cxid: dict[int, int] = {}  # session id -> cxid of its newest committed request
        self.proposals: dict[int, bytes] = {}  # zxid -> packed txn, as logged by anyone
        self.epoch_quorums: dict[int, int] = {}  # epoch -> the leader that got its ackepoch quorum
        self.snapshots_checked = 0
        self._pending_snapshots: dict[int, list[tuple[int, list[object]]]] = {}  # zxid -> (sid, state)
        self._cursors: dict[int, tuple[int, DataTree]] = {}  # sid -> the history replayed to a zxid

    def fail(self, message: str) -> None:
        raise InvariantViolation(message)

    # -- Observer ---------------------------------------------------------------------
    def established(self, sid: int, epoch: int) -> None:
        other = self.leaders.setdefault(epoch, sid)
        if other != sid:
            self.fail(f"two leaders for epoch {epoch}: servers {other} and {sid}")

    def logged(self, sid: int, records: list[tuple[int, bytes]]) -> None:
        """Every transaction any server logs: one leader per epoch proposes one sequence, so a
        zxid names one transaction wherever it is logged."""
        for zxid, packed in records:
            known = self.proposals.setdefault(zxid, packed)
            if known != packed:
                self.fail(f"server {sid} logged a different transaction at zxid {zxid:#x}")

    def leader_tree(self, sid: int, tree_zxid: int) -> None:
        """A new leader's whole state is committed when it establishes, also what it holds only in
        a snapshot (a SNAP from a leader that died before its NEWLEADER quorum, with a tail nobody
        committed: the leader reports only its log). That tail is the snapshot's epoch's proposals
        up to its zxid (one leader per epoch, logs are prefixes; everything before that epoch was
        committed when its leader established): commit them from what was logged."""
        if tree_zxid <= 0 or tree_zxid in self.committed:
            return
        epoch_start = tree_zxid & ~0xFFFFFFFF
        for zxid in range(epoch_start + 1, tree_zxid + 1):
            packed = self.proposals.get(zxid)
            if packed is None:
                raise InvariantViolation(
                    f"leader {sid}'s tree is at {tree_zxid:#x}, but {zxid:#x} was never logged"
                )
            self.committed_by(sid, zxid, packed)

    def committed_by(self, sid: int, zxid: int, packed: bytes) -> None:
        known = self.committed.get(zxid)
        if known is None:
            self.committed[zxid] = packed
            if self._sorted and zxid < self._sorted[-1]:
                self._cursors.clear()  # (a replay cursor may have passed this zxid by)
            bisect.insort(self._sorted, zxid)
            self._check_session_order(zxid, packed)
            for snap_sid, state in self._pending_snapshots.pop(zxid, []):
                self._check_snapshot(snap_sid, zxid, state)
        elif known != packed:
            self.fail(f"leader {sid} commits a different transaction at zxid {zxid:#x}")

    def _check_session_order(self, zxid: int, packed: bytes) -> None:
        """FIFO client order: a session's requests are committed in the order it sent them (its
        cxids increase). Server-made transactions (the expirer's close, sweeps) carry cxid 0.
        Committed transactions are reported in zxid order, each once."""
        txn = Txn.unpack(packed)
        if txn.cxid <= 0 or txn.session_id == 0:
            return
        last = self.last_cxid.get(txn.session_id, 0)
        if txn.cxid <= last:
            self.fail(
                f"session 0x{txn.session_id:x}'s request cxid {txn.cxid} is committed at zxid {zxid:#x}, "
                f"after its later request cxid {last}: FIFO client order broken"
            )
        self.last_cxid[txn.session_id] = txn.cxid

    def applied(self, sid: int, zxid: int, packed: bytes) -> None:
        known = self.committed.get(zxid)
        if known is None:
            self.fail(f"server {sid} applied zxid {zxid:#x}, which no leader committed")
        if known != packed:
            self.fail(f"server {sid} applied a different transaction at zxid {zxid:#x}")
        last = self.applied_last.get(sid, -1)
        if zxid <= last:
            self.fail(f"server {sid} applied zxid {zxid:#x} after {last:#x}")
        if last >= 0:
            i = bisect.bisect_right(self._sorted, last)
            if i < len(self._sorted) and self._sorted[i] < zxid:
                self.fail(f"server {sid} skipped committed zxid {self._sorted[i]:#x} before {zxid:#x}")
        self.applied_last[sid] = zxid
        self.max_applied[sid] = max(self.max_applied.get(sid, -1), zxid)

    def past_epoch_quorum(self, sid: int, epoch: int) -> None:
        """Leader `sid` has a quorum of ackepochs for `epoch` (it syncs learners): no other may.
        Each learner acknowledges an epoch once (an offer of the epoch it already accepted gets
        -1, not counted), so two such quorums would share a learner that promised twice."""
        other = self.epoch_quorums.setdefault(epoch, sid)
        if other != sid:
            self.fail(f"two leaders got an ackepoch quorum for epoch {epoch}: servers {other} and {sid}")

    def snapshot_written(self, sid: int, zxid: int, items: list[Any]) -> None:
        """A snapshot at a committed zxid must be the committed history up to it; one at a zxid not
        committed yet (a new leader's tree sent by SNAP before its NEWLEADER quorum) is checked
        when that zxid is committed (zxids carry their epoch: no other transaction can be)."""
        state = _items_digest(items)
        if zxid <= 0 or zxid in self.committed:
            self._check_snapshot(sid, zxid, state)
        else:
            self._pending_snapshots.setdefault(zxid, []).append((sid, state))

    def _check_snapshot(self, sid: int, zxid: int, state: list[object]) -> None:
        self.snapshots_checked += 1
        if state != self._replayed_state(sid, zxid):
            self.fail(f"server {sid} wrote a snapshot at zxid {zxid:#x} that is not the committed history")

    # -- around restarts and clients ------------------------------------------------------
    def restarted(self, sid: int, recovered_zxid: int) -> None:
        before = self.max_applied.get(sid, -1)
        if recovered_zxid < before:
            self.fail(
                f"server {sid} restarted at zxid {recovered_zxid:#x}, behind {before:#x} it had applied"
            )
        self.applied_last[sid] = recovered_zxid

    def lost_data(self, sid: int) -> None:
        """`sid`'s damaged data was set aside on restart: its zxid may go back, once."""
        self.max_applied.pop(sid, None)

    def synced(self, sid: int, tree_zxid: int) -> None:
        """A learner's tree was replaced or rolled back by its leader (SNAP/TRUNC)."""
        self.applied_last[sid] = tree_zxid

    def serving(self, sid: int, tree_zxid: int) -> None:
        """What a server serves is committed: a tree recovered from a log that ends in proposals
        nobody committed must be cut back before it is served (ensemble safety item 3)."""
        if tree_zxid > 0 and tree_zxid not in self.committed:
            self.fail(f"server {sid} serves a tree at zxid {tree_zxid:#x}, which no leader committed")

    def acknowledged_write(self, op: Op) -> None:
        if op.zxid not in self.committed:
            self.fail(f"{op.client} was acknowledged {op.kind} {op.path} at zxid {op.zxid:#x}, not committed")
        self.acknowledged.append(op)

    def _replayed_state(self, sid: int, upto: int) -> list[object]:
        """_tree_state(self.replay(upto)), from where the last replay for `sid` stopped when it can
        (a server's snapshots mostly go forward): replaying the history from scratch at every
        snapshot made a run's checks quadratic."""
        cursor = self._cursors.get(sid)
        at, tree = cursor if cursor is not None and cursor[0] <= upto else (-1, DataTree())
        applier = Applier(tree)
        for i in range(bisect.bisect_right(self._sorted, at), bisect.bisect_right(self._sorted, upto)):
            applier.apply(Txn.unpack(self.committed[self._sorted[i]]))
        self._cursors[sid] = (upto, tree)
        return _items_digest(list(tree_items(tree)))

    def replay(self, upto: int) -> DataTree:
        tree = DataTree()
        applier = Applier(tree)
        for zxid in self._sorted:
            if zxid > upto:
                break
            applier.apply(Txn.unpack(self.committed[zxid]))
        return tree


class _ObserverAdapter:
    def __init__(
        self,
        invariants: ClusterInvariants,
        points: list[Callable[[int, str], None]],
        tree_zxid: Callable[[], int],
    ) -> None:
        self.inv = invariants
        self.points = points
        self.tree_zxid = tree_zxid

    def established(self, sid: int, epoch: int) -> None:
        self.inv.established(sid, epoch)
        self.inv.leader_tree(sid, self.tree_zxid())

    def committed(self, sid: int, zxid: int, packed: bytes) -> None:
        self.inv.committed_by(sid, zxid, packed)

    def applied(self, sid: int, zxid: int, packed: bytes) -> None:
        self.inv.applied(sid, zxid, packed)

    def synced(self, sid: int, tree_zxid: int) -> None:
        self.inv.synced(sid, tree_zxid)

    def serving(self, sid: int, tree_zxid: int) -> None:
        self.inv.serving(sid, tree_zxid)

    def point(self, sid: int, name: str) -> None:
        for hook in list(self.points):
            hook(sid, name)


@dataclass
class SimServer:
    sid: int
    host: str
    config: ServerConfig
    disk: MemoryDisk = field(default_factory=MemoryDisk)
    peer: QuorumPeer | None = None
    scope: trio.CancelScope | None = None
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.peer is not None

    @property
    def serving(self) -> bool:
        return (
            self.peer is not None and self.peer.serving is not None and self.peer.serving.state != "read-only"
        )


def sim_config(
    sid: int,
    voters: int,
    observers: int,
    tick_ms: int,
    extra: str = "",
    init_limit: int = 10,
    sync_limit: int = 5,
) -> ServerConfig:
    lines = [
        f"tickTime={tick_ms}",
        f"initLimit={init_limit}",
        f"syncLimit={sync_limit}",
        f"dataDir=/sim/s{sid}",
        f"clientPort={CLIENT_PORT}",
        f"clientPortAddress=s{sid}",
        "4lw.commands.whitelist=*",
    ]
    for i in range(1, voters + observers + 1):
        role = ":observer" if i > voters else ""
        lines.append(f"server.{i}=s{i}:{PEER_PORT}:{ELECTION_PORT}{role}")
    if sid > voters:
        lines.append("peerType=observer")
    config = parse_config("\n".join(lines) + "\n" + extra, "/", source=f"s{sid}.cfg")
    config.server_id = sid
    return config


class SimCluster:
    def __init__(
        self,
        seed: int,
        voters: int = 3,
        observers: int = 0,
        tick_ms: int = 100,
        snap_count: int = 40,
        commit_log_count: int = 30,
        init_limit: int = 10,
        sync_limit: int = 5,
        fsync_max: float | None = None,
        faults: frozenset[str] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = SimNetwork(random.Random(self.rng.getrandbits(64)))
        self.invariants = ClusterInvariants()
        self.snap_count = snap_count
        # Slow disks widen the windows in which a crash finds a write acknowledged but not on disk.
        drawn = self.rng.choice((0.003, 0.02, 0.1))
        self.fsync_delay = (0.0005, drawn if fsync_max is None else fsync_max)
        extra = f"commitLogCount={commit_log_count}\nsnapCount={snap_count}\n"
        self.servers = {
            sid: SimServer(
                sid, f"s{sid}", sim_config(sid, voters, observers, tick_ms, extra, init_limit, sync_limit)
            )
            for sid in range(1, voters + observers + 1)
        }
        self.sync_limit_s = sync_limit * tick_ms / 1000
        self.enabled_faults = faults  # None: every fault of the nemesis (workload.FAULTS)
        # What a crash leaves of unfsynced writes: its own stream, so the seeds of runs without
        # such crashes (the scripted scenarios) draw everything else as before.
        self.disk_rng = random.Random(f"disk/{seed}")
        self.voters = voters
        self.tick = tick_ms / 1000
        self._nursery: trio.Nursery | None = None
        self.events: list[str] = []  # what happened, in order: the run's trace
        self.clients: list[SimClient] = []  # whose histories are checked at the end
        self.faults: Counter[str] = Counter()  # faults the nemesis injected, by kind
        self.nemesis_busy: set[str] = set()  # what a timed fault of the nemesis holds right now
        # Called as (sid, point name) at each protocol step a server reports; a scripted scenario
        # crashes servers from here (cluster.crash) to hit an exact interleaving.
        self.buggify: Buggify | None = None  # the nemesis's protocol-point faults, once it runs
        self.reach = Reach(self)  # how often each protocol point and rare conjunction was reached
        self.point_hooks: list[Callable[[int, str], None]] = [self.reach.point, self._epoch_quorum_oracle]

    @property
    def client_addresses(self) -> list[tuple[str, int]]:
        return [(s.host, CLIENT_PORT) for s in self.servers.values()]

    def note(self, event: str) -> None:
        self.events.append(f"{trio.current_time():10.4f} {event}")

    def _tree_zxid(self, sid: int) -> int:
        peer = self.servers[sid].peer
        return -1 if peer is None else peer.tree.last_zxid

    def would_be_leader(self, sid: int) -> bool:
        """`sid` is alive and in the leader's role, established or not yet."""
        peer = self.servers[sid].peer
        return peer is not None and isinstance(peer.role, Leader)

    def leader_of_learner(self, sid: int) -> int | None:
        peer = self.servers[sid].peer
        return peer.role.leader_id if peer is not None and isinstance(peer.role, Learner) else None

    def _epoch_quorum_oracle(self, sid: int, name: str) -> None:
        peer = self.servers[sid].peer
        if peer is not None and isinstance(peer.role, Leader):
            core = peer.role.core
            if core.phase in (leader_core.SYNC, leader_core.BROADCAST):
                self.invariants.past_epoch_quorum(sid, core.epoch)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, sid: int) -> bool:
        """Start `sid` from its disk; False when it fails to start (a write its recovery needs
        failed: it stays down, as a process that exits at start-up, until started again)."""
        server = self.servers[sid]
        assert self._nursery is not None and server.peer is None
        rng = random.Random(self.rng.getrandbits(64))
        observer = _ObserverAdapter(self.invariants, self.point_hooks, lambda: self._tree_zxid(sid))
        env = Environment(
            network=self.network.host(server.host),
            wall_clock_ms=lambda: WALL_CLOCK_BASE_MS + int(trio.current_time() * 1000),
            rng=rng,
            random_bytes=rng.randbytes,  # seeded: one seed, one run (production uses os.urandom)
            observer=observer,
        )
        store = MemoryStore(
            server.disk,
            random.Random(self.rng.getrandbits(64)),
            snap_count=self.snap_count,
            fsync_delay=self.fsync_delay,
        )
        store.on_point = lambda name: observer.point(sid, name)
        store.on_snapshot = lambda zxid, items: self.invariants.snapshot_written(sid, zxid, items)
        store.on_logged = lambda records: self.invariants.logged(sid, records)
        injected, set_aside = server.disk.damaged, server.disk.set_aside
        try:
            peer = QuorumPeer(server.config, store, env)
        except OSError as e:
            self.note(f"start s{sid} failed: {e}")
            await trio.sleep(0)
            return False
        if server.disk.set_aside > set_aside:
            if not injected:
                raise InvariantViolation(f"server {sid} found damaged data that no fault made")
            self.invariants.lost_data(sid)  # it starts empty and must not vote until re-synced
        self.invariants.restarted(sid, peer.tree.last_zxid)
        self.reach.started(sid, peer.tree.last_zxid)
        server.peer = peer
        scope = server.scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await peer.run()

        self._nursery.start_soon(run)
        self.note(f"start s{sid}")
        return True

    def crash(self, sid: int) -> None:
        """kill -9: the process is gone, with whatever it had not fsynced."""
        server = self.servers[sid]
        if server.peer is None:
            return
        assert server.scope is not None
        server.scope.cancel()
        server.peer = None
        server.restarts += 1
        self.network.crash_host(server.host)
        left = server.disk.crash(self.disk_rng)
        self.reach.crashed(sid, left is not None)
        self.note(f"crash s{sid}" + (f" ({left})" if left else ""))

    async def restart(self, sid: int) -> None:
        self.crash(sid)
        await trio.sleep(0)
        await self.start(sid)

    def leader(self) -> int | None:
        for sid, server in self.servers.items():
            peer = server.peer
            if peer is not None and isinstance(peer.role, Leader) and peer.role.established.is_set():
                return sid
        return None

    async def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        with trio.move_on_after(timeout):
            while not condition():
                await trio.sleep(self.tick / 4)
            return
        raise InvariantViolation(f"seed {self.seed}: not within {timeout}s of virtual time: {what}")

    async def wait_all_serving(self, timeout: float = 60.0) -> None:
        await self.wait_until(
            lambda: all(s.serving for s in self.servers.values() if s.alive),
            timeout,
            "every live server serving",
        )

    # -- final checks -------------------------------------------------------------------
    def check_trees(self) -> None:
        """Every serving server's tree is the committed history applied up to its last zxid, and
        the session invariant holds (zkpy.server.sessions.session_problems)."""
        for sid, server in self.servers.items():
            if not server.serving:
                continue
            assert server.peer is not None
            tree = server.peer.tree
            expected = self.invariants.replay(tree.last_zxid)
            if _tree_state(tree) != _tree_state(expected):
                raise InvariantViolation(
                    f"seed {self.seed}: server {sid}'s tree differs from its committed log"
                )
            serving = server.peer.serving
            assert serving is not None
            # The session invariant: the leader's tracker is the one that expires sessions, so
            # every session must be in it (scheduled or closing); ephemerals need their owner.
            if serving.state == "leader":
                problems = session_problems(tree, serving.sessions)
            else:
                problems = orphan_ephemerals(tree)
            if problems:
                raise InvariantViolation(f"seed {self.seed}: server {sid}: {'; '.join(problems)}")

    def check_disks(self) -> None:
        """What each disk would recover from is committed history: its newest snapshot is the
        committed history up to its zxid, and every logged record after it is a committed
        transaction, byte for byte (a snapshot or a divergent suffix left behind would come back
        at the next recovery). Once the run has healed and every server caught up; a server not
        serving (gone back to an election meanwhile) may still hold a tail its next sync cuts."""
        inv = self.invariants
        for sid, server in self.servers.items():
            if not server.serving:
                continue
            disk = server.disk
            newest = max(disk.snapshots, default=-1)
            if newest >= 0 and _items_digest(disk.snapshots[newest]) != inv._replayed_state(-sid, newest):
                raise InvariantViolation(
                    f"seed {self.seed}: s{sid}'s snapshot at {newest:#x} is not the history"
                )
            for zxid, packed in disk.log:
                if zxid > newest and inv.committed.get(zxid) != packed:
                    raise InvariantViolation(
                        f"seed {self.seed}: s{sid}'s log holds {zxid:#x}, not the committed transaction there"
                    )

    def check_acknowledged(self) -> None:
        """Acknowledged creates exist on every serving server (after the run has healed; the
        workloads never delete what they create)."""
        for op in self.invariants.acknowledged:
            if op.kind != "create" or op.result is None:
                continue
            path = op.result.path
            for sid, server in self.servers.items():
                if server.serving and server.peer is not None and path not in server.peer.tree.nodes:
                    raise InvariantViolation(f"seed {self.seed}: acknowledged {path} missing on server {sid}")

    async def run(self, scenario: Callable[[SimCluster], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for sid in self.servers:
                await self.start(sid)
            await scenario(self)
            nursery.cancel_scope.cancel()


_PACKER = msgpack.Packer(use_bin_type=True)


def _items_digest(items: list[Any]) -> list[object]:
    """What _tree_state compares, from a tree's snapshot items, packed as the snapshot file packs
    them (lists and tuples alike): cheaper than loading the tree."""
    header = items[0]
    return [
        header[2],
        sorted(tuple(s) for s in header[3]),
        b"".join(_PACKER.pack(item) for item in items[1:]),
    ]


def _tree_state(tree: DataTree) -> list[object]:
    items = list(tree_items(tree))
    header, rest = items[0], items[1:]
    return [header[2], sorted(header[3]), rest]


def swarm(seed: int, faults: list[str]) -> dict[str, object]:
    """A run's configuration drawn from its seed, as swarm testing does: most bugs need some
    features on and others off (a nemesis that does everything at once hides what one fault alone
    reaches), and timing settings decide which windows open. `faults` are the nemesis's kinds;
    each is enabled half the time ("restart" and "heal" always: they end other faults)."""
    rng = random.Random(f"swarm/{seed}")
    tick = rng.choice((50, 100, 100, 200))
    sync_limit = rng.randint(2, 10)
    voters = rng.choice((3, 3, 5))
    enabled = frozenset(f for f in faults if f in ("restart", "heal") or rng.random() < 0.5)
    return {
        "tick_ms": tick,
        "sync_limit": sync_limit,
        "init_limit": rng.randint(sync_limit, 20),
        "snap_count": round(log_uniform(rng, 6, 300)),
        "commit_log_count": round(log_uniform(rng, 3, 200)),
        "voters": voters,
        "observers": 1 if rng.random() < 0.2 else 0,
        "fsync_max": log_uniform(rng, 0.001, 0.2),
        "faults": enabled,
    }


def simulate(seed: int, scenario: Callable[[SimCluster], Awaitable[None]], **options: object) -> SimCluster:
    """Run `scenario` on a fresh simulated cluster under virtual time; returns the cluster.
    `options` are SimCluster's (swarm(seed, ...) draws a set of them)."""
    # trio's own scheduling choices, seeded too, and made independent of what ran before in this
    # process: by default each batch of runnable tasks runs in the order they were woken, and
    # tasks woken at one instant by timers are woken in the order of their cancel scopes'
    # addresses (trio's deadline tie-breaker), which differ from process to process. The
    # deterministic mode pytest-trio turns on sorts each batch by task creation, then shuffles it
    # with the seeded generator; outside pytest (scripts/simulate.py) it must be turned on here.
    run_module = trio._core._run
    run_module._r.seed(seed)
    deterministic = run_module._ALLOW_DETERMINISTIC_SCHEDULING
    run_module._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        cluster = SimCluster(seed, **options)  # type: ignore[arg-type]
        trio.run(cluster.run, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        run_module._ALLOW_DETERMINISTIC_SCHEDULING = deterministic  # type: ignore[misc]
    return cluster
