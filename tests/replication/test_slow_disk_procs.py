"""A real 3-server zkpy ensemble in which one follower's disk is about 100x slower than this
machine's (issue 17: bounded memory). Every member runs with the slow-fsync LD_PRELOAD shim
(zkpy/testing/slowfsync.c); once the roles are known one follower is made slow: each fsync takes
300 ms plus 1 s per 1.5 MB written since the last (this disk: 2.8 ms and 176 MB/s). A client
writes 8 kB values into the leader for a bounded time, several times faster than that disk takes.

It shows: the leader keeps committing with the other follower (writes are acknowledged at several
times what the slow disk could log); the slow follower's memory stays within its design bound (it
stops reading its link past learner.MAX_UNLOGGED_BYTES of unlogged proposals, and the leader drops
it past leader.MAX_QUEUED_TO_LEARNER queued to it), and so does the leader's; once the disk is fast
again the slow follower catches up and all three hold the same data. The simulator's version of
this, with the bounds shrunk, is tests/replication/test_slow_follower.py.

Fails without the learner's back-pressure (learner.py's `_behind` made to return False, checked by
hand): the slow follower's RSS grew by 1,450 MB in 25 s (it read everything, the leader never
dropped it) instead of the 160-255 MB seen with it.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from zkpy.client import connect
from zkpy.replication.leader import MAX_QUEUED_TO_LEARNER
from zkpy.replication.learner import MAX_UNLOGGED_BYTES
from zkpy.testing import slowfsync
from zkpy.testing.procs import Ensemble, ServerProcess, four_letter, running_ensemble, status_kb

pytestmark = pytest.mark.timeout(240)

MIB = 1024 * 1024
VALUE = 8 * 1024
ZNODES = 256
WRITERS = 32  # sets in flight at once on the one session
WRITE_SECONDS = 25.0
# commitLogCount bounds the history window every member holds (8 MB of these values); the default
# (100,000 transactions or 256 MiB) would put up to 256 MiB on every member, slow or not.
SETTINGS = {"tickTime": "2000", "initLimit": "10", "syncLimit": "5", "commitLogCount": "1000"}


def srvr(server: ServerProcess) -> dict[str, str]:
    try:
        text = four_letter(server.host, server.port, "srvr", timeout=2.0)
    except OSError:
        return {}
    return dict(re.findall(r"^([\w ]+): (.*)$", text, re.M))


def mntr(server: ServerProcess) -> dict[str, str]:
    text = four_letter(server.host, server.port, "mntr", timeout=5.0)
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def zxid(server: ServerProcess) -> int:
    value = srvr(server).get("Zxid")
    return int(value, 16) if value else -1


class RssWatch:
    """The peak VmRSS of each process, sampled every 0.1 s on a thread (kB)."""

    def __init__(self, servers: dict[str, ServerProcess]) -> None:
        self.servers = servers
        self.peak: dict[str, int] = dict.fromkeys(servers, 0)
        self.timeline: list[tuple[float, dict[str, int]]] = []  # one sample a second, for the output
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            now = {name: status_kb(s.proc.pid, "VmRSS") if s.proc else 0 for name, s in self.servers.items()}
            for name, kb in now.items():
                self.peak[name] = max(self.peak[name], kb)
            if not self.timeline or time.monotonic() - started >= len(self.timeline):
                self.timeline.append((time.monotonic() - started, now))
            time.sleep(0.1)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def write_steadily(hosts: str, seconds: float, acked: list[float], last: dict[str, bytes]) -> None:
    """WRITERS tasks set the ZNODES znodes round-robin for `seconds`; each acknowledged set's time
    goes to `acked` and its value to `last` (the value every member must end with)."""
    async with connect(hosts, timeout=30.0) as zk:
        until = time.monotonic() + seconds
        counter = 0

        async def writer(k: int) -> None:
            nonlocal counter
            i = k
            while time.monotonic() < until:
                path = f"/slow/n{i % ZNODES:03d}"
                counter += 1
                value = f"{counter:09d}".encode().ljust(VALUE, b"v")
                await zk.set(path, value)
                acked.append(time.monotonic())
                last[path] = value  # sets of one path are answered in order on one session
                i += WRITERS

        async with trio.open_nursery() as nursery:
            for k in range(WRITERS):
                nursery.start_soon(writer, k)


async def prepare(hosts: str) -> None:
    async with connect(hosts, timeout=30.0) as zk:
        await zk.create("/slow", b"")
        for i in range(ZNODES):
            await zk.create(f"/slow/n{i:03d}", b"")


async def read_all(hosts: str) -> dict[str, bytes]:
    async with connect(hosts, timeout=30.0) as zk:
        await zk.sync("/slow")
        return {f"/slow/n{i:03d}": (await zk.get(f"/slow/n{i:03d}"))[0] for i in range(ZNODES)}


def wait_for(condition, what: str, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def shim_dir() -> Iterator[Path]:
    reason = slowfsync.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="zkpy-slowfsync-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_follower_with_a_slow_disk_keeps_bounded_memory_and_the_leader_commits_with_the_other(
    shim_dir: Path,
) -> None:
    disks = slowfsync.slow_disks(shim_dir, ["s1", "s2", "s3"])
    envs = [disk.env() for disk in disks.values()]
    with running_ensemble("zkpy", 3, extra=SETTINGS, envs=envs) as ensemble:
        try:
            run_slow_follower_scenario(ensemble, list(disks.values()))
        except BaseException:
            for server in ensemble.servers:
                print(
                    f"--- {server.hosts} ({server.env.get('ZKPY_SLOW_FSYNC_CONTROL')})\n{server.log_tail(30)}"
                )
            raise


def run_slow_follower_scenario(ensemble: Ensemble, disks: list[slowfsync.SlowDisk]) -> None:
    leader = ensemble.leader()
    assert leader is not None
    slow, other = (s for s in ensemble.servers if s is not leader)
    slow_disk = disks[ensemble.servers.index(slow)]
    trio.run(prepare, leader.hosts)
    wait_for(lambda: len({zxid(s) for s in ensemble.servers}) == 1, "every member has the znodes", 30.0)
    assert slow.proc is not None and leader.proc is not None
    baseline = {"slow": status_kb(slow.proc.pid, "VmRSS"), "leader": status_kb(leader.proc.pid, "VmRSS")}

    slow_disk.slow()
    acked: list[float] = []
    last: dict[str, bytes] = {}
    with RssWatch({"slow": slow, "leader": leader}) as rss:
        started = time.monotonic()
        trio.run(write_steadily, leader.hosts, WRITE_SECONDS, acked, last)
        elapsed = time.monotonic() - started
        newest = zxid(leader)
        wait_for(lambda: zxid(other) == newest, "the other follower has every write", 10.0)
        behind = newest - zxid(slow)  # same epoch: the counter difference
        slow_fsync_ms = float(mntr(slow).get("zk_max_fsynctime", "0"))
        slow_disk.fast()
        caught_up_from = time.monotonic()
        wait_for(
            lambda: len({zxid(s) for s in ensemble.servers}) == 1 and slow.mode() == "follower",
            "the slow follower caught up",
            60.0,
        )
        catch_up = time.monotonic() - caught_up_from
    views = {s.hosts: trio.run(read_all, s.hosts) for s in ensemble.servers}

    rate = len(acked) * VALUE / elapsed
    gaps = [b - a for a, b in zip([started, *acked], [*acked, started + elapsed], strict=True)]
    grown = {name: (rss.peak[name] - baseline[name]) * 1024 for name in rss.peak}
    syncs = slow.log_since(0).count("synced with leader")
    drops = leader.log_since(0).count("dropping the learner")
    print(
        f"slow follower synced {syncs} times, dropped by the leader {drops} times; acknowledged {len(acked)} sets of {VALUE} B in {elapsed:.1f} s ({rate / 1e6:.1f} MB/s), longest gap "
        f"{max(gaps):.2f} s; slow follower {behind} transactions behind at the end, its longest fsync "
        f"{slow_fsync_ms:.0f} ms; RSS baseline/peak kB {baseline} / {rss.peak}; caught up in {catch_up:.1f} s"
    )
    print(
        "RSS MB each second:",
        " ".join("/".join(str(kb // 1024) for kb in now.values()) for _, now in rss.timeline),
    )
    # The shim worked, and the slow member really fell behind: its disk could not take the rate.
    assert slow_fsync_ms >= slowfsync.SLOW_MS, slow_fsync_ms
    assert rate > 3 * slowfsync.SLOW_BYTES_PER_S, rate
    assert behind > 0
    # The leader committed with the other follower all along, not at the slow disk's pace.
    assert max(gaps) < 5.0, max(gaps)
    # Bounded memory: a bound that does not grow with the time or the volume written. The slow
    # follower holds at most MAX_UNLOGGED_BYTES of proposals it has not logged (the batch its log
    # is writing included), and while the log writes that batch two more copies of it (the packed
    # records and the encoded frame, zkpy.server.durable and zkpy.storage.txnlog): up to three
    # times the bound live; the allocator keeps freed memory across its drop and re-sync (RSS
    # stays at its peak), so four times the bound and some slack. The leader holds at most
    # MAX_QUEUED_TO_LEARNER queued to it, plus the frames being written and its history window
    # (commitLogCount 1000: 8 MB).
    assert grown["slow"] < 4 * MAX_UNLOGGED_BYTES + 64 * MIB, grown
    assert grown["leader"] < 2 * MAX_QUEUED_TO_LEARNER + 64 * MIB, grown
    # Caught up: every member holds the newest acknowledged value of every znode.
    assert math.isfinite(catch_up)
    first, *others = views.values()
    assert all(view == first for view in others), "the members' data differ"
    assert all(first[path] == value for path, value in last.items())
