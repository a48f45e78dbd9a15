#!/usr/bin/env python3
"""Hostile input on the quorum and election ports of a running 3-server ensemble, beside
well-behaved clients that must notice nothing.

    python scripts/fuzz_peer_ports.py [--duration 180] [--frames N] [--connections 8]
        [--slow-loris 24] [--hoarders 12] [--max-rss-mb 250] [--no-observer-slot] [--seed N] [--json]

A fresh zkpy ensemble of three voters starts on 127.0.0.1 (zkpy.testing.procs). Its config also
names a fourth server, an observer that is never started (--no-observer-slot leaves it out): a
configured server that is down, as in any real ensemble now and then. Its sid is what lets a
forger go through the leader's whole learner handshake without pushing out a real server.

Fuzzing connections (threads in a child process) send, to the quorum port (peer_port) and the
election port of every server (the leader's quorum port gets most of the quorum traffic):

- junk before any handshake: random bytes; frames with a bad CRC; frames with a valid CRC and
  random msgpack payloads (real and made-up tags, wrong arity, wrong types, huge and negative
  ints, floats, ext types, maps, nesting up to msgpack's own limit); truncated frames; length
  prefixes from 64 KiB + 1 up to MAX_FRAME and 2^32 - 1 followed by little or nothing;
- election port: a hello from a sid not in the config (and hellos of the wrong shape), a hello
  claiming a real server's sid followed by up to 400 well-formed votes in every state
  (LOOKING / FOLLOWING / LEADING / OBSERVING) for real and bogus leaders with old and huge
  zxids, peer epochs and election epochs; then junk or a vote signed by another sid;
- quorum port: "info" (FOLLOWERINFO) from strangers (unknown sids, sids of the wrong type), from
  every real voter (a second connection claiming a connected follower's sid; the leader's own
  sid) with old, current and huge epochs, and "ackepoch" / "acknl" / "ack" / "ping" / "request" /
  "sync" out of order; with the observer slot, a forged learner for that sid that goes through
  leaderinfo, ackepoch (valid, old, huge or ill-typed values), the sync, acknl, uptodate and
  then sends pings, acks and forwarded requests, well-formed and not, some of it never reading;
- slow-loris connections that send nothing, part of a header, or a header and part of a body,
  and stall (their time to be closed is reported), and "hoarders" that announce a frame just
  under each port's limit, send nearly all of it and stall (the cost of a stranger's buffer).

Meanwhile three well-behaved kazoo clients (one process, one client pinned to each server) do
create / get / set / get / delete round trips the whole time and check every reply; any error or
connection state change is a failure. The ensemble must notice nothing: the same leader and the
same epoch before and after (srvr), no election (mntr's election_time count) and no role change
seen by a monitor polling srvr every second.

Reported: frames and connections per port, connections the servers closed, what the slow-loris
and forged-learner connections met, server crashes, the good clients' round trips, errors and
max latency, elections and leader changes, each server's peak RSS (VmHWM) and error lines in the
servers' logs. Exit status 1 on a crash, a good-client error, a leader change, a new epoch, an
election, or a peak RSS above --max-rss-mb.

What is defended and what is not (the servers have no peer authentication, as Apache ZooKeeper
without quorum SASL):
- defended: junk of any shape costs only its own connection, never the server, and nothing of it
  stays behind when the connection ends; before a connection has said which server it is, a
  frame may be at most 64 KiB (quorum port; the election port's frames never more); a quorum
  connection that does not finish its handshake is closed after initLimit, an election
  connection that names no peer after 5 s; a hello or info from a sid not in the config (or not
  an int) is refused; a second quorum link claiming a learner that is synced and heard from is
  refused, so the real one keeps its link; a claimed sid keeps at most 4 election connections;
  well-formed votes that disagree with a settled ensemble change nothing in it; votes with
  numbers beyond 64 bits (election epochs beyond 2^62) and learner messages with fields of the
  wrong arity, type or range close that connection only.
- not defended: whoever can connect can claim a sid that is configured but not connected (here
  the observer slot) and act as that server: have the whole history or tree sent to it as often
  as it reconnects (the leader builds each sync on its event loop: one 4-minute run saw a good
  client wait 2.6 s once, against 0.3-0.4 s without the slot), forward writes, create and close
  sessions, keep sessions alive. Someone claiming a real sid during an election can sway it
  (votes are not authenticated). A learner still syncing can be replaced by a link claiming its
  sid. Connections are not limited in number (each costs a socket and a task until it is
  closed), and a forged learner that keeps pinging but never reads has the leader queue the
  proposal stream for it for as long as it keeps pinging.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import msgpack

from zkpy.ops.layout import members_on_free_ports
from zkpy.replication.wire import HEADER, MAX_FRAME, encode_frame
from zkpy.testing.procs import (
    START_ATTEMPTS,
    Ensemble,
    PortInUseError,
    ServerProcess,
    four_letter,
    free_port,
    member_process,
    status_kb,
)

MB = 1024 * 1024
JUTE_MAX = 0xFFFFF  # jute.maxbuffer's default; the leader's post-handshake limit is this + 64 KiB
STATES = ("LOOKING", "FOLLOWING", "LEADING", "OBSERVING")
TAGS = ("info", "ackepoch", "acknl", "ack", "ping", "request", "sync", "hello", "vote", "leaderinfo",
        "syncdata", "newleader", "uptodate", "proposal", "commit", "refused", "syncreply")  # fmt: skip
HUGE_INTS = (2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**64 - 1, -1, -(2**31), -(2**63))
OBSERVER_SID = 4


# -- frames ----------------------------------------------------------------------------------------
def raw_frame(payload: bytes, crc: int | None = None) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload) if crc is None else crc) + payload


def junk_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(13 if depth < 4 else 9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-5, 10)
    if kind == 3:
        return rng.choice(HUGE_INTS)
    if kind == 4:
        return rng.choice([0.5, -1.0, 1e308, float("inf"), float("nan"), 2.0])
    if kind == 5:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 20)))
    if kind == 6:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 7:
        return rng.choice(TAGS + STATES)
    if kind == 8:
        return msgpack.ExtType(rng.randrange(0, 128), rng.randbytes(rng.randrange(0, 8)))
    if kind in (9, 10):
        return [junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    if kind == 11:
        return {str(i): junk_value(rng, depth + 1) for i in range(rng.randrange(0, 4))}
    # deep nesting (msgpack unpacks up to ~1000 levels; Python's repr of it may not)
    inner: Any = rng.choice([1, "x", None])
    for _ in range(rng.choice([50, 500, 990, 1000, 1020])):
        inner = [inner]
    return inner


def junk_message(rng: random.Random) -> Any:
    """A random msgpack payload: mostly tagged lists of the wrong shape, sometimes not a list."""
    r = rng.random()
    if r < 0.15:
        return junk_value(rng)
    tag = rng.choice(TAGS) if r < 0.85 else junk_value(rng, 3)
    return [tag, *(junk_value(rng) for _ in range(rng.randrange(0, 8)))]


def junk_frame(rng: random.Random) -> bytes:
    try:
        payload = msgpack.packb(junk_message(rng), use_bin_type=True)
    except (ValueError, OverflowError):
        payload = msgpack.packb(["vote", 1], use_bin_type=True)
    return raw_frame(payload)


def bad_crc_frame(rng: random.Random) -> bytes:
    payload = msgpack.packb(rng.choice([["hello", 1], ["info", 1, 0, "participant"], ["ping", []]]))
    crc = (zlib.crc32(payload) + rng.randrange(1, 2**32)) % 2**32
    return raw_frame(payload, crc)


def vote(rng: random.Random, sid: int, real: list[int]) -> list[Any]:
    """Well-formed: every number within what a server accepts (64 bits; election epochs < 2^62)."""

    def num(top: int) -> int:
        return rng.choice([0, 1, 2, rng.randrange(0, 2**40), 2**31, 2**32, top - 1])

    leader = rng.choice([*real, OBSERVER_SID, 99, 0, -1, 2**63 - 1])
    return ["vote", sid, rng.choice(STATES), leader, num(2**63) if rng.random() < 0.8 else -1,
            num(2**63) if rng.random() < 0.8 else -1, num(2**62)]  # fmt: skip


def bad_vote(rng: random.Random, sid: int) -> list[Any]:
    return rng.choice([
        ["vote", sid + 1, "LOOKING", 1, 0, 0, 1],  # signed by another sid
        ["vote", sid, "LOOKING", 1, 0, 0],  # wrong arity
        ["vote", sid, "BOSS", 1, 0, 0, 1],
        ["vote", sid, "LEADING", 1, -5, 0, 1],
        ["vote", sid, "LEADING", 1, 0, 0, -1],
        ["vote", sid, "LEADING", "1", 0, 0, 1],
        ["vote", sid, "LEADING", 1, 0.5, 0, 1],
        ["vote", sid, "LEADING", True, 0, 0, 1],
        ["vote", sid, "LEADING", 1, 0, [0] * 3, 1],
        ["vote", sid, "LOOKING", 1, 2**64 - 1, 0, 1],
        ["vote", sid, "LOOKING", 1, 0, 0, 2**62],
        ["vote", sid, "LOOKING", 1, 0, 0, 2**64 - 1],
        ["vote", sid, "LOOKING" * 1000, 1, 0, 0, 1],
        ["hello", sid],
    ])  # fmt: skip


# -- the ensemble -----------------------------------------------------------------------------------
@dataclass
class Member:
    sid: int
    server: ServerProcess
    peer_port: int
    election_port: int


def start_ensemble(tmp: Path, observer_slot: bool) -> list[Member]:
    for attempt in range(1, START_ATTEMPTS + 1):
        # The observer slot (server 4) is configured but never started: a forged learner claims it.
        layout = members_on_free_ports(3, 1 if observer_slot else 0, free_port)
        members = [
            Member(m.sid, member_process("zkpy", tmp / f"a{attempt}", m, layout, {"forceSync": "no"}),
                   m.quorum_port, m.election_port)
            for m in layout[:3]
        ]  # fmt: skip
        ensemble = Ensemble([m.server for m in members])
        try:
            for m in members:
                m.server.start(wait=None)
            ensemble.wait_serving(90)
            return members
        except PortInUseError:
            ensemble.stop()
            if attempt == START_ATTEMPTS:
                raise
        except BaseException:
            ensemble.stop()
            raise
    raise AssertionError("unreachable")


def srvr(m: Member) -> dict[str, str]:
    try:
        text = four_letter(m.server.host, m.server.port, "srvr", timeout=3.0)
    except OSError:
        return {}
    return dict(re.findall(r"^([\w ]+): (.*)$", text, re.M))


def mntr(m: Member) -> dict[str, str]:
    try:
        text = four_letter(m.server.host, m.server.port, "mntr", timeout=3.0)
    except OSError:
        return {}
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def ensemble_view(members: list[Member]) -> dict[str, Any]:
    modes, epochs, elections = {}, {}, {}
    for m in members:
        s, t = srvr(m), mntr(m)
        modes[m.sid] = s.get("Mode")
        zxid = s.get("Zxid")
        epochs[m.sid] = int(zxid, 16) >> 32 if zxid else None
        elections[m.sid] = int(t.get("zk_cnt_election_time", -1))
    leaders = [sid for sid, mode in modes.items() if mode == "leader"]
    return {"modes": modes, "leader": leaders[0] if len(leaders) == 1 else None, "epochs": epochs,
            "elections": elections}  # fmt: skip


# -- fuzzing connections ---------------------------------------------------------------------------
@dataclass
class Target:
    sid: int
    kind: str  # "quorum" or "election"
    port: int

    @property
    def key(self) -> str:
        return f"s{self.sid}.{self.kind}"


@dataclass
class Stats:
    frames: Counter[str] = field(default_factory=Counter)  # by port
    connections: Counter[str] = field(default_factory=Counter)
    closed_by_server: Counter[str] = field(default_factory=Counter)
    scenarios: Counter[str] = field(default_factory=Counter)
    # scenario -> outcome -> count ("closed": the server hung up; "open": it kept the connection)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    refused_connect: int = 0
    errors: list[str] = field(default_factory=list)

    def outcome(self, scenario: str, what: str) -> None:
        self.outcomes.setdefault(scenario, Counter())[what] += 1

    def add(self, other: Stats) -> None:
        self.frames.update(other.frames)
        self.connections.update(other.connections)
        self.closed_by_server.update(other.closed_by_server)
        self.scenarios.update(other.scenarios)
        for k, v in other.outcomes.items():
            self.outcomes.setdefault(k, Counter()).update(v)
        self.refused_connect += other.refused_connect
        self.errors += other.errors[: 20 - len(self.errors)]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: dict(sorted(getattr(self, k).items()))
                             for k in ("frames", "connections", "closed_by_server", "scenarios")}  # fmt: skip
        d["outcomes"] = {k: dict(sorted(v.items())) for k, v in sorted(self.outcomes.items())}
        d["refused_connect"] = self.refused_connect
        d["errors"] = self.errors
        return d


class Conn:
    """A client socket that records what it sent and whether the server hung up."""

    def __init__(self, target: Target, stats: Stats, timeout: float = 5.0) -> None:
        self.target = target
        self.stats = stats
        self.sock = socket.create_connection(("127.0.0.1", target.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        stats.connections[target.key] += 1

    def send(self, frames: list[bytes]) -> bool:
        """False when the server already closed the connection."""
        try:
            self.sock.sendall(b"".join(frames))
        except OSError:
            self._server_closed()
            return False
        self.stats.frames[self.target.key] += len(frames)
        return True

    def _server_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.stats.closed_by_server[self.target.key] += 1

    def wait_closed(self, timeout: float) -> bool:
        """Read (and drop) what comes until the server closes, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    self._server_closed()
            except TimeoutError:
                return False
            except OSError:
                self._server_closed()
        return True

    def recv_message(self, timeout: float) -> list[Any] | None:
        """The next peer message, None when the server closed or said nothing in time."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= HEADER.size:
                length, _ = HEADER.unpack_from(self.buf, 0)
                if len(self.buf) >= HEADER.size + length:
                    payload = bytes(self.buf[HEADER.size : HEADER.size + length])
                    del self.buf[: HEADER.size + length]
                    return msgpack.unpackb(payload, raw=False, strict_map_key=False)  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            except OSError:
                self._server_closed()
                return None
            if not chunk:
                self._server_closed()
                return None
            self.buf += chunk

    def recv_tag(self, tag: str, timeout: float) -> list[Any] | None:
        """The next message tagged `tag`, skipping the broadcast (proposals, commits, pings)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv_message(left)
            if msg is None:
                return None
            if isinstance(msg, list) and msg[:1] == [tag]:
                return msg
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Fuzzer:
    def __init__(self, seed: int, members: list[dict[str, Any]], leader: int, epoch: int, observer_slot: bool,
                 stop: threading.Event, budget: list[int], lock: threading.Lock) -> None:  # fmt: skip
        self.rng = random.Random(seed)
        self.members = members
        self.real = [m["sid"] for m in members]
        self.leader = leader
        self.epoch = epoch
        self.observer_slot = observer_slot
        self.stop = stop
        self.budget = budget  # [frames left for all fuzzers]; <= 0: stop
        self.lock = lock
        self.stats = Stats()

    def target(self, kind: str) -> Target:
        rng = self.rng
        if kind == "quorum" and rng.random() < 0.6:
            m = next(m for m in self.members if m["sid"] == self.leader)
        else:
            m = rng.choice(self.members)
        return Target(m["sid"], kind, m["peer_port"] if kind == "quorum" else m["election_port"])

    def run(self) -> Stats:
        scenarios_q = [
            (self.junk_bytes, 1), (self.bad_crc, 1), (self.random_msgpack, 3), (self.truncated, 1),
            (self.huge_length, 1), (self.stranger_info, 2), (self.real_info, 2), (self.out_of_order, 2),
        ]  # fmt: skip
        if self.observer_slot:
            scenarios_q.append((self.forged_learner, 2))
        scenarios_e = [
            (self.junk_bytes, 1), (self.bad_crc, 1), (self.random_msgpack, 2), (self.truncated, 1),
            (self.huge_length, 1), (self.stranger_hello, 2), (self.forged_votes, 4), (self.junk_after_hello, 2),
        ]  # fmt: skip
        kind = "quorum"
        while not self.stop.is_set():
            kind = "election" if kind == "quorum" else "quorum"
            table = scenarios_q if kind == "quorum" else scenarios_e
            fn = self.rng.choices([f for f, _ in table], [w for _, w in table])[0]
            target = self.target(kind)
            before = sum(self.stats.frames.values())
            self.stats.scenarios[f"{kind}.{fn.__name__}"] += 1
            try:
                conn = Conn(target, self.stats)
            except OSError as e:
                self.stats.refused_connect += 1
                if len(self.stats.errors) < 20:
                    self.stats.errors.append(f"connect {target.key}: {e}")
                time.sleep(0.2)
                continue
            try:
                fn(conn, f"{kind}.{fn.__name__}")
            except OSError as e:
                conn._server_closed()
                if not isinstance(e, (ConnectionResetError, BrokenPipeError)) and len(self.stats.errors) < 20:
                    self.stats.errors.append(f"{fn.__name__} {target.key}: {type(e).__name__}: {e}")
            finally:
                conn.close()
            sent = sum(self.stats.frames.values()) - before
            with self.lock:
                self.budget[0] -= sent
                if self.budget[0] <= 0:
                    self.stop.set()
        return self.stats

    def expect_closed(self, conn: Conn, name: str, timeout: float = 3.0) -> None:
        self.stats.outcome(name, "closed" if conn.wait_closed(timeout) else "open")

    # -- junk before any handshake (both ports) ----------------------------------------------
    def junk_bytes(self, conn: Conn, name: str) -> None:
        rng = self.rng
        conn.send([rng.randbytes(rng.randrange(1, 4096)) for _ in range(rng.randrange(1, 30))])
        self.expect_closed(conn, name, 1.0)  # random bytes may also read as a frame still arriving

    def bad_crc(self, conn: Conn, name: str) -> None:
        conn.send([bad_crc_frame(self.rng) for _ in range(self.rng.randrange(1, 60))])
        self.expect_closed(conn, name)

    def random_msgpack(self, conn: Conn, name: str) -> None:
        conn.send([junk_frame(self.rng) for _ in range(self.rng.randrange(1, 120))])
        self.expect_closed(conn, name)

    def truncated(self, conn: Conn, name: str) -> None:
        rng = self.rng
        whole = rng.choice(
            [encode_frame(["hello", 1]), encode_frame(["info", 1, 0, "participant"]), junk_frame(rng)]
        )
        conn.send([whole[: rng.randrange(1, len(whole))]])
        self.stats.outcome(name, "closed" if conn.wait_closed(rng.choice([0.05, 0.5])) else "open")

    def huge_length(self, conn: Conn, name: str) -> None:
        rng = self.rng
        length = rng.choice(
            [64 * 1024 + 1, MB, JUTE_MAX + 64 * 1024 + 1, MAX_FRAME, MAX_FRAME + 1, 2**32 - 1]
        )
        tail = rng.randbytes(rng.choice([0, 0, 10, 1000, 60_000]))
        conn.send([HEADER.pack(length, rng.randrange(2**32)) + tail])
        self.stats.outcome(f"{name}.{'over' if length > 64 * 1024 else 'under'}_64k",
                           "closed" if conn.wait_closed(2.0) else "open")  # fmt: skip

    # -- the election port ---------------------------------------------------------------------
    def stranger_hello(self, conn: Conn, name: str) -> None:
        rng = self.rng
        hello: list[Any] = rng.choice([
            ["hello", 0], ["hello", 5], ["hello", 99], ["hello", -1], ["hello", 2**63 - 1], ["hello", 2**64 - 1],
            ["hello", "1"], ["hello", None], ["hello", True], ["hello", 2.0], ["hello", [2]], ["hello"],
            ["hello", 2, 3], ["hello", conn.target.sid], ["HELLO", 2], ["vote", 2, "LOOKING", 2, 0, 0, 1],
        ])  # fmt: skip
        sid = 99
        conn.send(
            [encode_frame(hello)]
            + [encode_frame(vote(rng, sid, self.real)) for _ in range(rng.randrange(0, 20))]
        )
        self.expect_closed(conn, name)

    def claimed_sid(self, target: Target) -> int:
        sids = [s for s in self.real if s != target.sid] + ([OBSERVER_SID] if self.observer_slot else [])
        return self.rng.choice(sids)

    def forged_votes(self, conn: Conn, name: str) -> None:
        rng = self.rng
        sid = self.claimed_sid(conn.target)
        frames = [encode_frame(["hello", sid])]
        frames += [encode_frame(vote(rng, sid, self.real)) for _ in range(rng.randrange(1, 400))]
        if not conn.send(frames):
            self.stats.outcome(name, "closed early")
            return
        if rng.random() < 0.3:  # then one the server must refuse
            conn.send([encode_frame(bad_vote(rng, sid))])
            self.expect_closed(conn, name + ".then_bad")
        else:
            self.stats.outcome(name, "closed" if conn.wait_closed(0.02) else "open")

    def junk_after_hello(self, conn: Conn, name: str) -> None:
        rng = self.rng
        sid = self.claimed_sid(conn.target)
        frames = [encode_frame(["hello", sid])]
        frames += [
            rng.choice([junk_frame(rng), bad_crc_frame(rng), rng.randbytes(50)])
            for _ in range(rng.randrange(1, 40))
        ]
        conn.send(frames)
        self.expect_closed(conn, name)

    # -- the quorum port -----------------------------------------------------------------------
    def epoch_value(self) -> Any:
        e = self.epoch
        return self.rng.choice(
            [0, max(e - 1, 0), e, e + 1, e + 1000, 2**31, 2**32, 2**63 - 1, -1, "1", None, 1.5]
        )

    def stranger_info(self, conn: Conn, name: str) -> None:
        rng = self.rng
        sid = rng.choice([0, 5, 99, -1, 2**63 - 1, 2**64 - 1, "1", None, 2.5, [1], {"1": 1}, b"\x01"])
        frames = [encode_frame(["info", sid, self.epoch_value(), rng.choice(["participant", "observer", 7])])]
        frames += [junk_frame(rng) for _ in range(rng.randrange(0, 10))]
        conn.send(frames)
        self.expect_closed(conn, name)

    def real_info(self, conn: Conn, name: str) -> None:
        """A second link claiming a real voter (or the leader itself, or a real sid spelled True
        or 2.0): the voter is connected and synced, so the leader must refuse this one."""
        rng = self.rng
        sid = rng.choice([*self.real, True, 2.0])
        conn.send([encode_frame(["info", sid, self.epoch_value(), "participant"])])
        reply = conn.recv_message(2.0)
        if reply is not None:  # it was let in: out of order from here on
            self.stats.outcome(name, f"answered {reply[0] if isinstance(reply, list) else '?'}")
            then: list[Any] = rng.choice(
                [
                    ["ack", 2**40],
                    ["ping", [1, 2]],
                    ["acknl", 0],
                    ["sync", 1, 1],
                    ["ackepoch", self.epoch, 2**63 - 1, 0],
                ]
            )
            conn.send([encode_frame(then)])
            self.expect_closed(conn, name + ".then")
        else:
            self.stats.outcome(name, "closed" if conn.closed else "open")

    def out_of_order(self, conn: Conn, name: str) -> None:
        rng = self.rng
        msg: list[Any] = rng.choice([
            ["ackepoch", self.epoch, 0, -1], ["acknl", 0], ["ack", 1], ["ping", []], ["ping", [1, 2, 3]],
            ["request", 1, 1, 1, b"", []], ["sync", 1, 1], ["leaderinfo", 1], ["proposal", []], ["commit", 1],
            ["uptodate", 0], ["newleader", 1], ["hello", 1], ["vote", 1, "LEADING", 1, 0, 0, 1],
        ])  # fmt: skip
        conn.send([encode_frame(msg)] + [encode_frame(["ping", []]) for _ in range(rng.randrange(0, 20))])
        self.expect_closed(conn, name)

    def forged_learner(self, conn: Conn, name: str) -> None:
        """The whole learner handshake for the configured observer that is down."""
        rng = self.rng
        st = self.stats
        conn.send([encode_frame(["info", OBSERVER_SID, rng.choice([0, self.epoch, 2**31]), "observer"])])
        reply = conn.recv_message(3.0)
        if not (isinstance(reply, list) and reply[:1] == ["leaderinfo"]):
            # a follower hangs up; the leader refuses a second link for the slot while one is synced
            st.outcome(name, "no leaderinfo: " + ("closed" if conn.closed else "silent"))
            return
        st.outcome(name, "leaderinfo")
        e = reply[1]
        variant = rng.random()
        if variant < 0.25:  # ill-typed or impossible values
            ackepoch = rng.choice([
                ["ackepoch", "x", 0, 0], ["ackepoch", e, None, 0], ["ackepoch", e, 0, [1]], ["ackepoch", e, 2.5, 0],
                ["ackepoch", e, 0], ["ackepoch", e, 2**64 - 1, 0], ["ackepoch", e, -(2**63), -(2**63)],
                ["ackepoch", e, 0, 0, 0], ["ackepoch", True, True, True], ["ack", 1],
            ])  # fmt: skip
        else:  # plausible: in step, behind (a SNAP), ahead (a TRUNC), or from an old epoch
            last = rng.choice([0, -1, (e << 32) + 1, (max(e - 1, 0) << 32) + 5, 2**63 - 1])
            ackepoch = ["ackepoch", rng.choice([e, max(e - 1, 0), 0]), last, rng.choice([-1, 0, last])]
        conn.send([encode_frame(ackepoch)])
        sync = conn.recv_tag("syncdata", 5.0)
        if sync is None:
            st.outcome(name, "no sync: " + ("closed" if conn.closed else "silent"))
            return
        st.outcome(name, f"sync {sync[1]}")
        if conn.recv_tag("newleader", 5.0) is None:
            st.outcome(name, "no newleader")
            return
        acknl: list[Any] = rng.choice(
            [["acknl", rng.choice([0, 2**63 - 1, -1])], ["acknl", "x"], ["acknl"], ["acknl", [0]]]
        )
        conn.send([encode_frame(acknl)])
        if conn.recv_tag("uptodate", 5.0) is None:
            st.outcome(name, "no uptodate: " + ("closed" if conn.closed else "silent"))
            return
        st.outcome(name, "uptodate")
        # Synced: a burst of learner messages, mostly junk in well-formed envelopes.
        frames = []
        for _ in range(rng.randrange(5, 200)):
            r = rng.random()
            if r < 0.2:
                frames.append(
                    encode_frame(
                        ["ping", rng.choice([[], [1, 2], [2**63 - 1], [-1], ["x"], [[1]], [None], 5])]
                    )
                )
            elif r < 0.4:
                frames.append(encode_frame(["ack", rng.choice([0, 1, 2**63 - 1, -1, "x", None, [1]])]))
            elif r < 0.6:
                op = rng.choice([1, 2, 5, 14, -10, -11, 0, 99, 2**31, "x"])
                body = rng.choice([b"", rng.randbytes(rng.randrange(1, 200)), "str", None])
                session = rng.choice([(0x7E << 56) + rng.randrange(1000), -5, 2**63 - 1, 2**64 - 1, "s"])
                auth = rng.choice([[], [["digest", "u:p"]], [["x"]], "auth", [[1, 2]]])
                frames.append(encode_frame(["request", session, rng.randrange(-3, 1000), op, body, auth]))
            elif r < 0.7:
                frames.append(encode_frame(["sync", rng.choice([1, "x", 2**64 - 1]), rng.choice([1, None])]))
            elif r < 0.8:
                frames.append(
                    encode_frame(
                        rng.choice([["ackepoch", e, 0, 0], ["acknl", 0], ["info", 4, 0, "observer"]])
                    )
                )
            else:
                frames.append(junk_frame(rng))
        conn.send(frames)
        if rng.random() < 0.1:  # a learner that stops reading but keeps pinging, for a while
            until = time.monotonic() + rng.uniform(2, 8)
            while (
                time.monotonic() < until
                and not self.stop.is_set()
                and conn.send([encode_frame(["ping", []])])
            ):
                time.sleep(0.2)
            st.outcome(name, "non-reader " + ("closed" if conn.closed else "kept"))
            return
        st.outcome(name, "burst " + ("closed" if conn.wait_closed(0.5) else "kept"))


# -- slow loris and hoarders -----------------------------------------------------------------------
def slow_loris(targets: list[Target], seed: int, hold: float, stop: threading.Event, out: dict[str, Any],
               lock: threading.Lock) -> None:  # fmt: skip
    """Connect, send little or nothing, stall; record how long the server took to close it."""
    rng = random.Random(seed)
    while not stop.is_set():
        target = rng.choice(targets)
        opening = rng.choice([
            b"", HEADER.pack(100, 0)[:4], HEADER.pack(100, 0), HEADER.pack(100, 0) + b"\x95" * 10,
            encode_frame(["hello", 2])[:-1], encode_frame(["info", 2, 0, "participant"])[:5],
        ])  # fmt: skip
        try:
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            sock.sendall(opening)
        except OSError:
            time.sleep(0.5)
            continue
        t0 = time.monotonic()
        with sock:
            closed = closed_by_peer(sock, stop, t0 + hold)
        held = time.monotonic() - t0
        with lock:
            rec = out.setdefault(target.kind if target.kind == "election" else f"quorum-{target.sid}", {
                "opened": 0, "closed_by_server": 0, "max_s_to_close": 0.0, "held_full_time": 0, "cut_by_end": 0})  # fmt: skip
            rec["opened"] += 1
            if closed:
                rec["closed_by_server"] += 1
                rec["max_s_to_close"] = round(max(rec["max_s_to_close"], held), 2)
            elif held >= hold:
                rec["held_full_time"] += 1
            else:
                rec["cut_by_end"] += 1


def closed_by_peer(sock: socket.socket, stop: threading.Event, until: float) -> bool:
    """Read (and drop) what the server sends until it closes the connection (True), or until
    `until` or the stop signal (False)."""
    while not stop.is_set() and time.monotonic() < until:
        sock.settimeout(0.5)
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def hoarder(
    targets: list[Target], seed: int, stop: threading.Event, out: dict[str, Any], lock: threading.Lock
) -> None:
    """Announce a frame just under the port's limit, send nearly all of it, stall until closed."""
    rng = random.Random(seed)
    while not stop.is_set():
        target = rng.choice(targets)
        limit = JUTE_MAX + 64 * 1024 if target.kind == "quorum" else 64 * 1024
        length = limit - 16
        sent = 0
        closed = False
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
                sock.sendall(HEADER.pack(length, 0))
                chunk = b"\x00" * 65536
                sock.settimeout(2)
                while sent < length - 64 and not stop.is_set():
                    n = min(len(chunk), length - 64 - sent)
                    sock.sendall(chunk[:n])
                    sent += n
                closed = closed_by_peer(sock, stop, t0 + 30)
        except OSError:
            closed = True
        with lock:
            rec = out.setdefault(
                target.key, {"connections": 0, "closed_by_server": 0, "mb_buffered_max": 0.0}
            )
            rec["connections"] += 1
            rec["closed_by_server"] += closed
            rec["mb_buffered_max"] = round(max(rec["mb_buffered_max"], sent / MB), 2)
        if closed:
            time.sleep(0.2)


def fuzz_process(
    args: dict[str, Any], members: list[dict[str, Any]], leader: int, epoch: int, out: Any
) -> None:
    stop = threading.Event()
    lock = threading.Lock()
    budget = [args["frames"] or 2**62]
    fuzzers = [
        Fuzzer(args["seed"] * 1000 + i, members, leader, epoch, args["observer_slot"], stop, budget, lock)
        for i in range(args["connections"])
    ]
    results: list[Stats] = []
    threads = [threading.Thread(target=lambda f=f: results.append(f.run())) for f in fuzzers]
    targets = [Target(m["sid"], "quorum", m["peer_port"]) for m in members]
    targets += [Target(m["sid"], "election", m["election_port"]) for m in members]
    loris: dict[str, Any] = {}
    hoard: dict[str, Any] = {}
    side = [
        threading.Thread(
            target=slow_loris, args=(targets, args["seed"] * 7 + i, args["loris_hold"], stop, loris, lock)
        )
        for i in range(args["slow_loris"])
    ]
    leader_q = [t for t in targets if t.kind == "quorum" and t.sid == leader]
    hoard_targets = leader_q * 3 + [t for t in targets if t.kind == "election"]
    side += [
        threading.Thread(target=hoarder, args=(hoard_targets, args["seed"] * 11 + i, stop, hoard, lock))
        for i in range(args["hoarders"])
    ]
    t0 = time.monotonic()
    for t in threads + side:
        t.daemon = True
        t.start()
    deadline = t0 + args["duration"]
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.2)
    stop.set()
    for t in threads + side:
        t.join(15)
    total = Stats()
    for r in results:
        total.add(r)
    out.put(
        {"stats": total.to_json(), "elapsed": time.monotonic() - t0, "slow_loris": loris, "hoarders": hoard}
    )


# -- the well-behaved clients ----------------------------------------------------------------------
def good_clients(hosts: list[str], stop: Any, out: Any) -> None:
    """One kazoo client pinned to each server: create / get / set / get / delete, every reply
    checked; any exception or connection state change is an error."""
    from kazoo.client import KazooClient

    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(i: int, host: str) -> None:
        errors: list[str] = []
        latencies: list[float] = []
        zk = KazooClient(hosts=host, timeout=30.0)
        states: list[str] = []
        try:
            zk.start(timeout=30)
            zk.add_listener(lambda state: states.append(str(state)))
            root = f"/good-{os.getpid()}-{i}"
            zk.create(root, b"")
            n = 0
            while not stop.is_set() and not states:
                n += 1
                path = f"{root}/n{n % 50}"
                value = f"v{n}-{host}".encode() * (1 + n % 7)

                def timed(fn: Any, *a: Any, **kw: Any) -> Any:
                    t = time.monotonic()
                    r = fn(*a, **kw)
                    latencies.append(time.monotonic() - t)
                    return r

                timed(zk.create, path, value)
                data, stat = timed(zk.get, path)
                if data != value or stat.version != 0:
                    raise AssertionError(f"get {path}: {data[:30]!r} version {stat.version}")
                stat = timed(zk.set, path, value[::-1] + b"!", version=0)
                if stat.version != 1:
                    raise AssertionError(f"set {path}: version {stat.version}")
                data, stat = timed(zk.get, path)
                if data != value[::-1] + b"!" or stat.version != 1:
                    raise AssertionError(f"get {path} after set: {data[:30]!r}")
                timed(zk.delete, path, version=1)
            if states:
                errors.append(f"{host}: connection state changed: {states}")
            zk.delete(root, recursive=True)
        except Exception as e:
            errors.append(f"{host}: {type(e).__name__}: {e}")
        finally:
            with contextlib.suppress(Exception):
                zk.stop()
                zk.close()
        latencies.sort()
        with lock:
            results.append({
                "host": host, "ops": len(latencies), "errors": errors,
                "max_latency_ms": latencies[-1] * 1000 if latencies else 0.0,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
            })  # fmt: skip

    threads = [threading.Thread(target=one, args=(i, h)) for i, h in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


# -- memory and the monitor ------------------------------------------------------------------------
class Monitor(threading.Thread):
    """Peak RSS of every server (sampled, and VmHWM) and its RSS every 30 s (does it keep
    growing?), each server's role every second."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__(daemon=True)
        self.members = members
        self.peak_kb = {m.sid: 0 for m in members}
        self.modes: dict[int, Counter[str]] = {m.sid: Counter() for m in members}
        self.timeline: dict[int, list[float]] = {m.sid: [] for m in members}
        self.stop = threading.Event()

    def run(self) -> None:
        last_modes = last_rss = 0.0
        while not self.stop.wait(0.2):
            self.sample()
            if time.monotonic() - last_rss >= 30.0:
                last_rss = time.monotonic()
                for m in self.members:
                    pid = m.server.proc.pid if m.server.proc is not None else 0
                    self.timeline[m.sid].append(round(status_kb(pid, "VmRSS") / 1024, 1))
            if time.monotonic() - last_modes >= 1.0:
                last_modes = time.monotonic()
                for m in self.members:
                    self.modes[m.sid][srvr(m).get("Mode", "none")] += 1

    def sample(self) -> None:
        for m in self.members:
            proc = m.server.proc
            if proc is not None and proc.poll() is None:
                self.peak_kb[m.sid] = max(
                    self.peak_kb[m.sid], status_kb(proc.pid, "VmHWM"), status_kb(proc.pid, "VmRSS")
                )


def log_summary(text: str) -> dict[str, Any]:
    exceptions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for line in text.splitlines():
        if re.match(r"\s*\|?\s*\w+(Error|Exception|Group): ", line):
            exceptions[re.sub(r"0x[0-9a-f]+|\d+", "N", line.strip(" |"))[:160]] += 1
        found = re.search(
            r"(closing learner link|learner link \d+ closed|election: closing connection from \S+)(.*)", line
        )
        if found:
            what = "election" if "election" in found.group(1) else "learner"
            reasons[what + re.sub(r"0x[0-9a-f]+|\d+|'[^']*'|\[.*\]", "N", found.group(2))[:70]] += 1
    return {
        "tracebacks": text.count("Traceback"),
        "error_lines": sum(1 for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line),
        "back_to_election": text.count("back to election"),
        "learner_links_closed": text.count("closing learner link"),
        "election_conns_closed": text.count("election: closing connection"),
        "exceptions": dict(exceptions.most_common(15)),
        "close_reasons": dict(reasons.most_common(25)),
    }


# -- the run ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace, members: list[Member]) -> dict[str, Any]:
    from kazoo.client import KazooClient

    hosts = [m.server.hosts for m in members]
    zk = KazooClient(hosts=",".join(hosts), timeout=30.0)
    zk.start(timeout=30)
    zk.ensure_path("/fuzz")  # a write, so every server's zxid carries the epoch
    zk.stop()
    zk.close()
    time.sleep(0.5)
    before = ensemble_view(members)
    if before["leader"] is None or None in before["epochs"].values():
        raise RuntimeError(f"no settled ensemble to fuzz: {before}")
    log_offsets = {m.sid: len(m.server.log_since(0).encode()) for m in members}
    monitor = Monitor(members)
    monitor.start()
    ctx = multiprocessing.get_context("spawn")
    q_fuzz, q_good = ctx.Queue(), ctx.Queue()
    stop_good = ctx.Event()
    good = ctx.Process(target=good_clients, args=(hosts, stop_good, q_good))
    good.start()
    time.sleep(min(2.0, args.duration / 4))  # the good clients connect first
    fuzz_args = {
        "frames": args.frames, "duration": args.duration, "connections": args.connections, "seed": args.seed,
        "slow_loris": args.slow_loris, "loris_hold": args.loris_hold, "hoarders": args.hoarders,
        "observer_slot": args.observer_slot,
    }  # fmt: skip
    plain = [{"sid": m.sid, "peer_port": m.peer_port, "election_port": m.election_port} for m in members]
    fuzz = ctx.Process(
        target=fuzz_process,
        args=(fuzz_args, plain, before["leader"], before["epochs"][before["leader"]], q_fuzz),
    )
    t0 = time.monotonic()
    fuzz.start()
    fuzz_result = None
    while fuzz_result is None:
        try:
            fuzz_result = q_fuzz.get(timeout=1)
        except Exception:
            if not fuzz.is_alive():
                raise RuntimeError("the fuzzing process died") from None
    fuzz.join(30)
    elapsed = time.monotonic() - t0
    time.sleep(min(2.0, args.duration / 4))  # the good clients keep going a moment after the fuzzing stops
    stop_good.set()
    good_result = q_good.get(timeout=120)
    good.join(30)
    monitor.stop.set()
    monitor.join()
    monitor.sample()
    time.sleep(0.5)
    after = ensemble_view(members)
    keep = (
        "zk_global_sessions",
        "zk_znode_count",
        "zk_num_alive_connections",
        "zk_open_file_descriptor_count",
    )
    mntr_after = {
        f"s{m.sid}": {k.removeprefix("zk_"): v for k, v in mntr(m).items() if k in keep} for m in members
    }
    crashed = [m.sid for m in members if m.server.proc is None or m.server.proc.poll() is not None]
    stats = fuzz_result["stats"]
    frames_by_kind = {
        k: sum(v for p, v in stats["frames"].items() if p.endswith(k)) for k in ("quorum", "election")
    }
    logs = {f"s{m.sid}": log_summary(m.server.log_since(log_offsets[m.sid])) for m in members}
    elections = {sid: after["elections"][sid] - before["elections"][sid] for sid in before["elections"]}
    role_changes = {
        f"s{sid}": dict(c) for sid, c in monitor.modes.items() if set(c) != {before["modes"][sid]}
    }
    result = {
        "fuzz_seconds": round(fuzz_result["elapsed"], 1),
        "total_seconds": round(elapsed, 1),
        "frames": frames_by_kind,
        "frames_per_s": {k: round(v / fuzz_result["elapsed"]) for k, v in frames_by_kind.items()},
        "frames_per_port": stats["frames"],
        "connections_per_port": stats["connections"],
        "closed_by_server_per_port": stats["closed_by_server"],
        "scenarios": stats["scenarios"],
        "outcomes": stats["outcomes"],
        "slow_loris": fuzz_result["slow_loris"],
        "hoarders": fuzz_result["hoarders"],
        "refused_connects": stats["refused_connect"],
        "fuzzer_errors": stats["errors"],
        "good_round_trips": sum(r["ops"] for r in good_result),
        "good_errors": [e for r in good_result for e in r["errors"]],
        "good_max_latency_ms": round(max((r["max_latency_ms"] for r in good_result), default=0.0), 1),
        "good_p99_ms": round(max((r["p99_ms"] for r in good_result), default=0.0), 1),
        "good_per_server": {r["host"]: r["ops"] for r in good_result},
        "leader_before": before["leader"],
        "leader_after": after["leader"],
        "epoch_before": before["epochs"],
        "epoch_after": after["epochs"],
        "elections_during_run": elections,
        "role_changes_seen": role_changes,
        "crashed_servers": crashed,
        "peak_rss_mb": {f"s{sid}": round(kb / 1024, 1) for sid, kb in monitor.peak_kb.items()},
        "rss_every_30s_mb": {f"s{sid}": t for sid, t in monitor.timeline.items()},
        "mntr_after": mntr_after,
        "server_logs": logs,
    }
    failures = []
    if crashed:
        failures.append(f"servers {crashed} crashed")
    if result["good_errors"]:
        failures.append(f"the good clients were disturbed: {result['good_errors'][:5]}")
    if not result["good_round_trips"]:
        failures.append("the good clients made no round trip")
    if after["leader"] != before["leader"]:
        failures.append(f"leader changed from {before['leader']} to {after['leader']}")
    if after["epochs"] != before["epochs"]:
        failures.append(f"epoch changed from {before['epochs']} to {after['epochs']}")
    if any(elections.values()) or any(log["back_to_election"] for log in logs.values()):
        failures.append(f"elections during the run: {elections}")
    if role_changes:
        failures.append(f"roles changed during the run: {role_changes}")
    for sid, kb in monitor.peak_kb.items():
        if kb / 1024 > args.max_rss_mb:
            failures.append(f"server {sid} peak RSS {kb / 1024:.0f} MB over {args.max_rss_mb} MB")
    if any(log["tracebacks"] for log in logs.values()):
        failures.append("tracebacks in the server logs")
    result["failures"] = failures
    if failures:
        result["server_log_tails"] = {f"s{m.sid}": m.server.log_tail(40).splitlines() for m in members}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=180, help="seconds of fuzzing")
    ap.add_argument(
        "--frames", type=int, default=0, help="stop once this many frames were sent (0: no limit)"
    )
    ap.add_argument("--connections", type=int, default=8, help="concurrent fuzzing connections")
    ap.add_argument("--slow-loris", type=int, default=24, help="stalled connections held meanwhile")
    ap.add_argument("--loris-hold", type=float, default=40, help="seconds a slow-loris waits to be closed")
    ap.add_argument(
        "--hoarders", type=int, default=12, help="connections filling a buffer up to the port's limit"
    )
    ap.add_argument("--no-observer-slot", dest="observer_slot", action="store_false",
                    help="no configured-but-down observer (no forged learner)")  # fmt: skip
    ap.add_argument("--max-rss-mb", type=float, default=250)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the servers' logs here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    # The servers run this checkout's zkpy, whatever zkpy is installed.
    repo = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])
    tmp = Path(tempfile.mkdtemp(prefix="zkpy-fuzz-peer-"))
    members: list[Member] = []
    try:
        members = start_ensemble(tmp, args.observer_slot)
        result = run(args, members)
    finally:
        Ensemble([m.server for m in members]).stop()
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            for m in members:
                shutil.copy(m.server.log_path, Path(args.keep_logs) / f"s{m.sid}.log")
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
        print("FAIL: " + "; ".join(result["failures"]) if result["failures"] else "OK")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
