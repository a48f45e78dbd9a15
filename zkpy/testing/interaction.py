"""A two-core interaction harness (in the manner of etcd raft's interaction tests): the pure
LeaderCore and LearnerCores of a few servers, wired by a script instead of sockets and clocks.

Every step is explicit, so a known-bad interleaving from a bug report reads as a short script:

    e = Interaction(voters=3)
    e.lead(1, 2, 3)          # 1 leads a new epoch; 2 and 3 connect to it
    e.settle()               # deliver everything, complete every durable write, until quiet
    e.propose(1, "a")        # the leader's pipeline proposes a batch (one create per name)
    e.deliver(1, 2)          # deliver what 1 queued for 2 (and carry out 2's effects)
    e.complete(2)            # 2's oldest durable write (log batch, sync) reaches its disk
    e.crash(3)               # 3 loses its process: only what its disk holds survives
    e.restart(3)             # 3 recovers from that disk, as a real server does
    e.check()                # the oracles (below)

Each server is a real QuorumPeer that is never run: its recovery, history window, epochs and
tree are the production ones, over the simulator's MemoryStore (zkpy.testing.disk). The
harness plays the glue: it carries out the cores' effects as leader.py and learner.py do, and
the durable ones (the leader's WriteLog, a learner's Log and TakeSync) wait in a queue per
server until the script completes them (`complete`) or crashes the server before they land.
The learner's sync install and log write are the glue's own functions (learner.take_sync,
log_batch), so what is durable when is what production does.

Oracles (`check`): every committed zxid has one transaction (no two leaders commit different
transactions at one zxid); a tree a server holds is the committed history replayed to its zxid
(it holds nothing uncommitted) whenever it serves or has recovered; whatever was committed
survives on a quorum of disks.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.replication import leader_core as lc
from zkpy.replication import learner_core as rc
from zkpy.replication.leader import new_leader_core
from zkpy.replication.learner import log_batch, new_learner_core, take_sync
from zkpy.replication.messages import Message, SnapshotChunk
from zkpy.replication.peer import QuorumPeer
from zkpy.replication.roles import RoleEnded
from zkpy.replication.wire import FrameDecoder, encode_frame
from zkpy.testing.cluster import sim_config
from zkpy.testing.disk import MemoryDisk, MemoryStore
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn

INIT_LIMIT, SYNC_LIMIT = 10.0, 5.0
STREAM_PIECE = 4096  # small, so a script sees a SNAP as several messages


class Crashed(Exception):
    """A scripted crash at a point inside a durable write."""


@dataclass
class Link:
    """One learner's connection to its leader: two message queues and the learner's core."""

    conn: int
    leader: int
    learner: int
    core: rc.LearnerCore
    to_learner: deque[list[Any]] = field(default_factory=deque)
    to_leader: deque[list[Any]] = field(default_factory=deque)


@dataclass
class Node:
    sid: int
    disk: MemoryDisk
    peer: QuorumPeer
    leader: lc.LeaderCore | None = None
    link: Link | None = None  # as a learner
    writes: deque[tuple[str, Any]] = field(default_factory=deque)  # durable writes in flight
    serving: bool = False
    recovered: bool = True  # the tree came from recovery (no sync yet)
    receiving: Any = None  # a streamed SNAP's pieces so far


class Interaction:
    def __init__(self, voters: int = 3, observers: int = 0, seed: int = 0, commit_log_count: int = 1000) -> None:
        self.voters = voters
        self.observers = observers
        self.commit_log_count = commit_log_count  # the history window: a learner further behind gets a SNAP
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[int, Node] = {}
        self.links: dict[int, Link] = {}
        self._conns = itertools.count(1)
        self.committed: dict[int, bytes] = {}  # zxid -> packed transaction, by any leader's decision
        self.trace: list[str] = []
        self.syncs: list[tuple[int, int, str, int]] = []  # (leader, learner, mode, zxid) as planned
        for sid in range(1, voters + observers + 1):
            disk = MemoryDisk()
            self.nodes[sid] = Node(sid, disk, self._peer(sid, disk))

    def _peer(self, sid: int, disk: MemoryDisk) -> QuorumPeer:
        store = MemoryStore(disk, random.Random(sid), snap_count=1 << 30, fsync_delay=(0.0, 0.0))
        extra = f"commitLogCount={self.commit_log_count}\n"
        return QuorumPeer(sim_config(sid, self.voters, self.observers, 1000, extra), store)

    def log(self, line: str) -> None:
        self.trace.append(f"{self.now:6.2f} {line}")

    # -- roles --------------------------------------------------------------------------
    def lead(self, sid: int, *learners: int) -> list[int]:
        """`sid` won an election and leads; each of `learners` connects to it (its info is
        queued). Returns the links' conn ids, in order."""
        node = self.nodes[sid]
        self._end_roles(sid)
        peer = node.peer
        node.leader = new_leader_core(peer, INIT_LIMIT, SYNC_LIMIT, self.now)
        self.log(f"{sid} leads (accepted {peer.epochs.accepted}, last {peer.history.last:#x})")
        self._leader_effects(sid, node.leader.start())
        return [self.follow(learner, sid) for learner in learners]

    def follow(self, sid: int, leader: int) -> int:
        """`sid` (not running a role) connects to `leader`: a new link; returns its conn id."""
        node, lead = self.nodes[sid], self.nodes[leader]
        assert lead.leader is not None, f"{leader} is not leading"
        self._end_roles(sid)
        core = new_learner_core(node.peer, INIT_LIMIT, SYNC_LIMIT, self.now)
        link = Link(next(self._conns), leader, sid, core)
        self.links[link.conn] = link
        node.link = link
        lead.leader.connected(link.conn, self.now)
        self._learner_effects(sid, core.start())
        return link.conn

    def _end_roles(self, sid: int) -> None:
        node = self.nodes[sid]
        if node.leader is not None:
            for link in [x for x in self.links.values() if x.leader == sid]:
                self._drop(link)
            node.leader = None
            self._role_over(node)
        if node.link is not None:
            self._drop(node.link)
        node.serving = False

    def _role_over(self, node: Node) -> None:
        """A role ended: its writer task dies with it (a write in flight on the simulated store
        never lands, and no later role hears of it), and the server's history is cut back to its
        disk before it votes again, as peer.py does."""
        node.writes.clear()
        node.receiving = None
        node.peer.history_to_disk()

    def _drop(self, link: Link) -> None:
        """The connection is gone on both sides: the learner's role ends, the leader forgets it."""
        self.links.pop(link.conn, None)
        learner = self.nodes[link.learner]
        if learner.link is link:
            learner.link = None
            learner.serving = False
            self._role_over(learner)
        leader = self.nodes[link.leader].leader
        if leader is not None:
            self._leader_effects(link.leader, leader.disconnected(link.conn))

    def disconnect(self, learner: int) -> None:
        node = self.nodes[learner]
        assert node.link is not None
        self.log(f"{learner} disconnects from {node.link.leader}")
        self._drop(node.link)

    # -- steps ----------------------------------------------------------------------------
    def deliver(self, src: int, dst: int, count: int | None = None) -> int:
        """Deliver up to `count` queued messages from `src` to `dst` (all by default), each
        followed by its receiver's effects. Returns how many were delivered."""
        delivered = 0
        while count is None or delivered < count:
            link = self._link_between(src, dst)
            if link is None:
                break
            queue = link.to_learner if src == link.leader else link.to_leader
            if not queue:
                break
            message = queue.popleft()
            delivered += 1
            self.log(f"{src} -> {dst}: {_brief(message)}")
            if src == link.leader:
                self._to_learner(link, message)
            else:
                leader = self.nodes[dst].leader
                assert leader is not None
                try:
                    effects = leader.receive_wire(link.conn, message, self.now)
                except RoleEnded as e:  # the glue's driver ends the role (e.g. a learner ahead of it)
                    self.log(f"{dst}: role ended: {e}")
                    self._end_roles(dst)
                    continue
                self._leader_effects(dst, effects)
        return delivered

    def drop_messages(self, src: int, dst: int) -> None:
        """Lose what `src` queued for `dst` (a link that is cut before it delivers)."""
        link = self._link_between(src, dst)
        if link is not None:
            (link.to_learner if src == link.leader else link.to_leader).clear()

    def queued(self, src: int, dst: int) -> list[str]:
        """The tags of the messages `src` has queued for `dst`."""
        link = self._link_between(src, dst)
        if link is None:
            return []
        return [m[0] for m in (link.to_learner if src == link.leader else link.to_leader)]

    def complete(self, sid: int, *, crash_at: str | None = None) -> str:
        """The oldest durable write of `sid` finishes; its core is told. With `crash_at` (a
        store point such as "store snapshot written"), the server crashes there instead, with
        what reached the disk so far. Returns the write's kind."""
        node = self.nodes[sid]
        assert node.writes, f"{sid} has no write in flight"
        kind, value = node.writes.popleft()
        store = node.peer.store
        assert isinstance(store, MemoryStore)
        if crash_at is not None:

            def at(point: str) -> None:
                if point == crash_at:
                    raise Crashed(point)

            store.on_point = at
        try:
            if kind == "leader log":
                trio.run(store.persist, value)
            elif kind == "log":
                trio.run(log_batch, node.peer, value)
            else:
                trio.run(take_sync, node.peer, *value)
        except Crashed:
            self.log(f"{sid} crashes at {crash_at} while writing {kind}")
            self.crash(sid)
            return kind
        finally:
            store.on_point = None
        self.log(f"{sid} wrote {kind}")
        if kind == "leader log":
            assert node.leader is not None
            self._leader_effects(sid, node.leader.logged(value[-1].zxid))
        elif kind == "log":
            assert node.link is not None
            self._learner_effects(sid, node.link.core.logged(value))
        else:
            assert node.link is not None
            node.recovered = False
            peer = node.peer
            pending = [Txn.unpack(p) for p in peer.history.after(peer.tree.last_zxid)]
            self._learner_effects(sid, node.link.core.sync_taken(peer.tree.last_zxid, pending, peer.history.last))
        return kind

    def settle(self, limit: int = 10_000) -> None:
        """Deliver every message and complete every write until nothing moves."""
        for _ in range(limit):
            moved = False
            for link in list(self.links.values()):
                moved |= self.deliver(link.leader, link.learner) > 0
                if link.conn in self.links:
                    moved |= self.deliver(link.learner, link.leader) > 0
            for node in self.nodes.values():
                while node.writes:
                    self.complete(node.sid)
                    moved = True
            if not moved:
                return
        raise AssertionError("the interaction did not settle")

    def propose(self, sid: int, *names: str) -> list[int]:
        """The leader's pipeline proposes one batch: a create of /name for each name."""
        node = self.nodes[sid]
        assert node.leader is not None and node.leader.phase == lc.BROADCAST, f"{sid} is not an established leader"
        zxid = max(node.leader.last_logged, node.leader.epoch << 32)  # a new epoch counts from 1
        txns = []
        for name in names:
            zxid += 1
            body = encode(CreateRequest(f"/{name}", name.encode(), OPEN_ACL_UNSAFE, 0))
            txns.append(Txn(zxid, 1_000, 0, 0, OpCode.CREATE, body))
        self.log(f"{sid} proposes {', '.join(names)} ({txns[0].zxid:#x}..{zxid:#x})")
        self._leader_effects(sid, node.leader.propose(txns))
        return [t.zxid for t in txns]

    def tick(self, sid: int, seconds: float) -> None:
        """Time passes by `seconds` for everyone; `sid`'s role hears its tick (RoleEnded ends
        the role, as in the glue)."""
        self.now += seconds
        node = self.nodes[sid]
        try:
            if node.leader is not None:
                self._leader_effects(sid, node.leader.tick(self.now))
            elif node.link is not None:
                self._learner_effects(sid, node.link.core.tick(self.now))
        except RoleEnded as e:
            self.log(f"{sid}: role ended: {e}")
            self._end_roles(sid)

    def crash(self, sid: int) -> None:
        """`sid` loses its process: roles, links, writes in flight and the in-memory tree."""
        node = self.nodes[sid]
        self._end_roles(sid)
        node.writes.clear()
        node.receiving = None
        node.peer.store.close_log()
        node.peer = None  # type: ignore[assignment]  # until restart
        self.log(f"{sid} crashed")

    def restart(self, sid: int) -> None:
        node = self.nodes[sid]
        node.peer = self._peer(sid, node.disk)
        node.recovered = True
        self.log(f"{sid} restarted at {node.peer.tree.last_zxid:#x} (log to {node.peer.history.last:#x})")

    def snapshot(self, sid: int) -> int:
        """`sid` takes a snapshot of its tree now (as its store does every snapCount)."""
        peer = self.nodes[sid].peer
        zxid = peer.tree.last_zxid
        peer.store.disk.snapshots[zxid] = list(tree_items(peer.tree))  # type: ignore[attr-defined]
        peer.store.last_snapshot_zxid = zxid
        self.log(f"{sid} snapshot at {zxid:#x}")
        return zxid

    # -- what a script looks at -------------------------------------------------------------
    def tree(self, sid: int) -> set[str]:
        """The znodes (below /) that `sid`'s tree holds."""
        return {path[1:] for path in self.nodes[sid].peer.tree.nodes if path.count("/") == 1 and path != "/"} - {
            "zookeeper"
        }

    def committed_zxid(self, name: str) -> int:
        """The zxid at which the create of /name was committed."""
        for zxid, raw in self.committed.items():
            if Txn.unpack(raw).body == encode(CreateRequest(f"/{name}", name.encode(), OPEN_ACL_UNSAFE, 0)):
                return zxid
        raise KeyError(name)

    def leader_of(self, sid: int) -> lc.LeaderCore:
        core = self.nodes[sid].leader
        assert core is not None
        return core

    def check(self) -> None:
        """The oracles; AssertionError with the trace when one fails."""
        try:
            self._check()
        except AssertionError as e:
            raise AssertionError(f"{e}\n" + "\n".join(self.trace)) from None

    def _check(self) -> None:
        committed_top = max(self.committed, default=0)
        for node in self.nodes.values():
            if node.peer is None:
                continue
            tree = node.peer.tree
            if node.serving or (not node.recovered and self._synced_by_established_leader(node)):
                assert tree.last_zxid <= committed_top or not self.committed, (
                    f"server {node.sid} holds {tree.last_zxid:#x}, beyond anything committed ({committed_top:#x})"
                )
            if node.serving:
                expected = self.replay(tree.last_zxid)
                assert _state(tree) == _state(expected), f"server {node.sid} serves a tree that is not the committed one"
        # What was committed survives on a quorum of disks (a crash of them all recovers it).
        for zxid in self.committed:
            holders = {sid for sid, node in self.nodes.items() if _durable_has(node, zxid, self.committed[zxid])}
            voters = {sid for sid in holders if sid <= self.voters}
            assert len(voters) * 2 > self.voters, f"committed {zxid:#x} is durable only on {sorted(holders)}"

    def _synced_by_established_leader(self, node: Node) -> bool:
        """Whether `node` follows a leader that has established its epoch: its sync then cut it
        to the commit point. Before that, its tree may hold the leader's history (a tail both
        logged in an earlier epoch, DIFFed as common ground), which the NEWLEADER quorum commits;
        and a learner whose role ended keeps the tree it had, as a restarted server does, until
        its next sync. Neither serves anything meanwhile (checked above when it does)."""
        if node.link is None:
            return False
        leader = self.nodes[node.link.leader].leader
        return leader is not None and leader.phase == lc.BROADCAST

    def replay(self, upto: int) -> DataTree:
        tree = DataTree()
        applier = Applier(tree)
        for zxid in sorted(self.committed):
            if zxid > upto:
                break
            applier.apply(Txn.unpack(self.committed[zxid]))
        return tree

    # -- the glue ---------------------------------------------------------------------------
    def _commit(self, sid: int, zxid: int, packed: bytes) -> None:
        known = self.committed.get(zxid)
        assert known is None or known == packed, f"{sid} commits another transaction at {zxid:#x}"
        self.committed[zxid] = packed

    def _leader_effects(self, sid: int, effects: list[lc.Effect]) -> None:
        node = self.nodes[sid]
        peer = node.peer
        for effect in effects:
            if isinstance(effect, lc.SendTo):
                self._queue_to_learner(effect.conn, effect.message)
            elif isinstance(effect, lc.Broadcast):
                for conn in effect.conns:
                    self._queue_to_learner(conn, effect.message)
            elif isinstance(effect, lc.SyncLearner):
                self.log(f"{sid} syncs {effect.sid} by {effect.plan.mode.upper()} at {effect.plan.zxid:#x}")
                self.syncs.append((sid, effect.sid, effect.plan.mode, effect.plan.zxid))
                if effect.streamed:  # the image of the tree now, in pieces, before the rest
                    image = MemoryStore.snapshot_bytes(peer.tree)
                    for at in range(0, len(image), STREAM_PIECE):
                        self._queue_to_learner(effect.conn, SnapshotChunk(image[at : at + STREAM_PIECE]))
                for message in effect.messages():
                    self._queue_to_learner(effect.conn, message)
            elif isinstance(effect, lc.Close | lc.DropLearner):
                link = self.links.get(effect.conn)
                if link is not None:
                    self._drop(link)
            elif isinstance(effect, lc.AcceptEpoch):
                peer.epochs.accept(effect.epoch)
            elif isinstance(effect, lc.WriteLog):
                node.writes.append(("leader log", effect.txns))
            elif isinstance(effect, lc.Establish):
                peer.epochs.make_current(effect.epoch)
                for zxid, raw in peer.store.logged_before(peer.history.base, 1 << 62):
                    self._commit(sid, zxid, raw)
                for zxid, raw in zip(peer.history.zxids, peer.history.packed, strict=True):
                    self._commit(sid, zxid, raw)
                applier = Applier(peer.tree)
                for raw in peer.history.after(peer.tree.last_zxid):
                    applier.apply(Txn.unpack(raw))
                node.serving = True
                node.recovered = False
                self.log(f"{sid} established epoch {effect.epoch} at {effect.committed:#x}")
            elif isinstance(effect, lc.Committed):
                applier = Applier(peer.tree)
                for zxid, raw in zip(peer.history.zxids, peer.history.packed, strict=True):
                    if zxid <= effect.zxid:
                        self._commit(sid, zxid, raw)
                    if peer.tree.last_zxid < zxid <= effect.zxid:
                        applier.apply(Txn.unpack(raw))
            # ForwardRequest, Revalidate, TouchSessions: client traffic, not scripted here

    def _learner_effects(self, sid: int, effects: list[rc.Effect]) -> None:
        node = self.nodes[sid]
        peer = node.peer
        for effect in effects:
            link = node.link
            if isinstance(effect, rc.Send):
                assert link is not None
                link.to_leader.append(_over_the_wire(effect.message))
            elif isinstance(effect, rc.AcceptEpoch):
                peer.epochs.accept(effect.epoch)
            elif isinstance(effect, rc.MakeCurrent):
                peer.epochs.make_current(effect.epoch)
                peer.resynced()
            elif isinstance(effect, rc.SnapshotPiece):
                if node.receiving is None:
                    node.receiving = peer.store.snapshot_receiver()
                node.receiving.write(effect.data)
            elif isinstance(effect, rc.TakeSync):
                node.writes.append(("sync", (effect, node.receiving)))
                node.receiving = None
            elif isinstance(effect, rc.Log):
                node.writes.append(("log", effect.txns))
            elif isinstance(effect, rc.Apply):
                applier = Applier(peer.tree)
                for txn in effect.txns:
                    applier.apply(txn)
            elif isinstance(effect, rc.Serve):
                node.serving = True
                self.log(f"{sid} serves at {peer.tree.last_zxid:#x}")

    def _queue_to_learner(self, conn: int, message: Message) -> None:
        link = self.links.get(conn)
        if link is not None:
            link.to_learner.append(_over_the_wire(message))

    def _to_learner(self, link: Link, message: list[Any]) -> None:
        try:
            effects = link.core.receive_wire(message, self.now)
        except (RoleEnded, ValueError) as e:
            self.log(f"{link.learner}: role ended: {e}")
            self._drop(link)
            return
        self._learner_effects(link.learner, effects)

    def _link_between(self, a: int, b: int) -> Link | None:
        for link in self.links.values():
            if {link.leader, link.learner} == {a, b}:
                return link
        return None


def _over_the_wire(message: Message) -> list[Any]:
    """The array the other side decodes: framed and unframed as the links do (msgpack turns
    tuples into lists, for one)."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(message.to_wire()))
    array = decoder.next_message()
    assert array is not None
    return array


def _durable_has(node: Node, zxid: int, packed: bytes) -> bool:
    """Whether `node`'s disk recovers `zxid` as this transaction (in its log or below a snapshot)."""
    disk = node.disk
    if any(z == zxid and raw == packed for z, raw in disk.log):
        return True
    return any(snap >= zxid for snap in disk.snapshots)


def _state(tree: DataTree) -> Any:
    return sorted((path, node.data) for path, node in tree.nodes.items())


def _brief(message: list[Any]) -> str:
    tag = message[0]
    if tag in ("proposal",):
        return f"proposal x{len(message[1])}"
    if tag == "syncdata":
        return f"syncdata {message[1]} {message[2]:#x} +{len(message[4])}"
    rest = " ".join(f"{v:#x}" if isinstance(v, int) and v > 0xFFFF else str(v) for v in message[1:])
    return f"{tag} {rest}".strip()


__all__ = ["Crashed", "Interaction"]
