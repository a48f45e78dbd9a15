#!/usr/bin/env python3
"""Restart time of a server holding many znodes: zkpy vs Apache ZooKeeper, one command.

    python scripts/bench_restart.py --server zkpy|apache|both --znodes 1000000 --size 100 \\
        [--clean-stop] [--keep] [--json]

For each server: start it fresh on an empty data dir; create `--znodes` persistent znodes of
`--size` bytes (/r/s<k>/n<i>, `--sessions` pipelined sessions, `--window` requests in flight each;
the last znode is created alone after every other create is acknowledged, so reading it back
proves the whole log was recovered); kill -9 the server (a crash: no shutdown path runs); start
it again and time, from the moment the process is spawned, until it answers `ruok` with imok AND a
getData of that last znode succeeds (polled every `--poll` s). Then mntr's zk_znode_count must equal
the count before the crash. With --clean-stop a second restart follows a SIGTERM stop.

Reported per server: load time and rate, restart time, the server's VmRSS after the restart,
the data dir's size on disk (allocated blocks: Apache preallocates 64 MB log files) and its
newest snapshot's size, plus what the server's own log says about recovery and snapshots.
Why a separate script: bench.py measures steady-state throughput; this measures the start-up
cost of durable state, which grows with the tree, not with the load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))  # run from a checkout without installing
sys.path.insert(0, str(ROOT_DIR / "scripts"))

from bench import Session  # noqa: E402

from zkpy.jute.codec import encode  # noqa: E402
from zkpy.jute.framing import FrameBuffer, frame  # noqa: E402
from zkpy.jute.ops import CreateRequest, OpCode, PathWatchRequest  # noqa: E402
from zkpy.jute.records import OPEN_ACL_UNSAFE, REPLY_HEADER_STRUCT, ConnectRequest  # noqa: E402
from zkpy.testing.procs import ServerProcess, four_letter, free_port, write_config  # noqa: E402

BASE = "/r"
CHUNK = 20_000  # creates handed to one call_many: bounds the client's memory, not the window
OK = 0
INT = struct.Struct(">i")


# ---------------------------------------------------------------- loading


def create_bodies(paths: list[str], data: bytes) -> list[tuple[int, bytes]]:
    """CreateRequest bodies, fast: everything after the path is the same for every znode."""
    suffix = encode(CreateRequest("", data, OPEN_ACL_UNSAFE, 0))[4:]  # drop the empty path's length
    out = []
    for p in paths:
        raw = p.encode()
        out.append((OpCode.CREATE, INT.pack(len(raw)) + raw + suffix))
    return out


def znode_path(i: int, shards: int) -> str:
    return f"{BASE}/s{i % shards}/n{i}"


async def load(host: str, port: int, n: int, size: int, sessions: int, window: int) -> str:
    """Create n znodes (n >= 1) under /r; return the path of the last one, created after all others."""
    import bench

    bench.SETUP_WINDOW = window  # call_many pipelines this many requests per session
    data = bytes(i % 251 for i in range(size))
    conns = [await Session.open(host, port) for _ in range(sessions)]
    try:
        await check_all(conns[0], create_bodies([BASE] + [f"{BASE}/s{k}" for k in range(sessions)], b""))

        async def fill(k: int) -> None:
            mine = range(k, n - 1, sessions)
            for start in range(0, len(mine), CHUNK):
                paths = [znode_path(i, sessions) for i in mine[start : start + CHUNK]]
                await check_all(conns[k], create_bodies(paths, data))

        async with trio.open_nursery() as nursery:
            for k in range(sessions):
                nursery.start_soon(fill, k)
        last = znode_path(n - 1, sessions)
        await check_all(conns[0], create_bodies([last], data))
        return last
    finally:
        for c in conns:
            await c.close()


async def check_all(session: Session, requests: list[tuple[int, bytes]]) -> None:
    for (_, body), (err, _) in zip(requests, await session.call_many(requests), strict=True):
        if err != OK:
            path = body[4 : 4 + INT.unpack_from(body)[0]].decode()
            raise RuntimeError(f"create {path} failed with error {err}")


# ---------------------------------------------------------------- probing a (re)starting server


def recv_frame(sock: socket.socket, frames: FrameBuffer) -> bytes:
    while (body := frames.next_frame()) is None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        frames.feed(data)
    return body


def get_data_ok(host: str, port: int, path: str, timeout: float = 2.0) -> bool:
    """Open a session and getData(path): True when the server answers with no error."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        frames = FrameBuffer(1 << 24)
        sock.sendall(frame(encode(ConnectRequest(0, 0, 30_000, 0, bytes(16), False))))
        recv_frame(sock, frames)  # a refusing server closes instead
        sock.sendall(frame(INT.pack(1) + INT.pack(OpCode.GET_DATA) + encode(PathWatchRequest(path, False))))
        xid, _zxid, err = REPLY_HEADER_STRUCT.unpack_from(recv_frame(sock, frames))
        ok = xid == 1 and err == OK
        with contextlib.suppress(OSError):  # closeSession, so the session does not linger
            sock.sendall(frame(INT.pack(2) + INT.pack(OpCode.CLOSE_SESSION)))
            recv_frame(sock, frames)
        return ok


def wait_serving(server: ServerProcess, path: str, poll: float, timeout: float) -> tuple[float, float]:
    """Spawn the server; return (seconds to imok, seconds to imok + getData(path) ok) from the spawn."""
    log = open(server.log_path, "ab")  # noqa: SIM115 - handed to the child
    t0 = time.monotonic()
    server.proc = subprocess.Popen(
        server.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=server.data_dir
    )
    log.close()
    imok_at = None
    while time.monotonic() - t0 < timeout:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.kind} exited during restart: {server.log_tail()}")
        with contextlib.suppress(OSError):
            if imok_at is None and four_letter(server.host, server.port, "ruok", timeout=1.0) == "imok":
                imok_at = time.monotonic() - t0
            if imok_at is not None and get_data_ok(server.host, server.port, path):
                return imok_at, time.monotonic() - t0
        time.sleep(poll)
    raise RuntimeError(f"{server.kind} not serving {path} {timeout}s after restart: {server.log_tail()}")


def live_group_members(pgid: int) -> list[int]:
    """Processes (not zombies) still in process group `pgid`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def wait_group_gone(pgid: int, timeout: float = 60.0) -> float:
    """Seconds until every process of the stopped server's group has exited. zkpy's forked
    snapshot writer outlives a SIGTERM'd parent and keeps the inherited listening socket, so a
    restart before it finishes fails with 'port already in use'."""
    t0 = time.monotonic()
    while live_group_members(pgid) and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    return time.monotonic() - t0


def mntr(server: ServerProcess) -> dict[str, str]:
    text = four_letter(server.host, server.port, "mntr")
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def znode_count(server: ServerProcess, wait: float = 60.0) -> int:
    """mntr's zk_znode_count; Apache answers ruok (and nothing else) a moment before it serves."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError):
            stats = mntr(server)
            if "zk_znode_count" in stats:
                return int(stats["zk_znode_count"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.kind}: mntr has no zk_znode_count after {wait}s")
        time.sleep(0.05)


# ---------------------------------------------------------------- measuring the process and its files


def server_pid(server: ServerProcess) -> int:
    """The process that holds the tree: the JVM for Apache (a child of bash unless bash exec'd it)."""
    assert server.proc is not None
    pid = server.proc.pid
    for _ in range(3):
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        if comm != "bash":
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            return pid
        pid = int(children[0])
    return pid


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk_usage(path: Path) -> tuple[int, int, int]:
    """(allocated bytes, apparent bytes, files) under path."""
    allocated = apparent = files = 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            allocated += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return allocated, apparent, files


def newest_snapshot(data_dir: Path) -> Path | None:
    snaps = [p for p in data_dir.rglob("snapshot.*") if not p.name.endswith(".tmp")]
    return max(snaps, key=lambda p: int(p.name.split(".")[1], 16)) if snaps else None


LOG_PATTERNS = [
    r"recovered \d+ znodes.*",  # zkpy
    r"snapshot at zxid \S+ (?:written|failed).*",  # zkpy
    r"Snapshot loaded in .*",  # Apache
    r"Snapshotting: .*",  # Apache
    r"Snapshot taken in .*",  # Apache
]


def recovery_facts(log_text: str) -> dict[str, Any]:
    """What the server's log says about one start: load time, snapshot used, transactions replayed."""
    facts: dict[str, Any] = {}
    if m := re.search(
        r"recovered \d+ znodes at zxid (\S+) \(snapshot (\S+) \+ (\d+) logged.*in ([\d.]+)s", log_text
    ):
        facts = {"load_s": float(m[4]), "snap_zxid": int(m[2], 16), "replayed": int(m[3])}
    snap = re.search(r"Reading snapshot \S+/snapshot\.([0-9a-f]+)", log_text)
    loaded = re.search(r"Snapshot loaded in (\d+) ms, highest zxid is (\S+),", log_text)
    if snap and loaded:  # Apache: replayed = highest zxid - snapshot zxid (one zxid per txn)
        snap_zxid = int(snap[1], 16)
        facts = {
            "load_s": int(loaded[1]) / 1000,
            "snap_zxid": snap_zxid,
            "replayed": int(loaded[2], 16) - snap_zxid,
        }
        if taken := re.search(r"\[main\].*Snapshot taken in (\d+) ms", log_text[loaded.end() :]):
            facts["startup_snap_s"] = int(taken[1]) / 1000  # Apache snapshots before it serves
    return facts


def snapshot_write_seconds(data_dir: Path) -> list[tuple[str, float]]:
    """(name, seconds) per snapshot from its birth time (the .tmp's creation; a rename keeps the
    inode) to its last write; zkpy logs only the end. Empty where the filesystem has no birth time."""
    out = []
    for p in sorted(data_dir.rglob("snapshot.*"), key=lambda p: p.stat().st_mtime):
        if p.name.endswith(".tmp"):
            continue
        stat = subprocess.run(["stat", "-c", "%W %.9Y", str(p)], capture_output=True, text=True, check=False)
        born, modified = (float(x) for x in stat.stdout.split() or ("0", "0"))
        if born > 0:
            out.append((p.name, modified - born))
    return out


def log_lines(log_text: str) -> list[str]:
    found = []
    for line in log_text.splitlines():
        for pat in LOG_PATTERNS:
            m = re.search(pat, line)
            if m:
                found.append(line[:19] + " " + m.group(0)[:160] if line[:4].isdigit() else m.group(0)[:160])
    return found


# ---------------------------------------------------------------- one server


@dataclass
class Result:
    server: str
    znodes: int
    size: int
    load_s: float = 0.0
    load_rate: float = 0.0
    count_before: int = 0
    restarts: list[dict[str, Any]] = field(default_factory=list)
    disk_mb: float = 0.0
    apparent_mb: float = 0.0
    files: int = 0
    snapshot: str = ""
    snapshot_mb: float = 0.0
    snapshot_writes: list[tuple[str, float]] = field(default_factory=list)
    data_dir: str = ""
    log: list[str] = field(default_factory=list)


def run_one(kind: str, args: argparse.Namespace) -> Result:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-restart-{kind}-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    port = free_port()
    extra = {"snapCount": str(args.snap_count)} if args.snap_count else {}
    write_config(tmp / "zoo.cfg", port, data_dir, extra)
    server = ServerProcess(
        kind, "127.0.0.1", port, data_dir, tmp / "zoo.cfg", tmp / "server.log", extra=extra
    )
    result = Result(kind, args.znodes, args.size, data_dir=str(data_dir))
    try:
        server.start()
        base_count = znode_count(server)
        t = time.monotonic()
        last = trio.run(load, server.host, port, args.znodes, args.size, args.sessions, args.window)
        result.load_s = time.monotonic() - t
        result.load_rate = args.znodes / result.load_s
        result.count_before = znode_count(server)
        expected = base_count + 1 + args.sessions + args.znodes
        if result.count_before != expected:
            raise RuntimeError(f"{kind}: {result.count_before} znodes after load, expected {expected}")
        print(f"[{kind}] loaded {args.znodes} in {result.load_s:.1f}s; kill -9", file=sys.stderr)

        stops = [("kill -9", server.kill)] + ([("SIGTERM", server.stop)] if args.clean_stop else [])
        for how, stop in stops:
            assert server.proc is not None
            pgid = server.proc.pid
            stop()
            lingered = wait_group_gone(pgid)
            if lingered > 0.05:
                print(f"[{kind}] after {how}, server processes lingered {lingered:.1f}s", file=sys.stderr)
            log_offset = server.log_path.stat().st_size
            imok_s, serving_s = wait_serving(server, last, args.poll, args.timeout)
            pid = server_pid(server)
            count = znode_count(server)
            restart = {
                "after": how,
                "imok_s": imok_s,
                "serving_s": serving_s,
                "rss_mb": rss_mb(pid),
                "znode_count": count,
                "count_ok": count == result.count_before,
                "lingered_s": lingered,
                **recovery_facts(server.log_path.read_text(errors="replace")[log_offset:]),
            }
            result.restarts.append(restart)
            print(
                f"[{kind}] restart after {how}: serving in {serving_s:.2f}s, count {count}", file=sys.stderr
            )
            if not restart["count_ok"]:
                print(f"[{kind}] COUNT MISMATCH: {count} != {result.count_before}", file=sys.stderr)
        server.stop()
        allocated, apparent, result.files = disk_usage(data_dir)
        result.disk_mb, result.apparent_mb = allocated / 2**20, apparent / 2**20
        snap = newest_snapshot(data_dir)
        if snap is not None:
            result.snapshot, result.snapshot_mb = snap.name, snap.stat().st_size / 2**20
        if kind == "zkpy":
            result.snapshot_writes = snapshot_write_seconds(data_dir)
        result.log = log_lines(server.log_path.read_text(errors="replace"))
    finally:
        server.stop()
        if args.keep:
            print(f"[{kind}] kept {tmp} (config {tmp / 'zoo.cfg'}, log {server.log_path})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


# ---------------------------------------------------------------- report


def print_table(results: list[Result]) -> None:
    head = (
        f"{'server':<7} {'znodes':>9} {'load s':>7} {'creates/s':>9} {'restart after':<13} "
        f"{'imok s':>7} {'serving s':>9} {'RSS MB':>7} {'count ok':>8} {'disk MB':>8} {'snapshot MB':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        for x in r.restarts:
            print(
                f"{r.server:<7} {r.znodes:>9} {r.load_s:>7.1f} {r.load_rate:>9.0f} {x['after']:<13} "
                f"{x['imok_s']:>7.2f} {x['serving_s']:>9.2f} {x['rss_mb']:>7.0f} {x['count_ok']!s:>8} "
                f"{r.disk_mb:>8.0f} {r.snapshot_mb:>11.1f}"
            )
    print(
        "\nWhat each server logged at the restart (the log tail after the snapshot decides much of the time):"
    )
    for r in results:
        for x in r.restarts:
            if "load_s" in x:
                extra = (
                    f", then a snapshot before serving {x['startup_snap_s']:.2f}s"
                    if "startup_snap_s" in x
                    else ""
                )
                if x.get("lingered_s", 0) > 0.05:
                    extra += f" (old processes lingered {x['lingered_s']:.1f}s after the stop)"
                print(
                    f"  {r.server:<7} after {x['after']:<8}: loaded snapshot 0x{x['snap_zxid']:x} + "
                    f"{x['replayed']} logged txns in {x['load_s']:.2f}s{extra}"
                )
    for r in results:
        print(
            f"\n{r.server}: {r.files} files, {r.apparent_mb:.0f} MB apparent; newest {r.snapshot or 'none'}"
        )
        if r.snapshot_writes:
            print("  snapshot write s (file birth to last write): " + ", ".join(
                f"{name.split('.')[1]} {sec:.1f}" for name, sec in r.snapshot_writes
            ))  # fmt: skip
        for line in r.log:
            print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=["zkpy", "apache", "both"], default="both")
    ap.add_argument("--znodes", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--poll", type=float, default=0.02, help="seconds between probes while restarting")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on a restart after this long")
    ap.add_argument("--snap-count", type=int, default=0, help="snapCount for both servers (default: theirs)")
    ap.add_argument("--clean-stop", action="store_true", help="also time a restart after a SIGTERM stop")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs and logs (printed to stderr)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)
    if args.znodes < 1:
        ap.error("--znodes must be at least 1")
    kinds = ["zkpy", "apache"] if args.server == "both" else [args.server]
    results, failed = [], False
    for kind in kinds:
        try:
            results.append(run_one(kind, args))
        except RuntimeError as e:  # report it, and still measure the other server
            print(f"[{kind}] FAILED: {e}", file=sys.stderr)
            failed = True
    print_table(results)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if failed or not all(x["count_ok"] for r in results for x in r.restarts) else 0


if __name__ == "__main__":
    sys.exit(main())
