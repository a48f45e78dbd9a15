"""`zkpy shell` against a real zkpy server: typed at a pseudo-terminal, run with -c, fed a script.

The interactive test drives the real prompt (prompt_toolkit) through pexpect: Tab completes a command
and a znode path, and a watch set with `get -w` prints its event while the prompt waits, when another
client changes the node.

Each test here fails on the code before `zkpy shell` (checked against 7a18865 with the same tests:
`zkpy: error: argument command: invalid choice: 'shell'`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pexpect
import pytest

from zkpy.client.sync import SyncClient
from zkpy.testing.procs import ServerProcess, free_port

ZKPY = [sys.executable, "-m", "zkpy", "shell"]


def shell(
    hosts: str, *commands: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    args = [*ZKPY, hosts, *(a for c in commands for a in ("-c", c))]
    return subprocess.run(args, input=stdin or "", capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def node(server: ServerProcess) -> Iterator[str]:
    """A fresh path for one test; removed with everything below it afterwards."""
    path = f"/shell-{uuid.uuid4().hex[:10]}"
    yield path
    with SyncClient(server.hosts) as zk:
        zk.delete(path, recursive=True)


def _prompt(number: int) -> str:
    # prompt_toolkit draws the prompt with escape sequences around it; match the text itself.
    return rf"\[zk: [^\]]*\(CONNECTED\) {number}\]"


def test_interactive_create_ls_tab_completion_and_a_watch_that_fires(
    server: ServerProcess, node: str
) -> None:
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    child = pexpect.spawn(ZKPY[0], [*ZKPY[1:], server.hosts], env=env, encoding="utf-8", timeout=20)
    try:
        child.expect(_prompt(0))
        child.sendline(f"create {node} hello")
        child.expect(f"Created {node}")
        child.expect(_prompt(1))
        child.sendline("ls /")
        child.expect(re.escape(node[1:]))
        child.expect(_prompt(2))
        # Tab completes the command (getAc -> getAcl: one candidate) and the path (a unique prefix).
        child.send("getAc\t")
        child.expect("l")
        child.send(f" {node[:-3]}\t")
        child.expect(re.escape(node[-3:]))
        child.sendline("")
        child.expect(": cdrwa")
        child.expect(_prompt(3))
        child.send(f"get -w {node[:-3]}\t")
        child.expect(re.escape(node[-3:]))  # completion runs in the background: wait for it to land
        child.send("\r")
        child.expect("hello")
        child.expect(_prompt(4))
        # The history holds the lines as completed: the completion really filled in the words.
        child.sendline("history")
        child.expect(f"2 - getAcl {node}")
        child.expect(f"3 - get -w {node}")
        child.expect(_prompt(5))
        with SyncClient(server.hosts) as other:  # another client changes the node: the watch fires
            other.set(node, b"changed")
        child.expect("WATCHER::")
        child.expect(f"WatchedEvent state:SyncConnected type:NodeDataChanged path:{node}")
        child.sendline(f"get {node}")
        child.expect("changed")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_one_shot_commands_print_as_zkcli_and_exit_with_their_status(
    server: ServerProcess, node: str
) -> None:
    created = shell(server.hosts, f"create {node} data")
    assert (created.returncode, created.stderr, created.stdout) == (0, f"Created {node}\n", "")
    got = shell(server.hosts, f"get {node}")
    assert (got.returncode, got.stdout) == (0, "data\n")
    missing = shell(server.hosts, f"get {node}/nope")
    assert (missing.returncode, missing.stderr) == (1, f"Node does not exist: {node}/nope\n")
    usage = shell(server.hosts, "ls")
    assert (usage.returncode, usage.stderr) == (1, "ls [-s] [-w] [-R] path\n")
    unknown = shell(server.hosts, "lls /")
    assert unknown.returncode == 127 and "Command not found: lls" in unknown.stderr
    # Several -c run in order in one session; the status is the last failure's.
    several = shell(server.hosts, f"create {node}/a", f"delete {node}/missing", f"ls {node}")
    assert several.returncode == 1 and several.stdout == "[a]\n"
    assert "Node does not exist: " + f"{node}/missing" in several.stderr


def test_commands_from_a_non_terminal_stdin(server: ServerProcess, node: str) -> None:
    script = "\n".join(
        [
            f"create {node} ''",
            f"create -e {node}/eph e",
            f"create -s {node}/seq- s",
            f"create {node}/p 'with space'",
            f"ls -R {node}",
            f"get {node}/p",
            f"set -v 7 {node}/p x",
            f"getAcl {node}",
            "addauth digest alice:secret",
            "whoami",
            f"sync {node}",
            f"stat {node}/eph",
            f"getAllChildrenNumber {node}",
            f"delete {node}",
            f"deleteall {node}/p",
            f"ls {node}",
            "quit",
            "ls /never-run",
        ]
    )
    result = shell(server.hosts, stdin=script + "\n")
    assert result.returncode == 1, result.stderr  # set -v 7 and delete of a non-empty node failed
    out = result.stdout.splitlines()
    assert out[:4] == [node, f"{node}/eph", f"{node}/p", f"{node}/seq-0000000001"]
    assert "with space" in out and "'world,'anyone" in out and ": cdrwa" in out
    at = out.index("Auth scheme: User")  # in the server's order (Java's hash order, as Apache's)
    assert sorted(out[at + 1 : at + 3]) == ["digest: alice", "ip: 127.0.0.1"]
    assert "Sync is OK" in out and "numChildren = 0" in out and "3" in out
    assert re.search(r"^ephemeralOwner = 0x[1-9a-f][0-9a-f]*$", result.stdout, re.M)
    assert out[-1] == "[eph, seq-0000000001]"
    assert f"version No is not valid : {node}/p" in result.stderr
    assert f"Node not empty: {node}" in result.stderr
    assert "never-run" not in result.stdout + result.stderr


def test_no_server_means_exit_status_2_with_one_line(server: ServerProcess) -> None:
    result = subprocess.run(
        [*ZKPY, f"127.0.0.1:{free_port()}", "--connect-timeout", "1", "-c", "ls /"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("zkpy shell: cannot connect to 127.0.0.1:")
        and result.stderr.count("\n") == 1
    )


# -- beside Apache's zkCli --------------------------------------------------------------------------

# One script, run by Apache's zkCli.sh and by zkpy shell against the same server. Left out on purpose:
# version, help, and removewatches (Java's client fires *WatchRemoved events to the watcher; zkpy.client
# does not).
COMPARED_SCRIPT = """\
create ROOT data
create ROOT/a 1
create -s ROOT/s- x
create -e ROOT/e
create ROOT data
ls ROOT
ls -s ROOT
ls -R ROOT
get ROOT
get -s ROOT/a
set ROOT/a 2
set -s ROOT/a 3
set -v 99 ROOT/a 4
stat ROOT/a
stat ROOT/nope
get ROOT/nope
delete ROOT
getAcl ROOT
setAcl ROOT world:anyone:cdrw,nonsense
getAcl -s ROOT
addauth digest bob:pw
whoami
getAllChildrenNumber ROOT
sync ROOT
create -c -e ROOT/bad
create -t x ROOT/bad
ls
deleteall ROOT/a
deleteall ROOT/nope
history
redo 5
printwatches off
printwatches
quit
"""


def _normalized(text: str, root: str) -> list[str]:
    """Lines with what differs between two runs masked: the root path, zxids, dates, session ids."""
    text = text.replace(root, "ROOT")
    text = re.sub(r"^(cZxid|mZxid|pZxid|ephemeralOwner) = 0x[0-9a-f]+$", r"\1 = 0x?", text, flags=re.M)
    text = re.sub(r"^(ctime|mtime) = .*$", r"\1 = ?", text, flags=re.M)
    return text.splitlines()


def _apache_noise(line: str) -> bool:
    """zkCli's banner, its client's log lines and stack traces, and the session's own state events."""
    return (
        re.match(r"^\[[\w.-]+(\([^)]*\))?\] (INFO|WARN|ERROR|DEBUG) ", line) is not None
        or line.startswith(("\tat ", "Connecting to ", "Welcome to ZooKeeper!", "JLine support is"))
        or line.startswith(("java.", "EndOfStreamException", "WATCHER::", "WatchedEvent state:"))
        or line == ""
    )


@pytest.mark.apache
def test_a_script_prints_what_apaches_zkcli_prints(server: ServerProcess) -> None:
    """Every line of output and every error line of zkCli 3.8 for the same script, in the same order."""
    from zkpy.testing import apache as apache_zk

    apache_zk.require()
    roots = [f"/cmp-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        apache = subprocess.run(
            apache_zk.shell_command(server.hosts, "-waitforconnection"),
            input=COMPARED_SCRIPT.replace("ROOT", roots[0]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        ours = shell(server.hosts, stdin=COMPARED_SCRIPT.replace("ROOT", roots[1]))
    finally:
        with SyncClient(server.hosts) as zk:
            for root in roots:
                zk.delete(root, recursive=True)
    for stream in ("stdout", "stderr"):
        theirs = [line for line in _normalized(getattr(apache, stream), roots[0]) if not _apache_noise(line)]
        mine = [line for line in _normalized(getattr(ours, stream), roots[1]) if line != ""]
        assert mine == theirs, stream
    # zkCli exits with the last command's status (printwatches: 0); zkpy with the last failure's, so a
    # script that went wrong anywhere says so.
    assert (apache.returncode, ours.returncode) == (0, 1)
