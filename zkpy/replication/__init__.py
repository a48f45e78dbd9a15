"""ZAB replication: leader election, synchronisation of learners, quorum-acked broadcast.

election.py     fast leader election, pure (votes in, votes out)
election_net.py the election port: one sending link per peer
wire.py         CRC-checked msgpack frames between peers
epochs.py       acceptedEpoch / currentEpoch files, written atomically
history.py      the in-memory log window a leader syncs learners from; the DIFF/TRUNC/SNAP choice
quorum.py       who votes, what a quorum is, and the commit point of cumulative acks
leader.py       the leader's role: discovery, sync, broadcast, heartbeats
learner.py      a follower's or observer's role: the same, seen from the other side
peer.py         one ensemble member: election, then a role, then election again
"""
