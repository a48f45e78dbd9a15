"""The write path: order -> persist -> apply -> fire watches -> answer.

Every state change goes through one CommitPipeline. Writes queue up while the
previous batch is being persisted, and the whole queue becomes the next batch:
group commit falls out of the structure, so throughput is bounded by the fsync
rate times the batch size, not one fsync per write. Transactions are applied in
zxid order and their watch events are written to connections before the reply
of any request that could observe the change.

The persist step is pluggable: a no-op (memory only), the local transaction log
(storage), or a quorum of an ensemble (replication: the leader's `replicate`). With
`max_in_flight` above 1 (only for a persist step that may run concurrently and completes in
order, as the leader's does: it queues proposals to one log writer and waits for commits, which
come in zxid order), the next batch is numbered and handed to persist while earlier ones still
wait for their quorum: batches are applied strictly in order, each once its own persist is done,
so a write is still answered only after it is durable on a quorum. A bounded number in flight is
the back-pressure: the queue of submitted writes grows meanwhile, not the proposals.

A further batch goes out while others are in flight only once it is worth one
(`min_pipelined_batch` writes or a sixteenth of `max_batch_bytes` queued); a smaller queue waits
until none is in flight, as without pipelining. Every batch costs the same fixed work on
every member (a proposal, acks, a commit, a log write and its fsync, task and thread hops), so
cutting the clients' outstanding writes into many small batches multiplied it: 512 outstanding
writes went out in batches of ~70 instead of ~230, and the ensemble spent ~30% more CPU per write.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import trio

from zkpy.errors import Code
from zkpy.server.prep import InFlight
from zkpy.tree.apply import Applier, Result
from zkpy.tree.txn import SERVER_AUTH, Txn
from zkpy.tree.watches import WatchManager

log = logging.getLogger(__name__)

Callback = Callable[[Result], None]
Persist = Callable[[list[Txn]], Awaitable[None]]


async def persist_nothing(txns: list[Txn]) -> None:
    """Memory-only mode: nothing to wait for."""


class CommitPipeline:
    def __init__(
        self,
        applier: Applier,
        watches: WatchManager,
        persist: Persist = persist_nothing,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        max_batch: int = 1000,
        max_in_flight: int = 1,
        max_batch_bytes: int = 16 * 1024 * 1024,
        min_pipelined_batch: int = 100,
    ) -> None:
        self.applier = applier
        self.watches = watches
        self.persist = persist
        self.wall_clock_ms = wall_clock_ms
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        # A batch is one proposal frame in an ensemble: capped by bytes too, so a burst of large
        # writes cannot build a frame past the peers' frame limit (a batch holds at least one write).
        self.max_batch_bytes = max_batch_bytes
        self.min_pipelined_batch = min_pipelined_batch  # see the module docstring
        self._queued_bytes = 0
        self._last_ordered = 0  # the zxid of the last write numbered (ahead of the tree while in flight)
        self._queue: list[
            tuple[int, int, int, bytes, tuple[tuple[str, str], ...], Callback | None, tuple[str, ...]]
        ] = []
        # What is ordered but not applied yet, for the checks made before ordering (zkpy.server.prep).
        self.in_flight = InFlight()
        self._work = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self.on_applied: Callable[[Txn, Result], None] = lambda txn, result: None
        # Held while a batch is answered: the server's connections write its answers at the end
        # (connection.HeldAnswers), one send each, not one per answer.
        self.hold_answers: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        self.after_batch: Callable[[], None] = lambda: None  # the tree is consistent here (snapshots)
        self.write_error: str | None = None  # set when storage failed: writes are refused
        # The first zxid of the batch whose persist failed: batches before it (in flight at once,
        # durable on their own) are still applied and answered; it and every later one are not.
        self._failed_at = 0
        self.epoch = 0  # zxids are epoch << 32 | counter; an ensemble's leader sets its epoch
        self.committed = 0
        self.batches = 0  # committed batches: committed / batches is the group-commit factor

    @property
    def outstanding(self) -> int:
        return len(self._queue)

    def submit(
        self,
        session_id: int,
        cxid: int,
        op: int,
        body: bytes,
        auth: tuple[tuple[str, str], ...] = SERVER_AUTH,
        callback: Callback | None = None,
    ) -> None:
        """Queue a write; `callback` gets its Result once it is durable and applied."""
        changed = self.in_flight.add(session_id, op, body)
        self._queue.append((session_id, cxid, op, body, auth, callback, changed))
        self._queued_bytes += len(body)
        self._work.set()

    async def wait_idle(self) -> None:
        """Until everything submitted so far has been applied (for tests and shutdown)."""
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            await trio.sleep(0)

    async def run(self) -> None:
        if self.max_in_flight > 1:
            await self._run_pipelined()
            return
        while True:
            await self._work.wait()
            self._work = trio.Event()
            while self._queue:
                batch = self._next_batch()
                self._idle = trio.Event()
                try:
                    txns = self._number(batch)
                    await self._persist(txns)
                    self._finish(batch, txns)
                finally:
                    for item in batch:
                        self.in_flight.done(item[0], item[6])
                    self._idle.set()

    async def _run_pipelined(self) -> None:
        """Up to max_in_flight batches persisting at once; one task applies them in order."""
        send, receive = trio.open_memory_channel[tuple[list, list[Txn], trio.Event]](self.max_in_flight - 1)  # type: ignore[type-arg]
        pending = 0

        async def apply_in_order() -> None:
            nonlocal pending
            async for batch, txns, persisted in receive:
                try:
                    await persisted.wait()
                    self._finish(batch, txns)
                finally:
                    for item in batch:
                        self.in_flight.done(item[0], item[6])
                    pending -= 1
                    if pending == 0:
                        self._idle.set()
                    if self._queue:
                        self._work.set()  # what waited for a batch worth sending may go now

        async def persist(txns: list[Txn], persisted: trio.Event) -> None:
            try:
                await self._persist(txns)
            finally:
                persisted.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(apply_in_order)
            while True:
                await self._work.wait()
                self._work = trio.Event()
                while self._queue and (pending == 0 or self._worth_another_batch()):
                    batch = self._next_batch()
                    txns = self._number(batch)
                    persisted = trio.Event()
                    if pending == 0:
                        self._idle = trio.Event()
                    pending += 1
                    await send.send((batch, txns, persisted))  # waits while max_in_flight are out
                    nursery.start_soon(persist, txns, persisted)

    def _worth_another_batch(self) -> bool:
        """Whether the queue is worth a batch beside those in flight (see the module docstring)."""
        worth = min(self.min_pipelined_batch, self.max_batch)  # a full batch always is
        return len(self._queue) >= worth or self._queued_bytes >= self.max_batch_bytes // 16

    def _next_batch(self) -> list:  # type: ignore[type-arg]
        queue = self._queue
        count = min(len(queue), self.max_batch)
        size = 0
        for i in range(count):
            item_size = len(queue[i][3])
            if size + item_size > self.max_batch_bytes and i > 0:
                count = i
                break
            size += item_size
        batch = queue[:count]
        del queue[:count]
        self._queued_bytes -= size
        return batch

    def _number(self, batch: list) -> list[Txn]:  # type: ignore[type-arg]
        zxid = max(self._last_ordered, self.applier.tree.last_zxid, self.epoch << 32)
        now = self.wall_clock_ms()
        txns = []
        for session_id, cxid, op, body, auth, *_ in batch:
            zxid += 1
            txns.append(Txn(zxid, now, session_id, cxid, op, body, auth))
        self._last_ordered = zxid
        return txns

    async def _persist(self, txns: list[Txn]) -> None:
        if self.write_error is not None:
            return
        try:
            await self.persist(txns)
        except Exception as e:  # a full disk or failed fsync: refuse, never acknowledge
            first = txns[0].zxid
            self._failed_at = first if self.write_error is None else min(self._failed_at, first)
            self.write_error = f"{type(e).__name__}: {e}"
            log.error("persisting transactions failed, refusing writes from now on: %s", self.write_error)

    def _finish(self, batch: list, txns: list[Txn]) -> None:  # type: ignore[type-arg]
        """Apply a persisted batch and answer it; refuse it if the storage failed (this batch or
        an earlier one: nothing after a failure is acknowledged)."""
        if self.write_error is not None and txns[0].zxid >= self._failed_at:
            self._last_ordered = self.applier.tree.last_zxid  # its numbers were never logged: reuse them
            for item in batch:
                callback = item[5]
                if callback is not None:
                    callback(Result(self.applier.tree.last_zxid, int(Code.SYSTEM_ERROR)))
            return
        self.apply_batch(txns, [item[5] for item in batch])

    def apply_batch(self, txns: list[Txn], callbacks: list[Callback | None]) -> None:
        """Apply durable, committed transactions in zxid order, firing watches before answering.

        The standalone server and an ensemble's leader come here from `_commit`; a learner comes
        here with transactions its leader ordered and committed.
        """
        apply = self.applier.apply
        trigger = self.watches.trigger
        on_applied = self.on_applied
        with self.hold_answers:
            for txn, callback in zip(txns, callbacks, strict=True):
                result = apply(txn)
                for event_type, path, acl in result.events:
                    trigger(event_type, path, acl)
                on_applied(txn, result)
                if callback is not None:
                    callback(result)
        self.committed += len(txns)
        self.batches += 1
        self.after_batch()
