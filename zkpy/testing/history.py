"""A history checker for ZooKeeper's consistency guarantees: pure Python, no I/O.

A test records every client operation (invocation, outcome, times) and asks whether some
execution allowed by ZooKeeper explains it. The guarantees checked are ZooKeeper's actual ones,
neither weaker (a checker that passes lost updates is useless) nor stronger (a checker that
demands linearizable reads reports false alarms, since a follower answers reads locally):

* Writes (create, set, cas = set with an expected version, delete), including writes that failed
  with an error that observes state (NodeExists, NoNode, BadVersion, NotEmpty), are linearizable:
  they all go through the leader's single commit order. An operation whose outcome is unknown
  (the connection broke) may take effect at any moment after its invocation, or never, but
  not after a later write of its own session that took effect (FIFO client order: a session's
  writes take effect in the order sent, also when the client moved to another server with the
  request in flight, which is what SessionMoved protects).
* Reads are sequentially consistent per session: a read returns the state after some prefix of
  that commit order, at least as new as anything its session read, wrote or observed before it
  (across reconnects: a session keeps its name), and it cannot see a write invoked after it
  completed. Another session may lag arbitrarily.
* sync then read: a read that follows a sync in the same session sees every write that completed
  before the sync was invoked.
* When reply zxids are recorded, they never go backwards within a session (a server refuses a
  reconnecting client that has seen a newer zxid than it has), and acknowledged writes to one
  znode are committed in zxid order. They also tie a session's znodes together: a read sees
  every acknowledged write on its znode up to the highest zxid its session had seen (monotonic
  reads across znodes and across servers, read-only servers included), and an unknown-outcome
  write that took effect goes before every acknowledged write at or above the zxid of its
  session's next acknowledged write, on whatever znode that was.

The search is Wing & Gong's, with Lowe's memoization of (linearized set, state) as Porcupine and
Knossos do, partitioned per znode (ZooKeeper's per-znode state is independent, so a history of
thousands of operations splits into small searches). Reads join the search as operations that
need no real-time predecessor but their session's previous operation; since a read never changes
state, placing it at the first point where it fits is always safe, which keeps the search close
to linear for reads. Cross-znode session order is checked only through zxids. FIFO order makes
an unknown-outcome write unavailable as soon as a later write of its session is placed.

On a violation the report gives the smallest window found: the operations of the failing znode
around the first point where no linearization extends, starting from the state a valid prefix
reached, so that a reader sees a handful of operations rather than thousands.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Anomaly",
    "CheckResult",
    "CheckStats",
    "History",
    "Operation",
    "State",
    "from_simclient",
]

#: State of one znode: None when absent, else (data, data version).
State = tuple[bytes | None, int] | None

WRITE_KINDS = frozenset({"create", "set", "cas", "delete"})
READ_KINDS = frozenset({"get", "exists"})
KINDS = WRITE_KINDS | READ_KINDS | {"sync"}
OUTCOMES = frozenset({"ok", "fail", "unknown"})
#: Errors that tell something about the znode's state at the moment the leader ordered the
#: request; any other failure ("definitely not applied", e.g. NoAuth) carries no information.
OBSERVING_ERRORS = frozenset({"NodeExists", "NoNode", "BadVersion", "NotEmpty"})

_INF = math.inf
#: Stands in the model for every written value that no read returned (see _Partition).
_UNREAD = b"\x00zkpy.testing.history: a value no read returned\x00"

# Roles of an operation in the search.
_MUTATE = 0  # an acknowledged write or an unknown-outcome write: changes state
_OBSERVE = 1  # a write that failed with an observing error: linearizable, changes nothing
_READ = 2  # a read: ordered only by its session (and before writes invoked after it completed)
_SYNC = 3  # a sync: after every write completed before it was invoked, before its session's next op


@dataclass
class Operation:
    """One client operation as a test recorded it."""

    client: str  # a session (reconnects keep the same session name)
    kind: str  # "create" | "set" | "cas" | "delete" | "get" | "exists" | "sync"
    path: str
    value: bytes | None  # written value (create/set/cas) or the value read (get, when ok)
    version: int | None  # expected version for cas/delete; version read for get/exists
    invoked: float
    completed: float | None  # None: never completed (unknown outcome)
    outcome: str  # "ok" | "fail" (definitely not applied) | "unknown"
    zxid: int | None = None  # the reply header zxid when known
    error: str | None = None  # e.g. "BadVersion", "NodeExists", "NoNode"
    server: str | None = None  # which server answered, when known (reports only; e.g. "s3 ro")

    def describe(self) -> str:
        """One readable line, used in violation reports."""
        end = "    ?   " if self.completed is None or self.outcome == "unknown" else f"{self.completed:8.3f}"
        what = f"{self.kind} {self.path}" if self.kind != "sync" else "sync"
        if self.kind in ("create", "set", "cas"):
            what += f" {_show(self.value)}"
        if self.kind in ("cas", "delete") and self.version is not None and self.version >= 0:
            what += f" if v{self.version}"
        if self.outcome == "ok":
            result = "ok"
            if self.kind in READ_KINDS:
                shown = _show(self.value) if self.kind == "get" else ""
                result = f"-> {shown}{'' if self.version is None else f' v{self.version}'}".rstrip()
        elif self.outcome == "fail":
            result = f"fail {self.error or '?'}"
        else:
            result = "unknown outcome"
        zxid = "" if self.zxid is None else f"  zxid {self.zxid:#x}"
        server = "" if self.server is None else f"  @{self.server}"
        return f"[{self.client}] {self.invoked:8.3f} .. {end}  {what}: {result}{zxid}{server}"


@dataclass
class Anomaly:
    """One violation (or one znode whose check ran out of budget), with the window showing it."""

    kind: str  # "linearizability" | "session-consistency" | "fifo-order" | "session-zxid" | "undecided"
    path: str | None
    message: str
    window: list[Operation] = field(default_factory=list)
    initial: State = None  # the znode state the window starts from
    culprit: Operation | None = None  # the first operation no linearization can place
    context: list[Operation] = field(default_factory=list)  # the last writes before the window

    def report(self) -> str:
        """The anomaly in readable text: what is wrong, from which state, which operations."""
        lines = [f"{self.kind} violation on {self.path or '(sessions)'}: {self.message}"]
        if self.kind == "undecided":
            lines[0] = f"undecided on {self.path}: {self.message}"
        if self.window:
            if self.context:
                lines.append("  after a valid order of the earlier operations, ending with:")
                lines.extend(f"    {op.describe()}" for op in self.context)
            if self.path is not None and self.kind != "session-zxid":
                lines.append(
                    f"  from state {_show_state(self.initial)}, no valid order of these {len(self.window)} operations:"
                )
            for op in self.window:
                mark = "  <-- cannot be placed" if op is self.culprit else ""
                lines.append(f"    {op.describe()}{mark}")
        return "\n".join(lines)


@dataclass
class CheckStats:
    """How much was checked and how long it took."""

    operations: int = 0  # operations that took part in a search (all partitions)
    ignored: int = 0  # operations that carry no information (unknown reads, uninformative failures)
    partitions: int = 0
    states: int = 0  # memoized search states explored
    seconds: float = 0.0


@dataclass
class CheckResult:
    """The verdict: ok when no anomaly was found and every partition was decided."""

    ok: bool
    anomalies: list[Anomaly]
    stats: CheckStats

    def report(self) -> str:
        """Everything a failing test should print."""
        s = self.stats
        head = (
            f"{'OK' if self.ok else 'FAILED'}: {s.operations} operations in {s.partitions} partitions"
            f" ({s.ignored} without information), {s.states} search states, {s.seconds:.2f}s"
        )
        return "\n".join([head, *(a.report() for a in self.anomalies)])


class History:
    """Operations recorded by a test, and the check of them against ZooKeeper's guarantees."""

    def __init__(
        self,
        ops: Iterable[Operation] = (),
        initial: dict[str, State] | None = None,
        *,
        max_states: int = 200_000,
        check_zxids: bool = True,
        fifo: bool = True,
    ) -> None:
        """`initial` gives znodes present before the history began (others start absent);
        `max_states` bounds each partition's search so a pathological history cannot hang a
        test (the partition is then reported "undecided"); `check_zxids` can turn off the
        zxid-based checks for a server that does not report meaningful reply zxids; `fifo` can
        turn off FIFO client order for unknown-outcome writes (only to compare reports)."""
        self.ops: list[Operation] = []
        self.initial: dict[str, State] = dict(initial or {})
        self.max_states = max_states
        self.check_zxids = check_zxids
        self.fifo = fifo
        for op in ops:
            self.add(op)

    def add(self, op: Operation) -> Operation:
        """Record one operation (validated now, so a malformed record fails where it is made)."""
        if op.kind not in KINDS:
            raise ValueError(f"unknown kind {op.kind!r}")
        if op.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {op.outcome!r}")
        if op.outcome != "unknown" and op.completed is None:
            raise ValueError(f"{op.kind} {op.path}: outcome {op.outcome} needs a completion time")
        if op.kind == "cas" and op.version is None:
            raise ValueError(f"cas {op.path} needs an expected version")
        self.ops.append(op)
        return op

    def check(self) -> CheckResult:
        """Check every partition; return the anomalies with their smallest windows."""
        start = time.perf_counter()
        stats = CheckStats()
        anomalies: list[Anomaly] = []
        if self.check_zxids:
            anomalies.extend(_session_zxid_anomalies(self.ops))
        partitions, stats.ignored = _partition(self.ops)
        stats.operations = len(self.ops) - stats.ignored
        facts = _SessionFacts(self.ops, self.check_zxids, self.fifo)
        for path in sorted(partitions):
            ops = partitions[path]
            stats.partitions += 1
            initial = self.initial.get(path)
            part = _Partition(ops, self.check_zxids, facts)
            found = _search(part, initial, self.max_states)
            stats.states += found.states
            if found.ok:
                continue
            if found.exhausted:
                anomalies.append(
                    Anomaly(
                        "undecided",
                        path,
                        f"search gave up after {found.states} states; neither a linearization nor its absence was shown",
                        sorted(ops, key=lambda o: o.invoked),
                        initial,
                    )
                )
                continue
            anomalies.append(_explain(path, part, found, initial, self.max_states, facts))
        stats.seconds = time.perf_counter() - start
        return CheckResult(not anomalies, anomalies, stats)


# --- the model ---------------------------------------------------------------------------------


def _step(state: State, op: Operation, role: int, value: bytes | None = None) -> tuple[bool, State]:
    """Apply `op` to one znode's state: (whether the op's result is possible, the new state).
    `value` is what a write stores in the model (see _Partition.values)."""
    kind = op.kind
    if role == _SYNC:
        return True, state
    if kind in READ_KINDS:
        if op.outcome == "fail":  # NoNode
            return state is None, state
        if state is None:
            return False, state
        if kind == "get" and op.value is not None and op.value != state[0]:
            return False, state
        return op.version is None or op.version == state[1], state
    expected = op.version if op.version is not None and op.version >= 0 else None
    if role == _OBSERVE:
        error = op.error
        if error == "NoNode":
            return state is None, state
        if error == "NodeExists":
            return state is not None, state
        if error == "BadVersion":
            return state is not None and expected is not None and state[1] != expected, state
        # NotEmpty: ZooKeeper checks the version before the children
        return state is not None and (expected is None or state[1] == expected), state
    if kind == "create":
        return (True, (value, 0)) if state is None else (False, state)
    if state is None:
        return False, state
    if kind == "delete":
        return (True, None) if expected is None or state[1] == expected else (False, state)
    if kind == "cas" and expected is not None and state[1] != expected:
        return False, state
    return True, (value, state[1] + 1)


def _role(op: Operation) -> int | None:
    """The part `op` plays in the search, or None when it carries no information."""
    if op.kind == "sync":
        return _SYNC if op.outcome == "ok" else None
    if op.kind in READ_KINDS:
        if op.outcome == "ok" or (op.outcome == "fail" and op.error == "NoNode"):
            return _READ
        return None
    if op.outcome in ("ok", "unknown"):
        return _MUTATE
    if op.error in OBSERVING_ERRORS:
        return _OBSERVE
    return None


def _partition(ops: Sequence[Operation]) -> tuple[dict[str, list[Operation]], int]:
    """Group informative operations by znode; a sync joins every znode its session touches
    after it, since it is a barrier for all of them. Returns (partitions, ignored count).

    Of a session's syncs, a znode needs only the newest before each of the session's operations
    on it: a later sync's barrier includes an earlier one's. (Joining every earlier sync to
    every znode made a long run with many sequential creates quadratic.)"""
    parts: dict[str, list[Operation]] = {}
    syncs: dict[str, list[Operation]] = {}
    uses: dict[tuple[str, str], list[float]] = {}
    ignored = 0
    for op in ops:
        if _role(op) is None:
            ignored += 1
        elif op.kind == "sync":
            syncs.setdefault(op.client, []).append(op)
        else:
            parts.setdefault(op.path, []).append(op)
            uses.setdefault((op.client, op.path), []).append(op.invoked)
    for session_syncs in syncs.values():
        session_syncs.sort(key=lambda o: o.invoked)
    sync_times = {client: [o.invoked for o in ss] for client, ss in syncs.items()}
    for (client, path), times in uses.items():
        if client not in syncs:
            continue
        joined: dict[int, Operation] = {}
        for t in times:
            k = bisect.bisect_left(sync_times[client], t) - 1  # the newest sync invoked before t
            if k >= 0:
                joined[k] = syncs[client][k]
        parts[path].extend(joined[k] for k in sorted(joined))
    return parts, ignored


# --- the search --------------------------------------------------------------------------------


class _SessionFacts:
    """What a session's operations on other znodes tell the per-znode search (from zxids), and
    whether FIFO client order binds unknown-outcome writes.

    * `later_zxid[id(u)]`, for an unknown-outcome write u: the smallest reply zxid of an
      acknowledged write its session invoked after u. A session's writes take effect in the order
      sent, so if u took effect its zxid is below that one: on u's znode it goes before every
      acknowledged write with a zxid at least that high (FIFO order across znodes).
    * `floor[id(r)]`, for a read r: the highest zxid its session had seen when r was invoked (or
      r's own reply zxid, if higher). A server never serves a session older state than a zxid the
      session saw (it refuses the reconnect), so r sees every acknowledged write on its znode up
      to that zxid (monotonic reads across znodes and servers, read-only ones included)."""

    def __init__(self, ops: Sequence[Operation], use_zxids: bool, fifo: bool) -> None:
        self.fifo = fifo
        self.later_zxid: dict[int, int] = {}
        self.floor: dict[int, int] = {}
        if not use_zxids or not any(o.zxid for o in ops):
            return  # nothing to tie znodes together
        by_session: dict[str, list[Operation]] = {}
        for op in ops:
            by_session.setdefault(op.client, []).append(op)
        for session in by_session.values():
            session.sort(key=lambda o: o.invoked)
            if fifo:
                low = _INF
                for op in reversed(session):
                    if op.kind in WRITE_KINDS:
                        if op.outcome == "unknown" and low < _INF:
                            self.later_zxid[id(op)] = int(low)
                        elif op.outcome == "ok" and op.zxid is not None and op.zxid > 0:
                            low = min(low, op.zxid)
            seen = sorted(
                (o.completed, o.zxid)
                for o in session
                if o.outcome == "ok" and o.completed is not None and o.zxid is not None and o.zxid > 0
            )
            k, high = 0, 0
            for op in session:  # by invocation
                if op.kind not in READ_KINDS or _role(op) is None:
                    continue
                while k < len(seen) and seen[k][0] <= op.invoked:
                    high = max(high, seen[k][1])
                    k += 1
                own = op.zxid if op.outcome == "ok" and op.zxid is not None else 0
                if max(high, own) > 0:
                    self.floor[id(op)] = max(high, own)

    def without_fifo(self) -> _SessionFacts:
        """The same facts with FIFO order off (to tell a FIFO violation from others)."""
        other = _SessionFacts((), False, False)
        other.floor = self.floor
        return other


class _Partition:
    """One znode's operations, indexed for the search."""

    def __init__(self, ops: Sequence[Operation], use_zxids: bool, facts: _SessionFacts | None = None) -> None:
        facts = facts or _SessionFacts((), False, True)
        self.use_zxids, self.facts = use_zxids, facts
        self.ops = sorted(ops, key=lambda o: (o.invoked, o.completed if o.completed is not None else _INF))
        n = len(self.ops)
        roles = [_role(o) for o in self.ops]
        self.roles: list[int] = [r for r in roles if r is not None]
        if len(self.roles) != n:
            raise ValueError("an operation without information reached the search")
        self.definite = [o.outcome != "unknown" for o in self.ops]
        self.inv = [o.invoked for o in self.ops]
        self.comp = [
            o.completed if o.outcome != "unknown" and o.completed is not None else _INF for o in self.ops
        ]
        # every definite op, by completion: writes wait for all of them (a write invoked after a
        # read completed cannot be what that read saw)
        self.by_comp_all = sorted((i for i in range(n) if self.definite[i]), key=lambda i: self.comp[i])
        # linearizable definite ops by completion: what a sync waits for
        self.by_comp_lin = [i for i in self.by_comp_all if self.roles[i] != _READ]
        lin_writes = [i for i in range(n) if self.roles[i] in (_MUTATE, _OBSERVE)]
        self.writes_def = [i for i in lin_writes if self.definite[i]]  # by invocation
        self.writes_unknown = [i for i in lin_writes if not self.definite[i]]
        # Unknown-outcome writes stay candidates for the rest of the search, so they are looked up
        # by what they need of the state (absent / present / present at a data version) rather
        # than scanned at every step: a long history has thousands of them.
        self.unknown_if_absent: list[int] = []
        self.unknown_if_present: list[int] = []
        self.unknown_at_version: dict[int, list[int]] = {}
        for i in self.writes_unknown:
            o = self.ops[i]
            expected = o.version if o.version is not None and o.version >= 0 else None
            if o.kind == "create":
                self.unknown_if_absent.append(i)
            elif expected is None or o.kind not in ("cas", "delete"):
                self.unknown_if_present.append(i)
            else:
                self.unknown_at_version.setdefault(expected, []).append(i)
        # session order: each op's previous definite op of its session (FIFO per session)
        self.sessions: list[list[int]] = []
        self.session_of = [-1] * n
        self.spred = [-1] * n
        index: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            s = index.setdefault(op.client, len(index))
            if s == len(self.sessions):
                self.sessions.append([])
            queue = self.sessions[s]
            self.spred[i] = queue[-1] if queue else -1
            if self.definite[i]:
                self.session_of[i] = s
                queue.append(i)
        # A value no read returned is stored in the model as _UNREAD: states that differ only in
        # such values behave identically from then on, so the memoization merges them (this is
        # what keeps histories with many unknown-outcome writes tractable).
        observed = {
            o.value for o in self.ops if o.kind == "get" and o.outcome == "ok" and o.value is not None
        }
        merge = _UNREAD not in observed
        self.values: list[bytes | None] = [
            o.value if not merge or o.value in observed else _UNREAD for o in self.ops
        ]
        # of unknown writes with the same effect only the first is offered; with FIFO order they
        # are interchangeable only within a session (placing one forbids its session's earlier ones)
        self.uclass: list[tuple[str, int | None, bytes | None, str]] = [
            (
                o.kind,
                o.version if o.version is not None and o.version >= 0 else None,
                self.values[i],
                o.client if facts.fifo else "",
            )
            for i, o in enumerate(self.ops)
        ]
        # acknowledged writes are committed in zxid order
        self.zpred = [-1] * n
        acked: list[int] = []
        if use_zxids:
            acked = sorted(
                (
                    i
                    for i in range(n)
                    if self.roles[i] == _MUTATE and self.definite[i] and (self.ops[i].zxid or 0) > 0
                ),
                key=lambda i: self.ops[i].zxid or 0,
            )
            for a, b in itertools.pairwise(acked):
                if (self.ops[a].zxid or 0) < (self.ops[b].zxid or 0):
                    self.zpred[b] = a
        acked_zxids = [self.ops[i].zxid or 0 for i in acked]
        # a read sees every acknowledged write up to the highest zxid its session had seen
        for i, o in enumerate(self.ops):
            floor = facts.floor.get(id(o))
            if floor is not None and self.roles[i] == _READ:
                k = bisect.bisect_right(acked_zxids, floor) - 1
                if k >= 0:
                    self.zpred[i] = acked[k]
        # FIFO client order: an unknown-outcome write that takes effect goes before every later
        # write of its session that took effect. Definite writes of a session are placed in
        # session order, so "the first later one is not placed yet" stands for all of them; for
        # later unknown ones, a mask of them; across znodes, the first acknowledged write here
        # at or above the session's next acknowledged zxid (placed in zxid order, likewise).
        self.fifo_def = [-1] * n
        self.fifo_mask = [0] * n
        self.fifo_zxid = [-1] * n
        if facts.fifo:
            bit = {i: 1 << k for k, i in enumerate(self.writes_unknown)}
            per_session: dict[str, list[int]] = {}
            for i in range(n):
                if self.roles[i] == _MUTATE:
                    per_session.setdefault(self.ops[i].client, []).append(i)
            for writes in per_session.values():
                next_def, mask = -1, 0
                for i in reversed(writes):
                    if self.definite[i]:
                        next_def = i
                    else:
                        self.fifo_def[i], self.fifo_mask[i] = next_def, mask
                        mask |= bit[i]
            for i in self.writes_unknown:
                low = facts.later_zxid.get(id(self.ops[i]))
                if low is not None:
                    k = bisect.bisect_left(acked_zxids, low)
                    if k < len(acked):
                        self.fifo_zxid[i] = acked[k]

    def fifo_open(self, i: int, placed: bytearray, unknown_placed: int) -> bool:
        """Whether unknown-outcome write `i` may still take effect: no later write of its
        session that took effect is placed (`unknown_placed`: the mask of placed unknown ones)."""
        d, z = self.fifo_def[i], self.fifo_zxid[i]
        return (d < 0 or not placed[d]) and (z < 0 or not placed[z]) and not self.fifo_mask[i] & unknown_placed


@dataclass
class _Found:
    ok: bool
    exhausted: bool
    states: int
    deepest: list[int]  # op indices of the longest linearized sequence found
    deepest_states: list[State]  # the state after each of them
    stuck: int  # the first definite op (by completion) the deepest sequence could not place


def _first_unset(order: list[int], lo: int, placed: bytearray) -> int:
    while lo < len(order) and placed[order[lo]]:
        lo += 1
    return lo


def _search(part: _Partition, initial: State, max_states: int) -> _Found:
    """Depth-first Wing & Gong search with memoization; see the module docstring.

    Which operations are placed is a bytearray kept in step with `path` (set on append, cleared
    when a backtrack cuts the path), so a membership test is O(1) however long the history. The
    memo key is a 128-bit Zobrist hash of the placed definite operations (updated by XOR as they
    are placed) plus the znode state; the placed unknown-outcome writes are a bitmask over those
    writes only, for the subsumption check."""
    ops, roles, inv, comp = part.ops, part.roles, part.inv, part.comp
    spred, zpred, sessions, values, uclass = part.spred, part.zpred, part.sessions, part.values, part.uclass
    by_all, by_lin, writes_def = part.by_comp_all, part.by_comp_lin, part.writes_def
    definite, fifo_open = part.definite, part.fifo_open
    n = len(ops)
    n_definite = sum(definite)
    rng = random.Random(0x5EED)
    zobrist = [rng.getrandbits(128) if definite[i] else 0 for i in range(n)]
    unknown_bit = [0] * n
    for k, i in enumerate(part.writes_unknown):
        unknown_bit[i] = 1 << k
    placed = bytearray(n)
    path: list[int] = []
    path_states: list[State] = []

    def place(i: int, state: State, key: list[int]) -> None:
        """Append `i` to the path; key = [definite hash, unknown mask, definite count]."""
        placed[i] = 1
        path.append(i)
        path_states.append(state)
        if definite[i]:
            key[0] ^= zobrist[i]
            key[2] += 1
        else:
            key[1] |= unknown_bit[i]

    def cut(length: int) -> None:
        keep_best(length)
        for i in path[length:]:
            placed[i] = 0
        del path[length:], path_states[length:]

    def closure(state: State, key: list[int], lo_all: int, lo_lin: int, sptr: list[int]) -> tuple[int, int]:
        """Place every non-mutating op that can go now and fits the state: never loses a
        solution, because such an op only gets more constrained later."""
        changed = True
        while changed:
            changed = False
            lo_all = _first_unset(by_all, lo_all, placed)
            lo_lin = _first_unset(by_lin, lo_lin, placed)
            min_all = comp[by_all[lo_all]] if lo_all < len(by_all) else _INF
            min_lin = comp[by_lin[lo_lin]] if lo_lin < len(by_lin) else _INF
            for s, queue in enumerate(sessions):
                p = sptr[s]
                while p < len(queue):
                    i = queue[p]
                    role = roles[i]
                    if role == _MUTATE:
                        break
                    if role == _SYNC:
                        if inv[i] > min_lin:
                            break
                    elif role == _OBSERVE:
                        if inv[i] > min_all or (zpred[i] >= 0 and not placed[zpred[i]]):
                            break
                        if not _step(state, ops[i], role)[0]:
                            break
                    elif (zpred[i] >= 0 and not placed[zpred[i]]) or not _step(state, ops[i], role)[0]:
                        break  # a read waits for the writes up to its session's zxid floor
                    place(i, state, key)
                    p += 1
                    changed = True
                sptr[s] = p
        return lo_all, lo_lin

    def _ready(i: int) -> bool:
        return (spred[i] < 0 or bool(placed[spred[i]])) and (zpred[i] < 0 or bool(placed[zpred[i]]))

    def unknown_for(state: State) -> list[list[int]]:
        if state is None:
            return [part.unknown_if_absent]
        return [part.unknown_if_present, part.unknown_at_version.get(state[1], [])]

    def candidates(state: State, lo_all: int, lo_w: int, unknown_placed: int) -> tuple[list[int], int]:
        """Writes that may go next: all their real-time, session and zxid predecessors placed
        (unknown-outcome ones only if they could apply to `state` and no later write of their
        session that took effect is placed: FIFO client order)."""
        lo_w = _first_unset(writes_def, lo_w, placed)
        min_all = comp[by_all[lo_all]] if lo_all < len(by_all) else _INF
        out: list[int] = []
        for j in range(lo_w, len(writes_def)):
            i = writes_def[j]
            if inv[i] > min_all:
                break
            if roles[i] == _MUTATE and not placed[i] and _ready(i):
                out.append(i)
        out.sort(key=lambda i: comp[i])
        offered: set[tuple[str, int | None, bytes | None, str]] = set()
        unknown: list[int] = []
        for bucket in unknown_for(state):
            for i in bucket:
                if inv[i] > min_all:
                    break
                if not placed[i] and _ready(i) and fifo_open(i, placed, unknown_placed):
                    unknown.append(i)
        for i in sorted(unknown):
            # of interchangeable unknown writes (same effect, both already invoked) only the
            # first is offered: any order using another one maps onto one using the first
            if uclass[i] not in offered:
                offered.add(uclass[i])
                out.append(i)
        return out, lo_w

    best = -1
    best_path: list[int] = []
    best_states: list[State] = []
    best_stuck = -1
    # The deepest sequence is copied out of `path` lazily, only when a backtrack is about to cut
    # it: copying at every new depth made a long history quadratic.
    best_len = 0
    best_live = False  # path[:best_len] is the deepest sequence, not yet copied
    # Memoization with subsumption: an unknown-outcome write is optional and constrains no
    # definite operation (under FIFO order a placed one only closes its session's earlier unknown
    # writes), so of two search states with the same definite operations placed and the same
    # znode state, the one that placed a subset of the other's unknown writes has every option
    # the other has. Keyed by (definite ops placed, state): the unknown-write sets placed so far.
    visited: dict[tuple[int, State], list[int]] = {}
    explored = 0

    def seen_before(key: list[int], state: State) -> bool:
        nonlocal explored
        memo = (key[0], state)
        unknown_placed = key[1]
        known = visited.get(memo)
        if known is None:
            visited[memo] = [unknown_placed]
        elif any(u & ~unknown_placed == 0 for u in known):
            return True
        else:
            known[:] = [u for u in known if unknown_placed & ~u != 0]
            known.append(unknown_placed)
        explored += 1
        return False

    def note(key: list[int], lo_all: int) -> None:
        nonlocal best, best_len, best_live, best_stuck
        if key[2] > best:
            best, best_len, best_live = key[2], len(path), True
            best_stuck = by_all[lo_all] if lo_all < len(by_all) else -1

    def keep_best(length: int) -> None:
        """`path` is about to be cut to `length` entries: save the deepest sequence first."""
        nonlocal best_path, best_states, best_live
        if best_live and length < best_len:
            best_path, best_states, best_live = path[:best_len], path_states[:best_len], False

    def found_none(exhausted: bool) -> _Found:
        keep_best(-1)
        return _Found(False, exhausted, explored, best_path, best_states, best_stuck)

    sptr0 = [0] * len(sessions)
    key0 = [0, 0, 0]
    lo_all0, lo_lin0 = closure(initial, key0, 0, 0, sptr0)
    if key0[2] == n_definite:
        return _Found(True, False, 1, [], [], -1)
    note(key0, lo_all0)
    cands0, lo_w0 = candidates(initial, lo_all0, 0, 0)
    # frame: [key, state, lo_all, lo_lin, lo_w, sptr, candidates, next candidate, path length]
    stack: list[list[Any]] = [[key0, initial, lo_all0, lo_lin0, lo_w0, sptr0, cands0, 0, len(path)]]
    seen_before(key0, initial)
    while stack:
        frame = stack[-1]
        key, state, lo_all, lo_lin, lo_w, sptr, cands, ci, plen = frame
        if ci >= len(cands):
            stack.pop()
            continue
        frame[7] = ci + 1
        i = cands[ci]
        possible, new_state = _step(state, ops[i], _MUTATE, values[i])
        if not possible:
            continue
        cut(plen)
        new_key = list(key)
        place(i, new_state, new_key)
        new_sptr = list(sptr)
        s = part.session_of[i]
        if s >= 0:
            new_sptr[s] += 1  # a definite write goes only when it heads its session's queue
        new_lo_all, new_lo_lin = closure(new_state, new_key, lo_all, lo_lin, new_sptr)
        if new_key[2] == n_definite:
            return _Found(True, False, explored, list(path), list(path_states), -1)
        if seen_before(new_key, new_state):
            continue
        if explored > max_states:
            return found_none(True)
        note(new_key, new_lo_all)
        new_cands, new_lo_w = candidates(new_state, new_lo_all, lo_w, new_key[1])
        stack.append(
            [new_key, new_state, new_lo_all, new_lo_lin, new_lo_w, new_sptr, new_cands, 0, len(path)]
        )
    return found_none(False)


# --- explaining a violation --------------------------------------------------------------------


def _explain(
    path: str, part: _Partition, found: _Found, initial: State, max_states: int, facts: _SessionFacts
) -> Anomaly:
    """Shrink a failing partition to a small window that still fails on its own.

    The window starts after a cut in the longest valid prefix the search found (its state
    becomes the window's initial state) and ends with the operations invoked before the stuck
    operation completed. Dropping operations only removes constraints, so a window that still
    fails shows a real violation; the cut is moved as late as possible."""
    ops = part.ops
    stuck = found.stuck
    horizon = part.comp[stuck] if stuck >= 0 else _INF
    seq, states = found.deepest, found.deepest_states
    use_zxids = part.use_zxids
    unknown_index = {i: k for k, i in enumerate(part.writes_unknown)}

    def window(cut: int, bounded: bool) -> tuple[list[Operation], State]:
        done = bytearray(len(ops))
        unknown_done = 0
        for i in seq[:cut]:
            done[i] = 1
            if not part.definite[i]:
                unknown_done |= 1 << unknown_index[i]
        start = states[cut - 1] if cut > 0 else initial
        # an unknown-outcome write that FIFO order already closed (a later write of its session
        # is in the prefix) can no longer take effect: it leaves the window
        chosen = [
            ops[i]
            for i in range(len(ops))
            if not done[i]
            and (not bounded or part.inv[i] <= horizon)
            and (part.definite[i] or part.roles[i] != _MUTATE or part.fifo_open(i, done, unknown_done))
        ]
        return chosen, start

    def fails(chosen: list[Operation], start: State, with_facts: _SessionFacts = facts) -> bool:
        # a window that cannot be decided cheaply is treated as not showing the violation
        result = _search(_Partition(chosen, use_zxids, with_facts), start, max(1000, max_states // 20))
        return not result.ok and not result.exhausted

    best: tuple[list[Operation], State] = ([*ops], initial)
    best_cut = 0
    cuts = _clean_cuts(part, seq)
    # try clean cuts from the end of the valid prefix backwards, doubling the step, then bisect
    # (positions in `cuts`; failing is not strictly monotone in the cut, so this finds a late
    # failing cut rather than provably the latest)
    last_pass = len(cuts)
    step = 1
    failing = -1
    while True:
        k = max(0, len(cuts) - step)
        chosen, start = window(cuts[k], True)
        if chosen and fails(chosen, start):
            failing, best, best_cut = k, (chosen, start), cuts[k]
            break
        last_pass = k
        if k == 0:
            break
        step *= 2
    if failing >= 0:
        lo, hi = failing, last_pass  # lo fails, hi passes
        while hi - lo > 1:
            mid = (lo + hi) // 2
            chosen, start = window(cuts[mid], True)
            if chosen and fails(chosen, start):
                lo, best, best_cut = mid, (chosen, start), cuts[mid]
            else:
                hi = mid
    chosen, start = best
    culprit = ops[stuck] if stuck >= 0 else None
    writes_only = [o for o in chosen if o.kind in WRITE_KINDS]
    fifo_only = facts.fifo and _search(_Partition(ops, use_zxids, facts.without_fifo()), initial, max_states).ok
    if fifo_only:
        kind = "fifo-order"
        closed = [
            ops[i]
            for i in part.writes_unknown
            if i not in seq[:best_cut] and part.inv[i] <= horizon and ops[i] not in chosen
        ][-3:]
        message = (
            "only an order in which an unknown-outcome write takes effect after a later write of its "
            "session that took effect explains these results (FIFO client order); unknown-outcome "
            "writes FIFO order had closed before the window: "
            + ("; ".join(o.describe() for o in closed) or "none")
        )
    elif writes_only and fails(writes_only, start):
        kind = "linearizability"
        message = "no order of the writes agrees with their results and real-time order"
    else:
        kind = "session-consistency"
        message = (
            "the writes have a valid order, but a read cannot be explained by any prefix of it at least "
            "as new as what its session saw, wrote or synced before"
        )
    if culprit is not None:
        message += f"; first operation that cannot be placed: {culprit.describe()}"
    context = [ops[i] for i in seq[:best_cut] if part.roles[i] == _MUTATE][-3:]
    return Anomaly(kind, path, message, sorted(chosen, key=lambda o: o.invoked), start, culprit, context)


def _clean_cuts(part: _Partition, seq: list[int]) -> list[int]:
    """Positions in the valid prefix `seq` where a window may start: every definite write before
    the cut completed before any definite write after it was invoked, so the window does not
    split a group of concurrent writes. Unknown-outcome writes are optional and may go anywhere
    after their invocation: one the prefix applied counts as taking effect when invoked (the
    report shows the writes that led to the window's first state), one it did not apply stays
    in the window. Always includes 0."""
    is_write = [r in (_MUTATE, _OBSERVE) for r in part.roles]
    writes_by_inv = [i for i in range(len(part.ops)) if is_write[i] and part.definite[i]]
    in_prefix: set[int] = set()
    cuts = [0]
    latest_completion = -_INF
    lo = 0
    for c, i in enumerate(seq, start=1):
        in_prefix.add(i)
        if is_write[i]:
            latest_completion = max(latest_completion, part.comp[i] if part.definite[i] else part.inv[i])
        while lo < len(writes_by_inv) and writes_by_inv[lo] in in_prefix:
            lo += 1
        next_invocation = part.inv[writes_by_inv[lo]] if lo < len(writes_by_inv) else _INF
        if latest_completion < next_invocation:
            cuts.append(c)
    return cuts


def _session_zxid_anomalies(ops: Sequence[Operation]) -> list[Anomaly]:
    """A session's reply zxids never decrease: a server refuses a client that saw a newer zxid.
    This is the cross-znode part of session order that the per-znode search cannot see."""
    out: list[Anomaly] = []
    by_session: dict[str, list[Operation]] = {}
    for op in ops:
        if op.outcome != "unknown" and op.zxid is not None and op.zxid > 0:
            by_session.setdefault(op.client, []).append(op)
    for client, seen in sorted(by_session.items()):
        seen.sort(key=lambda o: o.invoked)
        high: Operation | None = None
        for op in seen:
            assert op.zxid is not None
            if high is not None and high.zxid is not None and op.zxid < high.zxid:
                out.append(
                    Anomaly(
                        "session-zxid",
                        None,
                        f"session {client} saw zxid {high.zxid:#x}, then a reply with older zxid {op.zxid:#x}",
                        [high, op],
                        None,
                        op,
                    )
                )
                break
            if high is None or (high.zxid is not None and op.zxid > high.zxid):
                high = op
    return out


# --- formatting --------------------------------------------------------------------------------


def _show(value: bytes | None) -> str:
    if value is None:
        return "?"
    text = repr(value)[2:-1] if isinstance(value, bytes) else repr(value)
    return f"'{text[:40]}{'...' if len(text) > 40 else ''}'"


def _show_state(state: State) -> str:
    if state is None:
        return "absent"
    return f"{'(a value no read returned)' if state[0] == _UNREAD else _show(state[0])} v{state[1]}"


# --- adapting the simulator's records ----------------------------------------------------------

_ERROR_NAMES = {
    -101: "NoNode",
    -103: "BadVersion",
    -110: "NodeExists",
    -111: "NotEmpty",
}


def from_simclient(records: Iterable[Any]) -> list[Operation]:
    """Convert zkpy.testing.simclient.Op records into Operations.

    A simclient record keeps the request's value, the reply's zxid, error code and response
    record. The expected version of a conditional set/delete is not part of that record; a
    record that carries a `version` attribute (an expected version >= 0) is read as a cas (for
    "set") or a conditional delete, otherwise set and delete are unconditional. Still-pending
    records (the run ended mid-request) count as unknown outcomes."""
    out: list[Operation] = []
    for rec in records:
        kind = {"get_data": "get", "getData": "get", "set_data": "set", "setData": "set"}.get(
            rec.kind, rec.kind
        )
        expected = getattr(rec, "version", None)
        if kind == "set" and expected is not None and expected >= 0:
            kind = "cas"
        if kind not in KINDS:
            continue  # getChildren, multi, ...: not modelled per znode
        outcome = {"ok": "ok", "error": "fail"}.get(rec.outcome, "unknown")
        error = _ERROR_NAMES.get(rec.err, f"error {rec.err}") if outcome == "fail" else None
        value: bytes | None = rec.value
        version: int | None = expected if kind in ("cas", "delete") else None
        result = getattr(rec, "result", None)
        if kind in READ_KINDS:
            value = None
            if outcome == "ok" and result is not None:
                value = bytes(result.data) if kind == "get" and hasattr(result, "data") else None
                stat = getattr(result, "stat", None)
                version = stat.version if stat is not None else None
        zxid = rec.zxid if isinstance(rec.zxid, int) and rec.zxid > 0 else None
        out.append(
            Operation(
                client=rec.client,
                kind=kind,
                path=rec.path,
                value=value,
                version=version,
                invoked=rec.invoked,
                completed=rec.completed if outcome != "unknown" else None,
                outcome=outcome,
                zxid=zxid if outcome != "unknown" else None,
                error=error,
            )
        )
    return out
