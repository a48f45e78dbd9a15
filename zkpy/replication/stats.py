"""What an ensemble member measures of replication, for mntr and the Prometheus endpoint.

Kept on the QuorumPeer, so the numbers outlive the roles (a leader's stats survive its stepping
down, as Apache's ServerMetrics do). Names are Apache 3.8's where Apache measures the same thing:

- proposal_latency: a batch proposed by the leader until it is committed there (the leader's
  own log write and a quorum of acknowledgements included);
- quorum_ack_latency: a batch proposed until a quorum of voters has acknowledged it;
- commit_propagation_latency: on a learner, a transaction's time (set when the leader ordered it)
  until the learner applies it, wall clock, one sample per committed batch;
- diff_count, snap_count: learners synced by DIFF or SNAP (TRUNC too here, Apache has no name).

The max_* lines are zkpy's own: high-water marks of the bounded queues between peers.

learner_ack_latency (zkpy's own) is per learner: a proposal sent until that learner acknowledged
it, which shows which follower is slow.
"""

from __future__ import annotations

from zkpy.server.latency import Summary

# Proposals whose send time is kept for matching acknowledgements; older ones are forgotten (an ack
# that far behind is a learner being re-synced, not a latency worth a sample).
KEEP_PROPOSALS = 4096


class ReplicationStats:
    def __init__(self) -> None:
        self.election_ms = Summary()
        self.follower_sync_ms = Summary()
        self.proposal_ms = Summary()
        self.quorum_ack_ms = Summary()
        self.commit_propagation_ms = Summary()
        self.learner_ack_ms: dict[int, Summary] = {}
        self.syncs = {"diff": 0, "trunc": 0, "snap": 0}
        self._proposed: dict[int, float] = {}  # last zxid of a batch -> when it was proposed (s)
        # High-water marks of the bounded queues (bytes): a learner's proposals not yet logged,
        # and a leader's output to one learner not yet written (the tests check the bounds).
        self.most_unlogged_bytes = 0
        self.most_queued_to_learner = 0
        self.most_waiting_messages = 0  # learners' messages waiting for a leader's driver (count)

    def proposed(self, zxid: int, now: float) -> None:
        proposed = self._proposed
        proposed[zxid] = now
        if len(proposed) > KEEP_PROPOSALS:
            del proposed[next(iter(proposed))]  # insertion order: the oldest

    def acked(self, sid: int, zxid: int, now: float) -> None:
        sent = self._proposed.get(zxid)
        if sent is None:
            return
        summary = self.learner_ack_ms.get(sid)
        if summary is None:
            summary = self.learner_ack_ms[sid] = Summary()
        summary.record((now - sent) * 1000)

    def quorum_acked(self, zxid: int, now: float) -> None:
        sent = self._proposed.get(zxid)
        if sent is not None:
            self.quorum_ack_ms.record((now - sent) * 1000)

    def metrics(self) -> dict[str, int | float | str]:
        """mntr lines in ZooKeeper's style (a per-learner summary as avg_<sid>_name, as Apache's
        summary sets)."""
        lines: dict[str, int | float | str] = {
            **self.election_ms.metrics("election_time"),
            **self.follower_sync_ms.metrics("follower_sync_time"),
            **self.proposal_ms.metrics("proposal_latency"),
            **self.quorum_ack_ms.metrics("quorum_ack_latency"),
            **self.commit_propagation_ms.metrics("commit_propagation_latency"),
            "diff_count": self.syncs["diff"],
            "snap_count": self.syncs["snap"],
            "trunc_count": self.syncs["trunc"],
            # The bounded queues' high-water marks since the member started: how close a slow
            # follower's disk, or a slow link, brought them to their caps (issue 17).
            "max_unlogged_proposal_bytes": self.most_unlogged_bytes,
            "max_queued_to_learner_bytes": self.most_queued_to_learner,
            "max_waiting_learner_messages": self.most_waiting_messages,
        }
        for sid in sorted(self.learner_ack_ms):
            lines.update(self.learner_ack_ms[sid].metrics(f"{sid}_learner_ack_latency"))
        return lines
