"""Simulated links between named hosts, for running real ensemble members and clients in one
process under trio's MockClock (see zkpy/testing/cluster.py).

`SimNetwork` is the wire; `SimNetwork.host(name)` gives the programs on one host their
`zkpy.replication.environment.Network` (listen/connect), so server code runs unchanged.

The model is TCP's, because the code under test was written against TCP:

- a connection is two directions, each an ordered queue of chunks stamped with the time they
  arrive (now + a random latency, never before the previous chunk): no loss, no duplication, no
  reordering inside a stream;
- faults are the ones TCP shows to programs: stalls (a partition or a one-way cut holds bytes,
  including a close, until `heal()`; nobody is told, as with real TCP the programs' own timeouts
  have to notice), connect timeouts, refused connects, and resets when a host's process dies;
- a host whose process died (`crash_host`) has its listeners closed; its peers receive what it had
  sent and then a reset (trio.BrokenResourceError), one latency later, or later still if the reset
  is held by a partition;
- delay spikes (`delay_spike`): for a while every trip, or every trip to or from some hosts, takes
  longer; order still holds, so the first message after the spike starts arrives late;
- connection resets (`reset`): live connections between two hosts break mid-stream, as after an
  RST from a middlebox or a NAT that forgot them; both ends see trio.BrokenResourceError at their
  next send or receive, and what was in flight or unread is lost (Linux discards a reset socket's
  receive queue). This is the only way bytes are lost on our links: TCP's own loss,
  duplication and reordering are repaired below the programs, so they are not simulated; new
  connections are not hindered;
- a process pause (`pause`, SIGSTOP-like): every link to and from the host holds its bytes, both
  ways, until `resume()` (or heal()), then the backlog arrives at once. Connects to and from it
  still complete, as the kernel answers the handshake of a stopped process. Unlike a real
  SIGSTOP the paused server's own code keeps running (trio cannot stop one server's tasks inside
  the shared simulation): its timers fire, so it notices its silent peers and acts on it (a
  leader steps down, a learner looks for a new leader) during the pause rather than on waking,
  and what it sends meanwhile is delivered on resume. What its peers see is a real pause's:
  silence, then a burst of stale messages from a server the ensemble may have replaced.

Every random choice comes from the one `random.Random` given, and every wait is on trio's clock,
so a seed replays a run exactly (trio's own scheduling must be seeded too; cluster.py does that).
Faults add up until `heal()` removes them all (a delay spike ends by itself when its time is up).
"""

from __future__ import annotations

import errno
import itertools
import math
import random
from collections import deque
from collections.abc import Iterable

import trio

# Addresses that mean "this host" to listen() and connect().
_THIS_HOST = frozenset({"", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1"})
FIRST_EPHEMERAL_PORT = 40000
DEFAULT_CONNECT_TIMEOUT = 1.0


class _Marker:
    """The end of a direction, sent in order behind its bytes."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EOF = _Marker("EOF")  # the writer closed: the reader sees b"" once everything before it is read
_RESET = _Marker("RESET")  # the writer's process died: the reader sees BrokenResourceError


class _Pipe:
    """One direction of a connection, src -> dst."""

    def __init__(self, src: str, dst: str, port: int = 0) -> None:
        self.src = src
        self.dst = dst
        self.port = port  # the listening port of the connection (its server side)
        self.chunks: deque[tuple[float, bytes | _Marker]] = deque()
        self.last_due = -math.inf  # arrival time of the newest chunk: later chunks never overtake it
        self.end_due: float | None = None  # when the end marker arrives, once sent
        self.end_seen = False  # the end has reached the reader (latched: it stays seen)
        self.reader_gone = False  # the reader closed or died: bytes sent now are dropped
        self.event = trio.Event()

    def wake(self) -> None:
        """Something changed that a waiting reader must look at again."""
        self.event.set()
        self.event = trio.Event()


class SimSocket:
    """Just enough of a socket for the code that asks its stream or listener who it is (the
    server logs and limits connections per remote address; election code names its peers)."""

    def __init__(self, local: tuple[str, int], remote: tuple[str, int] | None) -> None:
        self.local = local
        self.remote = remote

    def getsockname(self) -> tuple[str, int]:
        return self.local

    def getpeername(self) -> tuple[str, int]:
        if self.remote is None:
            raise OSError(errno.ENOTCONN, "not connected")
        return self.remote

    def setsockopt(self, *args: object) -> None:
        """Options (TCP_NODELAY, ...) change nothing on a simulated link."""

    def getsockopt(self, *args: object) -> int:
        return 0


class SimStream(trio.abc.Stream):
    """One end of a simulated TCP connection."""

    def __init__(
        self, net: SimNetwork, local: tuple[str, int], remote: tuple[str, int], out: _Pipe, inp: _Pipe
    ) -> None:
        self._net = net
        self.host = local[0]
        self.socket = SimSocket(local, remote)
        self._out = out
        self._inp = inp
        self._closed = False  # our own aclose()
        self._dead = False  # our host's process died
        self._reset = False  # the connection was reset under us (SimNetwork.reset)
        self._sending = False
        self._receiving = False

    def __repr__(self) -> str:
        (lh, lp), (rh, rp) = self.socket.local, self.socket.getpeername()
        return f"<SimStream {lh}:{lp} -> {rh}:{rp}>"

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._dead:
            raise trio.BrokenResourceError(f"host {self.host} crashed")
        if self._reset:
            raise trio.BrokenResourceError("connection reset by peer")

    def _peer_ended(self) -> bool:
        """Has the peer's close or reset reached us? Then sending fails, as after TCP's RST."""
        inp = self._inp
        if inp.end_seen:
            return True
        if (
            inp.end_due is not None
            and trio.current_time() >= inp.end_due
            and not self._net.blocked(inp.src, inp.dst, inp.port)
        ):
            inp.end_seen = True
        return inp.end_seen

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Queue the bytes at once (the buffer is unbounded); they arrive after a latency, in order."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        # Cancellation first: the code of a crashed host (its scope cancelled) must stop at its next
        # checkpoint, as a killed process does, rather than see an error and act on it.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        if self._peer_ended():
            raise trio.BrokenResourceError("connection reset by peer")
        if data:
            self._net._send(self._out, bytes(data))
        self._sending = True
        try:
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Every chunk that has arrived (up to max_bytes); b"" once the peer closed and all was read."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()  # before any error, as in send_all
        self._check()
        self._receiving = True
        try:
            return await self._receive(max_bytes or 65536)
        finally:
            self._receiving = False

    async def _receive(self, max_bytes: int) -> bytes:
        inp, net = self._inp, self._net
        waited = False  # a wait is a checkpoint already: no need for another before returning
        while True:
            # A wake-up (a heal, say) and the crash of our own host can come in one instant: the
            # cancellation must win, or the dead host's code would see an error and act on it.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check()
            wait_until = math.inf
            if inp.chunks and not net.blocked(inp.src, inp.dst, inp.port):
                due, payload = inp.chunks[0]
                now = trio.current_time()
                if due <= now:
                    if payload is _EOF:
                        inp.end_seen = True
                        if not waited:
                            await trio.lowlevel.cancel_shielded_checkpoint()
                        return b""
                    if payload is _RESET:
                        inp.end_seen = True
                        raise trio.BrokenResourceError("connection reset by peer")
                    data = self._take_due(now, max_bytes)
                    if not waited:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
                wait_until = due
            event = inp.event
            if wait_until == math.inf:
                await event.wait()  # (a cancel scope with no deadline would only cost time)
            else:
                with trio.move_on_at(wait_until):
                    await event.wait()
            waited = True

    def _take_due(self, now: float, max_bytes: int) -> bytes:
        """Coalesce the data chunks that have arrived, as a socket's receive buffer does."""
        chunks = self._inp.chunks
        parts: list[bytes] = []
        size = 0
        while chunks and size < max_bytes:
            due, payload = chunks[0]
            if due > now or isinstance(payload, _Marker):
                break
            room = max_bytes - size
            if len(payload) > room:
                parts.append(payload[:room])
                chunks[0] = (due, payload[room:])
                size += room
                break
            chunks.popleft()
            parts.append(payload)
            size += len(payload)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Close our end: the peer reads what we sent, then b""; what it sends us from now on is lost."""
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._dead:
            self._net._end(self._out, _EOF)
        self._inp.reader_gone = True
        self._inp.chunks.clear()
        self._inp.wake()  # a task blocked in receive_some gets ClosedResourceError
        self._net._streams.pop(self, None)

    def _reset_now(self) -> None:
        """The connection was reset: this end fails at its next send or receive (a reader blocked
        now is woken to fail), and what it had not read yet is lost."""
        if self._closed or self._dead or self._reset:
            return
        self._reset = True
        self._inp.reader_gone = True
        self._inp.chunks.clear()
        self._inp.wake()
        self._net._streams.pop(self, None)

    def _crash(self) -> None:
        """Our host's process died: the peer gets a reset behind what we sent; we are unusable."""
        if self._closed or self._dead:
            return
        self._dead = True
        self._net._end(self._out, _RESET)
        self._inp.reader_gone = True
        self._inp.chunks.clear()
        self._inp.wake()
        self._net._streams.pop(self, None)


class SimListener(trio.abc.Listener[trio.abc.Stream]):
    """A listening port: connects queue here until accepted."""

    def __init__(self, net: SimNetwork, host: str, port: int) -> None:
        self._net = net
        self.host = host
        self.port = port
        self.socket = SimSocket((host, port), None)
        self._backlog: deque[SimStream] = deque()
        self._closed = False
        self._event = trio.Event()

    def __repr__(self) -> str:
        return f"<SimListener {self.host}:{self.port}>"

    def _offer(self, stream: SimStream) -> None:
        self._backlog.append(stream)
        self._wake()

    def _wake(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def accept(self) -> trio.abc.Stream:
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()  # a crashed host's accept loop just stops
            if self._closed:
                raise trio.ClosedResourceError("this listener was closed")
            if self._backlog:
                stream = self._backlog.popleft()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return stream
            await self._event.wait()

    async def aclose(self) -> None:
        self._close_now()
        await trio.lowlevel.checkpoint()

    def _close_now(self) -> None:
        """Stop listening; connections never accepted are reset, as the kernel does."""
        if self._closed:
            return
        self._closed = True
        if self._net._listeners.get((self.host, self.port)) is self:
            del self._net._listeners[(self.host, self.port)]
        while self._backlog:
            self._backlog.popleft()._crash()
        self._wake()


class HostNetwork:
    """The network as the programs on one host see it (a zkpy.replication.environment.Network)."""

    def __init__(self, net: SimNetwork, name: str) -> None:
        self.net = net
        self.name = name

    def __repr__(self) -> str:
        return f"<HostNetwork {self.name}>"

    def _resolve(self, host: str) -> str:
        return self.name if host in _THIS_HOST else host

    async def listen(self, host: str, port: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """Listen on this host (`host` must name it); port 0 picks a free one."""
        await trio.lowlevel.checkpoint()
        if self._resolve(host) != self.name:
            raise OSError(errno.EADDRNOTAVAIL, f"{host!r} is not an address of host {self.name}")
        net = self.net
        if port == 0:
            port = net._ephemeral_port()
        if (self.name, port) in net._listeners:
            raise OSError(errno.EADDRINUSE, f"{self.name}:{port} is already in use")
        listener = SimListener(net, self.name, port)
        net._listeners[(self.name, port)] = listener
        return [listener]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A round trip to `host`: refused when nobody listens there, timed out when the hosts cannot
        reach each other for the whole connect timeout (a heal before then lets it through)."""
        net, src, dst = self.net, self.name, self._resolve(host)
        deadline = trio.current_time() + net.connect_timeout
        while True:
            # A paused host's kernel still answers the handshake: only routes count here.
            while net._unroutable(src, dst, port) or net._unroutable(dst, src, port):
                if trio.current_time() >= deadline:
                    raise TimeoutError(errno.ETIMEDOUT, f"connecting {src} to {dst}:{port} timed out")
                event = net._changed
                with trio.move_on_at(deadline):
                    await event.wait()
            await trio.sleep(net.latency(src, dst))  # the SYN
            if not (net._unroutable(src, dst, port) or net._unroutable(dst, src, port)):
                break  # else it was lost on the way: the SYN is sent again
        listener = net._listeners.get((dst, port))
        if listener is None:
            await trio.sleep(net.latency(dst, src))  # the RST coming back
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on {dst}:{port}")
        local = (src, net._ephemeral_port())
        remote = (dst, port)
        up, down = _Pipe(src, dst, port), _Pipe(dst, src, port)
        client = SimStream(net, local, remote, out=up, inp=down)
        server = SimStream(net, remote, local, out=down, inp=up)
        net._streams[client] = net._streams[server] = None
        listener._offer(server)
        try:
            await trio.sleep(net.latency(dst, src))  # the SYN-ACK
        except BaseException:
            client._close_now()
            raise
        return client


class SimNetwork:
    """In-memory links between named hosts, with seeded latencies and faults. Every host ("s1",
    "c1", ...) gets its own view from host(); faults take effect at once and add up until heal()."""

    def __init__(
        self,
        rng: random.Random,
        *,
        latency: tuple[float, float] = (0.0002, 0.002),
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.rng = rng
        self.latency_range = latency
        self.connect_timeout = connect_timeout
        self._hosts: dict[str, HostNetwork] = {}
        self._listeners: dict[tuple[str, int], SimListener] = {}
        # Open ends, to wake on heal and reset on crash; a dict, not a set, so they are visited in
        # the order they were made (a set's order follows addresses, and latencies are drawn here).
        self._streams: dict[SimStream, None] = {}
        self._ports = itertools.count(FIRST_EPHEMERAL_PORT)
        self._partitions: list[list[frozenset[str]]] = []
        self._isolated: set[str] = set()
        self._cuts: set[tuple[str, str]] = set()
        self._port_cuts: set[tuple[str, str, int]] = set()  # (src, dst, the connection's server port)
        self._paused: set[str] = set()
        # (until, extra seconds, hosts it touches or None for all, or one direction (src, dst))
        self._spikes: list[tuple[float, float, frozenset[str] | tuple[str, str] | None]] = []
        self._changed = trio.Event()  # set (and replaced) whenever connectivity changes

    def host(self, name: str) -> HostNetwork:
        """The Network for programs running on host `name`."""
        if name not in self._hosts:
            self._hosts[name] = HostNetwork(self, name)
        return self._hosts[name]

    # -- what the links do ----------------------------------------------------------------

    def latency(self, src: str | None = None, dst: str | None = None) -> float:
        """One trip's delay (from src to dst): a seeded draw, plus any delay spike in force on it."""
        delay = self.rng.uniform(*self.latency_range)
        if self._spikes:
            now = trio.current_time()
            self._spikes = [spike for spike in self._spikes if spike[0] > now]
            delay += sum(extra for _, extra, where in self._spikes if _spiked(where, src, dst))
        return delay

    def blocked(self, src: str, dst: str, port: int = 0) -> bool:
        """Are bytes from src to dst held right now? A host always reaches itself."""
        if src == dst:
            return False
        return src in self._paused or dst in self._paused or self._unroutable(src, dst, port)

    def _unroutable(self, src: str, dst: str, port: int = 0) -> bool:
        """Is the way from src to dst cut (a partition, an isolation or a one-way cut)? A paused
        host is still reachable: its kernel holds what arrives."""
        if src == dst:
            return False
        if (src, dst) in self._cuts or src in self._isolated or dst in self._isolated:
            return True
        if port and (src, dst, port) in self._port_cuts:
            return True
        for groups in self._partitions:
            a = next((i for i, g in enumerate(groups) if src in g), None)
            b = next((i for i, g in enumerate(groups) if dst in g), None)
            if a is not None and b is not None and a != b:
                return True
        return False

    def _send(self, pipe: _Pipe, data: bytes) -> None:
        if pipe.reader_gone or pipe.end_due is not None:
            return  # the peer is gone (its reset or close will tell the sender), or we ended
        pipe.last_due = max(pipe.last_due, trio.current_time() + self.latency(pipe.src, pipe.dst))
        pipe.chunks.append((pipe.last_due, data))
        pipe.wake()

    def _end(self, pipe: _Pipe, marker: _Marker) -> None:
        if pipe.end_due is not None:
            return
        pipe.last_due = max(pipe.last_due, trio.current_time() + self.latency(pipe.src, pipe.dst))
        pipe.end_due = pipe.last_due
        if not pipe.reader_gone:
            pipe.chunks.append((pipe.last_due, marker))
            pipe.wake()

    def _ephemeral_port(self) -> int:
        return next(self._ports)

    def _connectivity_changed(self) -> None:
        """Wake every reader and connect that may now proceed (or must now wait)."""
        for stream in list(self._streams):
            stream._inp.wake()
        self._changed.set()
        self._changed = trio.Event()

    # -- faults ---------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Hosts in different groups cannot reach each other (existing connections stall both
        ways, connects time out). A host named in no group still reaches everyone."""
        self._partitions.append([frozenset(g) for g in groups])
        self._connectivity_changed()

    def isolate(self, name: str) -> None:
        """`name` reaches nobody else, and nobody reaches it, until heal()."""
        self._isolated.add(name)
        self._connectivity_changed()

    def cut(self, src: str, dst: str) -> None:
        """One way: bytes from src to dst are held until heal(); connects between them time out
        (the SYN or its answer is lost)."""
        self._cuts.add((src, dst))
        self._connectivity_changed()

    def uncut(self, src: str, dst: str) -> None:
        """Undo cut(src, dst) alone (other faults stay)."""
        self._cuts.discard((src, dst))
        self._connectivity_changed()

    def rejoin(self, name: str) -> None:
        """Undo isolate(name) alone (other faults stay)."""
        self._isolated.discard(name)
        self._connectivity_changed()

    def heal(self) -> None:
        """Every host reaches every other again, paused hosts resume; held bytes arrive, in order."""
        self._partitions.clear()
        self._isolated.clear()
        self._cuts.clear()
        self._port_cuts.clear()
        self._paused.clear()
        self._connectivity_changed()

    def cut_port(self, a: str, b: str, port: int) -> None:
        """Connections between a and b to `port` (on either side) hold their bytes both ways and new
        ones time out, while every other port between them works: a firewall rule on the quorum
        port that leaves the election port open, say, so a server still tells its peers it follows
        a leader it cannot reach."""
        self._port_cuts |= {(a, b, port), (b, a, port)}
        self._connectivity_changed()

    def uncut_port(self, a: str, b: str, port: int) -> None:
        self._port_cuts -= {(a, b, port), (b, a, port)}
        self._connectivity_changed()

    def pause(self, name: str) -> None:
        """The host's process is stopped (SIGSTOP-like, see the module docstring): every link to and
        from it holds its bytes, both ways, until resume(name) or heal(); connects still complete.
        Its own code keeps running, unlike a real SIGSTOP."""
        self._paused.add(name)
        self._connectivity_changed()

    def resume(self, name: str) -> int:
        """The paused host runs again: its backlog, both ways, arrives at once (what other faults
        still hold stays held). Returns how many chunks were held on its links."""
        if name not in self._paused:
            return 0
        now = trio.current_time()
        held = sum(
            1
            for stream in self._streams
            if stream.host == name or stream._inp.src == name
            for due, _ in stream._inp.chunks
            if due <= now
        )
        self._paused.discard(name)
        self._connectivity_changed()
        return held

    def paused(self, name: str) -> bool:
        return name in self._paused

    def reset(self, a: str, b: str | None = None) -> int:
        """Reset every live connection between hosts a and b (b None: every connection of a): both
        ends fail at their next send or receive, and bytes in flight or unread are lost. New
        connections are not hindered. Returns how many connection ends were reset."""
        ends = 0
        for stream in list(self._streams):
            here, there = stream.host, stream._inp.src
            if (here == a and (b is None or there == b)) or (there == a and (b is None or here == b)):
                stream._reset_now()
                ends += 1
        self._connectivity_changed()
        return ends

    def crash_host(self, name: str) -> None:
        """The host's process died: its listeners close, every connection of its ends with a reset
        that its peers see once everything it sent before has arrived. A paused host is resumed
        first (kill -9 of a stopped process: the model's backlog goes out, then the resets)."""
        self._paused.discard(name)
        for listener in [lst for (host, _), lst in self._listeners.items() if host == name]:
            listener._close_now()
        for stream in [s for s in self._streams if s.host == name]:
            stream._crash()
        self._connectivity_changed()

    def delay_spike(self, seconds: float, duration: float, hosts: Iterable[str] | None = None) -> None:
        """For `duration` seconds from now, every trip (or every trip to or from one of `hosts`)
        takes `seconds` longer; order still holds, so a spike longer than a peer's timeout shows
        as silence. It ends by itself; end_spikes() ends every spike at once."""
        chosen = None if hosts is None else frozenset(hosts)
        self._spikes.append((trio.current_time() + duration, seconds, chosen))

    def delay_one_way(self, src: str, dst: str, seconds: float, duration: float) -> None:
        """For `duration` seconds, trips from src to dst only take `seconds` longer (F1 -> leader
        slow while the leader -> F1 way and every other link are not): a server's forwards fall
        behind while it still hears its leader, as on a congested link."""
        self._spikes.append((trio.current_time() + duration, seconds, (src, dst)))

    def end_spikes(self) -> None:
        self._spikes.clear()


def _spiked(where: frozenset[str] | tuple[str, str] | None, src: str | None, dst: str | None) -> bool:
    if where is None or src is None:
        return True
    if isinstance(where, tuple):
        return (src, dst) == where
    return src in where or dst in where
