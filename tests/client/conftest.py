"""Fixtures: one server per session (kind from ZKPY_TEST_SERVER, zkpy by default), a fresh chroot per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

import zkpy.client
from tests.client.proxy import Proxy
from zkpy.testing.procs import Ensemble, ServerProcess, running_ensemble, running_server

SERVER_KIND = os.environ.get("ZKPY_TEST_SERVER", "zkpy")
# Short ticks so session timeouts (2..20 ticks) can be small and expiry tests stay quick.
SERVER_CFG = {"tickTime": "250", "extendedTypesEnabled": "true"}
SESSION_TIMEOUT = 2.0


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    with running_server(SERVER_KIND, SERVER_CFG) as s:
        yield s


@pytest.fixture(scope="session")
def ensemble() -> Iterator[Ensemble]:
    if SERVER_KIND != "apache":
        pytest.skip("zkpy ensemble not implemented yet")
    with running_ensemble("apache", 3, SERVER_CFG) as e:
        yield e


@pytest.fixture
async def chroot(server: ServerProcess) -> AsyncIterator[str]:
    """A fresh, empty node to use as the test's chroot; removed afterwards."""
    root = f"/t-{uuid.uuid4().hex[:12]}"
    async with zkpy.client.connect(server.hosts) as admin:
        await admin.create(root)
        yield root
        await admin.delete(root, recursive=True)


@pytest.fixture
def hosts(server: ServerProcess, chroot: str) -> str:
    return server.hosts + chroot


@pytest.fixture
async def zk(hosts: str) -> AsyncIterator[zkpy.client.Client]:
    async with zkpy.client.connect(hosts, timeout=SESSION_TIMEOUT) as client:
        yield client


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[Proxy]:
    p = Proxy(server.host, server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        yield p
        nursery.cancel_scope.cancel()


async def expire_session(hosts: str, client: zkpy.client.Client) -> None:
    """Expire `client`'s session the way kazoo's tests do: open the same session elsewhere, close it."""
    from zkpy.client.connection import Connection
    from zkpy.client.events import EventDispatcher

    dispatcher = EventDispatcher()
    conn = Connection(hosts, client.session_timeout, dispatcher)
    conn.protocol.session_id = client.session_id
    conn.protocol.passwd = client.session_password
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await conn.wait_connected(10)
        await conn.close()
        dispatcher.close()
        nursery.cancel_scope.cancel()
