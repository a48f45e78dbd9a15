#!/usr/bin/env python3
"""zkpy.client under the fault-injecting proxy, for longer than CI runs it.

    python scripts/fuzz_client_proxy.py [--server zkpy|apache] [--ops 100000] [--seeds 1-5]
        [--recipe-rounds 200] [--scale 1.0] [--blackhole 0.0005] [--json]

For each seed: a fresh chroot on one server (started here, zkpy or Apache ZooKeeper 3.8), a
FaultProxy (zkpy.testing.faultproxy) in front of it with every fault at `--scale` times CI's
rates (plus, optionally, blackholes that only a read timeout can end), then
zkpy.testing.clientfuzz's client properties (no call hangs, replies reach their callers, every
watch fires exactly once or its loss is reported, no watch left on the server) over `--ops`
operations, and the recipes' exactly-once properties over `--recipe-rounds` rounds. Exit status
1 if any property failed; each failure names its seed (rerun it with --seeds N).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import trio

import zkpy.client
from zkpy.testing.clientfuzz import Report, client_properties, recipe_properties
from zkpy.testing.faultproxy import FaultProxy, Faults
from zkpy.testing.procs import running_server


def seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


async def one_seed(
    hosts: str, host: str, port: int, seed: int, args: argparse.Namespace
) -> tuple[Report, dict[str, int]]:
    root = f"/fuzz-{uuid.uuid4().hex[:8]}"
    async with zkpy.client.connect(hosts) as admin:
        await admin.create(root)
    faults = Faults.all(args.scale)
    faults.blackhole = args.blackhole
    proxy = FaultProxy((host, port), faults, seed=seed)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        report = await client_properties(hosts, proxy, root, seed=seed, ops=args.ops)
        if args.recipe_rounds:
            report.merge(await recipe_properties(hosts, proxy, root, seed=seed, rounds=args.recipe_rounds))
        nursery.cancel_scope.cancel()
    async with zkpy.client.connect(hosts) as admin:
        await admin.delete(root, recursive=True)
    return report, dict(proxy.counts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", choices=("zkpy", "apache"), default="zkpy")
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--recipe-rounds", type=int, default=200)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--blackhole", type=float, default=0.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    total = Report(seed=-1)
    faults_seen: dict[str, int] = {}
    started = time.monotonic()
    with running_server(args.server, {"tickTime": "250", "4lw.commands.whitelist": "*"}) as server:
        for seed in seeds(args.seeds):
            report, counts = trio.run(one_seed, server.hosts, server.host, server.port, seed, args)
            total.merge(report)
            for k, v in counts.items():
                faults_seen[k] = faults_seen.get(k, 0) + v
            if not args.json:
                print(f"seed {seed}: {report.ops} ops, {len(report.failures)} failures", flush=True)
    result = {
        "ops": total.ops,
        "seconds": round(time.monotonic() - started, 1),
        "watches_fired_once": total.watches_ok,
        "expired": total.expired,
        "faults": faults_seen,
        "outcomes": dict(total.outcomes),
        "failures": total.failures,
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 1 if total.failures else 0


if __name__ == "__main__":
    sys.exit(main())
