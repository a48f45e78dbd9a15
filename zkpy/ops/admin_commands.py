"""Apache ZooKeeper 3.8's AdminServer commands as JSON, from the status the four-letter words use.

Each command answers a dict with Apache's field names (checked against a running Apache 3.8 in
tests/ops/test_admin_apache_diff.py), plus Apache's "command" (the primary name, also when asked by
an alias such as `mntr`) and "error" (null, or why there is no answer). Values come from the same
ServerStatus snapshot `mntr`, `cons`, `wchc` and the others render, so the JSON and the
four-letter words never disagree.

Fields Apache has and zkpy does not measure are present, so tools that read them keep working,
with the value Apache gives before it has measured anything (-1 sizes) or a constant zkpy holds
(no TLS client certificates: non_mtls counts 0; no fsync warning threshold: 0); see
docs/operations-metrics-admin.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zkpy.ops.source import Source
from zkpy.server.fourletter import (
    NOT_SERVING,
    ServerStatus,
    default_environment,
    hex_id,
    mntr_values,
)

if TYPE_CHECKING:
    from zkpy.server.config import ServerConfig, ServerSpec
    from zkpy.server.node import ZooKeeperServer

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    run: Callable[[Source, ServerStatus | None], Json]
    needs_server: bool = True  # answer "not currently serving" while there is no serving server


class CommandError(Exception):
    """The command's "error" field (Apache answers HTTP 200 with it)."""


def _signed64(value: int) -> int:
    """Session ids as Java longs (Apache prints them as signed numbers)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def _config_dirs(status: ServerStatus) -> dict[str, str]:
    """dataDir and dataLogDir as `conf` prints them: the directories the files are really in."""
    found = {}
    for line in status.config_lines:
        key, _, value = line.partition("=")
        if key in ("dataDir", "dataLogDir"):
            found[key] = value
    return found


def configuration(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    config = source.config
    dirs = _config_dirs(status)
    server_id = config.server_id if config.server_id is not None and config.servers else 0
    return {
        "client_port": config.client_port or 0,
        "data_dir": dirs.get("dataDir", str(config.data_dir)),
        "data_log_dir": dirs.get("dataLogDir", str(config.data_log_dir)),
        "tick_time": config.tick_time,
        "max_client_cnxns": config.max_client_cnxns,
        "min_session_timeout": config.min_session_timeout,
        "max_session_timeout": config.max_session_timeout,
        "server_id": server_id,
        "client_port_listen_backlog": config.client_port_listen_backlog,
    }


def _connection(c: Any, brief: bool) -> Json:
    info: Json = {
        "remote_socket_address": f"{c.remote_host}:{c.remote_port}",
        "interest_ops": c.interest_ops,
        "outstanding_requests": c.queued,
        "packets_received": c.received,
        "packets_sent": c.sent,
    }
    if brief or c.session_id == 0:
        return info
    info.update(
        session_id=_signed64(c.session_id),
        last_operation=c.last_op,
        established=c.established_ms,
        session_timeout=c.timeout_ms,
        last_cxid=c.last_cxid,
        last_zxid=c.last_zxid,
        last_response_time=c.last_response_ms,
        last_latency=c.last_latency_ms,
        min_latency=c.min_latency_ms,
        avg_latency=c.avg_latency_ms,
        max_latency=c.max_latency_ms,
    )
    return info


def connections(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    return {
        "connections": [_connection(c, brief=False) for c in status.connections],
        "secure_connections": [],
    }


def dirs(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    return {"datadir_size": status.data_dir_size, "logdir_size": status.log_dir_size}


def dump(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    expiry: dict[str, list[int]] = {}
    for session in status.sessions:
        expiry.setdefault(str(session.expires_at_ms), []).append(_signed64(session.session_id))
    ephemerals = {str(_signed64(sid)): paths for sid, paths in status.ephemerals_by_session.items()}
    return {"expiry_time_to_session_ids": expiry, "session_id_to_ephemeral_paths": ephemerals}


def environment(source: Source, status: ServerStatus | None) -> Json:
    entries = status.environment if status is not None and status.environment is not None else None
    return dict(entries if entries is not None else default_environment())


def is_read_only(source: Source, status: ServerStatus | None) -> Json:
    return {"read_only": status is not None and status.read_only}


def _buffer_sizes() -> Json:
    return {"last_buffer_size": -1, "min_buffer_size": -1, "max_buffer_size": -1}


def server_stats(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    stats = {
        "packets_sent": status.packets_sent,
        "packets_received": status.packets_received,
        "fsync_threshold_exceed_count": 0,
        "client_response_stats": _buffer_sizes(),
        "data_dir_size": status.data_dir_size,
        "log_dir_size": status.log_dir_size,
        "provider_null": False,
        "server_state": status.state,
        "last_processed_zxid": status.last_zxid,
        "outstanding_requests": status.outstanding_requests,
        "avg_latency": round(status.avg_latency_ms, 4),
        "max_latency": status.max_latency_ms,
        "min_latency": status.min_latency_ms,
        "num_alive_client_connections": status.num_alive_connections,
        "uptime": status.uptime_ms,
        "auth_failed_count": 0,
        "non_mtlsremote_conn_count": 0,
        "non_mtlslocal_conn_count": 0,
    }
    answer: Json = {
        "version": status.version,
        "read_only": status.read_only,
        "server_stats": stats,
        "client_response": _buffer_sizes(),
    }
    if status.leader is not None:
        ld = status.leader
        answer["proposal_stats"] = {
            "last_buffer_size": ld.last_proposal_size,
            "min_buffer_size": ld.min_proposal_size,
            "max_buffer_size": ld.max_proposal_size,
        }
    answer["node_count"] = status.znode_count
    return answer


def stats(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    return {
        **server_stats(source, status),
        "connections": [_connection(c, brief=True) for c in status.connections],
        "secure_connections": [],
    }


def monitor(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    return dict(mntr_values(status))


def watch_summary(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    paths = {path for paths in status.watches_by_session.values() for path in paths}
    return {
        "num_connections": len(status.watches_by_session),
        "num_paths": len(paths),
        "num_total_watches": sum(len(p) for p in status.watches_by_session.values()),
    }


def watches(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    return {
        "session_id_to_watched_paths": {
            str(_signed64(sid)): paths for sid, paths in status.watches_by_session.items()
        }
    }


def watches_by_path(source: Source, status: ServerStatus | None) -> Json:
    assert status is not None
    by_path: dict[str, list[int]] = {}
    for sid, paths in status.watches_by_session.items():
        for path in paths:
            by_path.setdefault(path, []).append(_signed64(sid))
    return {"path_to_session_ids": by_path}


def get_trace_mask(source: Source, status: ServerStatus | None) -> Json:
    return {"tracemask": status.trace_mask if status is not None else 306}


def hash_command(source: Source, status: ServerStatus | None) -> Json:
    return {"digests": []}  # zkpy keeps no tree digests (Apache's digest.enabled=false answers the same)


def _leader_id(source: Source) -> int | None:
    peer = source.peer
    if peer is None:
        return None
    decided = peer.election.decided
    return decided.leader if decided is not None and peer.serving is not None else None


def leader(source: Source, status: ServerStatus | None) -> Json:
    peer = source.peer
    leader_id = _leader_id(source)
    if peer is None or leader_id is None:
        raise CommandError("server is not initialized")
    spec = source.config.servers.get(leader_id)
    return {
        "is_leader": leader_id == peer.my_id,
        "leader_id": leader_id,
        "leader_ip": spec.host if spec is not None else "",
    }


def _client_address(config: ServerConfig) -> str:
    return f"{config.client_port_address}:{config.client_port or 0}"


def voting_view(source: Source, status: ServerStatus | None) -> Json:
    config = source.config
    if source.peer is None:
        return {"current_config": {}}
    view: Json = {}
    for sid in sorted(config.servers):
        spec = config.servers[sid]
        if sid == config.server_id:
            client = _client_address(config)
        elif spec.client_port is not None:
            client = f"{spec.client_host or '0.0.0.0'}:{spec.client_port}"
        else:
            client = ""
        view[str(sid)] = {
            "server_addresses": [f"{spec.host}:{spec.peer_port}"],
            "election_addresses": [f"{spec.host}:{spec.election_port}"],
            "client_address": client,
            "learner_type": spec.role,
        }
    return {"current_config": view}


def _addresses(host: str, port: int) -> Json:
    """Apache's MultipleAddresses as its Jackson serialisation shows one address."""
    one = f"{host}:{port}"
    return {
        "empty": False,
        "all_addresses": [one],
        "all_reachable_addresses": [one],
        "one": one,
        "reachable_address": one,
        "wildcard_addresses": [f"0.0.0.0:{port}"],
        "all_ports": [port],
        "all_host_strings": [host],
        "all_reachable_addresses_or_all": [one],
        "reachable_or_one": one,
    }


def zabstate(source: Source, status: ServerStatus | None) -> Json:
    peer = source.peer
    if peer is None:
        return {"voting": False, "zabstate": ""}
    config = source.config
    spec: ServerSpec = config.servers[peer.my_id]
    last = peer.tree.last_zxid
    serving = peer.serving is not None
    return {
        "myid": peer.my_id,
        "is_leader": _leader_id(source) == peer.my_id,
        "quorum_address": _addresses(spec.host, spec.peer_port),
        "election_address": _addresses(spec.host, spec.election_port),
        "client_address": _client_address(config),
        "voting": spec.role == "participant",
        "last_zxid": f"0x{hex_id(last)}",
        "zab_epoch": last >> 32,
        "zab_counter": last & 0xFFFFFFFF,
        "zabstate": "broadcast"
        if serving
        else ("election" if peer.state == "looking" else "synchronization"),
    }


def _reset(stats: bool, connections: bool) -> Callable[[Source, ServerStatus | None], Json]:
    def run(source: Source, status: ServerStatus | None) -> Json:
        server: ZooKeeperServer | None = source.current()
        if server is not None:
            if stats:
                server.stats.reset()
            if connections:
                for conn in server.connections:
                    conn.reset_stats()
        return {}

    return run


COMMANDS: list[Command] = [
    Command("configuration", ("conf", "config"), configuration),
    Command("connection_stat_reset", ("crst",), _reset(stats=False, connections=True)),
    Command("connections", ("cons",), connections),
    Command("dirs", (), dirs),
    Command("dump", (), dump),
    Command("environment", ("envi", "env"), environment, needs_server=False),
    Command("get_trace_mask", ("gtmk",), get_trace_mask, needs_server=False),
    Command("hash", (), hash_command, needs_server=False),
    Command("is_read_only", ("isro",), is_read_only, needs_server=False),
    Command("leader", ("lead",), leader, needs_server=False),
    Command("monitor", ("mntr",), monitor),
    Command("ruok", (), lambda source, status: {}, needs_server=False),
    Command("server_stats", ("srvr",), server_stats),
    Command("stat_reset", ("srst",), _reset(stats=True, connections=False)),
    Command("stats", ("stat",), stats),
    Command("voting_view", (), voting_view, needs_server=False),
    Command("watch_summary", ("wchs",), watch_summary),
    Command("watches", ("wchc",), watches),
    Command("watches_by_path", ("wchp",), watches_by_path),
    Command("zabstate", (), zabstate, needs_server=False),
]
BY_NAME: dict[str, Command] = {
    name: command for command in COMMANDS for name in (command.name, *command.aliases)
}


def run_command(source: Source, name: str) -> Json:
    """One command's JSON, Apache's shape: its fields, then "command" and "error"."""
    command = BY_NAME.get(name)
    if command is None:
        return {"command": name, "error": f"Unknown command: {name}"}
    server = source.current()
    if server is None and command.needs_server:
        return {"command": command.name, "error": NOT_SERVING.strip()}
    status = server.status() if server is not None else None
    try:
        answer = command.run(source, status)
    except CommandError as e:
        return {"error": str(e), "command": command.name}
    return {**answer, "command": command.name, "error": None}
