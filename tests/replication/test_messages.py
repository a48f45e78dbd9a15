"""The typed peer messages: every record survives the wire as itself, and what is not one of the
other side's messages with well-typed fields is refused before a core sees it."""

from __future__ import annotations

from typing import Any

import pytest

from zkpy.replication import messages as m
from zkpy.replication.wire import FrameDecoder, encode_frame

FROM_LEARNER: list[m.Message] = [
    m.Info(2, 5, "participant"),
    m.AckEpoch(-1, 1 << 32 | 7, 1 << 32 | 2),
    m.AckNewLeader(1 << 32 | 9),
    m.Ack(0),
    m.LearnerPing([7, 2**63 - 1]),
    m.ForwardedRequest(-5, 3, 1, b"\x00\x01", [["digest", "a:b"]]),
    m.ForwardedSync(7, 4),
    m.RevalidateSession(7, 4000),
    m.Relinquish(7, 1),
]
FROM_LEADER: list[m.Message] = [
    m.LeaderInfo(6),
    m.SyncData("snap", 9, [[1, 2], [b"x", None]], [b"t1", b"t2"]),
    m.SyncData("diff", 9, None, []),
    m.SyncData("snap", 9, None, [b"t"]),  # streamed before, in SnapshotChunks
    m.SnapshotChunk(b"ZKPS\x00\x00"),
    m.NewLeader(6),
    m.UpToDate(-1),
    m.Proposal([b"t"]),
    m.Commit(1 << 32 | 9),
    m.LeaderPing(),
    m.Refused(7, 3, -101, 12),
    m.SyncReply(7, 4, 9),
    m.Revalidated(7, True),
]


def over_the_wire(message: m.Message) -> Any:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(message.to_wire()))
    return decoder.next_message()


@pytest.mark.parametrize("message", FROM_LEARNER, ids=lambda x: type(x).__name__)
def test_learner_messages_survive_the_wire(message: m.Message) -> None:
    assert m.from_learner(over_the_wire(message)) == message


@pytest.mark.parametrize("message", FROM_LEADER, ids=lambda x: type(x).__name__)
def test_leader_messages_survive_the_wire(message: m.Message) -> None:
    assert m.from_leader(over_the_wire(message)) == message


def test_the_wire_format_is_the_tag_then_the_fields_in_order() -> None:
    """Peers of the previous release send and expect these arrays: the records must not move
    a field."""
    assert m.AckEpoch(1, 2, 3).to_wire() == ["ackepoch", 1, 2, 3]
    assert m.SyncData("trunc", 5, None, [b"x"]).to_wire() == ["syncdata", "trunc", 5, None, [b"x"]]
    assert m.LeaderPing().to_wire() == ["ping"]
    assert m.LearnerPing([1]).to_wire() == ["ping", [1]]
    assert m.RevalidateSession(7, 4000).to_wire() == ["revalidate", 7, 4000]  # questions numbered by count
    assert m.Relinquish(7, 2).to_wire() == ["relinquish", 7, 2]


@pytest.mark.parametrize(
    "array",
    [
        None,
        [],
        [7, 1],
        ["leaderinfo", 3],  # a leader's message sent to the leader
        ["info", 2, 1],
        ["info", 2, 1, "participant", "extra"],
        ["info", True, 1, "participant"],
        ["ackepoch", -2, 0, 0],
        ["ack", 2**63],
        ["ping", [1.5]],
        ["request", 1, 1, 1, "text", []],
        ["request", 1, 1, -10, b"", []],  # a createSession without its timeout
        ["relinquish", 7, 0],  # questions are numbered from 1
        ["relinquish", 7],
    ],
)
def test_malformed_learner_arrays_are_refused(array: Any) -> None:
    with pytest.raises(ValueError):
        m.from_learner(array)


@pytest.mark.parametrize(
    "array",
    [
        ["info", 2, 1, "participant"],  # a learner's message sent to a learner
        ["syncdata", "diff", 5, [], []],  # a DIFF with one
        ["syncdata", "merge", 5, None, []],
        ["proposal", ["not bytes"]],
        ["revalidated", 7, 1],
        ["ping", []],
    ],
)
def test_malformed_leader_arrays_are_refused(array: Any) -> None:
    with pytest.raises(ValueError):
        m.from_leader(array)
