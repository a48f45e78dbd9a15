"""End to end: what a server acknowledged survives kill -9, across snapshots and log rolls."""

from __future__ import annotations

import io

import pytest
from kazoo.client import KazooClient

from zkpy.storage.dump import dump
from zkpy.testing.procs import ServerProcess, running_server

KINDS = ["zkpy", pytest.param("apache", marks=pytest.mark.apache)]


def connect(server: ServerProcess) -> KazooClient:
    client = KazooClient(hosts=server.hosts, timeout=10.0)
    client.start(timeout=30)
    return client


@pytest.mark.parametrize("kind", KINDS)
def test_acknowledged_writes_survive_kill_minus_nine(kind: str) -> None:
    # A small snapCount makes the server snapshot and roll its log several times on the way.
    with running_server(kind, {"snapCount": "40"}) as server:
        client = connect(server)
        try:
            client.create("/app", b"root")
            for i in range(150):
                client.create(f"/app/n{i:03d}", b"v%d" % i)
            client.set("/app/n007", b"changed")
            client.delete("/app/n149")
        finally:
            client.stop()
            client.close()

        server.kill()
        server.start()

        client = connect(server)
        try:
            assert sorted(client.get_children("/app")) == [f"n{i:03d}" for i in range(149)]
            assert client.get("/app/n007")[0] == b"changed"
            data, stat = client.get("/app/n148")
            assert data == b"v148"
            # And the restarted server keeps logging after what it recovered.
            client.create("/app/after", b"x")
            assert client.get("/app/after")[1].czxid > stat.czxid
        finally:
            client.stop()
            client.close()

        if kind == "zkpy":
            logs = sorted(server.data_dir.rglob("log.*"), key=lambda p: int(p.name[4:], 16))
            snapshots = list(server.data_dir.rglob("snapshot.*"))
            assert len(logs) > 1 and snapshots, "expected snapshots and rolled logs"
            out = io.StringIO()
            dump(logs[-1], out)
            assert "create /app/after" in out.getvalue()
