"""The election port: carries fast-leader-election notifications between servers.

Kept deliberately thin so the pure ``election`` state machine holds all the logic:

* One listener on our election port. Incoming connections only *receive*: each starts with
  ``["hello", sid]`` naming the sender (a sid not in the configuration is hung up on), then
  carries ``Notification.pack()`` frames (``wire.encode_frame``).
* One outgoing connection per other server, which only *sends*. A peer that is down is retried
  with a short exponential back-off, so starting servers in any order works, and at once when
  its hello arrives here (Apache's QuorumCnxManager connects back at once too): otherwise a
  server back from a restart could hear only the others for up to a second and settle with them
  on a leader that lacks what this server has (two wiped followers electing each other while
  the old leader, the only one with the data, still waits to redial them).
* Per peer we keep only the newest unsent notification: an election only cares about a peer's
  latest view, and a peer that is down for minutes must not come back to a backlog of stale
  votes. ``send`` therefore never blocks, whatever the network does.
* A malformed frame (or a notification claiming another sender) closes only that connection,
  with a warning: a confused or hostile client cannot disturb the rest of the election. Votes
  must be seven scalars with 64-bit numbers (Apache's longs): junk is never repr'd whole (a deeply
  nested list would raise RecursionError) and a huge number never reaches our own clock.
* A connection that names no peer within ``connect_timeout`` is closed (Apache's cnxTimeout),
  and a peer keeps at most MAX_INCOMING_PER_PEER incoming connections: a newer hello for its
  sid closes the oldest (a peer that came back after a crash, or a stranger claiming its sid,
  cannot pile up sockets).

Losing a notification (a connection that breaks mid-write) is fine: the election re-sends on
its own back-off timer.
"""

from __future__ import annotations

import contextlib
import logging
import math

import trio

from zkpy.replication.election import Notification
from zkpy.replication.environment import Network, TcpNetwork
from zkpy.replication.link import root_cause
from zkpy.replication.wire import FrameDecoder, WireError, brief, encode_frame

log = logging.getLogger(__name__)

# Election frames are under a hundred bytes; refuse anything big before buffering it.
MAX_ELECTION_FRAME = 64 * 1024
INT64 = range(-(2**63), 2**63)
MAX_ELECTION_EPOCH = 2**62
# A peer needs one incoming connection (two while a reconnect overlaps a dead one): more claiming
# its sid close the oldest, so nobody piles up sockets in its name.
MAX_INCOMING_PER_PEER = 4


class ElectionNet:
    """Election transport for server ``my_id``; ``addresses`` maps every sid to (host, port)."""

    def __init__(
        self,
        my_id: int,
        addresses: dict[int, tuple[str, int]],
        *,
        listeners: list[trio.abc.Listener[trio.abc.Stream]] | None = None,
        network: Network | None = None,
        retry_initial: float = 0.05,
        retry_max: float = 1.0,
        connect_timeout: float = 5.0,
        incoming_buffer: int = 1024,
    ) -> None:
        """``listeners``: already-bound election sockets (tests bind port 0 first to learn it)."""
        if my_id not in addresses:
            raise ValueError(f"server {my_id} has no election address")
        self.my_id = my_id
        self.addresses = dict(addresses)
        self.peers = tuple(sorted(sid for sid in self.addresses if sid != my_id))
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.connect_timeout = connect_timeout
        self._listeners = listeners
        self.network: Network = network or TcpNetwork()
        self._pending: dict[int, Notification] = {}
        self._wakeups: dict[int, trio.Event] = {sid: trio.Event() for sid in self.peers}
        self._redial: dict[int, trio.Event] = {sid: trio.Event() for sid in self.peers}
        self._incoming_send, self.incoming = trio.open_memory_channel[Notification](incoming_buffer)
        self._incoming_by_sid: dict[int, list[trio.CancelScope]] = {}  # per peer, oldest first
        self.ports: list[int] = []  # what we are bound to, once run() has started

    def send(self, sid: int, n: Notification) -> None:
        """Queue ``n`` for ``sid``, replacing any notification not yet sent to it; never blocks."""
        if sid not in self._wakeups:
            raise ValueError(f"no election peer {sid}")
        self._pending[sid] = n
        self._wakeups[sid].set()

    async def run(
        self,
        *,
        listeners: list[trio.abc.Listener[trio.abc.Stream]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind (unless given listeners, here or at construction), connect to every peer, serve
        until cancelled."""
        listeners = listeners or self._listeners
        if listeners is None:
            host, port = self.addresses[self.my_id]
            listeners = await self.network.listen(host, port)
        self.ports = sorted(
            {int(lst.socket.getsockname()[1]) for lst in listeners if isinstance(lst, trio.SocketListener)}
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._receive_from, listeners)
                for sid in self.peers:
                    nursery.start_soon(self._send_to, sid)
                task_status.started()
        finally:
            self._incoming_send.close()

    # -- outgoing: one sending connection per peer ------------------------------------------

    async def _send_to(self, sid: int) -> None:
        host, port = self.addresses[sid]
        delay = self.retry_initial
        unreachable = False  # said so at INFO: once per outage, not once per retry
        while True:
            stream: trio.abc.Stream | None = None
            error = f"no answer in {self.connect_timeout:.0f}s"
            with trio.move_on_after(self.connect_timeout):
                try:
                    stream = await self.network.connect(host, port)
                except OSError as e:  # trio's names the address; the refusal is inside its cause
                    cause = root_cause(e.__cause__) if e.__cause__ is not None else e
                    error = (cause.strerror if isinstance(cause, OSError) else None) or str(e)
            if stream is None:
                log.log(
                    logging.DEBUG if unreachable else logging.INFO,
                    "election: cannot reach server %d at %s:%d (%s); trying again",
                    sid, host, port, error,
                )  # fmt: skip
                unreachable = True
                # Until the back-off ends or the peer says hello here (it is up now: a server
                # that restarted must hear our vote before it settles with the others).
                self._redial[sid] = redial = trio.Event()
                with trio.move_on_after(delay):
                    await redial.wait()
                delay = min(delay * 2, self.retry_max)
                continue
            if unreachable:
                log.info("election: reached server %d at %s:%d", sid, host, port)
                unreachable = False
            connected_at = trio.current_time()
            async with stream:
                try:
                    async with trio.open_nursery() as nursery:
                        # The peer never writes to this connection, so anything readable means it
                        # hung up (restart, rejected hello): reconnect now rather than writing the
                        # next vote into a dead socket.
                        nursery.start_soon(self._watch_hangup, stream, nursery.cancel_scope)
                        await self._pump(sid, stream)
                except BaseException as group:  # the nursery wraps what the pump raised in a group
                    cause = root_cause(group)
                    if not isinstance(cause, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                        raise
                    log.debug("election: connection to server %d lost: %s", sid, cause)
            # Back off unless the link had been healthy for a while: a peer that keeps hanging up
            # on us (say, our sid is not in its config) must not be redialled in a tight loop.
            if trio.current_time() - connected_at > self.retry_max:
                delay = self.retry_initial
            await trio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def _pump(self, sid: int, stream: trio.abc.Stream) -> None:
        await stream.send_all(encode_frame(["hello", self.my_id]))
        while True:
            while sid not in self._pending:
                self._wakeups[sid] = event = trio.Event()
                await event.wait()
            n = self._pending.pop(sid)
            try:
                frame = encode_frame(n.pack())
            except (ValueError, OverflowError) as e:  # cannot be sent (a number beyond 64 bits)
                log.error("election: dropping a notification to server %d that cannot be encoded: %s", sid, e)
                continue
            try:
                await stream.send_all(frame)
            except BaseException:
                # Not (known to be) sent: keep it for the next connection unless superseded.
                self._pending.setdefault(sid, n)
                raise

    @staticmethod
    async def _watch_hangup(stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.receive_some(1)
        scope.cancel()

    # -- incoming: connections that only receive --------------------------------------------

    async def _receive_from(self, stream: trio.abc.Stream) -> None:
        scope = trio.CancelScope()
        async with stream:
            try:
                with scope:
                    await self._read_notifications(stream, scope)
                if scope.cancelled_caught:
                    log.debug("election: connection from %s closed: silent, or replaced", _peer_name(stream))
            except (WireError, ValueError) as e:
                log.warning("election: closing connection from %s: %s", _peer_name(stream), e)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                log.debug("election: connection from %s lost: %s", _peer_name(stream), e)
            except Exception:  # a bug in handling one connection must not stop the server
                log.exception("election: closing connection from %s", _peer_name(stream))
            finally:
                for sid, scopes in list(self._incoming_by_sid.items()):
                    if scope in scopes:
                        scopes.remove(scope)
                        if not scopes:
                            del self._incoming_by_sid[sid]

    async def _read_notifications(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        decoder = FrameDecoder(MAX_ELECTION_FRAME)
        sid: int | None = None
        scope.deadline = trio.current_time() + self.connect_timeout  # to say who it is
        while True:
            data = await stream.receive_some()
            if not data:
                return
            decoder.feed(data)
            while (msg := decoder.next_message()) is not None:
                if sid is None:
                    sid = self._hello(msg)
                    self._redial[sid].set()
                    scope.deadline = math.inf
                    mine = self._incoming_by_sid.setdefault(sid, [])
                    mine.append(scope)
                    if len(mine) > MAX_INCOMING_PER_PEER:
                        mine.pop(0).cancel()
                    continue
                _check_vote_shape(msg)
                n = Notification.unpack(msg)
                if n.sid != sid:
                    raise ValueError(f"server {sid} sent a notification signed by {n.sid}")
                try:
                    await self._incoming_send.send(n)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return  # run() is ending or nobody listens any more

    def _hello(self, msg: list[object]) -> int:
        if len(msg) != 2 or msg[0] != "hello":
            raise ValueError(f"expected hello, got {brief(msg)}")
        sid = msg[1]
        if not isinstance(sid, int) or isinstance(sid, bool) or sid not in self.peers:
            raise ValueError(f"hello from unknown server {brief(sid)}")
        return sid


def _check_vote_shape(msg: list[object]) -> None:
    """Seven scalars, numbers within 64 bits, before Notification.unpack looks (and reprs).
    The election epoch stays below 2**62: a clock counts on from the highest it has seen, and
    must never count past what it can send."""
    if len(msg) != 7 or msg[0] != "vote" or not isinstance(msg[2], str) or len(msg[2]) > 16:
        raise ValueError(f"not a vote message: {brief(msg)}")
    for value in msg[1:2] + msg[3:]:
        if not isinstance(value, int) or isinstance(value, bool) or value not in INT64:
            raise ValueError(f"not a 64-bit number in a vote message: {brief(value)}")
    if msg[6] >= MAX_ELECTION_EPOCH:  # type: ignore[operator]
        raise ValueError(f"election epoch {msg[6]} out of range")


def _peer_name(stream: trio.abc.Stream) -> str:
    if not isinstance(stream, trio.SocketStream):
        return repr(stream)
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
