"""A chroot that does not exist yet: makepath creates it (as kazoo does), and NoNode says it is missing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

import zkpy.client
from zkpy.errors import NoNodeError
from zkpy.testing.procs import ServerProcess


@pytest.fixture
async def missing_chroot(server: ServerProcess) -> AsyncIterator[str]:
    """A chroot two levels deep whose top does not exist; removed afterwards."""
    top = f"/c-{uuid.uuid4().hex[:12]}"
    yield f"{top}/app"
    async with zkpy.client.connect(server.hosts) as admin:
        await admin.delete(top, recursive=True)


async def test_makepath_creates_a_missing_chroot_and_its_parents(
    server: ServerProcess, missing_chroot: str
) -> None:
    async with zkpy.client.connect(server.hosts + missing_chroot) as zk:
        assert await zk.create("/config/x", b"v", makepath=True) == "/config/x"
        assert (await zk.get("/config/x"))[0] == b"v"
    async with zkpy.client.connect(server.hosts) as raw:
        assert (await raw.get(missing_chroot + "/config/x"))[0] == b"v"


async def test_a_top_level_create_with_makepath_creates_the_chroot(
    server: ServerProcess, missing_chroot: str
) -> None:
    async with zkpy.client.connect(server.hosts + missing_chroot) as zk:
        assert await zk.create("/job-", sequence=True, makepath=True) == "/job-0000000000"


async def test_ensure_path_creates_the_chroot(server: ServerProcess, missing_chroot: str) -> None:
    async with zkpy.client.connect(server.hosts + missing_chroot) as zk:
        await zk.ensure_path("/")
        assert await zk.exists("/") is not None
        await zk.ensure_path("/a/b")
        assert await zk.exists("/a/b") is not None


async def test_a_create_in_a_missing_chroot_says_the_chroot_is_missing(
    server: ServerProcess, missing_chroot: str
) -> None:
    async with zkpy.client.connect(server.hosts + missing_chroot) as zk:
        with pytest.raises(NoNodeError) as info:
            await zk.create("/config", b"v")
    assert info.value.path == "/config"
    assert str(info.value) == f"NO_NODE: /config (the chroot {missing_chroot} does not exist)"


async def test_a_missing_parent_inside_an_existing_chroot_is_a_plain_no_node(zk: zkpy.client.Client) -> None:
    with pytest.raises(NoNodeError) as info:
        await zk.create("/config/x", b"v")
    assert str(info.value) == "NO_NODE: /config/x"
