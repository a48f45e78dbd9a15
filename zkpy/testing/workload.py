"""What simulated clients do and what the nemesis does to the ensemble meanwhile, both drawn
from the run's seed."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from zkpy.jute.ops import CreateRequest, OpCode, PathRequest, PathWatchRequest, SetDataRequest
from zkpy.jute.records import ACL, Id
from zkpy.testing.history import History, from_simclient
from zkpy.testing.simclient import ConnectionLost, SessionExpired, SimClient

if TYPE_CHECKING:
    from zkpy.testing.cluster import SimCluster

OPEN = [ACL(31, Id("world", "anyone"))]


def new_client(cluster: SimCluster, name: str) -> SimClient:
    return SimClient(
        name, cluster.network.host(name), cluster.client_addresses, random.Random(cluster.rng.getrandbits(64))
    )


async def writer(cluster: SimCluster, name: str, until: float) -> int:
    """Create /name-N nodes one after another until `until`; returns how many were acknowledged.
    A connection lost mid-request leaves that create's outcome unknown: it moves on to N+1."""
    client = new_client(cluster, name)
    acked = 0
    n = 0
    while trio.current_time() < until:
        try:
            if client._stream is None:
                await client.connect(until=until)
            path = f"/{name}-{n:05d}"
            n += 1
            op = await client.record(
                "create", OpCode.CREATE, CreateRequest(path, path.encode(), OPEN, 0), path
            )
        except SessionExpired:
            continue  # a new session next time round
        except ConnectionLost:
            await trio.sleep(0.05)
            continue
        if op.outcome == "ok":
            cluster.invariants.acknowledged_write(op)
            acked += 1
    await client.close()
    return acked


REGISTERS = ("/r0", "/r1", "/r2")


async def make_registers(cluster: SimCluster) -> None:
    client = new_client(cluster, "setup")
    while True:
        try:
            await client.connect()
            for path in REGISTERS:
                op = await client.record(
                    "create", OpCode.CREATE, CreateRequest(path, b"0", OPEN, 0), path, b"0"
                )
                if op.outcome == "ok":
                    cluster.invariants.acknowledged_write(op)
            await client.close()
            return
        except (ConnectionLost, SessionExpired):
            await trio.sleep(0.1)


async def register_client(cluster: SimCluster, name: str, until: float) -> None:
    """Compare-and-set on a few znodes: read the value and version, write a new value at that
    version; now and then a sync first. Every operation goes into the client's history."""
    client = new_client(cluster, name)
    cluster.clients.append(client)
    rng = client.rng
    n = 0
    while trio.current_time() < until:
        try:
            if client._stream is None:
                await client.connect(until=until)  # then the run heals: no point trying on
            path = rng.choice(REGISTERS)
            if rng.random() < 0.2:
                await client.record("sync", OpCode.SYNC, PathRequest(path), path)
            read = await client.record("get", OpCode.GET_DATA, PathWatchRequest(path, False), path)
            if read.outcome != "ok":
                continue
            n += 1
            value = f"{name}-{n}".encode()
            version = read.result.stat.version
            op = await client.record(
                "set", OpCode.SET_DATA, SetDataRequest(path, value, version), path, value, version
            )
            if op.outcome == "ok":
                cluster.invariants.acknowledged_write(op)
        except SessionExpired:
            continue
        except ConnectionLost:
            await trio.sleep(0.05)
    await client.close()


def check_history(cluster: SimCluster) -> None:
    """Writes linearizable, reads sequentially consistent per session, sync then read fresh."""
    ops = [op for client in cluster.clients for op in client.history]
    history = History(from_simclient(ops), initial={path: (b"0", 0) for path in REGISTERS})
    result = history.check()
    if not result.ok:
        raise AssertionError(f"seed {cluster.seed}: history check failed\n{result.report()}")


async def one_write(cluster: SimCluster, name: str, timeout: float) -> None:
    """Liveness: a write through any server succeeds within `timeout` of virtual time."""
    client = new_client(cluster, name)
    with trio.move_on_after(timeout):
        while True:
            try:
                if client._stream is None:
                    await client.connect()
                op = await client.record(
                    "create", OpCode.CREATE, CreateRequest(f"/{name}", b"", OPEN, 0), f"/{name}"
                )
            except (ConnectionLost, SessionExpired):
                await trio.sleep(0.1)
                continue
            if op.outcome == "ok":
                cluster.invariants.acknowledged_write(op)
                await client.close()
                return
            await trio.sleep(0.1)
    raise AssertionError(f"seed {cluster.seed}: no write succeeded within {timeout}s after healing")


FAULTS = (
    "disk_fail",
    "damage_disk",
    "crash",
    "crash_leader",
    "crash_quorum",
    "restart",
    "restart",
    "isolate_leader",
    "partition",
    "one_way",
    "heal",
)


async def nemesis(cluster: SimCluster, until: float, rng: random.Random) -> None:
    """Random faults, any of them, at random moments; a crashed server comes back later."""
    sids = sorted(cluster.servers)
    while trio.current_time() < until:
        await trio.sleep(rng.uniform(0.1, 1.5))
        fault = rng.choice(FAULTS)
        if fault == "crash":
            cluster.crash(rng.choice(sids))
        elif fault == "crash_leader":
            leader = cluster.leader()
            if leader is not None:
                cluster.crash(leader)
        elif fault == "disk_fail":  # the next fsyncs fail with EIO (then the disk works again)
            sid = rng.choice(sids)
            cluster.servers[sid].disk.fail_next_fsync = rng.randint(1, 3)
            cluster.note(f"disk_fail s{sid}")
        elif fault == "damage_disk":
            # kill -9, then bit flips that its next start finds. At most one server at a time
            # may be without its data: two would leave a 3-server ensemble no quorum of voters.
            disks = [cluster.servers[sid].disk for sid in sids]
            if not any(d.damaged or d.resync_marker is not None for d in disks):
                sid = rng.choice(sids)
                what = rng.choice(("log", "newest snapshot", "every snapshot"))
                cluster.crash(sid)
                cluster.servers[sid].disk.damage(what)
                cluster.note(f"damage_disk s{sid} ({what})")
        elif fault == "crash_quorum":  # a power cut of most of the ensemble at one instant
            for sid in rng.sample(sids, len(sids) // 2 + 1):
                cluster.crash(sid)
        elif fault == "restart":
            down = [sid for sid in sids if not cluster.servers[sid].alive]
            if down:
                await cluster.start(rng.choice(down))
        elif fault == "isolate_leader":
            leader = cluster.leader()
            if leader is not None:
                cluster.network.isolate(f"s{leader}")
                cluster.note(f"isolate s{leader}")
        elif fault == "partition":
            hosts = [f"s{sid}" for sid in sids]
            rng.shuffle(hosts)
            cut = rng.randint(1, len(hosts) - 1)
            cluster.network.partition(set(hosts[:cut]), set(hosts[cut:]))
            cluster.note(f"partition {sorted(hosts[:cut])} | {sorted(hosts[cut:])}")
        elif fault == "one_way":
            a, b = rng.sample(sids, 2)
            cluster.network.cut(f"s{a}", f"s{b}")
            cluster.note(f"cut s{a} -> s{b}")
        else:
            cluster.network.heal()
            cluster.note("heal")


async def recover_everything(cluster: SimCluster) -> None:
    cluster.network.heal()
    cluster.note("heal all")
    for sid, server in cluster.servers.items():
        if not server.alive:
            await cluster.start(sid)
    await cluster.wait_all_serving(timeout=120.0)


def faulty_scenario(duration: float) -> Callable[[SimCluster], Awaitable[None]]:
    """Two writers and the nemesis for `duration` virtual seconds, then heal everything: a write
    must succeed again, every server catch up, and the final checks hold."""

    async def scenario(cluster: SimCluster) -> None:
        await cluster.wait_all_serving()
        await make_registers(cluster)
        until = trio.current_time() + duration
        rng = random.Random(cluster.rng.getrandbits(64))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, cluster, "c1", until)
            nursery.start_soon(writer, cluster, "c2", until)
            nursery.start_soon(register_client, cluster, "r1", until)
            nursery.start_soon(register_client, cluster, "r2", until)
            nursery.start_soon(nemesis, cluster, until, rng)
        await recover_everything(cluster)
        await one_write(cluster, "after-heal", timeout=60.0)
        await cluster.wait_until(lambda: _all_caught_up(cluster), 30.0, "every server caught up")
        cluster.check_trees()
        cluster.check_acknowledged()
        check_history(cluster)

    return scenario


def _all_caught_up(cluster: SimCluster) -> bool:
    zxids = {s.peer.tree.last_zxid for s in cluster.servers.values() if s.peer is not None and s.serving}
    return len(zxids) == 1
