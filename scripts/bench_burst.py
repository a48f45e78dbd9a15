#!/usr/bin/env python3
"""A burst of large writes into a 3-server ensemble: does it commit without an election?

    python scripts/bench_burst.py [--server zkpy|apache|both] [--writes 2000] [--size 1048576] \\
        [--sessions 8] [--window 16] [--json FILE]

A fresh ensemble (tickTime 2000, initLimit 10, syncLimit 5, jute.maxbuffer raised to fit a
write) takes `--writes` creates of `--size` bytes, pipelined over `--sessions` sessions with
`--window` requests in flight each, all through the leader. Reported: how many were
acknowledged, the time and MB/s, whether the leader and its epoch are still the same afterwards
(an election would change the epoch of the zxids), and whether all three members agree (znode
count). Issue 17's case: before batches were capped by bytes, such a burst built proposal frames
past the peers' 256 MiB frame limit and cost two elections.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))
sys.path.insert(0, str(ROOT_DIR / "scripts"))

from bench import Session  # noqa: E402
from bench_restart import create_bodies  # noqa: E402

from zkpy.testing.procs import ServerProcess, four_letter, java_properties, running_ensemble  # noqa: E402


def srvr_zxid(server: ServerProcess) -> int:
    for line in four_letter(server.host, server.port, "srvr", timeout=5.0).splitlines():
        if line.startswith("Zxid:"):
            return int(line.split()[1], 16)
    return -1


def _quietly(fn: Any, server: ServerProcess) -> Any:
    try:
        return fn(server)
    except OSError:
        return None


def znode_count(server: ServerProcess) -> str | None:
    for line in four_letter(server.host, server.port, "mntr", timeout=5.0).splitlines():
        if line.startswith("zk_znode_count"):
            return line.split("\t")[1]
    return None


async def burst(host: str, port: int, writes: int, size: int, sessions: int, window: int) -> int:
    import bench

    bench.SETUP_WINDOW = window
    data = b"b" * size
    conns = [await Session.open(host, port) for _ in range(sessions)]
    ok = 0
    try:

        async def one(k: int) -> None:
            nonlocal ok
            paths = [f"/burst/n{i}" for i in range(k, writes, sessions)]
            for err, _ in await conns[k].call_many(create_bodies(paths, data)):
                ok += err == 0

        async with trio.open_nursery() as nursery:
            for k in range(sessions):
                nursery.start_soon(one, k)
    finally:
        for c in conns:
            await c.close()
    return ok


async def make_root(host: str, port: int) -> None:
    session = await Session.open(host, port)
    try:
        await session.call_many(create_bodies(["/burst"], b""))
    finally:
        await session.close()


def run_one(kind: str, writes: int, size: int, sessions: int, window: int) -> dict[str, Any]:
    maxbuffer = str(size + 64 * 1024)
    settings = {"tickTime": "2000", "initLimit": "10", "syncLimit": "5", "jute.maxbuffer": maxbuffer}
    # Apache reads jute.maxbuffer only as a system property (zoo.cfg's is ignored).
    props = java_properties({"jute.maxbuffer": maxbuffer}) if kind == "apache" else contextlib.nullcontext()
    with props, running_ensemble(kind, 3, extra=settings, wait=120.0) as ensemble:
        leader = ensemble.leader()
        assert leader is not None
        trio.run(make_root, leader.host, leader.port)
        epoch_before = srvr_zxid(leader) >> 32  # a write of this epoch is in: its zxid names it
        t0 = time.monotonic()
        acked = trio.run(burst, leader.host, leader.port, writes, size, sessions, window)
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 120.0
        while True:  # the followers may still be applying (or writing a snapshot of 2 GB)
            counts = [_quietly(znode_count, s) for s in ensemble.servers]
            if (len(set(counts)) == 1 and counts[0] is not None) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        agreed_after = time.monotonic() - t0 - elapsed
        after = ensemble.leader()
        return {
            "server": kind,
            "writes": writes,
            "size": size,
            "acknowledged": acked,
            "seconds": round(elapsed, 1),
            "mb_per_s": round(acked * size / elapsed / 1e6, 1),
            "same_leader": after is leader,
            "same_epoch": after is not None and srvr_zxid(after) >> 32 == epoch_before,
            "agree": len(set(counts)) == 1 and counts[0] is not None,
            "agreed_after_s": round(agreed_after, 1),
            "znode_counts": counts,
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=["zkpy", "apache", "both"], default="zkpy")
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    kinds = ["zkpy", "apache"] if args.server == "both" else [args.server]
    results = []
    for kind in kinds:
        result = run_one(kind, args.writes, args.size, args.sessions, args.window)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    good = all(r["acknowledged"] == r["writes"] and r["same_epoch"] and r["agree"] for r in results)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
