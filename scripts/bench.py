#!/usr/bin/env python3
"""Load generator for any ZooKeeper-protocol server (zkpy or Apache), speaking jute directly.

    python scripts/bench.py --hosts 127.0.0.1:2181 --connections 8 --window 64 --duration 10 \\
        --op get|set|create|mixed --size 100 [--processes P] [--json] [--server-pid PID[,PID...]]

With several --hosts (an ensemble) the connections go round-robin over them (connection i, over all
processes, to host i mod the number of hosts).

It bypasses client libraries so that it measures the server: each connection is one session that
keeps `--window` requests in flight (pipelined; ZooKeeper answers in order per connection), request
bodies are encoded once with zkpy.jute and replies are only header-parsed. One line per op type:
ops/s, p50/p99/max latency in ms, and error replies by code.

The client's own CPU use is reported beside the results: when one process is near 100% of a core,
the generator (not the server) is the limit, and `--processes P` splits the same connections over
P processes. Setup makes /bench/k/<i> (the keys get/set use) and /bench/c/<shard>/ (where creates
go); cleanup deletes /bench recursively, also after Ctrl-C and before setup (leftovers).
"""

from __future__ import annotations

import argparse
import array
import collections
import itertools
import json
import multiprocessing
import os
import random
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from zkpy.jute.codec import JuteError, decode, encode, write_ustring
from zkpy.jute.framing import FrameBuffer, frame
from zkpy.jute.ops import (
    CreateRequest,
    CreateResponse,
    DeleteRequest,
    GetChildrenResponse,
    GetDataResponse,
    OpCode,
    PathWatchRequest,
    SetDataRequest,
    StatResponse,
)
from zkpy.jute.records import (
    OPEN_ACL_UNSAFE,
    REPLY_HEADER_STRUCT,
    ConnectRequest,
    ConnectResponse,
)

ROOT, KEYS_DIR, CREATE_DIR = "/bench", "/bench/k", "/bench/c"
OK, NO_NODE, NODE_EXISTS, NOT_EMPTY = 0, -101, -110, -111
REQUEST_PREFIX = struct.Struct(">iii")  # frame length, xid, opcode
REPLY_HEADER_SIZE = REPLY_HEADER_STRUCT.size
RECV_SIZE = 1 << 18
MAX_FRAME = 1 << 28  # we trust the server; getChildren of a big shard may pass jute.maxbuffer
DEFAULT_MIX = "get:80,set:15,create:5"
SETUP_WINDOW = 256
DRAIN_TIMEOUT = 30.0

# (label, opcode, body); label names the op in the stats.
Request = tuple[str, int, bytes]
OnReply = Callable[[str, int, float, float, bytes], None]


class BenchError(Exception):
    """The server broke the session: refused handshake, closed connection, out-of-order reply."""


# ---------------------------------------------------------------- one session, pipelined


class Session:
    """One ZooKeeper session on one TCP connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames = FrameBuffer(MAX_FRAME)
        self.xid = 0
        self.session_id = 0

    @classmethod
    async def open(cls, host: str, port: int, timeout_ms: int = 30_000) -> Session:
        session = cls(await trio.open_tcp_stream(host, port))
        await session.stream.send_all(frame(encode(ConnectRequest(0, 0, timeout_ms, 0, bytes(16), False))))
        resp = decode(ConnectResponse, await session._read_frame())
        if resp.timeout <= 0:
            raise BenchError(f"{host}:{port} refused the session")
        session.session_id = resp.session_id
        return session

    async def _read_frame(self) -> bytes:
        while (body := self.frames.next_frame()) is None:
            data = await self.stream.receive_some(RECV_SIZE)
            if not data:
                raise BenchError("server closed the connection")
            self.frames.feed(data)
        return body

    async def pump(self, window: int, next_request: Callable[[], Request | None], on_reply: OnReply) -> None:
        """Keep up to `window` requests in flight until `next_request` returns None and every reply is in.

        Replies come back in request order, so a deque matches them; each batch of replies read
        in one receive is answered with one send of as many new requests.
        """
        pending: collections.deque[tuple[int, float, str]] = collections.deque()
        stream, frames, now = self.stream, self.frames, time.perf_counter
        exhausted = False
        while True:
            out = bytearray()
            if not exhausted:
                t0 = now()
                while len(pending) < window:
                    req = next_request()
                    if req is None:
                        exhausted = True
                        break
                    label, opcode, body = req
                    self.xid = xid = self.xid + 1
                    out += REQUEST_PREFIX.pack(8 + len(body), xid, opcode)
                    out += body
                    pending.append((xid, t0, label))
            if out:
                await stream.send_all(out)
            if not pending:
                return
            data = await stream.receive_some(RECV_SIZE)
            if not data:
                raise BenchError("server closed the connection")
            t = now()
            frames.feed(data)
            for body in frames.frames():
                xid, _zxid, err = REPLY_HEADER_STRUCT.unpack_from(body)
                if xid < 0:  # -1 watch event, -2 ping: not ours
                    continue
                want, t0, label = pending.popleft()
                if xid != want:
                    raise BenchError(f"reply xid {xid}, expected {want}: replies out of order")
                on_reply(label, err, t0, t, body)

    async def call_many(self, requests: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """(err, reply body) for each (opcode, request body), pipelined."""
        it = iter(requests)
        results: list[tuple[int, bytes]] = []

        def next_request() -> Request | None:
            r = next(it, None)
            return None if r is None else ("", r[0], r[1])

        def on_reply(_label: str, err: int, _t0: float, _t: float, body: bytes) -> None:
            results.append((err, body[REPLY_HEADER_SIZE:]))

        await self.pump(SETUP_WINDOW, next_request, on_reply)
        return results

    async def close(self) -> None:
        """closeSession, so the server drops the session now rather than at its timeout."""
        try:
            with trio.move_on_after(5):
                await self.call_many([(OpCode.CLOSE_SESSION, b"")])
        except (BenchError, trio.BrokenResourceError, OSError):
            pass
        finally:
            await self.stream.aclose()


async def open_sessions(hosts: list[tuple[str, int]], n: int, first: int = 0) -> list[Session]:
    """`n` sessions spread round-robin over `hosts`: connection `first + i` goes to host (first + i) mod len."""
    sessions: list[Session | None] = [None] * n

    async def one(i: int) -> None:
        sessions[i] = await Session.open(*hosts[(first + i) % len(hosts)])

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return [s for s in sessions if s is not None]


# ---------------------------------------------------------------- setup and cleanup


def create_body(path: str, data: bytes) -> bytes:
    return encode(CreateRequest(path, data, OPEN_ACL_UNSAFE, 0))


async def create_all(session: Session, paths: list[str], data: bytes) -> None:
    """Create `paths` (a node that already exists gets `data` set), failing on any other error."""
    results = await session.call_many([(OpCode.CREATE, create_body(p, data)) for p in paths])
    existing = [p for p, (err, _) in zip(paths, results, strict=True) if err == NODE_EXISTS]
    bad = [(p, err) for p, (err, _) in zip(paths, results, strict=True) if err not in (OK, NODE_EXISTS)]
    if bad:
        raise BenchError(f"setup: create {bad[0][0]} failed with error {bad[0][1]}")
    if existing:
        await session.call_many([(OpCode.SET_DATA, encode(SetDataRequest(p, data, -1))) for p in existing])


async def delete_tree(sessions: list[Session], root: str, depth: int = 3) -> int:
    """Delete `root` and the `depth` levels below it (/bench/c/<shard>/<node> is 3), level by level.

    The deepest level is not listed: asking each of a few hundred thousand created nodes for its
    children would take longer than the work itself. Returns how many znodes were deleted.
    """
    levels = [[root]]
    while len(levels) <= depth and levels[-1]:
        replies = await sessions[0].call_many(
            [(OpCode.GET_CHILDREN, encode(PathWatchRequest(p, False))) for p in levels[-1]]
        )
        below: list[str] = []
        for path, (err, body) in zip(levels[-1], replies, strict=True):
            if err == OK:
                below += [f"{path.rstrip('/')}/{c}" for c in decode(GetChildrenResponse, body).children or []]
        levels.append(below)
    return sum([await delete_paths(sessions, level) for level in reversed(levels)])


async def delete_paths(sessions: list[Session], paths: list[str]) -> int:
    """Delete `paths` (leaves, in any order) spread over `sessions`; returns how many existed."""
    counts = [0] * len(sessions)

    async def delete_part(i: int) -> None:
        part = paths[i :: len(sessions)]
        results = await sessions[i].call_many([(OpCode.DELETE, encode(DeleteRequest(p, -1))) for p in part])
        counts[i] = sum(1 for err, _ in results if err == OK)
        failed = [(p, err) for p, (err, _) in zip(part, results, strict=True) if err not in (OK, NO_NODE)]
        if failed:
            print(f"cleanup: {len(failed)} deletes failed, e.g. {failed[0]}", file=sys.stderr)

    async with trio.open_nursery() as nursery:
        for i in range(len(sessions)):
            nursery.start_soon(delete_part, i)
    return sum(counts)


def shard_name(process: int, conn: int) -> str:
    return f"p{process}c{conn}"


# ---------------------------------------------------------------- workload


def parse_mix(op: str, mix: str) -> list[str]:
    """A shuffled cycle of op labels with the requested proportions."""
    if op != "mixed":
        return [op]
    weights = {}
    for part in mix.split(","):
        name, _, weight = part.partition(":")
        if name not in ("get", "set", "create"):
            raise SystemExit(f"--mix: unknown op {name!r}")
        weights[name] = int(weight)
    labels = [name for name, w in weights.items() for _ in range(w)]
    random.Random(0).shuffle(labels)
    return labels


def value_of(size: int) -> bytes:
    """The same pseudo-random value in setup and in every worker."""
    return random.Random(1).randbytes(size)


class Workload:
    """Pre-encoded request bodies: the per-request cost is a lookup plus the 12-byte prefix."""

    def __init__(self, size: int, keys: int) -> None:
        value = value_of(size)
        paths = [f"{KEYS_DIR}/{k}" for k in range(keys)]
        self.get_bodies = [encode(PathWatchRequest(p, False)) for p in paths]
        self.set_bodies = [encode(SetDataRequest(p, value, -1)) for p in paths]
        self.create_tail = create_body("", value)[4:]  # everything after the (empty) path

    def source(
        self, labels: list[str], shard: str, seed: int, stop_at: float
    ) -> Callable[[], Request | None]:
        rng = random.Random(seed)

        def shuffled_keys() -> Iterator[int]:
            order = list(range(len(self.get_bodies)))
            rng.shuffle(order)
            return itertools.cycle(order)

        # get and set each walk every key (one shared walk would tie each op to a fixed subset of keys).
        get_keys, set_keys = shuffled_keys(), shuffled_keys()
        ops: Iterator[str] = itertools.islice(itertools.cycle(labels), rng.randrange(len(labels)), None)
        seq = itertools.count()
        prefix = f"{CREATE_DIR}/{shard}/n"
        get_bodies, set_bodies, tail, now = (
            self.get_bodies,
            self.set_bodies,
            self.create_tail,
            time.perf_counter,
        )

        def next_request() -> Request | None:
            if now() >= stop_at:
                return None
            label = next(ops)
            if label == "get":
                return label, OpCode.GET_DATA, get_bodies[next(get_keys)]
            if label == "set":
                return label, OpCode.SET_DATA, set_bodies[next(set_keys)]
            out = bytearray()
            write_ustring(out, f"{prefix}{next(seq)}")
            out += tail
            return label, OpCode.CREATE, bytes(out)

        return next_request


# ---------------------------------------------------------------- one worker process


@dataclass
class WorkerConfig:
    hosts: list[tuple[str, int]]
    process: int
    connections: int
    window: int
    labels: list[str]
    size: int
    keys: int
    start_at: float  # wall clock, shared by all workers
    warmup: float
    duration: float
    server_pids: list[int]
    verify: bool = False
    first_connection: int = 0  # this process's connections are first_connection.. over all processes


def check_reply(label: str, body: bytes, size: int) -> str | None:
    """Decode a successful reply in full (for --verify): is it the record the op promises?"""
    try:
        if label == "create":
            path = decode(CreateResponse, body, REPLY_HEADER_SIZE).path
            return None if path and path.startswith(CREATE_DIR) else f"path {path!r}"
        stat = decode(GetDataResponse if label == "get" else StatResponse, body, REPLY_HEADER_SIZE).stat
        if label == "get" and decode(GetDataResponse, body, REPLY_HEADER_SIZE).data != value_of(size):
            return "data differs from what setup wrote"
        return None if stat.dataLength == size else f"stat.dataLength {stat.dataLength}"
    except JuteError as exc:
        return f"undecodable: {exc}"


def cpu_of_pid(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


async def run_worker(cfg: WorkerConfig) -> dict[str, Any]:
    sessions = await open_sessions(cfg.hosts, cfg.connections, cfg.first_connection)
    workload = Workload(cfg.size, cfg.keys)
    lat: dict[str, array.array[float]] = {label: array.array("d") for label in set(cfg.labels)}
    errors: dict[str, collections.Counter[int]] = {label: collections.Counter() for label in lat}
    total_errors: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    samples: dict[str, float] = {}

    now = time.perf_counter
    t_start = now() + (cfg.start_at - time.time())
    t_begin = t_start + cfg.warmup
    t_end = t_begin + cfg.duration

    def on_reply(label: str, err: int, t0: float, t: float, body: bytes) -> None:
        if err:
            total_errors[err] += 1
        elif cfg.verify and (problem := check_reply(label, body, cfg.size)):
            failures.append(f"process {cfg.process}: bad {label} reply: {problem}")
        if t_begin <= t <= t_end:
            if err:
                errors[label][err] += 1
            else:
                lat[label].append(t - t0)

    async def sample(key: str, at: float) -> None:
        await trio.sleep(max(0.0, at - now()))
        samples[f"cpu_{key}"] = time.process_time()
        samples[f"wall_{key}"] = now()
        if cfg.process == 0:
            samples[f"busy_{key}"], samples[f"total_{key}"] = machine_busy()
            for j, pid in enumerate(cfg.server_pids):
                samples[f"server{j}_{key}"] = cpu_of_pid(pid)

    async def drive(i: int, session: Session) -> None:
        source = workload.source(cfg.labels, shard_name(cfg.process, i), cfg.process * 1000 + i, t_end)
        try:
            await session.pump(cfg.window, source, on_reply)
        except (BenchError, trio.BrokenResourceError, OSError) as exc:
            failures.append(f"connection {cfg.process}.{i}: {exc!r}")

    await trio.sleep(max(0.0, t_start - now()))
    with trio.move_on_after(cfg.warmup + cfg.duration + DRAIN_TIMEOUT) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample, "begin", t_begin)
            nursery.start_soon(sample, "end", t_end)
            for i, session in enumerate(sessions):
                nursery.start_soon(drive, i, session)
    if scope.cancelled_caught:
        failures.append(f"process {cfg.process}: replies still missing {DRAIN_TIMEOUT}s after the run")
    async with trio.open_nursery() as nursery:
        for session in sessions:
            nursery.start_soon(session.close)
    return {
        "latencies": {label: a.tobytes() for label, a in lat.items()},
        "errors": {label: dict(c) for label, c in errors.items()},
        "total_errors": dict(total_errors),
        "failures": failures,
        "samples": samples,
    }


def worker_main(cfg: WorkerConfig) -> dict[str, Any]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    return trio.run(run_worker, cfg)


# ---------------------------------------------------------------- parent: setup, run, cleanup, report


def parse_hosts(text: str) -> list[tuple[str, int]]:
    out = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        out.append((host or "127.0.0.1", int(port)))
    return out


async def setup(args: argparse.Namespace, hosts: list[tuple[str, int]]) -> None:
    sessions = await open_sessions(hosts, 4)
    try:
        await delete_tree(sessions, ROOT)  # leftovers of an interrupted run
        s = sessions[0]
        await create_all(s, [ROOT, KEYS_DIR, CREATE_DIR], b"")
        value = value_of(args.size)
        await create_all(s, [f"{KEYS_DIR}/{k}" for k in range(args.keys)], value)
        per_process = split(args.connections, args.processes)
        shards = [f"{CREATE_DIR}/{shard_name(p, i)}" for p, n in enumerate(per_process) for i in range(n)]
        await create_all(s, shards, b"")
    finally:
        for session in sessions:
            await session.close()


async def cleanup(hosts: list[tuple[str, int]]) -> int:
    sessions = await open_sessions(hosts, 8)
    try:
        return await delete_tree(sessions, ROOT)
    finally:
        for session in sessions:
            await session.close()


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else 0.0


def summarize(args: argparse.Namespace, labels: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for label in sorted(set(labels), key=["get", "set", "create"].index):
        values: list[float] = []
        errs: collections.Counter[int] = collections.Counter()
        for r in results:
            a = array.array("d")
            a.frombytes(r["latencies"][label])
            values += a
            errs.update({int(k): v for k, v in r["errors"][label].items()})
        values.sort()
        ops[label] = {
            "ops_per_s": round(len(values) / args.duration, 1),
            "p50_ms": round(percentile(values, 0.50) * 1e3, 3),
            "p99_ms": round(percentile(values, 0.99) * 1e3, 3),
            "max_ms": round((values[-1] if values else 0.0) * 1e3, 3),
            "ok": len(values),
            "errors": sum(errs.values()),
            "errors_by_code": {str(k): v for k, v in sorted(errs.items())},
        }
    client_cpu = [
        (r["samples"]["cpu_end"] - r["samples"]["cpu_begin"])
        / (r["samples"]["wall_end"] - r["samples"]["wall_begin"])
        for r in results
        if "cpu_end" in r["samples"]
    ]
    s0 = results[0]["samples"]
    out: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "ops": ops,
        "client_cpu_per_process": [round(c, 3) for c in client_cpu],
        "failures": [f for r in results for f in r["failures"]],
        # error replies over the whole run, warm-up and drain included (the per-op counts are the measured part)
        "errors_whole_run": dict(
            sum((collections.Counter(r["total_errors"]) for r in results), collections.Counter())
        ),
    }
    if "busy_end" in s0:
        cores = (s0["total_end"] - s0["total_begin"]) and (s0["busy_end"] - s0["busy_begin"]) / (
            s0["total_end"] - s0["total_begin"]
        ) * (os.cpu_count() or 1)
        out["machine_busy_cores"] = round(cores, 2)
        out["machine_cores"] = os.cpu_count()
    each = [
        (s0[f"server{j}_end"] - s0[f"server{j}_begin"]) / (s0["wall_end"] - s0["wall_begin"])
        for j in range(len(args.server_pid))
        if f"server{j}_end" in s0
    ]
    if each:
        out["server_cpu_cores"] = round(sum(each), 2)  # all --server-pid processes together
        out["server_cpu_cores_each"] = [round(c, 2) for c in each]
    # CPU per answered request, in microseconds: robust on a shared machine where ops/s is not (other
    # work slows the run but costs these processes nothing). Over the measured window, as ops/s.
    answered = sum(o["ok"] for o in ops.values())
    if answered:
        server_cpu = [s0[f"server{j}_end"] - s0[f"server{j}_begin"] for j in range(len(each))]
        out["server_cpu_us_per_op_each"] = [round(c / answered * 1e6, 1) for c in server_cpu]
        out["server_cpu_us_per_op"] = round(sum(server_cpu) / answered * 1e6, 1)
        out["client_cpu_us_per_op"] = round(
            sum(
                r["samples"]["cpu_end"] - r["samples"]["cpu_begin"]
                for r in results
                if "cpu_end" in r["samples"]
            )
            / answered
            * 1e6,
            1,
        )
    return out


def print_report(summary: dict[str, Any]) -> None:
    c = summary["config"]
    print(
        f"bench {c['op']}: {c['hosts']} connections={c['connections']} window={c['window']} "
        f"size={c['size']} duration={c['duration']}s processes={c['processes']}"
    )
    print(f"  {'op':<7}{'ops/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for label, o in summary["ops"].items():
        print(
            f"  {label:<7}{o['ops_per_s']:>11.1f}{o['p50_ms']:>9.2f}{o['p99_ms']:>9.2f}{o['max_ms']:>9.2f}"
            f"{o['errors']:>8}" + (f"  {o['errors_by_code']}" if o["errors"] else "")
        )
    cpu = ", ".join(f"{x * 100:.0f}%" for x in summary["client_cpu_per_process"])
    line = f"  client cpu per process: {cpu}"
    if "machine_busy_cores" in summary:
        line += f"; machine busy: {summary['machine_busy_cores']:.2f}/{summary['machine_cores']} cores"
    if "server_cpu_cores" in summary:
        line += f"; server: {summary['server_cpu_cores']:.2f} cores"
        if len(summary["server_cpu_cores_each"]) > 1:
            line += " (" + " + ".join(f"{c:.2f}" for c in summary["server_cpu_cores_each"]) + ")"
    print(line)
    if "client_cpu_us_per_op" in summary:
        line = f"  cpu per answered request: client {summary['client_cpu_us_per_op']:.1f} us"
        if summary.get("server_cpu_us_per_op_each"):
            each = " + ".join(f"{c:.1f}" for c in summary["server_cpu_us_per_op_each"])
            line += f"; server {summary['server_cpu_us_per_op']:.1f} us ({each})"
        print(line)
    if any(x > 0.9 for x in summary["client_cpu_per_process"]):
        print(
            "  note: a load-generator process is near 100% CPU; try --processes 2 to see if it is the limit"
        )
    for failure in summary["failures"]:
        print(f"  FAILURE: {failure}")


def run_workers(
    args: argparse.Namespace, hosts: list[tuple[str, int]], labels: list[str]
) -> list[dict[str, Any]]:
    start_at = time.time() + 1.0 + 0.2 * args.processes  # time to connect before the clock starts
    per_process = split(args.connections, args.processes)
    configs = [
        WorkerConfig(
            hosts,
            p,
            n,
            args.window,
            labels,
            args.size,
            args.keys,
            start_at,
            args.warmup,
            args.duration,
            args.server_pid,
            args.verify,
            sum(per_process[:p]),
        )
        for p, n in enumerate(per_process)
    ]
    if args.processes == 1:
        return [trio.run(run_worker, configs[0])]
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        try:
            return pool.map(worker_main, configs)
        except KeyboardInterrupt:
            pool.terminate()
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", default="127.0.0.1:2181", help="host:port[,host:port...]")
    parser.add_argument("--connections", type=int, default=8, help="sessions in total (over all processes)")
    parser.add_argument("--window", type=int, default=64, help="requests in flight per connection")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--op", choices=["get", "set", "create", "mixed"], default="get")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"for --op mixed (default {DEFAULT_MIX})")
    parser.add_argument("--size", type=int, default=100, help="bytes per value")
    parser.add_argument("--keys", type=int, default=1000, help="znodes that get/set spread over")
    parser.add_argument("--processes", type=int, default=1, help="worker processes sharing the connections")
    parser.add_argument(
        "--server-pid",
        type=lambda text: [int(pid) for pid in text.split(",") if pid],
        default=[],
        help="PID[,PID...]: report these processes' CPU use too (each, and their sum)",
    )
    parser.add_argument("--verify", action="store_true", help="decode every reply in full (costs client CPU)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= args.connections:
        parser.error("--processes must be between 1 and --connections")
    hosts = parse_hosts(args.hosts)
    labels = parse_mix(args.op, args.mix)

    trio.run(setup, args, hosts)
    interrupted = False
    results: list[dict[str, Any]] = []
    try:
        results = run_workers(args, hosts, labels)
    except KeyboardInterrupt:
        interrupted = True
    except BaseExceptionGroup as group:  # trio delivers Ctrl-C inside the nursery's exception group
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        interrupted = True
    finally:
        deleted = trio.run(cleanup, hosts)
        print(f"cleanup: deleted {deleted} znodes under {ROOT}", file=sys.stderr)
    if interrupted:
        print("interrupted", file=sys.stderr)
        return 130
    summary = summarize(args, labels, results)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_report(summary)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
