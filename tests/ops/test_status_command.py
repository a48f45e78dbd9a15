"""`zkpy status HOSTS` over a whole ensemble, with the connect string clients use: one table from
every server, exit status 1 without a quorum, --json; and the small things a new user tripped on
(`zkpy --version`, `zkpy dump --help`, `zkpy status foo`, hash and stmk).

Fail before this change: `zkpy status` took one host:port only (a comma-separated string was one
bad port), printed one server's srvr, had no --json; `zkpy --version` was an error; `zkpy dump
--help` did not say what its argument is; `zkpy status foo` tried to reach a host "foo".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from zkpy.testing.procs import ServerProcess, running_ensemble, running_server

pytestmark = pytest.mark.timeout(120)


def zkpy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkpy", *args], capture_output=True, text=True, timeout=60)


def test_status_of_an_ensemble_through_its_connect_string_and_without_a_quorum() -> None:
    with running_ensemble("zkpy", 3, {"tickTime": "200"}) as ensemble:
        hosts = ensemble.hosts + "/some/chroot"
        shown = zkpy("status", hosts)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split()[:4] == ["server", "mode", "zxid", "znodes"]
        modes = sorted(line.split()[1] for line in lines[1:4])
        assert modes == ["follower", "follower", "leader"]
        leader_line = next(line for line in lines[1:4] if " leader " in line)
        assert leader_line.split()[-1] == "2/2"  # both followers in sync
        assert lines[-1].startswith("quorum: yes")

        as_json = json.loads(zkpy("status", hosts, "--json").stdout)
        assert as_json["quorum"] is True
        assert [s["server"] for s in as_json["servers"]] == ensemble.hosts.split(",")
        assert all(isinstance(s["znodes"], int) for s in as_json["servers"])

        words = zkpy("status", ensemble.hosts, "ruok")
        assert words.returncode == 0
        assert words.stdout == "".join(f"--- {s.hosts}\nimok\n" for s in ensemble.servers)

        leader = ensemble.leader()
        assert leader is not None
        others = [s for s in ensemble.servers if s is not leader]
        others[0].kill()
        leader.kill()
        deadline = time.monotonic() + 30
        while (lonely := zkpy("status", hosts)).returncode == 0:  # until the survivor gives up leading
            assert time.monotonic() < deadline, lonely.stdout
            time.sleep(0.2)
        assert lonely.returncode == 1
        assert lonely.stdout.splitlines()[-1] == "no quorum: no server answers as leader"
        assert f"{leader.hosts}: unreachable (Connection refused)" in lonely.stdout
        assert json.loads(zkpy("status", hosts, "--json").stdout)["quorum"] is False


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server("zkpy") as s:
        yield s


def test_status_of_one_standalone_server_is_a_quorum(server: ServerProcess) -> None:
    shown = zkpy("status", server.hosts)
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[1].split()[:2] == [server.hosts, "standalone"]


def test_hash_and_stmk_are_not_offered_and_say_why_a_zkpy_server_does_not_answer(
    server: ServerProcess,
) -> None:
    unknown = zkpy("status", "xyzw")
    assert unknown.returncode == 2
    offered = unknown.stderr.split("the words are: ", 1)[1].strip().split(", ")
    assert "srvr" in offered and "hash" not in offered and "stmk" not in offered
    hashed = zkpy("status", server.hosts, "hash")
    assert hashed.returncode == 2
    assert (
        "closed the connection without answering 'hash' (zkpy servers do not answer hash and stmk)"
        in hashed.stderr
    )


def test_a_bare_name_that_is_no_host_is_not_taken_for_one() -> None:
    result = zkpy("status", "foo")
    assert result.returncode == 2
    assert "'foo' is neither a host this machine can resolve nor a four-letter word" in result.stderr


def test_version_and_dump_help() -> None:
    version = zkpy("--version")
    assert version.returncode == 0 and version.stdout.startswith("zkpy 0.1.0 ")
    dump_help = zkpy("dump", "--help").stdout
    assert "a log (log.*) or a snapshot (snapshot.*)" in dump_help
