"""The leader's side of ZAB for one epoch as a pure state machine: learner messages, local log
completions and clock ticks in; effects out. The glue in leader.py owns the sockets, the disk,
the tree and the client-facing server, and carries the effects out in order.

    connected(conn)                  a learner's link arrived (its server id comes with Info)
    receive(conn, message, now)      -> effects   (a typed record of messages.py)
    receive_wire(conn, array, now)   -> effects   (an array off the wire: decoded, or the link closed)
    disconnected(conn)               the link is gone
    propose(txns)                    -> effects   (the pipeline's next batch: into the history,
                                                   to the learners, and WriteLog to the local log)
    logged(zxid)                     -> effects   (WriteLog done: durable here up to zxid)
    sync_sent(conn, now)                          (a streamed sync is out: initLimit from now)
    tick(now)                        -> effects   (pings, silent learners dropped, deadlines)

The leader's own log write is an effect like a learner's: the core counts the leader's ack only
when logged() reports it, so a commit always includes the leader's fsync (one batch may be
written while learners already acknowledge it, as Apache's leader logs and proposes at once).

RoleEnded is raised when leadership ends: no quorum within initLimit, a learner ahead of the
leader (in its log, or in an accepted epoch it can never follow this leader from), a quorum no longer heard within syncLimit, or a zxid counter about to overflow.

Phases: DISCOVERY (collect acceptedEpochs until a quorum, then the new epoch is max + 1)
-> EPOCH (wait for a quorum of ACKEPOCH; one ahead of the leader ends the leadership)
-> SYNC (each learner gets DIFF/TRUNC/SNAP and NEWLEADER; a quorum of NEWLEADER acks commits
the whole history) -> BROADCAST (proposals, cumulative acks, commits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zkpy.replication import messages as m
from zkpy.replication.history import SNAP, History, SyncPlan
from zkpy.replication.learner_core import NOT_COUNTED
from zkpy.replication.quorum import Quorum
from zkpy.replication.roles import AboveEpoch, RoleEnded
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn

DISCOVERY, EPOCH, SYNC, BROADCAST = "discovery", "epoch", "sync", "broadcast"
COUNTER_MASK = 0xFFFFFFFF

# A learner link's stages, in order.
WAIT_INFO, WAIT_EPOCH, WAIT_ACKEPOCH, WAIT_SYNC_TURN, WAIT_ACKNL, WAIT_ESTABLISHED, SYNCED = range(7)


@dataclass
class LearnerState:
    conn: int
    since: float
    stage: int = WAIT_INFO
    sid: int = -1
    voter: bool = False
    last_zxid: int = -1
    snap_zxid: int = -1
    last_heard: float = 0.0
    in_broadcast: bool = False  # proposals and commits reach it (from its sync on)
    sync_mode: str | None = None  # while its sync is on its way (until its NEWLEADER ack)
    questions: int = 0  # revalidations asked on this link (each is numbered by its place)


@dataclass(frozen=True)
class SendTo:
    conn: int
    message: m.LeaderMessage


@dataclass(frozen=True)
class Broadcast:
    """One message to these links (proposals, commits, pings): encoded once by the glue."""

    conns: tuple[int, ...]
    message: m.LeaderMessage


@dataclass(frozen=True)
class Close:
    conn: int
    reason: str


@dataclass(frozen=True)
class AcceptEpoch:
    epoch: int


@dataclass(frozen=True)
class SyncLearner:
    """Send this learner messages(): `plan` (a SNAP with the tree as it stands, at plan.zxid)
    and NEWLEADER, and from now on every proposal: all in one step, so nothing falls between."""

    conn: int
    sid: int
    last_zxid: int  # where the learner's log ended (for the log line)
    plan: SyncPlan
    epoch: int
    items: list[Any] | None = field(default=None, compare=False, repr=False)  # a SNAP's tree in the frame

    @property
    def streamed(self) -> bool:
        """A SNAP whose tree the glue streams before messages() (SnapshotChunks)."""
        return self.plan.mode == SNAP and self.items is None

    def messages(self) -> list[m.LeaderMessage]:
        return [m.SyncData(self.plan.mode, self.plan.zxid, self.items, self.plan.txns), m.NewLeader(self.epoch)]


@dataclass(frozen=True)
class WriteLog:
    """Append these proposals to the local log and fsync; report back with logged(last zxid).
    Batches are handed out in zxid order and must be written in that order."""

    txns: list[Txn]


@dataclass(frozen=True)
class Establish:
    """A quorum synced: persist currentEpoch, apply the whole history, serve clients."""

    epoch: int
    committed: int


@dataclass(frozen=True)
class Committed:
    """Everything up to zxid is committed (the pipeline's waiting batch may go on)."""

    zxid: int


@dataclass(frozen=True)
class ForwardRequest:
    conn: int
    owner: int  # the learner's server id: the session's owner must be it (SessionMoved otherwise)
    session_id: int
    cxid: int
    op: int
    body: bytes
    auth: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Revalidate:
    """A client moved its session to learner `sid`: answer whether it lives (and make `sid` its
    owner if so, by the claim (conn, question): the question's number on this link)."""

    conn: int
    sid: int
    session_id: int
    timeout: int
    question: int


@dataclass(frozen=True)
class Relinquish:
    """Learner `sid` withdraws the claim its question (conn, question) made: the connection it
    asked for closed without forwarding anything (owners.py)."""

    conn: int
    sid: int
    session_id: int
    question: int


@dataclass(frozen=True)
class TouchSessions:
    session_ids: list[int]


@dataclass(frozen=True)
class DropLearner:
    """The learner left the broadcast (gone or silent): forget its link."""

    conn: int
    sid: int


Effect = (
    SendTo | Broadcast | Close | AcceptEpoch | SyncLearner | Establish | Committed | ForwardRequest | TouchSessions
    | DropLearner | Revalidate | Relinquish | WriteLog
)


@dataclass
class LeaderCore:
    my_id: int
    quorum: Quorum
    accepted_epoch: int
    current_epoch: int
    last_logged: int
    servers: frozenset[int]  # every configured server id
    init_limit: float
    sync_limit: float
    now: float
    counter_limit: int = COUNTER_MASK - 0x10000  # room for the pipeline's largest batch
    # Observers synced at once, by kind (Apache's LearnerSyncThrottler: followers are exempt, as
    # the quorum needs them; an observer over the bound is closed and tries again).
    max_snap_syncs: int = 10
    max_diff_syncs: int = 100
    # A SNAP's tree is streamed by the glue from a point-in-time image taken when it carries out
    # the SyncLearner (items None here); False: the core puts the items in the sync message.
    stream_snapshots: bool = False
    # What a sync is planned from: the leader's history window (shared with the server, which
    # rebuilds it at recovery) and the tree as it stands now, which a SNAP sends.
    history: History = field(default_factory=History)
    tree: Callable[[], DataTree] | None = None  # None: no SNAP can be sent (tests of the rest)
    phase: str = DISCOVERY
    epoch: int = -1
    committed: int = -1
    learners: dict[int, LearnerState] = field(default_factory=dict)  # by conn
    acks: dict[int, int] = field(default_factory=dict)  # voter sid -> cumulative ack
    _accepted: dict[int, int] = field(default_factory=dict)
    _observers_accepted: int = -1  # the highest acceptedEpoch an observer told in DISCOVERY
    _epoch_acks: set[int] = field(default_factory=set)
    _newleader_acks: set[int] = field(default_factory=set)
    _phase_since: float = 0.0
    _last_tick: float | None = None

    def __post_init__(self) -> None:
        self._accepted[self.my_id] = self.accepted_epoch
        self._epoch_acks.add(self.my_id)
        self._newleader_acks.add(self.my_id)
        self._phase_since = self.now

    # -- inputs -------------------------------------------------------------------------
    def start(self) -> list[Effect]:
        return self._check_discovery()

    def connected(self, conn: int, now: float) -> None:
        self.now = now
        self.learners[conn] = LearnerState(conn, now, last_heard=now)

    def sync_sent(self, conn: int, now: float) -> None:
        """A streamed sync's last piece went out: the learner's initLimit counts from here (as
        Apache's socket timeout does from the last write), so a SNAP that takes long to send is
        not held against the learner's time to install it."""
        learner = self.learners.get(conn)
        if learner is not None and learner.stage < SYNCED:
            learner.since = max(learner.since, now)

    def disconnected(self, conn: int) -> list[Effect]:
        learner = self.learners.pop(conn, None)
        if learner is None or learner.sid < 0:
            return []
        if self.acks.get(learner.sid) is not None and not self._has_link(learner.sid):
            del self.acks[learner.sid]
        return [DropLearner(conn, learner.sid)]

    def receive_wire(self, conn: int, message: Any, now: float) -> list[Effect]:
        """An array as it came off the link: a malformed one costs the link, never the leader
        (an ill-typed zxid kept in `acks` would fail every later commit)."""
        try:
            record = m.from_learner(message)
        except ValueError as e:
            if conn not in self.learners:
                return []
            return [*self.disconnected(conn), Close(conn, f"protocol error: {e}")]
        return self.receive(conn, record, now)

    def receive(self, conn: int, message: m.LearnerMessage, now: float) -> list[Effect]:
        self.now = now
        learner = self.learners.get(conn)
        if learner is None:
            return []
        learner.last_heard = now
        try:
            return self._dispatch(learner, message)
        except ValueError as e:
            return [*self.disconnected(conn), Close(conn, f"protocol error: {e}")]

    def propose(self, txns: list[Txn]) -> list[Effect]:
        """The pipeline's next batch, numbered: into the history (learners that sync from now on
        get it), to every learner in the broadcast, and to the local log."""
        last = txns[-1].zxid
        if self.phase != BROADCAST:
            raise ValueError(f"a proposal while {self.phase}")
        if last >> 32 != self.epoch or last & COUNTER_MASK > self.counter_limit:
            raise RoleEnded(f"zxid counter of epoch {self.epoch} nearly exhausted: forcing a new election")
        packed = [txn.pack() for txn in txns]
        for txn, raw in zip(txns, packed, strict=True):
            self.history.append(txn.zxid, raw)
        self.last_logged = last
        return [Broadcast(self._broadcast_conns(), m.Proposal(packed)), WriteLog(txns)]

    def logged(self, zxid: int) -> list[Effect]:
        """A WriteLog is durable: the leader's own ack."""
        if zxid > self.last_logged or zxid <= self.acks.get(self.my_id, -1):
            raise AssertionError(f"logged {zxid:#x}: not a batch in flight (last proposed {self.last_logged:#x})")
        self.acks[self.my_id] = zxid
        return self._advance_commit()

    def tick(self, now: float) -> list[Effect]:
        self.now = now
        effects: list[Effect] = []
        for learner in list(self.learners.values()):
            if learner.stage < SYNCED and now - learner.since > self.init_limit:
                effects += [*self.disconnected(learner.conn), Close(learner.conn, "no sync within initLimit")]
        if self.phase != BROADCAST:
            if now - self._phase_since > self.init_limit:
                what = {DISCOVERY: "connected", EPOCH: "acknowledged the epoch", SYNC: "synced"}[self.phase]
                raise RoleEnded(f"no quorum {what} within initLimit ({self.init_limit:.1f}s)")
            return effects
        previous, self._last_tick = self._last_tick, now
        if previous is not None and now - previous > self.sync_limit:
            # Ticks come every tickTime: a gap this long means this process did not run, and what
            # the learners sent meanwhile is still queued behind this tick. Their silence is ours:
            # judge them from now on, not from before the stall.
            for learner in self.learners.values():
                learner.last_heard = max(learner.last_heard, now)
        heard = {self.my_id}
        for learner in list(self.learners.values()):
            if learner.stage != SYNCED:
                continue
            if now - learner.last_heard > self.sync_limit:
                effects += [*self.disconnected(learner.conn), Close(learner.conn, "silent for syncLimit")]
                continue
            if learner.voter:
                heard.add(learner.sid)
        if not self.quorum.contains_quorum(heard):
            raise RoleEnded(f"lost the quorum: only {sorted(heard)} heard within syncLimit")
        effects.append(Broadcast(self._broadcast_conns(), m.LeaderPing()))
        return effects

    # -- a learner's messages -----------------------------------------------------------
    def _dispatch(self, learner: LearnerState, message: m.LearnerMessage) -> list[Effect]:
        if learner.stage == WAIT_INFO:
            if not isinstance(message, m.Info):
                raise ValueError(f"{message.TAG} before info")
            return self._on_info(learner, message)
        if learner.stage == WAIT_ACKEPOCH and isinstance(message, m.AckEpoch):
            return self._on_ackepoch(learner, message)
        if learner.stage == WAIT_ACKNL and isinstance(message, m.AckNewLeader):
            return self._on_acknl(learner, message)
        if learner.stage >= WAIT_ESTABLISHED:
            if isinstance(message, m.Ack):
                return self._on_ack(learner, message.zxid)
            if isinstance(message, m.LearnerPing):
                return [TouchSessions(list(message.sessions))]
        if learner.stage == SYNCED:
            if isinstance(message, m.ForwardedRequest):
                auth_ids = tuple((s, i) for s, i in message.auth)
                return [
                    ForwardRequest(
                        learner.conn, learner.sid, message.session_id, message.cxid, message.op, message.body, auth_ids
                    )
                ]
            if isinstance(message, m.RevalidateSession):
                learner.questions += 1
                return [Revalidate(learner.conn, learner.sid, message.session_id, message.timeout, learner.questions)]
            if isinstance(message, m.Relinquish):
                if message.question > learner.questions:
                    raise ValueError(f"relinquish of question {message.question}, of {learner.questions} asked")
                return [Relinquish(learner.conn, learner.sid, message.session_id, message.question)]
            if isinstance(message, m.ForwardedSync):
                # Everything acknowledged to any client before this sync is committed by now;
                # the learner answers once it has applied up to here (the commits go first).
                reply = m.SyncReply(message.session_id, message.cxid, self.committed)
                return [SendTo(learner.conn, reply)]
        raise ValueError(f"unexpected {message.TAG} from learner {learner.sid} at stage {learner.stage}")

    def _on_info(self, learner: LearnerState, message: m.Info) -> list[Effect]:
        sid, accepted = message.sid, message.accepted_epoch
        if sid not in self.servers or sid == self.my_id:
            raise ValueError(f"not a learner of this ensemble: {sid}")
        effects: list[Effect] = []
        for other in list(self.learners.values()):
            if other.sid != sid or other is learner:
                continue
            if other.stage == SYNCED and self.now - other.last_heard <= self.sync_limit:
                # A synced learner we hear from keeps its link: a second one claiming its sid is
                # a stranger (or a stale connection), and letting it in would cut the real one off.
                # A learner that really reconnected is let in once its old link is dropped.
                raise ValueError(f"server {sid} is already synced on link {other.conn}")
            # A reconnecting learner replaces its old link (one still syncing, or gone silent).
            effects += [*self.disconnected(other.conn), Close(other.conn, "replaced by a new link")]
        learner.sid = sid
        learner.voter = sid in self.quorum.voters
        learner.stage = WAIT_EPOCH
        if self.phase != DISCOVERY and accepted > self.epoch:
            # It promised a later epoch (as a would-be leader whose offers never went out, say)
            # and can never follow this one; the ensemble's next election picks an epoch above
            # ours (this server takes `accepted` as its own: roles.AboveEpoch), and the loop
            # ends. Apache keeps leading and leaves that learner re-electing this leader until
            # the next leader change. An observer too: a would-be leader's offer may have
            # reached it and no voter.
            kind = "voter" if learner.voter else "observer"
            raise AboveEpoch(
                f"{kind} {sid} has accepted epoch {accepted}, above this leader's {self.epoch}: "
                "stepping down so that the next epoch can include it",
                accepted,
            )
        if learner.voter and self.phase == DISCOVERY:
            self._accepted[sid] = accepted
            effects += self._check_discovery()
        else:
            if self.phase == DISCOVERY:  # an observer: not in the quorum, but the epoch goes above it
                self._observers_accepted = max(self._observers_accepted, accepted)
            effects += self._offer_epoch(learner)
        return effects

    def _check_discovery(self) -> list[Effect]:
        if self.phase != DISCOVERY or not self.quorum.contains_quorum(self._accepted):
            return []
        self.epoch = max(*self._accepted.values(), self._observers_accepted) + 1
        self._enter(EPOCH)
        effects: list[Effect] = [AcceptEpoch(self.epoch)]
        for learner in self.learners.values():
            if learner.stage == WAIT_EPOCH:
                effects += self._offer_epoch(learner)
        return effects + self._check_epoch_acks()

    def _offer_epoch(self, learner: LearnerState) -> list[Effect]:
        if self.phase == DISCOVERY:
            return []  # offered once a quorum has told its acceptedEpoch
        learner.stage = WAIT_ACKEPOCH
        return [SendTo(learner.conn, m.LeaderInfo(self.epoch))]

    def _on_ackepoch(self, learner: LearnerState, message: m.AckEpoch) -> list[Effect]:
        current, last_zxid, snap_zxid = message.current_epoch, message.last_zxid, message.snapshot_zxid
        learner.last_zxid, learner.snap_zxid = last_zxid, snap_zxid
        learner.stage = WAIT_SYNC_TURN
        if learner.voter and self.phase == EPOCH and current != NOT_COUNTED:
            if (current, last_zxid) > (self.current_epoch, self.last_logged):
                raise RoleEnded(
                    f"learner {learner.sid} is ahead (epoch {current}, zxid {last_zxid:#x}) of this leader "
                    f"(epoch {self.current_epoch}, zxid {self.last_logged:#x})"
                )
            self._epoch_acks.add(learner.sid)
            return self._check_epoch_acks()
        return self._sync(learner) if self.phase != EPOCH else []

    def _check_epoch_acks(self) -> list[Effect]:
        if self.phase != EPOCH or not self.quorum.contains_quorum(self._epoch_acks):
            return []
        self._enter(SYNC)
        effects: list[Effect] = []
        for learner in list(self.learners.values()):  # a throttled observer leaves the dict
            if learner.stage == WAIT_SYNC_TURN:
                effects += self._sync(learner)
        return effects + self._check_newleader_acks()

    def _sync(self, learner: LearnerState) -> list[Effect]:
        # Before the history is established the whole of it is what a NEWLEADER quorum commits;
        # in broadcast, proposals past the commit point may still be lost: a learner whose log
        # goes past it is cut back to it (history.plan_sync).
        committed = self.committed if self.phase == BROADCAST else None
        tree = self.tree() if self.tree is not None else None
        tree_zxid = tree.last_zxid if tree is not None else self.history.last
        plan = self.history.plan_sync(learner.last_zxid, learner.snap_zxid, tree_zxid, committed)
        if not learner.voter:
            kind = {SNAP} if plan.mode == SNAP else {"diff", "trunc"}
            bound = self.max_snap_syncs if plan.mode == SNAP else self.max_diff_syncs
            if sum(1 for x in self.learners.values() if x.sync_mode in kind and not x.voter) >= bound:
                reason = f"{bound} {plan.mode.upper()} syncs of observers already running: try again later"
                return [*self.disconnected(learner.conn), Close(learner.conn, reason)]
        learner.stage = WAIT_ACKNL
        learner.in_broadcast = True
        learner.sync_mode = plan.mode
        items = None
        if plan.mode == SNAP and tree is not None and not self.stream_snapshots:
            items = list(tree_items(tree))
        return [SyncLearner(learner.conn, learner.sid, learner.last_zxid, plan, self.epoch, items)]

    def _on_acknl(self, learner: LearnerState, message: m.AckNewLeader) -> list[Effect]:
        zxid = message.zxid
        learner.sync_mode = None
        if learner.voter:
            self.acks[learner.sid] = zxid
            self._newleader_acks.add(learner.sid)
        learner.stage = WAIT_ESTABLISHED
        if self.phase == BROADCAST:
            return self._uptodate(learner)
        return self._check_newleader_acks()

    def _check_newleader_acks(self) -> list[Effect]:
        if self.phase != SYNC or not self.quorum.contains_quorum(self._newleader_acks):
            return []
        self._enter(BROADCAST)
        self.current_epoch = self.epoch
        self.committed = self.last_logged
        self.acks[self.my_id] = self.last_logged
        effects: list[Effect] = [Establish(self.epoch, self.committed)]
        for learner in self.learners.values():
            if learner.stage == WAIT_ESTABLISHED:
                effects += self._uptodate(learner)
        return effects

    def _uptodate(self, learner: LearnerState) -> list[Effect]:
        learner.stage = SYNCED
        return [SendTo(learner.conn, m.UpToDate(self.committed)), *self._advance_commit()]

    def _on_ack(self, learner: LearnerState, zxid: int) -> list[Effect]:
        if learner.voter and zxid > self.acks.get(learner.sid, -1):
            self.acks[learner.sid] = zxid
            return self._advance_commit()
        return []

    # -- rules ----------------------------------------------------------------------------
    def _advance_commit(self) -> list[Effect]:
        """Committed: what a quorum of voters, the leader included, has durable."""
        if self.phase != BROADCAST:
            return []
        point = min(self.quorum.commit_point(self.acks), self.acks.get(self.my_id, -1))
        if point <= self.committed:
            return []
        self.committed = point
        return [Committed(point), Broadcast(self._broadcast_conns(), m.Commit(point))]

    def _broadcast_conns(self) -> tuple[int, ...]:
        return tuple(conn for conn, learner in self.learners.items() if learner.in_broadcast)

    def _has_link(self, sid: int) -> bool:
        return any(learner.sid == sid for learner in self.learners.values())

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._phase_since = self.now  # each phase gets initLimit of its own
