"""Sessions under trouble: idle pings, dead servers, reconnects that keep watches, expiry, event order."""

from __future__ import annotations

import pytest
import trio

import zkpy.client
from zkpy import errors
from zkpy.client import EventType, State, WatchedEvent
from zkpy.client.retry import retry

from .conftest import SESSION_TIMEOUT, expire_session
from .proxy import Proxy


async def drain(stream: zkpy.client.EventStream, n: int, limit: float = 10.0) -> list[object]:
    with trio.fail_after(limit):
        return [await stream.get() for _ in range(n)]


async def test_pings_keep_an_idle_session_alive_past_several_timeouts(proxy: Proxy, chroot: str) -> None:
    async with zkpy.client.connect(proxy.hosts + chroot, timeout=1.5) as zk:
        states = zk.states()
        session = zk.session_id
        await zk.create("/idle", ephemeral=True)
        before = len(proxy.upstream)
        await trio.sleep(3 * zk.session_timeout)
        idle_traffic = bytes(proxy.upstream[before:])
        assert zk.state is State.CONNECTED and zk.session_id == session
        assert (await zk.exists("/idle")).ephemeralOwner == session  # type: ignore[union-attr]
    assert [s async for s in states] == [State.CLOSED]  # never suspended in between
    # nothing but pings while idle, one every third of the session timeout (9 in 4.5 s)
    ping = b"\x00\x00\x00\x08\xff\xff\xff\xfe\x00\x00\x00\x0b"
    assert idle_traffic == ping * (len(idle_traffic) // len(ping))
    assert 7 <= len(idle_traffic) // len(ping) <= 10


async def test_a_hung_server_is_detected_by_read_timeout_and_the_session_resumes(
    proxy: Proxy, chroot: str
) -> None:
    async with zkpy.client.connect(proxy.hosts + chroot, timeout=1.5) as zk:
        states = zk.states()
        session = zk.session_id
        await zk.create("/eph", ephemeral=True)
        proxy.frozen = True  # the connection stays open but nothing comes back
        start = trio.current_time()
        assert await drain(states, 1) == [State.SUSPENDED]
        assert trio.current_time() - start < zk.session_timeout
        proxy.cut()
        proxy.frozen = False
        assert await drain(states, 1) == [State.RECONNECTED]
        assert zk.session_id == session
        assert await zk.exists("/eph") is not None


async def test_watches_set_before_a_disconnect_fire_for_changes_made_meanwhile(
    proxy: Proxy, chroot: str, zk: zkpy.client.Client
) -> None:
    await zk.create("/data", b"0")
    await zk.create("/parent")
    await zk.create("/doomed")
    async with zkpy.client.connect(proxy.hosts + chroot, timeout=3.0) as watcher:
        states = watcher.states()
        events = watcher.event_stream()
        await watcher.get("/data", watch=events)
        await watcher.exists("/later", watch=events)
        await watcher.get_children("/parent", watch=events)
        await watcher.exists("/doomed", watch=events)
        untouched = watcher.event_stream()
        await watcher.get("/parent", watch=untouched)
        persistent = watcher.event_stream()
        await watcher.add_watch("/parent", persistent, recursive=True)
        proxy.refuse = True
        proxy.cut()
        assert await drain(states, 1) == [State.SUSPENDED]
        await zk.set("/data", b"1")
        await zk.create("/later")
        await zk.create("/parent/kid")
        await zk.delete("/doomed")
        proxy.refuse = False
        assert await drain(states, 1) == [State.RECONNECTED]
        got = await drain(events, 4)
        assert sorted(got, key=repr) == sorted(  # type: ignore[type-var]
            [
                WatchedEvent(EventType.CHANGED, "/data"),
                WatchedEvent(EventType.CREATED, "/later"),
                WatchedEvent(EventType.CHILD, "/parent"),
                WatchedEvent(EventType.DELETED, "/doomed"),
            ],
            key=repr,
        )
        # the re-armed watch on an unchanged node is still live, and fires for the next change
        await zk.set("/parent", b"x")
        assert await drain(untouched, 1) == [WatchedEvent(EventType.CHANGED, "/parent")]
        # a persistent watch is re-armed too (the server sends no catch-up events for those)
        await zk.create("/parent/kid2")
        got = await drain(persistent, 2)
        assert got[-1] == WatchedEvent(EventType.CREATED, "/parent/kid2")
        assert set(got[:-1]) <= {WatchedEvent(EventType.CHANGED, "/parent")}


async def test_events_arrive_in_server_order_while_a_callback_sleeps(zk: zkpy.client.Client) -> None:
    seen: list[WatchedEvent] = []
    release = trio.Event()

    async def slow(event: WatchedEvent) -> None:
        await release.wait()  # the first event holds the event task until we let it go
        await trio.sleep(0.05)
        seen.append(event)

    def failing(event: WatchedEvent) -> None:
        raise RuntimeError("a broken callback must not stop delivery")

    await zk.create("/w")
    await zk.add_watch("/w", failing, recursive=True)
    await zk.add_watch("/w", slow, recursive=True)
    expected = []
    for i in range(10):
        await zk.create(f"/w/n{i}")
        await zk.set(f"/w/n{i}", b"x")
        expected += [WatchedEvent(EventType.CREATED, f"/w/n{i}"), WatchedEvent(EventType.CHANGED, f"/w/n{i}")]
    # replies are not held up behind the blocked callback: these gets complete while it still
    # holds the first event (were replies queued behind it, they would never come)
    with trio.fail_after(10):
        for _ in range(20):
            await zk.get("/w")
    assert seen == []
    release.set()
    with trio.fail_after(10):
        while len(seen) < len(expected):
            await trio.sleep(0.05)
    assert seen == expected


async def test_expiry_is_reported_once_ephemerals_go_and_a_new_session_can_start(
    hosts: str, zk: zkpy.client.Client
) -> None:
    async with zkpy.client.connect(hosts, timeout=2.0) as victim:
        states = victim.states()
        watch = victim.event_stream()
        old_session = victim.session_id
        await victim.create("/eph", ephemeral=True)
        await victim.exists("/eph", watch=watch)
        await expire_session(hosts, victim)
        got = [await states.get()]
        with trio.fail_after(10):
            while got[-1] is not State.EXPIRED:
                got.append(await states.get())
        # the hijacking connection may bump the victim off (SUSPENDED, RECONNECTED) before the close
        assert got[0] is State.SUSPENDED and set(got[:-1]) <= {State.SUSPENDED, State.RECONNECTED}
        (event,) = await drain(watch, 1)  # every watcher hears that its session is gone
        assert event.type == EventType.NONE and event.state == zkpy.client.connection.EXPIRED_STATE
        assert await zk.exists("/eph") is None
        with pytest.raises(errors.SessionExpiredError):
            await victim.get("/")
        with trio.move_on_after(0.5):
            await states.get()
            pytest.fail("expiry reported more than once")
        victim.restart()
        assert await drain(states, 1) == [State.CONNECTED]
        assert victim.session_id not in (0, old_session)
        await victim.create("/eph", ephemeral=True)


async def test_auto_restart_opens_a_fresh_session_after_expiry(hosts: str) -> None:
    async with zkpy.client.connect(hosts, timeout=2.0, auto_restart=True) as zk:
        states = zk.states()
        await expire_session(hosts, zk)
        got = [await states.get()]
        with trio.fail_after(10):
            while got[-1] is not State.CONNECTED:
                got.append(await states.get())
        assert got[-2:] == [State.EXPIRED, State.CONNECTED] and got.count(State.EXPIRED) == 1
        assert await zk.exists("/") is not None


async def test_killing_the_server_moves_the_client_to_another_with_its_session(ensemble: object) -> None:
    from zkpy.testing.procs import Ensemble

    assert isinstance(ensemble, Ensemble)
    async with zkpy.client.connect(ensemble.hosts, timeout=4.0) as zk:
        states = zk.states()
        await zk.create("/eph-failover", b"mine", ephemeral=True)
        session = zk.session_id
        victim = next(s for s in ensemble.servers if (s.host, s.port) == zk.server)
        try:
            victim.kill()
            got = await drain(states, 2, limit=zk.session_timeout * 2)
            assert got == [State.SUSPENDED, State.RECONNECTED]
            assert zk.session_id == session and zk.server != (victim.host, victim.port)
            # (a follower may drop us once more while the other two elect a new leader)
            data, stat = await retry(zk.get, "/eph-failover")
            assert data == b"mine" and stat.ephemeralOwner == session
        finally:
            if victim.proc and victim.proc.poll() is not None:
                victim.start()
                ensemble.wait_serving(servers=[victim])
            await retry(zk.delete, "/eph-failover")


async def test_auth_is_sent_again_after_a_reconnect(
    proxy: Proxy, chroot: str, zk: zkpy.client.Client
) -> None:
    from zkpy.client import ACL, Id
    from zkpy.jute.records import PERM_ALL

    async with zkpy.client.connect(proxy.hosts + chroot, timeout=3.0, auth=[("digest", "bob:pw")]) as bob:
        states = bob.states()
        await bob.create("/bobs", b"secret", acl=[ACL(PERM_ALL, Id("auth", ""))])
        proxy.cut()
        assert await drain(states, 2) == [State.SUSPENDED, State.RECONNECTED]
        assert (await bob.get("/bobs"))[0] == b"secret"
        assert ("digest", "bob") in {(i.scheme, i.user) for i in await bob.whoami()}
    with pytest.raises(errors.NoAuthError):
        await zk.get("/bobs")


async def test_a_partitioned_client_learns_of_its_expiry_when_it_gets_back(
    proxy: Proxy, chroot: str, zk: zkpy.client.Client
) -> None:
    async with zkpy.client.connect(proxy.hosts + chroot, timeout=1.0) as cut_off:
        states = cut_off.states()
        await cut_off.create("/eph", ephemeral=True)
        proxy.refuse = True
        proxy.cut()
        assert await drain(states, 1) == [State.SUSPENDED]
        with trio.fail_after(10):  # the server expires the silent session on its own
            while await zk.exists("/eph") is not None:
                await trio.sleep(0.1)
        proxy.refuse = False
        assert await drain(states, 1) == [State.EXPIRED]
        with trio.move_on_after(0.5):
            pytest.fail(f"more state changes after expiry: {await states.get()}")


async def test_read_only_clients_connect_and_write_to_a_quorum_server(hosts: str) -> None:
    async with zkpy.client.connect(hosts, read_only=True) as zk:
        assert zk.state is State.CONNECTED and not zk.read_only_connection
        await zk.create("/rw", b"")  # a server in a quorum is not read-only


async def test_a_server_killed_and_restarted_under_the_client_keeps_session_ephemerals_and_watches() -> None:
    from zkpy.testing.procs import running_server

    from .conftest import SERVER_CFG, SERVER_KIND

    with running_server(SERVER_KIND, SERVER_CFG) as server:
        async with zkpy.client.connect(server.hosts, timeout=5.0) as zk:
            states = zk.states()
            session = zk.session_id
            await zk.create("/eph", ephemeral=True)
            await zk.create("/per", b"v")
            watch = zk.event_stream()
            await zk.get("/per", watch=watch)
            await trio.to_thread.run_sync(server.kill)
            await trio.to_thread.run_sync(server.start)
            assert await drain(states, 2, limit=15) == [State.SUSPENDED, State.RECONNECTED]
            assert zk.session_id == session and await zk.exists("/eph") is not None
            async with zkpy.client.connect(server.hosts) as other:
                await other.set("/per", b"w")
            assert await drain(watch, 1) == [WatchedEvent(EventType.CHANGED, "/per")]


async def test_leaving_connect_by_cancellation_exits_cleanly(hosts: str) -> None:
    """Issue 15 item 6. Fails before the fix: the cancel also ended the event task, so close()
    setting the CLOSED state raised trio.BrokenResourceError out of `connect()` instead of the
    cancellation being absorbed by its cancel scope. And the session must be closed on the way
    out, not left to expire with its ephemerals: before the IO task said goodbye itself when
    cancelled, close() could not reach the server any more (4 of 5 ephemerals were still there
    right after the block, in a check of that commit). Now a move_on_after or a nursery cancel
    around a client block leaves it quietly, and the session is closed."""
    for i in range(3):
        with trio.move_on_after(5) as outer:
            async with zkpy.client.connect(hosts, timeout=SESSION_TIMEOUT) as zk:
                await zk.create(f"/eph{i}", ephemeral=True)
                outer.cancel()
                await trio.sleep_forever()
        assert outer.cancelled_caught
    async with trio.open_nursery() as nursery:

        async def block() -> None:
            async with zkpy.client.connect(hosts, timeout=SESSION_TIMEOUT) as zk2:
                await zk2.create("/eph-nursery", ephemeral=True)
                nursery.cancel_scope.cancel()
                await trio.sleep_forever()

        nursery.start_soon(block)
    async with zkpy.client.connect(hosts, timeout=SESSION_TIMEOUT) as zk3:
        for path in ("/eph0", "/eph1", "/eph2", "/eph-nursery"):
            assert await zk3.exists(path) is None, f"{path}: its session was not closed on the way out"
