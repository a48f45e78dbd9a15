"""One TCP connection between two peers, as framed messages: a queue out, a decoder in; and
what a role's failure on its links means (why_role_ended).

Sending never blocks the caller (the leader broadcasts to every learner from one task); a
writer task drains the queue, joining whatever queued meanwhile into one write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from zkpy.replication.messages import Message, SyncData
from zkpy.replication.roles import RoleContext, RoleEnded
from zkpy.replication.wire import MAX_FRAME, FrameDecoder, WireError, encode_frame
from zkpy.storage.errors import StorageError

log = logging.getLogger(__name__)


class PeerGone(Exception):
    """The other side closed the connection."""


def root_cause(exc: BaseException) -> BaseException:
    """The error inside the exception groups trio's nurseries wrap it in (a group holding only
    Cancelled gives Cancelled: the caller re-raises the group then)."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


# What a misbehaving or vanished peer can cause: it costs that link, never the server.
LINK_ERRORS = (PeerGone, WireError, trio.TooSlowError, ValueError, TypeError, IndexError, KeyError, OSError)


def why_role_ended(group: BaseException, ctx: RoleContext, what: str) -> BaseException | None:
    """What a role's failure means, for the leader and a learner alike: None when it must go on
    as it is (a cancellation: the server stops; an interrupt); the AssertionError of a broken
    invariant (never carried on past); else the RoleEnded that sends the server back to election
    (a failed disk also keeps it out of elections until the disk works). Call it in the except."""
    e = root_cause(group)
    if not isinstance(e, Exception):
        return None
    if isinstance(e, AssertionError):
        return e
    # The driver may end the role while a log write, in a thread no cancellation stops, fails:
    # the group holds the RoleEnded first, and the disk failed all the same.
    failed = next((x for x in _leaves(group) if isinstance(x, StorageError)), None)
    if failed is not None:
        ctx.disk_failed = str(failed)
        return RoleEnded(f"the local log failed: {failed}")
    if isinstance(e, RoleEnded):
        return e
    if not isinstance(e, LINK_ERRORS):
        log.exception("%s", what)
    return RoleEnded(f"{what}: {e or type(e).__name__}")


class PeerLink:
    def __init__(
        self,
        stream: trio.abc.Stream,
        on_sent: Callable[[str], None] | None = None,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(max_frame)
        self._out: list[bytes] = []
        self._tags: list[str] = []
        self.queued_bytes = 0  # sent to this link and not yet written to the socket
        # Told of each message once its bytes are written (the simulator's protocol points);
        # with it, frames are written one by one so a crash can fall between two of them.
        self.on_sent = on_sent
        self._wake = trio.Event()
        self._sent = trio.Event()  # set whenever queued bytes were written
        self.closed = False

    @property
    def max_frame(self) -> int:
        """The largest frame `receive` accepts (raise it once the peer has identified itself)."""
        return self._decoder.max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        self._decoder.max_frame = value

    def send(self, message: Message) -> None:
        tag = message.TAG
        if isinstance(message, SyncData):
            tag = f"syncdata:{message.mode}"
        self.send_frame(encode_frame(message.to_wire()), tag)

    def send_frame(self, frame: bytes, tag: str = "") -> None:
        if not self.closed:
            self._out.append(frame)
            self._tags.append(tag)
            self.queued_bytes += len(frame)
            self._wake.set()

    async def send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                batch, self._out = self._out, []
                tags, self._tags = self._tags, []
                if not batch:
                    continue
                if self.on_sent is None:
                    await self.stream.send_all(b"".join(batch))
                    self.queued_bytes -= sum(map(len, batch))
                else:
                    for frame, tag in zip(batch, tags, strict=True):
                        await self.stream.send_all(frame)
                        self.queued_bytes -= len(frame)
                        self.on_sent(tag)
                self._sent.set()
                self._sent = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True

    async def wait_sent(self) -> None:
        """Until some of what is queued has been written (flow control for a streamed SNAP)."""
        if self.queued_bytes and not self.closed:
            await self._sent.wait()

    async def receive(self) -> list[Any]:
        """The next message; raises PeerGone at end of stream, WireError on a bad frame."""
        while True:
            message = self._decoder.next_message()
            if message is not None:
                return message
            try:
                data = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = True
                raise PeerGone("connection closed by peer")
            self._decoder.feed(data)

    async def aclose(self) -> None:
        self.closed = True
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
