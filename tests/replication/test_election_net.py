"""The election transport on real loopback sockets, driven by the pure Election."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial

import pytest
import trio

from zkpy.replication.election import FOLLOWING, LEADING, LOOKING, Election, Notification, Vote
from zkpy.replication.election_net import ElectionNet
from zkpy.replication.wire import FrameDecoder, encode_frame

HOST = "127.0.0.1"


async def bind() -> trio.SocketListener:
    (listener,) = await trio.open_tcp_listeners(0, host=HOST)
    return listener


def port_of(listener: trio.SocketListener) -> int:
    return int(listener.socket.getsockname()[1])


async def free_port() -> int:
    """A port nobody listens on (for a server that is down, or starts later)."""
    listener = await bind()
    port = port_of(listener)
    await listener.aclose()
    return port


async def drive(net: ElectionNet, election: Election, epoch: int, zxid: int) -> None:
    """The peer glue in miniature: feed notifications and deadlines, send what comes out."""

    def send(out: list[tuple[int, Notification]]) -> None:
        for sid, n in out:
            net.send(sid, n)

    send(election.start(trio.current_time(), epoch, zxid))
    while True:
        deadline = election.deadline()
        with trio.move_on_at(deadline if deadline is not None else math.inf):
            send(election.receive(trio.current_time(), await net.incoming.receive()))
        if deadline is not None and trio.current_time() >= deadline:
            send(election.tick(trio.current_time()))


async def until(predicate: Callable[[], object]) -> None:
    while not predicate():
        await trio.sleep(0.01)


async def test_three_servers_elect_the_max() -> None:
    histories = {1: (1, 50), 2: (2, 3), 3: (1, 70)}  # 2 has the newest epoch
    listeners = {sid: await bind() for sid in histories}
    addresses = {sid: (HOST, port_of(lst)) for sid, lst in listeners.items()}
    nets = {sid: ElectionNet(sid, addresses, listeners=[listeners[sid]]) for sid in histories}
    elections = {sid: Election(sid, frozenset(histories)) for sid in histories}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for sid, net in nets.items():
                await nursery.start(net.run)
                assert net.ports == [addresses[sid][1]]
            for sid, (epoch, zxid) in histories.items():
                nursery.start_soon(drive, nets[sid], elections[sid], epoch, zxid)
            await until(lambda: all(e.decided for e in elections.values()))
            nursery.cancel_scope.cancel()
    assert {sid: e.decided for sid, e in elections.items()} == dict.fromkeys(histories, Vote(2, 3, 2))
    assert [e.state for e in elections.values()] == [FOLLOWING, LEADING, FOLLOWING]


async def test_a_server_that_starts_late_is_retried_and_joins() -> None:
    listeners = {1: await bind(), 2: await bind()}
    addresses = {sid: (HOST, port_of(lst)) for sid, lst in listeners.items()}
    addresses[3] = (HOST, await free_port())  # down for now: its peers keep redialling
    voters = frozenset({1, 2, 3})
    elections = {sid: Election(sid, voters) for sid in voters}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for sid in (1, 2):
                net = ElectionNet(sid, addresses, listeners=[listeners[sid]])
                await nursery.start(net.run)
                nursery.start_soon(drive, net, elections[sid], 0, sid)
            await until(lambda: elections[1].decided and elections[2].decided)
            assert elections[2].state == LEADING  # a quorum of two elected the better of the two
            # Server 3 has the best history, but a running ensemble is joined, not overthrown.
            late = ElectionNet(3, addresses)  # binds its own port from the address
            await nursery.start(late.run)
            nursery.start_soon(drive, late, elections[3], 5, 99)
            await until(lambda: elections[3].decided)
            nursery.cancel_scope.cancel()
    assert elections[3].decided == Vote(2, 2, 0)
    assert elections[3].state == FOLLOWING


async def test_only_the_latest_unsent_notification_is_delivered() -> None:
    peer = await bind()
    me = await bind()
    net = ElectionNet(1, {1: (HOST, port_of(me)), 2: (HOST, port_of(peer))}, listeners=[me])
    for zxid in range(5):  # queued while not yet connected: each replaces the last
        net.send(2, Notification(1, LOOKING, Vote(1, zxid, 0), 1))
    with pytest.raises(ValueError):
        net.send(7, Notification(1, LOOKING, Vote(1, 0, 0), 1))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            stream = await peer.accept()
            decoder = FrameDecoder()
            received: list[list[object]] = []
            with trio.move_on_after(0.3):
                while True:
                    decoder.feed(await stream.receive_some())
                    while (msg := decoder.next_message()) is not None:
                        received.append(msg)
            assert received == [["hello", 1], ["vote", 1, LOOKING, 1, 4, 0, 1]]
            net.send(2, Notification(1, LOOKING, Vote(1, 9, 0), 1))  # a live link sends at once
            decoder.feed(await stream.receive_some())
            assert decoder.next_message() == ["vote", 1, LOOKING, 1, 9, 0, 1]
            await stream.aclose()
            nursery.cancel_scope.cancel()
    await peer.aclose()


VALID = Notification(2, LOOKING, Vote(2, 0, 0), 1)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (encode_frame(["hello", 9]), "unknown server"),  # not in the config
        (encode_frame(["hello", 1]), "unknown server"),  # ourselves
        (encode_frame(["vote", 2, LOOKING, 2, 0, 0, 1]), "expected hello"),
        (encode_frame(["hello", 2]) + b"\x00\x00\x00\x02\x00\x00\x00\x00xx", "checksum"),
        (encode_frame(["hello", 2]) + encode_frame(["vote", 2, "DANCING", 2, 0, 0, 1]), "state"),
        (
            encode_frame(["hello", 2]) + encode_frame(Notification(3, LOOKING, Vote(3, 0, 0), 1).pack()),
            "signed",
        ),
        (encode_frame(["hello", 2]) + b"\xff\xff\xff\xff\x00\x00\x00\x00", "exceeds"),
    ],
)
async def test_a_malformed_frame_closes_only_that_connection(
    frames: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    me = await bind()
    addresses = {1: (HOST, port_of(me)), 2: (HOST, await free_port()), 3: (HOST, await free_port())}
    net = ElectionNet(1, addresses, listeners=[me])
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="zkpy.replication.election_net"):
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            good = await trio.open_tcp_stream(HOST, port_of(me))
            await good.send_all(encode_frame(["hello", 2]))
            bad = await trio.open_tcp_stream(HOST, port_of(me))
            await bad.send_all(frames)
            assert await bad.receive_some() == b""  # hung up on
            await bad.aclose()
            await good.send_all(encode_frame(VALID.pack()))  # the other connection still works
            assert await net.incoming.receive() == VALID
            await good.aclose()
            nursery.cancel_scope.cancel()
    assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_a_peer_that_accepts_and_hangs_up_at_once_harms_nobody() -> None:
    """Found by the Jepsen-style run: a write into a connection the peer had already closed
    raised out of the sending task as an exception group and stopped the whole server."""
    hangups = 0

    async def hang_up(stream: trio.SocketStream) -> None:
        nonlocal hangups
        hangups += 1
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        rude = (await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1")))[0]
        mine = await trio.open_tcp_listeners(0, host="127.0.0.1")
        addresses = {
            1: ("127.0.0.1", mine[0].socket.getsockname()[1]),
            2: ("127.0.0.1", rude.socket.getsockname()[1]),
        }
        net = ElectionNet(1, addresses, listeners=mine, retry_initial=0.01, retry_max=0.05)
        await nursery.start(net.run)
        with trio.move_on_after(2.0):
            while True:  # keep a vote pending so every new connection gets written into
                net.send(2, Notification(1, LOOKING, Vote(1, 0, 0), 1))
                await trio.sleep(0.01)
        assert hangups > 3  # redialled again and again, and the sender is still running
        nursery.cancel_scope.cancel()


async def test_a_peer_that_says_hello_is_redialled_at_once() -> None:
    """Server 1 could not reach server 2 and backs off for 30 s; server 2 starts and says hello:
    server 1 connects back at once, so 2 hears 1's vote before it settles with anyone else (two
    wiped followers elected each other while the old leader, the one with the data, waited out
    its back-off: scripts/bench_sync.py --wipe 2). Fails before this change (times out)."""
    port2 = await free_port()
    listener1 = await bind()
    addresses = {1: (HOST, port_of(listener1)), 2: (HOST, port2)}
    net1 = ElectionNet(1, addresses, listeners=[listener1], retry_initial=30.0, retry_max=30.0)
    vote = Notification(1, LOOKING, Vote(1, 0x1_0000_00FF, 1), 3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(net1.run)
            net1.send(2, vote)
            await trio.sleep(0.2)  # refused: server 1 is in its back-off now
            net2 = ElectionNet(2, addresses)
            await nursery.start(net2.run)
            net2.send(1, Notification(2, LOOKING, Vote(2, 0, 0), 1))
            with trio.fail_after(3):
                assert await net2.incoming.receive() == vote
            nursery.cancel_scope.cancel()
