"""What the client tells its user: connection states and watch events, and the task that delivers them.

Delivery runs in its own task, fed by an unbounded channel, so the IO task never waits for a user's
callback: a slow or failing callback delays only the events queued behind it, never pings or replies.
Events are handed out one at a time in the order the IO task queued them, which is the order the
server sent them.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import logging
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger(__name__)


class State(enum.Enum):
    """Connection states, as a listener sees them change."""

    CONNECTING = "connecting"
    CONNECTED = "connected"  # a new session (the first one, or after a restart)
    SUSPENDED = "suspended"  # the connection is lost; the session may still be alive
    RECONNECTED = "reconnected"  # the same session, on a new connection
    # Connected to a server cut off from its quorum (only with read_only=True): reads work and may be stale,
    # writes raise NotReadOnlyError; the client looks for a read-write server meanwhile and moves there.
    CONNECTED_RO = "connected_read_only"
    EXPIRED = "expired"  # the server says the session is gone; its ephemerals and watches with it
    CLOSED = "closed"  # closed by the user


class EventType(enum.IntEnum):
    NONE = -1
    CREATED = 1
    DELETED = 2
    CHANGED = 3
    CHILD = 4
    DATA_WATCH_REMOVED = 5
    CHILD_WATCH_REMOVED = 6
    PERSISTENT_WATCH_REMOVED = 7


@dataclass(frozen=True, slots=True)
class WatchedEvent:
    """One watch notification; `path` is relative to the client's chroot."""

    type: EventType
    path: str
    state: int = 3  # SyncConnected


Callback = Callable[[Any], Awaitable[None] | None]


class EventStream:
    """A watcher you iterate: pass it as `watch=` and `async for event in stream`.

    It is also a plain callable, so the event task delivers to it like to any callback; it never
    blocks (the buffer is unbounded) and ends when the client closes or its session expires.
    """

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[Any](math.inf)

    def __call__(self, item: Any) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(item)

    def close(self) -> None:
        self._send.close()

    async def get(self) -> Any:
        """The next item; raises trio.EndOfChannel once the stream is closed and drained."""
        return await self._recv.receive()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._recv.__aiter__()


async def _call(callback: Callback, item: Any) -> None:
    try:
        result = callback(item)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("zkpy client callback %r failed on %r", callback, item)


class EventDispatcher:
    """The event task: state changes go to every listener, watch events to the watchers they fired."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[tuple[Any, tuple[Callback, ...]]](math.inf)
        self.listeners: list[Callback] = []
        self.streams: weakref.WeakSet[EventStream] = weakref.WeakSet()

    def state(self, state: State) -> None:
        self._put(state, tuple(self.listeners))

    def watch(self, event: WatchedEvent, callbacks: tuple[Callback, ...]) -> None:
        if callbacks:
            self._put(event, callbacks)

    def _put(self, item: Any, callbacks: tuple[Callback, ...]) -> None:
        # Once the event task has ended (the client's block was cancelled) there is nobody left to
        # deliver to: the client is closing, and raising here would turn a clean cancel into a crash.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait((item, callbacks))

    def close(self) -> None:
        self._send.close()

    async def run(self) -> None:
        try:
            async with self._recv:
                async for item, callbacks in self._recv:
                    for callback in callbacks:
                        await _call(callback, item)
        finally:  # also when cancelled: a task iterating a stream must not wait for ever
            for stream in list(self.streams):
                stream.close()
