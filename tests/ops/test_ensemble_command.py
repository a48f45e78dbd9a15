"""`zkpy ensemble` as a user runs it: a subprocess printing a connection string and a live table,
`zkpy ensemble kill N` / `start N` from another process, Ctrl-C (SIGINT) stopping everything.

Fails before the `zkpy ensemble` command (zkpy.ops.ensemble): argparse rejects `ensemble`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from zkpy.ops.layout import ELECTION_PORT_OFFSET, QUORUM_PORT_OFFSET
from zkpy.ops.status import four_letter

pytestmark = pytest.mark.timeout(180)


def free_base_port(size: int) -> int:
    """A base port whose client, quorum and election ports are all free; below the kernel's
    ephemeral range, where free_port() hands out the other tests' ports."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, 30000)
        ports = [
            base + offset + i for offset in (0, QUORUM_PORT_OFFSET, ELECTION_PORT_OFFSET) for i in range(size)
        ]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free base port")


class Running:
    """A `zkpy ensemble` subprocess whose output is read line by line in a thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zkpy", "ensemble", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r}; output so far:\n" + "\n".join(self.seen))


def ensemble_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zkpy", "ensemble", *args], capture_output=True, text=True, timeout=60
    )


def server_processes(root: Path) -> list[int]:
    """Every live `zkpy server` process whose config is under `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"server" in cmdline.split(b"\0") and str(root).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def leader_sid(base: int, size: int) -> int:
    for i in range(size):
        try:
            if "Mode: leader" in four_letter("127.0.0.1", base + i, "srvr", timeout=1.0):
                return i + 1
        except OSError:
            pass
    raise AssertionError("no leader")


def client(hosts: str) -> KazooClient:
    retry = {"max_tries": -1, "delay": 0.1, "max_delay": 1.0, "deadline": 30}
    zk = KazooClient(
        hosts, timeout=10, connection_retry=KazooRetry(**retry), command_retry=KazooRetry(**retry)
    )
    zk.start(timeout=30)
    return zk


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ens"
    yield path
    for pid in server_processes(path):  # only when the test failed half-way
        os.kill(pid, signal.SIGKILL)


def test_ensemble_serves_through_a_killed_leader_and_ctrl_c_stops_every_server(root: Path) -> None:
    base = free_base_port(3)
    run = Running(["--size", "3", "--dir", str(root), "--base-port", str(base)])
    try:
        hosts = run.expect(r"^Connection string: (\S+)").group(1)
        assert hosts == ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        run.expect(r"^\d+ 127\.0\.0\.1:\d+\s+leader\b")  # the live table
        zk = client(hosts)
        try:
            zk.create("/tour", b"before")
            victim = leader_sid(base, 3)
            killed = ensemble_cmd("kill", str(victim), "--dir", str(root))
            assert killed.returncode == 0, killed.stderr
            assert f"killed server {victim}" in killed.stdout
            run.expect(rf"^{victim} 127\.0\.0\.1:{base + victim - 1}\s+down\b")
            run.expect(rf"^server {victim} is down; the last lines of .*s{victim}/server\.log")
            zk.set("/tour", b"after")  # two of three still form a quorum, with a new leader
            assert zk.get("/tour")[0] == b"after"
            assert leader_sid(base, 3) != victim

            started = ensemble_cmd("start", str(victim), "--dir", str(root))
            assert started.returncode == 0, started.stdout + started.stderr
            assert re.search(rf"started server {victim} \(pid \d+\): follower", started.stdout)
        finally:
            zk.stop()
            zk.close()
        assert len(server_processes(root)) == 3
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(30) == 0
        run.expect(r"^stopped 3 servers; the data stays in")
        assert server_processes(root) == []
        assert not list(root.glob("s*/server.pid"))
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def test_a_second_run_keeps_the_data_and_appends_to_the_logs(root: Path) -> None:
    base = free_base_port(3)
    for expected in (None, b"kept"):
        run = Running(["--dir", str(root), "--base-port", str(base)])
        try:
            hosts = run.expect(r"^Connection string: (\S+)").group(1)
            zk = client(hosts)
            try:
                if expected is None:
                    zk.create("/kept", b"kept")
                else:
                    assert zk.get("/kept")[0] == expected
            finally:
                zk.stop()
                zk.close()
            run.proc.send_signal(signal.SIGINT)
            assert run.proc.wait(30) == 0
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
    assert "with the data of servers 1, 2, 3 from before" in "\n".join(run.seen)
    log = (root / "s1" / "server.log").read_text()
    assert log.count("--- zkpy ensemble: starting server 1") == 2


def test_a_port_in_use_is_named_and_nothing_starts(root: Path) -> None:
    base = free_base_port(3)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + QUORUM_PORT_OFFSET + 1))
        holder.listen()
        result = ensemble_cmd("--dir", str(root), "--base-port", str(base))
    assert result.returncode == 2
    assert f"port {base + QUORUM_PORT_OFFSET + 1} (quorum port of server 2) is in use" in result.stderr
    assert server_processes(root) == []


def test_kill_and_start_name_what_is_wrong(root: Path) -> None:
    missing = ensemble_cmd("kill", "1", "--dir", str(root))
    assert missing.returncode == 2
    assert "no ensemble in" in missing.stderr


def test_keys_in_the_live_view_kill_and_start_a_server_and_q_stops_all(root: Path) -> None:
    """On a terminal (a pseudo-terminal here): pressing 2 kills server 2, pressing it again starts
    it, q stops everything. Fails before the live view read keys: 2 and q did nothing."""
    import pty

    base = free_base_port(3)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zkpy", "ensemble", "--dir", str(root), "--base-port", str(base)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    screen: list[str] = []
    threading.Thread(target=lambda: _drain(master, screen), daemon=True).start()

    def wait_for(pattern: str, since: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = "".join(screen)
            found = re.compile(pattern, re.M).search(text, since)
            if found:
                return found.end()
            assert proc.poll() is None or pattern.startswith("stopped"), text[-2000:]
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} on the screen:\n" + "".join(screen)[-3000:])

    second = rf"^2 127\.0\.0\.1:{base + 1}\s+"
    try:
        at = wait_for(second + r"(leader|follower)\b", 0)
        os.write(master, b"2")
        at = wait_for(r"^server 2 is down; the last lines of", at)
        os.write(master, b"2")
        at = wait_for(second + r"(leader|follower)\b", at)
        os.write(master, b"q")
        wait_for(r"^stopped 3 servers", at)
        assert proc.wait(30) == 0
        assert server_processes(root) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def _drain(fd: int, into: list[str]) -> None:
    with contextlib.suppress(OSError):
        while data := os.read(fd, 65536):
            into.append(data.decode(errors="replace").replace("\r\n", "\n"))
