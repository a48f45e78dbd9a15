"""`zkpy shell HOSTS`: zkCli.sh's commands run with zkpy's own client.

`Shell` runs one command line at a time on a blocking SyncClient and prints as zkCli does (the words
and formats live in zkpy.ops.zkcli); it knows nothing of terminals. `run()` feeds it: the `-c`
commands, or the lines of a non-terminal stdin, or an interactive prompt (zkpy.ops.shell_prompt, with
completion of commands and znode paths). Watch events are printed from the client's event thread as
they fire; one lock keeps an event from landing inside a command's output.

Exit status: 0 when every command worked; otherwise the status of the last one that failed: 1 for a
failed or malformed command, 127 for an unknown one. 2 when the shell could not start (no connection).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from zkpy import __version__, errors, paths
from zkpy.client.connection import ConnectionClosedError
from zkpy.client.events import State, WatchedEvent
from zkpy.client.sync import SyncClient
from zkpy.ops import zkcli
from zkpy.ops.zkcli import Command, CommandError

DEFAULT_HOSTS = "127.0.0.1:2181"
DEFAULT_SESSION_TIMEOUT = 30.0  # zkCli's -timeout default (30000 ms)

# What a connection state change looks like as a zkCli WatchedEvent (type None): its KeeperState.
_STATE_AS_KEEPER_STATE = {
    State.CONNECTED: 3,
    State.RECONNECTED: 3,
    State.SUSPENDED: 0,
    State.CONNECTED_RO: 5,
    State.EXPIRED: -112,
    State.CLOSED: 7,
}
# ...and as ZooKeeper.States, which zkCli's prompt shows.
_STATE_IN_PROMPT = {
    State.CONNECTING: "CONNECTING",
    State.CONNECTED: "CONNECTED",
    State.RECONNECTED: "CONNECTED",
    State.SUSPENDED: "CONNECTING",
    State.CONNECTED_RO: "CONNECTEDREADONLY",
    State.EXPIRED: "CLOSED",
    State.CLOSED: "CLOSED",
}


class Quit(Exception):
    """`quit`: leave the shell."""


class Shell:
    """Runs zkCli command lines against one session. Output goes to sys.stdout/sys.stderr as they are
    when written (so an interactive prompt can redirect them), unless `out`/`err` are given."""

    def __init__(
        self,
        hosts: str,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        connect_timeout: float = 10.0,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.hosts = hosts
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self._out, self._err = out, err
        self.client: SyncClient | None = None
        self.history = zkcli.History()
        self.print_watches = True
        self.last_failure = zkcli.EXIT_OK  # the status of the last command that failed
        self._lock = threading.Lock()
        # One callable for every watch this shell sets, so the client dedupes them as Java dedupes
        # one Watcher object: `get -w /x` twice fires once.
        self.watcher: Callable[[WatchedEvent], None] = self._on_event

    # -- output -----------------------------------------------------------------------------------

    def print(self, text: str) -> None:
        with self._lock:
            stream = self._out or sys.stdout
            stream.write(text + "\n")
            stream.flush()

    def error(self, text: str) -> None:
        with self._lock:
            stream = self._err or sys.stderr
            stream.write(text + "\n")
            stream.flush()

    def _on_event(self, event: WatchedEvent) -> None:
        if self.print_watches:
            self.print(zkcli.format_event(int(event.type), event.state, event.path))

    def _on_state(self, state: State) -> None:
        keeper_state = _STATE_AS_KEEPER_STATE.get(state)
        if keeper_state is not None and self.print_watches:
            self.print(zkcli.format_event(-1, keeper_state, None))

    # -- the session ------------------------------------------------------------------------------

    def connect(self, hosts: str | None = None) -> None:
        """Open a session to `hosts` (the current ones by default), closing any open one first."""
        self.close()
        if hosts is not None:
            self.hosts = hosts
        self.client = SyncClient(self.hosts, self.session_timeout, start_timeout=self.connect_timeout)
        self.client.add_listener(self._on_state)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.remove_listener(self._on_state)
            client.close()

    @property
    def state_name(self) -> str:
        """CONNECTED, CONNECTING, CLOSED...: what zkCli's prompt shows."""
        if self.client is None:
            return "CLOSED"
        return _STATE_IN_PROMPT.get(self.client.state, self.client.state.name)

    def prompt(self) -> str:
        return f"[zk: {self.hosts}({self.state_name}) {self.history.count}] "

    def children(self, path: str) -> list[str]:
        """The children of `path` for completion; empty when there are none to offer."""
        if self.client is None or not paths.is_valid(path):
            return []
        try:
            return list(self.client.get_children(path))
        except (errors.ZooKeeperError, ConnectionClosedError):
            return []

    @property
    def zk(self) -> SyncClient:
        if self.client is None:
            raise CommandError("Not connected")
        return self.client

    # -- running commands -------------------------------------------------------------------------

    def run_line(self, line: str) -> int:
        """Run one command line; returns its exit status (0 for a blank line). Raises Quit on `quit`."""
        line = line.strip()
        if not line or line.startswith("#"):
            return zkcli.EXIT_OK
        self.history.add(line)
        return self._run(line)

    def _run(self, line: str) -> int:
        try:
            self.execute(zkcli.parse_line(line))
            return zkcli.EXIT_OK
        except CommandError as e:
            if e.status == zkcli.EXIT_NOT_FOUND:
                self.error(f"{e} (type help for the commands)")
            elif str(e):  # empty: already reported (a redo's command)
                self.error(str(e))
            status = e.status
        except errors.ZooKeeperError as e:
            self.error(zkcli.error_message(e))
            status = zkcli.EXIT_ERROR
        except ConnectionClosedError:
            self.error("Not connected")
            status = zkcli.EXIT_ERROR
        except ValueError as e:  # the client's own refusals, e.g. a bad combination of create modes
            self.error(str(e))
            status = zkcli.EXIT_ERROR
        self.last_failure = status
        return status

    def run_lines(self, lines: Iterable[str]) -> int:
        """Run lines until they end or one says `quit`; the status is the last failure's (0 if none)."""
        try:
            for line in lines:
                self.run_line(line)
        except Quit:
            pass
        return self.last_failure

    def execute(self, command: Command) -> None:
        handler: Callable[[Command], None] = getattr(self, f"_cmd_{command.name}")
        handler(command)

    def _watch(self, command: Command, letter: str = "w") -> Any:
        return self.watcher if command.flag(letter) else None

    def _print_stat_if(self, command: Command, stat: Any) -> None:
        if command.flag("s"):
            self.print(zkcli.format_stat(stat))

    def _subtree(self, root: str, watch: Any = None) -> Iterable[str]:
        """`root` and every znode below it, breadth first, children sorted (ZKUtil.listSubTreeBFS).

        A node deleted while we walk is left out; an error on `root` itself raises."""
        queue = deque([root])
        first = True
        while queue:
            path = queue.popleft()
            try:
                children = self.zk.get_children(path, watch=watch)
            except errors.NoNodeError:
                if first:
                    raise
                continue
            first = False
            yield path
            queue.extend(paths.join(path, child) for child in sorted(children))

    # -- the commands, one method each (`_cmd_<name>`) ---------------------------------------------

    def _cmd_help(self, command: Command) -> None:
        if command.args:
            name = command.args[0]
            if name not in zkcli.COMMANDS:
                raise CommandError(f"Command not found: {name}", zkcli.EXIT_NOT_FOUND)
            self.print(f"{zkcli.usage_line(name)}\n\t{zkcli.COMMANDS[name].summary}")
            return
        self.print(zkcli.help_text())

    def _cmd_quit(self, command: Command) -> None:
        raise Quit

    def _cmd_history(self, command: Command) -> None:
        self.print(self.history.recent())

    def _cmd_redo(self, command: Command) -> None:
        line = self.history.redo(command.args[0])
        status = self._run(line)
        if status:
            raise CommandError("", status)

    def _cmd_printwatches(self, command: Command) -> None:
        if not command.args:
            self.print(f"printwatches is {'on' if self.print_watches else 'off'}")
        else:
            self.print_watches = command.args[0] == "on"

    def _cmd_version(self, command: Command) -> None:
        self.print(f"ZooKeeper CLI version: zkpy {__version__}")

    def _cmd_close(self, command: Command) -> None:
        self.close()

    def _cmd_connect(self, command: Command) -> None:
        try:
            self.connect(command.args[0] if command.args else None)
        except (errors.ZooKeeperError, OSError) as e:
            raise CommandError(f"cannot connect to {self.hosts}: {e}") from None

    def _cmd_ls(self, command: Command) -> None:
        path, watch = command.args[0], self._watch(command)
        if command.flag("R"):
            for p in self._subtree(path, watch):
                self.print(p)
            return
        children, stat = self.zk.get_children(path, watch=watch, include_stat=True)
        self.print(zkcli.format_children(children))
        self._print_stat_if(command, stat)

    def _cmd_get(self, command: Command) -> None:
        data, stat = self.zk.get(command.args[0], watch=self._watch(command))
        self.print(zkcli.format_data(data))
        self._print_stat_if(command, stat)

    def _cmd_stat(self, command: Command) -> None:
        path = command.args[0]
        stat = self.zk.exists(path, watch=self._watch(command))
        if stat is None:
            raise errors.NoNodeError(path=path)
        self.print(zkcli.format_stat(stat))

    def _cmd_set(self, command: Command) -> None:
        path, data = command.args
        version = zkcli.parse_version(command.value("v") or "-1")
        stat = self.zk.set(path, data.encode(), version)
        self._print_stat_if(command, stat)

    def _cmd_create(self, command: Command) -> None:
        zkcli.check_create_flags(command)
        ttl_text = command.value("t")
        ttl = zkcli.parse_ttl(ttl_text) if ttl_text is not None else None
        path = command.args[0]
        data = command.args[1].encode() if len(command.args) > 1 else b""
        acl = zkcli.parse_acl(command.args[2], self.error) if len(command.args) > 2 else None
        created = self.zk.create(
            path,
            data,
            acl,
            ephemeral=command.flag("e"),
            sequence=command.flag("s"),
            container=command.flag("c"),
            ttl=ttl,
        )
        self.error(f"Created {created}")  # zkCli prints this on stderr too

    def _cmd_delete(self, command: Command) -> None:
        version = zkcli.parse_version(command.value("v") or "-1")
        self.zk.delete(command.args[0], version)

    def _cmd_deleteall(self, command: Command) -> None:
        path = command.args[0]
        batch = command.value("b")
        if batch is not None and not batch.isdigit():
            raise CommandError(f"batch size must be a number: {batch}")
        if self.zk.exists(path) is None:
            raise errors.NoNodeError(path=path)
        self.zk.delete(path, recursive=True)

    def _cmd_getAcl(self, command: Command) -> None:
        acls, stat = self.zk.get_acls(command.args[0])
        self.print(zkcli.format_acl(acls))
        self._print_stat_if(command, stat)

    def _cmd_setAcl(self, command: Command) -> None:
        path, text = command.args
        acls = zkcli.parse_acl(text, self.error)
        version = zkcli.parse_version(command.value("v") or "-1")
        if command.flag("R"):
            for p in list(self._subtree(path)):
                try:
                    self.zk.set_acls(p, acls, version)
                except errors.ZooKeeperError as e:
                    self.error(zkcli.error_message(e))
            return
        stat = self.zk.set_acls(path, acls, version)
        self._print_stat_if(command, stat)

    def _cmd_getAllChildrenNumber(self, command: Command) -> None:
        self.print(str(self.zk.get_all_children_number(command.args[0])))

    def _cmd_addauth(self, command: Command) -> None:
        scheme, auth = command.args
        self.zk.add_auth(scheme, auth)

    def _cmd_whoami(self, command: Command) -> None:
        lines = ["Auth scheme: User"] + [f"{info.scheme}: {info.user}" for info in self.zk.whoami()]
        self.print("\n".join(lines))

    def _cmd_sync(self, command: Command) -> None:
        self.zk.sync(command.args[0])
        self.print("Sync is OK")

    def _cmd_config(self, command: Command) -> None:
        data, stat = self.zk.get_config(watch=self._watch(command))
        text = zkcli.format_data(data)
        self.print(zkcli.client_config_string(text) if command.flag("c") else text)
        self._print_stat_if(command, stat)

    def _cmd_addWatch(self, command: Command) -> None:
        mode = (command.value("m") or "PERSISTENT_RECURSIVE").upper()
        if mode not in zkcli.ADD_WATCH_MODES:
            raise CommandError(zkcli.usage_line("addWatch"))
        self.zk.add_watch(command.args[0], self.watcher, recursive=mode == "PERSISTENT_RECURSIVE")

    def _cmd_removewatches(self, command: Command) -> None:
        kinds = {"c": "children", "d": "data", "p": "persistent", "r": "recursive", "a": "any"}
        kind = next((kinds[letter] for letter in "cdpra" if command.flag(letter)), "any")
        self.zk.remove_watches(command.args[0], kind, callback=self.watcher)


# -- the `zkpy shell` command -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "hosts",
        nargs="?",
        default=DEFAULT_HOSTS,
        help=f"connect string, host:port[,host:port...][/chroot] (default {DEFAULT_HOSTS})",
    )
    parser.add_argument(
        "-c",
        "--command",
        action="append",
        dest="commands",
        metavar="COMMAND",
        help='run this command and exit, e.g. -c "ls /" (may be given more than once)',
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_SESSION_TIMEOUT,
        help=f"session timeout in seconds (default {DEFAULT_SESSION_TIMEOUT:g})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="give up when no server answers within this many seconds (default 10)",
    )


def run(args: argparse.Namespace) -> int:
    """`zkpy shell`: run -c commands, stdin's lines when it is not a terminal, or an interactive prompt."""
    shell = Shell(args.hosts, args.timeout, args.connect_timeout)
    interactive = not args.commands and sys.stdin is not None and sys.stdin.isatty()
    try:
        shell.connect()
    except (errors.ZooKeeperError, ConnectionClosedError, OSError, ValueError) as e:
        print(f"zkpy shell: cannot connect to {args.hosts}: {e}", file=sys.stderr)
        return zkcli.EXIT_USAGE
    try:
        if args.commands:
            return shell.run_lines(args.commands)
        if not interactive:
            return shell.run_lines(sys.stdin or ())  # None when started with stdin closed
        from zkpy.ops.shell_prompt import interact

        return interact(shell)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return shell.last_failure
    finally:
        shell.close()
