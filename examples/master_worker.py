"""Master/worker on zkpy.client: workers register, one is elected master and assigns the work.

    .venv/bin/python examples/master_worker.py demo [--server zkpy|apache] [--hosts H]   # the whole story
    .venv/bin/python examples/master_worker.py worker HOSTS ID                          # one worker process
    .venv/bin/python examples/master_worker.py submit HOSTS N                           # queue N tasks

(.venv is the README's: `python3 -m venv .venv && .venv/bin/pip install -e .`.) The demo starts its own
zkpy server unless --hosts names one; `--server apache` runs it against Apache ZooKeeper 3.8 instead.

The tree under /mw:
    workers/<id>          ephemeral, one per live worker (recipes.ServiceRegistry)
    election/...          recipes.Election: the first in line is the master
    tasks/task-NNNNNNNNNN persistent sequential: the work
    assign/<id>/<task>    the master's assignment of a task to a worker
    done/<task>           written by the worker that did it

Every worker process also stands for master. The master (re)assigns every task that is neither
done nor assigned to a live worker; a worker's assignments to a dead worker go back in the pool.
The demo starts three workers and submits 10 tasks. Once they are done it kills the master with
SIGKILL and submits 10 more, which wait for the next master: another is elected once the dead
master's session expires (within the session timeout), and every task gets done exactly once.
The master prints one `assigned` line per task (20 in all); a task whose worker died before doing
it is `reassigned`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import trio
except ImportError:
    sys.exit(
        f"{sys.executable} does not have zkpy's dependencies (trio): run this with the Python of the "
        "virtual environment zkpy is installed in, e.g. .venv/bin/python examples/master_worker.py demo"
    )

import zkpy.client
from zkpy.client import recipes
from zkpy.client.retry import retry
from zkpy.errors import NodeExistsError, NoNodeError, ZooKeeperError

ROOT = "/mw"
SESSION_TIMEOUT = 2.0


def say(*parts: object) -> None:
    """One line per write: print() writes the text and the newline separately, and the workers
    share one pipe, so their lines could interleave mid-line."""
    line = " ".join([f"[{time.strftime('%H:%M:%S')} pid {os.getpid()}]", *map(str, parts)]) + "\n"
    sys.stdout.write(line)
    sys.stdout.flush()


async def master(zk: zkpy.client.Client, me: str) -> None:
    """Assign every task that is neither done nor held by a live worker, again after each change.

    Prints `assigned` once per task (its first assignment), `reassigned` when the worker holding
    it died before doing it, and `already assigned` if a create finds the assignment there (a
    retried create that had gone through).
    """
    say(f"master {me}")
    registry = recipes.ServiceRegistry(zk, ROOT)
    changes = zk.event_stream()
    turn = 0
    while True:
        tasks = sorted(await retry(zk.get_children, f"{ROOT}/tasks", watch=changes))
        live = [i.id for i in await registry.instances("workers", watch=changes)]
        assignments: list[tuple[str, str]] = []
        for worker in await retry(zk.get_children, f"{ROOT}/assign"):
            for task in await retry(zk.get_children, f"{ROOT}/assign/{worker}", watch=changes):
                assignments.append((worker, task))
        # Read done/ after assign/: a worker writes done/<task> before it deletes its assignment,
        # so a task missing from both lists has never been assigned (or was done already).
        done = set(await retry(zk.get_children, f"{ROOT}/done", watch=changes))
        held: set[str] = set()
        orphaned: dict[str, str] = {}
        for worker, task in assignments:
            if worker in live and task not in done:
                held.add(task)
                continue
            if task not in done:  # its worker died before doing it
                orphaned[task] = worker
            with contextlib.suppress(NoNodeError):  # finished, or its worker died: clear it
                await retry(zk.delete, f"{ROOT}/assign/{worker}/{task}")
        for task in tasks:
            if task in done or task in held or not live:
                continue
            worker = live[turn % len(live)]
            turn += 1
            try:
                await retry(zk.create, f"{ROOT}/assign/{worker}/{task}", makepath=True)
            except NodeExistsError:
                say(f"already assigned {task} -> {worker}")
                continue
            if task in orphaned:
                say(f"reassigned {task} -> {worker} ({orphaned[task]} died holding it)")
            else:
                say(f"assigned {task} -> {worker}")
        with trio.move_on_after(1.0):  # a change, or a periodic sweep
            await changes.get()


async def work(zk: zkpy.client.Client, me: str) -> None:
    """Do what the master assigns to us, once each."""
    mine = f"{ROOT}/assign/{me}"
    await retry(zk.ensure_path, mine)
    changes = zk.event_stream()
    while True:
        for task in sorted(await retry(zk.get_children, mine, watch=changes)):
            if await retry(zk.exists, f"{ROOT}/done/{task}") is None:
                await trio.sleep(0.05)  # the "work"
                with contextlib.suppress(NodeExistsError):
                    await retry(zk.create, f"{ROOT}/done/{task}", me.encode())
                    say(f"did {task}")
            with contextlib.suppress(NoNodeError):
                await retry(zk.delete, f"{mine}/{task}")
        with trio.move_on_after(1.0):
            await changes.get()


async def worker(hosts: str, me: str) -> None:
    async with zkpy.client.connect(hosts, timeout=SESSION_TIMEOUT, auto_restart=True) as zk:
        for path in ("tasks", "done", "assign"):
            await retry(zk.ensure_path, f"{ROOT}/{path}")
        await recipes.ServiceRegistry(zk, ROOT).register("workers", "127.0.0.1", 0, {"pid": os.getpid()}, me)
        say(f"worker {me} registered")
        election = recipes.Election(zk, f"{ROOT}/election", me.encode())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(work, zk, me)
            while True:
                try:
                    await election.run(master, zk, me)
                except (recipes.LeadershipLost, ZooKeeperError) as exc:
                    say(f"{me} no longer master: {exc!r}")
                    await trio.sleep(0.1)


async def submit(hosts: str, n: int) -> list[str]:
    async with zkpy.client.connect(hosts) as zk:
        await zk.ensure_path(f"{ROOT}/tasks")
        return [await zk.create(f"{ROOT}/tasks/task-", f"job {i}".encode(), sequence=True) for i in range(n)]


async def wait_done(zk: zkpy.client.Client, n: int, limit: float) -> dict[str, str]:
    with trio.fail_after(limit):
        while True:
            done = await zk.get_children(f"{ROOT}/done")
            if len(done) >= n:
                return {t: (await zk.get(f"{ROOT}/done/{t}"))[0].decode() for t in done}
            await trio.sleep(0.1)


async def demo(hosts: str) -> None:
    procs = {
        f"w{i}": subprocess.Popen([sys.executable, __file__, "worker", hosts, f"w{i}"]) for i in range(3)
    }
    try:
        async with zkpy.client.connect(hosts) as zk:
            election = recipes.Election(zk, f"{ROOT}/election")
            with trio.fail_after(30):
                while len(await election.contenders()) < 3:
                    await trio.sleep(0.1)
            await submit(hosts, 10)
            await wait_done(zk, 10, 30)
            first = (await election.leader() or b"").decode()
            say(f"demo: 10 tasks done; killing master {first}, then submitting 10 more")
            killed_at = time.monotonic()
            procs[first].send_signal(signal.SIGKILL)
            procs[first].wait()
            await submit(hosts, 10)  # they wait for the next master
            with trio.fail_after(30):
                while (leader := (await election.leader() or b"").decode()) in ("", first):
                    await trio.sleep(0.02)
            took = time.monotonic() - killed_at
            say(
                f"demo: new master {leader} elected {took:.2f}s after the kill (session timeout {SESSION_TIMEOUT}s)"
            )
            done = await wait_done(zk, 20, 60)
            by_worker: dict[str, int] = {}
            for w in done.values():
                by_worker[w] = by_worker.get(w, 0) + 1
            say(
                f"demo: all {len(done)} tasks done exactly once; per worker: {dict(sorted(by_worker.items()))}"
            )
            assert took < SESSION_TIMEOUT * 1.5, took
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    async with zkpy.client.connect(hosts) as zk:
        await zk.delete(ROOT, recursive=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo")
    d.add_argument("--server", choices=["zkpy", "apache"], default="zkpy")
    d.add_argument("--hosts")
    w = sub.add_parser("worker")
    w.add_argument("hosts")
    w.add_argument("id")
    s = sub.add_parser("submit")
    s.add_argument("hosts")
    s.add_argument("n", type=int)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.command == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(worker, args.hosts, args.id)
    elif args.command == "submit":
        print("\n".join(trio.run(submit, args.hosts, args.n)))
    elif args.hosts:
        trio.run(demo, args.hosts)
    else:
        from zkpy.testing.procs import running_server

        with running_server(args.server, {"tickTime": "250"}) as server:
            trio.run(demo, server.hosts)


if __name__ == "__main__":
    main()
