"""Four-letter words: exact texts, compared with what Apache ZooKeeper 3.8 wrote for the same state."""

from __future__ import annotations

from pathlib import Path

import pytest

from zkpy.server.config import ALL_FOUR_LETTER_WORDS, parse_config
from zkpy.server.fourletter import (
    NOT_SERVING,
    ConnectionInfo,
    LeaderStats,
    ServerStatus,
    SessionInfo,
    hex_id,
    java_date,
    java_double,
    respond,
)

ALL = set(ALL_FOUR_LETTER_WORDS)
APACHE_VERSION = "3.8.0-${mvngit.commit.id}, built on 2024-12-29 17:54 UTC"
SID = 0x1000008C79A0000


def apache_like_status() -> ServerStatus:
    """The state of a ZooKeeper 3.8 server captured with one kazoo session and one 4lw connection."""
    return ServerStatus(
        version=APACHE_VERSION,
        min_latency_ms=1,
        avg_latency_ms=23 / 6,
        max_latency_ms=9,
        packets_received=10,
        packets_sent=9,
        num_alive_connections=2,
        last_zxid=3,
        znode_count=7,
        watch_count=3,
        ephemerals_count=1,
        approximate_data_size=54,
        open_file_descriptor_count=59,
        max_file_descriptor_count=20000,
        sessions_count=1,
        connections=[
            ConnectionInfo("127.0.0.1", 34426, interest_ops=0, received=1),
            ConnectionInfo(
                "127.0.0.1",
                34386,
                session_id=SID,
                received=6,
                sent=6,
                last_op="EXIS",
                established_ms=1795522303627,
                timeout_ms=10000,
                last_cxid=5,
                last_zxid=3,
                last_response_ms=575868,
                last_latency_ms=3,
                min_latency_ms=0,
                avg_latency_ms=3,
                max_latency_ms=9,
                expires_at_ms=1795522317000,
            ),
        ],
        sessions=[SessionInfo(SID, 1795522313000)],
        watches_by_session={SID: ["/a", "/zz"]},
        ephemerals_by_session={SID: ["/e"]},
    )


def test_ruok_and_isro() -> None:
    s = ServerStatus()
    assert respond("ruok", s, ALL) == "imok"
    assert respond("isro", s, ALL) == "rw"
    assert respond("isro", ServerStatus(read_only=True), ALL) == "ro"
    assert respond("isro", ServerStatus(serving=False), ALL) == "null"
    assert respond("ruok", ServerStatus(serving=False), ALL) == "imok"


def test_srvr_matches_zookeeper() -> None:
    assert respond("srvr", apache_like_status(), ALL) == (
        f"Zookeeper version: {APACHE_VERSION}\n"
        "Latency min/avg/max: 1/3.8333/9\nReceived: 10\nSent: 9\nConnections: 2\nOutstanding: 0\n"
        "Zxid: 0x3\nMode: standalone\nNode count: 7\n"
    )


def test_srvr_of_a_fresh_server() -> None:
    text = respond("srvr", ServerStatus(), {"srvr"})
    assert text.startswith("Zookeeper version: 3.8.0-zkpy-")
    assert "\nLatency min/avg/max: 0/0.0/0\n" in text
    assert text.endswith("Zxid: 0x0\nMode: standalone\nNode count: 0\n")


def test_stat_matches_zookeeper() -> None:
    assert respond("stat", apache_like_status(), ALL) == (
        f"Zookeeper version: {APACHE_VERSION}\n"
        "Clients:\n"
        " /127.0.0.1:34426[0](queued=0,recved=1,sent=0)\n"
        " /127.0.0.1:34386[1](queued=0,recved=6,sent=6)\n"
        "\n"
        "Latency min/avg/max: 1/3.8333/9\nReceived: 10\nSent: 9\nConnections: 2\nOutstanding: 0\n"
        "Zxid: 0x3\nMode: standalone\nNode count: 7\n"
    )


def test_cons_matches_zookeeper() -> None:
    assert respond("cons", apache_like_status(), ALL) == (
        " /127.0.0.1:34426[0](queued=0,recved=1,sent=0)\n"
        " /127.0.0.1:34386[1](queued=0,recved=6,sent=6,sid=0x1000008c79a0000,lop=EXIS,est=1795522303627,"
        "to=10000,lcxid=0x5,lzxid=0x3,lresp=575868,llat=3,minlat=0,avglat=3,maxlat=9)\n"
        "\n"
    )


def test_cons_shows_unset_zxids_as_java_does() -> None:
    conn = ConnectionInfo("::1", 5, session_id=1, last_cxid=-1, last_zxid=-1)
    line = respond("cons", ServerStatus(connections=[conn]), ALL)
    assert ",lcxid=" not in line
    assert ",lzxid=0xffffffffffffffff," in line
    assert line.startswith(" /::1:5[1](")


def test_cons_of_a_session_that_only_connected_matches_zookeeper() -> None:
    """Captured from ZooKeeper 3.8 right after a kazoo connect: the connect is a received packet and
    the createSession shows as SESS with cxid 0 and its zxid; lresp is monotonic ms, not wall-clock."""
    conn = ConnectionInfo(
        "127.0.0.1",
        35906,
        session_id=0x10000023C550000,
        received=1,
        sent=1,
        last_op="SESS",
        established_ms=1795974878534,
        timeout_ms=4000,
        last_cxid=0,
        last_zxid=1,
        last_response_ms=146743,
        last_latency_ms=7,
        min_latency_ms=0,
        avg_latency_ms=7,
        max_latency_ms=7,
    )
    asking = ConnectionInfo("127.0.0.1", 35914, interest_ops=0, received=1)
    assert respond("cons", ServerStatus(connections=[conn, asking]), ALL) == (
        " /127.0.0.1:35906[1](queued=0,recved=1,sent=1,sid=0x10000023c550000,lop=SESS,est=1795974878534,"
        "to=4000,lcxid=0x0,lzxid=0x1,lresp=146743,llat=7,minlat=0,avglat=7,maxlat=7)\n"
        " /127.0.0.1:35914[0](queued=0,recved=1,sent=0)\n"
        "\n"
    )


def test_mntr_keys_and_values() -> None:
    text = respond("mntr", apache_like_status(), ALL)
    assert text.endswith("\n")
    pairs = [line.split("\t") for line in text.splitlines()]
    assert all(len(p) == 2 for p in pairs)
    values = dict(pairs)
    assert list(values)[:2] == ["zk_version", "zk_server_state"]
    assert values["zk_version"] == APACHE_VERSION
    assert values["zk_server_state"] == "standalone"
    expected = {
        "zk_znode_count": "7",
        "zk_num_alive_connections": "2",
        "zk_avg_latency": "3.8333",
        "zk_max_latency": "9",
        "zk_min_latency": "1",
        "zk_packets_received": "10",
        "zk_packets_sent": "9",
        "zk_outstanding_requests": "0",
        "zk_watch_count": "3",
        "zk_ephemerals_count": "1",
        "zk_approximate_data_size": "54",
        "zk_open_file_descriptor_count": "59",
        "zk_max_file_descriptor_count": "20000",
        "zk_global_sessions": "1",
    }
    assert {k: values[k] for k in expected} == expected
    assert "zk_synced_followers" not in values


def test_mntr_leader_and_extra_metrics() -> None:
    s = ServerStatus(
        state="leader",
        leader=LeaderStats(learners=2, synced_followers=2, pending_syncs=1),
        peer_state="leading - broadcast",
        quorum_size=3,
        extra_metrics={"fsync_time": 1.5, "snap_count": 4},
    )
    values = dict(line.split("\t") for line in respond("mntr", s, ALL).splitlines())
    assert values["zk_server_state"] == "leader"
    assert values["zk_learners"] == "2"
    assert values["zk_synced_followers"] == "2"
    assert values["zk_pending_syncs"] == "1"
    assert values["zk_peer_state"] == "leading - broadcast"
    assert values["zk_quorum_size"] == "3"
    assert values["zk_fsync_time"] == "1.5"
    assert values["zk_snap_count"] == "4"
    assert respond("srvr", s, ALL).endswith(
        "Mode: leader\nNode count: 0\nProposal sizes last/min/max: -1/-1/-1\n"
    )


def test_conf_prints_rendered_config() -> None:
    """The directories and sizes are the server's real ones (zkpy keeps its files in dataDir/zkpy-1)."""
    config = parse_config("dataDir=/tmp/zk\nclientPort=2181\ntickTime=2000\n", "/")
    lines = config.render(
        data_dir=Path("/tmp/zk/zkpy-1"),
        data_log_dir=Path("/tmp/zk/zkpy-1"),
        data_dir_size=700,
        data_log_size=700,
    )
    text = respond("conf", ServerStatus(config_lines=lines), ALL)
    assert text.startswith(
        "clientPort=2181\nsecureClientPort=-1\ndataDir=/tmp/zk/zkpy-1\ndataDirSize=700\n"
        "dataLogDir=/tmp/zk/zkpy-1\ndataLogSize=700\n"
    )
    assert text.endswith("clientPortListenBacklog=-1\nserverId=0\n")
    assert "dataDir=/tmp/zk\n" in respond("conf", ServerStatus(config_lines=config.render()), ALL)


def test_envi_has_a_version_kazoo_can_parse() -> None:
    text = respond("envi", ServerStatus(), ALL)
    lines = text.splitlines()
    assert lines[0] == "Environment:"
    entries = dict(line.split("=", 1) for line in lines[1:])
    assert entries["zookeeper.version"].startswith("3.8.0-")
    assert "host.name" in entries and "os.name" in entries
    custom = ServerStatus(environment=[("zookeeper.version", "x"), ("a", "b")])
    assert respond("envi", custom, ALL) == "Environment:\nzookeeper.version=x\na=b\n"


def test_watch_words_match_zookeeper() -> None:
    s = apache_like_status()
    assert respond("wchs", s, ALL) == "1 connections watching 2 paths\nTotal watches:2\n"
    assert respond("wchc", s, ALL) == "0x1000008c79a0000\n\t/a\n\t/zz\n\n"
    assert respond("wchp", s, ALL) == "/a\n\t0x1000008c79a0000\n/zz\n\t0x1000008c79a0000\n\n"


def test_watch_words_group_sessions_by_path() -> None:
    s = ServerStatus(watches_by_session={1: ["/a", "/b"], 2: ["/a"]})
    assert respond("wchs", s, ALL) == "2 connections watching 2 paths\nTotal watches:3\n"
    assert respond("wchp", s, ALL) == "/a\n\t0x1\n\t0x2\n/b\n\t0x1\n\n"
    assert respond("wchc", ServerStatus(), ALL) == "\n"


def test_dump_matches_zookeeper() -> None:
    s = apache_like_status()
    s.connections[0].expires_at_ms = 1795522317000
    s.connections[0].remote_port = 34460
    assert respond("dump", s, ALL) == (
        "SessionTracker dump:\n"
        "Session Sets (1)/(1):\n"
        "1 expire at Tue Nov 24 12:11:53 UTC 2026:\n"
        "\t0x1000008c79a0000\n"
        "ephemeral nodes dump:\n"
        "Sessions with Ephemerals (1):\n"
        "0x1000008c79a0000:\n"
        "\t/e\n"
        "Connections dump:\n"
        "Connections Sets (1)/(2):\n"
        "2 expire at Tue Nov 24 12:11:57 UTC 2026:\n"
        "\tip: /127.0.0.1:34460 sessionId: 0x0\n"
        "\tip: /127.0.0.1:34386 sessionId: 0x1000008c79a0000\n"
    )


def test_dump_groups_sessions_by_expiry_earliest_first() -> None:
    s = ServerStatus(sessions=[SessionInfo(3, 4000), SessionInfo(1, 2000), SessionInfo(2, 4000)])
    text = respond("dump", s, ALL)
    assert "Session Sets (2)/(3):\n1 expire at Thu Jan 01 00:00:02 UTC 1970:\n\t0x1\n" in text
    assert "2 expire at Thu Jan 01 00:00:04 UTC 1970:\n\t0x3\n\t0x2\n" in text


def test_whitelist_refusal_and_unknown_words() -> None:
    s = ServerStatus()
    assert respond("stat", s, {"srvr"}) == "stat is not executed because it is not in the whitelist.\n"
    assert respond("mntr", s, set()) == "mntr is not executed because it is not in the whitelist.\n"
    assert respond("xxxx", s, ALL) == ""
    assert respond("RUOK", s, ALL) == ""


@pytest.mark.parametrize(
    "word", ["srvr", "stat", "mntr", "cons", "conf", "wchs", "wchc", "wchp", "dump", "dirs"]
)
def test_not_serving(word: str) -> None:
    assert respond(word, ServerStatus(serving=False), ALL) == NOT_SERVING


def test_read_only_server() -> None:
    s = ServerStatus(read_only=True, state="read-only")
    text = respond("srvr", s, ALL)
    assert "\nREAD-ONLY mode; serving only read-only clients\n" in text
    assert "Mode: read-only\n" in text


def test_small_words() -> None:
    s = ServerStatus(data_dir_size=67109337, log_dir_size=12)
    assert respond("dirs", s, ALL) == "datadir_size: 67109337\nlogdir_size: 12\n"
    assert respond("gtmk", s, ALL) == "306"
    assert respond("crst", s, ALL) == "Connection stats reset.\n"
    assert respond("srst", s, ALL) == "Server stats reset.\n"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0.0"),
        (1.0, "1.0"),
        (3.8333, "3.8333"),
        (0.0001, "1.0E-4"),
        (12345678.0, "1.2345678E7"),
        (-2.5, "-2.5"),
    ],
)
def test_java_double(value: float, text: str) -> None:
    assert java_double(value) == text


def test_helpers() -> None:
    assert hex_id(-1) == "ffffffffffffffff"
    assert hex_id(0x100000000) == "100000000"
    assert java_date(0) == "Thu Jan 01 00:00:00 UTC 1970"
