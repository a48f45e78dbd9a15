"""Process entry: build a server from its config and run it until interrupted."""

from __future__ import annotations

import gc
import logging
import os
import signal
from pathlib import Path

import trio

from zkpy.ops.service import OpsListeners, bind_ops
from zkpy.ops.source import PeerSource, StandaloneSource
from zkpy.server import gcpause
from zkpy.server.config import ServerConfig
from zkpy.server.durable import DurableStore
from zkpy.server.node import VERSION, StartupError, ZooKeeperServer, open_client_listeners
from zkpy.server.pausemon import PauseMonitor
from zkpy.storage.errors import StorageError

log = logging.getLogger(__name__)


def prepare_directory(setting: str, path: Path) -> None:
    """Create dataDir or dataLogDir, or fail with the setting, its value and what to do.

    Checked up front because the OSError that mkdir and the lock raise later names only a path,
    and an operator then has to guess which setting it came from.
    """
    fix = f"point {setting} at a directory zkpy may create"
    if path.exists() and not path.is_dir():
        raise StartupError(f"{setting}={path} is a file, not a directory: {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise StartupError(
            f"{setting}={path} cannot be created: {e.filename} is not a directory: {fix}"
        ) from None
    except OSError as e:
        raise StartupError(
            f"{setting}={path} cannot be created ({e.strerror}: {e.filename}): {fix}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"{setting}={path} is not writable by this user: {fix}, or give it write access")


def _address(listener: trio.abc.Listener[trio.abc.Stream]) -> str:
    """host:port a listener is bound to ([v6]:port for IPv6), read from its socket."""
    inner = listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
    if not isinstance(inner, trio.SocketListener):
        return repr(inner)
    host, port = inner.socket.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if host in ("0.0.0.0", "::"):
        where += " (all addresses)"
    return where + (" (TLS)" if isinstance(listener, trio.SSLListener) else "")


def startup_banner(
    config: ServerConfig,
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    store: DurableStore,
    endpoints: list[str] | None = None,
) -> str:
    """The block logged once at startup: what an operator needs to find, check and stop this server.

    TTL nodes are called out because zkpy turns them on by default where Apache ZooKeeper does not,
    so a client that works here may be refused by Apache (and the other way round with the flag off).
    """
    ttl = (
        "on (extendedTypesEnabled; Apache ZooKeeper leaves them off unless extendedTypesEnabled=true)"
        if config.extended_types_enabled
        else "off (extendedTypesEnabled=false): createTTL is answered Unimplemented"
    )
    pid = os.getpid()
    lines = [
        f"zkpy {VERSION} (standalone, pid {pid})",
        f"  clients:    {', '.join(_address(listener) for listener in listeners)}",
        f"  dataDir:    {config.data_dir.resolve()} (snapshots in {store.snap_dir.resolve()})",
        f"  dataLogDir: {config.data_log_dir.resolve()} (transaction log in {store.log_dir.resolve()})",
        f"  TTL nodes:  {ttl}",
        f"  containers: on, swept every {config.container_check_interval_ms} ms (znode.container.checkIntervalMs)",
        *(f"  {line}" for line in endpoints or []),
        f"  stop:       Ctrl-C, or kill -TERM {pid}",
    ]
    return "\n".join(lines)


async def serve_until_signalled(config: ServerConfig) -> None:
    prepare_directory("dataDir", config.data_dir)
    if config.data_log_dir != config.data_dir:
        prepare_directory("dataLogDir", config.data_log_dir)
    # Bind first: a port in use or a bad TLS setup fails at once, before a long recovery.
    listeners = await open_client_listeners(config)
    ops = await bind_ops(config)  # the metrics endpoint and the AdminServer, when zoo.cfg asks
    store = DurableStore(config)
    try:
        if is_ensemble(config):
            _freeze_startup_heap()
            await _serve_peer(config, store, listeners, ops)
            return
        tree = store.recover()
        _freeze_startup_heap()
        server = ZooKeeperServer(config, persist=store.persist, tree=tree)
        server.pipeline.after_batch = lambda: store.maybe_snapshot(tree)
        server.metric_sources.append(store.metrics)
        await _serve(server, store, listeners, ops)
    finally:
        store.close()
        with trio.CancelScope(shield=True):
            await ops.aclose()


# Tracked allocations (net of deallocations) between two young collections; Python's default is 700.
GC_YOUNG_THRESHOLD = 50_000


def _freeze_startup_heap() -> None:
    """Move what exists at startup (modules, config, the recovered tree) out of the cycle collector's
    reach: none of it is cyclic garbage, and a full collection walking it all held the event loop for
    tens of ms per 100k objects (a recovered tree of 1M znodes: about half a second). Frozen objects are
    still freed by reference counting when they go.

    Then collect the young generation far less often. Every waiting connection keeps a few fresh objects
    alive (trio's coroutines and closures for its wait, its last request) and replaces them at each
    request; replacing costs the collector's counter nothing, so with 10,000 idle sessions pinging the
    young generation held ~60k live objects whenever a collection came, each collection walked them all
    (50-200 ms of CPU) and promoted them, and full collections of the whole heap (0.2-0.5 s of CPU)
    followed every few seconds: pings went unanswered for 1.5-6.6 s, and on the loaded test machine
    every session of one run expired. Waiting for 50,000 net allocations leaves those objects to die
    young by reference counting; cyclic garbage waits a little longer to be freed."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gcpause.install()


async def _serve(
    server: ZooKeeperServer,
    store: DurableStore,
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    ops: OpsListeners,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(PauseMonitor().run)
        nursery.start_soon(store.reap_snapshots)
        nursery.start_soon(store.autopurge)
        nursery.start_soon(resume_writes_when_the_disk_works, server, store)
        await nursery.start(server.serve, listeners)
        nursery.start_soon(ops.serve, StandaloneSource(server))
        log.info("%s", startup_banner(server.config, listeners, store, ops.urls()))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return


async def resume_writes_when_the_disk_works(server: ZooKeeperServer, store: DurableStore) -> None:
    """A standalone server whose log failed refuses writes (nothing of the failed batch was
    acknowledged); probe the disk with growing pauses and take writes again once a log file fits
    (a full disk that was cleaned up, say). An ensemble member steps aside instead (peer.py)."""
    pipeline = server.pipeline
    pause = 1.0
    while True:
        await trio.sleep(pause)
        if pipeline.write_error is None:
            pause = 1.0
            continue
        try:
            await trio.to_thread.run_sync(store.check_writable)
            store.reopen_log(server.tree.last_zxid)
        except (StorageError, OSError) as e:
            pause = min(pause * 2, 30.0)
            log.error("the disk still fails (%s); writes stay refused, next try in %.0fs", e, pause)
            continue
        log.info("the disk works again: taking writes (last zxid 0x%x)", server.tree.last_zxid)
        pipeline.write_error = None
        pause = 1.0


def is_ensemble(config: ServerConfig) -> bool:
    """Several server.N lines make an ensemble; none or one, a standalone server (as Apache's
    standaloneEnabled=true)."""
    return len(config.servers) > 1


async def _serve_peer(
    config: ServerConfig,
    store: DurableStore,
    listeners: list[trio.abc.Listener[trio.abc.Stream]],
    ops: OpsListeners,
) -> None:
    from zkpy.replication.peer import QuorumPeer

    peer = QuorumPeer(config, store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(PauseMonitor().run)
        nursery.start_soon(store.reap_snapshots)
        nursery.start_soon(store.autopurge)
        await nursery.start(peer.run, listeners)
        nursery.start_soon(ops.serve, PeerSource(peer))
        for line in ops.urls():
            log.info("%s", line)
        await _until_signalled()
        nursery.cancel_scope.cancel()


async def _until_signalled() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            return


def run_server(config: ServerConfig) -> None:
    """Raises StartupError alone (not in the group a nursery wrapped it in): the caller prints it."""
    try:
        trio.run(serve_until_signalled, config)
    except BaseExceptionGroup as group:
        startup, rest = group.split(StartupError)
        if startup is not None and rest is None:
            leaf: BaseException = startup
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            raise leaf from None
        raise
