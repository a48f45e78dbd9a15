"""An ensemble member whose peers are not there yet, as a new user meets it: the ports it cannot
bind are one line and exit status 2; it says at INFO whom it cannot reach; its client port answers
four-letter words as Apache ZooKeeper 3.8 does in the same state instead of resetting connections.

Fail before this change: a quorum or election port in use printed an ExceptionGroup traceback and
exited 1; "cannot reach server 2" was logged at DEBUG only; every four-letter word got a reset.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zkpy.ops.status import four_letter
from zkpy.server.fourletter import NOT_SERVING
from zkpy.testing.procs import ServerProcess, ensemble_servers

pytestmark = pytest.mark.timeout(120)
WORDS = ("ruok", "srvr", "stat", "mntr", "isro", "conf", "cons", "wchs", "dirs", "envi")


@contextlib.contextmanager
def lonely_member(kind: str, tmp: Path) -> Iterator[ServerProcess]:
    """Member 1 of a 3-server ensemble, started alone: it waits for peers that never come."""
    server = ensemble_servers(kind, tmp, 3, {"tickTime": "500"})[0]
    server.start(wait=None)
    try:
        deadline = time.monotonic() + 60
        while True:
            server.check_running()
            with contextlib.suppress(OSError):
                if four_letter(server.host, server.port, "ruok", timeout=1.0) == "imok":
                    break
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def answers(server: ServerProcess) -> dict[str, str]:
    return {word: four_letter(server.host, server.port, word) for word in WORDS}


@pytest.mark.parametrize("kind", ["quorum", "election"])
def test_a_peer_port_in_use_is_one_line_and_exit_status_2(tmp_path: Path, kind: str) -> None:
    server = ensemble_servers("zkpy", tmp_path, 3, {"tickTime": "500"})[0]
    spec_line = next(
        line for line in server.config_path.read_text().splitlines() if line.startswith("server.1=")
    )
    quorum_port, election_port = (int(p) for p in spec_line.split(":")[1:3])
    port = quorum_port if kind == "quorum" else election_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = subprocess.run(server.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("zkpy: error:")]
    assert errors == [
        f"zkpy: error: server.1=127.0.0.1:{quorum_port}:{election_port}:participant: its {kind} port {port} "
        f"on 127.0.0.1 is already in use (another ZooKeeper or zkpy?): stop it or choose another port in "
        "the server.1 line"
    ]


def test_a_waiting_member_says_at_info_whom_it_cannot_reach_and_answers_four_letter_words(
    tmp_path: Path,
) -> None:
    with lonely_member("zkpy", tmp_path) as server:
        deadline = time.monotonic() + 30
        while not all(
            f"INFO zkpy.replication.election_net: election: cannot reach server {sid} at"
            in server.log_tail(50)
            for sid in (2, 3)
        ):
            assert time.monotonic() < deadline, server.log_tail(50)
            time.sleep(0.1)
        got = answers(server)
    assert got["ruok"] == "imok" and got["isro"] == "null"
    for word in ("srvr", "stat", "mntr", "conf", "cons", "wchs", "dirs"):
        assert got[word] == NOT_SERVING, word
    assert got["envi"].startswith("Environment:\nzookeeper.version=")


@pytest.mark.apache
def test_a_waiting_member_answers_as_apache_zookeeper_does(tmp_path: Path) -> None:
    with lonely_member("apache", tmp_path / "apache") as server:
        reference = answers(server)
    with lonely_member("zkpy", tmp_path / "zkpy") as server:
        ours = answers(server)
    envi = "envi"  # the environment itself differs (Java's properties against Python's)
    assert {w: a for w, a in ours.items() if w != envi} == {w: a for w, a in reference.items() if w != envi}
    assert ours[envi].split("\n", 1)[0] == reference[envi].split("\n", 1)[0] == "Environment:"
