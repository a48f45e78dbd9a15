"""Issue 16 in an ensemble (the deterministic simulator): a write refused NoAuth is refused by the leader,
where writes are ordered, before it is proposed, whichever server the client is connected to; and a
forwarded write's transaction carries only the auth ids that decide it, not the session's whole set."""

from __future__ import annotations

import random

from zkpy.errors import Code
from zkpy.jute.ops import CreateRequest, OpCode, SetDataRequest
from zkpy.jute.records import ACL, OPEN_ACL_UNSAFE, PERM_ALL, AuthPacket, Id
from zkpy.testing.cluster import CLIENT_PORT, SimCluster, simulate
from zkpy.testing.simclient import SimClient
from zkpy.tree.acl import digest
from zkpy.tree.txn import Txn

OWNER_ACL = [ACL(PERM_ALL, Id("digest", digest("owner:pw")))]


def _client_of(cluster: SimCluster, name: str, sid: int) -> SimClient:
    """A client that only ever talks to server `sid`."""
    return SimClient(
        name,
        cluster.network.host(name),
        [(cluster.servers[sid].host, CLIENT_PORT)],
        random.Random(cluster.rng.getrandbits(64)),
    )


def test_refused_writes_through_a_follower_are_never_proposed_and_txns_carry_few_ids() -> None:
    """Fails before the leader's prep check: each refused 100 KB setData sent through a follower was
    proposed, logged and replicated in full (the committed history held ten 100 KB refused txns), and a
    forwarded write carried the session's 300 auth ids."""
    outcome: dict[str, object] = {}

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        leader = cluster.leader()
        assert leader is not None
        follower = next(sid for sid in cluster.servers if sid != leader)
        owner = _client_of(cluster, "owner", leader)
        attacker = _client_of(cluster, "attacker", follower)
        await owner.connect()
        await attacker.connect()
        assert (await owner.call(OpCode.AUTH, AuthPacket(0, "digest", b"owner:pw")))[0] == 0
        assert (await owner.call(OpCode.CREATE, CreateRequest("/locked", b"", OWNER_ACL, 0)))[0] == 0
        assert (await owner.call(OpCode.CREATE, CreateRequest("/open", b"", OPEN_ACL_UNSAFE, 0)))[0] == 0
        codes = [
            (await attacker.call(OpCode.SET_DATA, SetDataRequest("/locked", b"x" * 100_000, -1)))[0]
            for _ in range(10)
        ]
        for i in range(300):
            await attacker.call(OpCode.AUTH, AuthPacket(0, "digest", f"flood{i}:pw".encode()))
        outcome["open_write"] = (await attacker.call(OpCode.SET_DATA, SetDataRequest("/open", b"y", -1)))[0]
        outcome["codes"] = codes
        await owner.close()
        await attacker.close()

    cluster = simulate(3, scenario)
    assert outcome["codes"] == [int(Code.NO_AUTH)] * 10
    assert outcome["open_write"] == 0
    txns = [Txn.unpack(packed) for packed in cluster.invariants.committed.values()]
    set_data = [t for t in txns if t.op == OpCode.SET_DATA]
    assert all(len(t.body) < 1000 for t in set_data), "a refused setData was proposed"
    assert max(len(t.auth) for t in txns) <= 2, "a transaction carried the whole auth set"
