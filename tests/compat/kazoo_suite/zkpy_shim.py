"""pytest plugin: run kazoo's own test suite against another server.

kazoo's harness writes a zoo.cfg per server and starts Java's QuorumPeerMain.
This plugin swaps that one process start for SERVER_CMD + the zoo.cfg path,
so the same suite, untouched, runs against any server that reads zoo.cfg.
SERVER_CMD comes from $KAZOO_SUITE_SERVER_CMD (default: "zkpy server").

The harness also passes some settings as Java system properties (-Dkey=value):
readonlymode.enabled and zookeeper.DigestAuthenticationProvider.superDigest.
Those that ZooKeeper itself reads are appended to the zoo.cfg as `key=value`
lines under their full property names, so a server that reads zoo.cfg sees
them too. JVM and logging properties are dropped.
"""
import os
import shlex
import subprocess

import kazoo.testing.common as common

_real_popen = subprocess.Popen
SERVER_CMD = shlex.split(os.environ.get("KAZOO_SUITE_SERVER_CMD", "zkpy server"))
_JVM_ONLY = ("java.", "log4j.", "file.", "zookeeper.log.dir", "zookeeper.root.logger")


def _server_properties(args):
    for a in args:
        if a.startswith("-D") and "=" in a:
            key, value = a[2:].split("=", 1)
            if not key.startswith(_JVM_ONLY):
                yield key, value


class _Popen(_real_popen):
    def __init__(self, args, *rest, **kw):
        if args and args[0] == "java" and SERVER_CMD[0] != "java":
            config = args[-1]
            props = list(_server_properties(args))
            if props:
                with open(config, "a") as f:
                    f.write("".join(f"{k}={v}\n" for k, v in props))
            workdir = os.path.dirname(config)
            log = open(os.path.join(workdir, "server.log"), "ab")  # noqa: SIM115 - the server's for its life
            args = [*SERVER_CMD, config]
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", subprocess.STDOUT)
        super().__init__(args, *rest, **kw)


common.subprocess.Popen = _Popen


def _get_logs(self, num_lines=100):
    path = os.path.join(self.working_path, "server.log")
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-num_lines:]
    except OSError:
        return []


common.ManagedZooKeeper.get_logs = _get_logs
