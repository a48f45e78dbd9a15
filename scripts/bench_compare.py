"""zkpy and Apache ZooKeeper side by side under the same wire-level load (scripts/bench.py).

    python scripts/bench_compare.py [--ops get,set,create] [--rounds 2] [--duration 10]

Starts each server fresh on loopback (zkpy.testing.procs; fsync on for both), runs bench.py with
8 connections x 64 outstanding requests and 100-byte values for each op, alternating servers
round by round so that background load hits both alike, and prints one table of ops/s and p99.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zkpy.testing.procs import running_server

BENCH = Path(__file__).with_name("bench.py")


def bench(hosts: str, op: str, duration: float, pid: int) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, str(BENCH), "--hosts", hosts, "--connections", "8", "--window", "64",
         "--duration", str(duration), "--op", op, "--size", "100", "--server-pid", str(pid), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(out[out.index("{") :])
    return summary["ops"][op] | {"server_cores": summary.get("server_cores")}


def server_pid(server) -> int:  # type: ignore[no-untyped-def]
    """The process doing the work (the JVM under Apache's wrapper script)."""
    pid = server.proc.pid
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return int(children[0]) if server.kind == "apache" and children else pid


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", default="get,set,create")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    ops = args.ops.split(",")
    rows: dict[tuple[str, str], list[dict]] = {}  # type: ignore[type-arg]
    for _ in range(args.rounds):
        for kind in ("zkpy", "apache"):
            with running_server(kind) as server:
                pid = server_pid(server)
                for op in ops:
                    result = bench(server.hosts, op, args.duration, pid)
                    rows.setdefault((op, kind), []).append(result)
                    print(f"{kind:6} {op:6} {result['ops_per_s']:10.0f} ops/s  p99 {result['p99_ms']:.1f} ms",
                          file=sys.stderr, flush=True)  # fmt: skip
    print("\n| op | zkpy ops/s | Apache ops/s | zkpy p99 ms | Apache p99 ms |\n|---|---:|---:|---:|---:|")
    for op in ops:
        z, a = rows[(op, "zkpy")], rows[(op, "apache")]
        fmt = lambda rs, k: " / ".join(f"{r[k]:,.0f}" if k == "ops_per_s" else f"{r[k]:.1f}" for r in rs)  # noqa: E731
        print(
            f"| {op} | {fmt(z, 'ops_per_s')} | {fmt(a, 'ops_per_s')} | {fmt(z, 'p99_ms')} | {fmt(a, 'p99_ms')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
