"""The four-letter words (ruok, srvr, stat, mntr, cons, conf, envi, wchs, wchc, wchp, dump, isro...).

Pure rendering: the server snapshots its state into a ServerStatus at the moment of the
request and `respond` turns it into the exact text Apache ZooKeeper 3.8 writes, so that
monitoring scripts, zkServer.sh-style tools and kazoo's `command()` read zkpy unchanged.
The formats were checked against a running ZooKeeper 3.8.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from zkpy import __version__
from zkpy.server.config import ALL_FOUR_LETTER_WORDS

# Clients gate features on the leading digits (kazoo's server_version reads them from `envi`),
# so zkpy reports the ZooKeeper release whose protocol it speaks.
VERSION = f"3.8.0-zkpy-{__version__}, built on Python {platform.python_version()}"
NOT_SERVING = "This ZooKeeper instance is not currently serving requests\n"
DEFAULT_TRACE_MASK = 306  # ZooTrace's default mask, what `gtmk` reports


@dataclass(slots=True)
class ConnectionInfo:
    """One client connection as `cons`, `stat` and `dump` show it."""

    remote_host: str
    remote_port: int
    session_id: int = 0  # 0 until the handshake completes
    queued: int = 0  # requests received but not yet answered
    received: int = 0
    sent: int = 0
    interest_ops: int = 1  # ZooKeeper shows 1 (reading) for clients, 0 for the asking connection
    last_op: str = "NA"  # e.g. GETD, SETD, EXIS, PING, as ZooKeeper abbreviates
    established_ms: int = 0  # wall-clock ms since the epoch
    timeout_ms: int = 0
    last_cxid: int = -1
    last_zxid: int = -1
    last_response_ms: int = 0
    last_latency_ms: int = 0
    min_latency_ms: int = 0
    avg_latency_ms: int = 0
    max_latency_ms: int = 0
    expires_at_ms: int | None = None  # when an idle connection would be dropped (dump)


@dataclass(slots=True)
class SessionInfo:
    session_id: int
    expires_at_ms: int  # wall-clock ms since the epoch


@dataclass(slots=True)
class LeaderStats:
    """What a leader adds to `mntr` and `srvr` (-1 proposal sizes: none yet)."""

    learners: int = 0
    synced_followers: int = 0
    synced_non_voting_followers: int = 0
    synced_observers: int = 0
    pending_syncs: int = 0
    last_proposal_size: int = -1
    min_proposal_size: int = -1
    max_proposal_size: int = -1


@dataclass(slots=True)
class ServerStatus:
    """Everything the four-letter words report, filled by the server when a word arrives."""

    version: str = VERSION
    state: str = "standalone"  # standalone, leader, follower, observer, read-only
    serving: bool = True  # False while starting, electing or syncing
    read_only: bool = False
    min_latency_ms: int = 0
    avg_latency_ms: float = 0.0
    max_latency_ms: int = 0
    packets_received: int = 0
    packets_sent: int = 0
    num_alive_connections: int = 0
    outstanding_requests: int = 0
    last_zxid: int = 0
    znode_count: int = 0
    watch_count: int = 0  # every kind of watch, as zk_watch_count
    ephemerals_count: int = 0
    approximate_data_size: int = 0
    open_file_descriptor_count: int = 0
    max_file_descriptor_count: int = 0
    sessions_count: int = 0
    uptime_ms: int = 0
    data_dir_size: int = 0
    log_dir_size: int = 0
    trace_mask: int = DEFAULT_TRACE_MASK
    now_ms: int = 0  # wall-clock now, for connections without an expiry time in `dump`
    connections: list[ConnectionInfo] = field(default_factory=list)
    sessions: list[SessionInfo] = field(default_factory=list)
    # wchs/wchc/wchp: ZooKeeper lists its data and exists watches here (not child watches).
    watches_by_session: dict[int, list[str]] = field(default_factory=dict)
    watches_by_path: dict[str, list[int]] | None = None  # derived from by_session when None
    # wchs alone: (connections watching, paths watched, total watches), counted without listing them.
    watch_summary: tuple[int, int, int] | None = None
    ephemerals_by_session: dict[int, list[str]] = field(default_factory=dict)
    config_lines: list[str] = field(default_factory=list)  # ServerConfig.render()
    environment: list[tuple[str, str]] | None = None  # default_environment() when None
    leader: LeaderStats | None = None
    peer_state: str | None = None  # e.g. "following - broadcast"; ensemble members only
    quorum_size: int | None = None
    extra_metrics: dict[str, int | float | str] = field(default_factory=dict)  # more zk_* lines


def java_double(value: float) -> str:
    """A double as Java's Double.toString prints it (mntr and srvr print averages that way)."""
    if value == 0:
        return "0.0"
    if 1e-3 <= abs(value) < 1e7:
        text = repr(float(value))
        return text if "." in text else text + ".0"
    sign, digits, exponent = Decimal(repr(float(value))).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    power = len(digits) - 1 + exponent
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{power}"


def hex_id(value: int) -> str:
    """Long.toHexString: zxids and session ids as unsigned 64-bit hex."""
    return format(value & 0xFFFFFFFFFFFFFFFF, "x")


def java_date(ms: int) -> str:
    """Java's Date.toString in UTC, e.g. "Tue Nov 24 12:11:53 UTC 2026"."""
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(ms / 1000))


def default_environment(version: str = VERSION) -> list[tuple[str, str]]:
    """The `envi` entries for this process (Python stands where ZooKeeper lists Java)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return [
        ("zookeeper.version", version),
        ("host.name", socket.gethostname()),
        ("python.version", platform.python_version()),
        ("python.implementation", platform.python_implementation()),
        ("python.executable", sys.executable),
        ("os.name", platform.system()),
        ("os.arch", platform.machine()),
        ("os.version", platform.release()),
        ("user.name", user),
        ("user.home", os.path.expanduser("~")),
        ("user.dir", os.getcwd()),
    ]


def _stats_lines(s: ServerStatus) -> str:
    """ServerStats.toString plus the node count, shared by srvr and stat."""
    text = (
        f"Latency min/avg/max: {s.min_latency_ms}/{java_double(round(s.avg_latency_ms, 4))}/{s.max_latency_ms}\n"
        f"Received: {s.packets_received}\n"
        f"Sent: {s.packets_sent}\n"
        f"Connections: {s.num_alive_connections}\n"
        f"Outstanding: {s.outstanding_requests}\n"
        f"Zxid: 0x{hex_id(s.last_zxid)}\n"
        f"Mode: {s.state}\n"
        f"Node count: {s.znode_count}\n"
    )
    if s.leader is not None:
        ld = s.leader
        text += f"Proposal sizes last/min/max: {ld.last_proposal_size}/{ld.min_proposal_size}/{ld.max_proposal_size}\n"
    return text


def _connection_line(c: ConnectionInfo, brief: bool) -> str:
    ops = "0" if c.interest_ops == 0 else format(c.interest_ops, "x")
    text = f" /{c.remote_host}:{c.remote_port}[{ops}](queued={c.queued},recved={c.received},sent={c.sent}"
    if not brief and c.session_id != 0:
        text += (
            f",sid=0x{hex_id(c.session_id)},lop={c.last_op},est={c.established_ms},to={c.timeout_ms}"
            + (f",lcxid=0x{hex_id(c.last_cxid)}" if c.last_cxid >= 0 else "")
            + f",lzxid=0x{hex_id(c.last_zxid)},lresp={c.last_response_ms},llat={c.last_latency_ms}"
            f",minlat={c.min_latency_ms},avglat={c.avg_latency_ms},maxlat={c.max_latency_ms}"
        )
    return text + ")\n"


def srvr(s: ServerStatus) -> str:
    return _version_lines(s) + _stats_lines(s)


def stat(s: ServerStatus) -> str:
    clients = "".join(_connection_line(c, brief=True) for c in s.connections)
    return _version_lines(s) + "Clients:\n" + clients + "\n" + _stats_lines(s)


def _version_lines(s: ServerStatus) -> str:
    text = f"Zookeeper version: {s.version}\n"
    if s.read_only:
        text += "READ-ONLY mode; serving only read-only clients\n"
    return text


def cons(s: ServerStatus) -> str:
    return "".join(_connection_line(c, brief=False) for c in s.connections) + "\n"


def mntr_values(s: ServerStatus) -> list[tuple[str, int | float | str]]:
    """mntr's lines as (name, value), in mntr's order (the AdminServer's monitor command too)."""
    values: list[tuple[str, int | float | str]] = [
        ("version", s.version),
        ("server_state", s.state),
        ("avg_latency", round(s.avg_latency_ms, 4)),
        ("max_latency", s.max_latency_ms),
        ("min_latency", s.min_latency_ms),
        ("packets_received", s.packets_received),
        ("packets_sent", s.packets_sent),
        ("num_alive_connections", s.num_alive_connections),
        ("outstanding_requests", s.outstanding_requests),
        ("znode_count", s.znode_count),
        ("watch_count", s.watch_count),
        ("ephemerals_count", s.ephemerals_count),
        ("approximate_data_size", s.approximate_data_size),
        ("open_file_descriptor_count", s.open_file_descriptor_count),
        ("max_file_descriptor_count", s.max_file_descriptor_count),
        ("global_sessions", s.sessions_count),
        ("local_sessions", 0),
        ("uptime", s.uptime_ms),
    ]
    if s.peer_state is not None:
        values.append(("peer_state", s.peer_state))
    if s.quorum_size is not None:
        values.append(("quorum_size", s.quorum_size))
    if s.leader is not None:
        ld = s.leader
        values += [
            ("learners", ld.learners),
            ("synced_followers", ld.synced_followers),
            ("synced_non_voting_followers", ld.synced_non_voting_followers),
            ("synced_observers", ld.synced_observers),
            ("pending_syncs", ld.pending_syncs),
            ("last_proposal_size", ld.last_proposal_size),
            ("max_proposal_size", ld.max_proposal_size),
            ("min_proposal_size", ld.min_proposal_size),
        ]
    values += list(s.extra_metrics.items())
    return values


def mntr(s: ServerStatus) -> str:
    return "".join(f"zk_{key}\t{_metric(value)}\n" for key, value in mntr_values(s))


def _metric(value: int | float | str) -> str:
    if isinstance(value, float):
        return java_double(value)
    return str(value)


def conf(s: ServerStatus) -> str:
    return "".join(line + "\n" for line in s.config_lines)


def envi(s: ServerStatus) -> str:
    entries = s.environment if s.environment is not None else default_environment(s.version)
    return "Environment:\n" + "".join(f"{key}={value}\n" for key, value in entries)


def _by_path(s: ServerStatus) -> dict[str, list[int]]:
    if s.watches_by_path is not None:
        return s.watches_by_path
    by_path: dict[str, list[int]] = {}
    for session, paths in s.watches_by_session.items():
        for path in paths:
            by_path.setdefault(path, []).append(session)
    return by_path


def wchs(s: ServerStatus) -> str:
    if s.watch_summary is not None:
        connections, paths, total = s.watch_summary
    else:
        connections, paths = len(s.watches_by_session), len(_by_path(s))
        total = sum(len(p) for p in s.watches_by_session.values())
    return f"{connections} connections watching {paths} paths\nTotal watches:{total}\n"


def wchc(s: ServerStatus) -> str:
    parts = [
        f"0x{hex_id(session)}\n" + "".join(f"\t{path}\n" for path in paths)
        for session, paths in s.watches_by_session.items()
    ]
    return "".join(parts) + "\n"


def wchp(s: ServerStatus) -> str:
    parts = [
        f"{path}\n" + "".join(f"\t0x{hex_id(session)}\n" for session in sessions)
        for path, sessions in _by_path(s).items()
    ]
    return "".join(parts) + "\n"


def _expiry_sets(title: str, items: list[tuple[int, str]]) -> str:
    """ZooKeeper's ExpiryQueue.dump: items grouped by expiry time, earliest first."""
    groups: dict[int, list[str]] = {}
    for expires, text in items:
        groups.setdefault(expires, []).append(text)
    lines = [f"{title} Sets ({len(groups)})/({len(items)}):\n"]
    for expires in sorted(groups):
        members = groups[expires]
        lines.append(f"{len(members)} expire at {java_date(expires)}:\n")
        lines += [f"\t{text}\n" for text in members]
    return "".join(lines)


def dump(s: ServerStatus) -> str:
    sessions = [(info.expires_at_ms, f"0x{hex_id(info.session_id)}") for info in s.sessions]
    ephemerals = "".join(
        f"0x{hex_id(session)}:\n" + "".join(f"\t{path}\n" for path in paths)
        for session, paths in s.ephemerals_by_session.items()
    )
    connections = [
        (
            c.expires_at_ms if c.expires_at_ms is not None else s.now_ms,
            f"ip: /{c.remote_host}:{c.remote_port} sessionId: 0x{hex_id(c.session_id)}",
        )
        for c in s.connections
    ]
    return (
        "SessionTracker dump:\n"
        + _expiry_sets("Session", sessions)
        + "ephemeral nodes dump:\n"
        + f"Sessions with Ephemerals ({len(s.ephemerals_by_session)}):\n"
        + ephemerals
        + "Connections dump:\n"
        + _expiry_sets("Connections", connections)
    )


def isro(s: ServerStatus) -> str:
    if not s.serving:
        return "null"
    return "ro" if s.read_only else "rw"


def dirs(s: ServerStatus) -> str:
    return f"datadir_size: {s.data_dir_size}\nlogdir_size: {s.log_dir_size}\n"


# word -> (renderer, needs a serving server). crst and srst only answer here: the
# server resets its own counters when it sees them (see RESET_WORDS).
COMMANDS: dict[str, tuple[Callable[[ServerStatus], str], bool]] = {
    "ruok": (lambda s: "imok", False),
    "srvr": (srvr, True),
    "stat": (stat, True),
    "mntr": (mntr, True),
    "cons": (cons, True),
    "conf": (conf, True),
    "envi": (envi, False),
    "wchs": (wchs, True),
    "wchc": (wchc, True),
    "wchp": (wchp, True),
    "dump": (dump, True),
    "isro": (isro, False),
    "dirs": (dirs, True),
    "gtmk": (lambda s: str(s.trace_mask), False),
    "crst": (lambda s: "Connection stats reset.\n", True),
    "srst": (lambda s: "Server stats reset.\n", True),
}
RESET_WORDS = frozenset({"crst", "srst"})


def respond(word: str, status: ServerStatus, whitelist: set[str] | frozenset[str]) -> str:
    """The exact text to write for a four-letter word before closing ("" = close silently).

    Unknown words get no answer, as in ZooKeeper; known words outside the whitelist get
    ZooKeeper's refusal line; most words answer NOT_SERVING while the server is not serving.
    """
    if word not in ALL_FOUR_LETTER_WORDS:
        return ""
    if word not in whitelist:
        return f"{word} is not executed because it is not in the whitelist.\n"
    command = COMMANDS.get(word)
    if command is None:  # hash and stmk: known to ZooKeeper, not implemented here
        return ""
    render, needs_serving = command
    if needs_serving and not status.serving:
        return NOT_SERVING
    return render(status)


__all__ = [
    "COMMANDS",
    "NOT_SERVING",
    "RESET_WORDS",
    "VERSION",
    "ConnectionInfo",
    "LeaderStats",
    "ServerStatus",
    "SessionInfo",
    "default_environment",
    "hex_id",
    "java_date",
    "java_double",
    "mntr_values",
    "respond",
]
