"""Bounded waiting and watch-event capture for the threaded kazoo client."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.protocol.states import WatchedEvent


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Events:
    """A watch callback that records every event it receives, in order.

    kazoo runs all callbacks on one thread, in arrival order, so a marker event fired after some other
    watch could have fired proves that the other watch did not fire (see `settle`).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[WatchedEvent] = queue.Queue()
        self.seen: list[WatchedEvent] = []

    def __call__(self, event: WatchedEvent) -> None:
        self._queue.put(event)

    def next(self, timeout: float = 10.0) -> WatchedEvent:
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no watch event within {timeout}s") from None
        self.seen.append(event)
        return event

    def pending(self) -> list[WatchedEvent]:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out


def settle(client: KazooClient, marker_path: str) -> None:
    """Return once every watch callback queued on `client` so far has run.

    Sets a one-shot exists watch on a fresh marker path, creates it and waits for that event: callbacks
    run in order on one thread, so anything queued earlier has been delivered by then.
    """
    done = threading.Event()
    client.exists(marker_path, watch=lambda _e: done.set())
    client.create(marker_path)
    if not done.wait(10):
        raise AssertionError("marker watch did not fire")
    client.delete(marker_path)
