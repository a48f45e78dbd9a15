"""Restarting the server: acknowledged writes, sessions and counters survive a stop or a kill -9.

These tests restart their own server, so they do not disturb the shared one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from conftest import SYSTEM_PROPERTIES, java_properties, new_client, server_config, stop_client
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from suite_settings import SERVER_KIND
from zkwait import wait_until

from zkpy.testing.procs import ServerProcess, running_server


@pytest.fixture
def own_server() -> Iterator[ServerProcess]:
    props = java_properties(SYSTEM_PROPERTIES) if SERVER_KIND == "apache" else contextlib.nullcontext()
    with contextlib.ExitStack() as stack:
        with props:
            srv = stack.enter_context(running_server(SERVER_KIND, server_config()))
        yield srv


def restart(server: ServerProcess, crash: bool) -> None:
    props = java_properties(SYSTEM_PROPERTIES) if SERVER_KIND == "apache" else contextlib.nullcontext()
    if crash:
        server.kill()
    else:
        server.stop()
    with props:
        server.start()


@pytest.fixture
def clients(own_server: ServerProcess) -> Iterator[Callable[[], KazooClient]]:
    made: list[KazooClient] = []

    def make() -> KazooClient:
        client = new_client(own_server)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            stop_client(client)


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill-9"])
def test_acknowledged_writes_survive_a_restart(
    own_server: ServerProcess, clients: Callable[[], KazooClient], crash: bool
) -> None:
    zk = clients()
    zk.create("/r")
    for i in range(100):
        zk.create(f"/r/n{i:03d}", str(i).encode())
    for i in range(0, 100, 10):
        zk.set(f"/r/n{i:03d}", b"changed")
    zk.delete("/r/n099")
    t = zk.transaction()
    t.create("/r/multi-a")
    t.create("/r/multi-b")
    t.commit()
    before = {name: zk.get(f"/r/{name}") for name in zk.get_children("/r")}
    parent_before = zk.exists("/r")
    last_zxid = zk.last_zxid
    stop_client(zk)

    restart(own_server, crash)
    after_client = clients()
    after = {name: after_client.get(f"/r/{name}") for name in after_client.get_children("/r")}
    assert after == before
    assert after_client.exists("/r") == parent_before
    created = after_client.create("/r/after", include_data=True)[1]
    assert created.czxid > last_zxid
    assert after_client.create("/r/seq-", sequence=True) == f"/r/seq-{103:010d}"  # 103 creations so far


def test_a_session_and_its_ephemeral_survive_a_restart(
    own_server: ServerProcess, clients: Callable[[], KazooClient]
) -> None:
    owner = clients()
    states: list[str] = []
    owner.add_listener(states.append)
    owner.create("/eph", ephemeral=True)
    session = owner.client_id

    restart(own_server, crash=False)
    wait_until(lambda: KazooState.SUSPENDED in states, what="the client to notice the restart")
    wait_until(lambda: owner.connected, timeout=20, what="the client to reconnect after the restart")
    assert owner.client_id == session
    assert KazooState.LOST not in states
    assert clients().exists("/eph").ephemeralOwner == session[0]
