"""A server that cannot start says so in one line: the setting, its value and what to do.

Each case runs `python -m zkpy server zoo.cfg` as an operator would and checks the exit
status (2) and the single line on stderr.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from zkpy.server.config import ConfigError, load_config
from zkpy.testing.procs import free_port

UNASSIGNED_ADDRESS = "10.255.255.1"  # not this machine's: bind fails at once (no traffic is sent)


def start_error(tmp_path: Path, text: str | bytes) -> str:
    """Start a server on this zoo.cfg text; it must exit 2 with exactly one line on stderr."""
    cfg = tmp_path / "zoo.cfg"
    if isinstance(text, str):
        cfg.write_text(text)
    else:
        cfg.write_bytes(text)
    done = subprocess.run(
        [sys.executable, "-m", "zkpy", "server", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("zkpy: error: ")
    return lines[0].removeprefix("zkpy: error: ")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    message = start_error(tmp_path, f"dataDir={a_file}\nclientPort={free_port()}\n")
    assert message == (
        f"dataDir={a_file} is a file, not a directory: point dataDir at a directory zkpy may create"
    )


def test_data_log_dir_below_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    text = f"dataDir={tmp_path / 'data'}\ndataLogDir={a_file / 'log'}\nclientPort={free_port()}\n"
    message = start_error(tmp_path, text)
    assert message.startswith(f"dataLogDir={a_file / 'log'} cannot be created: ")
    assert message.endswith("point dataLogDir at a directory zkpy may create")


def test_client_port_address_not_of_this_machine(tmp_path: Path) -> None:
    text = f"dataDir={tmp_path / 'data'}\nclientPort={free_port()}\nclientPortAddress={UNASSIGNED_ADDRESS}\n"
    message = start_error(tmp_path, text)
    assert message.startswith(f"clientPortAddress={UNASSIGNED_ADDRESS} is not an address of this machine (")
    assert message.endswith("use one of its addresses, or 0.0.0.0 for all of them")


def test_client_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = f"dataDir={tmp_path / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        message = start_error(tmp_path, text)
    assert message.startswith(f"clientPort={port} on 127.0.0.1 is already in use")
    assert message.endswith("stop it or choose another clientPort")


def test_binary_config_names_the_line(tmp_path: Path) -> None:
    text = b"# zoo.cfg\ndataDir=/tmp/x\n\x7fELF\x02\x01\x01\x00\x00"
    message = start_error(tmp_path, text)
    assert message == (
        f"{tmp_path / 'zoo.cfg'}:3: the config file is not text (byte 0x7f at offset 25): "
        "give zkpy a zoo.cfg of key=value lines"
    )


def test_latin1_config_is_read_as_java_reads_it(tmp_path: Path) -> None:
    """java.util.Properties reads zoo.cfg as ISO-8859-1, so a Latin-1 comment must not stop zkpy."""
    cfg = tmp_path / "zoo.cfg"
    cfg.write_bytes(b"# r\xe9glages\ndataDir=/tmp/x\nclientPort=2181\n")
    assert load_config(cfg).client_port == 2181


@pytest.mark.parametrize("contents", [b"\x00\x00\x00\x01", b"dataDir=/x\nclientPort=1\x00\n"])
def test_nul_bytes_are_binary(tmp_path: Path, contents: bytes) -> None:
    cfg = tmp_path / "zoo.cfg"
    cfg.write_bytes(contents)
    with pytest.raises(ConfigError, match=r"is not text \(byte 0x00"):
        load_config(cfg)
