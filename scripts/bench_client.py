"""Benchmark zkpy.client beside kazoo on the same server.

    python scripts/bench_client.py                     # starts Apache ZooKeeper 3.8 on loopback
    python scripts/bench_client.py --server zkpy       # starts the zkpy server
    python scripts/bench_client.py --hosts 127.0.0.1:2181

Measures synchronous get and set round-trips per second (one request at a time) and pipelined
gets per second (many requests in flight on one session), for both clients.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Iterator

import trio

import zkpy.client

PIPELINE_DEPTH = 1000  # requests in flight (kazoo does best here on this machine)


def bench_kazoo(hosts: str, n: int, m: int) -> dict[str, float]:
    from kazoo.client import KazooClient

    zk = KazooClient(hosts)
    zk.start()
    try:
        zk.ensure_path("/bench")
        zk.set("/bench", b"x" * 100)
        out = {}
        t = time.perf_counter()
        for _ in range(n):
            zk.get("/bench")
        out["sync get/s"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            zk.set("/bench", b"y" * 100)
        out["sync set/s"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        done = 0
        while done < m:
            batch = [zk.get_async("/bench") for _ in range(min(PIPELINE_DEPTH, m - done))]
            for r in batch:
                r.get()
            done += len(batch)
        out["pipelined get/s"] = m / (time.perf_counter() - t)
        return out
    finally:
        zk.stop()
        zk.close()


async def bench_zkpy_async(hosts: str, n: int, m: int) -> dict[str, float]:
    async with zkpy.client.connect(hosts) as zk:
        await zk.ensure_path("/bench")
        await zk.set("/bench", b"x" * 100)
        out = {}
        t = time.perf_counter()
        for _ in range(n):
            await zk.get("/bench")
        out["sync get/s"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            await zk.set("/bench", b"y" * 100)
        out["sync set/s"] = n / (time.perf_counter() - t)

        async def worker(count: int) -> None:
            for _ in range(count):
                await zk.get("/bench")

        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(PIPELINE_DEPTH):
                nursery.start_soon(worker, m // PIPELINE_DEPTH + (1 if i < m % PIPELINE_DEPTH else 0))
        out["pipelined get/s"] = m / (time.perf_counter() - t)
        return out


@contextlib.contextmanager
def server(kind: str, hosts: str | None) -> Iterator[str]:
    if hosts:
        yield hosts
        return
    from zkpy.testing.procs import running_server

    with running_server(kind) as s:
        yield s.hosts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", choices=["apache", "zkpy"], default="apache")
    parser.add_argument("--hosts", help="use a running server instead of starting one")
    parser.add_argument("-n", type=int, default=5000, help="synchronous round-trips per measurement")
    parser.add_argument("-m", type=int, default=20000, help="pipelined gets")
    parser.add_argument("--only", choices=["zkpy", "kazoo"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per client; the median is reported")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    samples: dict[str, list[dict[str, float]]] = {"zkpy.client": [], "kazoo": []}
    with server(args.server, args.hosts) as hosts:
        for _ in range(args.repeat):  # alternate, so background load hits both clients alike
            if args.only != "kazoo":
                samples["zkpy.client"].append(trio.run(bench_zkpy_async, hosts, args.n, args.m))
            if args.only != "zkpy":
                samples["kazoo"].append(bench_kazoo(hosts, args.n, args.m))
    print(f"server: {args.hosts or args.server}; median of {args.repeat} runs (min..max)")
    print(f"{'client':14}{'sync get/s':>22}{'sync set/s':>22}{'pipelined get/s':>24}")
    for name, runs in samples.items():
        if not runs:
            continue
        cells = []
        for key, width in (("sync get/s", 22), ("sync set/s", 22), ("pipelined get/s", 24)):
            values = sorted(r[key] for r in runs)
            cells.append(f"{values[len(values) // 2]:.0f} ({values[0]:.0f}..{values[-1]:.0f})".rjust(width))
        print(f"{name:14}{''.join(cells)}")


if __name__ == "__main__":
    main()
