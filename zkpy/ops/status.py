"""What each server of an ensemble is doing, read from its four-letter words (srvr, mntr), as a table.

Used by `zkpy status HOSTS` and by the live view of `zkpy ensemble`. Only words that Apache
ZooKeeper answers the same way are used, so the table works against either server.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

NOT_SERVING = "This ZooKeeper instance is not currently serving requests"
SERVING_MODES = ("leader", "follower", "observer", "standalone", "read-only")


def four_letter(host: str, port: int, word: str, timeout: float = 5.0) -> str:
    """Send a four-letter word and return the whole answer (the server closes after it)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


@dataclass
class ServerRow:
    """One server's line of the table; `mode` is down/not serving/unreachable when it does not serve."""

    server: str  # host:port, or the ensemble's name for it
    mode: str
    zxid: str = ""
    znodes: int | None = None
    connections: int | None = None
    outstanding: int | None = None
    latency: str = ""  # min/avg/max ms
    in_sync: str = ""  # a leader's synced followers / its learners
    detail: str = ""  # why it does not serve

    @property
    def serving(self) -> bool:
        return self.mode in SERVING_MODES

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def parse_srvr(answer: str) -> dict[str, str]:
    """`srvr` lines "Key: value" -> {key: value}."""
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in answer.splitlines()) if v}


def parse_mntr(answer: str) -> dict[str, str]:
    """`mntr` lines "zk_key<TAB>value" -> {key without zk_: value}."""
    out = {}
    for line in answer.splitlines():
        key, _, value = line.partition("\t")
        if key.startswith("zk_"):
            out[key[3:]] = value.strip()
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _latency(values: dict[str, str]) -> str:
    low, avg, high = (values.get(f"{k}_latency") for k in ("min", "avg", "max"))
    if avg is None:
        return ""
    return f"{low}/{float(avg):.1f}/{high}"


def query(host: str, port: int, name: str | None = None, timeout: float = 2.0) -> ServerRow:
    """One server's row from `srvr` (mode, zxid) and `mntr` (the rest, when it is whitelisted)."""
    where = name or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        srvr = four_letter(host, port, "srvr", timeout)
    except OSError as e:
        return ServerRow(where, "unreachable", detail=e.strerror or str(e) or type(e).__name__)
    if NOT_SERVING in srvr:
        return ServerRow(where, "not serving", detail="electing a leader or syncing with it")
    if not srvr:
        return ServerRow(where, "not serving", detail="closed the connection without answering srvr")
    fields = parse_srvr(srvr)
    row = ServerRow(where, fields.get("Mode", "unknown"), zxid=fields.get("Zxid", ""))
    row.znodes = _int(fields.get("Node count"))
    row.connections = _int(fields.get("Connections"))
    row.outstanding = _int(fields.get("Outstanding"))
    parts = fields.get("Latency min/avg/max", "").split("/")
    if len(parts) == 3:
        row.latency = _latency(dict(zip(("min_latency", "avg_latency", "max_latency"), parts, strict=True)))
    try:
        mntr = parse_mntr(four_letter(host, port, "mntr", timeout))
    except OSError:
        mntr = {}
    if mntr:
        row.znodes = _int(mntr.get("znode_count")) if "znode_count" in mntr else row.znodes
        row.connections = _int(mntr.get("num_alive_connections", "")) or row.connections
        row.outstanding = (
            _int(mntr.get("outstanding_requests", "")) if "outstanding_requests" in mntr else row.outstanding
        )
        row.latency = _latency(mntr) or row.latency
        if "synced_followers" in mntr:
            row.in_sync = f"{mntr['synced_followers']}/{mntr.get('learners', '?')}"
    return row


def query_all(servers: Sequence[tuple[str, int, str | None]], timeout: float = 2.0) -> list[ServerRow]:
    """Every server's row, asked in parallel so that one silent server costs one timeout, not N."""
    if not servers:
        return []
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        return list(pool.map(lambda s: query(s[0], s[1], s[2], timeout), servers))


def has_quorum(rows: Sequence[ServerRow]) -> bool:
    """A serving leader has a quorum behind it (it steps down without one); a standalone server is one."""
    return any(r.mode in ("leader", "standalone") for r in rows)


COLUMNS = ("server", "mode", "zxid", "znodes", "connections", "outstanding", "latency ms", "in sync")


def render_table(rows: Sequence[ServerRow]) -> str:
    """Fixed-width text, one line per server; latency is min/avg/max, in sync is synced/learners."""
    cells = [
        [
            r.server,
            r.mode,
            r.zxid,
            "" if r.znodes is None else str(r.znodes),
            "" if r.connections is None else str(r.connections),
            "" if r.outstanding is None else str(r.outstanding),
            r.latency,
            r.in_sync,
        ]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [list(COLUMNS), *cells]) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip()
             for line in [list(COLUMNS), *cells]]  # fmt: skip
    return "\n".join(lines)
