"""The history checker inside the simulator catches what a broken server shows clients.

A session writes through one server, then moves to a follower that lags behind (its disk logs
new proposals seconds late). ZooKeeper refuses that reconnect (the client has seen a newer zxid than the
server has), so the session never reads older than its own write. A build that drops that
check lets the session read a stale value: the history checker must report it."""

from __future__ import annotations

import random

import pytest
import trio

from zkpy.jute.ops import OpCode, PathWatchRequest, SetDataRequest
from zkpy.server.node import ZooKeeperServer
from zkpy.testing.cluster import CLIENT_PORT, SimCluster, simulate
from zkpy.testing.history import History, from_simclient
from zkpy.testing.simclient import ConnectionLost, SimClient
from zkpy.testing.workload import REGISTERS, make_registers


async def scenario(cluster: SimCluster, histories: list[History]) -> None:
    await cluster.wait_all_serving()
    await make_registers(cluster)
    leader = cluster.leader()
    assert leader is not None
    ahead, lagging = (sid for sid in cluster.servers if sid != leader)
    client = SimClient("c1", cluster.network.host("c1"), [(f"s{ahead}", CLIENT_PORT)], random.Random(1))
    await client.connect()
    path = REGISTERS[0]
    # The lagging follower logs (so applies) new proposals seconds late. (Cutting the leader's
    # link to it no longer makes a stale server a client can move to: the move's revalidation
    # needs the leader's answer.)
    disk = cluster.servers[lagging].disk
    disk.slow_fsync = (2.0, 2.0)
    disk.slow_until = trio.current_time() + 5.0
    read = await client.record("get", OpCode.GET_DATA, PathWatchRequest(path, False), path)
    version = read.result.stat.version
    wrote = await client.record(
        "set", OpCode.SET_DATA, SetDataRequest(path, b"new", version), path, b"new", version
    )
    assert wrote.outcome == "ok"
    await client._drop()
    client.servers = [(f"s{lagging}", CLIENT_PORT)]  # the session moves to the lagging follower
    with trio.move_on_after(0.3):  # while the follower still serves a stale tree
        while True:
            try:
                await client.connect(attempts=1)
                await client.record("get", OpCode.GET_DATA, PathWatchRequest(path, False), path)
                break
            except ConnectionLost:
                await trio.sleep(0.02)
    cluster.network.heal()
    await client.close()
    histories.append(History(from_simclient(client.history), initial={p: (b"0", 0) for p in REGISTERS}))


def run(seed: int) -> History:
    histories: list[History] = []
    simulate(seed, lambda cluster: scenario(cluster, histories))
    return histories[0]


@pytest.mark.parametrize("seed", range(3))
def test_a_session_never_reads_older_than_it_wrote(seed: int) -> None:
    result = run(seed).check()
    assert result.ok, result.report()


def test_the_checker_catches_a_server_that_lets_a_session_go_back(monkeypatch: pytest.MonkeyPatch) -> None:
    handle_connect = ZooKeeperServer.handle_connect

    def forgetful(self: ZooKeeperServer, conn: object, request: object) -> bool:
        request.last_zxid_seen = 0  # type: ignore[attr-defined]  # the broken build: no zxid check
        return handle_connect(self, conn, request)  # type: ignore[arg-type]

    monkeypatch.setattr(ZooKeeperServer, "handle_connect", forgetful)
    reports = [run(seed).check() for seed in range(3)]
    assert any(not r.ok for r in reports), "a stale read after a session moved went unnoticed"
    bad = next(r for r in reports if not r.ok)
    assert any(a.kind in ("session-consistency", "session-zxid") for a in bad.anomalies), bad.report()
