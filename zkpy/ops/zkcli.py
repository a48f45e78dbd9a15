"""The zkCli.sh language, pure: how a command line splits and parses, and how results and errors print.

Nothing here talks to a server, so the whole of it is unit-tested on its own; `zkpy.ops.shell` runs the
parsed commands with a client. Syntax, output and error texts follow Apache ZooKeeper 3.8's
ZooKeeperMain and org.apache.zookeeper.cli, so a person (or a script) used to zkCli.sh finds the same
words: `Node does not exist: /x`, `WatchedEvent state:SyncConnected type:NodeDataChanged path:/x`,
the Stat block with its hex zxids and Java dates.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from zkpy import errors
from zkpy.jute.records import ACL, Id, Stat

# Exit statuses, as Apache's CLI (org.apache.zookeeper.server.ExitCode and CommandNotFoundException).
EXIT_OK = 0
EXIT_ERROR = 1  # the command failed: a ZooKeeper error, a malformed command, not connected
EXIT_USAGE = 2  # `zkpy shell` itself was called wrongly, or could not connect at all
EXIT_NOT_FOUND = 127  # no such command

PERM_READ, PERM_WRITE, PERM_CREATE, PERM_DELETE, PERM_ADMIN = 1, 2, 4, 8, 16
ADD_WATCH_MODES = ("PERSISTENT", "PERSISTENT_RECURSIVE")
TTL_MAX = (1 << 40) - 1  # EphemeralType.TTL: the TTL shares ephemeralOwner's low 40 bits


class CommandError(Exception):
    """A command that cannot run as typed; the message is what the shell prints, `status` its exit code."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Spec:
    """One command: its usage text (Apache's), which options it takes, how many arguments."""

    usage: str
    flags: str = ""  # options without a value, one letter each
    valued: str = ""  # options that take a value
    min_args: int = 0
    max_args: int = 0
    summary: str = ""


_ADD_WATCH_USAGE = f"[-m mode] path # optional mode is one of [{', '.join(ADD_WATCH_MODES)}] - default is PERSISTENT_RECURSIVE"

COMMANDS: dict[str, Spec] = {
    "addWatch": Spec(_ADD_WATCH_USAGE, valued="m", min_args=1, max_args=1, summary="add a persistent watch"),
    "addauth": Spec("scheme auth", min_args=2, max_args=2, summary="authenticate this session"),
    "close": Spec("", summary="close the session"),
    "config": Spec("[-c] [-w] [-s]", flags="cws", summary="the ensemble configuration"),
    "connect": Spec("host:port", max_args=1, summary="open a new session (to the same hosts by default)"),
    "create": Spec(
        "[-s] [-e] [-c] [-t ttl] path [data] [acl]",
        flags="sec",
        valued="t",
        min_args=1,
        max_args=3,
        summary="create a znode",
    ),
    "delete": Spec("[-v version] path", valued="v", min_args=1, max_args=1, summary="delete a znode"),
    "deleteall": Spec(
        "path [-b batch size]", valued="b", min_args=1, max_args=1, summary="delete a znode and all below"
    ),
    "get": Spec("[-s] [-w] path", flags="sw", min_args=1, max_args=1, summary="a znode's data"),
    "getAcl": Spec("[-s] path", flags="s", min_args=1, max_args=1, summary="a znode's ACL"),
    "getAllChildrenNumber": Spec("path", min_args=1, max_args=1, summary="how many znodes below"),
    "help": Spec("[command]", max_args=1, summary="this list"),
    "history": Spec("", summary="the last commands, numbered for redo"),
    "ls": Spec("[-s] [-w] [-R] path", flags="swR", min_args=1, max_args=1, summary="a znode's children"),
    "printwatches": Spec("on|off", max_args=1, summary="print watch events as they fire, or not"),
    "quit": Spec("", summary="leave"),
    "redo": Spec("cmdno", min_args=1, max_args=1, summary="run a command from the history again"),
    "removewatches": Spec(
        "path [-c|-d|-p|-r|-a]",
        flags="cdpra",
        min_args=1,
        max_args=1,
        summary="remove this session's watches",
    ),
    "set": Spec(
        "[-s] [-v version] path data", flags="s", valued="v", min_args=2, max_args=2, summary="set data"
    ),
    "setAcl": Spec(
        "[-s] [-v version] [-R] path acl",
        flags="sR",
        valued="v",
        min_args=2,
        max_args=2,
        summary="set an ACL",
    ),
    "stat": Spec("[-w] path", flags="w", min_args=1, max_args=1, summary="a znode's Stat"),
    "sync": Spec("path", min_args=1, max_args=1, summary="catch this server up with the leader"),
    "version": Spec("", summary="the shell's version"),
    "whoami": Spec("", summary="who the server thinks this session is"),
}


def usage_line(name: str) -> str:
    """`ls [-s] [-w] [-R] path`: what zkCli prints for a command typed wrongly."""
    return f"{name} {COMMANDS[name].usage}"


def help_text() -> str:
    """Every command and its usage, sorted as zkCli's usage() sorts them."""
    lines = ["ZooKeeper -server host:port cmd args"]
    lines += [f"\t{name} {COMMANDS[name].usage}" for name in sorted(COMMANDS)]
    return "\n".join(lines)


# zkCli's MyCommandOptions.ARGS_PATTERN: a word, or a whole "double" / 'single' quoted string.
_ARG = re.compile(r"""\s*([^"'\s]\S*|"[^"]*"|'[^']*')\s*""")
_QUOTED = re.compile(r"""^(['"])(.*)\1$""", re.S)


def tokenize(line: str) -> list[str]:
    """Split a command line as zkCli does: spaces separate, quotes group (and are dropped)."""
    tokens = []
    for match in _ARG.finditer(line):
        token = match.group(1)
        quoted = _QUOTED.match(token)
        tokens.append(quoted.group(2) if quoted else token)
    return tokens


@dataclass
class Command:
    """A parsed command: its name, the options given (letter -> value, True for a flag), its arguments."""

    name: str
    options: dict[str, str | bool] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def flag(self, letter: str) -> bool:
        return letter in self.options

    def value(self, letter: str) -> str | None:
        v = self.options.get(letter)
        return v if isinstance(v, str) else None


def parse(tokens: Sequence[str]) -> Command:
    """Parse a tokenized line as commons-cli does for zkCli: options may come anywhere, `-se` is `-s -e`,
    `-t5000` is `-t 5000`, `--` ends the options. Raises CommandError (usage text, or 127 if unknown)."""
    if not tokens:
        raise CommandError("No command entered")
    name, *rest = tokens
    spec = COMMANDS.get(name)
    if spec is None:
        raise CommandError(f"Command not found: {name}", EXIT_NOT_FOUND)
    command = Command(name)
    it = iter(rest)
    for token in it:
        if token == "--":
            command.args.extend(it)
            break
        if not token.startswith("-") or token == "-":
            command.args.append(token)
            continue
        letters = token[1:]
        for i, letter in enumerate(letters):
            if letter in spec.valued:
                value = letters[i + 1 :] or next(it, None)
                if value is None:
                    raise CommandError(f"Missing argument for option: {letter}")
                command.options[letter] = value
                break
            if letter not in spec.flags:
                raise CommandError(f"Unrecognized option: {token}")
            command.options[letter] = True
    if not spec.min_args <= len(command.args) <= spec.max_args:
        raise CommandError(usage_line(name))
    return command


def parse_line(line: str) -> Command:
    return parse(tokenize(line))


# -- what results look like ------------------------------------------------------------------------


def java_date(millis: int, localtime: Callable[[float], time.struct_time] = time.localtime) -> str:
    """java.util.Date.toString(): `Mon Dec 07 15:48:59 UTC 2026`, in the local time zone."""
    return time.strftime("%a %b %d %H:%M:%S %Z %Y", localtime(millis / 1000))


def format_stat(stat: Stat, localtime: Callable[[float], time.struct_time] = time.localtime) -> str:
    """zkCli's StatPrinter: one `name = value` line per field, zxids and owner in hex."""
    return "\n".join(
        [
            f"cZxid = {stat.czxid:#x}",
            f"ctime = {java_date(stat.ctime, localtime)}",
            f"mZxid = {stat.mzxid:#x}",
            f"mtime = {java_date(stat.mtime, localtime)}",
            f"pZxid = {stat.pzxid:#x}",
            f"cversion = {stat.cversion}",
            f"dataVersion = {stat.version}",
            f"aclVersion = {stat.aversion}",
            f"ephemeralOwner = {stat.ephemeralOwner & 0xFFFFFFFFFFFFFFFF:#x}",
            f"dataLength = {stat.dataLength}",
            f"numChildren = {stat.numChildren}",
        ]
    )


def format_children(children: Iterable[str]) -> str:
    """`[a, b, zookeeper]`: sorted, as zkCli prints them."""
    return "[" + ", ".join(sorted(children)) + "]"


def format_data(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def perm_string(perms: int) -> str:
    """`cdrwa` order, as GetAclCommand.getPermString."""
    letters = ((PERM_CREATE, "c"), (PERM_DELETE, "d"), (PERM_READ, "r"), (PERM_WRITE, "w"), (PERM_ADMIN, "a"))
    return "".join(letter for bit, letter in letters if perms & bit)


def _csv(text: str) -> str:
    """jute's CSV string escape (Utils.toCSVString), which ZooKeeper's Id.toString uses."""
    escapes = {"\0": "%00", "\n": "%0A", "\r": "%0D", ",": "%2C", "}": "%7D", "%": "%25"}
    return "'" + "".join(escapes.get(c, c) for c in text)


def format_acl(acls: Iterable[ACL]) -> str:
    """What zkCli 3.8 prints for getAcl: Id.toString() (jute's CSV form, which ends in a newline), then
    `: perms`. So world:anyone:cdrwa prints as `'world,'anyone` and `: cdrwa` on two lines."""
    return "\n".join(
        f"{_csv(a.id.scheme or '')},{_csv(a.id.id or '')}\n: {perm_string(a.perms)}" for a in acls
    )


def parse_perms(text: str, warn: Callable[[str], None]) -> int:
    bits = {"r": PERM_READ, "w": PERM_WRITE, "c": PERM_CREATE, "d": PERM_DELETE, "a": PERM_ADMIN}
    perms = 0
    for letter in text:
        if letter in bits:
            perms |= bits[letter]
        else:
            warn(f"Unknown perm type: {letter}")
    return perms


def parse_acl(text: str, warn: Callable[[str], None]) -> list[ACL]:
    """`scheme:id:perms[,...]` as AclParser: the id is everything between the first and last colon
    (digest ids hold one); a malformed entry or letter is reported through `warn` and left out."""
    acls = []
    for entry in text.split(","):
        first, last = entry.find(":"), entry.rfind(":")
        if first == -1 or first == last:
            warn(f"{entry} does not have the form scheme:id:perm")
            continue
        acls.append(ACL(parse_perms(entry[last + 1 :], warn), Id(entry[:first], entry[first + 1 : last])))
    return acls


def parse_version(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"version must be a number: {text}") from None


def parse_ttl(text: str) -> int:
    """CreateCommand's checks of `-t`: a long, then EphemeralType.TTL's range."""
    try:
        ttl = int(text)
    except ValueError:
        raise CommandError("-t argument must be a long value") from None
    if not 0 < ttl <= TTL_MAX:
        raise CommandError(f"ttl must be positive and cannot be larger than: {TTL_MAX}")
    return ttl


def check_create_flags(command: Command) -> None:
    """CreateCommand's refusals, with its words."""
    e, s, c, t = (command.flag(x) for x in "esct")
    if c and (e or s):
        raise CommandError(
            "-c cannot be combined with -s or -e. Containers cannot be ephemeral or sequential."
        )
    if t and e:
        raise CommandError("TTLs cannot be used with Ephemeral znodes")
    if t and c:
        raise CommandError("TTLs cannot be used with Container znodes")


def client_config_string(config: str) -> str:
    """`config -c`: ConfigUtils.getClientConfigStr, the config's version and the client addresses.

    A `server.N=host:quorum:election[:role];[clientaddr:]clientport` line gives `clientaddr:clientport`
    (the server's host when the address is 0.0.0.0 or left out); `version=` gives the version.
    """
    version, addresses = "", []
    for line in config.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "version":
            version = value
        elif key.startswith("server.") and ";" in value:
            host = value.split(":", 1)[0]
            client = value.split(";", 1)[1]
            caddr, sep, cport = client.rpartition(":")
            if not sep or caddr in ("", "0.0.0.0"):
                caddr = host
            addresses.append(f"{caddr}:{cport}")
    return f"{version} {','.join(addresses)}"


# -- watch events and errors -----------------------------------------------------------------------

# Watcher.Event.KeeperState and EventType, as Java's WatchedEvent.toString() names them.
KEEPER_STATES = {
    -1: "Unknown",
    0: "Disconnected",
    1: "NoSyncConnected",
    3: "SyncConnected",
    4: "AuthFailed",
    5: "ConnectedReadOnly",
    6: "SaslAuthenticated",
    -112: "Expired",
    7: "Closed",
}
EVENT_TYPES = {
    -1: "None",
    1: "NodeCreated",
    2: "NodeDeleted",
    3: "NodeDataChanged",
    4: "NodeChildrenChanged",
    5: "DataWatchRemoved",
    6: "ChildWatchRemoved",
    7: "PersistentWatchRemoved",
}


def format_event(event_type: int, state: int, path: str | None) -> str:
    """What zkCli's watcher prints for an event: a blank line, `WATCHER::`, a blank line, the event."""
    kind = EVENT_TYPES.get(event_type, str(event_type))
    where = "null" if event_type == -1 or not path else path
    return (
        f"\nWATCHER::\n\nWatchedEvent state:{KEEPER_STATES.get(state, str(state))} type:{kind} path:{where}"
    )


# KeeperException.getCodeMessage's words, for `KeeperErrorCode = <words> for <path>`.
_CODE_WORDS = {
    errors.Code.SYSTEM_ERROR: "SystemError",
    errors.Code.RUNTIME_INCONSISTENCY: "RuntimeInconsistency",
    errors.Code.DATA_INCONSISTENCY: "DataInconsistency",
    errors.Code.CONNECTION_LOSS: "ConnectionLoss",
    errors.Code.MARSHALLING_ERROR: "MarshallingError",
    errors.Code.NEW_CONFIG_NO_QUORUM: "NewConfigNoQuorum",
    errors.Code.RECONFIG_IN_PROGRESS: "ReconfigInProgress",
    errors.Code.UNIMPLEMENTED: "Unimplemented",
    errors.Code.OPERATION_TIMEOUT: "OperationTimeout",
    errors.Code.BAD_ARGUMENTS: "BadArguments",
    errors.Code.API_ERROR: "APIError",
    errors.Code.NO_NODE: "NoNode",
    errors.Code.NO_AUTH: "NoAuth",
    errors.Code.BAD_VERSION: "BadVersion",
    errors.Code.NO_CHILDREN_FOR_EPHEMERALS: "NoChildrenForEphemerals",
    errors.Code.NODE_EXISTS: "NodeExists",
    errors.Code.INVALID_ACL: "InvalidACL",
    errors.Code.AUTH_FAILED: "AuthFailed",
    errors.Code.NOT_EMPTY: "Directory not empty",
    errors.Code.SESSION_EXPIRED: "Session expired",
    errors.Code.INVALID_CALLBACK: "Invalid callback",
    errors.Code.SESSION_MOVED: "Session moved",
    errors.Code.NOT_READ_ONLY: "Not a read-only call",
    errors.Code.EPHEMERAL_ON_LOCAL_SESSION: "Ephemeral node on local session",
    errors.Code.NO_WATCHER: "No such watcher",
    errors.Code.RECONFIG_DISABLED: "Reconfig is disabled",
    errors.Code.SESSION_CLOSED_REQUIRE_SASL: "Session closed because client failed to authenticate",
    errors.Code.QUOTA_EXCEEDED: "Quota has exceeded",
    errors.Code.THROTTLED: "Op throttled due to high load",
}

# CliWrapperException's sentences for the errors a person meets most.
_SENTENCES: dict[type[errors.ZooKeeperError], str] = {
    errors.NoNodeError: "Node does not exist: ",
    errors.NoChildrenForEphemeralsError: "Ephemerals cannot have children: ",
    errors.NodeExistsError: "Node already exists: ",
    errors.NotEmptyError: "Node not empty: ",
    errors.NotReadOnlyError: "Not a read-only call: ",
    errors.InvalidACLError: "Acl is not valid : ",
    errors.NoAuthError: "Insufficient permission : ",
    errors.BadArgumentsError: "Arguments are not valid : ",
    errors.BadVersionError: "version No is not valid : ",
    errors.QuotaExceededError: "Quota has exceeded : ",
}


def error_message(error: errors.ZooKeeperError) -> str:
    """The line zkCli prints for a failed request: `Node does not exist: /x`, or Java's generic
    `KeeperErrorCode = ConnectionLoss for /x`. A client-side refusal (a bad path) keeps zkpy's words;
    a NoNode caused by a missing chroot says so."""
    path = error.path
    if isinstance(error, errors.BadArgumentsError) and not str(error).startswith(error.code.name):
        return str(error)  # zkpy's own check of the path, e.g. "path must start with /: x"
    sentence = _SENTENCES.get(type(error))
    if sentence is not None and path is not None:
        text = sentence + path
        chroot = getattr(error, "chroot", None)
        return f"{text} (the chroot {chroot} does not exist)" if chroot else text
    words = _CODE_WORDS.get(error.code, "Unknown error")
    return f"KeeperErrorCode = {words}" + (f" for {path}" if path else "")


# -- history and completion ------------------------------------------------------------------------


class History:
    """The numbered commands of this shell, for `history` and `redo N` (zkCli numbers from 0)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> int:
        self.lines.append(line)
        return len(self.lines) - 1

    @property
    def count(self) -> int:
        return len(self.lines)

    def recent(self) -> str:
        """zkCli's `history`: the last eleven lines (the `history` itself included), numbered."""
        start = max(0, len(self.lines) - 11)
        return "\n".join(f"{i} - {self.lines[i]}" for i in range(start, len(self.lines)))

    def redo(self, number: str) -> str:
        """The line `redo number` runs again (the redo itself is the last line in the history)."""
        try:
            index = int(number, 0)
        except ValueError:
            raise CommandError(f"Command index out of range: {number}") from None
        if not 0 <= index < len(self.lines) - 1:
            raise CommandError("Command index out of range")
        line = self.lines[index]
        if tokenize(line)[:1] == ["redo"]:
            raise CommandError("No redoing redos")
        self.lines[-1] = line
        return line


def split_for_completion(word: str) -> tuple[str, str]:
    """A partly typed path -> (the parent to list, the prefix its children must start with).

    `/a/b` -> (`/a`, `b`); `/a/` -> (`/a`, ``); `/` -> (`/`, ``).
    """
    parent, _, prefix = word.rpartition("/")
    return parent or "/", prefix


def path_completions(word: str, children: Iterable[str]) -> list[str]:
    """Whole paths that complete `word`, given the children of its parent, sorted."""
    parent, prefix = split_for_completion(word)
    base = "" if parent == "/" else parent
    return sorted(f"{base}/{child}" for child in children if child.startswith(prefix))


def command_completions(word: str) -> list[str]:
    return sorted(name for name in COMMANDS if name.startswith(word))
