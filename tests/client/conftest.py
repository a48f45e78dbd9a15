"""Fixtures: one server per session (kind from ZKPY_TEST_SERVER, zkpy by default), a fresh chroot per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

import zkpy.client
from zkpy.testing.procs import Ensemble, ServerProcess, running_ensemble, running_server

from .proxy import Proxy

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
    with running_ensemble(SERVER_KIND, 3, SERVER_CFG) as e:
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
    """Expire `client`'s session the way kazoo's tests do: open the same session elsewhere, close it.

    Uses the bare protocol on one socket, retried until the close is acknowledged: the victim,
    bumped off by our handshake, may reconnect and bump us off in turn.
    """
    from zkpy.client.connection import parse_hosts
    from zkpy.client.protocol import ClientProtocol, Connected, Expired, Replied
    from zkpy.jute.ops import EmptyRecord, OpCode

    servers, chroot = parse_hosts(hosts)
    host, port = servers[0]
    session_id, passwd = client.session_id, client.session_password
    with trio.fail_after(20):
        while True:
            proto = ClientProtocol(chroot=chroot, session_id=session_id, passwd=passwd)
            proto.connect(int(client.session_timeout * 1000))
            try:
                async with await trio.open_tcp_stream(host, port) as stream:
                    await stream.send_all(proto.data_to_send())
                    while True:
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        for event in proto.receive_data(data):
                            if isinstance(event, Expired):
                                return
                            if isinstance(event, Connected):
                                proto.request(OpCode.CLOSE_SESSION, EmptyRecord())
                                await stream.send_all(proto.data_to_send())
                            elif (
                                isinstance(event, Replied)
                                and event.pending.op == OpCode.CLOSE_SESSION
                                and event.pending.error is None
                            ):
                                return
            except OSError:
                pass
            await trio.sleep(0.05)
