"""`cons` and `conf` report real per-connection stats and the real data directory, as Apache's do."""

from __future__ import annotations

from pathlib import Path

from conftest import new_client, stop_client
from kazoo.client import KazooClient

from zkpy.testing.procs import ServerProcess, four_letter


def cons_fields(server: ServerProcess, session_id: int) -> dict[str, str]:
    """The `key=value` fields of one session's `cons` line."""
    text = four_letter(server.host, server.port, "cons")
    for line in text.splitlines():
        if f",sid=0x{session_id:x}," in line:
            inside = line[line.index("(") + 1 : line.rindex(")")]
            return dict(item.split("=", 1) for item in inside.split(","))
    raise AssertionError(f"no cons line for session 0x{session_id:x}:\n{text}")


def test_cons_of_a_new_session_shows_its_connect(server: ServerProcess) -> None:
    """The connect request is a received packet and the createSession its last operation."""
    zk = new_client(server)
    try:
        f = cons_fields(server, zk.client_id[0])
    finally:
        stop_client(zk)
    assert (f["recved"], f["sent"], f["lop"], f["lcxid"]) == ("1", "1", "SESS", "0x0")
    assert int(f["lzxid"], 16) > 0  # the createSession's zxid, not -1
    assert int(f["lresp"]) > 0


def test_cons_after_reads_and_writes(zk: KazooClient, server: ServerProcess, base: str) -> None:
    zk.create(f"{base}/n", b"x")
    written = zk.set(f"{base}/n", b"y")
    zk.get(f"{base}/n")
    f = cons_fields(server, zk.client_id[0])
    assert f["lop"] == "GETD"
    assert int(f["lzxid"], 16) >= written.mzxid  # a read reports the last processed zxid
    assert int(f["recved"]) >= 4 and int(f["sent"]) >= 4
    assert int(f["lcxid"], 16) > 0


def test_cons_shows_the_asking_connection_idle(server: ServerProcess) -> None:
    text = four_letter(server.host, server.port, "cons")
    assert "[0](queued=0,recved=1,sent=0)" in text, text


def test_conf_reports_the_real_data_directory(server: ServerProcess) -> None:
    lines = dict(
        line.split("=", 1)
        for line in four_letter(server.host, server.port, "conf").splitlines()
        if "=" in line
    )
    data_dir = Path(lines["dataDir"])
    assert data_dir.is_dir() and data_dir.resolve().is_relative_to(server.data_dir.resolve())
    assert Path(lines["dataLogDir"]).is_dir()
    assert int(lines["dataDirSize"]) > 0 and int(lines["dataLogSize"]) > 0
    dirs = four_letter(server.host, server.port, "dirs")
    assert f"datadir_size: {lines['dataDirSize']}" in dirs or int(dirs.split()[1]) > 0
