"""Many clients at once: compare-and-set counters, sequential names and many connections."""

from __future__ import annotations

import threading
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError
from zkraw import RawClient

from zkpy.jute.ops import EPHEMERAL, CreateRequest, OpCode
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.testing.procs import ServerProcess

Clients = Callable[..., KazooClient]


def run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # reported to the test thread below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_compare_and_set_counter_loses_no_increment(make_client: Clients, zk: KazooClient, base: str) -> None:
    path = f"{base}/counter"
    zk.create(path, b"0")
    workers, increments = 4, 25

    def worker(client: KazooClient) -> None:
        done = 0
        while done < increments:
            data, stat = client.get(path)
            try:
                client.set(path, str(int(data) + 1).encode(), version=stat.version)
            except BadVersionError:
                continue
            done += 1

    clients = [make_client() for _ in range(workers)]
    run_threads([lambda c=c: worker(c) for c in clients])
    data, stat = zk.get(path)
    assert int(data) == workers * increments
    assert stat.version == workers * increments


def test_concurrent_sequential_creates_get_distinct_contiguous_numbers(
    make_client: Clients, zk: KazooClient, base: str
) -> None:
    workers, each = 4, 25
    names: list[str] = []
    lock = threading.Lock()

    def worker(client: KazooClient) -> None:
        for _ in range(each):
            name = client.create(f"{base}/q-", sequence=True)
            with lock:
                names.append(name)

    clients = [make_client() for _ in range(workers)]
    run_threads([lambda c=c: worker(c) for c in clients])
    assert sorted(names) == [f"{base}/q-{i:010d}" for i in range(workers * each)]
    assert zk.exists(base).numChildren == workers * each


def test_a_hundred_sessions_at_once(server: ServerProcess, zk: KazooClient, base: str) -> None:
    raws = []
    try:
        for i in range(100):
            raw = RawClient(server.host, server.port)
            raws.append(raw)
            raw.call(OpCode.CREATE, CreateRequest(f"{base}/e{i}", b"", OPEN_ACL_UNSAFE, EPHEMERAL))
        assert len({r.session_id for r in raws}) == 100
        assert zk.exists(base).numChildren == 100
        for raw in raws:
            raw.ping()
    finally:
        for raw in raws:
            raw.close()
    assert zk.get_children(base) == []
