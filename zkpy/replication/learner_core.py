"""A learner's side of ZAB as a pure state machine (the h11 style): messages from the leader,
disk completions and clock ticks in; effects out. No sockets, no disk, no trio: the glue in
learner.py carries out each effect, in order, and reports completions back.

    start()                      -> [Send(info)]
    receive(message)             -> effects
    sync_taken(applied, pending) -> effects   (TakeSync done: the sync is durable)
    logged(batch)                -> effects   (a Log batch is durable)
    tick(now)                    -> effects   (raises RoleEnded when the leader went silent)

The order of the protocol is the state table below; anything else from the leader is a protocol
error (ValueError) that ends the role. The rules that keep data safe are here and tested
exchange by exchange (tests/replication/test_learner_core.py):
- NEWLEADER is acknowledged only after the whole sync (SNAP/TRUNC/DIFF) is durable;
- a transaction is applied only once it is both committed and durable here, in zxid order;
- proposals are logged in batches, one in flight at a time (group commit), acked cumulatively;
- a forwarded sync is answered only after everything the leader had committed is applied.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from zkpy.replication import messages as m
from zkpy.replication.roles import RoleEnded
from zkpy.tree.txn import Txn

__all__ = ["NOT_COUNTED", "LearnerCore", "RoleEnded"]

WAIT_LEADERINFO, WAIT_SYNC, SYNCING, WAIT_NEWLEADER, WAIT_UPTODATE, BROADCAST = (
    "wait-leaderinfo", "wait-sync", "syncing", "wait-newleader", "wait-uptodate", "broadcast",
)  # fmt: skip

_BROADCAST = frozenset({m.Proposal, m.Commit, m.LeaderPing, m.Refused, m.SyncReply, m.Revalidated})
# What the leader may send in each state (anything else ends the role).
EXPECTED: dict[str, frozenset[type[m.Message]]] = {
    WAIT_LEADERINFO: frozenset({m.LeaderInfo}),
    WAIT_SYNC: frozenset({m.SnapshotChunk, m.SyncTxns, m.SyncData}),
    WAIT_NEWLEADER: frozenset({m.NewLeader}),
    WAIT_UPTODATE: _BROADCAST | {m.UpToDate},
    BROADCAST: _BROADCAST,
}


# What a transaction costs beside its body, for the backlog bound (an estimate: zxid, time,
# session, cxid, op and the framing around them).
TXN_OVERHEAD = 48

# An ackepoch's currentEpoch when the learner had already accepted the offered epoch.
NOT_COUNTED = -1
# A Log batch's bytes: what arrives during one fsync is the next batch, up to this much, so that
# one write of a slow disk stays short (a role that ends waits for one such write at most, and
# the behind rule of tick() allows two writes' time beyond syncLimit).
MAX_LOG_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Send:
    message: m.LearnerMessage


@dataclass(frozen=True)
class AcceptEpoch:
    """Persist acceptedEpoch (durable before anything is sent after it)."""

    epoch: int


@dataclass(frozen=True)
class MakeCurrent:
    """Persist currentEpoch: this server's history is now the new leader's."""

    epoch: int


@dataclass(frozen=True)
class SnapshotPiece:
    """Append this piece of a streamed SNAP to the snapshot being received (in order); the
    SyncData that follows the pieces completes it (TakeSync with items None)."""

    data: bytes


@dataclass(frozen=True)
class TakeSync:
    """Make the leader's sync durable: SNAP (install the snapshot) or TRUNC (cut the log), then
    log `txns`. Report back with sync_taken()."""

    mode: str
    zxid: int
    items: list[Any] | None
    txns: list[Txn]


@dataclass(frozen=True)
class Log:
    """Append these proposals to the log and fsync; report back with logged()."""

    txns: list[Txn]


@dataclass(frozen=True)
class Apply:
    """Committed and durable: apply to the tree, in this order."""

    txns: list[Txn]


@dataclass(frozen=True)
class Serve:
    """Up to date: serve clients."""


@dataclass(frozen=True)
class Pong:
    """Answer the leader's ping with the sessions heard from since the last one."""


@dataclass(frozen=True)
class AnswerSync:
    session_id: int
    cxid: int


@dataclass(frozen=True)
class Refuse:
    session_id: int
    cxid: int
    code: int
    zxid: int


@dataclass(frozen=True)
class Revalidated:
    """The leader's answer to question `question` about a session a client moved here."""

    session_id: int
    valid: bool
    question: int


Effect = (
    Send | AcceptEpoch | MakeCurrent | SnapshotPiece | TakeSync | Log | Apply | Serve | Pong | AnswerSync | Refuse
    | Revalidated
)


class LearnerCore:
    def __init__(
        self,
        my_id: int,
        role: str,
        accepted_epoch: int,
        current_epoch: int,
        last_logged: int,
        snapshot_zxid: int,
        init_limit: float,
        sync_limit: float,
        now: float,
    ) -> None:
        self.my_id = my_id
        self.role = role
        self.accepted_epoch = accepted_epoch
        self.current_epoch = current_epoch
        self.last_logged = last_logged
        self.snapshot_zxid = snapshot_zxid
        self.init_limit = init_limit
        self.sync_limit = sync_limit
        self.last_heard = now
        self.state = WAIT_LEADERINFO
        self.epoch = -1
        self.commit_zxid = -1
        self.applied_zxid = -1
        self.unapplied: deque[Txn] = deque()  # durable here, not yet known committed
        self._to_log: list[Txn] = []
        # (last zxid, when it arrived) of each proposal not yet durable here, oldest first: one
        # older than syncLimit means this server's disk cannot follow, and it stops serving.
        self._arrived: deque[tuple[int, float]] = deque()
        # How long this disk's log writes take lately (a decaying maximum): a proposal may wait
        # for the write in flight and its own before it is durable, so the rule above allows two
        # of them beyond syncLimit (a disk whose fsync is longer than syncLimit but keeps up
        # with the writes is slow, not behind).
        self._clock = now
        self._log_started = now
        self.log_seconds = 0.0
        self._logging = False  # a Log batch is in flight
        # Bytes of proposals received and not yet durable here (queued, being logged, or held
        # while the sync is written): the glue stops reading the link above a bound.
        self.unlogged_bytes = 0
        self._sync_waits: list[tuple[int, int, int]] = []  # (zxid, session, cxid)
        self._held: list[m.LeaderMessage] = []  # messages that arrived while the sync was being written
        self._streamed = False  # SnapshotChunks came: a SNAP's tree is on its way to disk
        self._sync_txns: list[bytes] = []  # a sync's transactions sent ahead in pieces (SyncTxns)
        self._last_tick: float | None = None
        # Session claims (owners.py). Questions are numbered in the order asked, as the leader
        # counts them; per session, those not answered yet, oldest first (the leader answers in
        # order); those withdrawn before their answer (it is dropped); and, per session, those
        # answered "valid" while nothing of the session has been forwarded since (withdrawable).
        self._questions = 0
        self._asked: dict[int, deque[int]] = {}
        self._withdrawn: set[int] = set()
        self._unused: dict[int, set[int]] = {}

    # -- inputs -------------------------------------------------------------------------
    def start(self) -> list[Effect]:
        return [Send(m.Info(self.my_id, self.accepted_epoch, self.role))]

    def receive_wire(self, message: Any, now: float) -> list[Effect]:
        """An array as it came off the link (ValueError when it is not a leader's message)."""
        return self.receive(m.from_leader(message), now)

    def receive(self, message: m.LeaderMessage, now: float) -> list[Effect]:
        self.last_heard = self._clock = now
        if self.state == SYNCING:
            self._held.append(message)  # in order, after the sync is durable
            if isinstance(message, m.Proposal):
                self.unlogged_bytes += sum(map(len, message.txns))
            return []
        if type(message) not in EXPECTED[self.state]:
            raise ValueError(f"unexpected {message.TAG!r} from the leader while {self.state}")
        return getattr(self, f"_on_{message.TAG}")(message)

    def sync_taken(self, applied_zxid: int, pending: list[Txn], last_logged: int) -> list[Effect]:
        """The sync is durable; the tree stands at `applied_zxid` and `pending` is everything
        logged here after it (the sync's transactions and any logged in an earlier role)."""
        assert self.state == SYNCING
        self.state = WAIT_NEWLEADER
        self.applied_zxid = applied_zxid
        self.last_logged = last_logged
        self.unapplied = deque(pending)
        effects: list[Effect] = []
        held, self._held = self._held, []
        self.unlogged_bytes -= sum(sum(map(len, x.txns)) for x in held if isinstance(x, m.Proposal))
        for message in held:
            effects += self.receive(message, self.last_heard)
        return effects

    def logged(self, batch: list[Txn], now: float | None = None) -> list[Effect]:
        """A Log batch is durable here (`now`: when, to learn how long this disk takes)."""
        if now is not None:
            self._clock = now
            self.log_seconds = max(now - self._log_started, self.log_seconds / 2)
        self._logging = False
        self.unlogged_bytes -= sum(len(t.body) + TXN_OVERHEAD for t in batch)
        self.unapplied.extend(batch)
        self.last_logged = batch[-1].zxid
        arrived = self._arrived
        while arrived and arrived[0][0] <= self.last_logged:
            arrived.popleft()
        effects: list[Effect] = [Send(m.Ack(batch[-1].zxid))]
        effects += self._apply()
        effects += self._next_log()
        return effects

    def tick(self, now: float) -> list[Effect]:
        limit = self.sync_limit if self.state == BROADCAST else self.init_limit
        previous, self._last_tick = self._last_tick, now
        silent = now - self.last_heard
        gap = now - previous if previous is not None else 0.0
        stalled = gap > limit
        if stalled and self._arrived:  # this process did not run: judge the backlog from now
            self._arrived = deque((zxid, now) for zxid, _ in self._arrived)
            self._log_started = max(self._log_started, now)
        self._clock = now
        writing = min(now - self._log_started, limit) if self._logging else 0.0  # a hung write: limit
        allowance = 2 * max(self.log_seconds, writing)
        if self._arrived and now - self._arrived[0][1] > limit + allowance and not stalled:
            # Served reads would be as old as the backlog (this server applies only what it has
            # logged), and the leader cannot count on its acks: out until it syncs again (Apache's
            # leader drops such a follower: "transaction timeout" in LearnerHandler.ping; it allows
            # syncLimit only, so a disk slower per fsync than syncLimit is dropped there too).
            raise RoleEnded(
                f"a proposal that arrived {now - self._arrived[0][1]:.1f}s ago is not yet logged here "
                f"({self.unlogged_bytes} bytes behind): this disk cannot follow the leader"
            )
        if silent <= limit:
            return []
        if stalled:
            # Ticks come every tickTime: a gap this long means this process did not run (SIGSTOP,
            # a swapped-out VM), so the silence is ours, not the leader's.
            raise RoleEnded(
                f"this server was stalled for {gap:.1f}s (paused?), {silent:.1f}s since it "
                f"last heard its leader, while {self.state}"
            )
        behind = f"; {self.unlogged_bytes} bytes of proposals not yet logged here" if self.unlogged_bytes else ""
        raise RoleEnded(f"leader silent for {silent:.1f}s while {self.state}{behind}")

    # -- session claims (owners.py) -------------------------------------------------------
    def revalidate(self, session_id: int, timeout: int) -> tuple[int, list[Effect]]:
        """A client resumes its session here: ask the leader, which makes this server the
        owner. The question's number, for its answer (Revalidated) and withdraw()."""
        self._questions += 1
        self._asked.setdefault(session_id, deque()).append(self._questions)
        return self._questions, [Send(m.RevalidateSession(session_id, timeout))]

    def forwarded(self, session_id: int) -> None:
        """A request of the session went to the leader: no claim of it made so far may be
        withdrawn (one is the claim the request was ordered under)."""
        if self._unused:
            self._unused.pop(session_id, None)

    def withdraw(self, session_id: int, question: int) -> list[Effect]:
        """The connection `question` was asked for closed. Its claim is given back if nothing of
        the session was forwarded under it: while the answer is still on its way (the client
        gave up on the handshake; the relinquish follows the question on the link, and the
        answer is dropped), or after a "valid" answer. Nothing to do otherwise."""
        asked = self._asked.get(session_id)
        if asked is not None and question in asked and question not in self._withdrawn:
            self._withdrawn.add(question)
            return [Send(m.Relinquish(session_id, question))]
        unused = self._unused.get(session_id)
        if unused is not None and question in unused:
            unused.discard(question)
            if not unused:
                del self._unused[session_id]
            return [Send(m.Relinquish(session_id, question))]
        return []

    # -- the leader's messages ------------------------------------------------------------
    def _on_leaderinfo(self, message: m.LeaderInfo) -> list[Effect]:
        epoch = message.epoch
        if epoch < self.accepted_epoch:
            raise RoleEnded(f"the leader offers epoch {epoch}, older than accepted {self.accepted_epoch}")
        self.epoch = epoch
        self.state = WAIT_SYNC
        if epoch == self.accepted_epoch:
            # Already promised to a leader of this epoch: ZAB lets a learner acknowledge an epoch
            # once. Apache's Learner answers -1 in place of currentEpoch, and its leader does not
            # count it (it still syncs the learner): two leaders establishing one epoch with a
            # learner in both quorums would commit different transactions at the same zxids.
            return [Send(m.AckEpoch(NOT_COUNTED, self.last_logged, self.snapshot_zxid))]
        self.accepted_epoch = epoch
        return [AcceptEpoch(epoch), Send(m.AckEpoch(self.current_epoch, self.last_logged, self.snapshot_zxid))]

    def _on_snapchunk(self, message: m.SnapshotChunk) -> list[Effect]:
        self._streamed = True
        return [SnapshotPiece(message.data)]

    def _on_synctxns(self, message: m.SyncTxns) -> list[Effect]:
        self._sync_txns.extend(message.txns)
        return []

    def _on_syncdata(self, message: m.SyncData) -> list[Effect]:
        streamed = message.mode == "snap" and message.items is None
        if streamed and not self._streamed:
            raise ValueError("a streamed SNAP without its snapshot")
        if self._streamed and not streamed:
            # Pieces and then a DIFF/TRUNC or an in-frame SNAP: the pieces' temp file would be left
            # open and unused (the glue aborts it when the role ends on this error).
            raise ValueError(f"snapshot pieces before a {message.mode} sync")
        self.state = SYNCING
        packed, self._sync_txns = self._sync_txns + message.txns, []
        return [TakeSync(message.mode, message.zxid, message.items, [Txn.unpack(p) for p in packed])]

    def _on_newleader(self, message: m.NewLeader) -> list[Effect]:
        if message.epoch != self.epoch:
            raise ValueError(f"newleader for epoch {message.epoch}, expected {self.epoch}")
        self.current_epoch = message.epoch
        self.state = WAIT_UPTODATE
        return [MakeCurrent(message.epoch), Send(m.AckNewLeader(self.last_logged))]

    def _on_uptodate(self, message: m.UpToDate) -> list[Effect]:
        self.commit_zxid = max(self.commit_zxid, message.committed)
        effects = self._apply()
        self.state = BROADCAST
        return [*effects, Serve()]

    def _on_proposal(self, message: m.Proposal) -> list[Effect]:
        txns = [Txn.unpack(p) for p in message.txns]
        if txns:
            self._arrived.append((txns[-1].zxid, self.last_heard))
        self._to_log.extend(txns)
        self.unlogged_bytes += sum(len(t.body) + TXN_OVERHEAD for t in txns)
        return self._next_log()

    def _on_commit(self, message: m.Commit) -> list[Effect]:
        self.commit_zxid = max(self.commit_zxid, message.zxid)
        return self._apply()

    def _on_ping(self, message: m.LeaderPing) -> list[Effect]:
        return [Pong()]

    def _on_refused(self, message: m.Refused) -> list[Effect]:
        return [Refuse(message.session_id, message.cxid, message.code, message.zxid)]

    def _on_revalidated(self, message: m.Revalidated) -> list[Effect]:
        session_id = message.session_id
        asked = self._asked.get(session_id)
        if not asked:
            raise ValueError(f"an answer about session 0x{session_id:x}, which this server did not ask about")
        question = asked.popleft()
        if not asked:
            del self._asked[session_id]
        if question in self._withdrawn:
            self._withdrawn.discard(question)
            return []  # its connection is gone, and the claim withdrawn
        if message.valid:
            self._unused.setdefault(session_id, set()).add(question)
        return [Revalidated(session_id, message.valid, question)]

    def _on_syncreply(self, message: m.SyncReply) -> list[Effect]:
        self._sync_waits.append((message.zxid, message.session_id, message.cxid))
        return self._apply()

    # -- rules ----------------------------------------------------------------------------
    def _next_log(self) -> list[Effect]:
        """Group commit: one batch in flight; what arrives meanwhile is the next batch."""
        if self._logging or not self._to_log:
            return []
        size, end = 0, 0
        while end < len(self._to_log) and size < MAX_LOG_BATCH_BYTES:
            size += len(self._to_log[end].body) + TXN_OVERHEAD
            end += 1
        batch, self._to_log = self._to_log[:end], self._to_log[end:]
        self._logging = True
        self._log_started = self._clock
        return [Log(batch)]

    def _apply(self) -> list[Effect]:
        """Apply what is both committed and durable here, in zxid order; then answer the syncs
        whose point is applied."""
        effects: list[Effect] = []
        ready: list[Txn] = []
        unapplied = self.unapplied
        while unapplied and unapplied[0].zxid <= self.commit_zxid:
            ready.append(unapplied.popleft())
        if ready:
            self.applied_zxid = ready[-1].zxid
            effects.append(Apply(ready))
        if self._sync_waits:
            still = []
            for zxid, session_id, cxid in self._sync_waits:
                if zxid <= self.applied_zxid:
                    effects.append(AnswerSync(session_id, cxid))
                else:
                    still.append((zxid, session_id, cxid))
            self._sync_waits = still
        return effects
