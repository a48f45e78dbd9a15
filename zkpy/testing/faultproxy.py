"""A frame-aware TCP proxy that injects the faults a ZooKeeper client must survive.

It sits between a client and a server, reads the length-prefixed frames in both directions (the
handshake included) and, seeded and at rates you choose, per frame:

- server to client: delivers a frame in small pieces (`split`); holds frames a moment so several
  arrive in one read (`merge`); swallows a frame the server sent and cuts the connection
  (`drop`: the request was applied, its reply is lost); delivers part of a frame and cuts
  (`cut_mid_frame`); delivers a frame together with an over-long frame header in the same
  send (`overlong`: the client must reject it, after handling what came before it);
- client to server: forwards part of a request and cuts (`cut_request`: never applied);
- either way, rarely: stops forwarding anything while keeping the sockets open (`blackhole`),
  so only the client's read timeout can notice.

TCP cannot lose one frame and deliver the next, so every lost frame ends its connection (or,
for the blackhole, every frame after it is lost too). `counts` says how often each fault fired.
Runs in the caller's trio loop (tests) or its own (scripts/fuzz_client_proxy.py).
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass, field

import trio

_LEN = struct.Struct(">i")
_FRAME_LIMIT = 0xFFFFF  # jute.maxbuffer's default: what a client rejects above


@dataclass
class Faults:
    """Probabilities per frame (server to client unless said otherwise)."""

    split: float = 0.0
    merge: float = 0.0
    drop: float = 0.0
    cut_mid_frame: float = 0.0
    overlong: float = 0.0
    cut_request: float = 0.0  # client to server
    blackhole: float = 0.0  # per frame, either way

    @classmethod
    def all(cls, scale: float = 1.0) -> Faults:
        """Every fault at once, at rates that let a run make progress between faults."""
        return cls(
            split=0.05 * scale,
            merge=0.05 * scale,
            drop=0.004 * scale,
            cut_mid_frame=0.003 * scale,
            overlong=0.003 * scale,
            cut_request=0.003 * scale,
            blackhole=0.0,
        )


class _Cut(Exception):
    pass


class _Blackhole(Exception):
    pass


class Listening:
    """A TCP server on an ephemeral 127.0.0.1 port, each connection handed to `_handle`."""

    port: int

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        raise NotImplementedError


@dataclass
class FaultProxy(Listening):
    """Forward 127.0.0.1:port to `target`, injecting `faults` with a Random seeded by `seed`."""

    target: tuple[str, int]
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    port: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    enabled: bool = True  # False: forward faithfully (e.g. while a test checks the outcome)
    # Targeted fault: the reply to the next request with one of these opcodes is swallowed and its
    # connection cut (the request was applied; the client never learns it). One-shot per opcode.
    drop_reply_of: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._scopes: set[trio.CancelScope] = set()

    def cut_all(self) -> None:
        """Cut every connection now."""
        for scope in list(self._scopes):
            scope.cancel()

    def _roll(self, name: str, rng: random.Random) -> bool:
        rate: float = getattr(self.faults, name)
        if self.enabled and rate > 0 and rng.random() < rate:
            self.counts[name] += 1
            return True
        return False

    async def _handle(self, client: trio.SocketStream) -> None:
        rng = random.Random(self._rng.getrandbits(64))
        self.counts["connections"] += 1
        doomed: set[int] = set()  # xids whose replies drop_reply_of swallows
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client, server, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, server, client, rng, True, nursery.cancel_scope, doomed)
                    nursery.start_soon(self._pump, client, server, rng, False, nursery.cancel_scope, doomed)
            finally:
                self._scopes.discard(scope)

    async def _pump(
        self,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        rng: random.Random,
        to_client: bool,
        scope: trio.CancelScope,
        doomed: set[int],
    ) -> None:
        buf = bytearray()
        first = True  # the handshake frame: no xid
        raw = False  # forward untouched
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:  # a half-close: pass it on, and let the other direction finish
                    if buf:
                        await dst.send_all(bytes(buf))
                    await dst.send_eof()
                    return
                buf += data
                if to_client and self._roll("merge", rng):
                    with trio.move_on_after(0.002):  # let more frames pile up behind this one
                        while more := await src.receive_some(65536):
                            buf += more
                out = bytearray()
                if first and len(buf) >= 4 and not 0 <= _LEN.unpack_from(buf, 0)[0] <= 2 * _FRAME_LIMIT:
                    raw = True  # not a ZooKeeper session (a four-letter word such as isro)
                if raw:
                    out += buf
                    buf.clear()
                while len(buf) >= 4:
                    (n,) = _LEN.unpack_from(buf, 0)
                    if n < 0 or len(buf) < 4 + n:
                        break
                    frame = bytes(buf[: 4 + n])
                    del buf[: 4 + n]
                    if not first and len(frame) >= 12:
                        xid, op = struct.unpack_from(">ii", frame, 4)
                        if not to_client and op in self.drop_reply_of:
                            self.drop_reply_of.discard(op)
                            doomed.add(xid)
                        elif to_client and xid in doomed:
                            self.counts["drop_reply_of"] += 1
                            if out:
                                await dst.send_all(bytes(out))
                            raise _Cut
                    first = False
                    try:
                        await self._one(frame, out, dst, rng, to_client)
                    except _Blackhole:
                        # Swallow everything from now on; the client's read timeout ends this.
                        while await src.receive_some(65536):
                            pass
                        raise _Cut from None
                if out:
                    await dst.send_all(bytes(out))
        except (_Cut, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()  # a fault, or a side gone: end both directions

    async def _one(
        self, frame: bytes, out: bytearray, dst: trio.SocketStream, rng: random.Random, to_client: bool
    ) -> None:
        """Forward one frame into `out` (flushed by the caller), or act out a fault on it."""
        if self._roll("blackhole", rng):
            if out:
                await dst.send_all(bytes(out))
            raise _Blackhole
        if not to_client:
            if self._roll("cut_request", rng):
                await dst.send_all(bytes(out) + frame[: rng.randrange(len(frame))])
                raise _Cut
            out += frame
            return
        if self._roll("drop", rng):
            if out:
                await dst.send_all(bytes(out))
            raise _Cut
        if self._roll("cut_mid_frame", rng):
            await dst.send_all(bytes(out) + frame[: rng.randrange(1, len(frame))])
            raise _Cut
        if self._roll("overlong", rng):
            bogus = _LEN.pack(rng.choice([_FRAME_LIMIT + 1, 0x7FFFFFFF, -5])) + bytes(rng.randrange(0, 64))
            await dst.send_all(bytes(out) + frame + bogus)
            raise _Cut
        if self._roll("split", rng):
            if out:
                await dst.send_all(bytes(out))
                out.clear()
            pos = 0
            while pos < len(frame):
                step = rng.randrange(1, max(2, len(frame) // 2 + 1))
                await dst.send_all(frame[pos : pos + step])
                pos += step
                await trio.sleep(0)  # let the client read the piece on its own
            return
        out += frame
