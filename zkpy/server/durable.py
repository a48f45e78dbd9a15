"""The server's durable state: recover the tree at start, log every transaction before it is
applied, snapshot every snapCount transactions, purge old files.

Snapshots are taken in a forked child: fork gives the child a copy-on-write image of the
tree at one exact zxid, so the snapshot is consistent (no fuzzy replay rules needed for our
non-idempotent transactions) and the server keeps serving while the child serialises it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from zkpy.server.config import ServerConfig
from zkpy.server.latency import Summary
from zkpy.storage.errors import CorruptSnapshotError, StorageError
from zkpy.storage.files import LOG_PREFIX, SNAP_PREFIX, TMP_SUFFIX, fsync_dir, list_zxid_files
from zkpy.storage.purge import purge
from zkpy.storage.snapshot import (
    SnapshotReceiver,
    iter_items,
    load_latest_snapshot,
    write_snapshot,
    write_stream,
)
from zkpy.storage.txnlog import TxnLog, newest_records, recover
from zkpy.tree.apply import Applier
from zkpy.tree.datatree import DataTree
from zkpy.tree.serialize import load_tree, tree_items
from zkpy.tree.txn import Txn

if TYPE_CHECKING:
    from zkpy.replication.epochs import Epochs

log = logging.getLogger(__name__)

SUBDIR = "zkpy-1"  # our own format; never mistaken for (or mixed with) Apache ZooKeeper's version-2
# Present while this ensemble member's data was found damaged and has not been re-synced yet: it
# must not vote (its log is shorter than what it acknowledged) until it took a leader's sync.
RESYNC_MARKER = "resyncNeeded"


class DurableStore:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.snap_dir = Path(config.data_dir) / SUBDIR
        self.log_dir = Path(config.data_log_dir) / SUBDIR
        self.snap_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.log_dir)
        self.log: TxnLog | None = None
        # ZooKeeper randomises the snapshot point per server so an ensemble never snapshots at once.
        self.snap_count = max(2, config.snap_count)
        self._next_snap_after = self._pick_snap_interval()
        self._since_snap = 0
        self._snapshot_pid: int | None = None
        self._snapshot_discarded = False  # the running writer was stopped: ignore its outcome
        self._roll_pending = False
        self.last_snapshot_zxid = -1
        self.recovery_seconds = 0.0
        self.fsync_ms = Summary()  # ZooKeeper's fsynctime, for mntr

    def _pick_snap_interval(self) -> int:
        half = self.snap_count // 2
        return half + random.randint(1, max(1, half))

    def recover(self, replayed: Callable[[int, bytes], None] | None = None) -> DataTree:
        """Newest valid snapshot, then every logged transaction after it (each also handed to
        `replayed`, which an ensemble member keeps as the history it syncs learners from).

        The cyclic GC is off while the tree is built (millions of long-lived objects that cannot
        form cycles; each collection would rescan them all, ~40% of the time at 1M znodes), and the
        result is frozen out of later collections.
        """
        gc.disable()
        try:
            tree = self._recover(replayed)
        finally:
            gc.freeze()
            gc.enable()
        return tree

    def _recover(self, replayed_hook: Callable[[int, bytes], None] | None) -> DataTree:
        started = time.monotonic()
        for stale in self.snap_dir.glob(f"{SNAP_PREFIX}*{TMP_SUFFIX}"):  # a snapshot cut short
            stale.unlink(missing_ok=True)
        loaded = load_latest_snapshot(self.snap_dir)
        if loaded is None:
            tree = DataTree()
            snap_zxid = -1
        else:
            snap_zxid, items = loaded
            tree = load_tree(items)
            self.last_snapshot_zxid = snap_zxid
        newest = max((zxid for zxid, _ in list_zxid_files(self.snap_dir, SNAP_PREFIX)), default=-1)
        applier = Applier(tree)
        replayed = 0
        passed_newest = newest <= tree.last_zxid
        for zxid, payload in recover(self.log_dir, max(snap_zxid, tree.last_zxid)):
            txn = Txn.unpack(payload)
            if txn.zxid != zxid:
                raise ValueError(f"log record framed as zxid {zxid:#x} holds transaction {txn.zxid:#x}")
            applier.apply(txn)
            replayed += 1
            passed_newest = passed_newest or zxid == newest
            if replayed_hook is not None:
                replayed_hook(zxid, payload)
        if not passed_newest:
            # The newest snapshot was skipped as damaged, and the log does not hold its transaction:
            # it does not reach that far (this server once had, and may have acknowledged,
            # transactions that are gone now), or it starts after it, as after a SNAP, where an
            # older snapshot plus a log beginning with a new epoch's first zxid looks whole
            # (follows() holds) but lacks everything in between.
            raise CorruptSnapshotError(
                f"{self.snap_dir}: snapshot {newest:#x} is damaged and the log reaches only {tree.last_zxid:#x} "
                f"without holding its transaction"
            )
        for path in tree.drop_orphan_ephemerals():
            log.warning("deleted ephemeral %s at start-up: the session that owned it is gone", path)
        self.log = TxnLog(
            self.log_dir,
            prealloc_size=self.config.pre_alloc_size_kb * 1024,
            force_sync=self.config.force_sync,
        )
        self.recovery_seconds = time.monotonic() - started
        log.info(
            "recovered %d znodes at zxid 0x%x (snapshot 0x%x + %d logged transactions) in %.2fs",
            tree.node_count(), tree.last_zxid, max(snap_zxid, 0), replayed, self.recovery_seconds,
        )  # fmt: skip
        self._since_snap = replayed
        return tree

    async def persist(self, txns: list[Txn]) -> None:
        """Durable before it returns: one write and one fsync for the whole batch, off the event loop."""
        assert self.log is not None
        records = [(t.zxid, t.pack()) for t in txns]
        started = time.monotonic()
        await trio.to_thread.run_sync(self._write, records)
        self.fsync_ms.record((time.monotonic() - started) * 1000)
        self._since_snap += len(txns)

    def _write(self, records: list[tuple[int, bytes]]) -> None:
        """In the worker thread, the only place that touches the log while the server runs."""
        assert self.log is not None
        if self._roll_pending:  # a snapshot was taken: the next transactions start a new file
            self._roll_pending = False
            self.log.roll()
        self.log.write_batch(records)

    def metrics(self) -> dict[str, int | float | str]:
        """mntr lines, named as ZooKeeper names its fsynctime summary."""
        return {
            **self.fsync_ms.metrics("fsynctime"),
            "last_snapshot_zxid": f"0x{max(self.last_snapshot_zxid, 0):x}",
        }

    def maybe_snapshot(self, tree: DataTree) -> None:
        """Called between transactions (the tree is consistent): fork a snapshot when one is due."""
        if self._since_snap < self._next_snap_after or self._snapshot_pid is not None:
            return
        self._roll_pending = True  # done by the next write, in the writer's thread
        self._since_snap = 0
        self._next_snap_after = self._pick_snap_interval()
        zxid = tree.last_zxid
        # No gc.freeze() here: frozen objects are never collected again, so freezing at every
        # snapshot would keep whatever cyclic garbage exists at that moment forever.
        pid = os.fork()
        if pid == 0:  # child: write and leave, touching nothing else of the parent's
            code = 0
            try:
                # The parent's signal handlers wake a loop that does not run here, and its fds
                # (listening sockets, the directory lock) must not outlive the parent.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.closerange(3, _max_fd())
                gc.disable()
                write_snapshot(self.snap_dir, zxid, tree_items(tree))
            except BaseException:
                code = 1
            os._exit(code)
        self._snapshot_pid = pid
        self._snapshot_zxid = zxid

    async def reap_snapshots(self) -> None:
        """Wait for forked snapshot writers and report how they did."""
        while True:
            pid = self._snapshot_pid
            if pid is None:
                await trio.sleep(0.05)
                continue
            # Abandoned on shutdown: close() then kills the child and reaps it.
            _, status = await trio.to_thread.run_sync(os.waitpid, pid, 0, abandon_on_cancel=True)
            self._snapshot_pid = None
            if self._snapshot_discarded:  # stopped by install_snapshot: its zxid means nothing now
                self._snapshot_discarded = False
            elif os.waitstatus_to_exitcode(status) == 0:
                self.last_snapshot_zxid = self._snapshot_zxid
                log.info("snapshot at zxid 0x%x written", self._snapshot_zxid)
            else:
                log.error("snapshot at zxid 0x%x failed (status %d)", self._snapshot_zxid, status)

    async def autopurge(self) -> None:
        hours = self.config.autopurge_purge_interval_hours
        if hours <= 0:
            await trio.sleep_forever()
        retain = max(3, self.config.autopurge_snap_retain_count)
        while True:
            await trio.sleep(hours * 3600)
            deleted = await trio.to_thread.run_sync(purge, self.snap_dir, self.log_dir, retain)
            log.info("autopurge removed %d files", len(deleted))

    def logged_before(self, zxid: int, limit: int) -> list[tuple[int, bytes]]:
        """The newest `limit` logged records at or below `zxid`, oldest first: what a restarted
        leader can still sync learners from by DIFF, behind its newest snapshot."""
        return newest_records(self.log_dir, zxid, limit)

    def last_durable_zxid(self) -> int:
        """The newest transaction on disk: the log's last, else the last snapshot's."""
        logged = self.log.last_zxid if self.log is not None else -1
        return max(logged, self.last_snapshot_zxid)

    @property
    def needs_resync(self) -> bool:
        return (self.snap_dir / RESYNC_MARKER).exists()

    def discard_damaged(self, reason: str) -> Path:
        """Damaged data on an ensemble member: mark it as needing a re-sync (durably, first), then
        move every snapshot and log file into a `damaged-<time>` directory for the operator to
        inspect, so the next recover() starts empty. The epoch files stay: they are promises made
        to leaders and must never go back."""
        self.close_log()
        marker = self.snap_dir / RESYNC_MARKER
        marker.write_text(f"{reason}\n")
        with open(marker, "rb+") as f:
            os.fsync(f.fileno())
        fsync_dir(self.snap_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        moved_to = self.snap_dir / f"damaged-{stamp}"
        for directory, prefix in ((self.snap_dir, SNAP_PREFIX), (self.log_dir, LOG_PREFIX)):
            target = directory / f"damaged-{stamp}"
            target.mkdir(exist_ok=True)
            for path in sorted(directory.glob(f"{prefix}*")):
                path.rename(target / path.name)
            fsync_dir(target)
            fsync_dir(directory)
        self.last_snapshot_zxid = -1
        return moved_to

    def check_writable(self) -> None:
        """Raise OSError unless a log file's preallocation fits on the disk now: the probe for a
        server whose log failed, so it does not rejoin (and fail again) while the disk is full."""
        probe = self.log_dir / ".space-probe"
        size = max(self.config.pre_alloc_size_kb * 1024, 1 << 20)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:  # pragma: no cover - not Linux
                os.write(fd, b"\0" * size)
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)

    def reopen_log(self, last_applied: int) -> None:
        """After a failed write, once check_writable() passes: a new writer on the same log, cut
        back to `last_applied` (a failed batch may have reached the disk after all; it was never
        applied nor acknowledged, so it must not come back at the next start)."""
        self.close_log()
        self.log = TxnLog(
            self.log_dir,
            prealloc_size=self.config.pre_alloc_size_kb * 1024,
            force_sync=self.config.force_sync,
        )
        if self.log.last_zxid > last_applied:
            log.warning("dropping the failed batch's records after 0x%x from the log", last_applied)
            self.log.truncate_after(last_applied)

    def resynced(self) -> None:
        """A leader's sync is durable here: this server may vote again."""
        (self.snap_dir / RESYNC_MARKER).unlink(missing_ok=True)
        fsync_dir(self.snap_dir)

    def epochs(self) -> Epochs:
        """ZAB's acceptedEpoch/currentEpoch files, beside the snapshots."""
        from zkpy.replication.epochs import Epochs

        return Epochs.in_directory(self.snap_dir)

    def close_log(self) -> None:
        """Before recovering again (a TRUNC below the tree): the next recover() reopens it."""
        if self.log is not None:
            self.log.close()
            self.log = None

    async def truncate_after(self, zxid: int) -> None:
        """ZAB's TRUNC: drop every logged transaction above `zxid`, durably."""
        assert self.log is not None
        await trio.to_thread.run_sync(self.log.truncate_after, zxid)

    async def install_snapshot(self, zxid: int, items: list[Any]) -> None:
        """ZAB's SNAP: the leader's tree becomes ours. The snapshot is made durable first (temp
        file, fsync, rename), then every snapshot numbered above it is deleted, and only then is
        the old log dropped: a crash in between leaves the old state or the new, never a mix.

        A SNAP is sent when this server's own snapshot lies beyond the point it shares with the
        leader, so the tree received can be older than a snapshot on disk; recovery loads the
        highest snapshot, and one left above `zxid` would bring back a history the ensemble cut
        (and the leader's new epoch would be replayed on top of it). A snapshot still being
        written by a forked child of an earlier role is stopped first for the same reason, and
        its result is not reported (it would set last_snapshot_zxid back)."""
        assert self.log is not None
        await self._stop_snapshot_writer()
        await trio.to_thread.run_sync(write_snapshot, self.snap_dir, zxid, items)
        await trio.to_thread.run_sync(_delete_snapshots_above, self.snap_dir, zxid)
        self.last_snapshot_zxid = zxid
        self._since_snap = 0
        await trio.to_thread.run_sync(self.log.truncate_after, -1)

    def snapshot_source(self, tree: DataTree) -> ForkedSnapshot:
        """A SNAP to stream, from a forked child that writes the snapshot of `tree` as it stands
        now into a pipe: the tree is copied by the kernel (copy-on-write), not by this process,
        and the child's serializing runs on another core while the leader serves."""
        return ForkedSnapshot(tree)

    def snapshot_receiver(self) -> SnapshotReceiver:
        return SnapshotReceiver(self.snap_dir)

    async def install_received(self, zxid: int, sink: Any) -> DataTree:
        """install_snapshot for a streamed SNAP, in the same order of durable steps; the tree is
        then loaded from the file just written."""
        assert self.log is not None and isinstance(sink, SnapshotReceiver)
        await self._stop_snapshot_writer(keep=sink.tmp)
        path = await trio.to_thread.run_sync(sink.finish, zxid)
        await trio.to_thread.run_sync(_delete_snapshots_above, self.snap_dir, zxid)
        self.last_snapshot_zxid = zxid
        self._since_snap = 0
        await trio.to_thread.run_sync(self.log.truncate_after, -1)
        # In a thread: the event loop keeps its turns (the GIL is handed over every few ms) while
        # millions of znodes are built, instead of stalling for seconds (4.7 s at 1M on the
        # loaded test machine). The learner's driver awaits this; nothing else uses the tree yet.
        return await trio.to_thread.run_sync(_load_frozen, path)

    async def _stop_snapshot_writer(self, keep: Path | None = None) -> None:
        """Kill a forked snapshot writer and wait until reap_snapshots has collected it."""
        pid = self._snapshot_pid
        if pid is None:
            return
        self._snapshot_discarded = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while self._snapshot_pid == pid:
            await trio.sleep(0.01)
        for stale in self.snap_dir.glob(f"{SNAP_PREFIX}*{TMP_SUFFIX}"):
            if stale != keep:
                stale.unlink(missing_ok=True)

    def snapshot_now(self, tree: DataTree) -> Path:
        """Write a snapshot synchronously (clean shutdown, tests, benchmarks)."""
        return write_snapshot(self.snap_dir, tree.last_zxid, tree_items(tree))

    def close(self) -> None:
        """Stop a snapshot still being written (its temp file is removed) and release the log."""
        pid = self._snapshot_pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            self._snapshot_pid = None
            for stale in self.snap_dir.glob(f"{SNAP_PREFIX}*{TMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
        if self.log is not None:
            self.log.close()
        os.close(self._lock_fd)


class ForkedSnapshot:
    """The reading end of a forked child writing one snapshot into a pipe (a streamed SNAP)."""

    PIECE = 1 << 20

    def __init__(self, tree: DataTree) -> None:
        read_fd, write_fd = os.pipe()
        zxid = tree.last_zxid
        try:
            pid = os.fork()
        except OSError:  # ENOMEM, EAGAIN: the caller closes the learner's link; no fds leak
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # child: write and leave, touching nothing else of the parent's
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.closerange(3, write_fd)
                os.closerange(write_fd + 1, _max_fd())
                gc.disable()
                with os.fdopen(write_fd, "wb", buffering=self.PIECE) as pipe:
                    write_stream(pipe, zxid, tree_items(tree))
            except BaseException:
                code = 1
            os._exit(code)
        os.close(write_fd)
        self.pid: int | None = pid
        self.zxid = zxid
        self._stream = trio.lowlevel.FdStream(read_fd)

    async def read(self) -> bytes:
        data = await self._stream.receive_some(self.PIECE)
        if data:
            return data
        pid, self.pid = self.pid, None
        if pid is not None:
            _, status = await trio.to_thread.run_sync(os.waitpid, pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise StorageError(f"streaming the snapshot at 0x{self.zxid:x} failed (status {status})")
        return b""

    def close(self) -> None:
        pid, self.pid = self.pid, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        self._stream.close()


def _delete_snapshots_above(snap_dir: Path, zxid: int) -> None:
    doomed = [path for snap_zxid, path in list_zxid_files(snap_dir, SNAP_PREFIX) if snap_zxid > zxid]
    for path in doomed:
        log.info("deleting snapshot %s: beyond the snapshot 0x%x the leader sent", path.name, zxid)
        path.unlink()
    if doomed:
        fsync_dir(snap_dir)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def _lock_directory(directory: Path) -> int:
    """Hold an exclusive lock on the log directory for the life of the server: two servers
    appending to one log would destroy it."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StorageError(f"{directory} is in use by another zkpy server (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _load_frozen(path: Path) -> DataTree:
    """A received SNAP's tree, built as recover() builds one: the cyclic GC off meanwhile (each
    collection would rescan the millions of new long-lived objects) and the result frozen out of
    later collections, where a full one over a 3M-znode tree would hold the server for seconds.
    What else is alive at this moment is frozen too and, should it later become cyclic garbage,
    is never collected: a learner taking a SNAP has no clients, so that is its role's few objects,
    once per SNAP."""
    gc.disable()
    try:
        return load_tree(iter_items(path))
    finally:
        gc.freeze()
        gc.enable()
