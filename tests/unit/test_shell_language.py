"""zkpy.ops.zkcli without a server: the shell parses, prints and complains as Apache's zkCli.sh 3.8 does.

The expected texts were taken from zkCli.sh 3.8 (`apache-zk --shell`) run against a server: the Stat
block, `'world,'anyone` / `: cdrwa` for getAcl, `Node does not exist: /x`, `WatchedEvent state:...`.
Before zkpy.ops existed these fail at import (ModuleNotFoundError).
"""

from __future__ import annotations

import time

import pytest

from zkpy import errors
from zkpy.jute.records import ACL, Id, Stat
from zkpy.ops import zkcli
from zkpy.ops.zkcli import CommandError


def test_tokenize_splits_on_spaces_and_keeps_quoted_strings_whole() -> None:
    assert zkcli.tokenize("create /a  'hello world'  \"x y\"") == ["create", "/a", "hello world", "x y"]
    assert zkcli.tokenize("   ") == []
    assert zkcli.tokenize("set /a it's") == ["set", "/a", "it's"]  # a quote inside a word stays


def test_options_may_come_anywhere_bundle_and_take_attached_values() -> None:
    command = zkcli.parse_line("create -es /a data")
    assert (command.name, command.args) == ("create", ["/a", "data"])
    assert command.flag("e") and command.flag("s") and not command.flag("c")
    assert zkcli.parse_line("create -t5000 /a").value("t") == "5000"
    assert zkcli.parse_line("create /a -t 5000").value("t") == "5000"
    assert zkcli.parse_line("deleteall /a -b 10").value("b") == "10"
    assert zkcli.parse_line("set -v 3 /a -- -1").args == ["/a", "-1"]  # `--` ends the options


@pytest.mark.parametrize(
    ("line", "message", "status"),
    [
        ("ls", "ls [-s] [-w] [-R] path", 1),
        ("set /a", "set [-s] [-v version] path data", 1),
        ("set /a b c", "set [-s] [-v version] path data", 1),
        ("get -z /a", "Unrecognized option: -z", 1),
        ("delete -v", "Missing argument for option: v", 1),
        ("bogus /a", "Command not found: bogus", 127),
    ],
)
def test_malformed_lines_fail_with_zkclis_words_and_status(line: str, message: str, status: int) -> None:
    with pytest.raises(CommandError) as info:
        zkcli.parse_line(line)
    assert (str(info.value), info.value.status) == (message, status)


def test_create_refuses_what_createcommand_refuses() -> None:
    for line, message in [
        (
            "create -c -e /a",
            "-c cannot be combined with -s or -e. Containers cannot be ephemeral or sequential.",
        ),
        ("create -e -t 10 /a", "TTLs cannot be used with Ephemeral znodes"),
        ("create -c -t 10 /a", "TTLs cannot be used with Container znodes"),
    ]:
        with pytest.raises(CommandError, match=message.replace(".", r"\.")):
            zkcli.check_create_flags(zkcli.parse_line(line))
    with pytest.raises(CommandError, match="-t argument must be a long value"):
        zkcli.parse_ttl("abc")
    with pytest.raises(CommandError, match="ttl must be positive"):
        zkcli.parse_ttl("0")
    assert zkcli.parse_ttl("5000") == 5000


def test_stat_prints_as_statprinter_with_hex_zxids_and_java_dates() -> None:
    stat = Stat(0x2, 0x5, 1_607_355_000_000, 1_607_355_001_000, 2, 0, 0, 0x1000001234, 5, 0, 0x2)
    assert zkcli.format_stat(stat, time.gmtime).splitlines() == [
        "cZxid = 0x2",
        f"ctime = {time.strftime('%a %b %d %H:%M:%S %Z %Y', time.gmtime(1_607_355_000))}",
        "mZxid = 0x5",
        f"mtime = {time.strftime('%a %b %d %H:%M:%S %Z %Y', time.gmtime(1_607_355_001))}",
        "pZxid = 0x2",
        "cversion = 0",
        "dataVersion = 2",
        "aclVersion = 0",
        "ephemeralOwner = 0x1000001234",
        "dataLength = 5",
        "numChildren = 0",
    ]
    assert zkcli.java_date(1_607_355_000_000, time.gmtime).startswith("Mon Dec 07 15:30:00 ")
    assert "ephemeralOwner = 0xffffffffffffffff" in zkcli.format_stat(Stat(0, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0))


def test_children_print_sorted_in_brackets() -> None:
    assert zkcli.format_children(["zookeeper", "b", "a"]) == "[a, b, zookeeper]"
    assert zkcli.format_children([]) == "[]"


def test_acl_prints_as_zkcli_3_8_and_parses_as_aclparser() -> None:
    acls = [ACL(31, Id("world", "anyone")), ACL(1, Id("digest", "u:h,a%sh"))]
    assert zkcli.format_acl(acls) == "'world,'anyone\n: cdrwa\n'digest,'u:h%2Ca%25sh\n: r"
    warnings: list[str] = []
    parsed = zkcli.parse_acl("digest:u:pw:rw,bogus,world:anyone:rx", warnings.append)
    assert parsed == [ACL(3, Id("digest", "u:pw")), ACL(1, Id("world", "anyone"))]
    assert warnings == ["bogus does not have the form scheme:id:perm", "Unknown perm type: x"]


def test_errors_print_as_cliwrapperexception() -> None:
    assert zkcli.error_message(errors.NoNodeError(path="/x")) == "Node does not exist: /x"
    assert zkcli.error_message(errors.NodeExistsError(path="/x")) == "Node already exists: /x"
    assert zkcli.error_message(errors.NotEmptyError(path="/x")) == "Node not empty: /x"
    assert zkcli.error_message(errors.BadVersionError(path="/x")) == "version No is not valid : /x"
    assert zkcli.error_message(errors.NoAuthError(path="/x")) == "Insufficient permission : /x"
    assert zkcli.error_message(errors.BadArgumentsError(path="/x")) == "Arguments are not valid : /x"
    assert zkcli.error_message(errors.NoWatcherError(path="/x")) == "KeeperErrorCode = No such watcher for /x"
    assert zkcli.error_message(errors.ConnectionLossError()) == "KeeperErrorCode = ConnectionLoss"
    # zkpy's own check of a path keeps its words
    assert zkcli.error_message(errors.BadArgumentsError("path must start with /", "x")) == (
        "path must start with /: x"
    )
    missing_chroot = errors.NoNodeError(path="/a")
    missing_chroot.chroot = "/app"  # type: ignore[attr-defined]
    assert zkcli.error_message(missing_chroot) == "Node does not exist: /a (the chroot /app does not exist)"


def test_watch_events_print_as_javas_watchedevent() -> None:
    assert zkcli.format_event(3, 3, "/x") == (
        "\nWATCHER::\n\nWatchedEvent state:SyncConnected type:NodeDataChanged path:/x"
    )
    assert zkcli.format_event(-1, -112, "") == "\nWATCHER::\n\nWatchedEvent state:Expired type:None path:null"
    assert zkcli.format_event(4, 3, "/p").endswith("type:NodeChildrenChanged path:/p")


def test_config_dash_c_gives_the_version_and_client_addresses() -> None:
    config = (
        "server.1=10.0.0.1:2888:3888:participant;0.0.0.0:2181\n"
        "server.2=10.0.0.2:2888:3888:participant;10.0.0.9:2182\n"
        "server.3=10.0.0.3:2888:3888:observer;2183\n"
        "version=100000000"
    )
    assert zkcli.client_config_string(config) == "100000000 10.0.0.1:2181,10.0.0.9:2182,10.0.0.3:2183"
    assert zkcli.client_config_string("") == " "  # a standalone server's empty config, as zkCli prints it


def test_history_lists_the_last_eleven_and_redo_replays_but_never_a_redo() -> None:
    history = zkcli.History()
    for i in range(15):
        history.add(f"ls /{i}")
    history.add("history")
    assert history.recent().splitlines() == [f"{i} - ls /{i}" for i in range(5, 15)] + ["15 - history"]
    history.add("redo 3")
    assert history.redo("3") == "ls /3"
    assert history.lines[-1] == "ls /3"  # the history shows what ran, not the redo
    history.add("redo 99")
    with pytest.raises(CommandError, match="out of range"):
        history.redo("99")
    history.lines[0] = "redo 1"
    history.add("redo 0")
    with pytest.raises(CommandError, match="No redoing redos"):
        history.redo("0")


def test_completion_candidates_for_commands_and_paths() -> None:
    assert zkcli.command_completions("get") == ["get", "getAcl", "getAllChildrenNumber"]
    assert zkcli.split_for_completion("/a/b") == ("/a", "b")
    assert zkcli.split_for_completion("/a/") == ("/a", "")
    assert zkcli.split_for_completion("/") == ("/", "")
    assert zkcli.split_for_completion("/zoo") == ("/", "zoo")
    assert zkcli.path_completions("/zoo", ["zookeeper", "a", "zoo2"]) == ["/zoo2", "/zookeeper"]
    assert zkcli.path_completions("/a/", ["y", "x"]) == ["/a/x", "/a/y"]


def test_every_command_has_a_handler_and_help_lists_them_sorted() -> None:
    from zkpy.ops.shell import Shell

    assert all(callable(getattr(Shell, f"_cmd_{name}", None)) for name in zkcli.COMMANDS)
    lines = zkcli.help_text().splitlines()[1:]
    assert [line.split()[0] for line in lines] == sorted(zkcli.COMMANDS)
