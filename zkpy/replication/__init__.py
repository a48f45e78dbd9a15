"""ZAB replication: leader election, synchronisation of learners, quorum-acked broadcast.

Pure protocol logic (state machines: inputs in, effects out; tested without trio):
election.py     fast leader election (votes in, votes out)
leader_core.py  the leader's discovery, sync planning, broadcast and heartbeats for one epoch
learner_core.py a follower's or observer's side of the same
history.py      the in-memory log window a leader syncs learners from; the DIFF/TRUNC/SNAP choice
messages.py     the typed leader <-> learner messages, checked field by field off the wire
quorum.py       who votes, what a quorum is, and the commit point of cumulative acks
roles.py        RoleEnded, and RoleContext: what a role may touch of its server

Glue (trio, sockets, disks), carrying the cores' effects out:
leader.py       the leader's role: learner links, its log writer, streamed syncs, the client server
learner.py      a learner's role: its link, its log writer, sync install, forwarding
link.py         one peer connection as framed messages (and what a role's failure means)
wire.py         CRC-checked msgpack frames between peers
election_net.py the election port: one sending link per peer
epochs.py       acceptedEpoch / currentEpoch files, written atomically
serving.py      the client-facing server in each role
peer.py         one ensemble member: election, then a role, then election again
"""
