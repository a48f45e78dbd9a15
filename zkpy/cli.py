"""The `zkpy` command: server, status, dump, shell, ensemble."""

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


def cmd_status(args: argparse.Namespace) -> int:
    from zkpy.ops.status import UsageError, status_command

    try:
        return status_command(args.server, args.word, args.json, sys.stdout)
    except UsageError as e:
        return _fail(str(e))


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


def _version() -> str:
    from zkpy import __version__

    return f"zkpy {__version__} (speaks the protocol of Apache ZooKeeper 3.8, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zkpy", description="A ZooKeeper-compatible coordination service.")
    parser.add_argument("--version", action="version", version=_version())
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
    status = sub.add_parser(
        "status",
        help="what every server of an ensemble is doing (a table), or one four-letter word's answer",
        description="Without a word: one table from every server's srvr and mntr, and exit status 1 "
        "when no server leads (no quorum). With a word: each server's answer to it.",
    )
    status.add_argument(
        "server",
        nargs="?",
        metavar="HOSTS",
        help="a connect string as clients take it, host[:port][,host[:port]...] (default 127.0.0.1:2181; "
        "port 2181 when left out); a four-letter word alone asks the default server",
    )
    status.add_argument("word", nargs="?", help="a four-letter word: srvr, mntr, ruok, conf, cons, envi...")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(func=cmd_status)
    dump = sub.add_parser(
        "dump",
        help="print a transaction log or snapshot file",
        description="Print a zkpy transaction log or snapshot file (from dataDir/zkpy-N) for a person, "
        "without changing it; a damaged file is shown up to where it stops being valid, and why.",
    )
    dump.add_argument("path", help="the file: a log (log.*) or a snapshot (snapshot.*) under a dataDir")
    dump.set_defaults(func=cmd_dump)
    from zkpy.ops import ensemble
    from zkpy.ops import shell as zkshell

    shell = sub.add_parser("shell", help="an interactive ZooKeeper shell in the manner of zkCli.sh")
    zkshell.add_arguments(shell)
    shell.set_defaults(func=zkshell.run)
    ensemble.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
