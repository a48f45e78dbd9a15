"""The simulated disk keeps exactly what DurableStore would keep across a crash, in virtual time."""

from __future__ import annotations

import errno
import random
from typing import Any

import pytest
import trio

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, OpCode, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.replication.epochs import ACCEPTED, CURRENT, EpochFileError
from zkpy.storage.errors import StorageError
from zkpy.testing.disk import MemoryDisk, MemoryStore
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn, session_body

SESSION = 0x77


def make_txns(first: int, count: int, epoch: int = 1) -> list[Txn]:
    """Transactions with zxids epoch<<32 | first.., a session, nodes and data changes mixed."""
    txns = []
    for n in range(first, first + count):
        zxid = epoch << 32 | n
        if n == 1:
            txns.append(Txn(zxid, 1000, SESSION, 0, OpCode.CREATE_SESSION, session_body(5000, b"p" * 16)))
        elif n % 3 == 0:
            body = encode(SetDataRequest(f"/n{n - 1}", b"v%d" % n, -1))
            txns.append(Txn(zxid, 1000 + n, SESSION, n, OpCode.SET_DATA, body))
        else:
            body = encode(CreateRequest(f"/n{n}", b"d%d" % n, OPEN_ACL_UNSAFE, 0))
            txns.append(Txn(zxid, 1000 + n, SESSION, n, OpCode.CREATE2, body))
    return txns


def applied(txns: list[Txn]) -> DataTree:
    tree = DataTree()
    applier = Applier(tree)
    for txn in txns:
        applier.apply(txn)
    return tree


def canon(tree: DataTree) -> Any:
    """The tree's whole content, independent of node order."""
    header, acls, *chunks = tree_items(tree)
    nodes = {row[0]: [*row[:2], acls[1][row[2]], *row[3:]] for chunk in chunks for row in chunk[1]}
    return header[2], sorted(header[3]), nodes


def fresh(disk: MemoryDisk, seed: int = 1, **kw: Any) -> MemoryStore:
    """A server (re)starting on `disk`."""
    return MemoryStore(disk, random.Random(seed), **kw)


async def test_persist_then_recover_equals_applying(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    store = fresh(disk)
    assert canon(store.recover()) == canon(DataTree())
    txns = make_txns(1, 30)
    start = trio.current_time()
    for i in range(0, 30, 7):
        await store.persist(txns[i : i + 7])
    assert trio.current_time() > start  # fsyncs take virtual time
    assert disk.fsyncs == 5 and [z for z, _ in disk.log] == [t.zxid for t in txns]
    seen: list[int] = []
    tree = fresh(disk).recover(lambda zxid, raw: seen.append(zxid))
    assert canon(tree) == canon(applied(txns))
    assert seen == [t.zxid for t in txns]


async def test_persist_refuses_zxids_that_do_not_follow(autojump_clock: trio.testing.MockClock) -> None:
    store = fresh(MemoryDisk())
    store.recover()
    txns = make_txns(1, 4)
    await store.persist(txns[2:])
    with pytest.raises(ValueError):
        await store.persist(txns[:2])
    with pytest.raises(ValueError):
        await store.persist([txns[1], txns[0]])
    assert [z for z, _ in store.disk.log] == [t.zxid for t in txns[2:]]


async def test_cancelled_persist_leaves_nothing(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    store = fresh(disk)
    store.recover()
    await store.persist(make_txns(1, 2))
    with trio.move_on_after(0.0001):  # the crash comes before the fsync ends (it takes >= 0.5 ms)
        await store.persist(make_txns(3, 5))
    assert [z & 0xFFFFFFFF for z, _ in disk.log] == [1, 2]
    assert canon(fresh(disk).recover()) == canon(applied(make_txns(1, 2)))


async def test_failed_fsync_refuses_writes_until_recovered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = MemoryDisk(fail_next_fsync=1)
    store = fresh(disk)
    store.recover()
    with pytest.raises(StorageError) as raised:
        await store.persist(make_txns(1, 2))
    assert isinstance(raised.value.__cause__, OSError)
    assert disk.log == []  # (this seed keeps nothing of the failed batch; others keep a prefix)
    with pytest.raises(StorageError):  # as TxnLog: what is on disk after a failed fsync is unknown
        await store.persist(make_txns(1, 2))
    store.close_log()
    store.recover()
    await store.persist(make_txns(1, 2))
    assert len(disk.log) == 2


async def test_truncate_after(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    store = fresh(disk)
    store.recover()
    txns = make_txns(1, 10)
    await store.persist(txns)
    await store.truncate_after(txns[5].zxid)
    assert [z for z, _ in disk.log] == [t.zxid for t in txns[:6]]
    # The next epoch's transactions follow the cut.
    newer = make_txns(7, 3, epoch=2)
    await store.persist(newer)
    store.close_log()
    assert canon(store.recover()) == canon(applied(txns[:6] + newer))
    with trio.move_on_after(0.0001):  # a crash during the truncation: nothing is cut
        await store.truncate_after(0)
    assert len(disk.log) == 9


async def test_install_snapshot_then_recover(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    store = fresh(disk)
    store.recover()
    await store.persist(make_txns(1, 5))  # our own history, replaced by the leader's
    leader = applied(make_txns(1, 12, epoch=2))
    items = list(tree_items(leader))
    zxid = leader.last_zxid
    await store.install_snapshot(zxid, items)
    assert store.last_snapshot_zxid == zxid and disk.log == []
    leader.nodes["/n2"].data = b"changed after the snapshot was taken"
    items[0][2] = -5  # the caller's items are its own
    more = make_txns(13, 4, epoch=2)
    await store.persist(more)
    restarted = fresh(disk)
    tree = restarted.recover()
    assert restarted.last_snapshot_zxid == zxid
    assert canon(tree) == canon(applied(make_txns(1, 12, epoch=2) + more))
    assert restarted.metrics()["last_snapshot_zxid"] == f"0x{zxid:x}"


async def test_a_snap_below_our_own_snapshot_is_what_recovery_loads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ensemble safety item 1, on the simulated disk as on DurableStore: snapshots above the SNAP
    the leader sent are deleted with it. Fails before that change (recovery loaded our own)."""
    disk = MemoryDisk()
    store = fresh(disk, snap_count=2)
    tree = store.recover()
    ours = make_txns(1, 9, epoch=3)  # a history the ensemble cut, snapshotted here
    await store.persist(ours)
    store.maybe_snapshot(applied(ours))
    assert max(disk.snapshots) == ours[-1].zxid
    leader = applied(make_txns(1, 4, epoch=2))
    await store.install_snapshot(leader.last_zxid, list(tree_items(leader)))
    tree = fresh(disk).recover()
    assert canon(tree) == canon(leader)


async def test_crash_inside_install_snapshot_leaves_snapshot_and_old_log(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = MemoryDisk()
    store = fresh(disk, fsync_delay=(0.001, 0.001))
    store.recover()
    await store.persist(make_txns(1, 3))
    leader = applied(make_txns(1, 6))
    with trio.move_on_after(0.0015):  # after the snapshot's fsync, before the log is dropped
        await store.install_snapshot(leader.last_zxid, list(tree_items(leader)))
    assert list(disk.snapshots) == [leader.last_zxid] and len(disk.log) == 3
    assert canon(fresh(disk).recover()) == canon(leader)


async def test_maybe_snapshot_then_recover(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    store = fresh(disk, snap_count=10)
    tree = store.recover()
    applier = Applier(tree)
    txns = make_txns(1, 40)
    for i in range(0, 40, 3):
        batch = txns[i : i + 3]
        await store.persist(batch)
        for txn in batch:
            applier.apply(txn)
        store.maybe_snapshot(tree)
    assert 3 <= len(disk.snapshots) <= 8  # one every 6..10 transactions, checked after batches of 3
    assert store.last_snapshot_zxid == max(disk.snapshots)
    snap = max(disk.snapshots)
    tree.nodes["/n2"].data = b"not durable"  # the snapshot is a copy
    replayed: list[int] = []
    restarted = fresh(disk)
    recovered = restarted.recover(lambda zxid, raw: replayed.append(zxid))
    assert canon(recovered) == canon(applied(txns))
    assert replayed == [t.zxid for t in txns if t.zxid > snap]
    assert restarted.last_snapshot_zxid == snap


async def test_epochs_survive_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    epochs = fresh(disk).epochs()
    assert (epochs.accepted, epochs.current) == (0, 0)
    epochs.make_current(2)
    epochs.accept(3)
    again = fresh(disk).epochs()
    assert (again.accepted, again.current) == (3, 2)
    assert disk.epochs == {ACCEPTED: 3, CURRENT: 2}
    disk.epochs[CURRENT] = 9
    with pytest.raises(EpochFileError):
        fresh(disk).epochs()


async def test_same_seed_same_fsync_times(autojump_clock: trio.testing.MockClock) -> None:
    async def run(seed: int) -> list[float]:
        store = fresh(MemoryDisk(), seed)
        store.recover()
        times = []
        for txn in make_txns(1, 20):
            await store.persist([txn])
            times.append(trio.current_time())
        start = times[0]
        return [round(t - start, 9) for t in times]  # runs start at different clock readings

    assert await run(5) == await run(5)
    assert await run(5) != await run(6)


async def test_a_slow_spell_makes_every_fsync_slow_until_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = MemoryDisk()
    store = fresh(disk)
    store.recover()
    disk.slow_until = trio.current_time() + 6.0
    start = trio.current_time()
    await store.persist(make_txns(1, 2))
    await store.truncate_after(1 << 32 | 1)  # every durable step is slow, not only log appends
    assert 2 * 0.5 <= trio.current_time() - start <= 2 * 3.0
    assert disk.slow_fsyncs == 2
    await trio.sleep_until(disk.slow_until)
    start = trio.current_time()
    await store.persist(make_txns(2, 2))
    assert trio.current_time() - start < 0.01
    assert disk.slow_fsyncs == 2
    assert [z & 0xFFFFFFFF for z, _ in disk.log] == [1, 2, 3]


async def test_a_full_disk_refuses_log_writes_with_enospc(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    store = fresh(disk)
    store.recover()
    disk.full_until = trio.current_time() + 1.0
    with pytest.raises(StorageError, match="No space left on device") as raised:
        await store.persist(make_txns(1, 2))
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.ENOSPC
    assert disk.log == [] and disk.full_refusals == 1
    await trio.sleep(2.0)  # space again, but as after EIO the log refuses writes until recovered
    with pytest.raises(StorageError):
        await store.persist(make_txns(1, 2))
    store.close_log()
    store.recover()
    await store.persist(make_txns(1, 2))
    assert len(disk.log) == 2 and disk.full_refusals == 1


# -- what a crash leaves of an unfsynced write, and failing metadata writes -----------------------


async def _crash_mid_write(disk: MemoryDisk, seed: int) -> str | None:
    """Two durable records, then a batch of five whose fsync a crash interrupts: what is left."""
    store = fresh(disk)
    store.recover()
    await store.persist(make_txns(1, 2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.persist, make_txns(3, 5))
        await trio.sleep(0.0001)  # inside the fsync (it takes >= 0.5 ms): the process dies
        left = disk.crash(random.Random(seed))  # (as SimCluster.crash: before its task stops)
        nursery.cancel_scope.cancel()
    return left


async def test_a_crash_mid_write_leaves_none_or_a_prefix_of_the_batch_never_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """lazyfs's lose-unfsynced-writes half the time; else a prefix the kernel wrote back, maybe
    with a torn record after it that recovery cuts off. Over seeds all three happen, and what
    recovery gives is always the durable records plus a whole prefix of the batch."""
    outcomes = set()
    for seed in range(40):
        disk = MemoryDisk()
        left = await _crash_mid_write(disk, seed)
        assert left is not None and disk.unfsynced is None
        outcomes.add("lost" if "lost" in left else "torn" if "torn" in left else "prefix")
        tree = fresh(disk).recover()
        kept = tree.last_zxid & 0xFFFFFFFF
        assert 2 <= kept <= 7
        assert canon(tree) == canon(applied(make_txns(1, kept)))
        assert not disk.torn_tail  # recovery cut the torn record
        assert [z & 0xFFFFFFFF for z, _ in disk.log] == list(range(1, kept + 1))
    assert outcomes == {"lost", "prefix", "torn"}


async def test_a_crash_with_no_write_in_flight_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = MemoryDisk()
    store = fresh(disk)
    store.recover()
    await store.persist(make_txns(1, 3))
    assert disk.crash(random.Random(1)) is None
    assert len(disk.log) == 3


async def test_a_failed_fsync_may_leave_part_of_its_batch(autojump_clock: trio.testing.MockClock) -> None:
    """EIO after the kernel wrote some pages back: a prefix of the failed batch is on the disk
    (never acknowledged; the server recovers it as a logged, uncommitted tail)."""
    kept = set()
    for seed in range(30):
        disk = MemoryDisk(fail_next_fsync=1)
        store = fresh(disk, seed)
        store.recover()
        with pytest.raises(StorageError):
            await store.persist(make_txns(1, 4))
        kept.add(len(disk.log))
        assert [z & 0xFFFFFFFF for z, _ in disk.log] == list(range(1, len(disk.log) + 1))
    assert 0 in kept and len(kept) > 2


async def test_failing_snapshot_writes(autojump_clock: trio.testing.MockClock) -> None:
    """A SNAP install whose snapshot write fails raises OSError and changes nothing on the disk; a
    periodic snapshot that fails is just not there (DurableStore's forked writer logs it)."""
    disk = MemoryDisk(fail_next_snapshot=2)
    store = fresh(disk, snap_count=2)
    store.recover()
    await store.persist(make_txns(1, 3))
    before = (list(disk.log), dict(disk.snapshots))
    with pytest.raises(OSError) as raised:
        await store.install_snapshot(9 << 32 | 1, list(tree_items(applied(make_txns(1, 5)))))
    assert raised.value.errno == errno.EIO
    assert (disk.log, disk.snapshots) == before
    store.maybe_snapshot(applied(make_txns(1, 3)))
    assert disk.snapshots == {} and disk.failed_writes == 2
    store.maybe_snapshot(applied(make_txns(1, 3)))  # (not due yet after the failed one)
    await store.persist(make_txns(4, 3))
    store.maybe_snapshot(applied(make_txns(1, 6)))
    assert list(disk.snapshots) == [1 << 32 | 6]


async def test_a_failing_epoch_write_keeps_the_old_epoch(autojump_clock: trio.testing.MockClock) -> None:
    disk = MemoryDisk()
    epochs = fresh(disk).epochs()
    epochs.accept(3)
    disk.fail_next_epoch = 1
    with pytest.raises(OSError):
        epochs.make_current(4)
    assert (epochs.accepted, epochs.current) == (3, 0)  # the promise made is the one on disk
    assert fresh(disk).epochs().accepted == 3
    epochs.make_current(4)
    assert (disk.epochs[ACCEPTED], disk.epochs[CURRENT]) == (4, 4)


async def test_a_failing_marker_write_refuses_the_discard_and_the_resync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = MemoryDisk(fail_next_marker=1)
    store = fresh(disk)
    store.recover()
    await store.persist(make_txns(1, 3))
    with pytest.raises(OSError):
        store.discard_damaged("bit flip")
    assert disk.resync_marker is None and len(disk.log) == 3  # nothing was moved aside
    store.discard_damaged("bit flip")
    disk.fail_next_marker = 1
    with pytest.raises(OSError):
        store.resynced()
    assert store.needs_resync  # still marked: it does not vote yet
    store.resynced()
    assert not store.needs_resync
