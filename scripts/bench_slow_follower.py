#!/usr/bin/env python3
"""A follower with a slow disk under a steady write load: zkpy vs Apache ZooKeeper, one command.

    python scripts/bench_slow_follower.py [--server zkpy|apache|both] [--duration 60] \\
        [--baseline 10] [--slow-ms 300] [--slow-bytes-per-s 1500000] [--size 8192] \\
        [--znodes 256] [--sessions 4] [--window 16] [--rss-limit-mb 4096] [--logs DIR] [--json FILE]

For each server kind: a fresh 3-server ensemble on loopback (tickTime 2000, initLimit 10,
syncLimit 5, commitLogCount 500: Apache's default, set for both) whose members all run with the
slow-fsync LD_PRELOAD shim (zkpy/testing/slowfsync.c, built with gcc into a temporary
directory). `--sessions` sessions pipeline setData of `--size` bytes over `--znodes` znodes into
the leader, `--window` in flight each: first `--baseline` seconds with every disk at its own
speed, then `--duration` seconds with one follower's fsync slowed to `--slow-ms` plus the bytes
written since its last sync at `--slow-bytes-per-s` (the defaults are about 100x this machine's
disk: 2.8 ms a 4 kB fdatasync, 176 MB/s). Then the writes stop and the disk is fast again.
Reported:

- the write throughput (sets/s and MB/s) with all disks normal and with the slow follower, and
  the longest gap between two acknowledged writes (does the leader wait for the slow disk?);
- the peak RSS of the slow follower, the leader and the other follower during the slow phase
  (VmRSS sampled every 0.1 s), and the slow follower's RSS each 5 s;
- how stale the data is that a client of the slow follower reads (a clock znode set through the
  leader every 0.1 s and read on the slow follower every 0.1 s), the longest it waited for an
  answer and how often it had to reconnect;
- whether the slow follower was dropped and re-synced: the times `srvr` saw it not serving, and
  the sync and drop lines in its and the leader's log;
- how far behind it was when the writes stopped (transactions) and the seconds until it had the
  leader's last zxid again and served as a follower, and whether all three hold the same data.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))
sys.path.insert(0, str(ROOT_DIR / "scripts"))

from bench import BenchError, Request, Session  # noqa: E402
from bench_restart import create_bodies  # noqa: E402

from zkpy.jute.codec import decode, encode  # noqa: E402
from zkpy.jute.ops import GetDataResponse, OpCode, PathWatchRequest, SetDataRequest  # noqa: E402
from zkpy.testing import slowfsync  # noqa: E402
from zkpy.testing.procs import Ensemble, ServerProcess, four_letter, running_ensemble, status_kb  # noqa: E402

SETTINGS = {"tickTime": "2000", "initLimit": "10", "syncLimit": "5", "commitLogCount": "500"}

# What each kind logs when a follower syncs and when a leader drops a learner.
SYNC_LINES = {
    "zkpy": r"synced with leader",
    "apache": r"Getting a (diff|snapshot) from (the )?leader|Truncating log to get in sync",
}
DROP_LINES = {
    "zkpy": r"dropping the learner",
    "apache": r"GOODBYE|Unexpected exception causing shutdown while sock still open",
}


def written_bytes(server: ServerProcess) -> int:
    """Bytes the process has written so far (/proc/PID/io wchar: its logs and snapshots, and the
    little it sends on sockets), 0 when it is gone."""
    try:
        with open(f"/proc/{server.proc.pid if server.proc else 0}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def max_fsync_ms(server: ServerProcess) -> float | None:
    try:
        text = four_letter(server.host, server.port, "mntr", timeout=5.0)
    except OSError:
        return None
    found = re.search(r"^zk_max_fsynctime\t([\d.]+)", text, re.M)
    return float(found.group(1)) if found else None


def srvr_zxid(server: ServerProcess) -> int:
    try:
        text = four_letter(server.host, server.port, "srvr", timeout=2.0)
    except OSError:
        return -1
    found = re.search(r"^Zxid: (0x[0-9a-fA-F]+)", text, re.M)
    return int(found.group(1), 16) if found else -1


class Writers:
    """`sessions` pipelined sessions setting the znodes round-robin until `stop` is set."""

    def __init__(self, size: int, znodes: int, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.data = b"s" * size
        self.znodes = znodes
        self.acked = 0
        self.errors = 0
        self.last_ack = 0.0
        self.longest_gap = 0.0
        self._n = 0

    async def run(self, host: str, port: int, sessions: int, window: int, until: float) -> None:
        async def one() -> None:
            session = await Session.open(host, port)
            try:
                await session.pump(window, lambda: self._next(until), self._reply)
            finally:
                await session.close()

        self.last_ack = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(sessions):
                nursery.start_soon(one)

    def _next(self, until: float) -> Request | None:
        if time.monotonic() >= until or self.stop.is_set():
            return None
        self._n += 1
        body = encode(SetDataRequest(f"/slowdisk/n{self._n % self.znodes:04d}", self.data, -1))
        return ("set", OpCode.SET_DATA, body)

    def _reply(self, _label: str, err: int, _t0: float, _t: float, _body: bytes) -> None:
        now = time.monotonic()
        self.longest_gap = max(self.longest_gap, now - self.last_ack)
        self.last_ack = now
        if err == 0:
            self.acked += 1
        else:
            self.errors += 1


CLOCK = "/slowdisk-clock"
CLIENT_ERRORS = (BenchError, OSError, trio.BrokenResourceError, trio.TooSlowError, trio.ClosedResourceError)


class Staleness:
    """A clock znode the leader's writer sets to the wall time every 0.1 s, and a reader on the
    slow follower getting it every 0.1 s, one request at a time: how old the data its clients
    read is, and how long they wait for an answer. The reader's session is opened before the
    disk is slow (opening one on the slow follower waits for its backlog: a session is a write);
    when the follower drops it, it opens a new one, however long that takes."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self.reads = 0
        self.reconnects = 0
        self.longest_wait_s = 0.0
        self._session: Session | None = None

    async def open(self, server: ServerProcess) -> None:
        self._session = await Session.open(server.host, server.port)

    async def write_clock(self, host: str, port: int, until: float) -> None:
        session = await Session.open(host, port)
        try:
            while time.monotonic() < until:
                body = encode(SetDataRequest(CLOCK, repr(time.time()).encode(), -1))
                await session.call_many([(OpCode.SET_DATA, body)])
                await trio.sleep(0.1)
        finally:
            await session.close()

    async def read_clock(self, server: ServerProcess, until: float) -> None:
        body = encode(PathWatchRequest(CLOCK, False))
        last_answer = time.monotonic()
        try:
            with trio.move_on_at(trio.current_time() + until - time.monotonic()):
                while True:
                    if self._session is None:
                        try:
                            self._session = await Session.open(server.host, server.port)
                        except CLIENT_ERRORS:
                            await trio.sleep(0.1)
                            continue
                    try:
                        [(err, reply)] = await self._session.call_many([(OpCode.GET_DATA, body)])
                    except CLIENT_ERRORS:
                        self.reconnects += 1
                        self._session = None
                        continue
                    now = time.monotonic()
                    self.longest_wait_s = max(self.longest_wait_s, now - last_answer)
                    last_answer = now
                    data = decode(GetDataResponse, reply).data if err == 0 else b""
                    if data:  # empty until the clock's first set
                        self.reads += 1
                        self.worst_s = max(self.worst_s, time.time() - float(data))
                    await trio.sleep(0.1)
        finally:
            self.longest_wait_s = max(self.longest_wait_s, time.monotonic() - last_answer)
            if self._session is not None:
                with trio.move_on_after(1):
                    await self._session.close()


class Watch:
    """Every 0.1 s: each member's VmRSS (peaks, and the slow one's each 5 s); every 0.5 s whether
    the slow follower serves (`srvr`), counting the times it stopped."""

    def __init__(self, named: dict[str, ServerProcess]) -> None:
        self.named = named
        self.peak_kb = dict.fromkeys(named, 0)
        self.slow_every_5s_mb: list[int] = []
        self.not_serving_spells = 0
        self.rss_limit_kb = 0  # past this (slow follower) the writes stop early: a shared machine
        self.over_limit = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = last_mode = time.monotonic()
        serving = True
        while not self._stop.is_set():
            for name, server in self.named.items():
                if server.proc is not None:
                    kb = status_kb(server.proc.pid, "VmRSS")
                    self.peak_kb[name] = max(self.peak_kb[name], kb)
                    if name == "slow" and self.rss_limit_kb and kb > self.rss_limit_kb:
                        self.over_limit.set()
                    if name == "slow" and time.monotonic() - started >= 5 * len(self.slow_every_5s_mb):
                        self.slow_every_5s_mb.append(kb // 1024)
            if time.monotonic() - last_mode >= 0.5:
                last_mode = time.monotonic()
                now_serving = self.named["slow"].mode() == "follower"
                self.not_serving_spells += serving and not now_serving
                serving = now_serving
            time.sleep(0.1)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def prepare(host: str, port: int, znodes: int) -> None:
    session = await Session.open(host, port)
    try:
        paths = ["/slowdisk", CLOCK, *(f"/slowdisk/n{i:04d}" for i in range(znodes))]
        await session.call_many(create_bodies(paths, b""))
    finally:
        await session.close()


async def contents(server: ServerProcess, znodes: int) -> list[tuple[int, bytes]]:
    session = await Session.open(server.host, server.port)
    try:
        bodies: list[tuple[int, bytes]] = [
            (OpCode.GET_DATA, encode(PathWatchRequest(f"/slowdisk/n{i:04d}", False))) for i in range(znodes)
        ]
        return await session.call_many(bodies)
    finally:
        await session.close()


def write_phase(
    leader: ServerProcess,
    args: argparse.Namespace,
    seconds: float,
    stop: threading.Event | None = None,
    staleness: tuple[Staleness, ServerProcess] | None = None,
    begin: Callable[[], None] = lambda: None,
) -> tuple[Writers, float]:
    """The writers for `seconds` (less when `stop` is set) and the seconds they wrote; with
    `staleness`, its clock and its reader on the given server meanwhile. `begin` runs once the
    reader is connected, just before the writes start (the disk is made slow there)."""
    writers = Writers(args.size, args.znodes, stop)
    started = time.monotonic()

    async def run() -> None:
        nonlocal started
        if staleness is not None:
            await staleness[0].open(staleness[1])
        begin()
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            if staleness is not None:
                probe, server = staleness
                nursery.start_soon(probe.write_clock, leader.host, leader.port, started + seconds)
                nursery.start_soon(probe.read_clock, server, started + seconds)
            await writers.run(leader.host, leader.port, args.sessions, args.window, started + seconds)
            nursery.cancel_scope.cancel()  # the writes stopped early (RSS limit): the probes too

    trio.run(run)
    return writers, time.monotonic() - started


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    shim_dir = Path(tempfile.mkdtemp(prefix="zkpy-slowfsync-"))
    disks = list(slowfsync.slow_disks(shim_dir, ["s1", "s2", "s3"]).values())
    envs = [d.env() for d in disks]
    try:
        with running_ensemble(kind, 3, extra=SETTINGS, wait=120.0, envs=envs) as ensemble:
            return measure(kind, ensemble, disks, args)
    finally:
        shutil.rmtree(shim_dir, ignore_errors=True)


def measure(
    kind: str, ensemble: Ensemble, disks: list[slowfsync.SlowDisk], args: argparse.Namespace
) -> dict[str, Any]:
    leader = ensemble.leader()
    assert leader is not None
    slow, other = (s for s in ensemble.servers if s is not leader)
    disk = disks[ensemble.servers.index(slow)]
    trio.run(prepare, leader.host, leader.port, args.znodes)
    result: dict[str, Any] = {"server": kind, "size": args.size, "slow_ms": args.slow_ms}
    result["slow_bytes_per_s"] = args.slow_bytes_per_s
    rss_mb = {
        name: status_kb(s.proc.pid, "VmRSS") // 1024
        for name, s in [("slow", slow), ("leader", leader)]
        if s.proc
    }
    if args.baseline > 0:
        normal, seconds = write_phase(leader, args, args.baseline)
        result["normal"] = {
            "seconds": round(seconds, 1),
            "sets_per_s": round(normal.acked / seconds),
            "mb_per_s": round(normal.acked * args.size / seconds / 1e6, 1),
            "longest_gap_ms": round(normal.longest_gap * 1000),
        }
        rss_mb = {
            name: status_kb(s.proc.pid, "VmRSS") // 1024
            for name, s in [("slow", slow), ("leader", leader)]
            if s.proc
        }
    result["rss_before_slow_mb"] = rss_mb
    slow_log_from, leader_log_from = _log_size(slow), _log_size(leader)
    written_before: dict[str, int] = {}

    def begin() -> None:
        written_before.update(slow=written_bytes(slow), other=written_bytes(other))
        disk.slow(args.slow_ms, args.slow_bytes_per_s)

    with Watch({"slow": slow, "leader": leader, "other": other}) as watch:
        watch.rss_limit_kb = args.rss_limit_mb * 1024
        staleness = Staleness()
        writers, seconds = write_phase(
            leader, args, args.duration, watch.over_limit, (staleness, slow), begin
        )
        newest, slow_zxid = srvr_zxid(leader), srvr_zxid(slow)
        behind = newest - slow_zxid if slow_zxid >= 0 else None  # None: not serving then
        # How much less the slow follower has written than the other: its unlogged backlog (a
        # zkpy follower re-synced by SNAP skips part of it, an Apache follower applies commits
        # before its own log has them, so its zxid is current while its log is not).
        backlog_mb = (
            (written_bytes(other) - written_before["other"]) - (written_bytes(slow) - written_before["slow"])
        ) / 1e6
        disk.fast()
        fast_from = time.monotonic()
        zxid_at = settled_at = None
        last_written, last_check = written_bytes(slow), fast_from
        while time.monotonic() < fast_from + args.catch_up_timeout and (
            zxid_at is None or settled_at is None
        ):
            time.sleep(0.1)
            now = time.monotonic()
            if zxid_at is None and srvr_zxid(slow) >= newest and slow.mode() == "follower":
                zxid_at = now
            if now - last_check >= 1.0:  # caught up: less than 256 kB written in the last second
                written = written_bytes(slow)
                if written - last_written < 256 * 1024:
                    settled_at = last_check
                last_written, last_check = written, now
    views = [trio.run(contents, s, args.znodes) for s in ensemble.servers]
    slowest_fsync = max_fsync_ms(slow)  # its largest since it started (a drop does not reset it)
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
        for role, server in [("leader", leader), ("slow", slow), ("other", other)]:
            shutil.copy(server.log_path, args.logs / f"{kind}-{role}.log")
    slow_log, leader_log = slow.log_since(slow_log_from), leader.log_since(leader_log_from)
    result["slow"] = {
        "seconds": round(seconds, 1),
        "stopped_at_rss_limit": watch.over_limit.is_set(),
        "sets_per_s": round(writers.acked / seconds),
        "mb_per_s": round(writers.acked * args.size / seconds / 1e6, 1),
        "errors": writers.errors,
        "longest_gap_ms": round(writers.longest_gap * 1000),
        "peak_rss_mb": {name: kb // 1024 for name, kb in watch.peak_kb.items()},
        "slow_rss_every_5s_mb": watch.slow_every_5s_mb,
        "slow_not_serving_spells": watch.not_serving_spells,
        "slow_syncs_in_log": len(re.findall(SYNC_LINES[kind], slow_log)),
        "leader_drops_in_log": len(re.findall(DROP_LINES[kind], leader_log)),
        "slow_max_fsync_ms": slowest_fsync,
        "slow_read_staleness_max_s": round(staleness.worst_s, 1),
        "slow_read_longest_wait_s": round(staleness.longest_wait_s, 1),
        "slow_reader_reconnects": staleness.reconnects,
        "slow_behind_txns_at_end": behind,
        "slow_backlog_mb_at_end": round(backlog_mb, 1),
    }
    # Caught up: has the leader's last zxid and serves, and has written its backlog.
    caught_up = None if zxid_at is None or settled_at is None else max(zxid_at, settled_at)
    result["catch_up_s"] = None if caught_up is None else round(caught_up - fast_from, 1)
    result["zxid_current_after_s"] = None if zxid_at is None else round(zxid_at - fast_from, 1)
    result["agree"] = all(view == views[0] for view in views) and all(err == 0 for err, _ in views[0])
    return result


def _log_size(server: ServerProcess) -> int:
    try:
        return server.log_path.stat().st_size
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=["zkpy", "apache", "both"], default="both")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of writes with the slow follower")
    ap.add_argument(
        "--baseline", type=float, default=10.0, help="seconds of writes before, every disk normal"
    )
    ap.add_argument("--slow-ms", type=float, default=slowfsync.SLOW_MS)
    ap.add_argument("--slow-bytes-per-s", type=float, default=slowfsync.SLOW_BYTES_PER_S)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--znodes", type=int, default=256)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument(
        "--rss-limit-mb",
        type=int,
        default=4096,
        help="stop the writes early when the slow follower's RSS passes this",
    )
    ap.add_argument("--catch-up-timeout", type=float, default=300.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--logs", type=Path, default=None, help="copy each member's log here (<server>-<role>.log)"
    )
    args = ap.parse_args(argv)
    reason = slowfsync.unavailable_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    kinds = ["zkpy", "apache"] if args.server == "both" else [args.server]
    results = []
    for kind in kinds:
        result = run_one(kind, args)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["agree"] and r["catch_up_s"] is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
