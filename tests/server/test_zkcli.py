"""Apache's own shell (zkCli, from Debian's zookeeper package) drives the server: ls, create, get,
set, stat, delete and a watch, as an operator would type them."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from zkpy.testing import apache
from zkpy.testing.procs import ServerProcess

pytestmark = pytest.mark.apache  # Apache's zkCli comes with Debian's zookeeper package


def zkcli(server: ServerProcess, script: str) -> str:
    result = subprocess.run(
        apache.shell_command(server.hosts),
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout + result.stderr


def test_zkcli_crud_stat_and_watch(server: ServerProcess) -> None:
    node = f"/zkcli-{uuid.uuid4().hex[:8]}"
    out = zkcli(
        server,
        f"create {node} first\n"
        f"ls /\n"
        f"get -w {node}\n"
        f"set {node} second\n"
        f"stat {node}\n"
        f"get {node}\n"
        f"delete {node}\n"
        f"ls /\n"
        "quit\n",
    )
    assert f"Created {node}" in out
    assert f"WatchedEvent state:SyncConnected type:NodeDataChanged path:{node}" in out
    assert "dataVersion = 1" in out and "dataLength = 6" in out and "numChildren = 0" in out
    lines = out.splitlines()
    assert "first" in lines and "second" in lines
    listings = [line for line in lines if line.startswith("[") and "zookeeper" in line]
    assert node[1:] in listings[0] and node[1:] not in listings[-1]
