#!/usr/bin/env python3
"""Issue 17's idle-session benchmark: what N sessions that only ping cost one server, zkpy beside Apache 3.8.

    python scripts/bench_idle_sessions.py [--servers zkpy,apache] [--sessions 10000] [--duration 60]
                                          [--interval 3.33] [--workers 3] [--runs 1] [--json]

For each server (started fresh, standalone, maxClientCnxns=0), N raw sessions (10 s session timeout)
are opened by a few load-generator processes, each an epoll loop over non-blocking sockets speaking
just enough jute (a ConnectRequest, then pings: `RequestHeader(-2, ping)`), so the generator stays
cheap. Every session pings every `--interval` seconds, the sessions' phases spread evenly over the
interval, from the moment it is established (so opening 15,000 sessions loses none while the rest
connect). Once all are established and a settling pause has passed, the server's CPU (utime + stime
of its process group, from /proc/PID/stat) and RSS are read at the start and end of a `--duration`
window. Reported: sessions opened and lost (closed by the server, or a ping unanswered for longer
than the session timeout), pings answered in the window, server CPU seconds, CPU microseconds per
ping, server RSS at the end, the worst ping round trip, and the generator's own CPU.

The machine is shared: run it alone, and read several runs, not one.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import json
import multiprocessing
import os
import re
import resource
import select
import socket
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from zkpy.jute.codec import encode
from zkpy.jute.records import ConnectRequest
from zkpy.testing.procs import running_server

GC_PAUSE = re.compile(r"garbage collection of generation (\d) held this server for (\d+) ms")
SESSION_TIMEOUT_MS = 10_000
PING = (8).to_bytes(4, "big") + (-2).to_bytes(4, "big", signed=True) + (11).to_bytes(4, "big")
_CONNECT_BODY = encode(ConnectRequest(0, 0, SESSION_TIMEOUT_MS, 0, b"\x00" * 16, False))
CONNECT = len(_CONNECT_BODY).to_bytes(4, "big") + _CONNECT_BODY
PING_REPLY_LEN = 4 + 16  # length, then xid -2, zxid, err


def _clock_ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def group_cpu_and_rss(pgid: int) -> tuple[float, int]:
    """CPU seconds (utime + stime) and RSS bytes summed over the processes of a process group."""
    cpu_ticks = 0
    rss_pages = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) != pgid:  # fields[0] is the state; pid and comm come before
            continue
        cpu_ticks += int(fields[11]) + int(fields[12])
        rss_pages += int(fields[21])
    return cpu_ticks / _clock_ticks(), rss_pages * os.sysconf("SC_PAGE_SIZE")


class _Session:
    __slots__ = ("buf", "established", "sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.established = False
        self.sent: deque[float] = deque()  # when each unanswered ping went out, oldest first


def generator(
    host: str,
    port: int,
    count: int,
    interval: float,
    start_at: float,
    window: tuple[Any, Any],
    progress: Any,
    out: Any,
) -> None:
    """One load-generator process: `count` sessions, each pinging every `interval` seconds.

    `window` is a pair of multiprocessing Events (measuring started, stop); `progress` a shared int
    (sessions established so far); `out` gets the counts."""
    measuring, stop = window
    ep = select.epoll()
    sessions: dict[int, _Session] = {}
    schedule: list[tuple[float, int]] = []  # a heap of (due, fd)
    opened = lost = answered = answered_window = 0
    worst = 0.0
    worst_window = 0.0
    lost_reasons: dict[str, int] = {}
    to_open = count
    connecting = 0
    now = time.monotonic()
    while now < start_at:
        time.sleep(min(0.05, start_at - now))
        now = time.monotonic()

    def drop(fd: int, why: str) -> None:
        nonlocal lost
        s = sessions.pop(fd, None)
        if s is None:
            return
        if s.established:
            lost += 1
            lost_reasons[why] = lost_reasons.get(why, 0) + 1
        with contextlib.suppress(OSError):
            ep.unregister(fd)
        s.sock.close()

    failed_opens = 0
    while not stop.is_set():
        now = time.monotonic()
        # Open more, at most 100 handshakes in flight per process. The connect never blocks: a server slow
        # to accept must not hold up the pings of the sessions already open.
        while to_open and connecting < 100:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            err = sock.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                failed_opens += 1
                to_open -= 1
                continue
            fd = sock.fileno()
            sessions[fd] = _Session(sock)
            ep.register(fd, select.EPOLLOUT)  # connected: then the ConnectRequest goes out
            to_open -= 1
            connecting += 1
        # Ping whoever is due.
        while schedule and schedule[0][0] <= now:
            due, fd = heapq.heappop(schedule)
            s = sessions.get(fd)
            if s is None:
                continue
            if s.sent and now - s.sent[0] > SESSION_TIMEOUT_MS / 1000:
                drop(fd, "ping unanswered for a session timeout")
                continue
            try:
                s.sock.send(PING)
            except OSError as e:
                drop(fd, f"send: {type(e).__name__}")
                continue
            s.sent.append(now)
            heapq.heappush(schedule, (due + interval, fd))
        timeout = 0.01 if to_open else max(0.0, min(0.05, (schedule[0][0] - now) if schedule else 0.05))
        events = ep.poll(timeout)
        now = time.monotonic()
        in_window = measuring.is_set()
        for fd, mask in events:
            s = sessions.get(fd)
            if s is None:
                continue
            if mask & select.EPOLLOUT and not s.established:
                ep.modify(fd, select.EPOLLIN)
                try:
                    s.sock.send(CONNECT)  # 50 bytes into an empty socket buffer
                except OSError as e:
                    connecting -= 1
                    failed_opens += 1
                    drop(fd, f"connect: {type(e).__name__}")
                continue
            try:
                data = s.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                if not s.established:
                    connecting -= 1
                    failed_opens += 1
                drop(fd, f"recv: {type(e).__name__}")
                continue
            if not data:
                if not s.established:
                    connecting -= 1
                    failed_opens += 1
                drop(fd, "closed by the server")
                continue
            buf = s.buf + data
            while len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if len(buf) < 4 + size:
                    break
                buf = buf[4 + size :]
                if not s.established:  # the ConnectResponse
                    s.established = True
                    connecting -= 1
                    opened += 1
                    progress.value = opened
                    # Spread the phases evenly over the interval (a stride through the slots).
                    heapq.heappush(schedule, (now + interval * ((opened * 7919) % count) / count, fd))
                    continue
                if not s.sent:
                    continue  # not a ping's answer (nothing else is asked)
                answered += 1
                rtt = now - s.sent.popleft()
                worst = max(worst, rtt)
                if in_window:
                    answered_window += 1
                    worst_window = max(worst_window, rtt)
            s.buf = buf
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    out.send(
        {
            "opened": opened,
            "failed_opens": failed_opens,
            "alive": sum(1 for s in sessions.values() if s.established),
            "lost": lost,
            "lost_reasons": lost_reasons,
            "answered": answered,
            "answered_window": answered_window,
            "worst_rtt_ms": round(worst * 1000, 1),
            "worst_rtt_window_ms": round(worst_window * 1000, 1),
            "generator_cpu_s": round(cpu.ru_utime + cpu.ru_stime, 2),
        }
    )
    for s in sessions.values():
        s.sock.close()


def run(
    kind: str, sessions: int, duration: float, interval: float, workers: int, settle: float
) -> dict[str, Any]:
    extra = {"maxClientCnxns": "0", "maxSessionTimeout": "40000", "4lw.commands.whitelist": "*"}
    with running_server(kind, extra) as srv:
        assert srv.proc is not None
        result = measure(kind, srv.host, srv.port, srv.proc.pid, sessions, duration, interval, workers, settle)
        if kind == "zkpy":  # the collections of 100 ms or more it logged (zkpy/server/gcpause.py), per generation
            text = srv.log_since(0)
            result["gc_pauses_ms"] = {
                gen: sorted((int(ms) for g, ms in GC_PAUSE.findall(text) if g == gen), reverse=True)
                for gen in ("0", "1", "2")
            }
        return result


def measure(
    kind: str,
    host: str,
    port: int,
    pgid: int,
    sessions: int,
    duration: float,
    interval: float,
    workers: int,
    settle: float,
) -> dict[str, Any]:
    """The load against a running server whose processes form the process group `pgid`."""
    ctx = multiprocessing.get_context("fork")
    measuring, stop = ctx.Event(), ctx.Event()
    pipes = []
    procs = []
    counters = []
    start_at = time.monotonic() + 0.5
    share = [sessions // workers + (1 if i < sessions % workers else 0) for i in range(workers)]
    for n in share:
        recv, send = ctx.Pipe(duplex=False)
        counter = ctx.Value("i", 0, lock=False)
        counters.append(counter)
        p = ctx.Process(
            target=generator,
            args=(host, port, n, interval, start_at, (measuring, stop), counter, send),
            daemon=True,
        )
        p.start()
        procs.append(p)
        pipes.append(recv)
    opened_at = time.monotonic()
    deadline = opened_at + 180
    while time.monotonic() < deadline and sum(c.value for c in counters) < sessions:
        time.sleep(0.2)
    setup_s = time.monotonic() - opened_at
    time.sleep(settle)
    cpu0, _ = group_cpu_and_rss(pgid)
    t0 = time.monotonic()
    measuring.set()
    time.sleep(duration)
    cpu1, rss = group_cpu_and_rss(pgid)
    t1 = time.monotonic()
    measuring.clear()
    stop.set()
    results = [r.recv() for r in pipes]
    for p in procs:
        p.join(10)
    answered = sum(r["answered_window"] for r in results)
    cpu = cpu1 - cpu0
    return {
        "server": kind,
        "sessions": sessions,
        "opened": sum(r["opened"] for r in results),
        "failed_opens": sum(r["failed_opens"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "lost_reasons": [r["lost_reasons"] for r in results if r["lost_reasons"]],
        "setup_s": round(setup_s, 1),
        "window_s": round(t1 - t0, 1),
        "pings_answered": answered,
        "server_cpu_s": round(cpu, 2),
        "us_per_ping": round(cpu / answered * 1e6, 1) if answered else None,
        "server_rss_mb": round(rss / 2**20),
        "worst_ping_ms": max(r["worst_rtt_window_ms"] for r in results),
        "generator_cpu_s": round(sum(r["generator_cpu_s"] for r in results), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="zkpy,apache")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=3.33, help="seconds between a session's pings")
    parser.add_argument("--workers", type=int, default=3, help="load-generator processes")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the last session opens")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--attach", metavar="HOST:PORT:PGID", help="measure a server already running (e.g. under a profiler)"
    )
    args = parser.parse_args()
    if args.attach:
        host, port, pgid = args.attach.split(":")
        r = measure(
            "attached",
            host,
            int(port),
            int(pgid),
            args.sessions,
            args.duration,
            args.interval,
            args.workers,
            args.settle,
        )
        print(json.dumps(r))
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    all_results = []
    for _ in range(args.runs):
        for kind in args.servers.split(","):
            r = run(kind, args.sessions, args.duration, args.interval, args.workers, args.settle)
            print(json.dumps(r), file=sys.stderr, flush=True)
            all_results.append(r)
    if args.json:
        print(json.dumps(all_results, indent=2))
        return 0
    print(
        f"{'server':7} {'sessions':>8} {'lost':>5} {'pings':>7} {'CPU s':>7} {'us/ping':>8} {'RSS MB':>7} "
        f"{'worst ms':>9} {'gen CPU s':>9}"
    )
    for r in all_results:
        print(
            f"{r['server']:7} {r['opened']:>8} {r['lost']:>5} {r['pings_answered']:>7} {r['server_cpu_s']:>7} "
            f"{r['us_per_ping']!s:>8} {r['server_rss_mb']:>7} {r['worst_ping_ms']:>9} {r['generator_cpu_s']:>9}"
        )
        if r.get("gc_pauses_ms"):
            print(f"        collections >= 100 ms by generation: {r['gc_pauses_ms']}")
    for kind in args.servers.split(","):
        per_ping = [r["us_per_ping"] for r in all_results if r["server"] == kind and r["us_per_ping"]]
        if len(per_ping) > 1:
            print(f"{kind}: us/ping median {statistics.median(per_ping)} over {len(per_ping)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
