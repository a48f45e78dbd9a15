"""Before the handshake, a quorum link takes only a small frame; and a whole running (simulated)
ensemble shrugs off what the fuzzer (scripts/fuzz_peer_ports.py) sends its quorum and election
ports."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from zkpy.replication.leader import Leader
from zkpy.replication.learner import Learner
from zkpy.replication.link import PeerLink
from zkpy.replication.wire import HEADER, MAX_FRAME, MAX_HANDSHAKE_FRAME, WireError, encode_frame
from zkpy.testing.cluster import ELECTION_PORT, PEER_PORT, SimCluster, simulate


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- frames before the handshake ----------------------------------------------------------------
async def test_a_link_refuses_an_oversized_frame_before_buffering_it() -> None:
    left, right = trio.testing.memory_stream_pair()
    link = PeerLink(right, max_frame=MAX_HANDSHAKE_FRAME)
    await left.send_all(HEADER.pack(MAX_FRAME, 0) + b"\x00" * 1000)
    with pytest.raises(WireError, match="exceeds"):
        await link.receive()
    link.max_frame = 1 << 20  # identified: bigger frames are fine from now on
    left2, right2 = trio.testing.memory_stream_pair()
    link2 = PeerLink(right2, max_frame=MAX_HANDSHAKE_FRAME)
    link2.max_frame = 1 << 20
    big = encode_frame(["request", 1, 1, 1, b"x" * 200_000, []])
    await left2.send_all(big)
    assert (await link2.receive())[4] == b"x" * 200_000


# -- a whole running ensemble (simulated) -------------------------------------------------------
def roles(cluster: SimCluster) -> dict[int, tuple[str, int]]:
    out = {}
    for sid, server in cluster.servers.items():
        assert server.peer is not None
        out[sid] = (server.peer.state, server.peer.epochs.current)
    return out


def test_hostile_peers_do_not_disturb_a_running_simulated_ensemble() -> None:
    """A stranger's 1 MiB frame before any handshake, a second link claiming a synced follower,
    deep junk on every election port: the leader, its followers' links and the epoch stay."""
    seen: dict[str, Any] = {}

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader_sid = cluster.leader()
        assert leader_sid is not None
        before = roles(cluster)
        leader_peer = cluster.servers[leader_sid].peer
        assert leader_peer is not None and isinstance(leader_peer.role, Leader)
        links = dict(leader_peer.role.links)
        follower = next(sid for sid in cluster.servers if sid != leader_sid)
        follower_peer = cluster.servers[follower].peer
        assert follower_peer is not None and isinstance(follower_peer.role, Learner)
        follower_role = follower_peer.role
        net = cluster.network.host("stranger")
        host = cluster.servers[leader_sid].host

        # 1 MiB announced before any handshake: refused at the header (it was buffered, up to
        # jute.maxbuffer + 64 KiB a connection, until initLimit).
        stream = await net.connect(host, PEER_PORT)
        await stream.send_all(HEADER.pack(1 << 20, 0) + b"\x00" * 1000)
        with trio.fail_after(1):
            seen["oversize"] = await stream.receive_some()

        # A second link claiming the synced follower: refused; the follower keeps its link.
        stream = await net.connect(host, PEER_PORT)
        await stream.send_all(encode_frame(["info", follower, 1, "participant"]))
        with trio.fail_after(1):
            seen["duplicate"] = await stream.receive_some()

        # Deep junk on every election port: each server closes that connection and goes on.
        for server in cluster.servers.values():
            for frames in (
                encode_frame(nested(1020)),
                encode_frame(["hello", 2]) + encode_frame(nested(1020)),
            ):
                stream = await net.connect(server.host, ELECTION_PORT)
                await stream.send_all(frames)
                with trio.fail_after(1):
                    assert await stream.receive_some() == b""
        await trio.sleep(5 * cluster.tick * 5)  # several syncLimits: any disturbance would show
        seen["after"] = roles(cluster)
        seen["before"] = before
        seen["links_kept"] = all(leader_peer.role.links.get(conn) is link for conn, link in links.items())
        seen["same_follower_role"] = follower_peer.role is follower_role
        seen["leader"] = (leader_sid, cluster.leader())

    simulate(7, scenario)
    assert seen["oversize"] == b"" and seen["duplicate"] == b""
    assert seen["after"] == seen["before"]
    assert seen["links_kept"] and seen["same_follower_role"]
    assert seen["leader"][0] == seen["leader"][1]


def test_connections_that_never_identify_leave_nothing_behind_in_the_leader() -> None:
    """Found by the fuzzer: a quorum connection that ended before its learner said who it was
    (junk, a bad frame, or just a hang-up) stayed in the leader's links and scopes with its
    buffer, for the rest of the leadership: the leader's RSS grew by ~30 MB a minute under fuzzing."""
    seen: dict[str, Any] = {}

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader_sid = cluster.leader()
        assert leader_sid is not None
        peer = cluster.servers[leader_sid].peer
        assert peer is not None and isinstance(peer.role, Leader)
        role = peer.role
        seen["before"] = (len(role.links), len(role.scopes), len(role.core.learners))
        net = cluster.network.host("stranger")
        openings = [b"", b"junk" * 100, encode_frame(["vote", 1]), HEADER.pack(1 << 20, 0), b"\x00\x00"]
        for opening in openings * 10:
            stream = await net.connect(cluster.servers[leader_sid].host, PEER_PORT)
            if opening:
                await stream.send_all(opening)
            await trio.sleep(0.01)
            await stream.aclose()
        await trio.sleep(1)
        seen["after"] = (len(role.links), len(role.scopes), len(role.core.learners))

    simulate(11, scenario)
    assert seen["after"] == seen["before"] == (2, 2, 2)
