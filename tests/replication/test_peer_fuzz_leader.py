"""The leader core against learner messages a fuzzer sent (scripts/fuzz_peer_ports.py): a second
link claiming a synced learner, and well-tagged messages with fields of the wrong type or range."""

from __future__ import annotations

from typing import Any

import pytest

from zkpy.jute.ops import OpCode
from zkpy.replication import messages as m
from zkpy.replication.leader_core import (
    BROADCAST,
    SYNCED,
    Broadcast,
    Close,
    DropLearner,
    LeaderCore,
    SendTo,
    SyncLearner,
    TouchSessions,
    WriteLog,
)
from zkpy.replication.quorum import Quorum
from zkpy.tree.txn import Txn


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- the leader core ------------------------------------------------------------------------------
def z(epoch: int, counter: int) -> int:
    return epoch << 32 | counter


def leader() -> LeaderCore:
    """Leader 3 of voters 1-3 (4 is a configured observer), learner 1 synced on link 10."""
    core = LeaderCore(
        my_id=3, quorum=Quorum((1, 2, 3)), accepted_epoch=1, current_epoch=1, last_logged=z(1, 9),
        servers=frozenset((1, 2, 3, 4)), init_limit=5.0, sync_limit=1.0, now=0.0,
    )  # fmt: skip
    core.connected(10, 0.1)
    core.receive_wire(10, ["info", 1, 1, "participant"], 0.1)
    core.receive_wire(10, ["ackepoch", 1, z(1, 7), 0], 0.2)
    core.receive_wire(10, ["acknl", z(1, 9)], 0.3)
    assert core.phase == BROADCAST and core.learners[10].stage == SYNCED
    return core


def test_a_second_link_claiming_a_synced_learner_is_refused_and_the_real_one_keeps_its_link() -> None:
    """Found by the fuzzer: an "info" naming a connected follower replaced its link, so the real
    follower lost its leader, dropped its clients and went back to election."""
    core = leader()
    for conn, sid in ((11, 1), (12, True), (13, 1.0)):  # True == 1.0 == 1 for a set: refused as strangers
        core.connected(conn, 0.5)
        effects = core.receive_wire(conn, ["info", sid, 1, "participant"], 0.5)
        assert effects == [Close(conn, effects[0].reason)]  # type: ignore[union-attr]
        assert conn not in core.learners
    assert core.learners[10].stage == SYNCED and core.acks[1] == z(1, 9)
    assert core.receive_wire(10, ["ping", []], 0.6) == [TouchSessions([])]  # still served
    a = Txn(z(2, 1), 0, 1, 1, 1, b"")
    assert core.propose([a]) == [Broadcast((10,), m.Proposal([a.pack()])), WriteLog([a])]


def test_a_learner_that_really_reconnects_gets_in_once_its_old_link_is_silent() -> None:
    core = leader()
    core.connected(11, 0.5)
    assert isinstance(core.receive_wire(11, ["info", 1, 1, "participant"], 0.5)[-1], Close)  # old link is heard
    core.connected(12, 1.5)  # nothing heard on link 10 for more than syncLimit: it is a dead link
    effects = core.receive_wire(12, ["info", 1, 1, "participant"], 1.5)
    assert effects[:2] == [DropLearner(10, 1), Close(10, "replaced by a new link")]
    assert [(e.conn, e.sid) for e in core.receive_wire(12, ["ackepoch", 1, z(1, 9), 0], 1.6)] == [(12, 1)]  # synced


def test_a_learner_still_syncing_is_replaced_by_a_new_link_as_before() -> None:
    core = leader()
    core.connected(11, 0.5)
    core.receive_wire(11, ["info", 2, 1, "participant"], 0.5)  # learner 2, not synced yet
    core.connected(12, 0.6)
    effects = core.receive_wire(12, ["info", 2, 1, "participant"], 0.6)
    assert Close(11, "replaced by a new link") in effects
    assert core.learners[12].sid == 2


ILL_TYPED = [
    ["info", 4, "1", "observer"],
    ["info", 4, 2**31 - 1, "observer"],  # the next epoch would not fit a zxid
    ["info", 4, 1, "observer", "extra"],
    ["info", nested(1020), 1, "observer"],
    ["info", 4, 1],
    ["ackepoch", 1, 0, 0],  # before info
]


@pytest.mark.parametrize("message", ILL_TYPED, ids=range(len(ILL_TYPED)))
def test_an_ill_typed_first_message_closes_only_that_link(message: list[Any]) -> None:
    core = leader()
    core.connected(11, 0.5)
    effects = core.receive_wire(11, message, 0.5)
    assert len(effects) == 1 and isinstance(effects[0], Close) and len(effects[0].reason) < 200
    assert 11 not in core.learners and core.learners[10].stage == SYNCED


AFTER_LEADERINFO = [
    ["ackepoch", "1", 0, 0],
    ["ackepoch", 1, None, 0],
    ["ackepoch", 1, 0, [0]],
    ["ackepoch", 1, 2**64 - 1, 0],  # would reach plan_sync in the glue, and fail there
    ["ackepoch", 1, 0.5, 0],
    ["ackepoch", True, True, True],
    ["ackepoch", 1, 0],
]
AFTER_SYNC = [["acknl", "x"], ["acknl", [0]], ["acknl", None], ["acknl"], ["acknl", 2**63]]
SYNCED_MESSAGES = [
    ["ack", "x"],  # kept in `acks`, it would fail every later commit
    ["ack", [1]],
    ["ping", ["x"]],
    ["ping", 5],
    ["ping", [[1]]],
    ["ping", [2**64]],
    ["request", "s", 1, 1, b"", []],
    ["request", 1, 1, "x", b"", []],
    ["request", 1, 1, 1, "not bytes", []],
    ["request", 1, 1, 1, b"", [["x"]]],
    ["request", 1, 1, 1, b"", "auth"],
    ["request", 2**64 - 1, 1, 1, b"", []],
    ["request", 1, 1, int(OpCode.CREATE_SESSION), b"", []],  # applying it would fail on every server
    ["sync", None, 1],
    ["sync", 1],
]


@pytest.mark.parametrize(
    ("stage", "message"),
    [("leaderinfo", m) for m in AFTER_LEADERINFO]
    + [("sync", m) for m in AFTER_SYNC]
    + [("synced", m) for m in SYNCED_MESSAGES],
)
def test_an_ill_typed_field_closes_only_that_link_and_leaves_the_leader_working(
    stage: str, message: list[Any]
) -> None:
    """Found by the fuzzer through a configured server that was down (its sid is free to claim):
    such fields went on into `acks`, the glue's plan_sync or the session tracker."""
    core = leader()
    core.connected(11, 0.5)
    core.receive_wire(11, ["info", 4, 1, "observer"], 0.5)
    if stage in ("sync", "synced"):
        synced = core.receive_wire(11, ["ackepoch", 1, z(1, 9), -1], 0.5)
        assert [(type(e), e.conn) for e in synced] == [(SyncLearner, 11)]
    if stage == "synced":
        assert core.receive_wire(11, ["acknl", z(1, 9)], 0.5)[0] == SendTo(11, m.UpToDate(z(1, 9)))
    effects = core.receive_wire(11, message, 0.6)
    assert isinstance(effects[-1], Close), effects
    assert all(isinstance(v, int) for v in core.acks.values())
    a = Txn(z(2, 1), 0, 1, 1, 1, b"")
    core.propose([a])
    core.receive_wire(10, ["ack", z(2, 1)], 0.7)
    assert core.logged(z(2, 1))[0].zxid == z(2, 1)  # type: ignore[union-attr]


def test_well_formed_learner_messages_still_pass() -> None:
    core = leader()
    assert core.receive_wire(10, ["ping", [7, 2**63 - 1]], 0.5)[0].session_ids == [7, 2**63 - 1]  # type: ignore[union-attr]
    assert (
        len(core.receive_wire(10, ["request", -5, 3, int(OpCode.CREATE_SESSION), b"\x00\x00\x75\x30", []], 0.5))
        == 1
    )
    assert core.receive_wire(10, ["sync", 7, 4], 0.5) == [SendTo(10, m.SyncReply(7, 4, z(1, 9)))]
