"""Properties of zkpy.client under a fault-injecting proxy (zkpy.testing.faultproxy).

`client_properties` runs seeded random operations from several clients, all through the proxy,
and checks:

- no call hangs: every call returns or raises within `op_bound` seconds;
- every reply is one its request could get: a get returns a value its worker wrote (each worker
  owns a node and writes values naming itself), never another node's (a reply handed to the
  wrong caller) and never one never written;
- every watch whose registering call returned fires exactly once, after a final change made
  through a second, fault-free client, or its loss is reported (the session's EXPIRED event,
  delivered to that watch, counts as its one firing); a watch whose call failed fires at most
  once.

`recipe_properties` runs the queue, counter, lock, election and double-barrier recipes through
the same proxy and checks exactly-once: every `put` that returned enqueued exactly one item and
one that raised at most one; every `add` that returned is counted once (the total lies between
the sum of the adds that returned and that plus the ones that raised) and no two adds return the
same value; the lock and the leadership are never held twice at once and leave no node behind
(a contender whose create reply was lost must not leave a twin); nobody passes a barrier's
enter or leave before the other participant got there.

A violation is reported as text in `Report.failures` (with the seed), never raised, so a run
can go on and report them all.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

import zkpy.client
from zkpy.client import State, WatchedEvent, recipes
from zkpy.errors import (
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from zkpy.testing.procs import four_letter

MAX_HANGS = 5  # a run stops issuing calls after this many hangs

# Outcomes a faulty connection may legitimately give a call.
_LOST = (ConnectionLossError, OperationTimeoutError, SessionExpiredError)


@dataclass
class Report:
    seed: int
    ops: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    watches_ok: int = 0
    expired: int = 0
    hangs: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(f"seed {self.seed}: {message}")

    def merge(self, other: Report) -> None:
        self.ops += other.ops
        self.outcomes.update(other.outcomes)
        self.watches_ok += other.watches_ok
        self.expired += other.expired
        self.hangs += other.hangs
        self.failures += other.failures


@dataclass(eq=False)
class _Watch:
    what: str
    registered: bool = False
    fired: list[WatchedEvent] = field(default_factory=list)

    def __call__(self, event: WatchedEvent) -> None:
        self.fired.append(event)


def _ignore(_: WatchedEvent) -> None:
    pass


class _Bounded:
    """Runs calls under `op_bound`; a call that takes longer is a hang, reported once."""

    def __init__(self, report: Report, op_bound: float) -> None:
        self.report = report
        self.op_bound = op_bound

    async def __call__(self, name: str, call: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
        self.report.ops += 1
        try:
            with trio.fail_after(self.op_bound):
                result = await call()
        except trio.TooSlowError:
            self.report.fail(f"{name} neither returned nor raised within {self.op_bound}s")
            self.report.hangs += 1
            outcome = "hang"
            result = None
        except _LOST as exc:
            outcome, result = type(exc).__name__, exc
        except (NoNodeError, NodeExistsError) as exc:
            outcome, result = type(exc).__name__, exc
        else:
            outcome = "ok"
        self.report.outcomes[f"{name}:{outcome}"] += 1
        return outcome, result


async def _worker(
    zk: zkpy.client.Client,
    node: str,
    wid: str,
    ops: int,
    rng: random.Random,
    bounded: _Bounded,
    watches: list[_Watch],
) -> None:
    report = bounded.report
    written = {b"init"}
    child = node + "/c"
    for n in range(ops):
        if report.hangs >= MAX_HANGS:
            return  # the property has failed; stop rather than wait out every other hang
        roll = rng.random()
        if roll < 0.35:
            value = f"{wid}:{n}".encode()
            written.add(value)
            await bounded("set", lambda v=value: zk.set(node, v))  # type: ignore[misc]
        elif roll < 0.75:
            watch = _Watch(f"data {node}") if roll >= 0.6 else None
            name = "get" if watch is None else "get+watch"
            outcome, result = await bounded(name, lambda w=watch: zk.get(node, watch=w))  # type: ignore[misc]
            if watch is not None:
                watches.append(watch)
                watch.registered = outcome == "ok"
            if outcome == "ok" and result[0] not in written:
                report.fail(f"get {node} returned {result[0]!r}, which its worker never wrote")
        elif roll < 0.85:
            watch = _Watch(f"exists {child}")
            watches.append(watch)
            outcome, _ = await bounded("exists+watch", lambda w=watch: zk.exists(child, watch=w))  # type: ignore[misc]
            watch.registered = outcome == "ok"
        elif roll < 0.88:
            # Persistent: nothing consumes it but the connection's close; one registered for a
            # connection already closed would be left on the server (see _no_watches_left).
            await bounded("add_watch", lambda: zk.add_watch(node, _ignore))
        elif roll < 0.94:
            await bounded("create", lambda: zk.create(child, f"{wid}".encode()))
        else:
            await bounded("delete", lambda: zk.delete(child))


async def client_properties(
    direct_hosts: str,
    proxy: Any,
    root: str,
    *,
    seed: int,
    ops: int,
    clients: int = 2,
    workers: int = 4,
    session_timeout: float = 2.0,
    op_bound: float | None = None,
    server_watches: bool = True,
) -> Report:
    """`ops` operations in total from `clients` x `workers` tasks through `proxy` (a running
    FaultProxy to the server at `direct_hosts`), under `root` (which must exist). With
    `server_watches`, the server (alone in using it) must be left with no watch at the end."""
    report = Report(seed)
    rng = random.Random(seed)
    bound = op_bound if op_bound is not None else 2 * session_timeout + 2.0
    bounded = _Bounded(report, bound)
    per_worker = max(1, ops // (clients * workers))
    async with zkpy.client.connect(direct_hosts + root) as admin:
        watches: list[_Watch] = []
        expired = [0]

        def on_state(state: State) -> None:
            if state is State.EXPIRED:
                expired[0] += 1

        async with trio.open_nursery() as nursery:
            for c in range(clients):
                nursery.start_soon(
                    _one_client,
                    proxy.hosts + root,
                    admin,
                    c,
                    workers,
                    per_worker,
                    rng.getrandbits(64),
                    bounded,
                    watches,
                    on_state,
                    session_timeout,
                )
        report.expired = expired[0]
        # The clients are closed now; what their watches saw is final except for the fault-free
        # triggers below, which _one_client made before closing (see there).
        for watch in watches:
            if watch.registered and len(watch.fired) != 1:
                report.fail(f"watch {watch.what} registered, fired {len(watch.fired)} times: {watch.fired}")
            elif not watch.registered and len(watch.fired) > 1:
                report.fail(f"watch {watch.what} (registration failed) fired {len(watch.fired)} times")
            elif watch.registered:
                report.watches_ok += 1
    if server_watches:
        await _no_watches_left(direct_hosts, report)
    return report


async def _no_watches_left(direct_hosts: str, report: Report, limit: float = 3.0) -> None:
    """Every client is closed: the server must hold no watch any more (mntr's zk_watch_count, which
    counts every kind, also watches of connections that are gone, which wchs does not show). A
    watch registered for a connection after it closed would stay for ever (issue 15 item 10)."""
    host, _, port = direct_hosts.split(",")[0].rpartition(":")
    count = "?"
    with trio.move_on_after(limit):
        while True:
            answer = await trio.to_thread.run_sync(four_letter, host, int(port), "mntr")
            found = re.search(r"zk_watch_count\s+(\d+)", answer)
            count = found.group(1) if found else "?"
            if count == "0":
                return
            await trio.sleep(0.1)
    report.fail(f"{count} watches left on the server after every client closed")


async def _one_client(
    hosts: str,
    admin: zkpy.client.Client,
    c: int,
    workers: int,
    per_worker: int,
    seed: int,
    bounded: _Bounded,
    watches: list[_Watch],
    on_state: Callable[[State], None],
    session_timeout: float,
) -> None:
    rng = random.Random(seed)
    async with zkpy.client.connect(hosts, timeout=session_timeout, auto_restart=True) as zk:
        zk.add_listener(on_state)
        nodes = []
        for w in range(workers):
            node = f"/w{c}-{w}"
            await admin.create(node, b"init")
            nodes.append(node)
        mine: list[_Watch] = []
        async with trio.open_nursery() as nursery:
            for w, node in enumerate(nodes):
                nursery.start_soon(
                    _worker,
                    zk,
                    node,
                    f"{c}-{w}",
                    per_worker,
                    random.Random(rng.getrandbits(64)),
                    bounded,
                    mine,
                )
        watches += mine
        # Fire every watch still armed: change each node and toggle its child through the
        # fault-free client, then wait (bounded) until each registered watch has fired once.
        for node in nodes:
            await admin.set(node, b"final")
            try:
                await admin.delete(node + "/c")
            except NoNodeError:
                await admin.create(node + "/c")
        with trio.move_on_after(2 * session_timeout + 5):
            while any(w.registered and not w.fired for w in mine):
                await trio.sleep(0.02)


async def recipe_properties(
    direct_hosts: str,
    proxy: Any,
    root: str,
    *,
    seed: int,
    rounds: int = 30,
    barrier_rounds: int = 5,
    session_timeout: float = 2.0,
) -> Report:
    """Queue puts, counter adds, lock holds and elections through `proxy`, `rounds` of them from
    each of two clients, then `barrier_rounds` double barriers the two pass together; checked as
    they go and through a fault-free client afterwards."""
    report = Report(seed)
    bounded = _Bounded(report, 2 * session_timeout + 35.0)  # recipes retry up to 30 s
    put_ok: list[bytes] = []
    put_failed: list[bytes] = []
    add_ok: list[int] = []
    add_failed = [0]
    holders: list[str] = []
    overlaps = [0]

    leaders: list[str] = []
    progress: dict[tuple[int, str], int] = {}
    finished = [0]
    all_finished = trio.Event()
    checked = trio.Event()

    async def one(c: int, admin: zkpy.client.Client) -> None:
        rng = random.Random(seed * 31 + c)
        async with zkpy.client.connect(proxy.hosts + root, timeout=session_timeout, auto_restart=True) as zk:
            queue = recipes.Queue(zk, "/queue")
            counter = recipes.Counter(zk, "/counter")
            for n in range(rounds):
                roll = rng.random()
                if roll < 0.4:
                    value = f"{c}:{n}".encode()
                    outcome, _ = await bounded("queue.put", lambda v=value: queue.put(v))  # type: ignore[misc]
                    (put_ok if outcome == "ok" else put_failed).append(value)
                elif roll < 0.8:
                    outcome, result = await bounded("counter.add", lambda: counter.add(1))
                    if outcome == "ok":
                        add_ok.append(result)
                    else:
                        add_failed[0] += 1
                elif roll < 0.9:
                    await bounded("lock", lambda: _hold_lock(zk, f"{c}", holders, overlaps))
                else:
                    await bounded("election", lambda: _lead(zk, f"{c}", leaders, overlaps))
            for r in range(barrier_rounds):  # both clients, in step
                await bounded("barrier", lambda r=r: _barrier_round(zk, c, r, progress, report))  # type: ignore[misc]
            finished[0] += 1
            if finished[0] == 2:
                all_finished.set()
            await all_finished.wait()
            if c == 0:  # both sessions still open: a lock node now would block the next holder
                for line in ("/lock", "/election"):
                    if await admin.exists(line) and (left := await admin.get_children(line)):
                        report.fail(f"{line}: nodes left behind after every holder stepped down: {left}")
                checked.set()
            await checked.wait()

    async with zkpy.client.connect(direct_hosts + root) as admin:
        async with trio.open_nursery() as nursery:
            for c in range(2):
                nursery.start_soon(one, c, admin)
        items: Counter[bytes] = Counter()
        if await admin.exists("/queue/entries"):
            for name in await admin.get_children("/queue/entries"):
                items[(await admin.get(f"/queue/entries/{name}"))[0]] += 1
        for value in put_ok:
            if items[value] != 1:
                report.fail(f"queue.put({value!r}) returned, and the queue holds it {items[value]} times")
        for value in put_failed:
            if items[value] > 1:
                report.fail(f"queue.put({value!r}) raised, and the queue holds it {items[value]} times")
        total = int((await admin.get("/counter"))[0]) if await admin.exists("/counter") else 0
        if not len(add_ok) <= total <= len(add_ok) + add_failed[0]:
            report.fail(
                f"counter is {total} after {len(add_ok)} adds that returned and {add_failed[0]} that raised"
            )
        if len(set(add_ok)) != len(add_ok):
            report.fail(f"two counter adds returned the same value: {sorted(add_ok)}")
        if overlaps[0]:
            report.fail(f"the lock or the leadership was held by two clients at once {overlaps[0]} times")
    return report


async def _lead(zk: zkpy.client.Client, me: str, leaders: list[str], overlaps: list[int]) -> None:
    async def lead() -> None:
        if leaders:
            overlaps[0] += 1
        leaders.append(me)
        try:
            await trio.sleep(0.005)
        finally:
            leaders.remove(me)

    with contextlib.suppress(recipes.LeadershipLost):  # lost on a suspension: allowed, not a failure
        await recipes.Election(zk, "/election", me.encode()).run(lead)


async def _barrier_round(
    zk: zkpy.client.Client, c: int, r: int, progress: dict[tuple[int, str], int], report: Report
) -> None:
    """Both clients enter and leave /barrier-<r> (count 2): neither may pass `enter` before the
    other has begun entering, nor pass `leave` before the other has begun leaving."""
    barrier = recipes.DoubleBarrier(zk, f"/barrier-{r}", 2, identifier=f"c{c}")
    other = 1 - c
    progress[c, "enter"] = r
    await barrier.enter()
    if progress.get((other, "enter"), -1) < r:
        report.fail(f"client {c} passed barrier {r}'s enter before client {other} had entered")
    progress[c, "leave"] = r
    await barrier.leave()
    if progress.get((other, "leave"), -1) < r:
        report.fail(f"client {c} passed barrier {r}'s leave before client {other} had left")


async def _hold_lock(zk: zkpy.client.Client, me: str, holders: list[str], overlaps: list[int]) -> None:
    async with recipes.Lock(zk, "/lock", me.encode()).hold():
        if holders:
            overlaps[0] += 1
        holders.append(me)
        try:
            await trio.sleep(0.005)
        finally:
            holders.remove(me)
