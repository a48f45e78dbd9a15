"""Snapshot a running server into the ServerStatus the four-letter words render."""

from __future__ import annotations

import os
import resource
import time
from typing import TYPE_CHECKING

from zkpy.server.fourletter import ConnectionInfo, ServerStatus, SessionInfo

if TYPE_CHECKING:
    from zkpy.server.node import ZooKeeperServer


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _extra_metrics(server: ZooKeeperServer) -> dict[str, int | float | str]:
    metrics: dict[str, int | float | str] = {
        "committed_txns": server.pipeline.committed,
        "commit_batches": server.pipeline.batches,
    }
    for source in server.metric_sources:
        metrics.update(source())
    return metrics


def build_status(server: ZooKeeperServer) -> ServerStatus:
    tree = server.tree
    now_ms = int(time.time() * 1000)
    stats = server.stats
    connections = []
    watches_by_session: dict[int, list[str]] = {}
    # wchs/wchc/wchp show data and exists watches only, as ZooKeeper's do; zk_watch_count counts all.
    data_watchers: dict[object, list[str]] = {}
    for path, watchers in server.watches.data.items():
        for watcher in watchers:
            data_watchers.setdefault(watcher, []).append(path)
    for conn in server.connections:
        connections.append(
            ConnectionInfo(
                remote_host=conn.remote[0],
                remote_port=conn.remote[1],
                session_id=conn.session_id,
                queued=conn.queued,
                received=conn.packets_received,
                sent=conn.packets_sent,
                last_op=conn.last_op,
                established_ms=int(conn.established * 1000),
                timeout_ms=conn.timeout,
                last_cxid=conn.last_cxid,
                last_zxid=conn.last_zxid,
                last_response_ms=now_ms,
                last_latency_ms=int(conn.latency.last),
                min_latency_ms=int(conn.latency.min),
                avg_latency_ms=int(conn.latency.avg),
                max_latency_ms=int(conn.latency.max),
            )
        )
        if conn.session_id and conn in data_watchers:
            watches_by_session[conn.session_id] = sorted(data_watchers[conn])
    sessions = [SessionInfo(sid, now_ms + timeout) for sid, timeout in server.sessions.timeouts.items()]
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return ServerStatus(
        state=server.state,
        min_latency_ms=int(stats.latency.min),
        avg_latency_ms=stats.latency.avg,
        max_latency_ms=int(stats.latency.max),
        packets_received=stats.packets_received,
        packets_sent=stats.packets_sent + sum(c.packets_sent for c in server.connections),
        num_alive_connections=len(server.connections),
        outstanding_requests=server.pipeline.outstanding,
        last_zxid=tree.last_zxid,
        znode_count=tree.node_count(),
        watch_count=server.watches.count(),
        ephemerals_count=sum(len(p) for p in tree.ephemerals.values()),
        approximate_data_size=tree.data_size,
        open_file_descriptor_count=_open_fds(),
        max_file_descriptor_count=soft_limit,
        sessions_count=len(server.sessions.timeouts),
        uptime_ms=int((time.time() - stats.started) * 1000),
        now_ms=now_ms,
        connections=connections,
        sessions=sessions,
        watches_by_session=watches_by_session,
        ephemerals_by_session={sid: sorted(p) for sid, p in tree.ephemerals.items()},
        config_lines=server.config.render(),
        extra_metrics=_extra_metrics(server),
    )
