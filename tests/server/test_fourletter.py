"""Four-letter words on the client port: the formats monitoring scripts parse."""

from __future__ import annotations

import re

from kazoo.client import KazooClient

from zkpy.testing.procs import ServerProcess, four_letter


def word(server: ServerProcess, w: str) -> str:
    return four_letter(server.host, server.port, w)


def mntr(server: ServerProcess) -> dict[str, str]:
    out = {}
    for line in word(server, "mntr").splitlines():
        key, sep, value = line.partition("\t")
        assert sep, f"mntr line without a tab: {line!r}"
        out[key] = value
    return out


def test_ruok(server: ServerProcess) -> None:
    assert word(server, "ruok") == "imok"


def test_isro(server: ServerProcess) -> None:
    assert word(server, "isro") == "rw"


def test_srvr(server: ServerProcess, zk: KazooClient, base: str) -> None:
    zk.create(f"{base}/n")
    out = word(server, "srvr")
    assert out.startswith("Zookeeper version: ")
    assert "Mode: standalone\n" in out
    assert re.search(r"^Latency min/avg/max: \d+/[\d.]+/\d+$", out, re.M)
    assert re.search(r"^Connections: \d+$", out, re.M)
    assert re.search(r"^Outstanding: \d+$", out, re.M)
    zxid = re.search(r"^Zxid: 0x([0-9a-f]+)$", out, re.M)
    assert zxid and int(zxid.group(1), 16) >= zk.last_zxid
    count = re.search(r"^Node count: (\d+)$", out, re.M)
    assert count and int(count.group(1)) >= 5  # /, /zookeeper, /zookeeper/quota, base, base/n


def test_stat_lists_clients(server: ServerProcess, zk: KazooClient) -> None:
    out = word(server, "stat")
    assert out.startswith("Zookeeper version: ")
    assert "Clients:\n" in out
    assert re.search(r"^ /127\.0\.0\.1:\d+\[\d\]\(queued=\d+,recved=\d+,sent=\d+", out, re.M)
    assert "Mode: standalone\n" in out
    assert re.search(r"^Node count: \d+$", out, re.M)


def test_mntr(server: ServerProcess, zk: KazooClient, base: str) -> None:
    before = mntr(server)
    assert before["zk_server_state"] == "standalone"
    assert before["zk_version"]
    for key in (
        "zk_znode_count",
        "zk_ephemerals_count",
        "zk_watch_count",
        "zk_num_alive_connections",
        "zk_outstanding_requests",
        "zk_approximate_data_size",
        "zk_packets_received",
        "zk_packets_sent",
    ):
        assert re.fullmatch(r"\d+", before[key]), f"{key}={before[key]!r}"
    float(before["zk_avg_latency"])
    assert int(before["zk_num_alive_connections"]) >= 1

    zk.create(f"{base}/a")
    zk.create(f"{base}/e", ephemeral=True)
    after = mntr(server)
    assert int(after["zk_znode_count"]) == int(before["zk_znode_count"]) + 2
    assert int(after["zk_ephemerals_count"]) == int(before["zk_ephemerals_count"]) + 1


def test_mntr_counts_log_fsyncs(server: ServerProcess, zk: KazooClient, base: str) -> None:
    """Every acknowledged write waited for an fsync; mntr's fsynctime summary shows it."""
    before = int(mntr(server)["zk_cnt_fsynctime"])
    for i in range(3):
        zk.create(f"{base}/n{i}")  # one at a time: each write is its own batch
    after = mntr(server)
    assert int(after["zk_cnt_fsynctime"]) >= before + 3
    assert float(after["zk_max_fsynctime"]) >= float(after["zk_min_fsynctime"]) >= 0


def test_conf(server: ServerProcess) -> None:
    out = word(server, "conf")
    assert f"clientPort={server.port}\n" in out
    assert re.search(r"^dataDir=\S+", out, re.M)
    assert "tickTime=2000\n" in out
    assert "minSessionTimeout=4000\n" in out
    assert "maxSessionTimeout=40000\n" in out


def test_cons_shows_each_session(server: ServerProcess, zk: KazooClient) -> None:
    out = word(server, "cons")
    assert f"sid=0x{zk.client_id[0]:x}," in out
    assert re.search(r"^ /127\.0\.0\.1:\d+\[\d\]\(queued=\d+,recved=\d+,sent=\d+", out, re.M)


WCHS = re.compile(r"(\d+) connections watching (\d+) paths\nTotal watches:(\d+)\n?")


def wchs(server: ServerProcess) -> tuple[int, int, int]:
    out = word(server, "wchs")
    m = WCHS.fullmatch(out)
    assert m, out
    connections, paths, total = map(int, m.groups())
    return connections, paths, total


def test_wchs_counts_data_watches(server: ServerProcess, zk: KazooClient, base: str) -> None:
    """wchs counts data and exists watches (Apache leaves child watches out of it)."""
    zk.create(f"{base}/a")
    before = wchs(server)
    zk.get(f"{base}/a", watch=lambda _e: None)
    zk.exists(f"{base}/missing", watch=lambda _e: None)
    zk.get_children(base, watch=lambda _e: None)
    after = wchs(server)
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (1, 2, 2)


def test_envi(server: ServerProcess) -> None:
    out = word(server, "envi")
    assert out.startswith("Environment:\n")
    assert re.search(r"^zookeeper\.version=.+$", out, re.M)
    assert re.search(r"^host\.name=.+$", out, re.M)
    assert re.search(r"^os\.name=.+$", out, re.M)


def test_kazoo_reads_the_server_version(zk: KazooClient) -> None:
    """kazoo parses `envi`'s zookeeper.version line to decide which features the server has."""
    version = zk.server_version()
    assert len(version) == 3
    assert all(isinstance(part, int) for part in version)
    assert version >= (3, 5, 0)
