"""Each recipe, and each under a participant's crash (a killed process) or session expiry."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import zkpy.client
from zkpy import errors
from zkpy.client import recipes

from .conftest import expire_session
from .crash import Participants


@pytest.fixture
def procs(hosts: str, tmp_path: Path) -> Iterator[Participants]:
    p = Participants(hosts, tmp_path / "log")
    yield p
    p.stop_all()


async def wait_until(predicate: object, limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.02)


# -- election -----------------------------------------------------------------------------------


async def test_election_one_leader_and_the_next_takes_over_when_it_steps_down(zk: zkpy.client.Client) -> None:
    leaders: list[str] = []
    active: list[str] = []
    step_down = {name: trio.Event() for name in "abc"}

    async def candidate(name: str) -> None:
        async def lead() -> None:
            active.append(name)
            assert len(active) == 1, f"two leaders: {active}"
            leaders.append(name)
            await step_down[name].wait()
            active.remove(name)

        await recipes.Election(zk, "/election", name.encode()).run(lead)

    async with trio.open_nursery() as nursery:
        for joined, name in enumerate("abc", 1):
            nursery.start_soon(candidate, name)
            with trio.fail_after(10):  # join in a known order: wait until this one is in line
                while len(await recipes.Election(zk, "/election").contenders()) < joined:
                    await trio.sleep(0.02)
        await wait_until(lambda: leaders == ["a"])
        assert await recipes.Election(zk, "/election").contenders() == [b"a", b"b", b"c"]
        for name, expected in (("a", ["a", "b"]), ("b", ["a", "b", "c"])):
            step_down[name].set()
            await wait_until(lambda e=expected: leaders == e)
        step_down["c"].set()


async def test_a_leader_whose_session_expires_loses_leadership_and_another_is_elected(
    hosts: str, zk: zkpy.client.Client
) -> None:
    outcome: list[str] = []
    async with zkpy.client.connect(hosts, timeout=2.0) as first, trio.open_nursery() as nursery:
        led = trio.Event()

        async def lead_forever() -> None:
            led.set()
            await trio.sleep_forever()

        async def run_first() -> None:
            try:
                await recipes.Election(first, "/e", b"first").run(lead_forever)
            except recipes.LeadershipLost as exc:
                outcome.append(f"lost: {exc}")

        nursery.start_soon(run_first)
        await led.wait()
        second_led = trio.Event()

        async def lead_second() -> None:
            outcome.append("second leads")
            second_led.set()

        nursery.start_soon(recipes.Election(zk, "/e", b"second").run, lead_second)
        await trio.sleep(0.2)
        assert not second_led.is_set()
        await expire_session(hosts, first)
        with trio.fail_after(10):
            await second_led.wait()
        await wait_until(lambda: len(outcome) == 2)
        # (a session closed by someone else gives no head start to either side, so no order here;
        # the order under a real crash or partition is the twenty-process test's business)
        assert sorted(o.split(":")[0] for o in outcome) == ["lost", "second leads"]


async def test_twenty_candidates_in_processes_elect_one_leader_at_a_time_while_leaders_are_killed(
    procs: Participants, zk: zkpy.client.Client
) -> None:
    for i in range(20):
        procs.start("election", "/el", f"c{i:02d}")
    election = recipes.Election(zk, "/el")
    with trio.fail_after(30):
        while len(line := await election.contenders()) < 20:
            await trio.sleep(0.1)
    killed_at: dict[str, float] = {}
    for _ in range(6):
        # the leader by the tree, once it knows it leads (its log line), is killed
        with trio.fail_after(15):
            while True:
                leader = (await election.leader() or b"").decode()
                logged = {e.ident for e in procs.entries() if e.event == "leader"}
                if leader and leader not in killed_at and leader in logged:
                    break
                await trio.sleep(0.02)
        killed_at[leader] = time.time()
        procs.kill(leader)
    await procs.wait_for(7, "leader", limit=15)
    await trio.sleep(0.5)  # let any late claim show up in the log

    # Leadership intervals from the history: from a "leader" line to that candidate's next "lost"
    # line or its kill. Exactly one leader at a time means no two intervals overlap.
    history = procs.entries()
    intervals = []
    for e in history:
        if e.event != "leader":
            continue
        ends = [x.time for x in history if x.ident == e.ident and x.event == "lost" and x.time >= e.time]
        if e.ident in killed_at and killed_at[e.ident] >= e.time:
            ends.append(killed_at[e.ident])
        intervals.append((e.time, min(ends, default=float("inf")), e.ident))
    intervals.sort()
    for (_, end, who), (start, _, successor) in itertools.pairwise(intervals):
        assert start >= end, f"{successor} led from {start} while {who} still led (until {end})"
    assert sum(1 for _, end, _ in intervals if end == float("inf")) == 1  # one leader now
    assert len(intervals) >= 7
    # without losses, leadership passed down the line in order: each death woke only its successor
    if not [e for e in history if e.event == "lost"]:
        assert [who.encode() for _, _, who in intervals] == line[:7]


# -- locks --------------------------------------------------------------------------------------


async def test_lock_excludes_and_a_killed_holder_releases_it(
    procs: Participants, zk: zkpy.client.Client
) -> None:
    procs.start("lock", "/lock", "holder")
    await procs.wait_for(1, "acquired")
    lock = recipes.Lock(zk, "/lock", b"me")
    assert not await lock.acquire(timeout=0.5)
    assert await lock.contenders() == [b"holder"]
    procs.kill("holder")
    with trio.fail_after(10):
        async with lock:
            assert lock.is_acquired and not lock.lost.is_set()
    assert not lock.is_acquired


async def test_lock_serialises_concurrent_tasks(hosts: str) -> None:
    inside: list[int] = []
    max_inside = 0

    async def worker(i: int) -> None:
        nonlocal max_inside
        async with zkpy.client.connect(hosts) as zk:
            for _ in range(3):
                async with recipes.Lock(zk, "/mutex"):
                    inside.append(i)
                    max_inside = max(max_inside, len(inside))
                    await trio.sleep(0.01)
                    inside.remove(i)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(worker, i)
    assert max_inside == 1


async def test_a_held_lock_is_lost_when_the_session_expires(hosts: str, zk: zkpy.client.Client) -> None:
    async with zkpy.client.connect(hosts, timeout=2.0) as holder:
        lock = recipes.Lock(holder, "/l")
        ran_to_end = False
        async with lock.hold():
            await expire_session(hosts, holder)
            await trio.sleep(10)
            ran_to_end = True
        assert not ran_to_end and lock.lost.is_set()
        other = recipes.Lock(zk, "/l")
        assert await other.acquire(timeout=5)
        await other.release()


async def test_read_write_lock_readers_share_and_writers_wait_for_a_killed_reader(
    procs: Participants, zk: zkpy.client.Client
) -> None:
    procs.start("read", "/rw", "reader")
    await procs.wait_for(1, "acquired")
    rw = recipes.ReadWriteLock(zk, "/rw")
    assert await rw.read.acquire(timeout=2)  # readers share
    await rw.read.release()
    assert not await rw.write.acquire(timeout=0.5)  # a writer waits for the reader
    procs.kill("reader")
    assert await rw.write.acquire(timeout=10)
    async with zkpy.client.connect(procs.hosts) as other:
        assert not await recipes.ReadWriteLock(other, "/rw").read.acquire(timeout=0.5)  # readers wait for it
    await rw.write.release()


# -- registry -----------------------------------------------------------------------------------


async def test_registry_follows_instances_as_they_come_and_crash(
    procs: Participants, zk: zkpy.client.Client
) -> None:
    registry = recipes.ServiceRegistry(zk, "/services")
    seen: list[list[str]] = []
    async with trio.open_nursery() as nursery:

        async def follow() -> None:
            async for instances in registry.follow("api"):
                seen.append([i.id for i in instances])

        nursery.start_soon(follow)
        await wait_until(lambda: seen == [[]])
        procs.start("register", "/services", "w1", "api")
        procs.start("register", "/services", "w2", "api")
        await procs.wait_for(2, "registered")
        await wait_until(lambda: seen[-1] == ["w1", "w2"])
        (w1,) = [i for i in await registry.instances("api") if i.id == "w1"]
        assert (w1.host, w1.port, w1.metadata) == ("127.0.0.1", 9000, {"id": "w1"})
        procs.kill("w1")
        await wait_until(lambda: seen[-1] == ["w2"])
        nursery.cancel_scope.cancel()
    assert await registry.services() == ["api"]


async def test_registry_republishes_after_the_session_expires(hosts: str, zk: zkpy.client.Client) -> None:
    async with zkpy.client.connect(hosts, timeout=2.0, auto_restart=True) as svc:
        registry = recipes.ServiceRegistry(svc)
        await registry.register("db", "10.0.0.1", 5432, {"role": "primary"}, "db1")
        old = svc.session_id
        await expire_session(hosts, svc)
        observer = recipes.ServiceRegistry(zk)
        with trio.fail_after(10):
            while True:
                found = await observer.instances("db")
                if found and svc.session_id != old:
                    break
                await trio.sleep(0.05)
        assert [(i.id, i.host, i.port, i.metadata) for i in found] == [
            ("db1", "10.0.0.1", 5432, {"role": "primary"})
        ]
        _, stat = await zk.get("/services/db/db1")
        assert stat.ephemeralOwner == svc.session_id


# -- barrier, counter, queue ----------------------------------------------------------------------


async def test_double_barrier_enters_together_and_a_crashed_participant_does_not_block_leaving(
    procs: Participants, zk: zkpy.client.Client, hosts: str
) -> None:
    entered: list[str] = []
    async with zkpy.client.connect(hosts) as zk2:
        barriers = [recipes.DoubleBarrier(c, "/b", 3, n) for c, n in ((zk, "a"), (zk2, "b"))]

        async def enter(b: recipes.DoubleBarrier) -> None:
            await b.enter(timeout=15)
            entered.append(b.name)

        async with trio.open_nursery() as nursery:
            for b in barriers:
                nursery.start_soon(enter, b)
            await trio.sleep(0.3)
            assert entered == []  # two of three: nobody may pass
            procs.start("barrier", "/b", "c", "3")
        await procs.wait_for(1, "entered")
        assert sorted(entered) == ["a", "b"]
        procs.kill("c")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for b in barriers:
                    nursery.start_soon(b.leave)
        assert await barriers[0].participants() == []


async def test_counter_adds_atomically_and_an_expired_participant_loses_no_count(hosts: str) -> None:
    successes = 0
    uncertain = 0

    async def adder(zk: zkpy.client.Client, n: int) -> None:
        nonlocal successes, uncertain
        counter = recipes.Counter(zk, "/count")
        for _ in range(n):
            try:
                await counter.add(1)
                successes += 1
            except (errors.ConnectionLossError, errors.SessionExpiredError):
                uncertain += 1
                return

    async with zkpy.client.connect(hosts) as a, zkpy.client.connect(hosts, timeout=2.0) as b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(adder, a, 60)
            nursery.start_soon(adder, b, 10_000)
            await trio.sleep(0.3)
            await expire_session(hosts, b)
        value = await recipes.Counter(a, "/count").get()
        assert successes <= value <= successes + uncertain
        assert uncertain == 1 and successes >= 60


async def test_queue_is_fifo_and_a_crashed_consumers_item_is_offered_again(
    procs: Participants, zk: zkpy.client.Client
) -> None:
    queue = recipes.Queue(zk, "/q")
    for value in (b"one", b"two"):
        await queue.put(value)
    procs.start("take", "/q", "crasher")
    (took,) = await procs.wait_for(1)
    assert took.event == "took:one"
    second = await queue.get(timeout=5)
    assert second is not None and second.value == b"two"  # "one" is claimed by the live crasher
    await queue.consume(second)
    assert await queue.get(timeout=0.3) is None
    procs.kill("crasher")
    again = await queue.get(timeout=10)  # offered again once the crasher's session is gone
    assert again is not None and again.value == b"one"
    await queue.consume(again)
    await queue.put(b"three")
    last = await queue.get(timeout=5)
    assert last is not None and last.value == b"three"
    await queue.release(last)
    assert await queue.__len__() == 1
    back = await queue.get(timeout=0.3)
    assert back is not None and back.value == b"three"
