"""The Prometheus endpoint (zoo.cfg: metricsProvider.httpPort), named as Apache ZooKeeper's.

Apache 3.6+ exports its metrics through PrometheusMetricsProvider on GET /metrics; dashboards and
alerts are written against those names (znode_count, fsynctime, election_time...). zkpy exports
the same names for what it measures the same way, and its own under a `zkpy_` prefix, so a name
without the prefix always means what it means in Apache's exposition:

- values mntr reports (znode_count, watch_count, global_sessions, outstanding_requests, ...) are
  read from the server's status at scrape time: nothing extra happens per request for them;
- Apache's counters keep Apache's exact names (bytes_received_count, diff_count): prometheus_client
  would add `_total` to a counter, so they are exported untyped, which PromQL treats the same;
- Apache's summaries (fsynctime, election_time, proposal_latency, ...) are exported with their
  _count and _sum, from the same running summaries mntr prints as cnt_/sum_ lines. zkpy keeps no
  quantile sketches, so there are no quantile lines: rate(x_sum) / rate(x_count) is the mean;
- per request type, zkpy_requests_total and zkpy_request_duration_seconds (a histogram) come from
  buckets the connection fills as it answers (a dict lookup and a bisect per request).

One collector reads everything when scraped (prometheus_client's custom collector pattern), so
there is no second copy of any number that could drift from mntr.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
    UnknownMetricFamily,
)

from zkpy.jute.ops import WRITE_OPS, OpCode
from zkpy.ops.http import Handler, Request, Response
from zkpy.ops.source import Source
from zkpy.server.fourletter import mntr_values
from zkpy.server.latency import BUCKETS_MS, OpLatencies

# Apache 3.8 names zkpy exports (checked against a real server's list in tests/ops). Anything
# else gets the zkpy_ prefix.
APACHE_GAUGES = {
    "znode_count": "Number of znodes in the tree",
    "watch_count": "Number of watches set by clients (all kinds)",
    "ephemerals_count": "Number of ephemeral znodes",
    "approximate_data_size": "Bytes of znode data and paths in the tree",
    "num_alive_connections": "Open client connections",
    "outstanding_requests": "Writes waiting to be committed",
    "open_file_descriptor_count": "Open file descriptors of the process",
    "max_file_descriptor_count": "File descriptor limit of the process",
    "global_sessions": "Live sessions",
    "local_sessions": "Local sessions (zkpy has none)",
    "uptime": "Milliseconds since the server started",
    "avg_latency": "Mean response time (ms) since the last srst",
    "min_latency": "Lowest response time (ms) since the last srst",
    "max_latency": "Highest response time (ms) since the last srst",
    "packets_received": "Client packets received since the last srst",
    "packets_sent": "Client packets sent since the last srst",
    "quorum_size": "Voters in the ensemble",
    "learners": "Learners connected to this leader",
    "synced_followers": "Followers in sync with this leader",
    "synced_non_voting_followers": "Non-voting followers in sync with this leader",
    "synced_observers": "Observers in sync with this leader",
    "pending_syncs": "Learners this leader is still syncing",
    "last_proposal_size": "Bytes of the last proposal (-1: none yet)",
    "min_proposal_size": "Bytes of the smallest proposal (-1: none yet)",
    "max_proposal_size": "Bytes of the largest proposal (-1: none yet)",
}
APACHE_COUNTERS = {
    "bytes_received_count": "Bytes received from clients",
    "response_bytes": "Bytes sent to clients",
    "diff_count": "Learners synced by DIFF",
    "snap_count": "Learners synced by SNAP",
}
APACHE_SUMMARIES = {
    "fsynctime": "Transaction log fsync time (ms)",
    "election_time": "Leader election time (ms)",
    "follower_sync_time": "Time to sync a learner (ms)",
    "proposal_latency": "Proposal until committed on the leader (ms)",
    "quorum_ack_latency": "Proposal until a quorum acknowledged it (ms)",
    "commit_propagation_latency": "Transaction ordered by the leader until applied on this learner (ms)",
    "readlatency": "Response time of reads (ms)",
    "updatelatency": "Response time of writes (ms)",
}
APACHE_NAMES = frozenset(APACHE_GAUGES) | frozenset(APACHE_COUNTERS) | frozenset(APACHE_SUMMARIES)

_SUMMARY_PARTS = ("avg_", "min_", "max_", "cnt_", "sum_")
_SET_MEMBER = re.compile(r"^(\d+)_(.+)$")  # a summary set's member, as Apache's dump: <key>_<name>
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def _name(key: str) -> str:
    name = _NAME_CHARS.sub("_", key)
    return name if name in APACHE_NAMES else f"zkpy_{name}"


def _op_name(op: int) -> str:
    try:
        return OpCode(op).name.lower()
    except ValueError:
        return str(op)


def families_from_values(values: dict[str, int | float | str]) -> Iterator[Metric]:
    """mntr-style values as metric families: cnt_X/sum_X pairs become summaries (cnt_<key>_X a
    summary set with label key, as Apache's learner_handler_qp_time_ms), the rest gauges or, for
    Apache's counters, untyped samples under Apache's exact name."""
    summary_keys = {key[4:] for key in values if key.startswith("cnt_") and f"sum_{key[4:]}" in values}
    summaries: dict[str, list[tuple[str, float, float]]] = {}
    for key in summary_keys:
        base, label = key, ""
        member = _SET_MEMBER.match(key)
        if member is not None:
            label, base = member.groups()
        count, total = _number(values[f"cnt_{key}"]) or 0.0, _number(values[f"sum_{key}"]) or 0.0
        summaries.setdefault(base, []).append((label, count, total))
    for key, value in values.items():
        if key.startswith(_SUMMARY_PARTS) and key[4:] in summary_keys:
            continue
        number = _number(value)
        if number is None:
            continue
        name = _name(key)
        if name in APACHE_COUNTERS:
            yield UnknownMetricFamily(name, APACHE_COUNTERS[name], value=number)
        else:
            yield GaugeMetricFamily(name, APACHE_GAUGES.get(name, f"mntr's zk_{key}"), value=number)
    for base, rows in sorted(summaries.items()):
        name = _name(base)
        doc = APACHE_SUMMARIES.get(name, f"mntr's {base} summary (ms)")
        labelled = [row for row in rows if row[0]]
        family = SummaryMetricFamily(name, doc, labels=["key"] if labelled else None)
        for label, count, total in sorted(rows):
            family.add_metric([label] if labelled else [], count_value=int(count), sum_value=total)
        yield family


def _number(value: int | float | str) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if value.startswith("0x"):  # zxids in mntr's text
        try:
            return float(int(value, 16))
        except ValueError:
            return None
    return None


def request_families(by_op: OpLatencies) -> Iterator[Metric]:
    """zkpy_requests_total and zkpy_request_duration_seconds per op; readlatency and updatelatency
    (Apache's summaries over all reads and all writes) from the same buckets."""
    requests = CounterMetricFamily("zkpy_requests", "Requests answered, by type", labels=["op"])
    durations = HistogramMetricFamily(
        "zkpy_request_duration_seconds", "Time from a request's arrival to its answer", labels=["op"]
    )
    totals = {"readlatency": [0.0, 0.0], "updatelatency": [0.0, 0.0]}
    for op, row in sorted(by_op.rows.items()):
        name = _op_name(op)
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(BUCKETS_MS, row, strict=False):
            cumulative += count
            buckets.append((repr(bound / 1000), cumulative))
        count = cumulative + row[len(BUCKETS_MS)]
        buckets.append(("+Inf", count))
        requests.add_metric([name], count)
        durations.add_metric([name], buckets, sum_value=row[-1] / 1000)
        if op in (OpCode.PING, OpCode.CREATE_SESSION, OpCode.CLOSE_SESSION, OpCode.AUTH):
            continue
        kind = totals["updatelatency" if op in WRITE_OPS else "readlatency"]
        kind[0] += count
        kind[1] += row[-1]
    yield requests
    yield durations
    for name, (count, total) in totals.items():
        family = SummaryMetricFamily(name, APACHE_SUMMARIES[name])
        family.add_metric([], count_value=int(count), sum_value=total)
        yield family


class ServerCollector:
    """prometheus_client collector: one snapshot of the current server per scrape."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        source = self.source
        state = GaugeMetricFamily("zkpy_server_state", "1 for the state this server is in", labels=["state"])
        state.add_metric([source.state()], 1)
        yield state
        server = source.current()
        if server is None:
            yield from families_from_values(source.idle_metrics())
            return
        status = server.status()
        stats = server.stats
        sent = stats.bytes_sent + sum(conn.sent_bytes for conn in server.connections)
        values = {
            **dict(mntr_values(status)),  # what mntr prints (its strings, such as version, are skipped)
            "last_zxid": status.last_zxid,
            "bytes_received_count": stats.bytes_received,
            "response_bytes": sent,
        }
        yield from families_from_values(values)
        yield from request_families(stats.by_op)


def exposition(source: Source) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(source))  # type: ignore[arg-type]
    return bytes(generate_latest(registry))


def handler(source: Source) -> Handler:
    """The HTTP handler: GET /metrics (Apache's path; / answers too, as a convenience)."""

    def handle(request: Request) -> Response:
        if request.path not in ("/metrics", "/"):
            return Response(404, b"not found: the metrics are at /metrics\n")
        return Response(200, exposition(source), CONTENT_TYPE_LATEST)

    return handle
