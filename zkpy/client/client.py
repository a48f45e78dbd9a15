"""The async API: `async with zkpy.client.connect(hosts) as zk: await zk.create(...)`.

Each method builds one request record, hands it to the IO task (connection.py) and turns the reply
into a plain result: a path, bytes and a Stat, a list of children. Errors are the exception classes
of zkpy.errors, one per ZooKeeper error code.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from zkpy import paths
from zkpy.client.connection import LIVE_STATES, Connection
from zkpy.client.events import Callback, EventDispatcher, EventStream, State
from zkpy.client.watches import CHILD, DATA, EXIST, PERSISTENT, RECURSIVE
from zkpy.errors import Code, NodeExistsError, NoNodeError, NotReadOnlyError, ZooKeeperError, error_for_code
from zkpy.jute import ops
from zkpy.jute.ops import OpCode
from zkpy.jute.records import ACL, OPEN_ACL_UNSAFE, Stat

CONFIG_PATH = "/zookeeper/config"  # not chrooted: every client sees the one ensemble configuration
_WATCHER_KINDS = {
    "data": (DATA, EXIST),
    "children": (CHILD,),
    "any": (DATA, EXIST, CHILD),
    "persistent": (PERSISTENT,),
    "recursive": (RECURSIVE,),
}
_WATCHER_TYPE = {
    "data": ops.WATCHER_DATA,
    "children": ops.WATCHER_CHILDREN,
    "any": ops.WATCHER_ANY,
    "persistent": ops.WATCHER_PERSISTENT,
    "recursive": ops.WATCHER_PERSISTENT_RECURSIVE,
}


@dataclass(frozen=True, slots=True)
class ClientInfo:
    scheme: str
    user: str


def _create_mode(ephemeral: bool, sequence: bool, container: bool, ttl: int | None) -> tuple[int, int]:
    """(opcode, flags) for a create."""
    if container:
        if ephemeral or sequence or ttl:
            raise ValueError("a container node cannot also be ephemeral, sequential or have a TTL")
        return OpCode.CREATE_CONTAINER, ops.CONTAINER
    if ttl is not None:
        if ephemeral:
            raise ValueError("a TTL node cannot be ephemeral")
        return OpCode.CREATE_TTL, ops.PERSISTENT_SEQUENTIAL_WITH_TTL if sequence else ops.PERSISTENT_WITH_TTL
    return OpCode.CREATE2, (1 if ephemeral else 0) | (2 if sequence else 0)


class Client:
    """A ZooKeeper session. Made by `connect()`; every method may raise a zkpy.errors exception."""

    def __init__(self, connection: Connection, dispatcher: EventDispatcher) -> None:
        self._conn = connection
        self._dispatcher = dispatcher
        self._proto = connection.protocol

    # -- session ----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._conn.state

    @property
    def connected(self) -> bool:
        """True while requests can be sent: connected read-write, or read-only (CONNECTED_RO)."""
        return self._conn.state in LIVE_STATES

    @property
    def session_id(self) -> int:
        return self._proto.session_id

    @property
    def session_password(self) -> bytes:
        return self._proto.passwd

    @property
    def session_timeout(self) -> float:
        """The negotiated session timeout, in seconds."""
        return self._conn.timeout

    @property
    def server(self) -> tuple[str, int] | None:
        """The (host, port) we are connected to right now."""
        return self._conn.server

    @property
    def read_only_connection(self) -> bool:
        """True while connected to a server that is serving read-only (only with `read_only=True`);
        the state is then CONNECTED_RO, and the client is looking for a read-write server."""
        return self._conn.state is State.CONNECTED_RO

    @property
    def last_zxid(self) -> int:
        return self._proto.last_zxid

    def add_listener(self, callback: Callback) -> None:
        """Call `callback(State)` on every connection-state change, from the event task."""
        self._dispatcher.listeners.append(callback)

    def remove_listener(self, callback: Callback) -> None:
        with contextlib.suppress(ValueError):
            self._dispatcher.listeners.remove(callback)

    def states(self) -> EventStream:
        """An async iterator of State changes from now on (ends when the client closes)."""
        stream = self.event_stream()
        self.add_listener(stream)
        return stream

    def event_stream(self) -> EventStream:
        """A watcher to pass as `watch=` and iterate with `async for`."""
        stream = EventStream()
        self._dispatcher.streams.add(stream)
        return stream

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self._conn.wait_connected(timeout)

    def restart(self) -> None:
        """After EXPIRED: open a fresh session (watches and ephemerals of the old one are gone)."""
        self._conn.restart()

    async def add_auth(self, scheme: str, credential: bytes | str) -> None:
        if isinstance(credential, str):
            credential = credential.encode()
        await self._conn.add_auth(scheme, credential)

    async def close(self) -> None:
        await self._conn.close()

    # -- helpers ----------------------------------------------------------------------------------

    def _path(self, path: str, sequential: bool = False) -> str:
        return self._proto.to_server(paths.validate(path, sequential))

    async def _call(self, op: int, record: Any, path: str, watch: tuple[str, Any] | None = None) -> Any:
        try:
            return await self._conn.call(op, record, path, watch)
        except NotReadOnlyError as e:
            # The bare code name says little: say why the write was refused and what to expect.
            where = self._conn.server
            server = f"{where[0]}:{where[1]}" if where else "the server"
            raise NotReadOnlyError(
                f"NOT_READ_ONLY: {server} is read-only (cut off from its quorum), writes are refused"
                " until the client reaches a read-write server",
                e.path,
            ) from None

    # -- operations -------------------------------------------------------------------------------

    async def create(
        self,
        path: str,
        value: bytes = b"",
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequence: bool = False,
        container: bool = False,
        ttl: int | None = None,
        makepath: bool = False,
        include_stat: bool = False,
    ) -> Any:
        """Create a node; returns its path (with the sequence suffix), or (path, Stat) with include_stat."""
        op, flags = _create_mode(ephemeral, sequence, container, ttl)
        acl_list = list(acl if acl is not None else OPEN_ACL_UNSAFE)
        server_path = self._path(path, sequence)
        if op == OpCode.CREATE_TTL:
            record: Any = ops.CreateTTLRequest(server_path, value, acl_list, flags, int(ttl or 0))
        else:
            record = ops.CreateRequest(server_path, value, acl_list, flags)
        try:
            try:
                reply = await self._call(op, record, path)
            except NoNodeError:
                if not makepath:
                    raise
                await self.ensure_path(paths.parent(path), acl)
                reply = await self._call(op, record, path)
        except NoNodeError as e:
            explained = await self._explain_no_node(e)
            if explained is e:
                raise
            raise explained from None
        created = self._proto.to_client(reply.path)
        return (created, reply.stat) if include_stat else created

    async def ensure_path(self, path: str, acl: Sequence[ACL] | None = None) -> None:
        """Create `path` and any missing parents (persistent, empty), the chroot included.

        As kazoo does: with `connect("host:2181/app")`, `ensure_path("/a/b")` creates /app (and its
        own parents) when it is missing, then /app/a and /app/a/b.
        """
        if await self.exists(path):
            return
        await self._ensure_chroot(acl)
        for p in [*list(reversed(paths.ancestors(path)))[1:], path]:
            if p == "/":
                continue
            with contextlib.suppress(NodeExistsError):
                await self.create(p, b"", acl)

    async def _ensure_chroot(self, acl: Sequence[ACL] | None) -> None:
        """Create the chroot and its parents (server paths) if the chroot is missing."""
        chroot = self._proto.chroot
        if not chroot or await self.exists("/"):
            return
        acl_list = list(acl if acl is not None else OPEN_ACL_UNSAFE)
        for server_path in [*list(reversed(paths.ancestors(chroot)))[1:], chroot]:
            with contextlib.suppress(NodeExistsError):
                await self._call(OpCode.CREATE2, ops.CreateRequest(server_path, b"", acl_list, 0), "/")

    async def _explain_no_node(self, error: ZooKeeperError) -> ZooKeeperError:
        """`error` (a NoNode), or one that says so when the cause is that the chroot does not exist."""
        chroot = self._proto.chroot
        if not chroot:
            return error
        try:
            if await self.exists("/") is not None:
                return error
        except ZooKeeperError:
            return error
        explained = NoNodeError(path=error.path)
        explained.args = (f"{explained.args[0]} (the chroot {chroot} does not exist)",)
        explained.chroot = chroot  # type: ignore[attr-defined]
        return explained

    async def get(self, path: str, watch: Callback | None = None) -> tuple[bytes, Stat]:
        reply = await self._call(
            OpCode.GET_DATA,
            ops.PathWatchRequest(self._path(path), watch is not None),
            path,
            watch and (DATA, watch),
        )
        return reply.data or b"", reply.stat

    async def get_config(self, watch: Callback | None = None) -> tuple[bytes, Stat]:
        """The ensemble's dynamic configuration: /zookeeper/config, outside any chroot (Java's getConfig).

        A watch fires when the configuration changes; its event's path is /zookeeper/config.
        """
        reply = await self._call(
            OpCode.GET_DATA,
            ops.PathWatchRequest(CONFIG_PATH, watch is not None),
            CONFIG_PATH,
            watch and (DATA, watch),
        )
        return reply.data or b"", reply.stat

    async def exists(self, path: str, watch: Callback | None = None) -> Stat | None:
        """The node's Stat, or None; a watch fires on creation, change or deletion."""
        reply = await self._call(
            OpCode.EXISTS,
            ops.PathWatchRequest(self._path(path), watch is not None),
            path,
            watch and (EXIST, watch),
        )
        return None if reply is None else reply.stat

    async def set(self, path: str, value: bytes, version: int = -1) -> Stat:
        reply = await self._call(OpCode.SET_DATA, ops.SetDataRequest(self._path(path), value, version), path)
        return reply.stat  # type: ignore[no-any-return]

    async def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        if recursive:
            await self._delete_tree(path)
            return
        await self._call(OpCode.DELETE, ops.DeleteRequest(self._path(path), version), path)

    async def _delete_tree(self, path: str) -> None:
        try:
            stat = await self.exists(path)
            children = await self.get_children(path) if stat and stat.numChildren else []
        except NoNodeError:
            return
        for child in children:
            await self._delete_tree(paths.join(path, child))
        if path != "/":
            with contextlib.suppress(NoNodeError):
                await self.delete(path)

    async def get_children(self, path: str, watch: Callback | None = None, include_stat: bool = False) -> Any:
        """Child names (unsorted, as the server sends them), or (names, Stat) with include_stat."""
        op = OpCode.GET_CHILDREN2 if include_stat else OpCode.GET_CHILDREN
        reply = await self._call(
            op, ops.PathWatchRequest(self._path(path), watch is not None), path, watch and (CHILD, watch)
        )
        children = reply.children or []
        return (children, reply.stat) if include_stat else children

    async def sync(self, path: str = "/") -> str:
        """Make this server catch up with the leader, so the next read sees every committed write."""
        reply = await self._call(OpCode.SYNC, ops.PathRequest(self._path(path)), path)
        return self._proto.to_client(reply.path)

    async def get_acls(self, path: str) -> tuple[list[ACL], Stat]:
        reply = await self._call(OpCode.GET_ACL, ops.PathRequest(self._path(path)), path)
        return reply.acl or [], reply.stat

    async def set_acls(self, path: str, acls: Sequence[ACL], version: int = -1) -> Stat:
        reply = await self._call(
            OpCode.SET_ACL, ops.SetACLRequest(self._path(path), list(acls), version), path
        )
        return reply.stat  # type: ignore[no-any-return]

    async def get_all_children_number(self, path: str) -> int:
        reply = await self._call(OpCode.GET_ALL_CHILDREN_NUMBER, ops.PathRequest(self._path(path)), path)
        return reply.totalNumber  # type: ignore[no-any-return]

    async def whoami(self) -> list[ClientInfo]:
        reply = await self._call(OpCode.WHO_AM_I, ops.EmptyRecord(), "/")
        return [ClientInfo(i.authScheme or "", i.user or "") for i in reply.clientInfo or []]

    async def add_watch(self, path: str, callback: Callback, recursive: bool = False) -> None:
        """A persistent watch (recursive: on the whole subtree); it stays until removed."""
        mode = ops.ADD_WATCH_PERSISTENT_RECURSIVE if recursive else ops.ADD_WATCH_PERSISTENT
        kind = RECURSIVE if recursive else PERSISTENT
        await self._call(
            OpCode.ADD_WATCH, ops.AddWatchRequest(self._path(path), mode), path, (kind, callback)
        )

    async def remove_watches(self, path: str, kind: str = "any", callback: Callback | None = None) -> None:
        """Remove watches on `path` of `kind` (data, children, any, persistent, recursive).

        With `callback`, only that callback's watches go; the server is told only when none remain.
        Raises NoWatcherError when there was nothing to remove.
        """
        kinds = _WATCHER_KINDS[kind]
        registry = self._proto.watches
        if not any(registry.has(k, path) for k in kinds):
            from zkpy.errors import NoWatcherError

            raise NoWatcherError(path=path)
        registry.remove(kinds, path, callback)
        if any(registry.has(k, path) for k in kinds):
            return
        with contextlib.suppress(ZooKeeperError):
            await self._call(
                OpCode.REMOVE_WATCHES, ops.WatchesRequest(self._path(path), _WATCHER_TYPE[kind]), path
            )

    def transaction(self) -> Transaction:
        return Transaction(self)

    async def multi(self, operations: Iterable[tuple[int, Any, str]]) -> list[Any]:
        """Run (opcode, record, client path) operations atomically; see Transaction for the friendly form."""
        op_list = list(operations)
        reply = await self._call(OpCode.MULTI, ops.MultiRequest([(op, rec) for op, rec, _ in op_list]), "/")
        results: list[Any] = []
        first_error: ZooKeeperError | None = None
        for (_, _, path), (rtype, err, rec) in zip(op_list, reply.results, strict=False):
            if rtype == OpCode.ERROR:
                code = rec.err if err == 0 else err
                exc = error_for_code(code, path) if code else RolledBackError(path=path)
                if code not in (0, -2) and first_error is None:
                    first_error = exc
                results.append(exc)
            elif rtype in (OpCode.CREATE, OpCode.CREATE2):
                results.append(self._proto.to_client(rec.path))
            elif rtype == OpCode.SET_DATA:
                results.append(rec.stat)
            else:
                results.append(True)
        if first_error is not None:
            first_error.results = results  # type: ignore[attr-defined]
            raise first_error
        return results


class RolledBackError(ZooKeeperError):
    """In a failed multi: this operation was fine but is undone with the rest."""

    code = Code.OK

    def __init__(self, message: str = "rolled back", path: str | None = None) -> None:
        super().__init__(message, path)


class Transaction:
    """Collect operations, then `await commit()`: all apply, or none (and the failing op's error raises)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._ops: list[tuple[int, Any, str]] = []

    def create(
        self,
        path: str,
        value: bytes = b"",
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequence: bool = False,
        container: bool = False,
        ttl: int | None = None,
    ) -> Transaction:
        op, flags = _create_mode(ephemeral, sequence, container, ttl)
        acl_list = list(acl if acl is not None else OPEN_ACL_UNSAFE)
        server_path = self._client._path(path, sequence)
        if op == OpCode.CREATE_TTL:
            self._ops.append(
                (op, ops.CreateTTLRequest(server_path, value, acl_list, flags, int(ttl or 0)), path)
            )
        else:
            op = OpCode.CREATE if op == OpCode.CREATE2 else op
            self._ops.append((op, ops.CreateRequest(server_path, value, acl_list, flags), path))
        return self

    def delete(self, path: str, version: int = -1) -> Transaction:
        self._ops.append((OpCode.DELETE, ops.DeleteRequest(self._client._path(path), version), path))
        return self

    def set(self, path: str, value: bytes, version: int = -1) -> Transaction:
        self._ops.append(
            (OpCode.SET_DATA, ops.SetDataRequest(self._client._path(path), value, version), path)
        )
        return self

    def check(self, path: str, version: int) -> Transaction:
        self._ops.append((OpCode.CHECK, ops.CheckVersionRequest(self._client._path(path), version), path))
        return self

    async def commit(self) -> list[Any]:
        return await self._client.multi(self._ops)


@contextlib.asynccontextmanager
async def connect(
    hosts: str,
    timeout: float = 10.0,
    auth: Iterable[tuple[str, bytes | str]] = (),
    read_only: bool = False,
    auto_restart: bool = False,
    start_timeout: float | None = None,
    randomize_hosts: bool = True,
) -> AsyncIterator[Client]:
    """Open a session to `hosts` ('h1:2181,h2:2181/chroot') and close it on exit.

    `timeout` is the session timeout asked of the server, in seconds. With `auto_restart`, an
    expired session is replaced by a fresh one at once (listeners see EXPIRED, then CONNECTED).
    With `read_only`, a server without a quorum may take the connection read-only (state
    CONNECTED_RO) until a read-write one is found. `randomize_hosts=False` tries the hosts in order.
    """
    dispatcher = EventDispatcher()
    connection = Connection(
        hosts, timeout, dispatcher, read_only=read_only, auto_restart=auto_restart, randomize=randomize_hosts
    )
    client = Client(connection, dispatcher)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher.run, name="zkpy-events")
            nursery.start_soon(connection.run, name="zkpy-io")
            try:
                await connection.wait_connected(
                    start_timeout if start_timeout is not None else max(timeout, 10.0)
                )
                for scheme, credential in auth:
                    await client.add_auth(scheme, credential)
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await connection.close()
                dispatcher.close()
    except BaseExceptionGroup as group:
        # The IO and event tasks do not fail; an error here came from the caller's block (or the
        # connect itself): hand it back as itself, not wrapped in a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
