"""The AdminServer's JSON against Apache ZooKeeper 3.8's own AdminServer, command by command.

Both servers get the same client (a few znodes, an ephemeral, two watches, still connected) and
then every command both have is asked of both: the field names must be the same at every level
(values differ: ids, times, sizes), and so must the JSON types of the fields. Where zkpy differs on
purpose (its environment lists Python, not Java; its monitor has fewer of Apache's ~480 metrics and
three of its own) the test says exactly what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from opshelp import get_json, shape

from zkpy.testing import apache
from zkpy.testing.procs import ServerProcess, free_port, running_server

pytestmark = [pytest.mark.timeout(180), pytest.mark.apache]

COMMANDS = [
    "ruok", "configuration", "connections", "dirs", "dump", "get_trace_mask", "hash", "is_read_only",
    "leader", "server_stats", "stats", "voting_view", "watch_summary", "watches", "watches_by_path",
    "zabstate", "connection_stat_reset", "stat_reset", "no_such_command",
]  # fmt: skip
ALIASES = [
    "conf", "config", "cons", "envi", "env", "gtmk", "isro", "lead", "mntr", "srvr", "stat", "wchs",
    "wchc", "wchp", "crst", "srst",
]  # fmt: skip
ZKPY_ONLY_MONITOR = {"committed_txns", "commit_batches", "last_snapshot_zxid"}
SHARED_ENVIRONMENT = {
    "zookeeper.version", "host.name", "os.name", "os.arch", "os.version", "user.name", "user.home", "user.dir",
}  # fmt: skip


def exercise(server: ServerProcess) -> KazooClient:
    zk = KazooClient(hosts=server.hosts)
    zk.start()
    zk.ensure_path("/a/b")
    zk.create("/e", b"x", ephemeral=True)
    zk.get("/a", watch=lambda event: None)
    zk.exists("/zz", watch=lambda event: None)
    return zk


def admin_settings(port: int) -> dict[str, str]:
    return {"admin.enableServer": "true", "admin.serverPort": str(port), "admin.serverAddress": "127.0.0.1"}


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[str, dict[str, Any]]]:
    """{"apache": {command: json}, "zkpy": {command: json}} with a client connected to each."""
    apache.require()  # skips, saying why, where Apache ZooKeeper 3.8 cannot be installed or run
    found: dict[str, dict[str, Any]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APACHE_ZK_ADMIN", "1")  # Jetty and Jackson join Apache's classpath: its AdminServer runs
        for kind in ("apache", "zkpy"):
            port = free_port()
            with running_server(kind, admin_settings(port)) as server:
                zk = exercise(server)
                try:
                    base = f"http://127.0.0.1:{port}/commands/"
                    found[kind] = {
                        name: get_json(base + name)
                        for name in [*COMMANDS, *ALIASES, "monitor", "environment"]
                    }
                finally:
                    zk.stop()
                    zk.close()
    yield found


@pytest.mark.parametrize("name", COMMANDS)
def test_same_fields_as_apache(answers: dict[str, dict[str, Any]], name: str) -> None:
    """fails before the AdminServer: nothing listens on admin.serverPort."""
    apache, zkpy = answers["apache"][name], answers["zkpy"][name]
    assert shape(zkpy) == shape(apache), f"apache: {apache}\nzkpy: {zkpy}"


@pytest.mark.parametrize("alias", ALIASES)
def test_aliases_answer_as_apache_names_them(answers: dict[str, dict[str, Any]], alias: str) -> None:
    apache, zkpy = answers["apache"][alias], answers["zkpy"][alias]
    assert (zkpy["command"], zkpy["error"]) == (apache["command"], apache["error"])


def test_monitor_names_are_apaches(answers: dict[str, dict[str, Any]]) -> None:
    """Every monitor field zkpy has is one of Apache's (but three of zkpy's own), and the ones a
    dashboard reads first are all there."""
    apache, zkpy = answers["apache"]["monitor"], answers["zkpy"]["monitor"]
    assert sorted(set(zkpy) - set(apache) - ZKPY_ONLY_MONITOR) == []
    core = {"znode_count", "watch_count", "num_alive_connections", "outstanding_requests", "avg_latency",
            "global_sessions", "ephemerals_count", "approximate_data_size", "server_state", "version",
            "cnt_fsynctime", "sum_fsynctime"}  # fmt: skip
    assert core <= set(zkpy) and core <= set(apache)
    # Not znode_count: an empty Apache 3.8 reports 5 znodes, zkpy 4 (/, /zookeeper, its quota and config).
    for key in ("watch_count", "ephemerals_count", "global_sessions", "num_alive_connections"):
        assert zkpy[key] == apache[key], key  # the same client did the same things to both


def test_environment_shares_apaches_non_java_fields(answers: dict[str, dict[str, Any]]) -> None:
    apache, zkpy = answers["apache"]["environment"], answers["zkpy"]["environment"]
    assert set(apache) >= SHARED_ENVIRONMENT
    assert set(zkpy) >= SHARED_ENVIRONMENT


def test_the_same_client_shows_the_same_counts(answers: dict[str, dict[str, Any]]) -> None:
    for name in ("watch_summary", "is_read_only"):
        apache, zkpy = answers["apache"][name], answers["zkpy"][name]
        assert zkpy == apache, name
    assert len(answers["zkpy"]["connections"]["connections"]) == 1
