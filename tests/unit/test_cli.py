"""`zkpy server` refuses bad configurations with one clear line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from zkpy.testing.procs import four_letter, free_port, running_server


def _server(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zkpy", "server", str(config)], capture_output=True, text=True, timeout=60
    )


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unreadable_config_file(tmp_path: Path) -> None:
    result = _server(tmp_path / "missing.cfg")
    assert result.returncode == 2
    assert "missing.cfg" in _error_line(result)


def test_config_without_data_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text("tickTime=2000\nclientPort=2181\n")
    result = _server(cfg)
    assert result.returncode == 2
    assert "dataDir" in _error_line(result)


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "zoo.cfg"
        cfg.write_text(f"dataDir={tmp_path / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n")
        result = _server(cfg)
    assert result.returncode == 2
    line = _error_line(result)
    assert str(port) in line and "in use" in line


def test_non_integer_port(tmp_path: Path) -> None:
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(f"dataDir={tmp_path / 'data'}\nclientPort=notaport\n")
    result = _server(cfg)
    assert result.returncode == 2 and "clientPort" in _error_line(result)


def test_unknown_keys_are_warned_about_not_fatal() -> None:
    with running_server("zkpy", {"someFutureSetting": "42"}) as server:
        assert four_letter(server.host, server.port, "ruok") == "imok"
        assert "someFutureSetting" in server.log_tail(50)


def test_two_servers_on_one_data_dir_are_refused() -> None:
    with running_server("zkpy") as server:
        second = server.config_path.with_name("second.cfg")
        second.write_text(
            server.config_path.read_text().replace(f"clientPort={server.port}", f"clientPort={free_port()}")
        )
        result = _server(second)
        assert result.returncode == 2
        line = [ln for ln in result.stderr.splitlines() if "error" in ln][-1]
        assert "in use by another zkpy server" in line and str(server.proc.pid) in line


def test_an_ensemble_config_is_refused_rather_than_run_as_separate_servers(tmp_path: Path) -> None:
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(
        f"dataDir={tmp_path / 'data'}\nclientPort={free_port()}\ninitLimit=5\nsyncLimit=2\n"
        "server.1=127.0.0.1:2888:3888\nserver.2=127.0.0.1:2889:3889\nserver.3=127.0.0.1:2890:3890\n"
    )
    result = _server(cfg)
    assert result.returncode == 2
    assert "3 servers" in _error_line(result) and "not implemented" in _error_line(result)
