"""Start real server processes (zkpy or Apache ZooKeeper) on loopback for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zkpy.ops.layout import HOST, Member, member_home, members_on_free_ports, write_config, write_member
from zkpy.ops.status import four_letter
from zkpy.testing import apache

REPO_ROOT = Path(__file__).resolve().parents[2]
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A port on 127.0.0.1 that is free now and that this process has never handed out before.

    The port is released before the caller's server binds it, so another process can still take
    it in between: `running_server` starts again on a new port when the bind fails (PortInUseError).
    Within this process two callers never get the same port, even after the first one's server
    stopped and the kernel would hand its port out again.
    """
    with _HANDED_OUT_LOCK:
        for _ in range(1000):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError("no free port on 127.0.0.1 that this process has not handed out already")


class PortInUseError(RuntimeError):
    """The server exited at start because one of its ports was taken (by another process)."""


class NotWhitelistedError(RuntimeError):
    """The server refuses the four-letter words that tell whether it is serving."""


# What zkpy ("clientPort=N on ADDR is already in use") and Apache (java.net.BindException) print.
_IN_USE_MARKERS = ("already in use", "Address already in use")


@dataclass
class ServerProcess:
    kind: str
    host: str
    port: int
    data_dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    log_start: int = 0  # where this start's output begins in log_path
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment (a shim's LD_PRELOAD)

    @property
    def hosts(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "apache":
            return apache.server_command(self.config_path)
        return [sys.executable, "-m", "zkpy", "server", str(self.config_path)]

    def start(self, wait: float | None = 90.0) -> None:
        """Spawn the server and wait until it serves (at most `wait` seconds).

        `wait=None` only spawns it: a member of an ensemble never serves alone, so an ensemble
        spawns all its members first and then waits for them together (Ensemble.wait_serving).
        """
        if self.kind == "apache":
            apache.ensure_installed()  # before the clock starts: the first install takes minutes
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.log_start = log.tell()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.data_dir,
            env={**os.environ, **self.env} if self.env else None,
        )
        log.close()
        if wait is None:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.check_running()
            try:
                if self.serving():
                    return
            except OSError:
                pass
            except NotWhitelistedError:
                self.stop()
                raise
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} server did not start serving in {wait}s: {self.log_tail()}")

    def check_running(self) -> None:
        """Raise if the process has exited (PortInUseError when it could not bind a port)."""
        if self.proc is not None and self.proc.poll() is not None:
            if any(marker in self.log_since(self.log_start) for marker in _IN_USE_MARKERS):
                raise PortInUseError(f"{self.kind} server could not bind: {self.log_tail()}")
            raise RuntimeError(f"{self.kind} server {self.hosts} exited: {self.log_tail()}")

    def mode(self) -> str | None:
        """What `srvr` says after Mode: (leader, follower, observer, standalone), None while not serving."""
        try:
            answer = four_letter(self.host, self.port, "srvr", timeout=1.0)
        except OSError:
            return None
        found = re.search(r"^Mode: (\w+)", answer, re.M)
        return found.group(1) if found else None

    def serving(self) -> bool:
        """Answering requests, not just `ruok`: Apache says imok while it is still loading its
        data, and `isro` answers "null" until it serves sessions."""
        for word in ("ruok", "isro"):
            answer = four_letter(self.host, self.port, word, timeout=1.0)
            if "not in the whitelist" in answer:
                raise NotWhitelistedError(
                    f"{self.hosts} answers {answer.strip()!r}: to be seen serving, a server's "
                    "4lw.commands.whitelist must include ruok and isro"
                )
            if (word == "ruok" and answer != "imok") or (word == "isro" and answer == "null"):
                return False
        return True

    def kill(self) -> None:
        """kill -9 the whole process group (a crash, for durability tests)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def status_kb(pid: int, key: str) -> int:
    """A kB figure from /proc/PID/status (VmRSS, VmHWM...), 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@contextlib.contextmanager
def running_server(kind: str = "zkpy", extra: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A fresh server of `kind` ('zkpy' or 'apache') on 127.0.0.1, stopped and cleaned up afterwards."""
    if kind not in ("zkpy", "apache"):
        raise ValueError(f"unknown server kind {kind!r}")
    tmp = Path(tempfile.mkdtemp(prefix=f"zkpy-{kind}-"))
    port = free_port()
    data_dir = tmp / "data"
    data_dir.mkdir()
    config_path = tmp / "zoo.cfg"
    write_config(config_path, port, data_dir, extra)
    server = ServerProcess(
        kind, "127.0.0.1", port, data_dir, config_path, tmp / "server.log", extra=extra or {}
    )
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                server.start()
                break
            except PortInUseError:
                # Another process took the port between free_port() and the bind: take another.
                if attempt == START_ATTEMPTS:
                    raise
                server.port = free_port()
                write_config(config_path, server.port, data_dir, extra)
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


START_ATTEMPTS = 5  # starts of running_server on fresh ports when the bind fails


@dataclass
class Ensemble:
    """Several server processes forming one quorum; `hosts` is the client connect string for all."""

    servers: list[ServerProcess]

    @property
    def hosts(self) -> str:
        return ",".join(s.hosts for s in self.servers)

    def serving(self, server: ServerProcess) -> bool:
        return server.mode() in ("leader", "follower", "observer")

    def leader(self) -> ServerProcess | None:
        return next((s for s in self.servers if s.mode() == "leader"), None)

    def wait_serving(self, wait: float = 60.0, servers: list[ServerProcess] | None = None) -> None:
        """Wait until each of `servers` (all by default) serves as leader, follower or observer;
        raises at once when one of them exits (PortInUseError when it could not bind)."""
        deadline = time.monotonic() + wait
        pending = list(servers or self.servers)
        while pending and time.monotonic() < deadline:
            for s in pending:
                s.check_running()
            pending = [s for s in pending if not self.serving(s)]
            if pending:
                time.sleep(0.2)
        if pending:
            tails = "\n".join(f"--- {s.hosts} ({s.log_path})\n{s.log_tail()}" for s in pending)
            raise RuntimeError(f"servers not serving after {wait}s: {[s.hosts for s in pending]}\n{tails}")

    def stop(self) -> None:
        """SIGTERM to all members at once, then wait for each (kill -9 after 10 s)."""
        for server in self.servers:
            if server.proc and server.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.proc.pid, signal.SIGTERM)
        for server in self.servers:
            server.stop()


def ensemble_servers(
    kind: str, tmp: Path, n: int, extra: dict[str, str] | None, observers: int = 0
) -> list[ServerProcess]:
    """The members of one quorum under `tmp` (data dirs with myid, configs), not started."""
    members = members_on_free_ports(n, observers, free_port)
    return [member_process(kind, tmp, m, members, extra) for m in members]


def member_process(
    kind: str, root: Path, member: Member, members: list[Member], extra: dict[str, str] | None = None
) -> ServerProcess:
    """Write `member`'s zoo.cfg and myid under `root` (zkpy.ops.layout) and return its process,
    not started; `extra` adds settings or overrides server.N lines (a proxy between peers, say)."""
    home = member_home(root, member)
    settings = write_member(root, member, members, extra)
    return ServerProcess(
        kind, HOST, member.client_port, home / "data", home / "zoo.cfg", home / "server.log", extra=settings
    )


@contextlib.contextmanager
def running_ensemble(
    kind: str = "apache",
    n: int = 3,
    extra: dict[str, str] | None = None,
    wait: float = 90.0,
    envs: Sequence[dict[str, str]] = (),
) -> Iterator[Ensemble]:
    """`n` servers of `kind` on 127.0.0.1 in one quorum (server.N lines, myid files), stopped afterwards.

    All members are spawned first and then waited on together: one member alone never serves.
    When a port was taken by another process in between, the whole ensemble starts again on new
    ports. Each server's output is in its `log_path` (<tmp>/sN/server.log) while it runs.
    `envs[i]`, when given, is added to member i's environment (zkpy.testing.slowfsync's shim).
    """
    if kind not in ("zkpy", "apache"):
        raise ValueError(f"unknown server kind {kind!r}")
    tmp = Path(tempfile.mkdtemp(prefix=f"zkpy-{kind}-ensemble-"))
    ensemble = Ensemble([])
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            ensemble.servers = ensemble_servers(kind, tmp, n, extra)
            for server, env in zip(ensemble.servers, envs, strict=False):
                server.env = dict(env)
            try:
                for server in ensemble.servers:
                    server.start(wait=None)
                ensemble.wait_serving(wait)
                break
            except PortInUseError:
                ensemble.stop()
                if attempt == START_ATTEMPTS:
                    raise
                for server in ensemble.servers:
                    shutil.rmtree(server.data_dir.parent, ignore_errors=True)
            except BaseException:
                ensemble.stop()
                raise
        yield ensemble
    finally:
        ensemble.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def java_properties(props: dict[str, str]) -> Iterator[None]:
    """Apache ZooKeeper JVMs started meanwhile also get `props` as -D system properties (through
    JAVA_TOOL_OPTIONS, which every JVM reads): settings Apache takes only that way, such as
    readonlymode.enabled or extendedTypesEnabled."""
    old = os.environ.get("JAVA_TOOL_OPTIONS")
    flags = " ".join(f"-D{k}={v}" for k, v in props.items())
    os.environ["JAVA_TOOL_OPTIONS"] = f"{old} {flags}" if old else flags
    try:
        yield
    finally:
        if old is None:
            del os.environ["JAVA_TOOL_OPTIONS"]
        else:
            os.environ["JAVA_TOOL_OPTIONS"] = old
