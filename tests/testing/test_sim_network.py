"""Simulated links behave like TCP under faults, in virtual time, the same way for the same seed."""

from __future__ import annotations

import errno
import random

import pytest
import trio
import trio.testing

from zkpy.testing.network import SimNetwork, SimStream

PORT = 2888


async def serve_one(net: SimNetwork, host: str, port: int = PORT) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """A connection from c1 to host:port, both ends."""
    (listener,) = await net.host(host).listen("", port)
    client = await net.host("c1").connect(host, port)
    server = await listener.accept()
    return client, server


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some()
        assert chunk, "the stream ended early"
        data += chunk
    return data


async def test_echo(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(1))
    (listener,) = await net.host("s1").listen("0.0.0.0", PORT)
    assert listener.socket.getsockname() == ("s1", PORT)  # type: ignore[attr-defined]

    async def echo() -> None:
        stream = await listener.accept()
        async with stream:
            while data := await stream.receive_some():
                await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        start = trio.current_time()
        client = await net.host("c1").connect("s1", PORT)
        assert isinstance(client, SimStream)
        assert client.socket.getpeername() == ("s1", PORT)
        await client.send_all(b"hello")
        assert await receive_exactly(client, 5) == b"hello"
        assert 4 * 0.0002 <= trio.current_time() - start <= 4 * 0.002  # connect and echo: two round trips
        await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")


async def test_order_is_kept_under_random_latencies(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(2), latency=(0.0001, 0.05))
    client, server = await serve_one(net, "s1")
    sent = [b"%d," % i for i in range(500)]

    async def sender() -> None:
        for i, chunk in enumerate(sent):
            await client.send_all(chunk)
            if i % 7 == 0:
                await trio.sleep(0.001)
        await client.aclose()

    received = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while data := await server.receive_some(10):
            assert len(data) <= 10
            received += data
    assert received == b"".join(sent)
    assert await server.receive_some() == b""  # the end stays the end


async def test_connect_refused_without_listener(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(3))
    start = trio.current_time()
    with pytest.raises(OSError) as refused:
        await net.host("c1").connect("s1", PORT)
    assert refused.value.errno == errno.ECONNREFUSED
    assert trio.current_time() - start < 0.01
    (listener,) = await net.host("s1").listen("", PORT)
    with pytest.raises(OSError) as taken:
        await net.host("s1").listen("s1", PORT)
    assert taken.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError):
        await net.host("s1").listen("s2", 1)  # not this host's address
    await listener.aclose()
    with pytest.raises(OSError) as again:
        await net.host("c1").connect("s1", PORT)
    assert again.value.errno == errno.ECONNREFUSED
    await net.host("s1").listen("", PORT)  # free again


async def test_partition_stalls_both_ways_and_heal_delivers_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = SimNetwork(random.Random(4))
    client, server = await serve_one(net, "s1")
    net.partition({"c1"}, {"s1", "s2"})
    for i in range(20):
        await client.send_all(b"up%d;" % i)
        await server.send_all(b"down%d;" % i)
    await client.aclose()  # the close is held too
    with trio.move_on_after(30) as waited:
        await server.receive_some()
    assert waited.cancelled_caught

    async def heal_later() -> None:
        await trio.sleep(5)
        net.heal()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heal_later)
        start = trio.current_time()
        received = b""
        while data := await server.receive_some():
            received += data
        assert trio.current_time() - start == pytest.approx(5)
    assert received == b"".join(b"up%d;" % i for i in range(20))


async def test_unnamed_hosts_still_reach_everyone(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(5))
    net.partition({"s1"}, {"s2"})
    assert net.blocked("s1", "s2") and net.blocked("s2", "s1")
    assert not net.blocked("c1", "s1") and not net.blocked("s2", "c1")
    net.isolate("c1")
    assert net.blocked("c1", "s3") and net.blocked("s3", "c1") and not net.blocked("c1", "c1")
    net.heal()
    assert not net.blocked("s1", "s2") and not net.blocked("c1", "s3")


async def test_connect_during_partition_times_out(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(6), connect_timeout=1.0)
    await net.host("s1").listen("", PORT)
    net.isolate("s1")
    start = trio.current_time()
    with pytest.raises(OSError) as timed_out:
        await net.host("c1").connect("s1", PORT)
    assert timed_out.value.errno == errno.ETIMEDOUT
    assert trio.current_time() - start == pytest.approx(1.0)

    async def heal_later() -> None:
        await trio.sleep(0.5)
        net.heal()

    async with trio.open_nursery() as nursery:  # a heal within the timeout lets the connect through
        nursery.start_soon(heal_later)
        stream = await net.host("c1").connect("s1", PORT)
        assert 0.5 < trio.current_time() - start - 1.0 < 0.6
        await stream.aclose()


async def test_cut_stalls_one_direction_only(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(7))
    client, server = await serve_one(net, "s1")
    net.cut("c1", "s1")
    await client.send_all(b"held")
    await server.send_all(b"flows")
    assert await receive_exactly(client, 5) == b"flows"
    with trio.move_on_after(10) as waited:
        await server.receive_some()
    assert waited.cancelled_caught
    with pytest.raises(OSError) as timed_out:  # the SYN is lost
        await net.host("c1").connect("s1", PORT)
    assert timed_out.value.errno == errno.ETIMEDOUT
    with pytest.raises(OSError):  # the SYN-ACK is lost
        await net.host("s1").connect("c1", PORT + 1)
    net.heal()
    assert await server.receive_some() == b"held"


async def test_a_port_cut_holds_that_port_only_and_one_way_delays_one_direction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cut_port: connections to one port between two hosts hold their bytes (and new ones time
    out) while another port between them works; delay_one_way slows one direction only."""
    net = SimNetwork(random.Random(7))
    quorum_c, quorum_s = await serve_one(net, "s1", PORT)
    other_c, other_s = await serve_one(net, "s1", PORT + 1)
    net.cut_port("c1", "s1", PORT)
    await quorum_c.send_all(b"held")
    await other_c.send_all(b"flows")
    assert await receive_exactly(other_s, 5) == b"flows"
    with trio.move_on_after(10) as waited:
        await quorum_s.receive_some()
    assert waited.cancelled_caught
    with pytest.raises(OSError):
        await net.host("c1").connect("s1", PORT)
    net.uncut_port("c1", "s1", PORT)
    assert await quorum_s.receive_some() == b"held"
    net.delay_one_way("c1", "s1", 0.3, duration=5.0)
    start = trio.current_time()
    await other_c.send_all(b"slow")
    assert await receive_exactly(other_s, 4) == b"slow"
    assert trio.current_time() - start >= 0.3
    start = trio.current_time()
    await other_s.send_all(b"fast")
    assert await receive_exactly(other_c, 4) == b"fast"
    assert trio.current_time() - start < 0.01


async def test_crash_host_resets_both_ends(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(8))
    (listener,) = await net.host("s1").listen("", PORT)
    client = await net.host("c1").connect("s1", PORT)
    server = await listener.accept()
    unaccepted = await net.host("c2").connect("s1", PORT)  # left in the backlog
    (idle,) = await net.host("s1").listen("", PORT + 1)
    await server.send_all(b"last words")
    outcomes: list[str] = []

    async def accepting() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await idle.accept()
        outcomes.append("listener closed")

    async def server_reading() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()
        outcomes.append("server reset")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accepting)
        nursery.start_soon(server_reading)
        await trio.testing.wait_all_tasks_blocked()
        net.crash_host("s1")
    assert sorted(outcomes) == ["listener closed", "server reset"]
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")
    await server.aclose()  # closing what is left of a dead host's stream is fine
    assert await client.receive_some() == b"last words"  # what was sent before still arrives
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"anyone?")
    with pytest.raises(trio.BrokenResourceError):
        await unaccepted.receive_some()
    with pytest.raises(OSError) as refused:  # the machine is up, nothing listens
        await net.host("c1").connect("s1", PORT)
    assert refused.value.errno == errno.ECONNREFUSED
    await net.host("s1").listen("", PORT)  # the restarted server can bind again


async def test_a_crashed_hosts_own_code_is_cancelled_not_told(autojump_clock: trio.testing.MockClock) -> None:
    """A heal wakes a reader, and its host crashes in the same instant: the reader must stop at the
    cancellation (a killed process runs no more code), not get an error it could act on."""
    net = SimNetwork(random.Random(13))
    client, server = await serve_one(net, "s1")
    net.isolate("s1")
    await client.send_all(b"held")
    outcome: list[str] = []

    async def server_process(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            try:
                await server.receive_some()
            except BaseException as e:
                outcome.append(type(e).__name__)
                raise

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(server_process)
        await trio.sleep(1)
        net.heal()  # the held bytes are due: the reader is woken
        scope.cancel()
        net.crash_host("s1")
    assert outcome == ["Cancelled"]


async def test_peer_close_ends_the_stream(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(9))
    client, server = await serve_one(net, "s1")
    await server.send_all(b"bye")
    await server.aclose()
    assert await receive_exactly(client, 3) == b"bye"
    assert await client.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):  # as EPIPE after the peer's RST
        await client.send_all(b"late")


async def test_delay_spike(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(10))
    client, server = await serve_one(net, "s1")
    net.delay_spike(0.5, duration=1.0)
    start = trio.current_time()
    await client.send_all(b"slow")
    assert await server.receive_some() == b"slow"
    assert 0.5 < trio.current_time() - start < 0.51
    await trio.sleep(1)
    start = trio.current_time()
    await client.send_all(b"fast")
    assert await server.receive_some() == b"fast"
    assert trio.current_time() - start < 0.01


async def test_same_seed_same_delivery_times(autojump_clock: trio.testing.MockClock) -> None:
    async def run(seed: int) -> list[tuple[float, bytes]]:
        net = SimNetwork(random.Random(seed))
        start = trio.current_time()
        client, server = await serve_one(net, "s1")
        trace: list[tuple[float, bytes]] = []

        async def sender() -> None:
            for i in range(50):
                await client.send_all(b"%d;" % i)
                if i == 20:
                    net.partition({"c1"}, {"s1"})
                if i == 30:
                    net.heal()
                await trio.sleep(0.0003)
            await client.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            while data := await server.receive_some():
                trace.append((round(trio.current_time() - start, 9), data))
        return trace

    first = await run(11)
    assert first == await run(11)
    assert first != await run(12)


async def test_delay_spike_on_one_hosts_links(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(14))
    to_s1, at_s1 = await serve_one(net, "s1")
    (listener,) = await net.host("s2").listen("", PORT)
    to_s2 = await net.host("c1").connect("s2", PORT)
    at_s2 = await listener.accept()
    net.delay_spike(0.5, duration=1.0, hosts=["s1"])
    start = trio.current_time()
    await to_s2.send_all(b"fast")
    assert await at_s2.receive_some() == b"fast"
    assert trio.current_time() - start < 0.01  # c1 -> s2 does not touch s1
    await at_s1.send_all(b"slow")  # s1 -> c1 does
    assert await to_s1.receive_some() == b"slow"
    assert 0.5 < trio.current_time() - start < 0.51
    net.end_spikes()
    start = trio.current_time()
    await to_s1.send_all(b"fast again")
    assert await at_s1.receive_some() == b"fast again"
    assert trio.current_time() - start < 0.01


async def test_reset_breaks_both_ends_and_loses_what_was_unread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = SimNetwork(random.Random(15))
    client, server = await serve_one(net, "s1")
    other_client, other_server = await serve_one(net, "s2")
    await client.send_all(b"in flight")
    await server.send_all(b"arrived, never read")
    await trio.sleep(1)
    outcome: list[str] = []
    reading = trio.Event()

    async def blocked_reader() -> None:
        # a reader waiting on the other connection of s1 is woken and fails too
        (listener,) = await net.host("s1").listen("", PORT + 1)
        waiting = await net.host("s3").connect("s1", PORT + 1)
        await listener.accept()
        reading.set()
        try:
            await waiting.receive_some()
        except trio.BrokenResourceError:
            outcome.append("reset")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_reader)
        await reading.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert net.reset("s1") == 4  # c1 <-> s1 and s3 <-> s1, both ends of each
    assert outcome == ["reset"]
    for end in (client, server):
        with pytest.raises(trio.BrokenResourceError):
            await end.receive_some()  # the unread bytes are gone with the connection
        with pytest.raises(trio.BrokenResourceError):
            await end.send_all(b"x")
        await end.aclose()
    await other_client.send_all(b"untouched")  # c1 <-> s2 is another pair of hosts
    assert await receive_exactly(other_server, 9) == b"untouched"
    again, accepted = await serve_one(net, "s1", PORT + 2)  # new connections are not hindered
    await again.send_all(b"new")
    assert await receive_exactly(accepted, 3) == b"new"
    assert net.reset("s1", "s9") == 0


async def test_pause_holds_both_ways_then_delivers_the_backlog_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = SimNetwork(random.Random(16))
    client, server = await serve_one(net, "s1")
    net.pause("s1")
    assert net.paused("s1") and net.blocked("c1", "s1") and net.blocked("s1", "c1")
    for i in range(5):
        await client.send_all(b"to%d;" % i)
        await server.send_all(b"from%d;" % i)  # the paused host's own code still runs
    with trio.move_on_after(10) as waited:
        await client.receive_some()
    assert waited.cancelled_caught
    # the kernel of a paused host still answers a handshake: a connect completes, its bytes wait
    (listener,) = await net.host("s1").listen("", PORT + 1)
    late = await net.host("c2").connect("s1", PORT + 1)
    late_server = await listener.accept()
    await late.send_all(b"hello?")
    with trio.move_on_after(1) as waited:
        await late_server.receive_some()
    assert waited.cancelled_caught
    resumed_at = trio.current_time()
    assert net.resume("s1") == 11  # five chunks each way and the late hello
    assert not net.paused("s1") and net.resume("s1") == 0
    assert await receive_exactly(client, 5 * 6) == b"".join(b"from%d;" % i for i in range(5))
    assert await receive_exactly(server, 5 * 4) == b"".join(b"to%d;" % i for i in range(5))
    assert await late_server.receive_some() == b"hello?"
    assert trio.current_time() == resumed_at  # all of it at once


async def test_a_paused_host_that_crashes_is_resumed_first(autojump_clock: trio.testing.MockClock) -> None:
    net = SimNetwork(random.Random(17))
    client, server = await serve_one(net, "s1")
    net.pause("s1")
    await server.send_all(b"stale")
    net.crash_host("s1")
    assert not net.paused("s1")
    assert await client.receive_some() == b"stale"
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()


async def test_heal_resumes_paused_hosts_and_rejoin_undoes_one_isolation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = SimNetwork(random.Random(18))
    net.pause("s1")
    net.isolate("c1")
    net.partition({"s2"}, {"s3"})
    net.rejoin("c1")
    assert not net.blocked("c1", "s2") and net.blocked("s2", "s3") and net.blocked("c1", "s1")
    net.heal()
    assert not net.paused("s1") and not net.blocked("c1", "s1") and not net.blocked("s2", "s3")
