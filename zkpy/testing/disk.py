"""A simulated server's disk: the durable log, snapshots and epochs in memory, under virtual time.

`MemoryStore` is `zkpy.server.durable.DurableStore` (the specification) with files replaced by a
`MemoryDisk`, so the real ensemble code runs unchanged inside the deterministic simulator. What
matters for finding bugs is *when* things become durable, so that is modelled exactly:

- every write takes a random "fsync" time on trio's (mock) clock, and only when it is over is
  the change durable on the `MemoryDisk`. A crash of the simulated server (its tasks cancelled)
  while a log write is in flight leaves of it what a crash before fsync can (`MemoryDisk.crash`):
  half the time nothing (Jepsen's lazyfs `lose-unfsynced-writes`), else a prefix of its records
  (the kernel had written some back), sometimes followed by a torn record (its first sectors
  only), which recovery cuts off as `zkpy.storage.txnlog.recover` cuts a torn tail. Never more
  than was written, never a record that is not whole;
- a snapshot install is two durable steps (the snapshot, then dropping the old log), so a crash
  between them leaves the snapshot beside the old log, exactly as the real one can;
- after a failed fsync the log refuses every further write until it is recovered again, as
  `zkpy.storage.txnlog.TxnLog` does (the kernel may have dropped the dirty pages).

Disk faults are fields of the `MemoryDisk`, set by a test or the nemesis: the next log writes
fail their fsync with EIO (`fail_next_fsync`); every fsync is slow (0.5-3 s, say) until a moment
(`slow_until`); log writes fail at once with ENOSPC, the disk being full, until a moment
(`full_until`; snapshots and epoch files are not refused: only the log's appends are modelled);
a failed log fsync may still have put part of its batch on the disk (the kernel wrote some pages
back before the error), as with a real EIO. Other writes fail too: the next snapshots
(`fail_next_snapshot`: a SNAP install raises OSError, a periodic snapshot is not written, as a
forked writer that failed), epoch files (`fail_next_epoch`: the write raises OSError and the value
stays what it was) and the resync marker (`fail_next_marker`: setting or clearing it raises).

The `MemoryDisk` is what outlives a crash: restart a server by building a new `MemoryStore` on the
same disk. All randomness comes from the `random.Random` handed in, so one seed gives one run.
"""

from __future__ import annotations

import errno
import io
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio

from zkpy.replication.epochs import Epochs
from zkpy.server.latency import Summary
from zkpy.storage.errors import CorruptLogError, CorruptSnapshotError, StorageError
from zkpy.storage.snapshot import read_stream, write_stream
from zkpy.storage.txnlog import follows
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import load_tree, tree_items
from zkpy.tree.txn import Txn


@dataclass
class MemoryDisk:
    """What survives a crash of one simulated server: only what was made durable."""

    log: list[tuple[int, bytes]] = field(default_factory=list)  # (zxid, packed txn), zxid-increasing
    snapshots: dict[int, list[Any]] = field(default_factory=dict)  # zxid -> tree items, each complete
    epochs: dict[str, int] = field(default_factory=dict)  # "acceptedEpoch" / "currentEpoch"
    fsyncs: int = 0  # completed durable writes (log batches, truncations, snapshots, epochs)
    # Fault hook: the next this-many log writes fail their fsync (after the fsync's time has passed).
    fail_next_fsync: int = 0
    # Fault hook: until this virtual time every fsync takes a draw from `slow_fsync` seconds.
    slow_until: float = -math.inf
    slow_fsync: tuple[float, float] = (0.5, 3.0)
    # While slow: also this many bytes a second at most (a throttled device), so a write rate above
    # it makes the server fall behind however large its group commits grow. None: no such limit.
    slow_bandwidth: float | None = None
    # Fault hook: until this virtual time the disk is full: log writes fail with ENOSPC, at once.
    full_until: float = -math.inf
    slow_fsyncs: int = 0  # fsyncs the slow-disk fault slowed
    full_refusals: int = 0  # log writes refused for want of space
    # Fault hooks, damage that recovery finds (MemoryStore.recover): a bit flip in a logged record
    # that is not in the newest batch, and snapshots whose checksums fail (by zxid).
    log_damaged: bool = False
    damaged_snapshots: set[int] = field(default_factory=set)
    resync_marker: str | None = None  # DurableStore's resyncNeeded file
    set_aside: int = 0  # how many times damaged data was moved aside
    # The log batch written but not fsynced yet (its write in flight): what a crash leaves of it.
    unfsynced: list[tuple[int, bytes]] | None = None
    torn_tail: bool = False  # the log ends in a torn record, which recovery cuts off
    kept_unfsynced: int = 0  # unfsynced or failed records a crash or EIO left on the disk
    torn_writes: int = 0
    # Fault hooks: the next this-many snapshot / epoch-file / resync-marker writes fail with EIO.
    fail_next_snapshot: int = 0
    fail_next_epoch: int = 0
    fail_next_marker: int = 0
    failed_writes: int = 0  # snapshot, epoch and marker writes failed by those hooks

    @property
    def damaged(self) -> bool:
        return (self.log_damaged and len(self.log) >= 2) or bool(self.damaged_snapshots & set(self.snapshots))

    def crash(self, rng: random.Random) -> str | None:
        """The server died: what is left of its unfsynced log write (see the module docstring);
        None when none was in flight."""
        batch, self.unfsynced = self.unfsynced, None
        if not batch:
            return None
        if rng.random() < 0.5:
            return f"its unfsynced write of {len(batch)} records lost"
        keep = self.keep_prefix(batch, rng.randint(0, len(batch)))
        if keep < len(batch) and rng.random() < 0.5:
            zxid, packed = batch[keep]
            self.log.append((zxid, packed[: rng.randint(1, max(1, len(packed) - 1))]))
            self.torn_tail = True
            self.torn_writes += 1
            return f"{keep} of its {len(batch)} unfsynced records kept, the next one torn"
        return f"{keep} of its {len(batch)} unfsynced records kept"

    def keep_prefix(self, batch: list[tuple[int, bytes]], count: int) -> int:
        """Put the first `count` records of a batch that was never made durable on the disk after
        all (never past what the log already holds); how many were."""
        last = self.log[-1][0] if self.log else -1
        kept = [record for record in batch[:count] if record[0] > last]
        self.log.extend(kept)
        self.kept_unfsynced += len(kept)
        return len(kept)

    def failing(self, what: str) -> OSError | None:
        """The error of a write of `what` ("snapshot", "epoch", "marker") that a hook fails now."""
        name = f"fail_next_{what}"
        if getattr(self, name) <= 0:
            return None
        setattr(self, name, getattr(self, name) - 1)
        self.failed_writes += 1
        return OSError(errno.EIO, f"simulated {what} write failure")

    def damage(self, what: str) -> None:
        """ "log", "newest snapshot" or "every snapshot" (a snapshot install later writes good ones)."""
        if what == "log":
            self.log_damaged = True
        elif what == "newest snapshot" and self.snapshots:
            self.damaged_snapshots.add(max(self.snapshots))
        elif what == "every snapshot":
            self.damaged_snapshots.update(self.snapshots)


def copy_items(items: list[Any]) -> list[Any]:
    """A copy sharing nothing mutable with `items`: what a snapshot file gives back. The msgpack
    round trip is also exactly what the real snapshot does to the items, so a value that would not
    survive the real format does not survive here either."""
    packer = msgpack.Packer(use_bin_type=True)
    return [msgpack.unpackb(packer.pack(item), use_list=True, raw=False) for item in items]


class MemoryStore:
    """`zkpy.replication.environment.Store` over a `MemoryDisk`, mirroring DurableStore."""

    def __init__(
        self,
        disk: MemoryDisk,
        rng: random.Random,
        *,
        snap_count: int = 100,
        fsync_delay: tuple[float, float] = (0.0005, 0.003),
    ) -> None:
        self.disk = disk
        self.rng = rng
        self.fsync_delay = fsync_delay
        # As DurableStore (and ZooKeeper): a randomised snapshot point, so an ensemble's members
        # do not all snapshot at the same transaction.
        self.snap_count = max(2, snap_count)
        self._next_snap_after = self._pick_snap_interval()
        self._since_snap = 0
        self.last_snapshot_zxid = -1
        self.fsync_ms = Summary()
        self._open = False  # DurableStore's `log is not None`: recover() opens, close_log() closes
        self._failure: str | None = None  # set by a failed fsync: the log refuses writes from then on
        # Protocol points inside the store, reported as the servers' own (the cluster wires them):
        # "store writing snapshot" comes before a SNAP's first durable step, "store snapshot
        # written" between its two, "store log written" between a log batch's write and its fsync.
        self.on_point: Callable[[str], None] | None = None
        # Told of every snapshot written, (zxid, items): the simulator checks it is the history.
        self.on_snapshot: Callable[[int, list[Any]], None] | None = None
        self.on_logged: Callable[[list[tuple[int, bytes]]], None] | None = None  # every log write's records

    def _pick_snap_interval(self) -> int:
        half = self.snap_count // 2
        return half + self.rng.randint(1, max(1, half))

    # -- recovery ---------------------------------------------------------------------------

    def logged_before(self, zxid: int, limit: int) -> list[tuple[int, bytes]]:
        """The newest `limit` logged records at or below `zxid`, oldest first."""
        return [record for record in self.disk.log if record[0] <= zxid][-limit:]

    def recover(self, replayed: Callable[[int, bytes], None] | None = None) -> DataTree:
        """Newest snapshot (highest zxid), then every logged transaction after it, each also handed
        to `replayed` (the history an ensemble member syncs learners from)."""
        snaps = self.disk.snapshots
        if self.disk.torn_tail:  # txnlog.recover cuts a torn record at the log's end
            self.disk.log.pop()
            self.disk.torn_tail = False
        if self.disk.log_damaged and len(self.disk.log) >= 2:
            # Damage before the newest batch is never taken for a torn write (txnlog.recover).
            raise CorruptLogError(f"simulated bit flip in the log before {self.disk.log[-1][0]:#x}")
        # load_latest_snapshot skips snapshots whose checksums fail, and refuses if none is left.
        valid = sorted(zxid for zxid in snaps if zxid not in self.disk.damaged_snapshots)
        if snaps and not valid:
            raise CorruptSnapshotError(f"simulated bit flips: no valid snapshot among {len(snaps)}")
        if valid:
            snap_zxid = valid[-1]
            tree = load_tree(copy_items(snaps[snap_zxid]))
            self.last_snapshot_zxid = snap_zxid
        else:
            tree = DataTree()
            snap_zxid = -1
        after = max(snap_zxid, tree.last_zxid)
        following = [zxid for zxid, _ in self.disk.log if zxid > after]
        if following and after >= 0 and not follows(after, following[0]):
            raise CorruptLogError(f"the log jumps from {after:#x} to {following[0]:#x}: a hole")
        applier = Applier(tree)
        count = 0
        newest = max(snaps, default=-1)
        passed_newest = newest <= tree.last_zxid
        for zxid, payload in self.disk.log:
            if zxid <= after:
                continue
            txn = Txn.unpack(payload)
            if txn.zxid != zxid:
                raise ValueError(f"log record framed as zxid {zxid:#x} holds transaction {txn.zxid:#x}")
            applier.apply(txn)
            count += 1
            passed_newest = passed_newest or zxid == newest
            if replayed is not None:
                replayed(zxid, payload)
        if not passed_newest:  # as DurableStore: a skipped snapshot whose transaction the log lacks
            raise CorruptSnapshotError(
                f"simulated: snapshot {newest:#x} is damaged and the log reaches only {tree.last_zxid:#x} "
                f"without holding its transaction"
            )
        self._open = True
        self._failure = None  # a reopened log starts afresh, as a new TxnLog does
        self._since_snap = count
        return tree

    @property
    def needs_resync(self) -> bool:
        return self.disk.resync_marker is not None

    def discard_damaged(self, reason: str) -> str:
        """As DurableStore: the mark first, then snapshots and log set aside (here: dropped)."""
        error = self.disk.failing("marker")
        if error is not None:
            raise error
        self.disk.resync_marker = reason
        self.disk.snapshots = {}
        self.disk.log = []
        self.disk.log_damaged = False
        self.disk.damaged_snapshots = set()
        self.disk.set_aside += 1
        self.disk.fsyncs += 1
        self.last_snapshot_zxid = -1
        return "the simulated void"

    def check_writable(self) -> None:
        """DurableStore's probe preallocates a log file: a full disk refuses it. (A disk whose
        fsyncs fail still takes a probe: that is found by the writes themselves.)"""
        if trio.current_time() < self.disk.full_until:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def resynced(self) -> None:
        error = self.disk.failing("marker")
        if error is not None:
            raise error
        self.disk.resync_marker = None
        self.disk.fsyncs += 1

    def close_log(self) -> None:
        """Before recover() is called again. Nothing to release in memory; writes are refused until
        the next recover(), as DurableStore's would be."""
        self._open = False

    # -- writes -------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if not self._open:
            raise AssertionError("the log is not open: recover() first")
        if self._failure is not None:
            raise StorageError(self._failure)

    def _last_logged(self) -> int:
        return self.disk.log[-1][0] if self.disk.log else -1

    def last_durable_zxid(self) -> int:
        """The newest transaction on disk: the log's last, else the newest snapshot's."""
        return max(self._last_logged(), max(self.disk.snapshots, default=-1))

    def _check_order(self, records: list[tuple[int, bytes]]) -> None:
        prev = self._last_logged()
        for zxid, _ in records:
            if zxid <= prev:
                raise ValueError(f"zxid {zxid:#x} does not follow {prev:#x}")
            prev = zxid

    async def _fsync(self, size: int = 0) -> None:
        """The time a write of `size` bytes plus its fsync takes. A cancellation here is a crash
        before the data reached the disk: the caller has changed nothing yet."""
        delay = self.rng.uniform(*self.fsync_delay)
        disk = self.disk
        if trio.current_time() < disk.slow_until:
            delay = self.rng.uniform(*disk.slow_fsync)
            if disk.slow_bandwidth is not None:
                delay += size / disk.slow_bandwidth
            disk.slow_fsyncs += 1
        await trio.sleep(delay)
        self.fsync_ms.record(delay * 1000)

    async def persist(self, txns: list[Txn]) -> None:
        """Durable before it returns: the whole batch reaches the disk at once, after one fsync."""
        self._check_usable()
        records = [(t.zxid, t.pack()) for t in txns]
        self._check_order(records)  # TxnLog checks before writing anything
        if not records:
            await trio.lowlevel.checkpoint()
            return
        if trio.current_time() < self.disk.full_until:
            # No room for the batch: the write fails before anything reaches the disk, as
            # TxnLog's preallocation does; from then on the log refuses writes, as after EIO.
            await trio.lowlevel.checkpoint()
            self.disk.full_refusals += 1
            cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._failure = f"writing {len(records)} records to the simulated log: {cause}"
            raise StorageError(self._failure) from cause
        if self.on_logged is not None:
            self.on_logged(records)
        self.disk.unfsynced = records
        if self.on_point is not None:
            self.on_point("store log written")
        try:
            await self._fsync(sum(len(raw) for _, raw in records))
        finally:
            if self.disk.unfsynced is records:  # (a crash has already settled it)
                self.disk.unfsynced = None
        if self.disk.fail_next_fsync > 0:
            self.disk.fail_next_fsync -= 1
            if self.rng.random() < 0.5:  # some pages reached the disk before the error
                self.disk.keep_prefix(records, self.rng.randint(0, len(records)))
            cause = OSError(errno.EIO, "simulated fsync failure")
            self._failure = f"writing {len(records)} records to the simulated log: {cause}"
            raise StorageError(self._failure) from cause
        self._check_order(records)  # another writer cannot have slipped in; if it did, say so
        self.disk.log.extend(records)
        self.disk.fsyncs += 1
        self._since_snap += len(txns)

    async def truncate_after(self, zxid: int) -> None:
        """ZAB's TRUNC: drop every logged transaction above `zxid`, durably."""
        self._check_usable()
        await self._fsync()
        self._drop_after(zxid)

    def _drop_after(self, zxid: int) -> None:
        self.disk.log = [record for record in self.disk.log if record[0] <= zxid]
        self.disk.fsyncs += 1

    async def install_snapshot(self, zxid: int, items: list[Any]) -> None:
        """ZAB's SNAP: the snapshot is durable first, then the old log is dropped; a crash between
        the two leaves both, as with the real files."""
        self._check_usable()
        snapshot = copy_items(items)  # the caller goes on using (and loading) its items
        await self._fsync()
        if self.on_point is not None:
            self.on_point("store writing snapshot")
        error = self.disk.failing("snapshot")
        if error is not None:  # the temp file never became the snapshot: nothing changed
            raise error
        if self.on_snapshot is not None:
            self.on_snapshot(zxid, snapshot)
        self.disk.snapshots[zxid] = snapshot
        self.disk.damaged_snapshots.discard(zxid)  # written anew
        self.disk.fsyncs += 1
        # As DurableStore: snapshots above the one sent hold a history the ensemble cut.
        for above in [z for z in self.disk.snapshots if z > zxid]:
            if self.on_point is not None:
                self.on_point("store deleting a snapshot above the SNAP")
            del self.disk.snapshots[above]
            self.disk.damaged_snapshots.discard(above)
        self.disk.fsyncs += 1
        self.last_snapshot_zxid = zxid
        self._since_snap = 0
        if self.on_point is not None:
            self.on_point("store snapshot written")
        await self._fsync()
        self._drop_after(-1)

    def snapshot_source(self, tree: DataTree) -> MemorySnapshotSource:
        """As DurableStore's forked child: the snapshot of `tree` as it stands now, in the file
        format, handed out in pieces (the copy is made here at once: the same point in time)."""
        return MemorySnapshotSource(self.snapshot_bytes(tree))

    @staticmethod
    def snapshot_bytes(tree: DataTree) -> bytes:
        buf = io.BytesIO()
        write_stream(buf, tree.last_zxid, copy_items(list(tree_items(tree))))
        return buf.getvalue()

    def snapshot_receiver(self) -> MemorySnapshotSink:
        return MemorySnapshotSink()

    async def install_received(self, zxid: int, sink: Any) -> DataTree:
        """As DurableStore: the pieces must make a whole snapshot of `zxid` (checksums), then it
        is installed as install_snapshot installs one (same durable steps, same crash points)."""
        assert isinstance(sink, MemorySnapshotSink)
        file_zxid, items = read_stream(io.BytesIO(bytes(sink.data)), "simulated incoming snapshot")
        if file_zxid != zxid:
            raise CorruptSnapshotError(f"streamed snapshot names zxid {file_zxid:#x}, not {zxid:#x}")
        await self.install_snapshot(zxid, items)
        return load_tree(items)

    def maybe_snapshot(self, tree: DataTree) -> None:
        """Between batches (the tree is consistent): snapshot `tree` when one is due. DurableStore
        forks a writer; here it is written at once, which is the same point in the history."""
        if self._since_snap < self._next_snap_after:
            return
        self._since_snap = 0
        self._next_snap_after = self._pick_snap_interval()
        if self.disk.failing("snapshot") is not None:  # the forked writer failed: logged, no more
            return
        snapshot = copy_items(list(tree_items(tree)))
        if self.on_snapshot is not None:
            self.on_snapshot(tree.last_zxid, snapshot)
        self.disk.snapshots[tree.last_zxid] = snapshot
        self.disk.damaged_snapshots.discard(tree.last_zxid)
        self.disk.fsyncs += 1
        self.last_snapshot_zxid = tree.last_zxid

    # -- the rest of the interface ------------------------------------------------------------

    def metrics(self) -> dict[str, int | float | str]:
        """The same mntr lines as DurableStore, so a simulated server reports like a real one
        (fsync times are virtual)."""
        return {
            **self.fsync_ms.metrics("fsynctime"),
            "last_snapshot_zxid": f"0x{max(self.last_snapshot_zxid, 0):x}",
        }

    def epochs(self) -> Epochs:
        """ZAB's two epochs, on the disk at once: the real ones are fsynced before they return, and
        a synchronous write cannot be cut in half by a simulated crash."""
        disk = self.disk

        def save(name: str, value: int) -> None:
            error = disk.failing("epoch")
            if error is not None:  # the temp file's write or fsync failed: the old value stays
                raise error
            disk.epochs[name] = value
            disk.fsyncs += 1

        return Epochs(lambda name: disk.epochs.get(name, 0), save, "simulated disk")


class MemorySnapshotSource:
    PIECE = 1 << 20

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    async def read(self) -> bytes:
        await trio.lowlevel.checkpoint()
        piece = bytes(self._data[self._at : self._at + self.PIECE])
        self._at += len(piece)
        return piece

    def close(self) -> None:
        self._data = memoryview(b"")


class MemorySnapshotSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.size += len(data)

    def abort(self) -> None:
        self.data = bytearray()
