"""A recipe participant in its own process, for crash tests: it does one thing, logs it, then waits to be killed.

    python tests/client/participant.py HOSTS ROLE PATH ID LOG [extra]

Each step is appended to LOG as one line "<event> <id> <pid> <time.time()>", so the test can read
what every process did and when, and kill it (SIGKILL) at the worst moment.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio

import zkpy.client
from zkpy.client import recipes

SESSION_TIMEOUT = 2.0  # read timeout 1.3 s: a process starved of CPU for less does not lose its lead


def log(path: str, event: str, ident: str) -> None:
    with open(path, "a") as f:
        f.write(f"{event} {ident} {os.getpid()} {time.time():.6f}\n")
        f.flush()


async def main(hosts: str, role: str, path: str, ident: str, log_path: str, extra: str) -> None:
    async with zkpy.client.connect(hosts, timeout=SESSION_TIMEOUT) as zk:
        if role == "election":
            election = recipes.Election(zk, path, ident.encode())

            async def lead() -> None:
                log(log_path, "leader", ident)
                await trio.sleep_forever()

            while True:
                try:
                    await election.run(lead)
                except recipes.LeadershipLost:
                    log(log_path, "lost", ident)
        elif role == "lock":
            async with recipes.Lock(zk, path, ident.encode()):
                log(log_path, "acquired", ident)
                await trio.sleep_forever()
        elif role == "read":
            async with recipes.ReadWriteLock(zk, path, ident.encode()).read:
                log(log_path, "acquired", ident)
                await trio.sleep_forever()
        elif role == "register":
            await recipes.ServiceRegistry(zk, path).register(extra, "127.0.0.1", 9000, {"id": ident}, ident)
            log(log_path, "registered", ident)
        elif role == "take":
            item = await recipes.Queue(zk, path).get()
            assert item is not None
            log(log_path, f"took:{item.value.decode()}", ident)
        elif role == "barrier":
            await recipes.DoubleBarrier(zk, path, int(extra), ident).enter()
            log(log_path, "entered", ident)
        else:
            raise SystemExit(f"unknown role {role}")
        await trio.sleep_forever()


if __name__ == "__main__":
    hosts, role, path, ident, log_path, *rest = sys.argv[1:]
    trio.run(main, hosts, role, path, ident, log_path, rest[0] if rest else "")
