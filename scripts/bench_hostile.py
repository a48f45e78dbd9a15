#!/usr/bin/env python3
"""Issue 16's benchmark: what one hostile client costs everyone else, zkpy beside Apache ZooKeeper 3.8.

    python scripts/bench_hostile.py [--servers zkpy,apache] [--json]

For each server (started fresh, preAllocSize=1 so the log's file size is what was written), a
well-behaved client (raw socket, 4 s session) does getData + ping round trips the whole time while an
attacker, on its own connection, sends in turn:

  acl       one create whose ACL has 9,000 distinct digest entries (494 KB; the issue's 117 KB had shorter ids)
  addauth   6,000 addauths in one send, then one setData the ACL refuses
  refused   40 setData of 1 MB each on a node the attacker may not write (all refused NoAuth)
  watches   ten setWatches frames of 60,000 paths each (600k watches), then srvr, mntr, wchs and a
            word outside the whitelist, timed, then the attacker disconnects
  multi     one multi of 40,000 check ops (760 KB; zkpy refuses more than multiMaxOps=1,000 ops, Apache
            applies it)
  children  100 multis of 1,000 creates each under one node (100,000 children; the largest multis zkpy
            takes), answered one after the other
  getchildren  getChildren of that node, a create under it, getChildren again (the first after a change)

Reported per attack: the good client's worst round trip during it, whether its session survived, the
log growth (bytes in the data dir) and the server's RSS growth, plus each four-letter word's time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))

import contextlib

from zkraw import RawClient

from zkpy.jute.codec import encode
from zkpy.jute.ops import (
    CheckVersionRequest,
    CreateRequest,
    MultiRequest,
    OpCode,
    PathWatchRequest,
    SetDataRequest,
    SetWatchesRequest,
)
from zkpy.jute.records import ACL, OPEN_ACL_UNSAFE, PERM_ALL, AuthPacket, Id, RequestHeader
from zkpy.testing.procs import four_letter, running_server, status_kb
from zkpy.tree.acl import digest


def frame(xid: int, op: int, record: Any = None) -> bytes:
    body = encode(RequestHeader(xid, op)) + (encode(record) if record is not None else b"")
    return len(body).to_bytes(4, "big") + body


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def good_client(host: str, port: int, stop: Any, out: Any) -> None:
    """The well-behaved client, in its own process (so the attacker's work never holds its GIL): getData +
    ping round trips in a loop; sends back [(start, latency)] and why its session ended, if it did."""
    samples: list[tuple[float, float]] = []
    lost = ""
    try:
        client = RawClient(host, port, timeout_ms=4000, io_timeout=8.0)
        client.call(OpCode.CREATE, CreateRequest("/good", b"hello", OPEN_ACL_UNSAFE, 0))
        while not stop.is_set():
            started = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
            try:
                client.call(OpCode.GET_DATA, PathWatchRequest("/good", False))
                client.ping()
            finally:  # a round trip that never ended counts for as long as it was waited for
                samples.append((started, time.monotonic() - started))
            time.sleep(0.005)
        client.close()
    except Exception as e:  # the session or the connection is gone (an answer later than 2 timeouts)
        lost = f"{type(e).__name__}: {e}"
    out.send((samples, lost))


class GoodClient:
    def __init__(self, host: str, port: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=good_client, args=(host, port, self.stop, send), daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.lost = ""

    def start(self) -> None:
        self.proc.start()

    def finish(self) -> None:
        self.stop.set()
        if self._recv.poll(30):
            self.samples, self.lost = self._recv.recv()
        else:
            self.lost = "no report from the good client"
        self.proc.join(10)

    def worst_between(self, start: float, end: float) -> float:
        return max(self.between(start, end), default=0.0)

    def between(self, start: float, end: float) -> list[float]:
        """The latencies of the round trips that overlapped [start, end], largest first."""
        return sorted((lat for t, lat in self.samples if start <= t + lat and t <= end), reverse=True)


def attack_acl(host: str, port: int) -> None:
    c = RawClient(host, port)
    acl = [ACL(PERM_ALL, Id("digest", digest(f"user{i}:pw"))) for i in range(9000)]
    c.error_of(OpCode.CREATE, CreateRequest("/acl", b"", acl, 0))
    c.close()


def attack_addauth(host: str, port: int) -> None:
    c = RawClient(host, port)
    c.sock.sendall(
        b"".join(
            frame(-4, OpCode.AUTH, AuthPacket(0, "digest", f"flood{i}:pw".encode())) for i in range(6000)
        )
    )
    c.ping()
    c.error_of(OpCode.SET_DATA, SetDataRequest("/locked", b"x", -1))
    c.close()


def attack_refused(host: str, port: int) -> None:
    c = RawClient(host, port)
    xids = [c.send(OpCode.SET_DATA, SetDataRequest("/locked", b"x" * 1_000_000, -1)) for _ in range(40)]
    for xid in xids:
        c.read_reply(xid)
    c.close()


WATCH_FRAMES = [  # built before the clock starts: only sending them is part of the attack
    encode(SetWatchesRequest(0, [], [f"/w/{chunk}{i:05d}" for i in range(60_000)], [])) for chunk in range(10)
]


def attack_watches(host: str, port: int, words: dict[str, float]) -> None:
    c = RawClient(host, port, io_timeout=60)
    for xid, body in enumerate(WATCH_FRAMES, 1):
        header = encode(RequestHeader(xid, OpCode.SET_WATCHES))
        c.sock.sendall((len(header) + len(body)).to_bytes(4, "big") + header + body)
        c.read_reply(xid)
    for word in ("srvr", "mntr", "wchs", "cons", "dump"):
        started = time.monotonic()
        four_letter(host, port, word, timeout=30)
        words[word] = round((time.monotonic() - started) * 1000, 1)
    c.close(send_close_session=False)


def attack_multi(host: str, port: int) -> str:
    c = RawClient(host, port, io_timeout=60)
    err = c.error_of(OpCode.MULTI, MultiRequest([(OpCode.CHECK, CheckVersionRequest("/", -1))] * 40_000))
    c.close()
    return f"the multi's answer: {err}"


CHILDREN_MULTIS = [  # built before the clock starts
    MultiRequest(
        [
            (OpCode.CREATE, CreateRequest(f"/kids/child-{m:03d}{i:04d}", b"", OPEN_ACL_UNSAFE, 0))
            for i in range(1000)
        ]
    )
    for m in range(100)
]


def attack_children(host: str, port: int) -> None:
    c = RawClient(host, port, io_timeout=60)
    c.call(OpCode.CREATE, CreateRequest("/kids", b"", OPEN_ACL_UNSAFE, 0))
    for multi in CHILDREN_MULTIS:
        c.call(OpCode.MULTI, multi)
    c.close()


def attack_getchildren(host: str, port: int) -> None:
    c = RawClient(host, port, io_timeout=60)
    c.call(OpCode.GET_CHILDREN, PathWatchRequest("/kids", False))
    c.call(OpCode.CREATE, CreateRequest("/kids/one-more", b"", OPEN_ACL_UNSAFE, 0))
    c.call(OpCode.GET_CHILDREN, PathWatchRequest("/kids", False))
    c.close()


def run_server(kind: str) -> dict[str, Any]:
    extra = {
        "preAllocSize": "1",
        "4lw.commands.whitelist": "srvr,mntr,wchs,ruok,isro",
        "maxSessionTimeout": "40000",
    }
    results: dict[str, Any] = {"server": kind, "attacks": {}, "four_letter_ms": {}}
    with running_server(kind, extra) as srv:
        assert srv.proc is not None
        pid = srv.proc.pid
        owner = RawClient(srv.host, srv.port)
        owner.sock.sendall(frame(-4, OpCode.AUTH, AuthPacket(0, "digest", b"owner:pw")))
        owner.ping()
        owner.call(
            OpCode.CREATE, CreateRequest("/locked", b"", [ACL(PERM_ALL, Id("digest", digest("owner:pw")))], 0)
        )
        good = GoodClient(srv.host, srv.port)
        good.start()
        time.sleep(0.5)
        idle_start = time.monotonic()
        time.sleep(2.0)  # no attack: the machine's own noise, to read the rest against
        idle = (idle_start, time.monotonic())
        attacks: dict[str, Callable[[], str | None]] = {
            "acl": lambda: attack_acl(srv.host, srv.port),
            "addauth": lambda: attack_addauth(srv.host, srv.port),
            "refused": lambda: attack_refused(srv.host, srv.port),
            "watches": lambda: attack_watches(srv.host, srv.port, results["four_letter_ms"]),
            "multi": lambda: attack_multi(srv.host, srv.port),
            "children": lambda: attack_children(srv.host, srv.port),
            "getchildren": lambda: attack_getchildren(srv.host, srv.port),
        }
        windows: dict[str, tuple[float, float]] = {"idle": idle}
        results["attacks"]["idle"] = {"attack_s": 2.0, "log_growth_bytes": 0, "rss_growth_mb": 0.0}
        for name, attack in attacks.items():
            log_before, rss_before = dir_bytes(srv.data_dir), status_kb(pid, "VmRSS")
            started = time.monotonic()
            error = ""
            try:
                error = attack() or ""
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
            ended = time.monotonic()
            time.sleep(0.5)  # what the attack leaves behind (a close's cleanup) counts too
            windows[name] = (started, ended + 0.5)
            results["attacks"][name] = {
                "attack_s": round(ended - started, 2),
                "log_growth_bytes": dir_bytes(srv.data_dir) - log_before,
                "rss_growth_mb": round((status_kb(pid, "VmRSS") - rss_before) / 1024, 1),
                "attacker_error": error,
            }
        good.finish()
        last_sample = max((t + lat for t, lat in good.samples), default=0.0)
        for name, (start, end) in windows.items():
            attack = results["attacks"][name]
            attack["worst_stall_ms"] = round(good.worst_between(start, end) * 1000, 1)
            attack["next_worst_ms"] = [round(lat * 1000, 1) for lat in good.between(start, end)[1:4]]
            attack["good_session_lost"] = bool(good.lost) and start <= last_sample <= end
            print(kind, name, attack, file=sys.stderr, flush=True)
        results["good_client_error"] = good.lost
        results["good_round_trips"] = len(good.samples)
        with contextlib.suppress(OSError):
            owner.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="zkpy,apache")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    all_results = [run_server(kind) for kind in args.servers.split(",")]
    if args.json:
        print(json.dumps(all_results, indent=2))
        return 0
    print(
        f"{'server':8} {'attack':11} {'worst stall ms':>15} {'session lost':>13} {'log growth B':>13} {'RSS MB':>7}"
    )
    for r in all_results:
        for name, a in r["attacks"].items():
            print(
                f"{r['server']:8} {name:11} {a['worst_stall_ms']:>15} {a['good_session_lost']!s:>13} "
                f"{a['log_growth_bytes']:>13} {a['rss_growth_mb']:>7}  {a['next_worst_ms']}"
            )
        print(
            f"{r['server']:8} four-letter words (ms): {r['four_letter_ms']} (cons, dump: not in the whitelist)"
        )
        print(
            f"{r['server']:8} good client: {r['good_round_trips']} round trips, error: {r['good_client_error'] or 'none'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
