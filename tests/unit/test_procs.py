"""zkpy.testing.procs: ports are not handed out twice, and a port taken before the bind is retried."""

from __future__ import annotations

import socket

import pytest

import zkpy.testing.procs as procs
from zkpy.testing.procs import NotWhitelistedError, four_letter, free_port, running_server


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_running_server_starts_again_on_another_port_when_its_port_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as thief:  # takes the port after free_port() chose it, before the bind
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        taken = thief.getsockname()[1]
        real_free_port = procs.free_port
        handed: list[int] = []

        def first_one_taken() -> int:
            handed.append(taken if not handed else real_free_port())
            return handed[-1]

        monkeypatch.setattr(procs, "free_port", first_one_taken)
        with running_server("zkpy") as server:
            assert server.port != taken and handed == [taken, server.port]
            assert f"clientPort={server.port}\n" in server.config_path.read_text()
            assert four_letter(server.host, server.port, "ruok") == "imok"
            assert "already in use" in server.log_path.read_text()  # the first try, logged


def test_a_whitelist_without_ruok_fails_at_once_and_says_why() -> None:
    # NotWhitelistedError, not the RuntimeError of the 90 s start timeout
    with (
        pytest.raises(NotWhitelistedError, match="must include ruok and isro"),
        running_server("zkpy", {"4lw.commands.whitelist": "srvr"}),
    ):
        pass
