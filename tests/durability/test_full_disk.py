"""A full disk, on real processes (each data directory on its own small tmpfs, filled up).

An ensemble member stops acknowledging and steps aside, the others carry on, nothing
acknowledged is lost, and it rejoins once space is freed: first a follower's disk fills, then the
leader's. A standalone server refuses writes with an error (reads go on) and takes writes again
once space is freed; what it refused never appears, what it acknowledged survives kill -9.

Needs root to mount tmpfs (skipped otherwise).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, SystemZookeeperError
from kazoo.retry import KazooRetry

from zkpy.testing.procs import Ensemble, ServerProcess, ensemble_servers, free_port, write_config

pytestmark = pytest.mark.timeout(300)


def _mount_tmpfs(path: Path, size: str) -> bool:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
    )
    return done.returncode == 0


@contextlib.contextmanager
def ensemble_on_small_disks() -> Iterator[Ensemble]:
    tmp = Path(tempfile.mkdtemp(prefix="zkpy-full-disk-"))
    servers = ensemble_servers(
        "zkpy", tmp, 3, {"tickTime": "200", "preAllocSize": "64", "snapCount": "100000"}
    )
    mounted: list[Path] = []
    ensemble = Ensemble(servers)
    try:
        for server in servers:
            myid = (server.data_dir / "myid").read_text()
            if not _mount_tmpfs(server.data_dir, "16m"):
                pytest.skip("cannot mount a tmpfs here (needs root)")
            mounted.append(server.data_dir)
            (server.data_dir / "myid").write_text(myid)
        for server in servers:
            server.start(wait=None)
        ensemble.wait_serving(90.0)
        yield ensemble
    except BaseException:
        for server in servers:
            print(f"--- {server.hosts}\n{server.log_tail(30)}")
        raise
    finally:
        ensemble.stop()
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def fill(directory: Path) -> Path:
    """Take every free byte of the filesystem under `directory`."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:  # ENOSPC: try smaller pieces, down to a byte
                size //= 2
    finally:
        os.close(fd)
    return filler


def wait_for(condition, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def client(hosts: str) -> KazooClient:
    zk = KazooClient(hosts=hosts, timeout=10, connection_retry=KazooRetry(max_tries=-1, max_delay=0.5))
    zk.start(timeout=30)
    return zk


def view(server: ServerProcess) -> list[str]:
    zk = client(server.hosts)
    try:
        zk.sync("/f")
        return sorted(zk.get_children("/f"))
    finally:
        zk.stop()
        zk.close()


def write(zk: KazooClient, names: range) -> list[str]:
    """Create /f/nN for each N, retrying through a change of leader; the acknowledged names."""
    retry = KazooRetry(max_tries=-1, max_delay=0.5, deadline=60)
    acked = []
    for i in names:
        name = f"n{i:04d}"
        with contextlib.suppress(NodeExistsError):  # a retried create that had gone through
            retry(zk.create, f"/f/{name}", b"x" * 1000)
        acked.append(name)
    return acked


def test_full_disk_on_a_follower_then_the_leader() -> None:
    with ensemble_on_small_disks() as ensemble:
        zk = client(ensemble.hosts)
        zk.ensure_path("/f")
        acked = write(zk, range(0, 50))

        leader = wait_for(ensemble.leader, "a leader")
        follower = next(s for s in ensemble.servers if s is not leader)
        filler = fill(follower.data_dir)
        acked += write(zk, range(50, 250))  # the leader and the other follower are a quorum
        wait_for(lambda: "disk failed" in follower.log_since(follower.log_start), "the follower stepping aside")
        assert "No space left on device" in follower.log_since(follower.log_start)
        assert not ensemble.serving(follower)
        filler.unlink()
        ensemble.wait_serving(60.0, [follower])
        assert "disk works again" in follower.log_since(follower.log_start)
        wait_for(lambda: view(follower) == sorted(acked), "the follower caught up")

        filler = fill(leader.data_dir)
        acked += write(zk, range(250, 450))  # through a new leader
        wait_for(lambda: "disk failed" in leader.log_since(leader.log_start), "the leader stepping aside")
        new_leader = wait_for(ensemble.leader, "a new leader")
        assert new_leader is not leader
        filler.unlink()
        ensemble.wait_serving(60.0)
        for server in ensemble.servers:
            assert view(server) == sorted(acked), f"{server.hosts} lost acknowledged writes"
        zk.stop()
        zk.close()


def test_full_disk_on_a_standalone_server() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="zkpy-full-disk-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    if not _mount_tmpfs(data_dir, "16m"):
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip("cannot mount a tmpfs here (needs root)")
    port = free_port()
    write_config(tmp / "zoo.cfg", port, data_dir, {"preAllocSize": "64", "snapCount": "100000"})
    server = ServerProcess("zkpy", "127.0.0.1", port, data_dir, tmp / "zoo.cfg", tmp / "server.log")
    try:
        server.start()
        zk = client(server.hosts)
        zk.ensure_path("/f")
        acked = write(zk, range(0, 20))
        filler = fill(data_dir)
        refused = []
        for i in range(20, 300):
            try:
                zk.create(f"/f/n{i:04d}", b"x" * 1000)
                acked.append(f"n{i:04d}")
            except SystemZookeeperError:
                refused.append(f"n{i:04d}")
        assert refused, "the disk never filled"
        assert sorted(zk.get_children("/f")) == sorted(acked)  # reads go on
        filler.unlink()
        wait_for(lambda: _created(zk, "again"), "writes taken again", timeout=90)
        acked.append("again")
        zk.stop()
        zk.close()
        server.kill()
        server.start()
        zk = client(server.hosts)
        assert sorted(zk.get_children("/f")) == sorted(acked)  # none refused, all acknowledged
        zk.stop()
        zk.close()
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(data_dir)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def _created(zk: KazooClient, name: str) -> bool:
    try:
        zk.create(f"/f/{name}", b"")
    except SystemZookeeperError:
        return False
    return True
