"""The servers of a local ensemble as processes: each member's home under DIR (zoo.cfg, data/,
server.log, server.pid), starting one in its own session, finding a running one through its pid
file (checked against /proc, as a pid file can outlive its process), and stopping them all.

Used by `zkpy ensemble` (zkpy.ops.ensemble), in the foreground and from other terminals alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from zkpy.ops.layout import HOST, Member, member_home
from zkpy.ops.status import ServerRow, query_all, render_table

STOP_WAIT = 15.0  # seconds between SIGTERM and SIGKILL
LOG_LINES = 5  # the last lines of a dead server's log shown under the table


class EnsembleError(Exception):
    """What went wrong, in one line for the user."""


@dataclass(frozen=True)
class Home:
    """One member's files under DIR."""

    root: Path
    member: Member

    @property
    def dir(self) -> Path:
        return member_home(self.root, self.member)

    @property
    def config(self) -> Path:
        return self.dir / "zoo.cfg"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "server.pid"

    @property
    def name(self) -> str:
        return f"{self.member.sid} {HOST}:{self.member.client_port}"

    def pid(self) -> int | None:
        """The pid in server.pid when that process is alive and is this member's server."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _is_server(pid, self.config) else None

    def has_data(self) -> bool:
        """Anything beyond myid in its dataDir: data of an earlier run, kept."""
        try:
            return any(p.name != "myid" for p in (self.dir / "data").iterdir())
        except OSError:
            return False

    def log_tail(self, lines: int = LOG_LINES) -> list[str]:
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                return f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


def _is_server(pid: int, config: Path) -> bool:
    """Alive (not a zombie) and running `zkpy server <config>`: a pid file can outlive its process
    and the pid be given to another one."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # no procfs: trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and str(config).encode() in cmdline


def signal_group(pid: int, signum: int) -> None:
    """To the server's whole process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def check_ports(home: Home) -> None:
    for kind, port in home.member.ports.items():
        if _port_taken(port):
            raise EnsembleError(
                f"port {port} ({kind} port of server {home.member.sid}) is in use on {HOST}: "
                "stop what holds it or pick other ports with --base-port"
            )


def spawn(home: Home) -> subprocess.Popen[bytes]:
    """Start one server in its own session, its output appended to its log, its pid in its pid file."""
    with open(home.log, "ab") as log:
        log.write(f"--- zkpy ensemble: starting server {home.member.sid} at {time.ctime()}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "zkpy", "server", str(home.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=home.dir,
        )
    home.pid_file.write_text(f"{proc.pid}\n")
    return proc


def find_homes(root: Path) -> list[Home]:
    """The members already written under DIR (for kill, start, stop, status), from their zoo.cfg."""
    from zkpy.server.config import ConfigError, load_config

    homes = []
    for config_path in sorted(root.glob("s*/zoo.cfg"), key=lambda p: int(p.parent.name[1:] or 0)):
        if not config_path.parent.name[1:].isdigit():
            continue
        try:
            config = load_config(config_path)
        except ConfigError as e:
            raise EnsembleError(str(e)) from None
        sid = int(config_path.parent.name[1:])
        spec = config.servers.get(sid)
        if spec is None or config.client_port is None:
            raise EnsembleError(f"{config_path} is not an ensemble member's config (no server.{sid} line)")
        member = Member(sid, config.client_port, spec.peer_port, spec.election_port, spec.role == "observer")
        homes.append(Home(root, member))
    if not homes:
        raise EnsembleError(f"no ensemble in {root} (start one with `zkpy ensemble --dir {root}`)")
    return homes


def rows(homes: list[Home]) -> list[ServerRow]:
    """The live table's rows: each running server asked srvr and mntr, a dead one shown as down."""
    pids = {h.member.sid: h.pid() for h in homes}
    running = [h for h in homes if pids[h.member.sid] is not None]
    asked = dict(
        zip(
            (h.member.sid for h in running),
            query_all([(HOST, h.member.client_port, h.name) for h in running], timeout=1.0),
            strict=True,
        )
    )
    out = []
    for h in homes:
        row = asked.get(h.member.sid) or ServerRow(h.name, "down", detail="\n".join(h.log_tail()))
        if row.mode == "unreachable":  # alive but not listening yet
            row.mode = "starting"
        out.append(row)
    return out


def render(homes: list[Home], table: list[ServerRow]) -> str:
    text = render_table(table)
    for home, row in zip(homes, table, strict=True):
        if row.mode == "down":
            text += f"\nserver {home.member.sid} is down; the last lines of {home.log}:\n"
            text += "\n".join(f"    {line}" for line in row.detail.splitlines() or ["(empty)"])
    return text


def stop_all(
    homes: list[Home], out: TextIO, children: dict[int, subprocess.Popen[bytes]] | None = None
) -> int:
    """SIGTERM to every running member, SIGKILL to those still there after STOP_WAIT; says what it did.

    Returns how many were running."""
    children = children or {}
    pids = {h.member.sid: h.pid() for h in homes}
    for pid in pids.values():
        if pid is not None:
            signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    killed: set[int] = set()
    while True:
        for proc in children.values():
            proc.poll()
        alive = [h for h in homes if pids[h.member.sid] is not None and h.pid() is not None]
        if not alive:
            break
        if time.monotonic() > deadline:
            for h in alive:
                pid = pids[h.member.sid]
                assert pid is not None
                signal_group(pid, signal.SIGKILL)
                killed.add(h.member.sid)
            deadline = float("inf")
        time.sleep(0.05)
    for h in homes:
        pid = pids[h.member.sid]
        if pid is None:
            out.write(f"server {h.member.sid} was not running\n")
        elif h.member.sid in killed:
            out.write(
                f"server {h.member.sid} (pid {pid}) killed: still running {STOP_WAIT:.0f}s after SIGTERM\n"
            )
        else:
            out.write(f"server {h.member.sid} (pid {pid}) stopped\n")
        h.pid_file.unlink(missing_ok=True)
    out.flush()
    return sum(1 for pid in pids.values() if pid is not None)
