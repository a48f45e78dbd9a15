"""The `zkpy` command: server, status, dump."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _fail(message: str) -> int:
    print(f"zkpy: error: {message}", file=sys.stderr)
    return 2


def cmd_server(args: argparse.Namespace) -> int:
    from zkpy.server.config import ConfigError, load_config
    from zkpy.server.node import StartupError
    from zkpy.server.run import run_server
    from zkpy.server.tls import TlsConfigError
    from zkpy.storage.errors import CorruptLogError, CorruptSnapshotError, StorageError
    from zkpy.tree.serialize import SnapshotFormatError

    try:
        config = load_config(args.config)
    except ConfigError as e:
        return _fail(str(e))
    if len(config.servers) > 1 and config.server_id is None:
        return _fail(
            f"{args.config} lists {len(config.servers)} servers but {config.data_dir}/myid is missing: "
            "write this server's id (the N of its server.N line) there"
        )
    from zkpy.ops import logs

    problem = logs.configure(args.log_level, args.log_file)
    if problem is not None:
        return _fail(problem)
    for warning in config.warnings:
        logging.getLogger("zkpy.config").warning("%s", warning)
    try:
        run_server(config)
    except (StartupError, TlsConfigError) as e:
        return _fail(str(e))
    except (CorruptLogError, CorruptSnapshotError) as e:
        return _fail(
            f"cannot recover the data in {config.data_dir}: {e}. A standalone server has no other copy "
            "to re-sync from (an ensemble member would): restore the directory from a backup, or move "
            "the damaged file aside to start from what is left (`zkpy dump FILE` shows what it holds)"
        )
    except StorageError as e:
        return _fail(f"cannot recover the data in {config.data_dir}: {e}")
    except SnapshotFormatError as e:
        return _fail(f"cannot load the snapshot in {config.data_dir}: {e}")
    except OSError as e:  # the known cases are StartupErrors; this names at least what failed
        return _fail(f"{e.strerror or e} ({getattr(e, 'filename', None) or 'server'})")
    except KeyboardInterrupt:
        return 0
    return 0


DEFAULT_STATUS_SERVER = "127.0.0.1:2181"
DEFAULT_CLIENT_PORT = 2181  # what ZooKeeper's own tools assume when a host has no port
_NOT_IN_WHITELIST = "is not executed because it is not in the whitelist."


def parse_server_address(address: str) -> tuple[str, int]:
    """'host', 'host:port', ':port', '[v6]', '[v6]:port' or a bare IPv6 address -> (host, port).

    A missing host is 127.0.0.1 and a missing port 2181; raises ValueError for a bad port.
    """
    host, port = address, ""
    if address.startswith("["):  # [ipv6] or [ipv6]:port
        host, _, rest = address[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"cannot parse {address!r} as [host]:port")
        port = rest[1:]
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    # more than one colon and no brackets: a bare IPv6 address, default port
    if not port:
        return host or "127.0.0.1", DEFAULT_CLIENT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port {port!r} in {address!r}")
    return host or "127.0.0.1", int(port)


def _looks_like_word(arg: str) -> bool:
    """Four letters and nothing else: meant as a four-letter word (a host like that needs `:port`)."""
    return len(arg) == 4 and arg.isascii() and arg.isalpha()


def parse_status_args(server: str | None, word: str | None) -> tuple[str, int, str]:
    """`zkpy status [HOST[:PORT]] [WORD]` -> (host, port, word); `zkpy status WORD` asks the default server.

    A lone argument of four letters is a word, not a host. Raises ValueError for an unknown
    four-letter word (checked before anything is sent) or a bad port.
    """
    from zkpy.server.config import ALL_FOUR_LETTER_WORDS

    if (
        word is None
        and server is not None
        and (server.lower() in ALL_FOUR_LETTER_WORDS or _looks_like_word(server))
    ):
        server, word = None, server  # `zkpy status mntr`: a word for the default server
    elif (
        server
        and word
        and server.lower() in ALL_FOUR_LETTER_WORDS
        and word.lower() not in ALL_FOUR_LETTER_WORDS
    ):
        server, word = word, server  # `zkpy status mntr host:port`
    word = (word or "srvr").lower()
    if word not in ALL_FOUR_LETTER_WORDS:
        raise ValueError(
            f"unknown four-letter word {word!r}; the words are: {', '.join(sorted(ALL_FOUR_LETTER_WORDS))}"
        )
    host, port = parse_server_address(server or DEFAULT_STATUS_SERVER)
    return host, port, word


def cmd_status(args: argparse.Namespace) -> int:
    from zkpy.testing.procs import four_letter

    try:
        host, port, word = parse_status_args(args.server, args.word)
    except ValueError as e:
        return _fail(str(e))
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        answer = four_letter(host, port, word)
    except (OSError, UnicodeError) as e:
        return _fail(f"cannot reach {where}: {e}")
    if _NOT_IN_WHITELIST in answer:
        return _fail(f"{where} refused {word!r}: {answer.strip()} (see 4lw.commands.whitelist in zoo.cfg)")
    if not answer:
        return _fail(f"{where} closed the connection without answering {word!r}")
    sys.stdout.write(answer if answer.endswith("\n") else answer + "\n")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    try:
        from zkpy.storage.dump import dump
    except ImportError:
        return _fail("this build has no storage dump tool")
    try:
        dump(args.path, sys.stdout)
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except (OSError, ValueError) as e:
        return _fail(f"cannot dump {args.path}: {e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zkpy", description="A ZooKeeper-compatible coordination service.")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="run a server from a ZooKeeper zoo.cfg")
    server.add_argument("config", help="path to zoo.cfg")
    server.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: $ZKPY_LOG_LEVEL, else info",
    )
    server.add_argument("--log-file", help="append the log here instead of writing it to stderr")
    server.set_defaults(func=cmd_server)
    status = sub.add_parser("status", help="ask a server a four-letter word (default srvr)")
    status.add_argument(
        "server",
        nargs="?",
        help=f"host[:port], default {DEFAULT_STATUS_SERVER} (port {DEFAULT_CLIENT_PORT} when left out); "
        "a four-letter word alone asks the default server",
    )
    status.add_argument("word", nargs="?", help="a four-letter word: srvr (the default), mntr, ruok, conf...")
    status.set_defaults(func=cmd_status)
    dump = sub.add_parser("dump", help="print a transaction log or snapshot file")
    dump.add_argument("path")
    dump.set_defaults(func=cmd_dump)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
