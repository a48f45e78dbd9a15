"""The log as the server drives it: group commit from a trio worker thread."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.storage.logtools import recovered
from zkpy.storage import TxnLog


class GroupCommitter:
    """Everything submitted while a sync runs goes into the next batch: one fsync for all."""

    def __init__(self, log: TxnLog) -> None:
        self.log = log
        self.pending: list[tuple[int, bytes]] = []
        self.waiters: list[trio.Event] = []
        self.wakeup = trio.Event()
        self.batches: list[int] = []
        self.next_zxid = 1

    async def submit(self, payload: bytes) -> None:
        """Assign the next zxid (as the leader does when it orders a proposal) and wait until durable."""
        done = trio.Event()
        self.pending.append((self.next_zxid, payload))
        self.next_zxid += 1
        self.waiters.append(done)
        self.wakeup.set()
        await done.wait()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            batch, waiters = self.pending, self.waiters
            self.pending, self.waiters = [], []
            await trio.to_thread.run_sync(self.log.write_batch, batch)
            self.batches.append(len(batch))
            for done in waiters:
                done.set()


async def test_concurrent_writers_share_fsyncs_and_keep_zxid_order(tmp_path: Path) -> None:
    payloads = [b"txn %d" % i for i in range(300)]
    with TxnLog(tmp_path) as log:
        committer = GroupCommitter(log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(committer.run)
            async with trio.open_nursery() as writers:
                for payload in payloads:
                    writers.start_soon(committer.submit, payload)
            nursery.cancel_scope.cancel()
    assert sum(committer.batches) == len(payloads)
    assert len(committer.batches) < len(payloads)  # writers queued behind a sync shared the next one
    records = recovered(tmp_path)
    assert [zxid for zxid, _ in records] == list(range(1, len(payloads) + 1))
    assert sorted(p for _, p in records) == sorted(payloads)
