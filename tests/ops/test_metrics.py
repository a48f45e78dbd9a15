"""The Prometheus endpoint (metricsProvider.httpPort): scraped over HTTP from a real server process,
parsed with prometheus_client's parser, names checked against Apache 3.8's, values seen to move."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from opshelp import apache_metric_names, ensemble_with_ports, http_get, sample, scrape
from prometheus_client.parser import text_string_to_metric_families

from zkpy.ops.metrics import APACHE_NAMES, exposition, families_from_values
from zkpy.ops.source import Source
from zkpy.testing.procs import ServerProcess, free_port, running_server

pytestmark = pytest.mark.timeout(120)

# What a ZooKeeper dashboard reads first: these must be there under Apache's names.
CORE = [
    "znode_count", "watch_count", "ephemerals_count", "approximate_data_size", "num_alive_connections",
    "outstanding_requests", "global_sessions", "packets_received", "packets_sent", "avg_latency",
    "open_file_descriptor_count", "uptime", "bytes_received_count", "response_bytes", "fsynctime",
    "readlatency", "updatelatency",
]  # fmt: skip


def check_names(families: dict[str, object]) -> None:
    """Every exported name without zkpy's prefix is Apache's, and of Apache's kind."""
    apache = apache_metric_names()
    for name, family in families.items():
        if name.startswith("zkpy_"):
            continue
        assert name in apache, f"{name} is not an Apache ZooKeeper 3.8 metric: call it zkpy_{name}"
        kind = "summary" if family.type == "summary" else "value"  # type: ignore[attr-defined]
        assert apache[name] == kind, f"{name} is a {apache[name]} in Apache, a {family.type} here"  # type: ignore[attr-defined]


def test_the_apache_names_zkpy_claims_are_apaches() -> None:
    """The list in zkpy.ops.metrics against the names read from a real Apache 3.8 (the fixture)."""
    apache = apache_metric_names()
    assert sorted(APACHE_NAMES - apache.keys()) == []


def test_summary_sets_become_labelled_summaries() -> None:
    """mntr's per-learner lines (avg_2_x, cnt_2_x...) are one summary with label key, as Apache's
    learner_handler_qp_time_ms; Apache's counters keep their names (no _total)."""
    values: dict[str, int | float | str] = {
        "cnt_2_learner_ack_latency": 3, "sum_2_learner_ack_latency": 4.5, "avg_2_learner_ack_latency": 1.5,
        "cnt_3_learner_ack_latency": 1, "sum_3_learner_ack_latency": 2.0, "min_3_learner_ack_latency": 2.0,
        "diff_count": 2, "committed_txns": 7, "last_snapshot_zxid": "0x1f", "version": "3.8.0",
    }  # fmt: skip
    families = {f.name: f for f in families_from_values(values)}
    assert sorted(families) == [
        "diff_count",
        "zkpy_committed_txns",
        "zkpy_last_snapshot_zxid",
        "zkpy_learner_ack_latency",
    ]
    summary = families["zkpy_learner_ack_latency"]
    assert summary.type == "summary"
    assert {(s.name, s.labels["key"], s.value) for s in summary.samples} == {
        ("zkpy_learner_ack_latency_count", "2", 3), ("zkpy_learner_ack_latency_sum", "2", 4.5),
        ("zkpy_learner_ack_latency_count", "3", 1), ("zkpy_learner_ack_latency_sum", "3", 2.0),
    }  # fmt: skip
    assert [(s.name, s.value) for s in families["diff_count"].samples] == [("diff_count", 2)]
    assert families["zkpy_last_snapshot_zxid"].samples[0].value == 0x1F


@pytest.fixture
def metered() -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    extra = {"metricsProvider.httpPort": str(port), "metricsProvider.httpHost": "127.0.0.1"}
    with running_server("zkpy", extra) as server:
        yield server, f"http://127.0.0.1:{port}/metrics"


def test_scrape_has_apache_names_and_values_move(metered: tuple[ServerProcess, str]) -> None:
    """fails before the metrics endpoint: nothing listens on metricsProvider.httpPort."""
    server, url = metered
    before = scrape(url)
    check_names(before)
    missing = [name for name in CORE if name not in before]
    assert missing == []
    zk = KazooClient(hosts=server.hosts)
    zk.start()
    try:
        zk.create("/m", b"")
        for i in range(10):
            zk.create(f"/m/n{i}", b"x" * 100)
        zk.get("/m/n0", watch=lambda event: None)
        zk.exists("/m/absent", watch=lambda event: None)
        after = scrape(url)
        check_names(after)
        assert sample(after, "znode_count") - sample(before, "znode_count") == 11
        assert sample(after, "watch_count") == 2
        assert sample(after, "num_alive_connections") == 1
        assert sample(after, "global_sessions") == 1
        assert sample(after, "zkpy_requests_total", op="create") == 11
        assert sample(after, "zkpy_request_duration_seconds_count", op="create") == 11
        assert sample(after, "zkpy_request_duration_seconds_bucket", op="create", le="+Inf") == 11
        assert sample(after, "updatelatency_count") == 11  # the creates; the session is not a write here
        assert sample(after, "readlatency_count") >= 2
        assert sample(after, "fsynctime_count") > sample(before, "fsynctime_count")
        assert sample(after, "bytes_received_count") - sample(before, "bytes_received_count") > 10 * 100
        assert sample(after, "response_bytes") > sample(before, "response_bytes")
        assert sample(after, "zkpy_server_state", state="standalone") == 1
    finally:
        zk.stop()
        zk.close()


def test_other_paths_are_404(metered: tuple[ServerProcess, str]) -> None:
    _, url = metered
    status, body = http_get(url.replace("/metrics", "/nothing"))
    assert status == 404 and "/metrics" in body


@pytest.fixture
def metered_ensemble(tmp_path: Path) -> Iterator[list[tuple[ServerProcess, str]]]:
    """Three zkpy servers in one quorum, each with its own metrics port."""
    lines = "metricsProvider.httpPort={}\nmetricsProvider.httpHost=127.0.0.1\n".format
    with ensemble_with_ports(tmp_path, lines) as members:
        yield [(server, f"http://127.0.0.1:{port}/metrics") for server, port in members]


@pytest.mark.timeout(240)
def test_ensemble_replication_metrics(metered_ensemble: list[tuple[ServerProcess, str]]) -> None:
    """The leader reports its learners, proposal and quorum-ack latency and each learner's ack
    latency; learners report commit propagation; every member its election time.

    fails before the replication stats (zkpy/replication/stats.py): no proposal_latency,
    quorum_ack_latency, learner ack or commit_propagation_latency samples, no diff/snap counts."""
    modes = {server.mode(): (server, url) for server, url in metered_ensemble}
    leader, leader_url = modes["leader"]
    followers = [(s, u) for s, u in metered_ensemble if s is not leader]
    zk = KazooClient(hosts=leader.hosts)
    zk.start()
    try:
        for i in range(5):
            zk.create(f"/r{i}", b"v")
    finally:
        zk.stop()
        zk.close()
    lead = scrape(leader_url)
    check_names(lead)
    assert sample(lead, "zkpy_server_state", state="leader") == 1
    assert sample(lead, "learners") == 2
    assert sample(lead, "synced_followers") == 2
    assert sample(lead, "quorum_size") == 3
    assert sample(lead, "proposal_latency_count") >= 5
    assert sample(lead, "quorum_ack_latency_count") >= 1
    assert sample(lead, "diff_count") + sample(lead, "snap_count") + sample(lead, "zkpy_trunc_count") == 2
    assert sample(lead, "election_time_count") >= 1
    assert sample(lead, "zkpy_max_queued_to_learner_bytes") > 0  # the proposals it sent
    for follower, url in followers:
        sid = (follower.data_dir / "myid").read_text().strip()
        assert sample(lead, "zkpy_learner_ack_latency_count", key=sid) >= 1
        metrics = scrape(url)
        check_names(metrics)
        assert sample(metrics, "zkpy_server_state", state="follower") == 1
        assert sample(metrics, "election_time_count") >= 1
        assert sample(metrics, "znode_count") == sample(lead, "znode_count")
        # A learner counts a sample per applied batch (the leader's commits reach it asynchronously).
        deadline = time.monotonic() + 10
        while sample(metrics, "commit_propagation_latency_count") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
            metrics = scrape(url)
        assert sample(metrics, "commit_propagation_latency_count") >= 1
        assert sample(metrics, "zkpy_max_unlogged_proposal_bytes") > 0  # the proposals it logged


class Electing(Source):
    """An ensemble member between roles: no serving server, only what the peer itself knows."""

    def current(self) -> None:
        return None

    def state(self) -> str:
        return "looking"

    def idle_metrics(self) -> dict[str, int | float | str]:
        return {
            "cnt_election_time": 2,
            "sum_election_time": 512.5,
            "avg_election_time": 256.25,
            "diff_count": 1,
        }


def test_a_member_that_is_electing_still_exports_what_it_knows() -> None:
    text = exposition(Electing()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    check_names(families)
    assert sample(families, "zkpy_server_state", state="looking") == 1
    assert (sample(families, "election_time_count"), sample(families, "election_time_sum")) == (2, 512.5)
    assert "znode_count" not in families  # no tree is being served: nothing made up


def test_what_is_not_an_http_get_is_answered_and_the_endpoint_goes_on(
    metered: tuple[ServerProcess, str],
) -> None:
    """h11 parses; zkpy answers what it refuses: 400 for bytes that are not HTTP, 405 for a POST.
    fails before the 400 answer: a connection that sent garbage was closed without a word."""
    _, url = metered
    port = int(url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    request = urllib.request.Request(url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    assert "znode_count" in scrape(url)
