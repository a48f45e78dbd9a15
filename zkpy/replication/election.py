"""Fast leader election (Apache ZooKeeper's FastLeaderElection) as a pure state machine.

Why sans-IO: election correctness depends on message interleavings and timeouts, which are
miserable to test over sockets and clocks. Here every input is a call (``start``, ``receive``,
``tick``) carrying the current time, and every output is a list of ``(destination sid,
Notification)`` pairs for the transport to deliver. Tests can then drive any interleaving
deterministically, and the trio transport (``election_net``) stays a thin pipe.

The algorithm, as Apache's:

* Each LOOKING server proposes a vote ``(leader, zxid, peer_epoch)`` and broadcasts it with its
  *logical clock* (the election epoch, bumped on every ``start``).
* Votes are totally ordered by ``(peer_epoch, zxid, leader sid)``: the server with the most
  recent history wins, ties broken by sid so the lowest-voted server still converges.
* On a notification from a LOOKING voter: a higher election epoch means we are behind, so we
  adopt its clock, forget the votes of the older round and propose the better of its vote and
  our own initial one; a lower epoch is stale, so we only answer it with our notification; the
  same epoch lets us adopt a better vote. Any change is broadcast.
* Once a quorum (strict majority of voters, us included) of recorded votes equals our proposal
  we wait ``finalize_wait`` for anything better; if nothing better arrives we decide.
* Servers that already decided answer LOOKING notifications with their FOLLOWING/LEADING
  state. A LOOKING server follows such a leader at once when a quorum of voters reports it and
  the leader itself said LEADING: that is how a restarted server joins a running ensemble
  without forcing a new election.
* Observers never vote and never lead; they run the same logic to learn the leader.
* A voter that lost its data (a damaged log or snapshot, moved aside) *abstains* until it has
  synced with a leader: it announces no vote (``NO_VOTE``, which voters ignore and decided
  servers answer), never counts itself and never leads, but follows the leader a quorum of the
  others agree on. Its vote would carry a history shorter than what it acknowledged, and a quorum
  counting it could elect a leader missing a committed transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOOKING, FOLLOWING, LEADING, OBSERVING = "LOOKING", "FOLLOWING", "LEADING", "OBSERVING"
STATES = frozenset({LOOKING, FOLLOWING, LEADING, OBSERVING})


@dataclass(frozen=True, slots=True)
class Vote:
    """A proposal: who should lead, and how recent that server's history is."""

    leader: int  # proposed leader's server id
    zxid: int  # its last logged zxid
    peer_epoch: int  # its currentEpoch

    def key(self) -> tuple[int, int, int]:
        """Total order of votes: newer epoch, then longer log, then higher sid wins."""
        return (self.peer_epoch, self.zxid, self.leader)


# What an observer proposes: below every real vote (sids, zxids and epochs are >= 0), so it adopts
# any voter's proposal and can never be proposed itself (Apache uses Long.MIN_VALUE likewise).
NO_VOTE = Vote(-1, -1, -1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Notification:
    """One election message: the sender's state, its vote, and its election epoch."""

    sid: int  # sender
    state: str  # LOOKING | FOLLOWING | LEADING | OBSERVING
    vote: Vote
    election_epoch: int  # the sender's logical clock

    def pack(self) -> list[Any]:
        """The wire form: a tagged msgpack-able list."""
        v = self.vote
        return ["vote", self.sid, self.state, v.leader, v.zxid, v.peer_epoch, self.election_epoch]

    @classmethod
    def unpack(cls, msg: list[Any] | tuple[Any, ...]) -> Notification:
        """Parse a wire message; ValueError on anything malformed so the link can be dropped."""
        if not isinstance(msg, list | tuple) or len(msg) != 7 or msg[0] != "vote":
            raise ValueError(f"not a vote message: {msg!r}")
        _, sid, state, leader, zxid, peer_epoch, election_epoch = msg
        if not isinstance(state, str) or state not in STATES:
            raise ValueError(f"bad election state {state!r}")
        for name, value, low in (
            ("sid", sid, 0),
            ("leader", leader, -1),
            ("zxid", zxid, -1),
            ("peer_epoch", peer_epoch, -1),
            ("election_epoch", election_epoch, 0),
        ):
            if not _is_int(value) or value < low:
                raise ValueError(f"bad {name} {value!r} in vote message")
        return cls(sid, state, Vote(leader, zxid, peer_epoch), election_epoch)


Outgoing = list[tuple[int, Notification]]


class Election:
    """One server's view of fast leader election.

    Drive it with ``start`` (enter LOOKING), ``receive`` (each notification from a peer) and
    ``tick`` (whenever ``deadline()`` passes); send whatever they return. Once ``decided`` is set
    the state is FOLLOWING, LEADING or OBSERVING and the server keeps answering LOOKING peers so
    they can join it.
    """

    def __init__(
        self,
        my_id: int,
        voters: frozenset[int],
        observers: frozenset[int] = frozenset(),
        finalize_wait: float = 0.2,
        max_notification_interval: float = 60.0,
    ) -> None:
        voters = frozenset(voters)
        observers = frozenset(observers)
        if not voters:
            raise ValueError("an election needs at least one voter")
        if voters & observers:
            raise ValueError(f"servers {sorted(voters & observers)} are both voter and observer")
        if my_id not in voters and my_id not in observers:
            raise ValueError(f"server {my_id} is neither a voter nor an observer")
        if finalize_wait <= 0 or max_notification_interval < finalize_wait:
            raise ValueError("need 0 < finalize_wait <= max_notification_interval")
        self.my_id = my_id
        self.voters = voters
        self.observers = observers
        self.finalize_wait = finalize_wait
        self.max_notification_interval = max_notification_interval
        self.is_voter = my_id in voters
        self.quorum = len(voters) // 2 + 1
        self.peers: tuple[int, ...] = tuple(sorted((voters | observers) - {my_id}))
        self.state: str = LOOKING
        self.vote: Vote = NO_VOTE
        self.logical_clock = 0
        self.decided: Vote | None = None
        self._started = False
        self.abstaining = False  # a voter whose data was lost: see the module docstring
        self._initial: Vote = NO_VOTE
        # Apache's recvset: each voter's best vote in our current election epoch (only ever
        # improves within an epoch, so keeping the max makes us immune to reordered duplicates).
        self._votes: dict[int, Vote] = {}
        # Apache's outofelection: what decided servers told us, whatever their election epoch.
        self._reports: dict[int, tuple[str, Vote]] = {}
        self._finalize_at: float | None = None
        self._finalize_vote: Vote | None = None
        self._resend_at: float | None = None
        self._resend_interval = finalize_wait

    # -- inputs -------------------------------------------------------------------------------

    def start(self, now: float, peer_epoch: int, last_zxid: int, *, abstain: bool = False) -> Outgoing:
        """(Re)enter LOOKING for a new round and propose ourselves (observers, and a voter that
        must `abstain` until it re-synced its lost data, propose nobody)."""
        self._started = True
        self.abstaining = abstain and self.is_voter
        self.logical_clock += 1
        self.state = LOOKING
        self.decided = None
        self._votes.clear()
        self._reports.clear()
        self._initial = Vote(self.my_id, last_zxid, peer_epoch) if self._voting else NO_VOTE
        self.vote = self._initial
        self._finalize_at = self._finalize_vote = None
        self._resend_interval = self.finalize_wait
        self._resend_at = now + self._resend_interval
        self._check_quorum(now)  # a lone voter is its own quorum
        return self._broadcast()

    def receive(self, now: float, n: Notification) -> Outgoing:
        """Handle one notification from a peer; returns what to send in response."""
        if not self._started or n.sid == self.my_id or n.sid not in self.voters | self.observers:
            return []
        if n.state == LOOKING:
            # A server that is looking again no longer vouches for what it reported earlier.
            self._reports.pop(n.sid, None)
        if self.state != LOOKING:
            # Tell a looking server what we settled on, so it can join the running ensemble.
            return [(n.sid, self._notification())] if n.state == LOOKING else []
        if n.sid not in self.voters:
            # Observers' votes never count; answer a looking one with our proposal (as Apache).
            return [(n.sid, self._notification())] if n.state == LOOKING else []
        if n.vote.leader not in self.voters:
            return []  # a voter proposing a non-voter: config mismatch, ignore as Apache does
        if n.state == LOOKING:
            return self._on_looking(now, n)
        if n.state in (FOLLOWING, LEADING):
            self._on_decided(now, n)
        return []

    def tick(self, now: float) -> Outgoing:
        """Finalize a decision whose wait passed, or re-send our notification (with back-off)."""
        if not self._started or self.state != LOOKING:
            return []
        if self._finalize_at is not None and now >= self._finalize_at:
            self._decide(self.vote)
            return []
        if self._resend_at is not None and now >= self._resend_at:
            # Re-send to every peer, as Apache: even a peer we heard from may have missed our
            # latest vote, and it needs that vote for its own quorum. The transport keeps only the
            # newest unsent notification per peer, so this is cheap.
            self._resend_interval = min(self._resend_interval * 2, self.max_notification_interval)
            self._resend_at = now + self._resend_interval
            return self._broadcast()
        return []

    def deadline(self) -> float | None:
        """When ``tick`` must next be called; None when not looking."""
        if not self._started or self.state != LOOKING:
            return None
        times = [t for t in (self._finalize_at, self._resend_at) if t is not None]
        return min(times) if times else None

    def set_role(self, state: str) -> None:
        """Record the role the peer glue is now running.

        FOLLOWING/LEADING/OBSERVING just update ``state`` (we keep answering looking peers with
        it). LOOKING leaves the machine idle (ignoring input) until ``start`` begins a new round,
        since a round needs our current epoch and zxid.
        """
        if state not in STATES:
            raise ValueError(f"unknown election state {state!r}")
        self.state = state
        if state == LOOKING:
            self._started = False
            self.decided = None
            self._finalize_at = self._finalize_vote = self._resend_at = None

    # -- internals ----------------------------------------------------------------------------

    def _on_looking(self, now: float, n: Notification) -> Outgoing:
        out: Outgoing = []
        if n.election_epoch > self.logical_clock:
            # We are behind: join its round, forgetting votes from ours.
            self.logical_clock = n.election_epoch
            self._votes.clear()
            self.vote = max(n.vote, self._initial, key=Vote.key) if self._may_adopt(n.vote) else self._initial
            out = self._broadcast()
        elif n.election_epoch < self.logical_clock:
            # It is behind: tell it about our round; its vote is stale so it does not count.
            return [(n.sid, self._notification())]
        elif n.vote.key() > self.vote.key() and self._may_adopt(n.vote):
            self.vote = n.vote
            out = self._broadcast()
        self._record(n.sid, n.vote)
        self._check_quorum(now)
        return out

    def _on_decided(self, now: float, n: Notification) -> None:
        self._reports[n.sid] = (n.state, n.vote)
        if n.election_epoch == self.logical_clock:
            # Same round: the decided server's final vote counts like a looking one.
            self._record(n.sid, n.vote)
            if self._count(n.vote) >= self.quorum and self._leader_confirmed(n.vote.leader, n.election_epoch):
                self._decide(n.vote)
                return
        # Any round: a quorum of decided voters following one live leader is a running ensemble.
        # Their votes need not be equal: a server that joined through such reports keeps the vote
        # of the election it heard about, whose peer epoch may be older than the leader's latest
        # one (comparing it left a third server unable to join, seed 37487). Following the wrong
        # leader is harmless anyway: the ZAB handshake's epochs decide who syncs with whom.
        agreeing = sum(
            1 for sid, (_, v) in self._reports.items() if sid in self.voters and v.leader == n.vote.leader
        )
        if agreeing >= self.quorum and self._leader_confirmed(n.vote.leader, n.election_epoch):
            self.logical_clock = n.election_epoch
            self._decide(n.vote)
            return
        self._check_quorum(now)

    def _leader_confirmed(self, leader: int, election_epoch: int) -> bool:
        """Followers alone may report a leader that died: require the leader's own word.

        If the reported leader is us, only trust it for our own round (Apache's checkLeader): a
        restarted former leader must not resume leading on stale reports.
        """
        if leader == self.my_id:
            return self._voting and election_epoch == self.logical_clock
        report = self._reports.get(leader)
        return report is not None and report[0] == LEADING and report[1].leader == leader

    def _record(self, sid: int, vote: Vote) -> None:
        prev = self._votes.get(sid)
        if prev is None or vote.key() > prev.key():
            self._votes[sid] = vote

    def _count(self, vote: Vote) -> int:
        """Voters whose recorded vote (ours included) equals ``vote``."""
        count = sum(1 for sid, v in self._votes.items() if sid in self.voters and v == vote)
        if self._voting and self.vote == vote:
            count += 1
        return count

    def _check_quorum(self, now: float) -> None:
        """Start (or keep, or cancel) the finalize wait for our current proposal."""
        if self._count(self.vote) >= self.quorum:
            if self._finalize_vote != self.vote:
                self._finalize_vote = self.vote
                self._finalize_at = now + self.finalize_wait
        else:
            self._finalize_at = self._finalize_vote = None

    def _decide(self, vote: Vote) -> None:
        self.decided = vote
        self.vote = vote
        if vote.leader == self.my_id and self._voting:
            self.state = LEADING
        else:
            self.state = FOLLOWING if self.is_voter else OBSERVING
        self._finalize_at = self._finalize_vote = self._resend_at = None

    @property
    def _voting(self) -> bool:
        return self.is_voter and not self.abstaining

    def _may_adopt(self, vote: Vote) -> bool:
        """An abstaining voter never proposes itself, whatever stale votes for it still arrive."""
        return not (self.abstaining and vote.leader == self.my_id)

    def _notification(self) -> Notification:
        # While abstaining, announce nothing: a vote or a report from us must not count anywhere.
        vote = NO_VOTE if self.abstaining else self.vote
        return Notification(self.my_id, self.state, vote, self.logical_clock)

    def _broadcast(self) -> Outgoing:
        n = self._notification()
        return [(sid, n) for sid in self.peers]
