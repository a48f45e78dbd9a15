"""What each server of an ensemble is doing, read from its four-letter words (srvr, mntr), as a table.

Used by `zkpy status HOSTS` and by the live view of `zkpy ensemble`. Only words that Apache
ZooKeeper answers the same way are used, so the table works against either server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TextIO

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
    in_sync: str = ""  # a leader's learners in sync / its learners
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
        if "synced_followers" in mntr:  # a leader: its learners (followers and observers) in sync
            kinds = ("synced_followers", "synced_non_voting_followers", "synced_observers")
            synced = sum(_int(mntr.get(k)) or 0 for k in kinds)
            row.in_sync = f"{synced}/{mntr.get('learners', '?')}"
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
    """Fixed-width text, one line per server; latency is min/avg/max, in sync is a leader's learners
    (followers and observers) in sync out of those connected."""
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


# -- `zkpy status` ------------------------------------------------------------------------------------

DEFAULT_STATUS_SERVER = "127.0.0.1:2181"
DEFAULT_CLIENT_PORT = 2181  # what ZooKeeper's own tools assume when a host has no port
# Words zkpy answers, offered in messages; hash and stmk are ZooKeeper's too (sent on if asked, for
# Apache servers) but a zkpy server closes the connection on them.
NOT_ANSWERED_BY_ZKPY = frozenset({"hash", "stmk"})
_NOT_IN_WHITELIST = "is not executed because it is not in the whitelist."


class UsageError(ValueError):
    """Arguments that cannot be used; str() is the one line to print."""


def parse_server_address(address: str) -> tuple[str, int]:
    """'host', 'host:port', ':port', '[v6]', '[v6]:port' or a bare IPv6 address -> (host, port).

    A missing host is 127.0.0.1 and a missing port 2181; raises ValueError for a bad port.
    """
    host, port = address, ""
    if address.startswith("["):  # [ipv6] or [ipv6]:port
        host, _, rest = address[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise UsageError(f"cannot parse {address!r} as [host]:port")
        port = rest[1:]
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    # more than one colon and no brackets: a bare IPv6 address, default port
    if not port:
        return host or "127.0.0.1", DEFAULT_CLIENT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid port {port!r} in {address!r}")
    return host or "127.0.0.1", int(port)


def parse_hosts(hosts: str) -> list[tuple[str, int]]:
    """A client connect string, 'h1:p1,h2:p2[/chroot]' (the chroot is the client's business)."""
    servers = hosts.split("/", 1)[0]
    parsed = [parse_server_address(part.strip()) for part in servers.split(",") if part.strip()]
    if not parsed:
        raise UsageError(f"no server in {hosts!r}")
    return parsed


def _looks_like_word(arg: str) -> bool:
    """Four letters and nothing else: meant as a four-letter word (a host like that needs `:port`)."""
    return len(arg) == 4 and arg.isascii() and arg.isalpha()


def _offered_words() -> str:
    from zkpy.server.config import ALL_FOUR_LETTER_WORDS

    return ", ".join(sorted(ALL_FOUR_LETTER_WORDS - NOT_ANSWERED_BY_ZKPY))


def parse_status_args(hosts: str | None, word: str | None) -> tuple[list[tuple[str, int]], str | None]:
    """`zkpy status [HOSTS] [WORD]` -> (servers, word or None for the table).

    A lone argument of four letters is a word for the default server, not a host; the two may come
    in either order. Raises UsageError for an unknown word (before anything is sent) or a bad port.
    """
    from zkpy.server.config import ALL_FOUR_LETTER_WORDS

    if (
        word is None
        and hosts is not None
        and (hosts.lower() in ALL_FOUR_LETTER_WORDS or _looks_like_word(hosts))
    ):
        hosts, word = None, hosts  # `zkpy status mntr`: a word for the default server
    elif (
        hosts
        and word
        and hosts.lower() in ALL_FOUR_LETTER_WORDS
        and word.lower() not in ALL_FOUR_LETTER_WORDS
    ):
        hosts, word = word, hosts  # `zkpy status mntr host:port`
    if word is not None:
        word = word.lower()
        if word not in ALL_FOUR_LETTER_WORDS:
            raise UsageError(f"unknown four-letter word {word!r}; the words are: {_offered_words()}")
    return parse_hosts(hosts or DEFAULT_STATUS_SERVER), word


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_resolvable(hosts: str | None, servers: list[tuple[str, int]]) -> None:
    """`zkpy status foo`: one bare name that is no host here is more likely a mistyped word."""
    if hosts is None or len(servers) != 1 or ":" in hosts or "," in hosts:
        return
    try:
        socket.getaddrinfo(servers[0][0], None)
    except OSError:
        raise UsageError(
            f"{hosts!r} is neither a host this machine can resolve nor a four-letter word "
            f"({_offered_words()})"
        ) from None


def ask_word(host: str, port: int, word: str) -> str:
    """One server's answer to `word`; UsageError (exit 2) says why there is none."""
    where = _where(host, port)
    try:
        answer = four_letter(host, port, word)
    except (OSError, UnicodeError) as e:
        raise UsageError(f"cannot reach {where}: {e}") from None
    if _NOT_IN_WHITELIST in answer:
        raise UsageError(
            f"{where} refused {word!r}: {answer.strip()} (see 4lw.commands.whitelist in zoo.cfg)"
        )
    if not answer:
        why = " (zkpy servers do not answer hash and stmk)" if word in NOT_ANSWERED_BY_ZKPY else ""
        raise UsageError(f"{where} closed the connection without answering {word!r}{why}")
    return answer if answer.endswith("\n") else answer + "\n"


def status_command(hosts: str | None, word: str | None, as_json: bool, out: TextIO) -> int:
    """Exit status: 0 answered (a table with a quorum), 1 a table without a quorum, 2 an error."""
    servers, word = parse_status_args(hosts, word)
    _check_resolvable(hosts, servers)
    if word is not None:
        answers = {_where(h, p): ask_word(h, p, word) for h, p in servers}
        if as_json:
            out.write(json.dumps(answers, indent=2) + "\n")
        elif len(answers) == 1:
            out.write(next(iter(answers.values())))
        else:
            out.write("".join(f"--- {where}\n{answer}" for where, answer in answers.items()))
        return 0
    table = query_all([(h, p, None) for h, p in servers])
    quorum = has_quorum(table)
    if as_json:
        out.write(json.dumps({"quorum": quorum, "servers": [r.as_json() for r in table]}, indent=2) + "\n")
        return 0 if quorum else 1
    out.write(render_table(table) + "\n")
    for row in table:
        if row.detail:
            out.write(f"{row.server}: {row.mode} ({row.detail})\n")
    leaders = [r.server for r in table if r.mode in ("leader", "standalone")]
    out.write(
        f"quorum: yes, {', '.join(leaders)} leads\n" if quorum else "no quorum: no server answers as leader\n"
    )
    return 0 if quorum else 1
