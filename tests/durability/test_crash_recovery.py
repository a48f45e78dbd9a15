"""kill -9 a real zkpy server in the middle of pipelined writes; every acknowledged write must be
there after the restart. Torn tails are cut and the server starts; corruption inside the log stops it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from zkpy.testing.procs import ServerProcess, running_server


def _client(server: ServerProcess) -> KazooClient:
    client = KazooClient(
        hosts=server.hosts,
        timeout=10,
        connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.2),
    )
    client.start(timeout=30)
    return client


def _log_files(server: ServerProcess) -> list[Path]:
    return sorted((server.data_dir / "zkpy-1").glob("log.*"), key=lambda p: int(p.name[4:], 16))


def _data_end(path: Path) -> int:
    """Where the records end: the rest of a log file is its zero-filled preallocation."""
    data = path.read_bytes()
    return len(data.rstrip(b"\0"))


def _write_until_killed(server: ServerProcess, prefix: str, kill_after: float) -> dict[str, bytes]:
    """Pipeline creates from 4 threads until the server is killed; return what was acknowledged."""
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    client = _client(server)
    client.ensure_path(prefix)
    stop = threading.Event()

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            window = []
            for _ in range(32):
                path, value = f"{prefix}/w{w}-{i}", f"{w}:{i}".encode()
                window.append((path, value, client.create_async(path, value)))
                i += 1
            for path, value, result in window:
                try:
                    result.get(timeout=10)
                except Exception:
                    stop.set()
                    continue
                with lock:
                    acked[path] = value

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(kill_after)
    server.kill()
    stop.set()
    for t in threads:
        t.join(30)
    client.stop()
    client.close()
    return acked


@pytest.mark.timeout(300)
def test_kill_9_during_pipelined_writes_loses_no_acknowledged_write() -> None:
    with running_server("zkpy") as server:
        everything: dict[str, bytes] = {}
        for round_no in range(3):
            acked = _write_until_killed(server, f"/crash{round_no}", kill_after=1.5 + round_no * 0.5)
            assert len(acked) > 100, "the load did not get going before the kill"
            everything.update(acked)
            server.start()
            client = _client(server)
            try:
                missing = [p for p, v in everything.items() if client.get(p)[0] != v]
            finally:
                client.stop()
                client.close()
            assert missing == [], (
                f"round {round_no}: {len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
            )


@pytest.mark.timeout(300)
def test_torn_log_tail_is_truncated_and_the_server_starts() -> None:
    with running_server("zkpy") as server:
        client = _client(server)
        client.ensure_path("/torn")
        for i in range(300):
            client.create("/torn/n-", str(i).encode(), sequence=True)
        client.stop()
        client.close()
        server.kill()
        newest = _log_files(server)[-1]
        end = _data_end(newest)
        with open(newest, "r+b") as f:
            f.seek(end - 40)
            f.write(random.Random(7).randbytes(40))
        server.start()
        assert "torn tail" in server.log_tail(50)
        client = _client(server)
        try:
            names = sorted(client.get_children("/torn"))
            # a prefix of what was written survives: sequence numbers 0..k-1 with no hole
            assert names == [f"n-{i:010d}" for i in range(len(names))]
            assert len(names) >= 290
            client.create("/torn/after-restart")  # and the server takes new writes
        finally:
            client.stop()
            client.close()


@pytest.mark.timeout(300)
def test_corruption_inside_the_log_refuses_to_start() -> None:
    with running_server("zkpy") as server:
        client = _client(server)
        for i in range(200):
            client.create(f"/c{i}", b"x" * 50)
        client.stop()
        client.close()
        server.stop()
        log_file = _log_files(server)[-1]
        end = _data_end(log_file)
        with open(log_file, "r+b") as f:
            f.seek(end // 2)
            f.write(b"\xde\xad\xbe\xef" * 4)
        result = subprocess.run(
            [sys.executable, "-m", "zkpy", "server", str(server.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
        assert result.returncode != 0
        assert "corrupt" in result.stderr.lower() and log_file.name in result.stderr
