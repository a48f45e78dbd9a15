"""The protocol-aware half of the simulator's nemesis, and what tells how far the random runs reach.

`Buggify` is FoundationDB's BUGGIFY for the simulated ensemble: every server reports its protocol
steps by name (`Observer.point`: "leader sent syncdata:snap", "learner got newleader", "store
snapshot written", ...). Per seed a quarter of the point kinds is active; at an active point the
nemesis may, right there, kill the server (to restart it later), bounce it (restart after
1 ms-2 s, log-uniform), cut it off from everyone for a while, reset its connections, or pause it;
a third of the time the fault hits another server at that moment instead.
Faults at protocol points reach the interleavings a clock-driven nemesis almost never hits: a
leader dying between a SNAP and its NEWLEADER quorum, a learner killed between its log write and
its ack, a commit lost on the way while a new leader is chosen.

The chance of acting at a point falls with how often its kind was reached (in this run, plus an
optional prior: the mean per seed of earlier seeds, `scripts/simulate.py --adapt`), so rare steps
get as many faults as frequent ones. Everything is drawn from the seed: one seed, one run.

`Reach` counts how often each point kind and each rare conjunction (a leader dying between SNAP
and a NEWLEADER quorum, a server restarting with a logged tail nobody committed, a client moving
with a request in flight, two would-be leaders at once, ...) was reached; `scripts/simulate.py`
prints the totals, so a new fault or point shows whether the runs get there at all.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from zkpy.testing.cluster import SimCluster

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


def point_kind(name: str) -> str:
    """A point's name without the server ids, zxids and epochs in it: "elected 3" -> "elected N"."""
    return _NUMBERS.sub("N", name)


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    """Heavy-tailed draws: as many between 5 and 50 ms as between 0.5 and 5 s."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def pareto(rng: random.Random, low: float, high: float, alpha: float = 1.2) -> float:
    """Mostly near `low`, now and then far above it (a Pareto tail, cut at `high`)."""
    return min(high, low * rng.paretovariate(alpha))


# Rare conjunctions Reach counts (beside every point kind): the interleavings of the ensemble
# safety issue and what leads to them.
SNAP_THEN_DIED = "leader died between SNAP and a NEWLEADER quorum"
SNAPPED_LEARNER_MOVED = "a learner SNAPped by a leader that died joined another leader"
UNCOMMITTED_TAIL = "server restarted with a logged tail nobody committed"
CLIENT_MOVED = "client moved on with a request in flight"
TWO_WOULD_BE_LEADERS = "two would-be leaders at once"
LEARNER_BETWEEN_LEADERS = "a learner acked the epochs of two would-be leaders"
CRASH_IN_SNAP_INSTALL = "learner crashed inside a SNAP install"
CRASH_WITH_UNFSYNCED = "crash with a log write not yet fsynced"
STUCK_ABOVE_EPOCH = "a server above the leader's epoch at a heal"
BUGGIFIED = "buggify fault"
CONJUNCTIONS = (
    SNAP_THEN_DIED,
    SNAPPED_LEARNER_MOVED,
    UNCOMMITTED_TAIL,
    CLIENT_MOVED,
    TWO_WOULD_BE_LEADERS,
    LEARNER_BETWEEN_LEADERS,
    CRASH_IN_SNAP_INSTALL,
    CRASH_WITH_UNFSYNCED,
    STUCK_ABOVE_EPOCH,
)


class Reach:
    """Counts of point kinds and conjunctions in one run (`points`, `conjunctions`), fed by the
    cluster (point hook, crashes, starts) and the clients."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.points: Counter[str] = Counter()
        self.conjunctions: Counter[str] = Counter()
        self._snap_unestablished: set[int] = set()  # leaders that sent a SNAP before establishing
        self._snapped_by: dict[int, int] = {}  # learner -> the unestablished leader that SNAPped it
        self._dead_unestablished: set[int] = set()  # leaders that died before a NEWLEADER quorum
        self._acked_epoch_of: dict[int, int] = {}  # learner -> the would-be leader it last acked
        self._last_point: dict[int, str] = {}

    def count(self, conjunction: str) -> None:
        self.conjunctions[conjunction] += 1

    def point(self, sid: int, name: str) -> None:
        kind = point_kind(name)
        self.points[kind] += 1
        self._last_point[sid] = kind
        cluster = self.cluster
        if kind == "elected N" and name == f"elected {sid}":
            self._snap_unestablished.discard(sid)
            self._dead_unestablished.discard(sid)
            if any(other != sid and cluster.would_be_leader(other) for other in cluster.servers):
                self.count(TWO_WOULD_BE_LEADERS)
        elif kind == "leader sent syncdata:snap" and cluster.would_be_leader(sid):
            self._snap_unestablished.add(sid)
        elif kind == "leader established":
            self._snap_unestablished.discard(sid)
        elif kind == "learner installed snapshot":
            leader = cluster.leader_of_learner(sid)
            before = self._snapped_by.get(sid)
            if before is not None and before in self._dead_unestablished:
                return  # SNAPped again by the next leader: still the learner of the dead one's SNAP
            if leader is not None and cluster.would_be_leader(leader):
                self._snapped_by[sid] = leader
        elif kind == "learner sent ackepoch":
            leader = cluster.leader_of_learner(sid)
            if leader is None:
                return
            before = self._acked_epoch_of.get(sid)
            if before is not None and before != leader and cluster.would_be_leader(before):
                self.count(LEARNER_BETWEEN_LEADERS)
            self._acked_epoch_of[sid] = leader
        elif kind == "learner sent acknl":
            leader = cluster.leader_of_learner(sid)
            if leader == self._snapped_by.get(sid) and leader in self._dead_unestablished:
                return  # its acknowledgement of that SNAP, on its way to the dead leader
            snapped_by = self._snapped_by.pop(sid, None)
            if snapped_by is not None and leader != snapped_by and snapped_by in self._dead_unestablished:
                self.count(SNAPPED_LEARNER_MOVED)

    def crashed(self, sid: int, unfsynced: bool) -> None:
        if sid in self._snap_unestablished:
            self._snap_unestablished.discard(sid)
            self._dead_unestablished.add(sid)
            self.count(SNAP_THEN_DIED)
        if self._last_point.get(sid) in ("learner installing snapshot", "store snapshot written"):
            self.count(CRASH_IN_SNAP_INSTALL)
        if unfsynced:
            self.count(CRASH_WITH_UNFSYNCED)
        self._last_point.pop(sid, None)

    def started(self, sid: int, recovered_zxid: int) -> None:
        if recovered_zxid > 0 and recovered_zxid not in self.cluster.invariants.committed:
            self.count(UNCOMMITTED_TAIL)


# What Buggify does at an active point, with weights.
ACTIONS: dict[str, int] = {
    "crash": 2,  # kill -9 now, restart 0.3-5 s later (log-uniform)
    "bounce": 3,  # kill -9 now, restart 1 ms-2 s later (log-uniform)
    "isolate": 2,  # cut off from every host for 20 ms-3 s (log-uniform)
    "reset": 2,  # its connections reset (to everyone, or to one other server)
    "pause": 2,  # stopped for 20 ms-4 s (log-uniform)
}


class Buggify:
    """Faults at protocol points (the module docstring). `arm(nursery)` while the nemesis runs
    (restarts and resumes are started there), `disarm()` before the run heals."""

    ACTIVE_FRACTION = 0.25

    def __init__(
        self, cluster: SimCluster, rng: random.Random, prior: Mapping[str, float] | None = None
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.prior = prior or {}
        self.salt = rng.getrandbits(32)  # which kinds are active: a function of the seed and the kind
        # Faults per point kind this run at most about this many, spread out by heavy-tailed gaps.
        self.target = rng.choice((0.3, 1.0, 3.0))
        self.seen: Counter[str] = Counter()
        self.done: Counter[str] = Counter()  # "kind: action"
        self._active: dict[str, bool] = {}
        self._later: trio.Nursery | None = None
        self._quiet_until = -math.inf
        cluster.point_hooks.append(self._at_point)

    def active(self, kind: str) -> bool:
        if kind not in self._active:
            self._active[kind] = random.Random(f"{self.salt}/{kind}").random() < self.ACTIVE_FRACTION
        return self._active[kind]

    def arm(self, later: trio.Nursery) -> None:
        self._later = later

    def disarm(self) -> None:
        self._later = None

    def _at_point(self, sid: int, name: str) -> None:
        kind = point_kind(name)
        self.seen[kind] += 1
        if self._later is None or not self.active(kind):
            return
        now = trio.current_time()
        if now < self._quiet_until:
            return
        chance = self.target / (self.seen[kind] + self.prior.get(kind, 0.0))
        if self.rng.random() >= chance:
            return
        action = self.rng.choices(list(ACTIONS), list(ACTIONS.values()))[0]
        # A third of the time the fault hits another server at this very moment (a leader dies
        # just as its learner installs the snapshot it sent, say): coincidences of two servers'
        # steps are what the rare interleavings are made of.
        target = sid if self.rng.random() < 2 / 3 else self.rng.choice(sorted(self.cluster.servers))
        if self._act(action, target):
            self._quiet_until = now + log_uniform(self.rng, 0.05, 2.0)
            self.done[f"{kind}: {action}"] += 1
            self.cluster.reach.count(BUGGIFIED)
            self.cluster.note(f"buggify {action} s{target} at {name!r} of s{sid}")

    def _act(self, action: str, sid: int) -> bool:
        cluster, later, rng = self.cluster, self._later, self.rng
        assert later is not None
        server = cluster.servers[sid]
        host = server.host
        network = cluster.network
        if not server.alive:
            return False
        if action in ("crash", "bounce"):
            cluster.crash(sid)
            delay = log_uniform(rng, 0.3, 5.0) if action == "crash" else log_uniform(rng, 0.001, 2.0)
            later.start_soon(_restart_later, cluster, sid, delay)
        elif action == "isolate":
            if host in network._isolated:
                return False
            network.isolate(host)
            later.start_soon(_rejoin_later, cluster, host, log_uniform(rng, 0.02, 3.0))
        elif action == "reset":
            others = [s for s in cluster.servers if s != sid]
            network.reset(host, f"s{rng.choice(others)}" if rng.random() < 0.5 else None)
        elif action == "pause":
            if network.paused(host):
                return False
            network.pause(host)
            later.start_soon(_resume_later, cluster, host, log_uniform(rng, 0.02, 4.0))
        return True


async def _restart_later(cluster: SimCluster, sid: int, delay: float) -> None:
    await trio.sleep(delay)
    if not cluster.servers[sid].alive:  # else something else restarted it already
        await cluster.start(sid)


async def _rejoin_later(cluster: SimCluster, host: str, delay: float) -> None:
    await trio.sleep(delay)
    cluster.network.rejoin(host)


async def _resume_later(cluster: SimCluster, host: str, delay: float) -> None:
    await trio.sleep(delay)
    if cluster.network.paused(host):  # else it was healed or crashed meanwhile
        held = cluster.network.resume(host)
        cluster.note(f"resume {host}: {held} held chunks delivered at once")
