#!/usr/bin/env python3
"""Jepsen-style run on real server processes: faults on a loopback ensemble, clients recording a
history, then heal, read every server's view and check.

    python3 scripts/jepsen.py --server zkpy|apache --servers 3|5 --duration 120 --clients 5 --seed 1 \\
        [--registers 3] [--no-partitions] [--no-silent] [--no-holds] [--no-moves] [--no-zxids] \\
        [--session-timeout 6] [--keep-logs DIR] [--json FILE]

What it does:

* starts `--servers` members of `--server` (zkpy or Apache ZooKeeper 3.8, through
  scripts/apache-zk) on 127.0.0.1, tickTime 500 ms, each member's peer links going
  through a small TCP proxy in this process (one per ordered pair of members and per port, quorum
  and election; server.N lines of member i name proxy ports for every other member), so the
  nemesis can hold links (a cut link keeps its connections and delivers what it held when it
  heals); with client faults on, clients reach each member through a client proxy of its own
  (zkpy.testing.holdproxy);
* `--clients` kazoo workers and `--zkpy-clients` zkpy.client workers (its blocking SyncClient)
  (threads), each with its own client/session on the connection
  string of all servers (or of their client proxies), loop over: compare-and-set on one of `--registers` register znodes
  (get, then set at the version read), a blind set on one (a late one is not cancelled by a
  version check, so FIFO order shows; also right after a write to a register was lost in a
  fault, as a client that retries), sync then get, plain get, sequential creates under /seq
  (acknowledged names are remembered) and one ephemeral /eph/wN per worker session;
  every operation is recorded with time.monotonic() invocation/completion times as a
  zkpy.testing.history.Operation: ok, fail (BadVersion / NodeExists / NoNode: the request was
  ordered and observed the state) or unknown (ConnectionLoss, SessionExpired, timeouts...),
  with its session, the reply's zxid (kazoo workers) and the member that answered;
* a nemesis thread acts every 2-6 s: kill -9 a server (the leader half the time, found by `srvr`),
  restart killed servers, SIGSTOP a server (the leader half the time) for 3-8 s then SIGCONT,
  isolate a server (the leader half the time) or cut one peer link for 3-8 s (held). At most a
  minority of members is down (killed or paused) at once; a member that exits without being
  killed is reported and restarted. Faults that send no RST, each family with a flag to turn
  it off:
  - silent drops (`--no-silent`; needs nftables and root, zkpy.testing.nftdrop; off by itself
    otherwise): for 3-8 s, packets between two members lost both ways or one way, or a member
    (the leader half the time) cut off both ways, or only its outgoing or only its incoming
    packets lost (it hears its peers but cannot speak, or the reverse); or, for 2-8 s, a
    member's client packets lost both ways. Matched by the ports of this run's proxies only,
    in a table `inet zkpy_jepsen_<pid>` deleted at exit;
  - held client links and slow ways (`--no-holds`): a member's client proxy holds every byte
    both ways for 0.5-10 s (log-uniform), connections kept; clients whose read timeout fires
    move to another member and their request arrives late. Or one direction between two
    members (a follower's way to the leader half the time) delays every byte by 0.1-2 s
    (log-uniform, below syncLimit) for 3-10 s: the link stays up while forwards fall behind;
  - client moves (`--no-moves`): a member's clients are cut off at once while their requests
    are held, and those are delivered 0.05-3 s later: a session's write through the old member
    must not take effect after its next write through the new one (FIFO client order,
    SessionMoved);
* after `--duration` seconds: stop the workers, heal every link, SIGCONT and restart everything,
  wait until every server serves, close the worker sessions, then on each server alone: sync
  and read every register and the children of /seq (the reads join the history as sessions of
  their own), and wait until /eph is empty everywhere (closed or expired sessions leave no
  ephemeral behind).

Reported: operations by kind and outcome, faults by kind, acknowledged sequential creates missing
from any server's view and acknowledged compare-and-sets not reflected in a register's final
version (acknowledged writes lost), servers whose views disagree, ephemerals left behind,
members that exited unexpectedly, the history checker's verdict (with each anomaly's report;
with reply zxids unless `--no-zxids`: FIFO order and monotonic reads across znodes and servers),
packets dropped silently, clients moved and requests delivered after their client left, and
the elapsed time. Exit status 1 on any of these problems, 2 when the ensemble could not be
started or healed. On a problem the server logs, configs and the history (JSON lines) are copied
under /tmp (or --keep-logs DIR). Every process and thread is cleaned up, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.retry import KazooRetry

from zkpy.ops.layout import members_on_free_ports
from zkpy.testing.history import History, Operation
from zkpy.testing.holdproxy import HoldingProxy
from zkpy.testing.nftdrop import LoopbackDrops, unavailable
from zkpy.testing.procs import Ensemble, ServerProcess, free_port, member_process

HOST = "127.0.0.1"
OP_TIMEOUT = 10.0  # seconds a client waits for one reply before calling the outcome unknown
DEFINITE = {BadVersionError: "BadVersion", NodeExistsError: "NodeExists", NoNodeError: "NoNode"}
DEFINITE_NAMES = {cls.__name__: name for cls, name in DEFINITE.items()}
# definitely not applied, and telling nothing about the state (the checker ignores them)
DEFINITE_NAMES["NotReadOnlyCallError"] = "NotReadOnly"
# refused by the owner check: the leader did not order it (a worker whose session is owned by a
# server it left gets this for every write until it reconnects; as unknown outcomes they made
# the worker write the register again and again)
DEFINITE_NAMES["SessionMovedError"] = "SessionMoved"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- a TCP proxy for peer links ----------------------------------------------------------------


class LinkProxy:
    """Listens on a port of its own and forwards to `target_port`: member `src` reaching member
    `dst`. While cut, bytes already in flight are held (not forwarded, not dropped: a partition
    that TCP would survive) and new connections are held until the link heals."""

    def __init__(self, src: int, dst: int, target_port: int, stopping: threading.Event) -> None:
        self.src, self.dst, self.target_port = src, dst, target_port
        self.stopping = stopping
        self.open = threading.Event()
        self.open.set()
        self.delay_fwd = 0.0  # seconds added to src -> dst bytes (a slow way)
        self.delay_back = 0.0  # and to dst -> src bytes on src's connections
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"proxy{src}->{dst}")
        self.thread.start()

    def _track(self, s: socket.socket) -> None:
        with self.lock:
            self.sockets.add(s)

    def _close(self, s: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.25)
            if not ready:
                continue
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self._track(conn)
            threading.Thread(target=self._connect, args=(conn,), daemon=True).start()

    def _connect(self, conn: socket.socket) -> None:
        """Reach the target for `conn`: while the link is cut, or for up to 3 s while the target
        does not answer (it is down), hold the connection, keeping what the peer sends, as a
        network that delays packets would; then forward, or hang up."""
        held: list[bytes] = []
        unreachable_since: float | None = None
        upstream = None
        try:
            while not self.stopping.is_set():
                if self.open.is_set():
                    try:
                        upstream = socket.create_connection((HOST, self.target_port), timeout=1.0)
                        break
                    except OSError:
                        now = time.monotonic()
                        unreachable_since = unreachable_since or now
                        if now - unreachable_since > 3.0:
                            break
                ready, _, _ = select.select([conn], [], [], 0.2)
                if ready:
                    data = conn.recv(65536)
                    if not data:
                        break
                    held.append(data)
            if upstream is None:
                self._close(conn)
                return
            upstream.settimeout(None)
            self._track(upstream)
            for sock in (conn, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if held:
                upstream.sendall(b"".join(held))
        except (OSError, ValueError):
            self._close(conn)
            if upstream is not None:
                self._close(upstream)
            return
        for a, b, forward in ((conn, upstream, True), (upstream, conn, False)):
            threading.Thread(target=self._pump, args=(a, b, forward), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, forward: bool) -> None:
        """Forward a to b, each chunk `delay` seconds after it was read (the link's latency, in
        its direction), nothing while cut; what was read is delivered before a hang-up passes."""
        queue: deque[tuple[float, bytes]] = deque()
        eof = False
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if self.open.is_set():
                    while queue and queue[0][0] <= now:
                        b.sendall(queue.popleft()[1])
                if eof and not queue:
                    break
                wait = 0.25
                if queue and self.open.is_set():
                    wait = max(0.0, min(wait, queue[0][0] - now))
                if eof:
                    time.sleep(wait)
                    continue
                if not select.select([a], [], [], wait)[0]:
                    continue
                data = a.recv(65536)
                if not data:
                    eof = True
                    continue
                queue.append((time.monotonic() + (self.delay_fwd if forward else self.delay_back), data))
        except (OSError, ValueError):
            pass
        finally:
            self._close(a)
            self._close(b)

    def cut(self) -> None:
        self.open.clear()

    def heal(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.open.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            sockets = list(self.sockets)
        for s in sockets:
            self._close(s)


# --- the ensemble ------------------------------------------------------------------------------


@dataclass
class Cluster:
    kind: str
    home: Path
    servers: list[ServerProcess]
    proxies: dict[tuple[int, int], list[LinkProxy]]  # (src, dst) member numbers from 1
    stopping: threading.Event
    client_proxies: list[HoldingProxy] = field(default_factory=list)  # per member, when on
    drops: LoopbackDrops | None = None  # silent drops by port, when on

    @property
    def ensemble(self) -> Ensemble:
        return Ensemble(self.servers)

    @property
    def hosts(self) -> str:
        """The workers' connection string: through the client proxies when there are some."""
        if self.client_proxies:
            return ",".join(f"{HOST}:{p.port}" for p in self.client_proxies)
        return ",".join(s.hosts for s in self.servers)

    def server_names(self) -> dict[int, str]:
        """Port a client connects to -> the member's name (s1...), proxies included."""
        names = {s.port: f"s{k + 1}" for k, s in enumerate(self.servers)}
        names.update({p.port: f"s{k + 1}" for k, p in enumerate(self.client_proxies)})
        return names

    def silent_ports(self, a: int, b: int) -> tuple[list[int], list[int]]:
        """(dports, sports) whose packets carry member a's bytes to member b (numbers from 1):
        on a's connections through proxy (a, b), packets to the proxy's port; on b's
        connections through proxy (b, a), packets from it."""
        dports = [p.port for p in self.proxies.get((a, b), ())]
        sports = [p.port for p in self.proxies.get((b, a), ())]
        return dports, sports

    def cut(self, a: int, b: int) -> None:
        for key in ((a, b), (b, a)):
            for p in self.proxies.get(key, ()):
                p.cut()

    def heal_all(self) -> None:
        for ps in self.proxies.values():
            for p in ps:
                p.heal()
                p.delay_fwd = p.delay_back = 0.0

    def shutdown(self) -> None:
        """SIGCONT everything (a stopped process ignores SIGTERM), stop all members, close proxies."""
        for s in self.servers:
            if s.proc and s.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.proc.pid, signal.SIGCONT)
        with contextlib.suppress(Exception):
            self.ensemble.stop()
        for s in self.servers:  # whatever survived the stop
            with contextlib.suppress(Exception):
                s.kill()
        self.stopping.set()
        for ps in self.proxies.values():
            for p in ps:
                p.close()
        for c in self.client_proxies:
            c.close()
        if self.drops is not None:
            self.drops.close()


def make_cluster(
    kind: str,
    n: int,
    home: Path,
    partitions: bool,
    client_proxies: bool = False,
    nft: bool = False,
    read_only: bool = False,
) -> Cluster:
    stopping = threading.Event()
    members = members_on_free_ports(n, 0, free_port)
    proxies: dict[tuple[int, int], list[LinkProxy]] = {}
    if partitions:
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                if i != j:
                    peer = members[j - 1]
                    proxies[(i, j)] = [
                        LinkProxy(i, j, peer.quorum_port, stopping),
                        LinkProxy(i, j, peer.election_port, stopping),
                    ]
    servers = []
    for member in members:
        # Member i reaches every other member j through the proxies (i, j): its server.j lines
        # name the proxies' ports.
        via_proxies = {
            f"server.{j}": f"{HOST}:{q.port}:{e.port}"
            for (i, j), (q, e) in proxies.items()
            if i == member.sid
        }
        settings = {"tickTime": "500", "initLimit": "20", "syncLimit": "10", **via_proxies}
        if read_only:  # zkpy reads it from zoo.cfg; Apache from a system property (main sets it)
            settings["readonlymode.enabled"] = "true"
        servers.append(member_process(kind, home, member, members, settings))
    cluster = Cluster(kind, home, servers, proxies, stopping)
    if client_proxies:
        cluster.client_proxies = [HoldingProxy(f"s{k + 1}", s.port, stopping) for k, s in enumerate(servers)]
    if nft:
        cluster.drops = LoopbackDrops().open()
    return cluster


def signal_group(server: ServerProcess, sig: int) -> bool:
    if server.proc is None or server.proc.poll() is not None:
        return False
    try:
        os.killpg(server.proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


# --- the nemesis -------------------------------------------------------------------------------


#: Fault families beside kill -9 / SIGSTOP / held peer links, each with a flag to turn it off.
FAULT_FAMILIES = ("silent", "hold", "move")


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    """Heavy on short spans, with long ones now and then."""
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


class Nemesis(threading.Thread):
    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        t0: float,
        partitions: bool,
        families: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(daemon=True, name="nemesis")
        self.cluster, self.rng, self.t0, self.partitions = cluster, rng, t0, partitions
        self.families = families
        self.stop_event = threading.Event()
        self.faults: Counter[str] = Counter()
        self.events: list[str] = []
        self.killed: set[int] = set()  # member indices (0-based)
        self.paused: dict[int, float] = {}  # member -> resume time
        # network faults in force: (heal time, what, how to undo); one among peers and one on
        # client links at a time
        self.cuts: list[tuple[float, str, Callable[[], object]]] = []
        self.client_cuts: list[tuple[float, str, Callable[[], object]]] = []
        self.moved_clients = 0
        self.unexpected: list[str] = []
        self.error: str | None = None

    def note(self, kind: str, text: str) -> None:
        self.faults[kind] += 1
        line = f"{time.monotonic() - self.t0:7.1f}s nemesis: {text}"
        self.events.append(line)
        log(line)

    def leader(self) -> int | None:
        for k, s in enumerate(self.cluster.servers):
            if k in self.killed or k in self.paused:
                continue
            if s.mode() == "leader":
                return k
        return None

    def target(self, candidates: list[int]) -> tuple[int, bool]:
        """The leader half the time (when one is found among `candidates`), else a random one."""
        if self.rng.random() < 0.5:
            lead = self.leader()
            if lead is not None and lead in candidates:
                return lead, True
        return self.rng.choice(candidates), False

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # reported, never silent
            self.error = f"{type(e).__name__}: {e}"
            log(f"nemesis failed: {self.error}")

    def _run(self) -> None:
        servers = self.cluster.servers
        n = len(servers)
        max_down = (n - 1) // 2
        next_action = time.monotonic() + self.rng.uniform(2, 6)
        while not self.stop_event.is_set():
            now = time.monotonic()
            self.watch_exits()
            for k, when in list(self.paused.items()):
                if when <= now:
                    signal_group(servers[k], signal.SIGCONT)
                    del self.paused[k]
                    self.note("resume", f"SIGCONT s{k + 1}")
            for cuts in (self.cuts, self.client_cuts):
                for entry in list(cuts):
                    if entry[0] <= now:
                        cuts.remove(entry)
                        if entry[2]() is not False:  # False: a step of a fault, not its end
                            self.note("heal", f"healed: {entry[1]}")
            if now >= next_action:
                self.act(max_down)
                next_action = time.monotonic() + self.rng.uniform(2, 6)
            wake = min(
                [next_action, *self.paused.values(), *(c[0] for c in self.cuts), *(c[0] for c in self.client_cuts)]
            )
            self.stop_event.wait(max(0.05, min(0.5, wake - time.monotonic())))

    def watch_exits(self) -> None:
        for k, s in enumerate(self.cluster.servers):
            if k in self.killed or s.proc is None or s.proc.poll() is None:
                continue
            text = f"s{k + 1} exited unexpectedly (status {s.proc.returncode}); last log lines:\n{s.log_tail(15)}"
            self.unexpected.append(text)
            self.paused.pop(k, None)
            self.note("unexpected-exit", text)
            s.start(wait=None)

    def act(self, max_down: int) -> None:
        servers = self.cluster.servers
        n = len(servers)
        down = self.killed | set(self.paused)
        up = [k for k in range(n) if k not in down]
        actions = []
        if self.killed:
            actions += ["restart"] * 2
        if len(down) < max_down:
            actions += ["kill", "pause"]
        if self.partitions and not self.cuts:
            actions += ["isolate", "cut-link"]
            if "silent" in self.families and self.cluster.drops is not None:
                actions += ["silent"] * 2
            if "hold" in self.families:
                actions += ["slow-way"]
        if self.cluster.client_proxies and not self.client_cuts:
            if "hold" in self.families:
                actions += ["hold-clients"]
            if "move" in self.families:
                actions += ["move-clients"]
            if "silent" in self.families and self.cluster.drops is not None:
                actions += ["drop-clients"]
        if not actions:
            return
        action = self.rng.choice(actions)
        if action == "restart":
            k = self.rng.choice(sorted(self.killed))
            servers[k].start(wait=None)
            self.killed.discard(k)
            self.note("restart", f"restart s{k + 1}")
        elif action == "kill":
            k, lead = self.target(up)
            servers[k].kill()
            self.killed.add(k)
            self.note("kill-leader" if lead else "kill", f"kill -9 s{k + 1}{' (leader)' if lead else ''}")
        elif action == "pause":
            k, lead = self.target(up)
            if signal_group(servers[k], signal.SIGSTOP):
                span = self.rng.uniform(3, 8)
                self.paused[k] = time.monotonic() + span
                self.note(
                    "pause-leader" if lead else "pause",
                    f"SIGSTOP s{k + 1}{' (leader)' if lead else ''} for {span:.1f}s",
                )
        elif action in ("isolate", "cut-link"):
            if action == "isolate":
                k, lead = self.target(list(range(n)))
                links = [(k + 1, j + 1) for j in range(n) if j != k]
                what = f"s{k + 1}{' (leader)' if lead else ''} isolated from its peers (links held)"
                kind = "isolate-leader" if lead else "isolate"
            else:
                a, b = self.rng.sample(range(1, n + 1), 2)
                links, what, kind = [(a, b)], f"link s{a}<->s{b} held", "cut-link"
            for a, b in links:
                self.cluster.cut(a, b)

            def heal(links: list[tuple[int, int]] = links) -> None:
                for a, b in links:
                    for key in ((a, b), (b, a)):
                        for p in self.cluster.proxies[key]:
                            p.heal()

            # read-only mode needs the cut-off member to notice first (syncLimit, 5 s)
            span = self.rng.uniform(3, 15 if READ_ONLY_CLIENTS and action == "isolate" else 8)
            self.cuts.append((time.monotonic() + span, what, heal))
            self.note(kind, f"{what} for {span:.1f}s")
        elif action == "silent":
            self.silent_drop(n)
        elif action == "slow-way":
            self.slow_way(n)
        elif action in ("hold-clients", "move-clients", "drop-clients"):
            self.client_fault(action, n)

    def silent_drop(self, n: int) -> None:
        """Packets between members lost without a trace (nftables): both ways on one link, one
        way on one link, a member cut off both ways, or one way from or to all its peers."""
        drops = self.cluster.drops
        assert drops is not None
        shape = self.rng.choice(["link", "one-way", "isolate", "isolate-one-way"])
        directed: list[tuple[int, int]]
        if shape in ("link", "one-way"):
            a, b = self.rng.sample(range(1, n + 1), 2)
            directed = [(a, b)] if shape == "one-way" else [(a, b), (b, a)]
            what = f"s{a}->s{b}" if shape == "one-way" else f"s{a}<->s{b}"
            lead = False
        else:
            k, lead = self.target(list(range(n)))
            others = [j + 1 for j in range(n) if j != k]
            if shape == "isolate":
                directed = [(k + 1, j) for j in others] + [(j, k + 1) for j in others]
                what = f"s{k + 1} <-> all peers"
            elif self.rng.random() < 0.5:
                directed, what = [(k + 1, j) for j in others], f"s{k + 1} -> all peers (it still hears them)"
            else:
                directed, what = [(j, k + 1) for j in others], f"all peers -> s{k + 1} (it still speaks)"
            what += " (leader)" if lead else ""
        dports: list[int] = []
        sports: list[int] = []
        for a, b in directed:
            d, sp = self.cluster.silent_ports(a, b)
            dports += d
            sports += sp
        token = drops.drop(dports=dports, sports=sports)
        span = self.rng.uniform(3, 15 if READ_ONLY_CLIENTS and shape == "isolate" else 8)
        self.cuts.append((time.monotonic() + span, f"silent drop {what}", lambda: drops.undrop(token)))
        kind = {"link": "drop-link", "one-way": "drop-one-way"}.get(shape, "drop-isolate")
        self.note(kind + ("-leader" if lead else ""), f"silent drop {what} for {span:.1f}s")

    def slow_way(self, n: int) -> None:
        """One direction between two members made slow, not cut: every byte a sends b arrives
        0.1-2 s late (log-uniform, below syncLimit, so the link stays up while a's forwards and
        acks fall behind), half the time a follower's way to the leader, for 3-10 s."""
        lead = self.leader() if self.rng.random() < 0.5 else None
        if lead is not None:
            a = self.rng.choice([j for j in range(1, n + 1) if j != lead + 1])
            b = lead + 1
        else:
            a, b = self.rng.sample(range(1, n + 1), 2)
        delay = log_uniform(self.rng, 0.1, 2.0)
        for p in self.cluster.proxies[(a, b)]:
            p.delay_fwd = delay
        for p in self.cluster.proxies[(b, a)]:
            p.delay_back = delay

        def heal() -> None:
            for p in self.cluster.proxies[(a, b)]:
                p.delay_fwd = 0.0
            for p in self.cluster.proxies[(b, a)]:
                p.delay_back = 0.0

        span = self.rng.uniform(3, 10)
        what = f"s{a}->s{b}{' (to the leader)' if lead is not None else ''} slowed by {delay:.2f}s"
        self.cuts.append((time.monotonic() + span, what, heal))
        self.note("slow-way", f"{what} for {span:.1f}s")

    def client_fault(self, action: str, n: int) -> None:
        """On one member's client links: hold every byte (clients time out and move, their
        requests delivered late), move its clients away at once with their requests held, or
        drop its client packets silently (nftables)."""
        proxies = self.cluster.client_proxies
        if action == "move-clients" and self.rng.random() < 0.5:  # where the clients are
            k, lead = max(range(n), key=lambda j: len(proxies[j].pairs)), False
        else:
            k, lead = self.target(list(range(n)))
        proxy = proxies[k]
        who = f"s{k + 1}{' (leader)' if lead else ''}"
        if action == "hold-clients":
            span = log_uniform(self.rng, 0.5, 10.0)
            proxy.hold()
            self.client_cuts.append((time.monotonic() + span, f"client links of {who} released", proxy.release))
            self.note(action, f"hold the client links of {who} for {span:.1f}s (connections kept)")
        elif action == "move-clients":
            # hold first, so that each client there sends its next request into the held link,
            # then cut them off (they move at once) and deliver those requests later
            before = self.rng.uniform(0.1, 0.5)
            span = log_uniform(self.rng, 0.05, 3.0)
            proxy.hold()

            def cut_off() -> bool:
                moved = proxy.move_clients()
                self.moved_clients += moved
                self.note("moved", f"{moved} clients cut off {who}; their held requests go in {span:.2f}s")
                self.client_cuts.append(
                    (time.monotonic() + span, f"held requests of {who} delivered", proxy.release)
                )
                return False

            self.client_cuts.append((time.monotonic() + before, f"clients of {who} moved", cut_off))
            self.note(action, f"hold the client links of {who}, move its clients off in {before:.2f}s")
        else:
            drops = self.cluster.drops
            assert drops is not None
            span = self.rng.uniform(2, 8)
            token = drops.drop(dports=[proxy.port], sports=[proxy.port])
            self.client_cuts.append(
                (time.monotonic() + span, f"client packets of {who}", lambda: drops.undrop(token))
            )
            self.note(action, f"silent drop of {who}'s client packets for {span:.1f}s")

    def heal_everything(self) -> None:
        """SIGCONT paused members, undo every network fault, restart killed members (and any
        that died)."""
        servers = self.cluster.servers
        for k in list(self.paused):
            signal_group(servers[k], signal.SIGCONT)
        self.paused.clear()
        for cuts in (self.cuts, self.client_cuts):
            for entry in cuts:
                entry[2]()
            cuts.clear()
        self.cluster.heal_all()
        for proxy in self.cluster.client_proxies:
            proxy.release()
        if self.cluster.drops is not None:
            self.cluster.drops.clear()
        self.watch_exits()
        for k in sorted(self.killed):
            servers[k].start(wait=None)
        self.killed.clear()


# --- the clients -------------------------------------------------------------------------------


@dataclass
class Shared:
    registers: list[str]
    ops: list[Operation] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)  # definite failures by error
    moved_seconds: set[int] = field(default_factory=set)  # seconds of the run with a SessionMoved
    acked_seq: dict[str, bytes] = field(default_factory=dict)  # acknowledged /seq names -> value
    lock: threading.Lock = field(default_factory=threading.Lock)


def stamp_replies() -> None:
    """Make kazoo keep, on the client, the reply header's zxid and the port of the server (or
    client proxy) of the last reply to a request: `client.last_zxid` is not that (ping replies
    change it too), and the async results kazoo hands out for create and sync are wrappers the
    reply never touches. A worker has one request in flight, so the stamp read when its result
    arrives is its reply's. The history checker uses the zxids (session order across znodes,
    FIFO order, monotonic reads across servers); the port names the server in its reports."""
    from kazoo.protocol.connection import ConnectionHandler

    original = ConnectionHandler._read_response
    if getattr(original, "zkpy_stamped", False):
        return

    def _read_response(self, header, buffer, offset):  # type: ignore[no-untyped-def]
        port = None
        with contextlib.suppress(OSError, AttributeError):
            port = self._socket.getpeername()[1]
        self.client.zkpy_reply = (header.zxid, port)
        return original(self, header, buffer, offset)

    _read_response.zkpy_stamped = True  # type: ignore[attr-defined]
    ConnectionHandler._read_response = _read_response  # type: ignore[method-assign]


#: --read-only: workers' clients accept read-only servers (kazoo's read_only), servers run in
#: read-only mode when cut off from a quorum
READ_ONLY_CLIENTS = False


def new_client(hosts: str, session_timeout: float, read_only: bool = False) -> KazooClient:
    return KazooClient(
        hosts=hosts,
        timeout=session_timeout,
        connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
        read_only=read_only,
    )


class Worker(threading.Thread):
    def __init__(
        self, n: int, hosts: str, shared: Shared, seed: int, session_timeout: float, t0: float
    ) -> None:
        super().__init__(daemon=True, name=f"w{n}")
        self.n, self.hosts, self.shared, self.t0 = n, hosts, shared, t0
        self.rng = random.Random(seed)
        self.session_timeout = session_timeout
        self.server_names: dict[int, str] = {}  # port -> member name, for the reports
        self.stop_event = threading.Event()
        self.zk: KazooClient | None = None
        self.eph_session: int | None = None
        self.rewrite: str | None = None  # a register whose last write had an unknown outcome
        self.counter = 0
        self.error: str | None = None

    def server_name(self, port: object) -> str | None:
        """The member that answered (by the port of the last reply), " ro" when read-only."""
        name = self.server_names.get(port) if isinstance(port, int) else None
        if name is not None and getattr(self.zk, "client_state", None) == "CONNECTED_RO":
            name += " ro"
        return name

    def session(self) -> int | None:
        return self.zk._session_id if self.zk is not None else None

    def call(self, kind: str, path: str, start, *, value=None, version=None, history: bool = True):
        """Run one request (start() returns kazoo's async result) and record it. Returns
        (outcome, result, the recorded operation)."""
        assert self.zk is not None
        sid0 = self.session()
        invoked = time.monotonic()
        result = None
        error = None
        self.zk.zkpy_reply = None  # type: ignore[union-attr]
        try:
            result = start().get(timeout=OP_TIMEOUT)
            outcome = "ok"
        except Exception as e:  # kazoo's and zkpy.client's errors have the same names
            if type(e).__name__ in DEFINITE_NAMES:
                outcome, error = "fail", DEFINITE_NAMES[type(e).__name__]
            else:
                outcome, error = "unknown", type(e).__name__
        completed = time.monotonic()
        sid1 = self.session()
        if outcome == "unknown":
            sid = sid0
        else:
            sid = sid1
            if sid0 != sid1 and kind in ("get", "sync"):
                outcome = "unknown"  # cannot tell which session it belongs to: carries no information
        client = f"w{self.n}#{sid or 0:x}"
        rec_value, rec_version = value, version
        if kind == "get" and outcome == "ok":
            rec_value, rec_version = result[0], result[1].version
        zxid, port = getattr(self.zk, "zkpy_reply", None) or (None, None)
        if outcome != "ok":
            zxid = None
        op = Operation(
            client,
            kind,
            path,
            rec_value,
            rec_version,
            invoked - self.t0,
            completed - self.t0 if outcome != "unknown" else None,
            outcome,
            zxid if isinstance(zxid, int) and zxid > 0 else None,
            error,
            self.server_name(port),
        )
        if outcome == "unknown" and kind in ("cas", "set"):
            self.rewrite = path
        label = {"create": "create-seq"}.get(kind, kind) if history else kind
        with self.shared.lock:
            if history:
                self.shared.ops.append(op)
            self.shared.counts[(label, outcome)] += 1
            if error and outcome == "unknown":
                self.shared.errors[error] += 1
            elif error:
                self.shared.refusals[error] += 1
                if error == "SessionMoved":
                    self.shared.moved_seconds.add(int(invoked - self.t0))
        if error == "NotReadOnly":
            self.stop_event.wait(0.05)  # on a read-only server until the client finds a writable one
        return outcome, result, op

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            log(f"worker w{self.n} failed: {self.error}")

    def connect(self) -> None:
        """A started client in self.zk, or an exception (retried)."""
        if self.zk is None:
            self.zk = new_client(self.hosts, self.session_timeout, READ_ONLY_CLIENTS)
        self.zk.start(timeout=15)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.connect()
                break
            except Exception:
                self.stop_event.wait(1.0)
        while not self.stop_event.is_set():
            if not self.zk.connected:
                self.stop_event.wait(0.1)
                continue
            self.step()

    def value(self) -> bytes:
        self.counter += 1
        return f"w{self.n}-{self.counter}".encode()

    def step(self) -> None:
        zk = self.zk
        assert zk is not None
        sid = self.session()
        if sid is not None and sid != self.eph_session:
            path = f"/eph/w{self.n}"
            outcome, _, _ = self.call(
                "ephemeral", path, lambda: zk.create_async(path, self.value(), ephemeral=True), history=False
            )
            # NodeExists: an earlier attempt of this session went through (or an expired
            # session's ephemeral is still there: it goes when that session expires)
            if outcome == "ok" or (outcome == "fail" and self.session() == sid):
                self.eph_session = sid
            return
        r = self.rng.random()
        reg = self.rng.choice(self.shared.registers)
        if self.rewrite is not None:  # a write was lost in a fault: write its register again, as a
            # client that retries does; if the lost one lands after this one, FIFO order broke
            reg, self.rewrite = self.rewrite, None
            value = self.value()
            self.call("set", reg, lambda: zk.set_async(reg, value), value=value)
            return
        if r < 0.35:  # compare-and-set: read, then write at the version read
            outcome, result, _ = self.call("get", reg, lambda: zk.get_async(reg))
            if outcome == "ok":
                version = result[1].version
                value = self.value()
                self.call(
                    "cas",
                    reg,
                    lambda: zk.set_async(reg, value, version=version),
                    value=value,
                    version=version,
                )
        elif r < 0.45:  # a blind set: a late one is not cancelled by a version check, so a write
            # applied out of its session's order shows (FIFO client order)
            value = self.value()
            self.call("set", reg, lambda: zk.set_async(reg, value), value=value)
        elif r < 0.6:  # sync, then read
            outcome, _, _ = self.call("sync", reg, lambda: zk.sync_async(reg))
            if outcome == "ok":
                self.call("get", reg, lambda: zk.get_async(reg))
        elif r < 0.7:
            self.call("get", reg, lambda: zk.get_async(reg))
        else:  # sequential create
            value = self.value()
            outcome, result, op = self.call(
                "create", "/seq/n-", lambda: zk.create_async("/seq/n-", value, sequence=True), value=value
            )
            if outcome == "ok":
                with self.shared.lock:
                    op.path = result  # the name the server chose
                    self.shared.acked_seq[result] = value

    def close(self) -> None:
        if self.zk is None:
            return
        with contextlib.suppress(Exception):
            self.zk.stop()
        with contextlib.suppress(Exception):
            self.zk.close()


class _Done:
    """kazoo's async result, for a blocking zkpy.client call: get() runs it."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def get(self, timeout: float):
        return self.fn()


class _ZkpyAsync:
    """The few kazoo *_async methods Worker.step uses, over zkpy.client's blocking SyncClient."""

    def __init__(self, hosts: str, session_timeout: float) -> None:
        from zkpy.client.sync import SyncClient

        self.client = SyncClient(hosts, timeout=session_timeout, auto_restart=True)

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    @property
    def _session_id(self) -> int:
        return int(self.client.session_id)

    def get_async(self, path: str):
        return _Done(lambda: self.client.get(path))

    def set_async(self, path: str, value: bytes, version: int = -1):
        return _Done(lambda: self.client.set(path, value, version=version))

    def sync_async(self, path: str):
        return _Done(lambda: self.client.sync(path))

    def create_async(self, path: str, value: bytes, ephemeral: bool = False, sequence: bool = False):
        return _Done(lambda: self.client.create(path, value, ephemeral=ephemeral, sequence=sequence))

    def stop(self) -> None:
        self.client.close()

    def close(self) -> None:
        pass


class Reader(Worker):
    """--read-only: a kazoo session on two neighbouring members only, reading (get, sync then
    get) and never writing, so that when one of them is cut off and turns read-only, the reader
    lands on it half the time after its next reconnect: monotonic reads across servers, a
    read-only one included (a read-only server must refuse a session that saw newer state)."""

    def step(self) -> None:
        zk = self.zk
        assert zk is not None
        reg = self.rng.choice(self.shared.registers)
        if self.rng.random() < 0.3:
            outcome, _, _ = self.call("sync", reg, lambda: zk.sync_async(reg))
            if outcome != "ok":
                return
        self.call("get", reg, lambda: zk.get_async(reg))
        self.stop_event.wait(0.01)  # reads are cheap: leave the CPU to the writers


class ZkpyWorker(Worker):
    """The same workload through zkpy.client (its blocking facade) instead of kazoo."""

    def connect(self) -> None:
        self.zk = _ZkpyAsync(self.hosts, self.session_timeout)  # type: ignore[assignment]


def run_bounded(fn, seconds: float) -> bool:
    """Run fn in a daemon thread; False when it did not finish in `seconds`."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


# --- the run -----------------------------------------------------------------------------------


def final_views(cluster: Cluster, shared: Shared, t0: float, session_timeout: float) -> dict[int, dict]:
    """Each server alone: sync and read every register and /seq's children. The reads join the
    history as a session of their own per server."""
    views: dict[int, dict] = {}
    for k, s in enumerate(cluster.servers):
        view: dict = {"registers": {}, "seq": None, "error": None}
        zk = new_client(s.hosts, session_timeout)
        zk.connection_retry = KazooRetry(max_tries=20, delay=0.2, max_delay=1.0)
        try:
            zk.start(timeout=30)
            name = f"final-s{k + 1}"
            for reg in shared.registers:
                inv = time.monotonic()
                zk.sync(reg)
                shared.ops.append(
                    Operation(name, "sync", reg, None, None, inv - t0, time.monotonic() - t0, "ok")
                )
                inv = time.monotonic()
                data, stat = zk.get(reg)
                shared.ops.append(
                    Operation(name, "get", reg, data, stat.version, inv - t0, time.monotonic() - t0, "ok")
                )
                view["registers"][reg] = (data, stat.version)
            zk.sync("/seq")
            view["seq"] = set(zk.get_children("/seq"))
        except Exception as e:
            view["error"] = f"{type(e).__name__}: {e}"
        finally:
            run_bounded(lambda zk=zk: (zk.stop(), zk.close()), 15)
        views[k] = view
    return views


def wait_ephemerals_gone(cluster: Cluster, session_timeout: float) -> dict[int, list[str]]:
    """Poll /eph on every server until it is empty everywhere (bounded); what is left."""
    deadline = time.monotonic() + 3 * session_timeout + 30
    left: dict[int, list[str]] = {}
    clients = []
    try:
        for s in cluster.servers:
            zk = new_client(s.hosts, session_timeout)
            clients.append(zk)
            with contextlib.suppress(Exception):
                zk.start(timeout=30)
        while True:
            left = {}
            for k, zk in enumerate(clients):
                if not zk.connected:
                    left[k] = ["(server not reachable)"]
                    continue
                with contextlib.suppress(Exception):
                    zk.sync("/eph")
                    children = zk.get_children("/eph")
                    if children:
                        left[k] = sorted(children)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(1.0)
    finally:
        for zk in clients:
            run_bounded(lambda zk=zk: (zk.stop(), zk.close()), 15)


def longest_stretch(seconds: set[int]) -> int:
    """The longest run of consecutive seconds in `seconds` (a client refused with SessionMoved
    for every write through one server shows as a stretch, scattered refusals do not)."""
    longest = 0
    for second in seconds:
        if second - 1 not in seconds:
            end = second
            while end + 1 in seconds:
                end += 1
            longest = max(longest, end - second + 1)
    return longest


def write_history(shared: Shared, path: Path) -> None:
    """The history as JSON lines, one zkpy.testing.history.Operation each (values as text)."""
    with open(path, "w") as f:
        for op in shared.ops:
            d = asdict(op)
            d["value"] = None if op.value is None else op.value.decode(errors="replace")
            f.write(json.dumps(d) + "\n")


def keep_logs(cluster: Cluster, shared: Shared, dest: Path, summary: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(cluster.servers):
        for f in (s.log_path, s.config_path):
            with contextlib.suppress(OSError):
                shutil.copy(f, dest / f"s{k + 1}-{f.name}")
        with contextlib.suppress(OSError):
            shutil.copytree(s.data_dir, dest / f"s{k + 1}-data", dirs_exist_ok=True)
    write_history(shared, dest / "history.jsonl")
    (dest / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=["zkpy", "apache"], default="zkpy")
    ap.add_argument("--servers", type=int, choices=[3, 5], default=3)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of faults and load")
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--zkpy-clients", type=int, default=0, help="more workers, through zkpy.client")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--registers", type=int, default=3)
    ap.add_argument("--session-timeout", type=float, default=6.0)
    ap.add_argument("--no-partitions", action="store_true", help="no peer-link proxies, no link cuts")
    ap.add_argument(
        "--no-silent", action="store_true", help="no silent packet drops (nftables; off by itself without nft/root)"
    )
    ap.add_argument("--no-holds", action="store_true", help="no held client links")
    ap.add_argument("--no-moves", action="store_true", help="no clients moved off a server with requests in flight")
    ap.add_argument(
        "--read-only",
        action="store_true",
        help="servers in read-only mode when cut off from a quorum, clients that accept them",
    )
    ap.add_argument(
        "--no-zxids", action="store_true", help="check the history without reply zxids (no cross-znode session order)"
    )
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy logs, data and history here (kept anyway on a problem)")
    ap.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    ap.add_argument("--history", type=Path, default=None, help="write the history (JSON lines) here")
    args = ap.parse_args(argv)
    logging.getLogger("kazoo").setLevel(logging.ERROR)  # one "Connection dropped" per fault and client
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    partitions = not args.no_partitions
    families = set(FAULT_FAMILIES)
    for flag, family in ((args.no_silent, "silent"), (args.no_holds, "hold"), (args.no_moves, "move")):
        if flag:
            families.discard(family)
    if "silent" in families and (why := unavailable()) is not None:
        log(f"no silent drops: {why}")
        families.discard("silent")
    log(
        f"jepsen: --server {args.server} --servers {args.servers} --duration {args.duration:g} "
        f"--clients {args.clients} --zkpy-clients {args.zkpy_clients} --seed {seed}"
        f"{'' if partitions else ' --no-partitions'}{' --read-only' if args.read_only else ''} faults: kill, pause"
        f"{', held peer links' if partitions else ''}{''.join(', ' + f for f in sorted(families))}"
    )

    # Ctrl-C and SIGTERM both unwind through the finally blocks below
    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    home = Path(tempfile.mkdtemp(prefix=f"zkpy-jepsen-{args.server}-"))
    stamp_replies()
    global READ_ONLY_CLIENTS
    READ_ONLY_CLIENTS = args.read_only
    if args.read_only and args.server == "apache":
        os.environ["JAVA_TOOL_OPTIONS"] = (
            os.environ.get("JAVA_TOOL_OPTIONS", "") + " -Dreadonlymode.enabled=true"
        ).strip()
    def build() -> Cluster:
        return make_cluster(
            args.server,
            args.servers,
            home,
            partitions,
            client_proxies=bool(families & {"hold", "move", "silent"}),
            nft="silent" in families,
            read_only=args.read_only,
        )

    cluster = build()
    workers: list[Worker] = []
    nemesis: Nemesis | None = None
    shared = Shared([f"/registers/r{i}" for i in range(args.registers)])
    started = time.monotonic()
    summary: dict = {"server": args.server, "servers": args.servers, "seed": seed, "duration": args.duration}
    problems: list[str] = []
    status = 0
    try:
        failure: Exception | None = None
        for attempt in range(3):
            for s in cluster.servers:
                s.start(wait=None)
            try:
                cluster.ensemble.wait_serving(120)
                break
            except Exception as e:
                if "already in use" not in str(e) or attempt == 2:
                    failure = e
                    break
                # A port picked free was taken before its server bound it (an outgoing connection's
                # ephemeral port, say): start again on other ports.
                log(f"ensemble did not start ({e}); again on other ports")
                cluster.shutdown()
                shutil.rmtree(home, ignore_errors=True)
                Path(home).mkdir(parents=True)
                cluster = build()
        if failure is not None:
            log(f"ensemble did not start: {failure}")
            dest = args.keep_logs or Path(
                f"/tmp/jepsen-{args.server}-{args.servers}-seed{seed}-{int(time.time())}"
            )
            keep_logs(cluster, shared, dest, summary)
            log(f"logs kept in {dest}")
            return 2
        log(f"ensemble serving: {cluster.hosts} (in {time.monotonic() - started:.1f}s, home {home})")
        admin = new_client(cluster.hosts, args.session_timeout)
        admin.start(timeout=30)
        try:
            for path in ("/seq", "/eph", "/registers"):
                admin.ensure_path(path)
            for reg in shared.registers:
                admin.create(reg, b"init")
        finally:
            run_bounded(lambda: (admin.stop(), admin.close()), 15)
        initial = {reg: (b"init", 0) for reg in shared.registers}

        t0 = time.monotonic()
        for i in range(args.clients + args.zkpy_clients):
            kind = Worker if i < args.clients else ZkpyWorker
            w = kind(i + 1, cluster.hosts, shared, rng.randrange(1 << 31), args.session_timeout, t0)
            w.server_names = cluster.server_names()
            workers.append(w)
            w.start()
        n_workers = len(workers)
        if args.read_only:
            hosts = cluster.hosts.split(",")
            for k in range(len(hosts)):
                pair = f"{hosts[k]},{hosts[(k + 1) % len(hosts)]}"
                r = Reader(n_workers + k + 1, pair, shared, rng.randrange(1 << 31), args.session_timeout, t0)
                r.server_names = cluster.server_names()
                workers.append(r)
                r.start()
        nemesis = Nemesis(cluster, random.Random(rng.randrange(1 << 31)), t0, partitions, frozenset(families))
        nemesis.start()
        end = t0 + args.duration
        last_progress = t0
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            if time.monotonic() - last_progress >= 15:
                last_progress = time.monotonic()
                with shared.lock:
                    ok = sum(c for (_, o), c in shared.counts.items() if o == "ok")
                    total = sum(shared.counts.values())
                log(f"{last_progress - t0:6.0f}s: {total} operations, {ok} ok")

        log("stopping the nemesis and the workers")
        nemesis.stop_event.set()
        nemesis.join(10)
        for w in workers:
            w.stop_event.set()
        for w in workers:
            w.join(OP_TIMEOUT + 5)
        load_seconds = time.monotonic() - t0

        log("healing: SIGCONT, links, restarts")
        nemesis.heal_everything()
        try:
            cluster.ensemble.wait_serving(180)
        except Exception as e:
            log(f"the ensemble did not heal: {e}")
            problems.append(f"ensemble did not serve again within 180 s after healing: {e}")
            status = 2
        healed_after = time.monotonic() - t0 - load_seconds
        if status == 0:
            log(f"every server serves ({healed_after:.1f}s after the load stopped); closing worker sessions")
        for w in workers:
            run_bounded(w.close, 20)

        views = final_views(cluster, shared, t0, args.session_timeout)
        eph_left = wait_ephemerals_gone(cluster, args.session_timeout)

        # --- verdicts
        acked = set(shared.acked_seq)
        lost_seq: dict[str, list[str]] = {}
        for k, view in views.items():
            if view["error"]:
                problems.append(f"s{k + 1}: final read failed: {view['error']}")
                continue
            names = {f"/seq/{c}" for c in view["seq"]}
            missing = sorted(acked - names)
            if missing:
                lost_seq[f"s{k + 1}"] = missing
        lost_any = sorted({m for ms in lost_seq.values() for m in ms})
        # every acknowledged compare-and-set and set bumps its register's version once
        cas_acked = Counter(op.path for op in shared.ops if op.kind in ("cas", "set") and op.outcome == "ok")
        cas_unknown = Counter(
            op.path for op in shared.ops if op.kind in ("cas", "set") and op.outcome == "unknown"
        )
        lost_cas: dict[str, int] = {}
        for reg in shared.registers:
            versions = [v["registers"][reg][1] for v in views.values() if not v["error"]]
            if versions and min(versions) < cas_acked[reg]:
                lost_cas[reg] = cas_acked[reg] - min(versions)
            if versions and max(versions) > cas_acked[reg] + cas_unknown[reg]:
                problems.append(
                    f"{reg}: version {max(versions)} exceeds acknowledged+unknown compare-and-sets and sets "
                    f"({cas_acked[reg]}+{cas_unknown[reg]})"
                )
        good_views = {k: v for k, v in views.items() if not v["error"]}
        disagree = []
        if good_views:
            ref_k = min(good_views)
            ref = good_views[ref_k]
            for k, v in good_views.items():
                if v["seq"] != ref["seq"] or v["registers"] != ref["registers"]:
                    disagree.append(f"s{k + 1} differs from s{ref_k + 1}")
        if lost_any:
            problems.append(f"{len(lost_any)} acknowledged sequential creates missing: {lost_seq}")
        if lost_cas:
            problems.append(f"acknowledged compare-and-sets and sets lost (register: count): {lost_cas}")
        if disagree:
            problems.append(f"servers disagree: {disagree}")
        if eph_left:
            problems.append(
                f"ephemerals left after every session closed/expired: { {f's{k + 1}': v for k, v in eph_left.items()} }"
            )
        if nemesis.unexpected:
            problems.append(f"{len(nemesis.unexpected)} unexpected server exits")
        for w in workers:
            if w.error:
                problems.append(f"worker w{w.n} crashed: {w.error}")
        if nemesis.error:
            problems.append(f"nemesis crashed: {nemesis.error}")

        log(f"checking the history ({len(shared.ops)} operations)")
        dropped_packets = cluster.drops.dropped_packets() if cluster.drops is not None else 0
        late = sum(p.late for p in cluster.client_proxies)
        result = History(shared.ops, initial=initial, check_zxids=not args.no_zxids).check()
        if not result.ok:
            problems.append(f"history check: {len(result.anomalies)} anomalies")
        elapsed = time.monotonic() - started

        # --- report
        print("\n==== jepsen report ====")
        print(
            f"server {args.server} x{args.servers}, seed {seed}, {args.clients} kazoo + "
            f"{args.zkpy_clients} zkpy.client clients, "
            f"partitions {'on' if partitions else 'off'}, faults {', '.join(sorted(families)) or 'classic'}"
        )
        print(f"load {load_seconds:.1f}s, healed in {healed_after:.1f}s, elapsed {elapsed:.1f}s")
        print("operations (kind: ok / fail / unknown):")
        kinds = sorted({k for k, _ in shared.counts})
        for kind in kinds:
            c = [shared.counts[(kind, o)] for o in ("ok", "fail", "unknown")]
            print(f"  {kind:12s} {c[0]:7d} {c[1]:7d} {c[2]:7d}")
        if shared.errors:
            print(f"unknown outcomes by error: {dict(shared.errors.most_common())}")
        if shared.refusals:
            print(f"definite failures by error: {dict(shared.refusals.most_common())}")
        if shared.moved_seconds:
            print(
                f"SessionMoved in {len(shared.moved_seconds)} seconds of the run, "
                f"longest stretch {longest_stretch(shared.moved_seconds)} s"
            )
        print(f"faults: {dict(sorted(nemesis.faults.items()))}")
        with_zxid = sum(1 for op in shared.ops if op.zxid is not None)
        read_only_ops = sum(1 for op in shared.ops if op.server is not None and op.server.endswith(" ro"))
        print(
            f"packets dropped silently: {dropped_packets}; clients moved: {nemesis.moved_clients}; "
            f"requests delivered after their client left: {late}; operations with a reply zxid: {with_zxid}; "
            f"answered by a read-only server: {read_only_ops}"
        )
        print(f"acknowledged sequential creates: {len(acked)}; missing from some server: {len(lost_any)}")
        print(
            f"acknowledged compare-and-sets and sets: {sum(cas_acked.values())}; lost: {sum(lost_cas.values())}"
        )
        for k, v in views.items():
            regs = {r: (d.decode(errors="replace"), ver) for r, (d, ver) in v["registers"].items()}
            print(
                f"  s{k + 1} view: {len(v['seq'] or ())} /seq children, registers {regs}"
                f"{'  ERROR ' + v['error'] if v['error'] else ''}"
            )
        print(f"servers disagreeing: {disagree or 'none'}")
        print(f"ephemerals left: {eph_left or 'none'}")
        for text in nemesis.unexpected:
            print(f"UNEXPECTED EXIT: {text}")
        print(f"history check: {result.report()}")
        print(f"problems: {problems or 'none'}")
        summary.update(
            {
                "operations": {f"{k}:{o}": c for (k, o), c in sorted(shared.counts.items())},
                "unknown_errors": dict(shared.errors),
                "definite_failures": dict(shared.refusals),
                "session_moved_seconds": len(shared.moved_seconds),
                "session_moved_longest_stretch_s": longest_stretch(shared.moved_seconds),
                "faults": dict(nemesis.faults),
                "fault_families": sorted(families),
                "dropped_packets": dropped_packets,
                "moved_clients": nemesis.moved_clients,
                "late_requests": late,
                "read_only": args.read_only,
                "read_only_operations": read_only_ops,
                "zxid_checks": not args.no_zxids,
                "acked_seq": len(acked),
                "lost_seq": len(lost_any),
                "acked_cas": sum(cas_acked.values()),
                "lost_cas": sum(lost_cas.values()),
                "disagree": disagree,
                "ephemerals_left": len(eph_left),
                "unexpected_exits": len(nemesis.unexpected),
                "history_ok": result.ok,
                "anomalies": [a.report() for a in result.anomalies],
                "history_operations": len(shared.ops),
                "elapsed": round(elapsed, 1),
                "problems": problems,
                "nemesis_events": nemesis.events,
            }
        )
        if problems or args.keep_logs:  # kept on a problem, or always when --keep-logs names a place
            status = status or (1 if problems else 0)
            dest = args.keep_logs or Path(
                f"/tmp/jepsen-{args.server}-{args.servers}-seed{seed}-{int(time.time())}"
            )
            keep_logs(cluster, shared, dest, summary)
            print(f"logs, configs, data and history kept in {dest}")
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2, default=str))
        if args.history:
            write_history(shared, args.history)
        print(f"exit status {status}")
        return status
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        if nemesis is not None:
            nemesis.stop_event.set()
            nemesis.join(10)  # not in the middle of starting a server when everything stops
        for w in workers:
            w.stop_event.set()
        for w in workers:
            run_bounded(w.close, 5)
        cluster.shutdown()
        shutil.rmtree(home, ignore_errors=True)
        signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
