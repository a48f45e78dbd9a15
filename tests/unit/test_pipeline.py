"""The commit pipeline without sockets: group commit, zxid order, and refusing writes after a storage failure."""

from __future__ import annotations

import errno

import trio
import trio.testing

from zkpy.errors import Code
from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.server.pipeline import CommitPipeline
from zkpy.tree.apply import Applier, Result
from zkpy.tree.datatree import DataTree
from zkpy.tree.txn import Txn
from zkpy.tree.watches import WatchManager


def _create(path: str) -> bytes:
    return encode(CreateRequest(path, b"v", OPEN_ACL_UNSAFE, 0))


async def test_writes_queued_during_a_persist_become_one_batch_applied_in_order() -> None:
    batches: list[list[int]] = []
    release = trio.Event()

    async def slow_persist(txns: list[Txn]) -> None:
        batches.append([t.zxid for t in txns])
        if len(batches) == 1:
            await release.wait()

    tree = DataTree()
    pipeline = CommitPipeline(Applier(tree), WatchManager(), slow_persist)
    results: list[Result] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        pipeline.submit(1, 1, OpCode.CREATE, _create("/first"), callback=results.append)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(50):  # arrive while the first batch is being persisted
            pipeline.submit(1, i + 2, OpCode.CREATE, _create(f"/n{i}"), callback=results.append)
        await trio.testing.wait_all_tasks_blocked()
        assert results == [] and "/first" not in tree.nodes  # nothing applied before it is durable
        release.set()
        await pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert batches == [[1], list(range(2, 52))]
    assert [r.zxid for r in results] == list(range(1, 52))
    assert all(r.err == 0 for r in results) and tree.last_zxid == 51


async def test_a_failed_persist_applies_nothing_and_refuses_later_writes() -> None:
    async def full_disk(txns: list[Txn]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    tree = DataTree()
    pipeline = CommitPipeline(Applier(tree), WatchManager(), full_disk)
    results: list[Result] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        pipeline.submit(1, 1, OpCode.CREATE, _create("/a"), callback=results.append)
        await pipeline.wait_idle()
        pipeline.submit(1, 2, OpCode.SET_DATA, encode(SetDataRequest("/", b"x", -1)), callback=results.append)
        await pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert [r.err for r in results] == [Code.SYSTEM_ERROR, Code.SYSTEM_ERROR]
    assert "/a" not in tree.nodes and tree.last_zxid == 0
    assert pipeline.write_error is not None and "No space left" in pipeline.write_error


async def test_a_malformed_create_session_fails_alone_and_the_server_goes_on() -> None:
    """A createSession without its timeout (only a forged learner sends one; the leader refuses
    it now) fails alone; the server's session bookkeeping is left alone."""
    from zkpy.server.config import parse_config
    from zkpy.server.node import ZooKeeperServer

    async def persist(txns: list[Txn]) -> None:
        pass

    config = parse_config("tickTime=2000\ndataDir=/tmp\nclientPort=2181\n", "/", source="test.cfg")
    server = ZooKeeperServer(config, persist=persist, tree=DataTree())
    results: list[Result] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pipeline.run)
        server.pipeline.submit(7, 0, OpCode.CREATE_SESSION, b"\x00", callback=results.append)
        server.pipeline.submit(1, 1, OpCode.CREATE, _create("/after"), callback=results.append)
        await server.pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert results[0].err != 0 and results[1].err == 0
    assert 7 not in server.tree.sessions and "/after" in server.tree.nodes


async def test_pipelined_batches_persist_together_and_apply_strictly_in_order() -> None:
    """A leader's persist step (propose, wait for the quorum) may run for several batches at
    once: the next batch is numbered after the last one handed out, at most max_in_flight are
    out, and each is applied and answered only after its own persist and every earlier batch's."""
    calls: list[list[int]] = []
    releases: dict[int, trio.Event] = {}
    out = [0, 0]  # now, most at once

    async def quorum(txns: list[Txn]) -> None:
        calls.append([t.zxid for t in txns])
        out[0] += 1
        out[1] = max(out[1], out[0])
        releases[txns[0].zxid] = done = trio.Event()
        await done.wait()
        out[0] -= 1

    tree = DataTree()
    pipeline = CommitPipeline(Applier(tree), WatchManager(), quorum, max_batch=2, max_in_flight=3)
    results: list[Result] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        for i in range(10):
            pipeline.submit(1, i + 1, OpCode.CREATE, _create(f"/n{i}"), callback=results.append)
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [[1, 2], [3, 4], [5, 6]]  # three out at once, numbered one after another
        releases[5].set()  # the third completes first: nothing may be applied yet
        releases[3].set()
        await trio.testing.wait_all_tasks_blocked()
        assert results == [] and tree.last_zxid == 0
        releases[1].set()
        await trio.testing.wait_all_tasks_blocked()
        assert [r.zxid for r in results] == [1, 2, 3, 4, 5, 6]
        assert calls[3:] == [[7, 8], [9, 10]]
        releases[7].set()
        releases[9].set()
        await pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert [r.zxid for r in results] == list(range(1, 11)) and out[1] == 3
    assert tree.last_zxid == 10 and all(f"/n{i}" in tree.nodes for i in range(10))


async def test_a_batch_is_capped_by_bytes_as_well_as_by_count() -> None:
    """In an ensemble a batch is one proposal frame: a burst of large writes must not build one
    past the peers' frame limit. A single write larger than the cap still goes, alone."""
    batches: list[int] = []

    async def persist(txns: list[Txn]) -> None:
        batches.append(len(txns))

    tree = DataTree()
    pipeline = CommitPipeline(Applier(tree), WatchManager(), persist, max_batch_bytes=10_000)
    async with trio.open_nursery() as nursery:
        for i in range(7):  # queued before the pipeline runs: one batch but for the cap
            data = b"v" * (20_000 if i == 6 else 4_000)
            pipeline.submit(1, i + 1, OpCode.CREATE, encode(CreateRequest(f"/n{i}", data, OPEN_ACL_UNSAFE, 0)))
        nursery.start_soon(pipeline.run)
        await pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert batches == [2, 2, 2, 1] and tree.last_zxid == 7


async def test_a_failed_batch_among_pipelined_ones_refuses_it_and_every_later_one() -> None:
    """breaker4 (issue 17 review): with batches in flight, one whose persist fails must not let a
    later batch that persisted meanwhile be applied or answered (its zxids follow a hole), nothing
    after the failure is persisted again, the numbers handed out are not applied, and the
    pipeline's bookkeeping (prep's InFlight, wait_idle) ends clean; and a batch BEFORE the failed
    one, durable on its own, is still applied and answered. Fails before breaker4's fix: the
    first batch, whose persist completed after the second's failed, was refused (SYSTEM_ERROR,
    not applied) since _finish looked only at the pipeline-wide write_error. Latent in zkpy
    today: only the leader pipelines, and its replicate step does not raise."""
    calls: list[list[int]] = []
    releases: dict[int, trio.Event] = {}

    async def quorum(txns: list[Txn]) -> None:
        calls.append([t.zxid for t in txns])
        releases[txns[0].zxid] = done = trio.Event()
        await done.wait()
        if txns[0].zxid == 3:
            raise OSError(errno.EIO, "fsync failed")

    tree = DataTree()
    pipeline = CommitPipeline(Applier(tree), WatchManager(), quorum, max_batch=2, max_in_flight=3)
    results: list[Result] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        for i in range(6):
            pipeline.submit(1, i + 1, OpCode.CREATE, _create(f"/n{i}"), callback=results.append)
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [[1, 2], [3, 4], [5, 6]]
        releases[5].set()  # the batch after the failing one is durable on its quorum first
        releases[3].set()  # then the failure
        releases[1].set()
        await pipeline.wait_idle()
        for i in range(6, 8):
            pipeline.submit(1, i + 1, OpCode.CREATE, _create(f"/n{i}"), callback=results.append)
        await pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert len(calls) == 3  # nothing persisted after the failure
    assert [(r.zxid, r.err) for r in results[:2]] == [(1, 0), (2, 0)]
    assert [r.err for r in results[2:]] == [int(Code.SYSTEM_ERROR)] * 6
    assert tree.last_zxid == 2 and "/n2" not in tree.nodes and "/n4" not in tree.nodes
    assert not pipeline.in_flight.sessions and not pipeline.in_flight.paths


async def test_a_further_batch_goes_out_beside_those_in_flight_only_once_it_is_worth_one() -> None:
    """Every batch costs every member the same fixed work, so a pipelining leader must not cut the
    clients' outstanding writes into many small batches: while batches are in flight, the next
    waits for min_pipelined_batch writes (or until none is in flight). Fails before
    this rule: each write queued while the first batch was out went as a batch of its own
    ([[1], [2], [3], [4]] with 3 writes, 512 outstanding writes as batches of ~70, not ~230)."""
    calls: list[list[int]] = []
    releases: dict[int, trio.Event] = {}

    async def quorum(txns: list[Txn]) -> None:
        calls.append([t.zxid for t in txns])
        releases[txns[0].zxid] = done = trio.Event()
        await done.wait()

    tree = DataTree()
    pipeline = CommitPipeline(Applier(tree), WatchManager(), quorum, max_in_flight=4)
    pipeline.min_pipelined_batch = 3
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        pipeline.submit(1, 1, OpCode.CREATE, _create("/n1"))  # nothing in flight: goes alone, at once
        await trio.testing.wait_all_tasks_blocked()
        for i in (2, 3):
            pipeline.submit(1, i, OpCode.CREATE, _create(f"/n{i}"))
            await trio.testing.wait_all_tasks_blocked()
        assert calls == [[1]]  # two queued: not worth a second batch beside the first
        pipeline.submit(1, 4, OpCode.CREATE, _create("/n4"))
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [[1], [2, 3, 4]]  # three: worth one
        pipeline.submit(1, 5, OpCode.CREATE, _create("/n5"))
        await trio.testing.wait_all_tasks_blocked()
        releases[1].set()
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [[1], [2, 3, 4]]  # one still in flight
        releases[2].set()  # none in flight: what waited goes, however small
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [[1], [2, 3, 4], [5]]
        releases[5].set()
        await pipeline.wait_idle()
        nursery.cancel_scope.cancel()
    assert tree.last_zxid == 5
