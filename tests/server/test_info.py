"""Small informational operations: sync, whoAmI, getAllChildrenNumber."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kazoo.client import KazooClient
from zkraw import RawClient

from zkpy.errors import NoNodeError
from zkpy.jute.ops import XID_AUTH, OpCode, PathRequest
from zkpy.jute.records import AuthPacket
from zkpy.testing.procs import ServerProcess


def test_sync_returns_the_path(zk: KazooClient, make_client: Callable[..., KazooClient], base: str) -> None:
    make_client().create(f"{base}/from-other", b"v")
    assert zk.sync(base) == base
    assert zk.get(f"{base}/from-other")[0] == b"v"


def test_who_am_i(server: ServerProcess) -> None:
    raw = RawClient(server.host, server.port)
    try:
        info = raw.call(OpCode.WHO_AM_I).clientInfo
        assert [(i.authScheme, i.user) for i in info] == [("ip", "127.0.0.1")]
        raw.send(OpCode.AUTH, AuthPacket(0, "digest", b"user1:pw1"), xid=XID_AUTH)
        assert raw.read_reply(XID_AUTH).err == 0
        info = raw.call(OpCode.WHO_AM_I).clientInfo
        assert [(i.authScheme, i.user) for i in info] == [("ip", "127.0.0.1"), ("digest", "user1")]
    finally:
        raw.close()


def test_get_all_children_number_counts_descendants(
    server: ServerProcess, zk: KazooClient, base: str
) -> None:
    for path in ("a", "a/b", "a/b/c", "d"):
        zk.create(f"{base}/{path}")
    raw = RawClient(server.host, server.port)
    try:
        assert raw.call(OpCode.GET_ALL_CHILDREN_NUMBER, PathRequest(base)).totalNumber == 4
        assert raw.call(OpCode.GET_ALL_CHILDREN_NUMBER, PathRequest(f"{base}/a")).totalNumber == 2
        assert raw.call(OpCode.GET_ALL_CHILDREN_NUMBER, PathRequest(f"{base}/d")).totalNumber == 0
        with pytest.raises(NoNodeError):
            raw.call(OpCode.GET_ALL_CHILDREN_NUMBER, PathRequest(f"{base}/missing"))
    finally:
        raw.close()
