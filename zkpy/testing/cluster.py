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
- every serving server's tree equals the committed history applied up to its last zxid.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
import trio.testing

from zkpy.replication.environment import Environment
from zkpy.replication.leader import Leader
from zkpy.replication.peer import QuorumPeer
from zkpy.server.config import ServerConfig, parse_config
from zkpy.server.sessions import orphan_ephemerals, session_problems
from zkpy.testing.disk import MemoryDisk, MemoryStore
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

    def fail(self, message: str) -> None:
        raise InvariantViolation(message)

    # -- Observer ---------------------------------------------------------------------
    def established(self, sid: int, epoch: int) -> None:
        other = self.leaders.setdefault(epoch, sid)
        if other != sid:
            self.fail(f"two leaders for epoch {epoch}: servers {other} and {sid}")

    def committed_by(self, sid: int, zxid: int, packed: bytes) -> None:
        known = self.committed.get(zxid)
        if known is None:
            self.committed[zxid] = packed
            bisect.insort(self._sorted, zxid)
            self._check_session_order(zxid, packed)
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

    def replay(self, upto: int) -> DataTree:
        tree = DataTree()
        applier = Applier(tree)
        for zxid in self._sorted:
            if zxid > upto:
                break
            applier.apply(Txn.unpack(self.committed[zxid]))
        return tree


class _ObserverAdapter:
    def __init__(self, invariants: ClusterInvariants, points: list[Callable[[int, str], None]]) -> None:
        self.inv = invariants
        self.points = points

    def established(self, sid: int, epoch: int) -> None:
        self.inv.established(sid, epoch)

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


def sim_config(sid: int, voters: int, observers: int, tick_ms: int, extra: str = "") -> ServerConfig:
    lines = [
        f"tickTime={tick_ms}",
        "initLimit=10",
        "syncLimit=5",
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
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = SimNetwork(random.Random(self.rng.getrandbits(64)))
        self.invariants = ClusterInvariants()
        self.snap_count = snap_count
        # Slow disks widen the windows in which a crash finds a write acknowledged but not on disk.
        self.fsync_delay = (0.0005, self.rng.choice((0.003, 0.02, 0.1)))
        extra = f"commitLogCount={commit_log_count}\nsnapCount={snap_count}\n"
        self.servers = {
            sid: SimServer(sid, f"s{sid}", sim_config(sid, voters, observers, tick_ms, extra))
            for sid in range(1, voters + observers + 1)
        }
        self.voters = voters
        self.tick = tick_ms / 1000
        self._nursery: trio.Nursery | None = None
        self.events: list[str] = []  # what happened, in order: the run's trace
        self.clients: list[SimClient] = []  # whose histories are checked at the end
        self.faults: Counter[str] = Counter()  # faults the nemesis injected, by kind
        self.nemesis_busy: set[str] = set()  # what a timed fault of the nemesis holds right now
        # Called as (sid, point name) at each protocol step a server reports; a scripted scenario
        # crashes servers from here (cluster.crash) to hit an exact interleaving.
        self.point_hooks: list[Callable[[int, str], None]] = []

    @property
    def client_addresses(self) -> list[tuple[str, int]]:
        return [(s.host, CLIENT_PORT) for s in self.servers.values()]

    def note(self, event: str) -> None:
        self.events.append(f"{trio.current_time():10.4f} {event}")

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, sid: int) -> None:
        server = self.servers[sid]
        assert self._nursery is not None and server.peer is None
        env = Environment(
            network=self.network.host(server.host),
            wall_clock_ms=lambda: WALL_CLOCK_BASE_MS + int(trio.current_time() * 1000),
            rng=random.Random(self.rng.getrandbits(64)),
            observer=_ObserverAdapter(self.invariants, self.point_hooks),
        )
        store = MemoryStore(
            server.disk,
            random.Random(self.rng.getrandbits(64)),
            snap_count=self.snap_count,
            fsync_delay=self.fsync_delay,
        )
        injected, set_aside = server.disk.damaged, server.disk.set_aside
        peer = QuorumPeer(server.config, store, env)
        if server.disk.set_aside > set_aside:
            if not injected:
                raise InvariantViolation(f"server {sid} found damaged data that no fault made")
            self.invariants.lost_data(sid)  # it starts empty and must not vote until re-synced
        self.invariants.restarted(sid, peer.tree.last_zxid)
        server.peer = peer
        scope = server.scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await peer.run()

        self._nursery.start_soon(run)
        self.note(f"start s{sid}")

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
        self.note(f"crash s{sid}")

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


def _tree_state(tree: DataTree) -> list[object]:
    items = list(tree_items(tree))
    header, rest = items[0], items[1:]
    return [header[2], sorted(header[3]), rest]


def simulate(seed: int, scenario: Callable[[SimCluster], Awaitable[None]], **options: int) -> SimCluster:
    """Run `scenario` on a fresh simulated cluster under virtual time; returns the cluster."""
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
        cluster = SimCluster(seed, **options)
        trio.run(cluster.run, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        run_module._ALLOW_DETERMINISTIC_SCHEDULING = deterministic  # type: ignore[misc]
    return cluster
