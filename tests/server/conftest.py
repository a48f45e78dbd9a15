"""Fixtures for the server behaviour suite: one shared server, a fresh kazoo client and path per test.

ZKPY_TEST_SERVER=zkpy|apache picks the server (default zkpy). The same tests run against Apache ZooKeeper
3.8 as the reference, so each assertion is something Apache itself does.

Settings Apache takes as Java system properties are given to it through JAVA_TOOL_OPTIONS (every JVM reads
it); zkpy gets them as zoo.cfg lines under the same property names, as the kazoo-suite shim (tests/compat/kazoo_suite) does.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from suite_settings import CLIENT_TIMEOUT, CONTAINER_CHECK_MS, SERVER_KIND, SUPER_AUTH, SUPER_DIGEST

from zkpy.testing.procs import ServerProcess, java_properties, running_server

SYSTEM_PROPERTIES = {
    "zookeeper.DigestAuthenticationProvider.superDigest": SUPER_DIGEST,
    "zookeeper.extendedTypesEnabled": "true",
    "znode.container.checkIntervalMs": str(CONTAINER_CHECK_MS),
}


def server_config() -> dict[str, str]:
    """zoo.cfg extras. Apache turns unknown keys into harmless `zookeeper.<key>` properties."""
    return {"extendedTypesEnabled": "true", **SYSTEM_PROPERTIES}


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    props = java_properties(SYSTEM_PROPERTIES) if SERVER_KIND == "apache" else contextlib.nullcontext()
    with contextlib.ExitStack() as stack:
        with props:  # only the server process started here inherits the JVM flags
            srv = stack.enter_context(running_server(SERVER_KIND, server_config()))
        yield srv


def new_client(server: ServerProcess, **kw: object) -> KazooClient:
    client = KazooClient(hosts=server.hosts, timeout=CLIENT_TIMEOUT, **kw)  # type: ignore[arg-type]
    client.start(timeout=CLIENT_TIMEOUT)
    return client


def stop_client(client: KazooClient) -> None:
    with contextlib.suppress(Exception):
        client.stop()
    with contextlib.suppress(Exception):
        client.close()


@pytest.fixture
def zk(server: ServerProcess) -> Iterator[KazooClient]:
    client = new_client(server)
    try:
        yield client
    finally:
        stop_client(client)


@pytest.fixture
def make_client(server: ServerProcess) -> Iterator[Callable[..., KazooClient]]:
    """A factory for extra clients; every one is stopped when the test ends."""
    clients: list[KazooClient] = []

    def make(**kw: object) -> KazooClient:
        client = new_client(server, **kw)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            stop_client(client)


@pytest.fixture
def base(server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty path owned by this test alone, removed afterwards."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:60]
    path = f"/t-{name}-{uuid.uuid4().hex[:8]}"
    admin = new_client(server)
    try:
        admin.create(path)
        yield path
    finally:
        with contextlib.suppress(Exception):
            admin.add_auth("digest", SUPER_AUTH)
            with contextlib.suppress(NoNodeError):
                admin.delete(path, recursive=True)
        stop_client(admin)
