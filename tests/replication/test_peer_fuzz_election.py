"""The election port against what a fuzzer sent (scripts/fuzz_peer_ports.py), on in-memory
streams: deep junk, numbers beyond 64 bits, connections that never say who they are, and many
connections claiming one peer."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from zkpy.replication.election import LOOKING, Notification, Vote
from zkpy.replication.election_net import MAX_INCOMING_PER_PEER, ElectionNet
from zkpy.replication.wire import HEADER, FrameDecoder, encode_frame


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- the election port --------------------------------------------------------------------------
def election_net(**kw: Any) -> ElectionNet:
    return ElectionNet(1, {1: ("h1", 1), 2: ("h2", 2), 3: ("h3", 3)}, **kw)


async def feed(net: ElectionNet, data: bytes, close: bool = True) -> list[Notification]:
    """Serve one incoming connection that sends `data`; what reached the election."""
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net._receive_from, right)
        await left.send_all(data)
        if close:
            await left.aclose()
    out = []
    while True:
        try:
            out.append(net.incoming.receive_nowait())
        except trio.WouldBlock:
            return out


VALID = Notification(2, LOOKING, Vote(2, 5, 1), 3)


@pytest.mark.parametrize(
    "bad",
    [
        encode_frame(nested(1020)),  # a repr of it raised RecursionError out of the handler: the server died
        encode_frame(["hello", nested(1020)]),
        encode_frame(["hello", 2]) + encode_frame(nested(1020)),
        encode_frame(["hello", 2]) + encode_frame(["vote", 2, nested(1020), 2, 0, 0, 1]),
        encode_frame(["hello", 2]) + encode_frame(["vote", 2, LOOKING, 2, nested(1020), 0, 1]),
        encode_frame(["hello", 2]) + encode_frame(["vote", 2, LOOKING, 2, 2**64 - 1, 0, 1]),
        encode_frame(["hello", 2]) + encode_frame(["vote", 2, LOOKING, 2, 0, 0, 2**62]),
        encode_frame(["hello", 2]) + encode_frame(["vote", 2, "LOOKING" * 10_000, 2, 0, 0, 1]),
    ],
)
async def test_junk_on_the_election_port_closes_only_that_connection(
    bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    net = election_net()
    with caplog.at_level(logging.WARNING, logger="zkpy.replication.election_net"):
        assert await feed(net, bad + encode_frame(VALID.pack()), close=False) == []
    assert all(len(r.getMessage()) < 300 for r in caplog.records)
    assert await feed(net, encode_frame(["hello", 2]) + encode_frame(VALID.pack())) == [VALID]


async def test_a_vote_that_took_our_clock_out_of_range_is_dropped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the fuzzer: a forged election epoch of 2**64 - 1, adopted and counted on, could not
    be encoded, and the sending task's OverflowError stopped the server."""
    net = election_net()
    left, right = trio.testing.memory_stream_pair()
    net.send(2, Notification(1, LOOKING, Vote(1, 0, 0), 2**64))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(net._pump, 2, right)
            decoder = FrameDecoder()
            decoder.feed(await left.receive_some())
            assert decoder.next_message() == ["hello", 1]
            net.send(2, VALID)
            while (msg := decoder.next_message()) is None:
                decoder.feed(await left.receive_some())
            assert msg == VALID.pack()
            nursery.cancel_scope.cancel()
    assert any("cannot be encoded" in r.getMessage() for r in caplog.records)


async def test_a_connection_that_names_no_peer_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    net = election_net(connect_timeout=5.0)
    left, right = trio.testing.memory_stream_pair()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net._receive_from, right)
        await left.send_all(HEADER.pack(100, 0))  # a header, then nothing
    assert 5.0 <= trio.current_time() - start < 6.0
    assert await left.receive_some() == b""


async def test_a_peer_keeps_only_a_few_incoming_connections(autojump_clock: trio.testing.MockClock) -> None:
    net = election_net()
    ends = []
    done = []
    async with trio.open_nursery() as nursery:
        for i in range(MAX_INCOMING_PER_PEER + 3):
            left, right = trio.testing.memory_stream_pair()

            async def serve(stream: trio.abc.Stream = right, i: int = i) -> None:
                await net._receive_from(stream)
                done.append(i)

            nursery.start_soon(serve)
            await left.send_all(encode_frame(["hello", 2]))
            ends.append(left)
            await trio.sleep(1)
        assert sorted(done) == [0, 1, 2]  # the oldest went, the newest stay
        assert await ends[0].receive_some() == b""
        await ends[-1].send_all(encode_frame(VALID.pack()))
        assert await net.incoming.receive() == VALID
        nursery.cancel_scope.cancel()
