"""`zkpy ensemble`: a local ensemble on 127.0.0.1 in one command, for trying ZooKeeper by hand.

    zkpy ensemble [--size 3] [--observers 0] [--dir DIR] [--base-port 2181]
    zkpy ensemble kill N | start N | stop | status   [--dir DIR]

DIR (default ./zkpy-ensemble) holds one home per member, sN/: zoo.cfg, data/ (myid and the data,
kept from run to run), server.log (appended to, never truncated) and server.pid. Each server is a
process of its own in its own session, so Ctrl-C in the terminal reaches only this command, which
then stops every server with SIGTERM and says so. `kill N` and `start N` work from any other
terminal through the pid files, which is how a person tries failover by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from zkpy.ops.layout import (
    HOST,
    LOCAL_FOUR_LETTER_WORDS,
    connect_string,
    members_from_base,
    write_member,
)
from zkpy.ops.members import (
    EnsembleError,
    Home,
    check_ports,
    find_homes,
    render,
    rows,
    signal_group,
    spawn,
    stop_all,
)
from zkpy.ops.status import SERVING_MODES, has_quorum, query

DEFAULT_DIR = "zkpy-ensemble"
# Short ticks so that a killed leader is replaced within seconds (syncLimit 5 ticks = 2.5 s), as in
# the sample configs under conf/ensemble.
SETTINGS = {
    "tickTime": "500",
    "4lw.commands.whitelist": LOCAL_FOUR_LETTER_WORDS,
    "maxClientCnxns": "60",
}
LEADER_WAIT = 60.0  # seconds to wait for the first leader
START_WAIT = 30.0  # seconds for `start N` to see its server serving


class Supervisor:
    """The foreground `zkpy ensemble`: starts the members, shows them, stops them all at the end."""

    def __init__(self, homes: list[Home], out: TextIO) -> None:
        self.homes = homes
        self.out = out
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def reap(self) -> None:
        """Collect the exit of children killed from elsewhere (`zkpy ensemble kill N`)."""
        for proc in self.children.values():
            proc.poll()

    def start_all(self) -> None:
        for home in self.homes:
            check_ports(home)
        for home in self.homes:
            self.children[home.member.sid] = spawn(home)

    def wait_for_leader(self) -> None:
        deadline = time.monotonic() + LEADER_WAIT
        while time.monotonic() < deadline:
            self.reap()
            for home in self.homes:
                proc = self.children.get(home.member.sid)
                if proc is not None and proc.returncode is not None:
                    tail = "\n".join(f"    {line}" for line in home.log_tail(10))
                    raise EnsembleError(
                        f"server {home.member.sid} exited with status {proc.returncode}; "
                        f"the last lines of {home.log}:\n{tail}"
                    )
            if has_quorum(rows(self.homes)):  # a leader (or, for --size 1, a standalone server)
                return
            time.sleep(0.2)
        raise EnsembleError(
            f"no leader after {LEADER_WAIT:.0f}s:\n{render(self.homes, rows(self.homes))}\n"
            f"(the logs are {self.homes[0].root}/s*/server.log)"
        )

    def live(self, interval: float = 1.0) -> None:
        """Redraw the table every `interval` on a terminal, where keys act on it too (N kills or
        starts server N, q stops all); elsewhere print the table when a mode changes."""
        tty = self.out.isatty()
        shown: list[tuple[str, str]] | None = None
        with _keys(sys.stdin if tty else None) as read_key:
            while True:
                self.reap()
                table = rows(self.homes)
                shape = [(r.server, r.mode) for r in table]
                if tty:
                    self.out.write("\x1b[H\x1b[2J")
                    self.say(f"{time.strftime('%H:%M:%S')}  {self._hint()}\n\n{render(self.homes, table)}")
                elif shape != shown:
                    self.say(f"\n{time.strftime('%H:%M:%S')}\n{render(self.homes, table)}")
                shown = shape
                key = read_key(interval)
                if key == "q":
                    raise KeyboardInterrupt
                if key:
                    self.toggle(key)

    def toggle(self, key: str) -> None:
        """Key N: kill server N when it runs, start it when it does not."""
        home = next((h for h in self.homes if str(h.member.sid) == key), None)
        if home is None:
            return
        pid = home.pid()
        if pid is not None:
            signal_group(pid, signal.SIGKILL)
            return
        try:
            check_ports(home)
        except EnsembleError:
            return  # the table keeps showing it down; its port is someone else's for now
        self.children[home.member.sid] = spawn(home)

    def _hint(self) -> str:
        root = self.homes[0].root
        return (
            f"{connect_string([h.member for h in self.homes])}\nkeys: N kills or starts server N, q (or Ctrl-C) "
            f"stops all; from elsewhere: zkpy ensemble kill|start N --dir {root}"
        )


@contextlib.contextmanager
def _keys(stdin: TextIO | None) -> Iterator[Callable[[float], str | None]]:
    """A function that waits up to its argument for one key press on a terminal's stdin (the
    terminal in cbreak mode meanwhile, so keys need no Enter and Ctrl-C still interrupts); without
    a terminal it only waits."""

    def wait(timeout: float) -> str | None:
        time.sleep(timeout)
        return None

    if stdin is None or not stdin.isatty():
        yield wait
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _interrupted_by_term() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) stop the ensemble as Ctrl-C does; SIGINT is set
    too, as a shell starts a background job (`zkpy ensemble &`) with it ignored."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _servers(n: int) -> str:
    return f"{n} server" if n == 1 else f"{n} servers"


def run(root: Path, size: int, observers: int, base_port: int, out: TextIO, http: bool = False) -> int:
    if size < 1 or observers < 0:
        raise EnsembleError("--size must be at least 1 and --observers at least 0")
    members = members_from_base(size, observers, base_port, http)
    if base_port < 1 or max(max(m.ports.values()) for m in members) > 65535:
        raise EnsembleError(f"--base-port {base_port} puts ports outside 1..65535")
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(EnsembleError):
        running = [h for h in find_homes(root) if h.pid() is not None]
        if running:
            raise EnsembleError(
                f"an ensemble is already running in {root} (server {', '.join(str(h.member.sid) for h in running)}): "
                f"stop it with Ctrl-C where it runs, or `zkpy ensemble stop --dir {root}`"
            )
    homes = [Home(root, m) for m in members]
    kept = [h for h in homes if h.has_data()]
    for h in homes:
        write_member(root, h.member, members, SETTINGS)
    supervisor = Supervisor(homes, out)
    with _interrupted_by_term():
        try:
            supervisor.start_all()
            supervisor.say(
                f"started {_servers(len(homes))} in {root}"
                + (
                    f" (with the data of servers {', '.join(str(h.member.sid) for h in kept)} from before)"
                    if kept
                    else ""
                )
                + f"; their logs are {root}/sN/server.log"
            )
            supervisor.wait_for_leader()
            supervisor.say(f"Connection string: {connect_string(members)}")
            if http:
                supervisor.say(
                    "\n".join(
                        f"server {m.sid}: metrics http://{HOST}:{m.metrics_port}/metrics, "
                        f"admin page http://{HOST}:{m.admin_port}/"
                        for m in members
                    )
                )
            supervisor.say(
                f"Try: zkpy status {connect_string(members)}\n"
                f"     zkpy ensemble kill N --dir {root}   (then `start N`)\n"
                "Ctrl-C stops every server."
            )
            supervisor.live()
        except KeyboardInterrupt:
            out.write("\nstopping the ensemble...\n")
            stopped = stop_all(homes, out, supervisor.children)
            out.write(f"stopped {_servers(stopped)}; the data stays in {root} for the next run\n")
            return 0
        except BaseException:
            stop_all(homes, out, supervisor.children)
            raise
    return 0


def kill(root: Path, sid: int, out: TextIO) -> int:
    home = _home(root, sid)
    pid = home.pid()
    if pid is None:
        raise EnsembleError(
            f"server {sid} is not running (`zkpy ensemble start {sid} --dir {root}` starts it)"
        )
    signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while home.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    home.pid_file.unlink(missing_ok=True)
    out.write(
        f"killed server {sid} (pid {pid}) with SIGKILL, as a crash would; "
        f"`zkpy ensemble start {sid} --dir {root}` starts it again\n"
    )
    return 0


def start(root: Path, sid: int, out: TextIO) -> int:
    home = _home(root, sid)
    pid = home.pid()
    if pid is not None:
        raise EnsembleError(f"server {sid} is already running (pid {pid})")
    check_ports(home)
    proc = spawn(home)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(f"    {line}" for line in home.log_tail(10))
            raise EnsembleError(f"server {sid} exited with status {proc.returncode}:\n{tail}")
        row = query(HOST, home.member.client_port, home.name, timeout=1.0)
        if row.mode in SERVING_MODES:
            out.write(f"started server {sid} (pid {proc.pid}): {row.mode}\n")
            return 0
        time.sleep(0.2)
    out.write(
        f"started server {sid} (pid {proc.pid}), not serving yet after {START_WAIT:.0f}s: see {home.log}\n"
    )
    return 1


def _home(root: Path, sid: int) -> Home:
    homes = find_homes(root)
    for home in homes:
        if home.member.sid == sid:
            return home
    raise EnsembleError(f"no server {sid} in {root} (servers: {', '.join(str(h.member.sid) for h in homes)})")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ensemble",
        help="run a local ensemble on 127.0.0.1 with a live table (kill N / start N to try failover)",
        description="Without an action: write each server's zoo.cfg and myid under DIR (kept between "
        "runs), start the servers, wait for a leader, print the connection string and a live table "
        "until Ctrl-C, which stops them all. The actions work on the ensemble running in DIR.",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["kill", "start", "stop", "status"],
        help="kill N (SIGKILL, as a crash), start N, stop (every server), status (the table once)",
    )
    p.add_argument("n", nargs="?", type=int, help="the server's number, for kill and start")
    p.add_argument("--size", type=int, default=3, help="voting servers (default 3)")
    p.add_argument("--observers", type=int, default=0, help="non-voting servers (default 0)")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"where the servers live (default ./{DEFAULT_DIR})")
    p.add_argument(
        "--base-port",
        type=int,
        default=2181,
        help="client port of server 1 (default 2181); server N uses base+N-1, quorum base+700+N-1, "
        "election base+1700+N-1",
    )
    p.add_argument(
        "--http",
        action="store_true",
        help="also serve each server's Prometheus metrics (7000+N-1 at the default base port) and "
        "its AdminServer and admin page (8080+N-1)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    out = sys.stdout
    try:
        if args.action in ("kill", "start"):
            if args.n is None:
                raise EnsembleError(f"`zkpy ensemble {args.action}` needs the server's number N")
            return kill(root, args.n, out) if args.action == "kill" else start(root, args.n, out)
        if args.n is not None:
            raise EnsembleError(f"unexpected argument {args.n}")
        if args.action == "stop":
            stop_all(find_homes(root), out)
            return 0
        if args.action == "status":
            homes = find_homes(root)
            table = rows(homes)
            out.write(render(homes, table) + "\n")
            return 0 if has_quorum(table) else 1
        return run(root, args.size, args.observers, args.base_port, out, args.http)
    except EnsembleError as e:
        print(f"zkpy ensemble: error: {e}", file=sys.stderr)
        return 2
