"""zoo.cfg parsing: ZooKeeper 3.8's defaults, the Java properties syntax, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zkpy.server.config import (
    ALL_FOUR_LETTER_WORDS,
    ConfigError,
    ServerSpec,
    load_config,
    parse_config,
    parse_properties,
    parse_server_line,
)

MINIMAL = "dataDir=/var/zk\nclientPort=2181\n"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/base")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_match_zookeeper() -> None:
    c = parse_config(MINIMAL, "/base")
    assert c.tick_time == 3000
    assert c.data_dir == Path("/var/zk")
    assert c.data_log_dir == Path("/var/zk")
    assert c.client_port == 2181
    assert c.client_port_address == "0.0.0.0"
    assert c.max_client_cnxns == 60
    assert c.max_clients == 60
    assert (c.min_session_timeout, c.max_session_timeout) == (6000, 60000)
    assert c.four_letter_whitelist == {"srvr"}
    assert c.jute_max_buffer == 0xFFFFF
    assert c.global_outstanding_limit == 1000
    assert c.snap_count == 100000
    assert c.pre_alloc_size_kb == 65536
    assert c.force_sync is True
    assert (c.autopurge_snap_retain_count, c.autopurge_purge_interval_hours) == (3, 0)
    assert c.servers == {}
    assert c.super_digest is None
    assert c.warnings == []


def test_session_timeouts_follow_tick_time() -> None:
    c = parse_config(MINIMAL + "tickTime=2000\n", "/")
    assert (c.min_session_timeout, c.max_session_timeout) == (4000, 40000)
    c = parse_config(MINIMAL + "tickTime=100\nminSessionTimeout=500\nmaxSessionTimeout=900\n", "/")
    assert (c.min_session_timeout, c.max_session_timeout) == (500, 900)


def test_properties_syntax() -> None:
    text = (
        "# a comment\n"
        "   ! another comment\n"
        "\n"
        "tickTime = 2000  \n"
        "dataDir:/data/zk\n"
        "clientPort 2181\n"
        "dataLogDir=/logs/\\\n"
        "    zk\n"
        "4lw.commands.whitelist = stat,  ruok , \n"
    )
    c = parse_config(text, "/")
    assert c.tick_time == 2000
    assert c.data_dir == Path("/data/zk")
    assert c.data_log_dir == Path("/logs/zk")
    assert c.client_port == 2181
    assert c.four_letter_whitelist == {"stat", "ruok", "srvr"}


def test_parse_properties_reports_line_numbers_and_escapes() -> None:
    assert parse_properties("a=1\n#x=2\nb\\ c = v\\tw\nd\n") == [
        (1, "a", "1"),
        (3, "b c", "v\tw"),
        (4, "d", ""),
    ]


def test_relative_paths_resolve_against_base_dir() -> None:
    c = parse_config("dataDir=data\ndataLogDir=../logs\nclientPort=1\n", "/srv/zk")
    assert c.data_dir == Path("/srv/zk/data")
    assert c.data_log_dir == Path("/srv/zk/../logs")


def test_whitelist_star_and_read_only_mode() -> None:
    assert (
        parse_config(MINIMAL + "4lw.commands.whitelist=*\n", "/").four_letter_whitelist
        == ALL_FOUR_LETTER_WORDS
    )
    c = parse_config(MINIMAL + "readonlymode.enabled=true\n", "/")
    assert c.read_only_mode
    assert c.four_letter_whitelist == {"srvr", "isro"}
    assert c.four_letter_allowed("isro") and not c.four_letter_allowed("stat")


def test_zookeeper_prefixed_keys_and_super_digest_spellings() -> None:
    digest = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
    for key in ("zookeeper.DigestAuthenticationProvider.superDigest", "superDigest"):
        assert parse_config(MINIMAL + f"{key}={digest}\n", "/").super_digest == digest
    c = parse_config(MINIMAL + "zookeeper.4lw.commands.whitelist=mntr\n", "/")
    assert "mntr" in c.four_letter_whitelist


def test_kazoo_harness_keys_are_not_fatal() -> None:
    text = MINIMAL + (
        "admin.enableServer=false\nadmin.serverPort=0\nsecureClientPort=2281\n"
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
        "authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n"
        "ssl.keyStore.location=/k.jks\nreconfigEnabled=true\nstandaloneEnabled=false\n"
        "forceSync=no\nsnapCount=10\npreAllocSize=128\nglobalOutstandingLimit=5\njute.maxbuffer=0x2000\n"
    )
    c = parse_config(text, "/")
    assert [w.split(": ", 1)[1].split("=")[0] for w in c.warnings] == [
        "admin.serverPort",
        "serverCnxnFactory",
        "authProvider.1",
        "reconfigEnabled",
        "standaloneEnabled",
    ]
    assert c.admin_enable_server is False
    assert c.secure_client_port == 2281
    assert c.reconfig_enabled and not c.standalone_enabled
    assert c.force_sync is False
    assert (c.snap_count, c.pre_alloc_size_kb, c.global_outstanding_limit) == (10, 128, 5)
    assert c.jute_max_buffer == 0x2000
    assert c.extra["serverCnxnFactory"].endswith("NettyServerCnxnFactory")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("admin.idleTimeout=1000", "the AdminServer takes admin.enableServer"),
        ("skipACL=yes", "ACLs are always checked"),
        ("authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider", "no pluggable"),
        ("sasl.enabled=true", "no SASL"),
        ("enforceQuota=true", "no quotas"),
        ("serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory", "own network layer"),
        ("quorumListenOnAllIPs=true", "zkpy's ensemble does not use it"),
        ("standaloneEnabled=false", "zkpy's ensemble does not use it"),
        ("reconfigEnabled=true", "no dynamic reconfiguration"),
        ("jvmFlags=-Xmx2g", "not a Java process"),
        ("metricsProvider.exportJvmInfo=false", "the Prometheus endpoint takes"),
        ("ssl.keyStore.location=/k.jks", "secureClientPort is not set"),
    ],
)
def test_keys_without_effect_are_warned_about(line: str, reason: str) -> None:
    """Every key zkpy accepts but ignores gets one line: the setting, its value and why."""
    c = parse_config(MINIMAL + line + "\n", "/", source="zoo.cfg")
    key, value = line.removeprefix("zookeeper.").split("=", 1)
    assert len(c.warnings) == 1
    assert c.warnings[0].startswith(f"zoo.cfg:3: {key}={value} has no effect in zkpy (")
    assert reason in c.warnings[0]


@pytest.mark.parametrize(
    "line",
    [
        "admin.enableServer=false",
        "skipACL=no",
        "readonlymode.enabled=false",
        "standaloneEnabled=true",
        "localSessionsEnabled=false",
        "extendedTypesEnabled=false",
        "znode.container.checkIntervalMs=100",
        "initLimit=5",
        "electionAlg=3",
    ],
)
def test_keys_zkpy_honours_are_not_warned_about(line: str) -> None:
    """A value zkpy's behaviour already matches (there is no admin server to disable) is honoured."""
    assert parse_config(MINIMAL + line + "\n", "/").warnings == []


def test_each_key_is_warned_about_once() -> None:
    text = (
        MINIMAL + "admin.idleTimeout=1\nzookeeper.admin.idleTimeout=2\nssl.quorum.keyStore.password=hunter2\n"
    )
    c = parse_config(text, "/", source="zoo.cfg")
    assert c.warnings == [
        "zoo.cfg:4: admin.idleTimeout=2 has no effect in zkpy (the AdminServer takes admin.enableServer, "
        "admin.serverPort and admin.serverAddress)",
        "zoo.cfg:5: ssl.quorum.keyStore.password=*** has no effect in zkpy (zkpy's ensemble does not use it)",
    ]


def test_unknown_keys_become_warnings() -> None:
    c = parse_config(MINIMAL + "tikTime=2000\n", "/", source="conf/zoo.cfg")
    assert c.warnings == ["conf/zoo.cfg:3: unknown key 'tikTime' ignored: did you mean tickTime?"]
    assert c.extra == {"tikTime": "2000"}


def test_snap_retain_count_is_raised_to_three_with_a_warning() -> None:
    c = parse_config(MINIMAL + "autopurge.snapRetainCount=1\nautopurge.purgeInterval=24\n", "/")
    assert c.autopurge_snap_retain_count == 3
    assert c.autopurge_purge_interval_hours == 24
    assert len(c.warnings) == 1 and "snapRetainCount" in c.warnings[0]


def test_max_client_cnxns_zero_is_unlimited() -> None:
    c = parse_config(MINIMAL + "maxClientCnxns=0\n", "/")
    assert c.max_client_cnxns == 0 and c.max_clients is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clientPort=2181\n", "zoo.cfg: dataDir is not set"),
        ("dataDir=/d\n", "zoo.cfg: clientPort is not set"),
        ("dataDir=/d\nclientPort=abc\n", "zoo.cfg:2: clientPort: 'abc' is not an integer"),
        ("dataDir=/d\nclientPort=70000\n", "zoo.cfg:2: clientPort: 70000 is out of range (0..65535)"),
        ("dataDir=/d\nclientPort=-1\n", "zoo.cfg:2: clientPort: -1 is out of range (0..65535)"),
        ("dataDir=/d\nclientPort=1\ntickTime=0\n", "zoo.cfg:3: tickTime: 0 is out of range (at least 1)"),
        (
            "dataDir=/d\nclientPort=1\nminSessionTimeout=5000\nmaxSessionTimeout=4000\n",
            "zoo.cfg:3: minSessionTimeout (5000) must not be larger than maxSessionTimeout (4000)",
        ),
        (
            "dataDir=/d\nclientPort=1\ntickTime=1000\nminSessionTimeout=30000\n",
            "zoo.cfg:4: minSessionTimeout (30000) must not be larger than maxSessionTimeout (20000)",
        ),
        (
            "dataDir=/d\nclientPort=1\nforceSync=maybe\n",
            "zoo.cfg:3: forceSync: 'maybe' is not true/false (or yes/no)",
        ),
        (
            "dataDir=/d\nclientPort=1\nmaxClientCnxns=-5\n",
            "zoo.cfg:3: maxClientCnxns: -5 is out of range (at least 0)",
        ),
        ("dataDir=/d\nclientPort=1\nelectionAlg=0\n", "zoo.cfg:3: electionAlg: 0 is not supported"),
        ("dataDir=/d\nclientPort=1\npeerType=voter\n", "zoo.cfg:3: peerType: unrecognised peer type 'voter'"),
        ("dataDir=/d\nclientPortAddress=127.0.0.1\n", "zoo.cfg:2: clientPortAddress: is set but clientPort"),
        (
            "dataDir=/d\nclientPort=1\nsuperDigest=nohash\n",
            "zoo.cfg:3: superDigest: 'nohash' is not of the form",
        ),
    ],
)
def test_errors_are_one_clear_line(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected)


def test_server_lines() -> None:
    text = MINIMAL + (
        "initLimit=10\nsyncLimit=5\n"
        "server.1=zk1:2888:3888\n"
        "server.2=zk2:2888:3888:participant;2181\n"
        "server.3=[fe80::1]:2888:3888:observer;127.0.0.1:2182\n"
    )
    c = parse_config(text, "/")
    assert c.servers == {
        1: ServerSpec(1, "zk1", 2888, 3888),
        2: ServerSpec(2, "zk2", 2888, 3888, "participant", "0.0.0.0", 2181),
        3: ServerSpec(3, "fe80::1", 2888, 3888, "observer", "127.0.0.1", 2182),
    }
    assert (c.init_limit, c.sync_limit) == (10, 5)
    assert c.servers[3].render() == "server.3=[fe80::1]:2888:3888:observer;127.0.0.1:2182"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("zk1:2888", "does not have the form"),
        ("zk1:2888:3888:participant:extra", "does not have the form"),
        ("zk1:abc:3888", "ports must be integers"),
        ("zk1:2888:0", "ports must be integers"),
        ("zk1:2888:3888:leader", "unrecognised peer type 'leader'"),
        ("zk1:2888:3888;port", "client port 'port' is not an integer"),
        ("zk1:2888:3888;a:b:c", "does not have the form"),
        ("[::1:2888:3888", "does not have the form"),
    ],
)
def test_bad_server_lines(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_server_line(1, value)
    message = error_of(MINIMAL + f"initLimit=1\nsyncLimit=1\nserver.1={value}\n")
    assert message.startswith("zoo.cfg:5: server.1: ")
    assert reason in message


def test_ensemble_needs_limits_and_a_numeric_id() -> None:
    assert "initLimit is not set" in error_of(MINIMAL + "syncLimit=1\nserver.1=a:1:2\n")
    assert "syncLimit is not set" in error_of(MINIMAL + "initLimit=1\nserver.1=a:1:2\n")
    assert "server id 'x'" in error_of(MINIMAL + "initLimit=1\nsyncLimit=1\nserver.x=a:1:2\n")
    assert "all are observers" in error_of(MINIMAL + "initLimit=1\nsyncLimit=1\nserver.1=a:1:2:observer\n")


def test_ensemble_client_port_may_come_from_server_lines() -> None:
    c = parse_config("dataDir=/d\ninitLimit=1\nsyncLimit=1\nserver.1=a:1:2;3181\n", "/")
    assert c.client_port is None and c.servers[1].client_port == 3181


def test_render_matches_zookeeper_conf_output() -> None:
    c = parse_config(
        "tickTime=2000\ndataDir=/tmp/zk/data\nclientPort=44919\nmaxClientCnxns=0\n"
        "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n",
        "/",
    )
    # Captured from Apache ZooKeeper 3.8 (`conf`) started on the same settings; Apache's files are in
    # dataDir/version-2 (zkpy passes its own dataDir/zkpy-1).
    real = Path("/tmp/zk/data/version-2")
    assert c.render(data_dir=real, data_log_dir=real, data_dir_size=67109337, data_log_size=67109337) == [
        "clientPort=44919",
        "secureClientPort=-1",
        "dataDir=/tmp/zk/data/version-2",
        "dataDirSize=67109337",
        "dataLogDir=/tmp/zk/data/version-2",
        "dataLogSize=67109337",
        "tickTime=2000",
        "maxClientCnxns=0",
        "minSessionTimeout=4000",
        "maxSessionTimeout=40000",
        "clientPortListenBacklog=-1",
        "serverId=0",
    ]


def test_load_config_reads_file_dynamic_config_and_myid(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "myid").write_text("2\n")
    (tmp_path / "zoo.cfg.dynamic").write_text(
        "server.1=h1:2888:3888;2181\nserver.2=h2:2888:3888;2182\nversion=100000000\n"
    )
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text("dataDir=data\ninitLimit=5\nsyncLimit=2\ndynamicConfigFile=zoo.cfg.dynamic\n")
    c = load_config(cfg)
    assert c.data_dir == tmp_path / "data"
    assert c.server_id == 2
    assert sorted(c.servers) == [1, 2] and c.servers[2].client_port == 2182
    lines = c.render()
    assert "serverId=2" in lines
    assert lines[12:16] == ["initLimit=5", "syncLimit=2", "electionAlg=3", "electionPort=3888"]
    assert "server.2=h2:2888:3888:participant;0.0.0.0:2182" in lines


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cfg"
    with pytest.raises(ConfigError, match=r"nope\.cfg: config file not found"):
        load_config(missing)
    bad = tmp_path / "zoo.cfg"
    bad.write_text("dataDir=/d\nclientPort=x\n")
    with pytest.raises(ConfigError, match=r"zoo\.cfg:2: clientPort: 'x' is not an integer"):
        load_config(bad)
    bad.write_text("dataDir=/d\nclientPort=1\ndynamicConfigFile=gone.dynamic\n")
    with pytest.raises(ConfigError, match=r"gone\.dynamic: dynamicConfigFile not found"):
        load_config(bad)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "myid").write_text("7")
    bad.write_text("dataDir=d\ninitLimit=1\nsyncLimit=1\nserver.1=a:1:2;3\n")
    with pytest.raises(ConfigError, match=r"myid 7 has no server\.7 line"):
        load_config(bad)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a directory


KAZOO_HARNESS_CFG = """
tickTime=2000
dataDir={data}
clientPort=20002
secureClientPort=20052
maxClientCnxns=0
admin.serverPort=20102
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider
ssl.keyStore.location=/tmp/kz/keystore.jks
ssl.keyStore.password=apassword
ssl.trustStore.location=/tmp/kz/truststore.jks
ssl.trustStore.password=apassword
4lw.commands.whitelist=*
reconfigEnabled=true
localSessionsEnabled=false
localSessionsUpgradingEnabled=false

initLimit=4
syncLimit=2
server.2=localhost:20202:20302:observer
server.0=localhost:20200:20300:participant
server.1=localhost:20201:20301:participant
peerType=participant
zookeeper.DigestAuthenticationProvider.superDigest=super:D/InIHSb7yEEbrWz8b9l71RjZJU=
readonlymode.enabled=true
"""


def test_kazoo_harness_config(tmp_path: Path) -> None:
    """What kazoo's test harness (plus the suite shim's system properties) writes for its third server."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "myid").write_text("2")
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(KAZOO_HARNESS_CFG.format(data=tmp_path / "data"))
    c = load_config(cfg)
    assert c.server_id == 2
    assert sorted(c.servers) == [0, 1, 2]
    assert c.servers[2] == ServerSpec(2, "localhost", 20202, 20302, "observer")
    assert (c.client_port, c.secure_client_port, c.admin_server_port) == (20002, 20052, 20102)
    assert c.super_digest == "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
    assert c.read_only_mode and c.reconfig_enabled
    assert c.four_letter_whitelist == ALL_FOUR_LETTER_WORDS
    # peerType=participant contradicts server.2's observer role: ZooKeeper warns and trusts server.N.
    assert c.peer_type == "observer"
    assert "does not match server.2" in c.warnings[-1]
    ignored = [w.split(": ", 1)[1].split("=")[0] for w in c.warnings[:-1]]
    assert ignored == [
        "serverCnxnFactory",
        "authProvider.1",
        "reconfigEnabled",
    ]


def test_admin_server_runs_only_when_the_config_asks_for_it() -> None:
    """Apache runs its AdminServer on 8080 unless told not to; zkpy only when admin.serverPort is
    set or admin.enableServer=true (servers sharing a host would all fight over 8080)."""
    assert not parse_config(MINIMAL, "/").admin_server_wanted
    c = parse_config(MINIMAL + "admin.serverPort=18080\nadmin.serverAddress=127.0.0.1\n", "/")
    assert (c.admin_server_wanted, c.admin_server_port, c.admin_server_address) == (True, 18080, "127.0.0.1")
    assert c.warnings == []
    c = parse_config(MINIMAL + "admin.enableServer=true\n", "/")
    assert (c.admin_server_wanted, c.admin_server_port) == (True, 8080)
    c = parse_config(MINIMAL + "admin.enableServer=false\nadmin.serverPort=18080\n", "/")
    assert not c.admin_server_wanted
    assert c.warnings == ["zoo.cfg:4: admin.serverPort=18080 has no effect (admin.enableServer=false)"]


@pytest.mark.parametrize(
    ("lines", "port", "host"),
    [
        ("", None, "0.0.0.0"),
        ("metricsProvider.httpPort=17000\n", 17000, "0.0.0.0"),
        (
            "metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider\n",
            7000,
            "0.0.0.0",
        ),
        ("metricsProvider.httpPort=17001\nmetricsProvider.httpHost=127.0.0.1\n", 17001, "127.0.0.1"),
    ],
)
def test_metrics_provider_keys(lines: str, port: int | None, host: str) -> None:
    """Apache's PrometheusMetricsProvider keys: the endpoint exists when httpPort is set or the
    provider class is named (Apache's default port 7000 then)."""
    c = parse_config(MINIMAL + lines, "/")
    assert (c.metrics_port, c.metrics_host) == (port, host)
    assert c.warnings == []


def test_another_metrics_provider_class_is_warned_about() -> None:
    c = parse_config(MINIMAL + "metricsProvider.className=com.example.Statsd\n", "/")
    assert c.metrics_port is None
    assert c.warnings == [
        "zoo.cfg:3: metricsProvider.className=com.example.Statsd is not PrometheusMetricsProvider: "
        "zkpy serves Prometheus metrics only (metricsProvider.httpPort)"
    ]
