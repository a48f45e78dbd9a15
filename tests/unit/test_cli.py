"""`zkpy server` refuses bad configurations with one clear line and a non-zero exit; `zkpy status`
parses what users type and exits non-zero on anything but an answer."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import zkpy.cli
import zkpy.ops.status
from zkpy.ops.status import parse_status_args
from zkpy.testing.procs import ServerProcess, four_letter, free_port, running_server


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


def test_an_ensemble_member_without_myid_is_refused_with_what_to_write(tmp_path: Path) -> None:
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(
        f"dataDir={tmp_path / 'data'}\nclientPort={free_port()}\ninitLimit=5\nsyncLimit=2\n"
        "server.1=127.0.0.1:2888:3888\nserver.2=127.0.0.1:2889:3889\nserver.3=127.0.0.1:2890:3890\n"
    )
    result = _server(cfg)
    assert result.returncode == 2
    assert "3 servers" in _error_line(result) and "myid is missing" in _error_line(result)


# -- zkpy status ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server() -> Iterator[ServerProcess]:
    """A zkpy server whose whitelist leaves out conf (ruok and isro tell running_server it is up)."""
    with running_server("zkpy", {"4lw.commands.whitelist": "srvr, mntr, ruok, isro"}) as server:
        yield server


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zkpy", "status", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("server", "word", "expected"),
    [
        (None, None, ([("127.0.0.1", 2181)], None)),
        ("mntr", None, ([("127.0.0.1", 2181)], "mntr")),
        ("localhost", None, ([("localhost", 2181)], None)),
        ("localhost", "srvr", ([("localhost", 2181)], "srvr")),
        ("zk1.example.com:2182", "ruok", ([("zk1.example.com", 2182)], "ruok")),
        (":2183", "conf", ([("127.0.0.1", 2183)], "conf")),
        ("[::1]:2184", "srvr", ([("::1", 2184)], "srvr")),
        ("[::1]", "srvr", ([("::1", 2181)], "srvr")),
        ("::1", "srvr", ([("::1", 2181)], "srvr")),
        ("mntr", "localhost:2185", ([("localhost", 2185)], "mntr")),
        ("MNTR", None, ([("127.0.0.1", 2181)], "mntr")),
        # a client connect string, chroot and all
        ("zk1:2181,zk2:2182,zk3/app", None, ([("zk1", 2181), ("zk2", 2182), ("zk3", 2181)], None)),
    ],
)
def test_status_arguments(
    server: str | None, word: str | None, expected: tuple[list[tuple[str, int]], str | None]
) -> None:
    assert parse_status_args(server, word) == expected


@pytest.mark.parametrize(
    ("server", "word", "message"),
    [
        ("localhost:notaport", "srvr", "invalid port"),
        ("localhost:70000", "srvr", "invalid port"),
        ("localhost", "xyzw", "unknown four-letter word 'xyzw'"),
        ("mtnr", None, "unknown four-letter word 'mtnr'"),  # four letters alone are a word, not a host
        ("localhost", "mntrx", "unknown four-letter word"),
    ],
)
def test_status_arguments_refused(server: str | None, word: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_status_args(server, word)


def test_status_with_host_and_port_answers(limited_server: ServerProcess) -> None:
    result = _status(limited_server.hosts, "mntr")
    assert result.returncode == 0, result.stderr
    assert "zk_server_state\tstandalone" in result.stdout


def test_status_word_alone_and_host_alone_ask_the_default_server_and_port(
    limited_server: ServerProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The defaults are 127.0.0.1:2181; point them at the test server rather than take over 2181.
    monkeypatch.setattr(zkpy.ops.status, "DEFAULT_STATUS_SERVER", limited_server.hosts)
    assert zkpy.cli.main(["status", "mntr"]) == 0
    assert "zk_server_state" in capsys.readouterr().out
    monkeypatch.setattr(zkpy.ops.status, "DEFAULT_CLIENT_PORT", limited_server.port)
    assert zkpy.cli.main(["status", limited_server.host]) == 0  # no word: the table
    assert re.search(rf"^{limited_server.hosts}\s+standalone\s", capsys.readouterr().out, re.M)
    assert zkpy.cli.main(["status", "localhost", "srvr"]) == 0
    assert "Mode: standalone" in capsys.readouterr().out


def test_status_refuses_an_unknown_word_before_connecting() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = _status(f"127.0.0.1:{port}", "xyzw")
        assert result.returncode == 2
        assert "unknown four-letter word 'xyzw'" in _error_line(result) and result.stdout == ""
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nobody connected: nothing was sent
            listener.accept()


def test_status_word_outside_the_whitelist_exits_non_zero(limited_server: ServerProcess) -> None:
    result = _status(limited_server.hosts, "conf")
    assert result.returncode == 2 and result.stdout == ""
    line = _error_line(result)
    assert (
        "conf is not executed because it is not in the whitelist" in line and "4lw.commands.whitelist" in line
    )


def test_status_of_a_server_that_is_not_there_exits_non_zero() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
        port = s.getsockname()[1]
        table = _status(f"127.0.0.1:{port}")
        result = _status(f"127.0.0.1:{port}", "srvr")
    assert table.returncode == 1 and f"127.0.0.1:{port}: unreachable (Connection refused)" in table.stdout
    assert result.returncode == 2 and "cannot reach" in _error_line(result)
