"""`zkpy server` logging: the level from --log-level or ZKPY_LOG_LEVEL, --log-file, one line per
event (the multi-line startup banner included)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zkpy.ops.logs import one_line, resolve_level
from zkpy.testing.procs import four_letter, free_port, write_config

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: \S")


def test_level_comes_from_the_flag_then_the_environment() -> None:
    assert resolve_level("error", {"ZKPY_LOG_LEVEL": "debug"}) == "error"
    assert resolve_level(None, {"ZKPY_LOG_LEVEL": "DEBUG"}) == "debug"
    assert resolve_level(None, {"ZKPY_LOG_LEVEL": "warn"}) == "warning"
    assert resolve_level(None, {}) == "info"
    with pytest.raises(ValueError, match="ZKPY_LOG_LEVEL=loud is not a log level"):
        resolve_level(None, {"ZKPY_LOG_LEVEL": "loud"})


def test_one_line_joins_the_lines_of_a_message() -> None:
    assert one_line("zkpy 3.8 (standalone)\n  clients:    127.0.0.1:2181\n  stop:       Ctrl-C") == (
        "zkpy 3.8 (standalone) | clients:    127.0.0.1:2181 | stop:       Ctrl-C"
    )


def start(
    tmp_path: Path, *flags: str, env: dict[str, str], extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    write_config(tmp_path / "zoo.cfg", port, data, extra)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zkpy", "server", str(tmp_path / "zoo.cfg"), *flags],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, port


def wait_serving(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if four_letter("127.0.0.1", port, "ruok", timeout=1.0) == "imok":
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)


def test_log_file_gets_one_line_events_at_the_environments_level(tmp_path: Path) -> None:
    """fails before --log-file and ZKPY_LOG_LEVEL: argparse refuses the flag (exit 2), and the
    banner spans several lines."""
    log_file = tmp_path / "server.log"
    proc, port = start(tmp_path, "--log-file", str(log_file), env={"ZKPY_LOG_LEVEL": "debug"})
    try:
        wait_serving(proc, port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert stderr == ""  # everything went to the file
    lines = log_file.read_text().splitlines()
    assert [line for line in lines if not LINE.match(line)] == []
    assert any(" DEBUG " in line for line in lines)  # ZKPY_LOG_LEVEL=debug took effect
    banner = [line for line in lines if "(standalone, pid " in line]
    assert len(banner) == 1 and "clients:" in banner[0] and "stop:" in banner[0]
    assert "received SIGTERM, shutting down" in lines[-1]


def test_flag_overrides_the_environment_and_a_bad_level_is_refused(tmp_path: Path) -> None:
    """fails before ZKPY_LOG_LEVEL: a bad value was never read, so the server just started."""
    proc, port = start(tmp_path, "--log-level", "warning", env={"ZKPY_LOG_LEVEL": "loud"})
    try:
        wait_serving(proc, port)  # the flag wins: the bad ZKPY_LOG_LEVEL is not even read
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert " INFO " not in stderr  # warning level: the banner (INFO) is not logged
    bad, _ = start(tmp_path, env={"ZKPY_LOG_LEVEL": "loud"})
    try:
        _, stderr = bad.communicate(timeout=30)
    finally:
        if bad.poll() is None:  # it started after all: stop it rather than leave it behind
            bad.kill()
            bad.communicate()
    assert bad.returncode == 2
    assert stderr.strip() == (
        "zkpy: error: ZKPY_LOG_LEVEL=loud is not a log level: use one of debug, info, warning, error"
    )


def test_metrics_port_in_use_stops_the_start_admin_port_in_use_does_not(tmp_path: Path) -> None:
    """As Apache: a metrics provider that cannot start stops the server (one line, exit 2); an
    AdminServer that cannot bind is logged and the server runs without it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        data = tmp_path / "data"
        data.mkdir()
        write_config(tmp_path / "zoo.cfg", free_port(), data, {"metricsProvider.httpPort": str(busy)})
        done = subprocess.run(
            [sys.executable, "-m", "zkpy", "server", str(tmp_path / "zoo.cfg")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1] == (
            f"zkpy: error: metricsProvider.httpPort={busy} on 0.0.0.0 is already in use: "
            "stop what uses it or choose another port"
        )
        proc, port = start(
            tmp_path, env={}, extra={"admin.serverPort": str(busy), "admin.enableServer": "true"}
        )
        try:
            wait_serving(proc, port)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        assert f"AdminServer not started: admin.serverPort={busy} on 0.0.0.0" in stderr
