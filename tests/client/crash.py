"""Start recipe participants as processes (tests/client/participant.py), read their logs, kill them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

PARTICIPANT = Path(__file__).with_name("participant.py")


@dataclass
class Entry:
    event: str
    ident: str
    pid: int
    time: float


class Participants:
    def __init__(self, hosts: str, log_path: Path) -> None:
        self.hosts = hosts
        self.log_path = log_path
        self.log_path.touch()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, role: str, path: str, ident: str, extra: str = "") -> None:
        args = [sys.executable, str(PARTICIPANT), self.hosts, role, path, ident, str(self.log_path)]
        self.procs[ident] = subprocess.Popen([*args, *([extra] if extra else [])])

    def entries(self) -> list[Entry]:
        out = []
        for line in self.log_path.read_text().splitlines():
            event, ident, pid, t = line.split()
            out.append(Entry(event, ident, int(pid), float(t)))
        return out

    async def wait_for(self, count: int, event: str | None = None, limit: float = 20.0) -> list[Entry]:
        """Wait until the log holds `count` entries (of `event`, if given); return them."""
        with trio.fail_after(limit):
            while True:
                found = [e for e in self.entries() if event is None or e.event == event]
                if len(found) >= count:
                    return found
                for ident, proc in self.procs.items():
                    if proc.poll() not in (None, -signal.SIGKILL):
                        raise AssertionError(f"participant {ident} exited with {proc.returncode}")
                await trio.sleep(0.02)

    def kill(self, ident: str) -> None:
        proc = self.procs[ident]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
