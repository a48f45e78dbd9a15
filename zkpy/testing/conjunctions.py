"""Conjunction faults: a second fault aimed at the moment a first event makes a rare
precondition, in the manner of FoundationDB's BUGGIFY (per seed each is active or not; at its
trigger it acts with a chance drawn per seed; nothing here is a scripted scenario: which server,
when and for how long all come from the seed and from where the protocol is).

Buggify's one fault at one protocol point reaches each single step of the ensemble-safety
interleavings, but items 1, 3 and 5 need two servers' coincidences at once, and 93-149 random
seeds never caught their fixes reverted (docs/testing.md). These faults aim at those:

- "snap orphan" (item 1, a SNAP installed below a snapshot on disk): an established leader's
  outgoing links are held as it proposes and it is power-cycled the moment its own log has the
  batch, so it comes back with a tail only it logged (and, with the highest zxid, is re-elected).
  When a would-be leader whose tree is not committed has just had a learner install its SNAP,
  the leader is killed before its NEWLEADER quorum and that learner is cut off from the next
  election; when the learner then acknowledges another leader it is bounced now and then (its
  next recovery loads the newest snapshot on its disk).
- "slow rejoin" (item 3, a restarted follower's logged tail must stay uncommitted through its
  rejoin): as an established leader of five or more voters proposes, every follower's disk but
  one's is slowed, and that one is bounced the moment it has logged the batch.
- "bridge" (item 5, a learner acknowledging the epochs of two would-be leaders): when a server is
  elected in a run of five or more voters, the others are split into its side and a side around
  the best-placed other voter, with one server (the worst-placed, so it votes with the other
  side) left hearing both; its links to its leader are reset a moment after it sends its info or
  its ackepoch, so it flaps between the two would-be leaders during their handshakes.

Each is counted in `Reach` when it acts (`CONJUNCTION_FAULTS`), beside the conjunctions it aims at.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import trio

from zkpy.replication.leader import Leader
from zkpy.testing.nemesis import _restart_later, log_uniform

if TYPE_CHECKING:
    from zkpy.testing.cluster import SimCluster

# Reach counts (cluster.reach.conjunctions): each fault when it acts, and the preconditions.
TAIL_POWER_CYCLE = "fault: leader power-cycled with a tail only it logged"
SNAP_ORPHAN = "fault: leader killed after its SNAP, the learner cut off"
SNAP_ORPHAN_BOUNCE = "fault: a learner SNAPped by a dead leader bounced at its next leader"
SLOW_REJOIN = "fault: follower bounced after logging, the others' disks slow"
BRIDGE = "fault: a learner bridging two sides of a split election"
BRIDGE_FLAP = "fault: the bridging learner's link reset in a handshake"
SNAP_OF_UNCOMMITTED_TAIL = "a learner installed a SNAP of a tail nobody committed"
SNAP_BELOW_SNAPSHOT = "a SNAP installed below a snapshot on disk"
OFFERED_ACCEPTED_EPOCH = "a learner offered the epoch it had accepted from another leader"
CONJUNCTION_FAULTS = (
    TAIL_POWER_CYCLE,
    SNAP_ORPHAN,
    SNAP_ORPHAN_BOUNCE,
    SLOW_REJOIN,
    BRIDGE,
    BRIDGE_FLAP,
    SNAP_OF_UNCOMMITTED_TAIL,
    SNAP_BELOW_SNAPSHOT,
    OFFERED_ACCEPTED_EPOCH,
)

KINDS = ("snap orphan", "slow rejoin", "bridge")


class ConjunctionFaults:
    """The three faults of the module docstring, fed by the cluster's point hooks. `arm(nursery)`
    while the nemesis runs (restarts and heals are started there), `disarm()` before it heals."""

    ACTIVE_CHANCE = 0.5

    def __init__(self, cluster: SimCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.active = {kind: rng.random() < self.ACTIVE_CHANCE for kind in KINDS}
        self.chance = {kind: rng.choice((0.25, 0.5, 1.0)) for kind in KINDS}
        self._later: trio.Nursery | None = None
        self._holding: int | None = None  # a leader whose outgoing links are held until it logs
        self._lagging: tuple[int, int, int] | None = None  # (follower kept down, its zxid, leader)
        self._cut_off: dict[str, int] = {}  # host of an orphaned learner -> the leader that died
        self._orphans: dict[int, int] = {}  # learner -> the dead would-be leader that SNAPped it
        self._rejoining: tuple[int, int, float] | None = (
            None  # (follower to bounce when it logs, leader, until)
        )
        self._bridge: int | None = None  # the learner hearing both sides while the split lasts
        self._accepted_from: dict[int, tuple[int, int]] = {}  # learner -> (epoch, leader) accepted
        self._busy_until = 0.0
        cluster.point_hooks.append(self._at_point)

    def arm(self, later: trio.Nursery) -> None:
        self._later = later

    def disarm(self) -> None:
        self._later = None

    def _fire(self, kind: str) -> bool:
        return self._later is not None and self.active[kind] and self.rng.random() < self.chance[kind]

    def _count(self, what: str) -> None:
        self.cluster.reach.count(what)

    def _at_point(self, sid: int, name: str) -> None:
        cluster = self.cluster
        if name == "learner installing snapshot":
            self._snap_below(sid)
        elif name == "learner got leaderinfo":
            self._offered(sid)
        elif name == "learner accepted epoch":
            self._accepted(sid)
        if self._later is None:
            return
        voters = cluster.voters
        if name == "leader proposing" and self._established(sid):
            if voters >= 5 and self._rejoin_free() and self._fire("slow rejoin"):
                self._slow_rejoin(sid)
            elif self._holding is None and self._fire("snap orphan"):
                self._lag_then_hold(sid)
        elif name == "leader logged" and sid == self._holding:
            self._power_cycle(sid)
        elif name == "learner logged" and self._rejoining is not None and self._rejoining[0] == sid:
            leader = self._rejoining[1]
            self._rejoining = None
            if cluster.leader_of_learner(sid) == leader:
                self._bounce(sid, log_uniform(self.rng, 0.001, 0.3))
                self._count(SLOW_REJOIN)
        elif name == "learner installed snapshot":
            self._snap_installed(sid)
        elif name == "learner sent acknl" and sid in self._orphans:
            dead = self._orphans[sid]
            if cluster.leader_of_learner(sid) == dead:
                return  # its acknowledgement of the SNAP, on its way to the dead leader
            del self._orphans[sid]
            if self._fire("snap orphan"):
                self._bounce(sid, log_uniform(self.rng, 0.001, 1.0))
                self._count(SNAP_ORPHAN_BOUNCE)
        elif name == f"elected {sid}":
            self._elected(sid)
        elif name in ("learner sent info", "learner sent ackepoch") and sid == self._bridge:
            current = cluster.leader_of_learner(sid)
            if current is not None and self.rng.random() < 0.5:
                if name == "learner sent info":
                    # Its info counts there, the leader's answer is held and then lost: it has been
                    # in that leader's discovery without accepting its epoch.
                    cluster.network.cut(f"s{current}", f"s{sid}")
                self._later.start_soon(self._flap, sid, current, log_uniform(self.rng, 0.003, 0.02))

    def _elected(self, sid: int) -> None:
        # A learner cut off after an orphaned SNAP comes back as soon as another leader is
        # elected without it, and that leader's other learners' disks turn slow for a while: the
        # learner joins its sync before it establishes, while its tree is below the SNAP.
        for host, dead in list(self._cut_off.items()):
            if dead != sid:
                del self._cut_off[host]
                assert self._later is not None
                self._later.start_soon(self._rejoin_later, host, log_uniform(self.rng, 0.001, 0.05))
                until = trio.current_time() + log_uniform(self.rng, 0.3, 2.0)
                for other in self.cluster.servers.values():
                    if other.host not in (host, f"s{sid}"):
                        other.disk.slow_until = max(other.disk.slow_until, until)
        if self.cluster.voters >= 5 and self._bridge is None and self._fire("bridge"):
            self._split(sid)

    def _established(self, sid: int) -> bool:
        peer = self.cluster.servers[sid].peer
        return peer is not None and isinstance(peer.role, Leader) and peer.role.established.is_set()

    # -- snap orphan (item 1) -------------------------------------------------------------------
    def _lag_then_hold(self, leader: int) -> None:
        """First keep one follower down (so that it will need a SNAP); once the leader's history
        window has moved past it, hold the leader's links for its power cycle, and start the
        follower with it: the re-elected leader, with a tail only it logged, SNAPs it."""
        cluster = self.cluster
        if self._lagging is None:
            followers = [
                sid
                for sid, s in cluster.servers.items()
                if sid != leader and s.serving and cluster.leader_of_learner(sid) == leader
            ]
            if not followers:
                return
            lagging = self.rng.choice(followers)
            self._lagging = (lagging, cluster._tree_zxid(lagging), leader)
            cluster.crash(lagging)
            assert self._later is not None
            self._later.start_soon(self._end_lag_later, lagging, 5.0)
            cluster.note(f"conjunction: s{lagging} kept down while s{leader} goes on")
            return
        lagging, zxid, lag_leader = self._lagging
        peer = cluster.servers[leader].peer
        if lag_leader != leader or peer is None or peer.history.base <= zxid:
            return
        self._hold(leader)

    async def _end_lag_later(self, sid: int, delay: float) -> None:
        await trio.sleep(delay)
        self._end_lag(sid, 0.0)

    def _end_lag(self, sid: int, delay: float) -> None:
        if self._lagging is None or self._lagging[0] != sid:
            return
        self._lagging = None
        assert self._later is not None
        self._later.start_soon(_restart_later, self.cluster, sid, delay)

    def _hold(self, leader: int) -> None:
        """Hold what `leader` sends until its own log has this batch (then it is power-cycled)."""
        cluster, host = self.cluster, f"s{leader}"
        self._holding = leader
        for other in cluster.servers.values():
            if other.host != host:
                cluster.network.cut(host, other.host)
        assert self._later is not None
        self._later.start_soon(self._unhold_later, leader, 0.5)

    def _unhold(self, leader: int) -> None:
        if self._holding != leader:
            return
        self._holding = None
        host = f"s{leader}"
        for other in self.cluster.servers.values():
            self.cluster.network.uncut(host, other.host)

    async def _unhold_later(self, leader: int, delay: float) -> None:
        await trio.sleep(delay)
        self._unhold(leader)

    def _power_cycle(self, leader: int) -> None:
        """The batch is on the leader's disk and nowhere else: drop what it held, kill it, let the
        links go, and start it again within 1-100 ms (before the others finish an election)."""
        cluster = self.cluster
        cluster.network.reset(f"s{leader}")  # what it sent and the cut held is lost
        cluster.crash(leader)
        self._unhold(leader)
        assert self._later is not None
        self._later.start_soon(_restart_later, cluster, leader, log_uniform(self.rng, 0.001, 0.1))
        if self._lagging is not None:
            self._end_lag(self._lagging[0], log_uniform(self.rng, 0.001, 0.1))
        self._count(TAIL_POWER_CYCLE)
        cluster.note(f"conjunction: s{leader} power-cycled with a tail only it logged")

    def _snap_installed(self, learner: int) -> None:
        cluster = self.cluster
        leader = cluster.leader_of_learner(learner)
        if leader is None or not cluster.would_be_leader(leader) or self._established(leader):
            return
        tree_zxid = cluster._tree_zxid(leader)
        if tree_zxid <= 0 or tree_zxid in cluster.invariants.committed:
            return
        self._count(SNAP_OF_UNCOMMITTED_TAIL)
        if not self._fire("snap orphan"):
            return
        cluster.crash(leader)
        assert self._later is not None
        self._later.start_soon(_restart_later, cluster, leader, log_uniform(self.rng, 0.3, 3.0))
        host = f"s{learner}"
        if host not in cluster.network._isolated:
            cluster.network.isolate(host)
            self._cut_off[host] = leader
            self._later.start_soon(self._rejoin_later, host, 3.0)  # if no other leader comes
        self._orphans[learner] = leader
        self._count(SNAP_ORPHAN)
        cluster.note(f"conjunction: s{leader} killed after its SNAP to s{learner}, s{learner} cut off")

    async def _rejoin_later(self, host: str, delay: float) -> None:
        await trio.sleep(delay)
        self._cut_off.pop(host, None)
        self.cluster.network.rejoin(host)

    def _snap_below(self, learner: int) -> None:
        """Counts a SNAP about to be installed below a snapshot already on the learner's disk (the
        store must delete that one: item 1), seen from the disk, whatever the store then does."""
        cluster = self.cluster
        leader = cluster.leader_of_learner(learner)
        if leader is None or not cluster.servers[leader].alive:
            return
        zxid = cluster._tree_zxid(leader)
        if any(z > zxid for z in cluster.servers[learner].disk.snapshots):
            self._count(SNAP_BELOW_SNAPSHOT)

    # -- slow rejoin (item 3) -------------------------------------------------------------------
    def _slow_rejoin(self, leader: int) -> None:
        cluster = self.cluster
        followers = [
            sid
            for sid, s in cluster.servers.items()
            if sid != leader
            and sid <= cluster.voters
            and s.serving
            and cluster.leader_of_learner(sid) == leader
        ]
        if len(followers) < 2:
            return
        bounced = self.rng.choice(followers)
        until = trio.current_time() + log_uniform(self.rng, 0.5, 4.0)
        for sid in followers:
            if sid != bounced:
                disk = cluster.servers[sid].disk
                disk.slow_until = max(disk.slow_until, until)
        self._rejoining = (bounced, leader, until)
        cluster.note(f"conjunction: every follower of s{leader} slow but s{bounced}, bounced when it logs")

    def _rejoin_free(self) -> bool:
        """No slow rejoin waiting, or the one waiting outlived its slow disks (its follower never
        logged meanwhile)."""
        return self._rejoining is None or trio.current_time() > self._rejoining[2]

    def _bounce(self, sid: int, delay: float) -> None:
        cluster = self.cluster
        if not cluster.servers[sid].alive:
            return
        cluster.crash(sid)
        assert self._later is not None
        self._later.start_soon(_restart_later, cluster, sid, delay)
        cluster.note(f"conjunction: s{sid} bounced, back after {delay:.3f}s")

    # -- bridge (item 5) ------------------------------------------------------------------------
    def _split(self, elected: int) -> None:
        cluster = self.cluster
        others = [sid for sid in range(1, cluster.voters + 1) if sid != elected]
        others.sort(key=lambda sid: (self._vote_zxid(sid), sid))
        bridge, best, rest = others[0], others[-1], others[1:-1]
        self.rng.shuffle(rest)
        side_a = {f"s{elected}", *(f"s{sid}" for sid in rest[: len(rest) // 2])}
        side_b = {f"s{best}", *(f"s{sid}" for sid in rest[len(rest) // 2 :])}
        network = cluster.network
        for a in side_a:
            for b in side_b:
                network.cut(a, b)
                network.cut(b, a)
        self._bridge = bridge
        assert self._later is not None
        self._later.start_soon(self._unsplit_later, side_a, side_b, log_uniform(self.rng, 0.5, 5.0))
        self._count(BRIDGE)
        cluster.note(f"conjunction: split {sorted(side_a)} | {sorted(side_b)}, s{bridge} hears both")

    def _vote_zxid(self, sid: int) -> tuple[int, int]:
        """What `sid` would vote with: (its current epoch, its history's last zxid)."""
        peer = self.cluster.servers[sid].peer
        return (-1, -1) if peer is None else (peer.epochs.current, peer.history.last)

    async def _unsplit_later(self, side_a: set[str], side_b: set[str], delay: float) -> None:
        await trio.sleep(delay)
        for a in side_a:
            for b in side_b:
                self.cluster.network.uncut(a, b)
                self.cluster.network.uncut(b, a)
        self._bridge = None

    async def _flap(self, learner: int, leader: int, delay: float) -> None:
        """Once what the learner just sent has arrived, reset its links to that leader."""
        await trio.sleep(delay)
        network = self.cluster.network
        if self.cluster.leader_of_learner(learner) == leader:
            network.reset(f"s{learner}", f"s{leader}")
            self._count(BRIDGE_FLAP)
        network.uncut(f"s{leader}", f"s{learner}")

    def _offered(self, learner: int) -> None:
        """Counts a learner being offered, by a leader other than the one it accepted it from, the
        epoch it already accepted: where the -1 ack (item 5) decides."""
        cluster = self.cluster
        leader = cluster.leader_of_learner(learner)
        before = self._accepted_from.get(learner)
        if leader is None or before is None or before[1] == leader or not cluster.would_be_leader(leader):
            return
        peer = cluster.servers[leader].peer
        assert peer is not None and isinstance(peer.role, Leader)
        if peer.role.core.epoch == before[0]:
            self._count(OFFERED_ACCEPTED_EPOCH)

    def _accepted(self, learner: int) -> None:
        peer = self.cluster.servers[learner].peer
        leader = self.cluster.leader_of_learner(learner)
        if peer is not None and leader is not None:
            self._accepted_from[learner] = (peer.epochs.accepted, leader)
