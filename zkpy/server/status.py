"""Snapshot a running server into the ServerStatus the four-letter words render."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zkpy.server.durable import SUBDIR
from zkpy.server.fourletter import ConnectionInfo, ServerStatus, SessionInfo

if TYPE_CHECKING:
    from zkpy.server.node import ZooKeeperServer


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _storage_dir(configured: Path) -> Path:
    """The directory the files are really in: zkpy's own subdirectory once it exists, as ZooKeeper
    reports its version-2 subdirectory (a server without storage has only the configured one)."""
    own = configured / SUBDIR
    return own if own.is_dir() else configured


def _dir_size(path: Path) -> int:
    """Bytes in the files below `path`, as ZooKeeper's dataDirSize (preallocated log space included)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _dir_size(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue  # removed while we looked (a purge, a snapshot rename)
    return total


def _extra_metrics(server: ZooKeeperServer) -> dict[str, int | float | str]:
    metrics: dict[str, int | float | str] = {
        "committed_txns": server.pipeline.committed,
        "commit_batches": server.pipeline.batches,
    }
    for source in server.metric_sources:
        metrics.update(source())
    return metrics


# What each word needs beyond the counters every status has (O(1) each). A word gets only its
# parts, so srvr or mntr costs the same with 600k watches as with none, as Apache's do; wchc, wchp and
# dump are proportional to what they list, as Apache's are.
_WATCH_WORDS = frozenset({"wchs", "wchc", "wchp"})
_CONNECTION_WORDS = frozenset({"stat", "cons", "dump"})
_DIR_WORDS = frozenset({"conf", "dirs"})


def build_status(server: ZooKeeperServer, word: str | None = None) -> ServerStatus:
    """The status `word` renders (None: all of it, for tools and tests)."""
    tree = server.tree
    now_ms = int(time.time() * 1000)
    stats = server.stats
    connections = []
    watches_by_session: dict[int, list[str]] = {}
    # wchs/wchc/wchp show data and exists watches only, as ZooKeeper's do; zk_watch_count counts all.
    data_watchers: dict[object, list[str]] = {}
    watch_summary = None
    watches = server.watches
    if word == "wchs":  # counts only, as Apache's WatchesSummary: O(connections), not O(watches)
        half = watches.data_half
        watching = sum(1 for conn in server.connections if conn.session_id and watches.has_data_watches(conn))
        watch_summary = (watching, half.path_count(), half.size)
    elif word is None or word in _WATCH_WORDS:
        data_watchers = {watcher: list(ps) for watcher, ps in watches.data_paths_by_watcher().items()}
    listed = word is None or word in _CONNECTION_WORDS or word in ("wchc", "wchp")
    for conn in server.connections if listed else ():
        # The connection asking a four-letter word is busy answering: ZooKeeper shows it as [0].
        asking = not conn.protocol.connected and conn.packets_received > 0
        connections.append(
            ConnectionInfo(
                remote_host=conn.remote[0],
                remote_port=conn.remote[1],
                session_id=conn.session_id,
                queued=conn.queued,
                interest_ops=0 if asking else 1,
                received=conn.packets_received,
                sent=conn.packets_sent,
                last_op=conn.last_op,
                established_ms=int(conn.established * 1000),
                timeout_ms=conn.timeout,
                last_cxid=conn.last_cxid,
                last_zxid=conn.last_zxid,
                last_response_ms=int(conn.last_response * 1000),  # monotonic ms, as ZooKeeper's lresp
                last_latency_ms=int(conn.latency.last),
                min_latency_ms=int(conn.latency.min),
                avg_latency_ms=int(conn.latency.avg),
                max_latency_ms=int(conn.latency.max),
            )
        )
        if conn.session_id and conn in data_watchers:
            watches_by_session[conn.session_id] = sorted(data_watchers[conn])
    dumping = word is None or word == "dump"
    sessions = (
        [SessionInfo(sid, now_ms + timeout) for sid, timeout in server.sessions.timeouts.items()]
        if dumping
        else []
    )
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    config = server.config
    data_dir, log_dir = _storage_dir(config.data_dir), _storage_dir(config.data_log_dir)
    data_size = log_size = 0
    if word is None or word in _DIR_WORDS:
        data_size = _dir_size(data_dir)
        log_size = data_size if log_dir == data_dir else _dir_size(log_dir)
    latency = stats.latency  # worked out from the per-op rows: once
    return ServerStatus(
        state=server.state,
        min_latency_ms=int(latency.min),
        avg_latency_ms=latency.avg,
        max_latency_ms=int(latency.max),
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
        watch_summary=watch_summary,
        ephemerals_by_session={sid: sorted(p) for sid, p in tree.ephemerals.items()} if dumping else {},
        data_dir_size=data_size,
        log_dir_size=log_size,
        config_lines=config.render(
            data_dir=data_dir, data_log_dir=log_dir, data_dir_size=data_size, data_log_size=log_size
        )
        if word is None or word == "conf"
        else [],
        extra_metrics=_extra_metrics(server),
    )
