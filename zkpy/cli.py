"""The `zkpy` command: server, status, dump."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence


def _fail(message: str) -> int:
    print(f"zkpy: error: {message}", file=sys.stderr)
    return 2


def cmd_server(args: argparse.Namespace) -> int:
    from zkpy.server.config import ConfigError, load_config
    from zkpy.server.run import run_server
    from zkpy.server.tls import TlsConfigError
    from zkpy.storage.errors import StorageError
    from zkpy.tree.serialize import SnapshotFormatError

    try:
        config = load_config(args.config)
    except ConfigError as e:
        return _fail(str(e))
    if len(config.servers) > 1:
        # Running each listed server standalone would give clients several diverging trees.
        return _fail(
            f"{args.config} lists {len(config.servers)} servers (server.N lines), but zkpy runs "
            "standalone only for now: ensembles are not implemented yet"
        )
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for warning in config.warnings:
        logging.getLogger("zkpy.config").warning("%s", warning)
    try:
        run_server(config)
    except TlsConfigError as e:
        return _fail(str(e))
    except StorageError as e:
        return _fail(f"cannot recover the data in {config.data_dir}: {e}")
    except SnapshotFormatError as e:
        return _fail(f"cannot load the snapshot in {config.data_dir}: {e}")
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return _fail(
                f"client port {config.client_port} on {config.client_port_address} is already in use"
            )
        return _fail(f"{e.strerror or e} ({getattr(e, 'filename', None) or 'server'})")
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from zkpy.testing.procs import four_letter

    host, _, port = args.server.rpartition(":")
    try:
        sys.stdout.write(four_letter(host or "127.0.0.1", int(port), args.word))
    except (OSError, ValueError) as e:
        return _fail(f"cannot reach {args.server}: {e}")
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
    server.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    server.set_defaults(func=cmd_server)
    status = sub.add_parser("status", help="ask a server a four-letter word (default srvr)")
    status.add_argument("server", nargs="?", default="127.0.0.1:2181", help="host:port")
    status.add_argument("word", nargs="?", default="srvr")
    status.set_defaults(func=cmd_status)
    dump = sub.add_parser("dump", help="print a transaction log or snapshot file")
    dump.add_argument("path")
    dump.set_defaults(func=cmd_dump)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
