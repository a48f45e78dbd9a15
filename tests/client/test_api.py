"""The async API against a real server: typed results, typed errors, watches, multi, ACLs."""

from __future__ import annotations

import pytest
import trio

import zkpy.client
from zkpy import errors
from zkpy.client import ACL, EventType, Id, Stat, WatchedEvent
from zkpy.jute.records import PERM_ALL, PERM_READ


async def test_create_get_set_delete_with_versions(zk: zkpy.client.Client) -> None:
    assert await zk.create("/a", b"one") == "/a"
    data, stat = await zk.get("/a")
    assert data == b"one" and isinstance(stat, Stat) and stat.version == 0 and stat.dataLength == 3
    stat = await zk.set("/a", b"two", version=0)
    assert stat.version == 1
    with pytest.raises(errors.BadVersionError):
        await zk.set("/a", b"three", version=0)
    with pytest.raises(errors.BadVersionError):
        await zk.delete("/a", version=0)
    await zk.delete("/a", version=1)
    assert await zk.exists("/a") is None
    with pytest.raises(errors.NoNodeError):
        await zk.get("/a")


async def test_create_modes(zk: zkpy.client.Client) -> None:
    with pytest.raises(errors.NodeExistsError):
        await zk.create("/")
    _, stat = await zk.create("/e", ephemeral=True, include_stat=True)
    assert stat.ephemeralOwner == zk.session_id
    seq = [await zk.create("/q/item-", sequence=True, makepath=True) for _ in range(3)]
    assert seq == ["/q/item-0000000000", "/q/item-0000000001", "/q/item-0000000002"]
    await zk.create("/box", container=True)
    await zk.create("/ttl", b"t", ttl=60_000)
    (_, ttl_stat) = await zk.get("/ttl")
    assert ttl_stat.ephemeralOwner == 0  # Apache shows clients 0 for TTL and container nodes
    with pytest.raises(errors.NoChildrenForEphemeralsError):
        await zk.create("/e/child")
    with pytest.raises(errors.NoNodeError):
        await zk.create("/missing/child")
    assert await zk.create("/deep/er/node", b"x", makepath=True) == "/deep/er/node"


async def test_children_and_recursive_delete(zk: zkpy.client.Client) -> None:
    for name in ("c", "a", "b"):
        await zk.create(f"/p/{name}/x", makepath=True)
    children, stat = await zk.get_children("/p", include_stat=True)
    assert sorted(children) == ["a", "b", "c"] and stat.numChildren == 3
    with pytest.raises(errors.NotEmptyError):
        await zk.delete("/p")
    assert await zk.get_all_children_number("/p") == 6
    await zk.delete("/p", recursive=True)
    assert await zk.exists("/p") is None


async def test_chroot_hides_the_prefix(server: object, chroot: str, zk: zkpy.client.Client) -> None:
    await zk.create("/n", b"v")
    async with zkpy.client.connect(server.hosts) as raw:  # type: ignore[attr-defined]
        assert (await raw.get(chroot + "/n"))[0] == b"v"
    assert await zk.sync("/n") == "/n"


async def test_transaction_commits_all_or_nothing(zk: zkpy.client.Client) -> None:
    await zk.create("/x", b"0")
    results = await zk.transaction().create("/y", b"1").set("/x", b"2", version=0).check("/x", 1).commit()
    assert results[0] == "/y" and results[1].version == 1 and results[2] is True
    with pytest.raises(errors.BadVersionError) as info:
        await zk.transaction().create("/z").set("/x", b"3", version=0).delete("/y").commit()
    kinds = [type(r) for r in info.value.results]  # type: ignore[attr-defined]
    assert kinds == [zkpy.client.RolledBackError, errors.BadVersionError, errors.RuntimeInconsistencyError]
    assert await zk.exists("/z") is None and (await zk.get("/x"))[0] == b"2"


async def test_acls_and_auth(zk: zkpy.client.Client) -> None:
    await zk.add_auth("digest", "alice:secret")
    assert ("digest", "alice") in {(i.scheme, i.user) for i in await zk.whoami()}
    await zk.create("/private", b"s", acl=[ACL(PERM_ALL, Id("auth", ""))])
    acls, _ = await zk.get_acls("/private")
    assert acls[0].id.scheme == "digest" and acls[0].id.id.startswith("alice:")
    await zk.create("/public", b"p")
    stat = await zk.set_acls("/public", [ACL(PERM_READ, Id("world", "anyone"))], version=0)
    assert stat.aversion == 1
    with pytest.raises(errors.NoAuthError):
        await zk.set("/public", b"no")


async def test_private_node_refuses_other_sessions(hosts: str, zk: zkpy.client.Client) -> None:
    await zk.add_auth("digest", "alice:secret")
    await zk.create("/private", b"s", acl=[ACL(PERM_ALL, Id("auth", ""))])
    async with zkpy.client.connect(hosts) as other:
        with pytest.raises(errors.NoAuthError):
            await other.get("/private")
    async with zkpy.client.connect(hosts, auth=[("digest", "alice:secret")]) as alice:
        assert (await alice.get("/private"))[0] == b"s"


async def test_one_shot_watches_as_callbacks_and_streams(zk: zkpy.client.Client) -> None:
    got: list[WatchedEvent] = []
    assert await zk.exists("/w", watch=got.append) is None
    children = zk.event_stream()
    await zk.get_children("/", watch=children)
    await zk.create("/w", b"")
    event = await children.get()
    assert event == WatchedEvent(EventType.CHILD, "/")
    with trio.fail_after(5):
        while not got:
            await trio.sleep(0.01)
    assert got == [WatchedEvent(EventType.CREATED, "/w")]
    data = zk.event_stream()
    await zk.get("/w", watch=data)
    await zk.set("/w", b"1")
    await zk.set("/w", b"2")  # one-shot: no second event
    await zk.delete("/w")
    assert await data.get() == WatchedEvent(EventType.CHANGED, "/w")
    await zk.sync()
    with trio.move_on_after(0.3):
        await data.get()
        pytest.fail("a one-shot watch fired twice")


async def test_persistent_and_recursive_watches_and_removal(zk: zkpy.client.Client) -> None:
    flat, deep = zk.event_stream(), zk.event_stream()
    await zk.create("/r")
    await zk.add_watch("/r", flat)
    await zk.add_watch("/", deep, recursive=True)  # the server keeps one mode per (session, path)
    await zk.create("/r/a")
    await zk.create("/r/a/b")
    await zk.set("/r", b"1")
    await zk.set("/r", b"2")
    with trio.fail_after(5):
        assert [await flat.get() for _ in range(3)] == [
            WatchedEvent(EventType.CHILD, "/r"),
            WatchedEvent(EventType.CHANGED, "/r"),
            WatchedEvent(EventType.CHANGED, "/r"),
        ]
        assert [await deep.get() for _ in range(4)] == [
            WatchedEvent(EventType.CREATED, "/r/a"),
            WatchedEvent(EventType.CREATED, "/r/a/b"),
            WatchedEvent(EventType.CHANGED, "/r"),
            WatchedEvent(EventType.CHANGED, "/r"),
        ]
    await zk.remove_watches("/", "recursive")
    await zk.create("/r/c")
    assert await flat.get() == WatchedEvent(EventType.CHILD, "/r")
    with trio.move_on_after(0.3):
        await deep.get()
        pytest.fail("a removed watch fired")
    with pytest.raises(errors.NoWatcherError):
        await zk.remove_watches("/", "recursive")


async def test_bad_paths_are_refused_before_sending(zk: zkpy.client.Client) -> None:
    for bad in ("", "no-slash", "/trailing/", "/a//b", "/a/./b"):
        with pytest.raises(errors.BadArgumentsError):
            await zk.get(bad)


async def test_closed_client_refuses_requests(hosts: str) -> None:
    async with zkpy.client.connect(hosts) as zk:
        states = zk.states()
        await zk.create("/gone", ephemeral=True)
    assert zk.state is zkpy.client.State.CLOSED
    assert [s async for s in states] == [zkpy.client.State.CLOSED]
    with pytest.raises(zkpy.client.ConnectionClosedError):
        await zk.get("/")
    async with zkpy.client.connect(hosts) as other:
        assert await other.exists("/gone") is None


async def test_connect_to_nothing_fails_with_connection_loss() -> None:
    with pytest.raises(errors.ConnectionLossError), trio.fail_after(5):
        async with zkpy.client.connect("127.0.0.1:1,127.0.0.1:2", timeout=1.0, start_timeout=0.5):
            pass


async def test_an_error_in_the_block_comes_out_unwrapped(hosts: str) -> None:
    with pytest.raises(errors.NoNodeError):
        async with zkpy.client.connect(hosts) as zk:
            await zk.get("/missing")


def test_host_lists_and_chroot_parse() -> None:
    assert zkpy.client.parse_hosts("a:1,b:2/app/x") == ([("a", 1), ("b", 2)], "/app/x")
    assert zkpy.client.parse_hosts("a") == ([("a", 2181)], "")
    assert zkpy.client.parse_hosts("[::1]:3,b:4/") == ([("::1", 3), ("b", 4)], "")


async def test_get_config_reads_zookeeper_config_outside_the_chroot(zk: zkpy.client.Client) -> None:
    """The `zk` fixture is chrooted, so /zookeeper/config is not under it: get() cannot reach it, get_config() does.

    Fails before get_config was added (AttributeError), as the shell's `config` command did.
    """
    with pytest.raises(errors.NoNodeError):
        await zk.get("/zookeeper/config")
    data, stat = await zk.get_config()
    assert isinstance(data, bytes) and isinstance(stat, Stat)
