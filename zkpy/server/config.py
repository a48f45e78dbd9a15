"""zoo.cfg parsing and validation, with ZooKeeper 3.8's keys, defaults and rules.

An operator's zoo.cfg for Apache ZooKeeper should start a zkpy server unchanged, so
this module reads the same Java properties format, applies the same defaults and
turns every mistake into one ConfigError line that names the file, the line and the
key. Keys zkpy does not act on are kept (in `extra`) and reported in `warnings`,
never fatal: test harnesses such as kazoo's write admin, TLS and SASL settings.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from zkpy.server.limits import DEFAULT_MULTI_MAX_OPS

DEFAULT_TICK_TIME = 3000
DEFAULT_JUTE_MAX_BUFFER = 0xFFFFF
DEFAULT_4LW_WHITELIST = frozenset({"srvr"})

# Every four-letter word ZooKeeper 3.8 knows; `*` in the whitelist means all of these.
ALL_FOUR_LETTER_WORDS = frozenset(
    {
        "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "hash", "isro", "mntr",
        "ruok", "srst", "srvr", "stat", "stmk", "wchc", "wchp", "wchs",
    }
)  # fmt: skip

_SERVER_FORMAT = "does not have the form host:port:port[:participant|observer][;[clientHost:]clientPort]"


class ConfigError(Exception):
    """A zoo.cfg that cannot be used; str() is one line naming where and what."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One `server.N` line: where peer N listens for followers and for elections."""

    sid: int
    host: str
    peer_port: int
    election_port: int
    role: str = "participant"  # or "observer"
    client_host: str | None = None
    client_port: int | None = None

    def render(self) -> str:
        """The line as ZooKeeper's QuorumVerifier prints it (in `conf` and dynamic config files)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"server.{self.sid}={host}:{self.peer_port}:{self.election_port}:{self.role}"
        if self.client_port is not None:
            text += f";{self.client_host or '0.0.0.0'}:{self.client_port}"
        return text


@dataclass(slots=True)
class ServerConfig:
    """A validated zoo.cfg. Times are in ms unless the name says otherwise.

    Keys are matched without a leading `zookeeper.` (ZooKeeper turns unknown zoo.cfg keys into
    `zookeeper.<key>` system properties, so both spellings reach the same setting); `extra`
    holds every key not modelled here under that stripped name.
    """

    data_dir: Path
    data_log_dir: Path
    tick_time: int = DEFAULT_TICK_TIME
    client_port: int | None = None
    client_port_address: str = "0.0.0.0"
    secure_client_port: int | None = None
    client_port_listen_backlog: int = -1
    max_client_cnxns: int = 60
    min_session_timeout: int = 2 * DEFAULT_TICK_TIME
    max_session_timeout: int = 20 * DEFAULT_TICK_TIME
    four_letter_whitelist: frozenset[str] = DEFAULT_4LW_WHITELIST
    jute_max_buffer: int = DEFAULT_JUTE_MAX_BUFFER
    global_outstanding_limit: int = 1000
    multi_max_ops: int = DEFAULT_MULTI_MAX_OPS  # zkpy's bound on a multi's ops (zkpy.server.limits)
    snap_count: int = 100000
    pre_alloc_size_kb: int = 65536
    force_sync: bool = True
    autopurge_snap_retain_count: int = 3
    autopurge_purge_interval_hours: int = 0
    init_limit: int | None = None
    sync_limit: int | None = None
    peer_type: str = "participant"
    servers: dict[int, ServerSpec] = field(default_factory=dict)
    election_alg: int = 3
    read_only_mode: bool = False
    super_digest: str | None = None
    reconfig_enabled: bool = False
    standalone_enabled: bool = True
    admin_enable_server: bool = True  # admin.enableServer, Apache's default; see admin_server_wanted
    admin_server_port: int = 8080
    admin_server_address: str = "0.0.0.0"
    admin_requested: bool = False  # zoo.cfg set admin.serverPort or admin.enableServer=true
    metrics_port: int | None = None  # metricsProvider.httpPort: None, no Prometheus endpoint
    metrics_host: str = "0.0.0.0"
    dynamic_config_file: Path | None = None
    server_id: int | None = None  # from dataDir/myid, when load_config finds one
    extra: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def max_clients(self) -> int | None:
        """maxClientCnxns as a limit: None when 0 (unlimited)."""
        return self.max_client_cnxns or None

    @property
    def extended_types_enabled(self) -> bool:
        """TTL nodes (zookeeper.extendedTypesEnabled). On unless set to false: every replica, and
        every replay of the log, must apply creates under the same setting."""
        return self.extra.get("extendedTypesEnabled", "true").strip().lower() != "false"

    @property
    def container_check_interval_ms(self) -> int:
        """How often empty containers and expired TTL nodes are swept (znode.container.checkIntervalMs)."""
        try:
            return max(10, int(self.extra.get("znode.container.checkIntervalMs", "60000")))
        except ValueError:
            return 60000

    def _positive(self, key: str, default: int) -> int:
        try:
            return max(1, int(self.extra.get(key, str(default))))
        except ValueError:
            return default

    @property
    def max_concurrent_snap_syncs(self) -> int:
        """SNAP syncs of observers a leader runs at once (Apache's
        zookeeper.leader.maxConcurrentSnapSyncs, default 10); followers are never throttled."""
        return self._positive("leader.maxConcurrentSnapSyncs", 10)

    @property
    def max_concurrent_diff_syncs(self) -> int:
        """DIFF (and TRUNC) syncs of observers at once (zookeeper.leader.maxConcurrentDiffSyncs, 100)."""
        return self._positive("leader.maxConcurrentDiffSyncs", 100)

    @property
    def commit_log_count(self) -> int:
        """How many recent transactions a leader keeps in memory to sync learners by DIFF
        (zookeeper.commitLogCount); a learner further behind gets a snapshot."""
        try:
            return max(1, int(self.extra.get("commitLogCount", "100000")))
        except ValueError:
            return 100000

    @property
    def admin_server_wanted(self) -> bool:
        """Run the AdminServer? Only when zoo.cfg asks for it (admin.serverPort, or
        admin.enableServer=true), where Apache runs it on 8080 unless told not to: zkpy servers
        often share a host (an ensemble on one machine, tests), and all would fight over 8080."""
        return self.admin_enable_server and self.admin_requested

    def four_letter_allowed(self, word: str) -> bool:
        return word in self.four_letter_whitelist

    def render(
        self,
        *,
        data_dir: Path | None = None,
        data_log_dir: Path | None = None,
        data_dir_size: int = 0,
        data_log_size: int = 0,
    ) -> list[str]:
        """The lines ZooKeeper's `conf` four-letter word prints (without trailing newlines).

        ZooKeeper prints the directories its files are really in (dataDir/version-2); the server
        passes its own (dataDir/zkpy-1) and their sizes, as only it knows them. Without them the
        configured directories are printed.
        """
        server_id = self.server_id if self.server_id is not None and self.servers else 0
        lines = [
            f"clientPort={self.client_port or 0}",
            f"secureClientPort={self.secure_client_port if self.secure_client_port else -1}",
            f"dataDir={data_dir or self.data_dir}",
            f"dataDirSize={data_dir_size}",
            f"dataLogDir={data_log_dir or self.data_log_dir}",
            f"dataLogSize={data_log_size}",
            f"tickTime={self.tick_time}",
            f"maxClientCnxns={self.max_client_cnxns}",
            f"minSessionTimeout={self.min_session_timeout}",
            f"maxSessionTimeout={self.max_session_timeout}",
            f"clientPortListenBacklog={self.client_port_listen_backlog}",
            f"serverId={server_id}",
        ]
        me = self.servers.get(self.server_id) if self.server_id is not None else None
        if me is not None:
            lines += [
                f"initLimit={self.init_limit}",
                f"syncLimit={self.sync_limit}",
                f"electionAlg={self.election_alg}",
                f"electionPort={me.election_port}",
                f"quorumPort={me.peer_port}",
                f"peerType={0 if me.role == 'participant' else 1}",
                "membership: ",
                *(self.servers[sid].render() for sid in sorted(self.servers)),
                "version=0",
            ]
        return lines


# --- Java properties ----------------------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 == len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and i + 6 <= len(text):
            try:
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            except ValueError:
                pass
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split_key_value(line: str) -> tuple[str, str]:
    """Split at the first unescaped '=', ':' or whitespace, as java.util.Properties does."""
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=: \t\f":
            break
        i += 1
    rest = line[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return _unescape(line[:i]), _unescape(rest)


def parse_properties(text: str) -> list[tuple[int, str, str]]:
    """(line number, key, value) for each entry, keys and values trimmed like QuorumPeerConfig."""
    entries: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        logical = lines[i].lstrip(" \t\f")
        i += 1
        if not logical or logical[0] in "#!":
            continue
        # A line ending in an odd number of backslashes continues on the next one.
        while (len(logical) - len(logical.rstrip("\\"))) % 2 == 1 and i < len(lines):
            logical = logical[:-1] + lines[i].lstrip(" \t\f")
            i += 1
        key, value = _split_key_value(logical)
        entries.append((number, key.strip(), value.strip()))
    return entries


# --- zoo.cfg --------------------------------------------------------------------------------------


class _Reader:
    """Typed access to the raw entries, producing errors that say file:line: key: problem."""

    def __init__(self, source: str, entries: list[tuple[int, str, str]]) -> None:
        self.source = source
        self.values: dict[str, str] = {}
        self.lines: dict[str, int] = {}
        for number, key, value in entries:
            name = key.removeprefix("zookeeper.") if key != "zookeeper." else key
            self.values[name] = value
            self.lines[name] = number

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {key}: {problem}")

    def get_opt_int(self, key: str, low: int | None = None, high: int | None = None) -> int | None:
        raw = self.values.get(key)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw, 16) if raw.lower().startswith("0x") else int(raw)
        except ValueError:
            raise self.fail(key, f"{raw!r} is not an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f"at least {low}"
            raise self.fail(key, f"{value} is out of range ({bounds})")
        return value

    def get_int(self, key: str, default: int, low: int | None = None, high: int | None = None) -> int:
        value = self.get_opt_int(key, low, high)
        return default if value is None else value

    def port(self, key: str) -> int | None:
        """A port, with ZooKeeper's convention that 0 means "not set"."""
        return self.get_opt_int(key, 0, 65535) or None

    def get_bool(self, key: str, default: bool) -> bool:
        raw = self.values.get(key)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("true", "yes"):
            return True
        if lowered in ("false", "no"):
            return False
        raise self.fail(key, f"{raw!r} is not true/false (or yes/no)")


def _split_host_port(text: str) -> list[str]:
    """host:port[:...] with an optional [ipv6] host, as ConfigUtils.getHostAndPort."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return []
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            return []
        return [text[1:end], *(rest[1:].split(":") if rest else [])]
    return text.split(":")


def _port_number(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value <= 65535 else None


def parse_server_line(sid: int, value: str) -> ServerSpec:
    """A `server.N` value; raises ValueError with the reason (the caller adds where)."""
    server_part, semi, client_part = value.partition(";")
    if ";" in client_part or "|" in server_part:
        raise ValueError(f"{value!r} {_SERVER_FORMAT}")
    parts = _split_host_port(server_part.strip())
    if not 3 <= len(parts) <= 4 or not parts[0]:
        raise ValueError(f"{value!r} {_SERVER_FORMAT}")
    peer_port, election_port = _port_number(parts[1]), _port_number(parts[2])
    if peer_port is None or election_port is None:
        raise ValueError(f"{value!r}: ports must be integers in 1..65535")
    role = "participant"
    if len(parts) == 4:
        role = parts[3].strip().lower()
        if role not in ("participant", "observer"):
            raise ValueError(f"unrecognised peer type {parts[3]!r} (participant or observer)")
    client_host: str | None = None
    client_port: int | None = None
    if semi:
        client = _split_host_port(client_part.strip())
        if not 1 <= len(client) <= 2:
            raise ValueError(f"{value!r} {_SERVER_FORMAT}")
        client_port = _port_number(client[-1])
        if client_port is None:
            raise ValueError(f"client port {client[-1]!r} is not an integer in 1..65535")
        client_host = client[0] if len(client) == 2 else "0.0.0.0"
    return ServerSpec(sid, parts[0], peer_port, election_port, role, client_host, client_port)


# Keys that are understood directly below. Those with no effect yet are in _NO_EFFECT too.
_KNOWN = frozenset(
    {
        "tickTime", "dataDir", "dataLogDir", "clientPort", "clientPortAddress", "secureClientPort",
        "clientPortListenBacklog", "maxClientCnxns", "minSessionTimeout", "maxSessionTimeout",
        "4lw.commands.whitelist", "jute.maxbuffer", "globalOutstandingLimit", "snapCount",
        "preAllocSize", "forceSync", "autopurge.snapRetainCount", "autopurge.purgeInterval",
        "initLimit", "syncLimit", "peerType", "electionAlg", "readonlymode.enabled",
        "DigestAuthenticationProvider.superDigest", "superDigest", "reconfigEnabled",
        "standaloneEnabled", "admin.enableServer", "admin.serverPort", "admin.serverAddress", "dynamicConfigFile",
        "metricsProvider.className", "metricsProvider.httpPort", "metricsProvider.httpHost",
    }
)  # fmt: skip

# Keys kept in `extra` that the server reads from there.
_USED_EXTRA = frozenset(
    {
        "extendedTypesEnabled", "znode.container.checkIntervalMs", "secureClientPortAddress", "commitLogCount",
        "leader.maxConcurrentSnapSyncs", "leader.maxConcurrentDiffSyncs", "multiMaxOps",
    }
)  # fmt: skip

# The AdminServer's and the Prometheus endpoint's keys (zkpy/ops), inside families otherwise ignored.
_OPS_KEYS = frozenset(
    {
        "admin.enableServer", "admin.serverPort", "admin.serverAddress",
        "metricsProvider.className", "metricsProvider.httpPort", "metricsProvider.httpHost",
    }
)  # fmt: skip

# The ssl.* keys the secure client port reads (zkpy/server/tls.py); the rest of ssl.* does nothing.
_TLS_PREFIXES = (
    "ssl.keyStore.", "ssl.trustStore.", "ssl.clientAuth", "ssl.crl", "ssl.ocsp", "ssl.ciphersuites",
    "ssl.enabledProtocols", "ssl.protocol", "ssl.context.supplier.class",
)  # fmt: skip

_ENSEMBLE = "zkpy's ensemble does not use it"
_OWN_STORAGE = "zkpy has its own log and snapshot format"
_THROTTLING = "no request throttling; globalOutstandingLimit bounds the queue"


@dataclass(frozen=True, slots=True)
class _NoEffect:
    """ZooKeeper keys zkpy accepts but does not act on: why, and which values it honours anyway.

    A value zkpy's behaviour already matches (admin.enableServer=false: there is no admin server)
    gets no warning; any other value is warned about once, so an operator is never misled.
    """

    prefix: str
    reason: str
    honoured: frozenset[str] = frozenset()


def _rule(prefix: str, reason: str, *honoured: str) -> _NoEffect:
    return _NoEffect(prefix, reason, frozenset(honoured))


# First matching prefix wins, so specific keys come before the families that contain them.
_NO_EFFECT = (
    _rule("admin.", "the AdminServer takes admin.enableServer, admin.serverPort and admin.serverAddress"),
    _rule("reconfigEnabled", "no dynamic reconfiguration", "false", "no"),
    _rule("standaloneEnabled", _ENSEMBLE, "true", "yes"),
    _rule("skipACL", "ACLs are always checked", "no", "false"),
    _rule("enforceQuota", "no quotas", "false", "no"),
    _rule("authProvider.", "no pluggable authentication providers; digest, ip and world are built in"),
    _rule("sasl", "no SASL"),
    _rule("kerberos", "no SASL/Kerberos"),
    _rule("quorum.", _ENSEMBLE),
    _rule("ssl.quorum.", _ENSEMBLE),
    _rule("metricsProvider.", "the Prometheus endpoint takes metricsProvider.httpPort and httpHost"),
    _rule("serverCnxnFactory", "zkpy has its own network layer"),
    _rule("netty.", "zkpy has its own network layer"),
    _rule("client.portUnification", "TLS is served on secureClientPort only", "false", "no"),
    _rule("clientCnxnSocket", "a client setting"),
    _rule("client.", "a client setting"),
    _rule("jvm", "zkpy is not a Java process"),
    _rule("X509Util", "TLS is configured with the ssl.* keys"),
    _rule("quorumListenOnAllIPs", _ENSEMBLE),
    _rule("syncEnabled", _ENSEMBLE),
    _rule("cnxTimeout", _ENSEMBLE),
    _rule("connectToLearnerMasterLimit", _ENSEMBLE),
    _rule("electionPortBindRetry", _ENSEMBLE),
    _rule("multiAddress.", _ENSEMBLE),
    _rule("observer.", _ENSEMBLE),
    _rule("learner.", _ENSEMBLE),
    _rule("leader.", _ENSEMBLE),
    _rule("group.", _ENSEMBLE),
    _rule("weight.", _ENSEMBLE),
    _rule("initialConfig", _ENSEMBLE),
    _rule("maxCnxns", "no global connection limit; maxClientCnxns limits each client address"),
    _rule("localSessions", "no local sessions", "false", "no"),
    _rule("audit.", "no audit log", "false", "no"),
    _rule("digest.", "no tree digests", "false", "no"),
    _rule("fsync.", "no fsync time warning"),
    _rule("snapshot.", _OWN_STORAGE),
    _rule("snapSizeLimitInKb", _OWN_STORAGE),
    _rule("txnLogSizeLimitInKb", _OWN_STORAGE),
    _rule("serializeLastProcessedZxid", _OWN_STORAGE),
    _rule("closeSessionTxn", _OWN_STORAGE),
    _rule("flushDelay", "group commit batches by itself"),
    _rule("maxBatchSize", "group commit batches by itself"),
    _rule("maxWriteQueuePollTime", "group commit batches by itself"),
    _rule("requestThrottler.", _THROTTLING),
    _rule("outstandingHandshake", _THROTTLING),
    _rule("largeRequest", _THROTTLING),
    _rule("throttledOpWaitTime", _THROTTLING),
    _rule("connection", _THROTTLING),
    _rule("emulate353TTLNodes", "TTL nodes use the 3.5.4+ encoding", "false", "no"),
    _rule("watchManagerName", "zkpy has its own watch manager"),
    _rule("znode.container.maxPerMinute", "the sweep deletes every candidate at once"),
    _rule("znode.container.maxNeverUsedIntervalMs", "never-used containers are kept", "0"),
    _rule("ssl.", "the secure client port does not read it"),
)

_SECRET_WORDS = ("password", "secret", "digest")


def _shown(key: str, value: str) -> str:
    """The value as a warning may print it: secrets are masked."""
    return "***" if any(word in key.lower() for word in _SECRET_WORDS) else value


def _no_effect_warning(key: str, value: str, secure_port: bool) -> str | None:
    """Why `key` does nothing in zkpy, or None when it takes effect (or is not a ZooKeeper key)."""
    if key in _USED_EXTRA or key in _OPS_KEYS or (key.startswith(_TLS_PREFIXES) and secure_port):
        return None
    if key.startswith(_TLS_PREFIXES):
        return f"{key}={_shown(key, value)} has no effect in zkpy (secureClientPort is not set)"
    for rule in _NO_EFFECT:
        if key.startswith(rule.prefix):
            if value.strip().lower() in rule.honoured:
                return None
            return f"{key}={_shown(key, value)} has no effect in zkpy ({rule.reason})"
    return None


def _is_zookeeper_key(key: str) -> bool:
    return (
        key in _KNOWN
        or key in _USED_EXTRA
        or key.startswith(_TLS_PREFIXES)
        or any(key.startswith(rule.prefix) for rule in _NO_EFFECT)
    )


def _key_warnings(r: _Reader, secure_port: bool) -> list[str]:
    """One warning per key that does nothing here: no effect in zkpy, or not a key at all."""
    warnings: list[str] = []
    for key, value in r.values.items():
        if key.startswith("server."):
            continue
        if not _is_zookeeper_key(key):
            meant = _meant(key)
            hint = f": did you mean {meant}?" if meant else ""
            warnings.append(f"{r.where(key)}: unknown key {key!r} ignored{hint}")
            continue
        why = _no_effect_warning(key, value, secure_port)
        if why is not None:
            warnings.append(f"{r.where(key)}: {why}")
    return warnings


def _meant(key: str) -> str | None:
    """The known key an unknown one is most likely a misspelling of (clientport, tickTim...)."""
    known = sorted(_KNOWN | _USED_EXTRA)
    same_but_case = [k for k in known if k.lower() == key.lower()]
    if same_but_case:
        return same_but_case[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
    return close[0] if close else None


def _misspelt(r: _Reader, key: str) -> str:
    """For an error about `key` missing: ' (zoo.cfg:5 sets clientport: did you mean clientPort?)'
    when the file sets an unknown key that is likely `key` misspelt, else ''."""
    for other in r.values:
        if not _is_zookeeper_key(other) and _meant(other) == key:
            return f" ({r.where(other)} sets {other!r}: did you mean {key}?)"
    return ""


def _whitelist(raw: str | None, read_only: bool) -> frozenset[str]:
    """ZooKeeper's FourLetterCommands whitelist: `srvr` is always in, `isro` too in read-only mode."""
    words: set[str] = set()
    if raw is not None:
        for item in raw.split(","):
            word = item.strip()
            if word == "*":
                words |= ALL_FOUR_LETTER_WORDS
            elif word:
                words.add(word)
    words.add("srvr")
    if read_only:
        words.add("isro")
    return frozenset(words)


def _resolve(base_dir: Path, raw: str) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def parse_config(text: str, base_dir: str | os.PathLike[str] = ".", source: str = "zoo.cfg") -> ServerConfig:
    """Parse zoo.cfg text; relative paths resolve against `base_dir`. Raises ConfigError."""
    base = Path(base_dir)
    r = _Reader(source, parse_properties(text))
    v = r.values
    if not v.get("dataDir"):
        raise ConfigError(f"{source}: dataDir is not set{_misspelt(r, 'dataDir')}")
    data_dir = _resolve(base, v["dataDir"])
    data_log_dir = _resolve(base, v["dataLogDir"]) if v.get("dataLogDir") else data_dir

    tick = r.get_int("tickTime", DEFAULT_TICK_TIME, 1)
    min_timeout = r.get_int("minSessionTimeout", -1)
    max_timeout = r.get_int("maxSessionTimeout", -1)
    min_timeout = 2 * tick if min_timeout < 0 else min_timeout
    max_timeout = 20 * tick if max_timeout < 0 else max_timeout
    if min_timeout > max_timeout:
        raise ConfigError(
            f"{r.where('minSessionTimeout')}: minSessionTimeout ({min_timeout}) must not be larger "
            f"than maxSessionTimeout ({max_timeout})"
        )

    peer_type = v.get("peerType", "participant").lower()
    if peer_type not in ("participant", "observer"):
        raise r.fail("peerType", f"unrecognised peer type {v['peerType']!r} (participant or observer)")
    election_alg = r.get_int("electionAlg", 3)
    if election_alg != 3:
        raise r.fail("electionAlg", f"{election_alg} is not supported (only 3, fast leader election)")

    read_only = r.get_bool("readonlymode.enabled", False)
    super_digest = v.get("DigestAuthenticationProvider.superDigest") or v.get("superDigest") or None
    if super_digest is not None and len(super_digest.split(":")) != 2:
        key = (
            "DigestAuthenticationProvider.superDigest"
            if "DigestAuthenticationProvider.superDigest" in v
            else "superDigest"
        )
        raise r.fail(key, f"{super_digest!r} is not of the form user:base64-sha1")

    config = ServerConfig(
        data_dir=data_dir,
        data_log_dir=data_log_dir,
        tick_time=tick,
        client_port=r.port("clientPort"),
        client_port_address=v.get("clientPortAddress") or "0.0.0.0",
        secure_client_port=r.port("secureClientPort"),
        client_port_listen_backlog=r.get_int("clientPortListenBacklog", -1) or -1,
        max_client_cnxns=r.get_int("maxClientCnxns", 60, 0),
        min_session_timeout=min_timeout,
        max_session_timeout=max_timeout,
        four_letter_whitelist=_whitelist(v.get("4lw.commands.whitelist"), read_only),
        jute_max_buffer=r.get_int("jute.maxbuffer", DEFAULT_JUTE_MAX_BUFFER, 1),
        global_outstanding_limit=r.get_int("globalOutstandingLimit", 1000, 1),
        multi_max_ops=r.get_int("multiMaxOps", DEFAULT_MULTI_MAX_OPS, 1),
        snap_count=r.get_int("snapCount", 100000, 2),
        pre_alloc_size_kb=r.get_int("preAllocSize", 65536, 1),
        force_sync=r.get_bool("forceSync", True),
        autopurge_snap_retain_count=r.get_int("autopurge.snapRetainCount", 3),
        autopurge_purge_interval_hours=r.get_int("autopurge.purgeInterval", 0),
        init_limit=r.get_opt_int("initLimit", 1),
        sync_limit=r.get_opt_int("syncLimit", 1),
        peer_type=peer_type,
        election_alg=election_alg,
        read_only_mode=read_only,
        super_digest=super_digest,
        reconfig_enabled=r.get_bool("reconfigEnabled", False),
        standalone_enabled=r.get_bool("standaloneEnabled", True),
        admin_enable_server=r.get_bool("admin.enableServer", True),
        admin_server_port=r.port("admin.serverPort") or 8080,
        admin_server_address=v.get("admin.serverAddress") or "0.0.0.0",
        admin_requested=r.port("admin.serverPort") is not None or r.get_bool("admin.enableServer", False),
        metrics_port=_metrics_port(r),
        metrics_host=v.get("metricsProvider.httpHost") or "0.0.0.0",
        dynamic_config_file=_resolve(base, v["dynamicConfigFile"]) if v.get("dynamicConfigFile") else None,
    )
    if config.autopurge_snap_retain_count < 3:
        config.warnings.append(
            f"{r.where('autopurge.snapRetainCount')}: autopurge.snapRetainCount "
            f"{config.autopurge_snap_retain_count} raised to the minimum of 3"
        )
        config.autopurge_snap_retain_count = 3
    if config.autopurge_purge_interval_hours < 0:
        config.autopurge_purge_interval_hours = 0
    if not config.admin_enable_server and v.get("admin.serverPort"):
        config.warnings.append(
            f"{r.where('admin.serverPort')}: admin.serverPort={v['admin.serverPort']} has no effect "
            "(admin.enableServer=false)"
        )
    provider = v.get("metricsProvider.className")
    if provider and not provider.endswith(PROMETHEUS_PROVIDER):
        config.warnings.append(
            f"{r.where('metricsProvider.className')}: metricsProvider.className={provider} is not "
            f"{PROMETHEUS_PROVIDER}: zkpy serves Prometheus metrics only (metricsProvider.httpPort)"
        )
    if v.get("clientPortAddress") and config.client_port is None:
        raise r.fail("clientPortAddress", "is set but clientPort is not set")

    for key, value in v.items():
        if key.startswith("server."):
            config.servers.update(_server_entry(r, key, value))
        elif key not in _KNOWN:
            config.extra[key] = value
    config.warnings += _key_warnings(r, config.secure_client_port is not None)
    _check_ensemble(config, r)
    return config


PROMETHEUS_PROVIDER = "PrometheusMetricsProvider"
DEFAULT_METRICS_PORT = 7000  # Apache's PrometheusMetricsProvider's httpPort default


def _metrics_port(r: _Reader) -> int | None:
    """The Prometheus endpoint's port: metricsProvider.httpPort, or Apache's 7000 when only the
    Prometheus provider class is named; None (no endpoint) when neither is set."""
    port = r.port("metricsProvider.httpPort")
    if port is not None:
        return port
    provider = r.values.get("metricsProvider.className", "")
    return DEFAULT_METRICS_PORT if provider.endswith(PROMETHEUS_PROVIDER) else None


def _server_entry(r: _Reader, key: str, value: str) -> dict[int, ServerSpec]:
    suffix = key.removeprefix("server.")
    if not suffix.isdigit():
        raise r.fail(key, f"server id {suffix!r} is not a non-negative integer")
    sid = int(suffix)
    try:
        return {sid: parse_server_line(sid, value)}
    except ValueError as e:
        raise r.fail(key, str(e)) from None


def _check_ensemble(config: ServerConfig, r: _Reader) -> None:
    if not config.servers:
        if config.client_port is None and config.dynamic_config_file is None:
            raise ConfigError(f"{r.source}: clientPort is not set{_misspelt(r, 'clientPort')}")
        return
    if config.client_port is None and not any(s.client_port for s in config.servers.values()):
        # Legal (a member that only votes), but after a typo it is a server nobody can connect to.
        misspelt = _misspelt(r, "clientPort")
        if misspelt:
            raise ConfigError(f"{r.source}: clientPort is not set, so no client could connect{misspelt}")
    if config.init_limit is None:
        raise ConfigError(
            f"{r.source}: initLimit is not set (required with server.N lines){_misspelt(r, 'initLimit')}"
        )
    if config.sync_limit is None:
        raise ConfigError(
            f"{r.source}: syncLimit is not set (required with server.N lines){_misspelt(r, 'syncLimit')}"
        )
    _check_peer_ports(config, r)
    if not any(s.role == "participant" for s in config.servers.values()):
        raise ConfigError(f"{r.source}: no participant among the server.N lines (all are observers)")


def _check_peer_ports(config: ServerConfig, r: _Reader) -> None:
    """Every quorum and election port of every server.N line is its own: two servers (or one
    server's two roles) on one host:port cannot both listen there."""
    used: dict[tuple[str, int], tuple[str, str]] = {}  # host:port -> (server.N, quorum|election)
    for sid in sorted(config.servers):
        spec = config.servers[sid]
        key = f"server.{sid}"
        if spec.peer_port == spec.election_port:
            raise r.fail(
                key,
                f"its quorum port and its election port are both {spec.peer_port}: they must differ "
                f"(e.g. {spec.host}:{spec.peer_port}:{spec.peer_port + 1000})",
            )
        for role, port in (("quorum", spec.peer_port), ("election", spec.election_port)):
            other_key, other_role = used.setdefault((spec.host, port), (key, role))
            if other_key != key:
                raise r.fail(
                    key,
                    f"its {role} port {spec.host}:{port} is already {other_key}'s {other_role} port "
                    f"({r.where(other_key)}): each server needs ports of its own",
                )


def parse_dynamic_config(text: str, source: str = "zoo.cfg.dynamic") -> dict[int, ServerSpec]:
    """The server.N lines of a dynamicConfigFile (its `version=` line is ignored)."""
    r = _Reader(source, parse_properties(text))
    servers: dict[int, ServerSpec] = {}
    for key, value in r.values.items():
        if key.startswith("server."):
            servers.update(_server_entry(r, key, value))
        elif key != "version":
            raise r.fail(key, "only server.N and version lines belong in a dynamic config file")
    return servers


_BINARY_BYTE = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # control bytes other than \t \n \f \r


def _decode(path: Path, what: str, raw: bytes) -> str:
    """UTF-8, or else ISO-8859-1 as java.util.Properties reads zoo.cfg. A binary file (control
    bytes) is refused with the line of its first one, so a wrong path (a jar, a snapshot) is obvious."""
    binary = _BINARY_BYTE.search(raw)
    if binary is not None:
        offset = binary.start()
        line = raw.count(b"\n", 0, offset) + 1
        raise ConfigError(
            f"{path}:{line}: the {what} is not text (byte 0x{raw[offset]:02x} at offset {offset}): "
            "give zkpy a zoo.cfg of key=value lines"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1")


def _read_text(path: Path, what: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror or type(e).__name__}") from None
    return _decode(path, what, raw)


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and parse a zoo.cfg (plus its dynamicConfigFile and dataDir/myid when present).

    Relative paths in the file resolve against the file's own directory.
    """
    cfg_path = Path(path)
    config = parse_config(_read_text(cfg_path, "config file"), cfg_path.parent, str(cfg_path))
    if config.dynamic_config_file is not None:
        dynamic_path = config.dynamic_config_file
        dynamic = parse_dynamic_config(_read_text(dynamic_path, "dynamicConfigFile"), str(dynamic_path))
        config.servers.update(dynamic)
        r = _Reader(str(cfg_path), [])
        _check_ensemble(config, r)
    myid_path = config.data_dir / "myid"
    if config.servers and myid_path.is_file():
        raw = _read_text(myid_path, "myid file").strip()
        if not raw.isdigit():
            raise ConfigError(f"{myid_path}: myid {raw!r} is not a non-negative integer")
        config.server_id = int(raw)
        if config.server_id not in config.servers:
            raise ConfigError(f"{myid_path}: myid {config.server_id} has no server.{config.server_id} line")
        role = config.servers[config.server_id].role
        if role != config.peer_type:
            config.warnings.append(
                f"{cfg_path}: peerType {config.peer_type} does not match server.{config.server_id}'s "
                f"{role}; using {role}"
            )
            config.peer_type = role
    return config


__all__ = [
    "ALL_FOUR_LETTER_WORDS",
    "DEFAULT_4LW_WHITELIST",
    "ConfigError",
    "ServerConfig",
    "ServerSpec",
    "load_config",
    "parse_config",
    "parse_dynamic_config",
    "parse_properties",
    "parse_server_line",
]
