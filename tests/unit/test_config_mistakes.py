"""The zoo.cfg mistakes a new user made, each refused or warned about with what was meant.

Fail before this change: `clientport=2297` in an ensemble config was "ignored" and the server ran
with no client port; `tickTim` was ignored without a hint; "two server.N lines use the same host and
peer port" named neither; a quorum port equal to the election port was accepted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zkpy.ops.layout import LOCAL_FOUR_LETTER_WORDS
from zkpy.server.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
ENSEMBLE = "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir=/var/zk\n"
SERVERS = "server.1=127.0.0.1:2881:3881\nserver.2=127.0.0.1:2882:3882\nserver.3=127.0.0.1:2883:3883\n"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/base")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_misspelt_client_port_in_an_ensemble_config_is_refused_with_the_key_meant() -> None:
    assert error_of(ENSEMBLE + "clientport=2297\n" + SERVERS) == (
        "zoo.cfg: clientPort is not set, so no client could connect "
        "(zoo.cfg:5 sets 'clientport': did you mean clientPort?)"
    )


def test_a_misspelt_client_port_in_a_standalone_config_says_what_was_meant() -> None:
    assert error_of("dataDir=/var/zk\nclientPrt=2181\n") == (
        "zoo.cfg: clientPort is not set (zoo.cfg:2 sets 'clientPrt': did you mean clientPort?)"
    )


def test_a_misspelt_required_ensemble_key_says_what_was_meant() -> None:
    text = "dataDir=/var/zk\nclientPort=2181\ninitLimit=10\nsynclimit=5\n" + SERVERS
    assert error_of(text).endswith("syncLimit is not set (required with server.N lines) "
                                   "(zoo.cfg:4 sets 'synclimit': did you mean syncLimit?)")  # fmt: skip


def test_a_misspelt_tick_time_is_warned_about_with_the_key_meant() -> None:
    config = parse_config("dataDir=/var/zk\nclientPort=2181\ntickTim=500\nfrobnicate=1\n")
    assert config.tick_time == 3000
    assert config.warnings == [
        "zoo.cfg:3: unknown key 'tickTim' ignored: did you mean tickTime?",
        "zoo.cfg:4: unknown key 'frobnicate' ignored",
    ]


def test_a_member_without_client_port_and_without_a_typo_is_still_accepted() -> None:
    """Apache allows a member that only votes; only a likely typo makes it an error."""
    assert parse_config(ENSEMBLE + SERVERS).client_port is None


def test_two_servers_on_one_host_and_port_are_named() -> None:
    text = ENSEMBLE + "clientPort=2181\nserver.1=127.0.0.1:2881:3881\nserver.2=127.0.0.1:2881:3882\n"
    assert error_of(text) == (
        "zoo.cfg:7: server.2: its quorum port 127.0.0.1:2881 is already server.1's quorum port (zoo.cfg:6): "
        "each server needs ports of its own"
    )


def test_one_servers_quorum_port_is_not_anothers_election_port() -> None:
    text = ENSEMBLE + "clientPort=2181\nserver.1=127.0.0.1:2881:3881\nserver.2=127.0.0.1:3881:3882\n"
    assert "its quorum port 127.0.0.1:3881 is already server.1's election port" in error_of(text)


def test_a_quorum_port_equal_to_the_election_port_is_refused() -> None:
    text = ENSEMBLE + "clientPort=2181\nserver.1=127.0.0.1:2881:3881\nserver.2=127.0.0.1:2982:2982\n"
    assert error_of(text) == (
        "zoo.cfg:7: server.2: its quorum port and its election port are both 2982: they must differ "
        "(e.g. 127.0.0.1:2982:3982)"
    )


def test_the_server_command_refuses_the_typo_in_one_line_with_status_2(tmp_path: Path) -> None:
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(
        f"dataDir={tmp_path}\n" + ENSEMBLE.replace("dataDir=/var/zk\n", "") + "clientport=2297\n" + SERVERS
    )
    (tmp_path / "myid").write_text("1\n")
    done = subprocess.run(
        [sys.executable, "-m", "zkpy", "server", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "zkpy: error: " + f"{cfg}: clientPort is not set, so no client could connect "
        f"({cfg}:5 sets 'clientport': did you mean clientPort?)"
    ]


@pytest.mark.parametrize("sample", sorted((ROOT / "conf" / "ensemble").glob("*.cfg")), ids=lambda p: p.name)
def test_the_sample_ensemble_configs_listen_on_this_machine_only(sample: Path) -> None:
    """Fails before this change: they listened on 0.0.0.0 with every four-letter word allowed."""
    config = parse_config(sample.read_text(), sample.parent, str(sample))
    assert config.client_port_address == "127.0.0.1"
    assert {s.host for s in config.servers.values()} == {"127.0.0.1"}
    assert config.four_letter_whitelist == frozenset(LOCAL_FOUR_LETTER_WORDS.split(","))
    assert config.warnings == []
