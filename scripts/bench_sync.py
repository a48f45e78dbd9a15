#!/usr/bin/env python3
"""A wiped follower re-syncing from a loaded leader: zkpy vs Apache ZooKeeper, one command.

    python scripts/bench_sync.py --server zkpy|apache|both --znodes 1000000 [--size 100] \\
        [--wipe 1|2] [--json FILE]

For each server kind: a fresh 3-server ensemble on loopback (tickTime 2000, initLimit 10,
syncLimit 5); `--znodes` persistent znodes of `--size` bytes created through the leader; then
`--wipe` followers are killed (kill -9), their data directories emptied (myid kept) and started
again, while one reader (getData) and one writer (create) keep working on the leader, each one
request at a time. Reported:

- sync: seconds from the restart until each wiped follower answers getData of the newest znode
  the writer had created when the follower was started (its data came by SNAP), or null if it
  did not within SYNC_TIMEOUT;
- the longest gap between two replies the reader and the writer saw meanwhile (their stall), and
  their p99 latency;
- the peak RSS of the leader and of each wiped follower during the sync (VmRSS sampled every
  0.1 s; the restarted follower's VmHWM too);
- whether all three agree afterwards (the same znode count and last zxid from `mntr`).

Why a separate script: bench_restart.py measures one server's recovery from its own disk; this
measures the ensemble's sync path (SNAP), what a replaced disk or a long-dead follower costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import trio

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))
sys.path.insert(0, str(ROOT_DIR / "scripts"))

from bench import BenchError, Session  # noqa: E402
from bench_restart import create_bodies, get_data_ok, load  # noqa: E402

from zkpy.jute.codec import encode  # noqa: E402
from zkpy.jute.ops import OpCode, PathWatchRequest  # noqa: E402
from zkpy.server.pausemon import PauseMonitor  # noqa: E402
from zkpy.testing.procs import Ensemble, ServerProcess, four_letter, running_ensemble, status_kb  # noqa: E402

SETTINGS = {"tickTime": "2000", "initLimit": "10", "syncLimit": "5"}
SYNC_TIMEOUT = 600.0  # seconds a wiped follower gets to serve the newest znode


class Probe:
    """A client doing one request at a time on the leader: the longest gap between replies."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.longest_gap = 0.0
        self.errors = 0
        self.newest = ""  # the writer's newest acknowledged znode
        self.reconnects = 0
        self._last = 0.0

    def done(self, started: float, ok: bool) -> None:
        now = time.monotonic()
        self.latencies.append(now - started)
        if self._last:
            self.longest_gap = max(self.longest_gap, now - self._last)
        self._last = now
        self.errors += not ok

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "requests": len(self.latencies),
            "reconnects": self.reconnects,
            "errors": self.errors,
            "longest_stall_ms": round(self.longest_gap * 1000, 1),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0] * 1000, 1),
        }


async def probe_loop(host: str, port: int, probe: Probe, stop: trio.Event, write: bool) -> None:
    """One request at a time until `stop`; a closed connection (the leader losing its quorum when
    two followers are wiped) is reopened, and the time without replies counts as the stall."""
    n = 0
    first = True
    while not stop.is_set():
        try:
            session = await Session.open(host, port)
        except (OSError, BenchError, trio.BrokenResourceError):
            await trio.sleep(0.05)
            continue
        try:
            if write and first:
                await session.call_many(create_bodies(["/sync"], b""))
                first = False
            while not stop.is_set():
                started = time.monotonic()
                if write:
                    path = f"/sync/w{n:08d}"
                    n += 1
                    [(err, _)] = await session.call_many(create_bodies([path], b"w" * 100))
                    if err == 0:
                        probe.newest = path
                else:
                    body = encode(PathWatchRequest("/r", False))
                    [(err, _)] = await session.call_many([(OpCode.GET_DATA, body)])
                probe.done(started, err == 0)
        except (OSError, BenchError, trio.BrokenResourceError):
            probe.reconnects += 1
            await trio.sleep(0.05)
        finally:
            quiet = contextlib.suppress(OSError, BenchError, trio.BrokenResourceError)
            with trio.CancelScope(shield=True), trio.move_on_after(2.0), quiet:
                await session.close()


def wipe(server: ServerProcess) -> None:
    """Empty the data directory, keeping myid: a replaced disk."""
    for child in server.data_dir.iterdir():
        if child.name == "myid":
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def mntr(server: ServerProcess) -> dict[str, str]:
    text = four_letter(server.host, server.port, "mntr", timeout=5.0)
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def run_one(kind: str, znodes: int, size: int, wiped_count: int) -> dict[str, Any]:
    # zkpy members report event-loop stalls from 200 ms on (zkpy/server/pausemon.py), with stacks.
    envs = [{"ZKPY_PAUSE_THRESHOLD_MS": "200"}] * 3 if kind == "zkpy" else []
    with running_ensemble(kind, 3, extra=SETTINGS, wait=120.0, envs=envs) as ensemble:
        leader = ensemble.leader()
        assert leader is not None
        t0 = time.monotonic()
        trio.run(load, leader.host, leader.port, znodes, size, 16, 200)
        load_s = time.monotonic() - t0
        followers = [s for s in ensemble.servers if s is not leader][:wiped_count]
        result: dict[str, Any] = {"server": kind, "znodes": znodes, "size": size, "load_s": round(load_s, 1)}
        result.update(sync_under_load(ensemble, leader, followers))
        return result


def sync_under_load(ensemble: Ensemble, leader: ServerProcess, followers: list[ServerProcess]) -> dict[str, Any]:
    reader, writer = Probe("reader"), Probe("writer")
    stop = trio.Event()
    out: dict[str, Any] = {}
    rss: dict[str, int] = {}
    marks: list[int] = []  # the members' log sizes when the sync began
    client_monitor = PauseMonitor(threshold=0.2)

    def watch_rss(stop_flag: threading.Event) -> None:
        while not stop_flag.is_set():
            for name, s in [("leader", leader)] + [(f"follower {i + 1}", f) for i, f in enumerate(followers)]:
                if s.proc is not None:
                    rss[name] = max(rss.get(name, 0), status_kb(s.proc.pid, "VmRSS"))
            time.sleep(0.1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_monitor.run)  # a stall of this process is not the server's
            nursery.start_soon(probe_loop, leader.host, leader.port, reader, stop, False)
            nursery.start_soon(probe_loop, leader.host, leader.port, writer, stop, True)
            await trio.sleep(2.0)  # the probes' steady state before the restart
            while not writer.newest:
                await trio.sleep(0.1)
            newest = writer.newest
            marks[:] = log_sizes(ensemble)
            # Killed and wiped with the probes running: with two wiped the leader loses its
            # quorum, and nothing could be written before they are back.
            for f in followers:
                f.kill()
                wipe(f)
            flag = threading.Event()
            watcher = threading.Thread(target=watch_rss, args=(flag,), daemon=True)
            watcher.start()
            started = time.monotonic()
            for f in followers:
                f.start(wait=None)
            times: list[float | None] = []
            for f in followers:
                while time.monotonic() - started < SYNC_TIMEOUT:
                    f.check_running()
                    ok = await trio.to_thread.run_sync(_serves, f, newest)
                    if ok:
                        times.append(round(time.monotonic() - started, 2))
                        break
                    await trio.sleep(0.1)
                else:
                    times.append(None)  # never served it (say, the wiped pair elected each other)
            await trio.sleep(1.0)
            flag.set()
            stop.set()
            out["sync_s"] = times
            out["probe_process_stalls"] = client_monitor.stalls
            out["probe_process_longest_stall_s"] = round(client_monitor.longest, 2)
            out["reader"] = reader.summary()
            out["writer"] = writer.summary()
            nursery.cancel_scope.cancel()  # the pause monitor runs until cancelled
            out["peak_rss_mb"] = {k: round(v / 1024) for k, v in rss.items()}
            out["follower_vmhwm_mb"] = [
                round(status_kb(f.proc.pid, "VmHWM") / 1024) for f in followers if f.proc is not None
            ]

    trio.run(main)
    time.sleep(1.0)
    views = [mntr(s) for s in ensemble.servers]
    counts = {v.get("zk_znode_count") for v in views}
    out["agree"] = len(counts) == 1
    out["gc_pauses_ms"] = gc_pauses(ensemble, marks)
    out["loop_stalls_s"] = loop_stalls(ensemble, marks)
    if out["loop_stalls_s"]:  # where: the members' logs go with the ensemble's directory
        for server in ensemble.servers:
            text = server.log_path.read_text(errors="replace")
            for block in text.split("the event loop has not run for")[1:][:3]:
                print(f"--- {server.log_path}: the event loop has not run for{block[:1500]}", file=sys.stderr)
    out["znode_counts"] = [v.get("zk_znode_count") for v in views]
    return out


GC_PAUSE = re.compile(r"garbage collection of generation (\d) held this server for (\d+) ms")


def log_sizes(ensemble: Ensemble) -> list[int]:
    return [s.log_path.stat().st_size if s.log_path.exists() else 0 for s in ensemble.servers]


def gc_pauses(ensemble: Ensemble, since: list[int]) -> dict[str, list[int]]:
    """Per zkpy member, the full GC pauses it logged (zkpy/server/gcpause.py) after `since` (log
    sizes), longest first: a stall that lines up with one is the collector's, not the sync's."""
    pauses: dict[str, list[int]] = {}
    for i, (server, start) in enumerate(zip(ensemble.servers, since, strict=True), 1):
        text = server.log_since(start)
        found = sorted((int(ms) for gen, ms in GC_PAUSE.findall(text) if gen == "2"), reverse=True)
        if found:
            pauses[f"s{i}"] = found[:5]
    return pauses


LOOP_STALL = re.compile(r"the event loop ran again after a stall of ([\d.]+) s")


def loop_stalls(ensemble: Ensemble, since: list[int]) -> dict[str, list[float]]:
    """Per zkpy member, the event-loop stalls of 200 ms or more it logged after `since`
    (zkpy/server/pausemon.py; the log has the stack of each)."""
    stalls: dict[str, list[float]] = {}
    for i, (server, start) in enumerate(zip(ensemble.servers, since, strict=True), 1):
        text = server.log_since(start)
        found = sorted((float(x) for x in LOOP_STALL.findall(text)), reverse=True)
        if found:
            stalls[f"s{i}"] = found[:5]
    return stalls


def _serves(server: ServerProcess, path: str) -> bool:
    try:
        return server.mode() in ("follower", "observer") and get_data_ok(server.host, server.port, path)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    # Killed by timeout(1) or ^C: unwind, so that running_ensemble stops its servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=["zkpy", "apache", "both"], default="both")
    ap.add_argument("--znodes", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--wipe", type=int, choices=[1, 2], default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    kinds = ["zkpy", "apache"] if args.server == "both" else [args.server]
    results = []
    for kind in kinds:
        result = run_one(kind, args.znodes, args.size, args.wipe)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["agree"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
