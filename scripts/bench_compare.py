"""zkpy and Apache ZooKeeper side by side under the same wire-level load (scripts/bench.py).

    python scripts/bench_compare.py [--ops get,set,create] [--rounds 2] [--duration 10]
    python scripts/bench_compare.py --ensemble 3 [--logs DIR] ...

Starts each server fresh on loopback (zkpy.testing.procs; fsync on for both), runs bench.py with
8 connections x 64 outstanding requests and 100-byte values for each op, alternating servers
round by round so that background load hits both alike, and prints one table of ops/s and p99
(each round's figure, and zkpy/Apache over the rounds' sums).

With --ensemble N both are N-server ensembles on this machine (tickTime 500, initLimit 10,
syncLimit 5, as scripts/apache-zk --ensemble): the connections go round-robin over all
members' client ports, and each member's CPU use is reported by role (L leader, F follower).
CPU per answered request (microseconds, servers summed, and the load generator's) is reported too:
on a shared machine it holds still where ops/s does not. `--servers zkpy` runs zkpy alone.
Each server's log is copied to --logs (a fresh temporary directory by default) when it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zkpy.testing.procs import Ensemble, ServerProcess, running_ensemble, running_server

BENCH = Path(__file__).with_name("bench.py")
ENSEMBLE_SETTINGS = {"tickTime": "500", "initLimit": "10", "syncLimit": "5"}  # as apache-zk --ensemble
KINDS = ("zkpy", "apache")


def bench(hosts: str, op: str, duration: float, pids: list[int]) -> dict[str, Any]:
    """bench.py's figures for `op`, plus its failures (a broken run gives 0 ops/s and says why)."""
    cmd = [sys.executable, str(BENCH), "--hosts", hosts, "--connections", "8", "--window", "64",
           "--duration", str(duration), "--op", op, "--size", "100",
           "--server-pid", ",".join(map(str, pids)), "--json"]  # fmt: skip
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * duration + 180)
    except subprocess.TimeoutExpired as exc:
        return broken(f"bench.py timed out after {exc.timeout:.0f}s")
    try:
        summary = json.loads(run.stdout[run.stdout.index("{") :])
    except ValueError:
        return broken(f"bench.py exited {run.returncode}: {(run.stderr or run.stdout).strip()[-2000:]}")
    return summary["ops"][op] | {
        "server_cores": summary.get("server_cpu_cores_each", []),
        "machine_busy_cores": summary.get("machine_busy_cores"),
        "client_cpu": summary.get("client_cpu_per_process", []),
        "server_us": summary.get("server_cpu_us_per_op", 0.0),
        "server_us_each": summary.get("server_cpu_us_per_op_each", []),
        "client_us": summary.get("client_cpu_us_per_op", 0.0),
        "failures": summary["failures"],
        "errors_whole_run": summary["errors_whole_run"],
    }


def broken(why: str) -> dict[str, Any]:
    return {"ops_per_s": 0.0, "p99_ms": 0.0, "errors": 0, "server_cores": [], "failures": [why],
            "errors_whole_run": {}, "client_cpu": [], "machine_busy_cores": None, "server_us": 0.0,
            "server_us_each": [], "client_us": 0.0}  # fmt: skip


def server_pid(server: ServerProcess) -> int:
    """The process doing the work (the JVM under Apache's wrapper script, should it not exec)."""
    assert server.proc is not None
    pid = server.proc.pid
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return int(children[0]) if server.kind == "apache" and children else pid


@contextlib.contextmanager
def servers_of(kind: str, n: int, logs: Path, tag: str) -> Iterator[list[ServerProcess]]:
    """One fresh server (n <= 1) or an n-server ensemble; each log is copied to `logs` at the end."""
    started: contextlib.AbstractContextManager[ServerProcess | Ensemble] = (
        running_server(kind) if n <= 1 else running_ensemble(kind, n, ENSEMBLE_SETTINGS)
    )
    with started as s:
        servers = s.servers if isinstance(s, Ensemble) else [s]
        try:
            yield servers
        finally:
            for i, server in enumerate(servers, 1):
                with contextlib.suppress(OSError):
                    shutil.copyfile(server.log_path, logs / f"{tag}-s{i}.log")


def roles(servers: list[ServerProcess]) -> list[str]:
    """L(eader), F(ollower), O(bserver), S(tandalone) or ? (not serving / gone) per server."""
    out = []
    for server in servers:
        if server.proc is None or server.proc.poll() is not None:
            out.append("x")  # exited
            continue
        mode = server.mode()
        out.append({"leader": "L", "follower": "F", "observer": "O", "standalone": "S"}.get(mode or "", "?"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", default="get,set,create")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--ensemble", type=int, default=1, metavar="N", help="N-server ensembles (default 1)")
    parser.add_argument("--logs", type=Path, default=None, help="copy server logs here (default: a temp dir)")
    parser.add_argument("--servers", default=",".join(KINDS), help="zkpy,apache (default) or one of them")
    args = parser.parse_args()
    ops = args.ops.split(",")
    kinds = [k for k in KINDS if k in args.servers.split(",")]
    logs = args.logs or Path(tempfile.mkdtemp(prefix="bench-compare-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    trouble: list[str] = []
    for rnd in range(1, args.rounds + 1):
        for kind in kinds:
            with servers_of(kind, args.ensemble, logs, f"{kind}-round{rnd}") as servers:
                pids = [server_pid(s) for s in servers]
                for op in ops:
                    before = roles(servers)
                    result = bench(",".join(s.hosts for s in servers), op, args.duration, pids)
                    after = roles(servers)
                    result["roles"] = before
                    rows.setdefault((op, kind), []).append(result)
                    cpu = " ".join(
                        f"{r}{c:.2f}" for r, c in zip(before, result["server_cores"], strict=False)
                    )
                    line = (f"round {rnd} {kind:6} {op:6} {result['ops_per_s']:8.0f} ops/s  "
                            f"p99 {result['p99_ms']:7.1f} ms  server cores {cpu}  "
                            f"machine {result['machine_busy_cores']}  "
                            f"cpu/op server {result['server_us']:.0f} us client {result['client_us']:.0f} us")  # fmt: skip
                    problems = list(result["failures"])
                    if result["errors_whole_run"]:
                        problems.append(f"error replies {result['errors_whole_run']}")
                    if after != before:
                        problems.append(
                            f"roles changed during the run: {''.join(before)} -> {''.join(after)}"
                        )
                    for p in problems:
                        trouble.append(f"round {rnd} {kind} {op}: {p}")
                        line += f"\n    PROBLEM: {p}"
                    print(line, file=sys.stderr, flush=True)
    label = f"{args.ensemble}-server ensembles" if args.ensemble > 1 else "standalone"
    print(f"\n{label}, {args.rounds} round(s) of {args.duration:g}s per op (each round's figure, a / b)\n")
    print("| op | zkpy ops/s | Apache ops/s | zkpy/Apache | zkpy p99 ms | Apache p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for op in ops:
        z, a = rows.get((op, "zkpy"), []), rows.get((op, "apache"), [])
        ratio = sum(r["ops_per_s"] for r in z) / max(1.0, sum(r["ops_per_s"] for r in a))
        print(
            f"| {op} | {fmt(z, 'ops_per_s')} | {fmt(a, 'ops_per_s')} | {f'{ratio:.2f}' if z and a else '-'} "
            f"| {fmt(z, 'p99_ms')} | {fmt(a, 'p99_ms')} |"
        )
    print("\nserver CPU, cores per server by role (L leader, F follower, S standalone), a / b\n")
    print("| op | zkpy | Apache |\n|---|---|---|")
    for op in ops:
        cells = [
            " / ".join(
                " ".join(f"{role}{c:.2f}" for role, c in zip(r["roles"], r["server_cores"], strict=False))
                or "-"
                for r in rows.get((op, kind), [])
            )
            for kind in KINDS
        ]
        print(f"| {op} | {cells[0]} | {cells[1]} |")
    print(
        "\nCPU per answered request, microseconds: servers summed (each by role) and load generator, a / b\n"
    )
    print("| op | zkpy servers | zkpy client | Apache servers | Apache client |\n|---|---|---|---|---|")
    for op in ops:
        cells = []
        for kind in KINDS:
            rs = rows.get((op, kind), [])
            cells.append(
                " / ".join(
                    f"{r['server_us']:.0f} ("
                    + " ".join(
                        f"{role}{c:.0f}" for role, c in zip(r["roles"], r["server_us_each"], strict=False)
                    )
                    + ")"
                    for r in rs
                )
                or "-"
            )
            cells.append(" / ".join(f"{r['client_us']:.0f}" for r in rs) or "-")
        print(f"| {op} | {' | '.join(cells)} |")
    print(f"\nserver logs: {logs}")
    for t in trouble:
        print(f"PROBLEM: {t}")
    return 1 if trouble else 0


def fmt(rs: list[dict[str, Any]], key: str) -> str:
    return " / ".join(f"{r[key]:,.0f}" if key == "ops_per_s" else f"{r[key]:.1f}" for r in rs)


if __name__ == "__main__":
    raise SystemExit(main())
