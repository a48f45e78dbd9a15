"""Apache ZooKeeper 3.8, the reference zkpy is compared with: Debian's `zookeeper` package, found
or installed with apt-get, and the commands that run its server and its zkCli shell.

The compatibility tests ask `unavailable_reason()` / `require()` first, so a machine without the
package and without a way to install it skips them with the reason, and one with apt-get runs them.

    python -m zkpy.testing.apache path/to/zoo.cfg          # Apache's server, in the foreground
    python -m zkpy.testing.apache --classpath              # its Java classpath (kazoo's harness wants it)
    python -m zkpy.testing.apache --shell HOST:PORT [CMD]  # Apache's zkCli shell against any server
    python -m zkpy.testing.apache --ensemble N DIR [BASE]  # N servers under DIR (zoo.cfg + myid, client
                                                           #  ports BASE.., default 2181); Ctrl-C stops all
    python -m zkpy.testing.apache --install                # install the package now (apt-get), or say why not

APACHE_ZK_ADMIN=1 adds Debian's Jetty 9 and Jackson jars to the classpath, so Apache's AdminServer
runs (set admin.serverPort in the zoo.cfg); without it the AdminServer stays off whatever the zoo.cfg
says. scripts/apache-zk runs this module from a checkout without installing zkpy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

JAVA_DIR = Path("/usr/share/java")
ZOOKEEPER_JAR = JAVA_DIR / "zookeeper.jar"
_BASE_JARS = ("zookeeper.jar", "zookeeper-jute.jar", "slf4j-simple.jar")
_ADMIN_JARS = (
    "jetty9-server", "jetty9-servlet", "jetty9-http", "jetty9-io", "jetty9-util", "jetty9-security",
    "jackson-annotations", "jackson-core", "jackson-databind", "servlet-api-4.0.1",
)  # fmt: skip
SERVER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
SHELL_MAIN = "org.apache.zookeeper.ZooKeeperMain"
NOT_AVAILABLE_EXIT = 3  # the CLI's exit status when the reference cannot be had on this machine


class ApacheUnavailable(RuntimeError):
    """Apache ZooKeeper is not installed and cannot be installed here; str() says why."""


def _installed() -> bool:
    return ZOOKEEPER_JAR.exists()


def _apt_prefix() -> list[str] | None:
    """How to run apt-get as root here: directly, through passwordless sudo, or not at all."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def unavailable_reason() -> str | None:
    """None when Apache ZooKeeper runs here (installed, or installable with apt-get), else why not."""
    if _installed():
        return None if shutil.which("java") else f"{ZOOKEEPER_JAR} is there but there is no `java` on PATH"
    if shutil.which("apt-get") is None:
        return (
            "Apache ZooKeeper 3.8 (the reference) is not installed and there is no apt-get to install "
            "Debian's `zookeeper` package with: install it (and a Java runtime) by hand"
        )
    if _apt_prefix() is None:
        return "Apache ZooKeeper 3.8 is not installed: `apt-get install zookeeper` needs root or passwordless sudo"
    return None


_install_lock = threading.Lock()
_install_error: str | None = None


def ensure_installed() -> None:
    """Install Debian's zookeeper package (with a Java runtime) on first use; raises ApacheUnavailable.

    Call it before timing anything: the first install downloads for minutes.
    """
    global _install_error
    with _install_lock:
        if _installed() and shutil.which("java"):
            return
        if _install_error is None:
            _install_error = unavailable_reason() or _apt_install()
        if _install_error:
            raise ApacheUnavailable(_install_error)


def _apt_install() -> str | None:
    prefix = _apt_prefix()
    assert prefix is not None
    print("installing Debian's zookeeper package (once)...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "zookeeper"]):
        done = subprocess.run([*prefix, *step], capture_output=True, text=True, env=env)
        if done.returncode != 0 and step[1] == "install":
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            return f"`apt-get install zookeeper` failed ({done.returncode}): {tail}"
    if not _installed() or not shutil.which("java"):
        return f"`apt-get install zookeeper` ran but {ZOOKEEPER_JAR} or java is still missing"
    return None


def require() -> None:
    """In a test: skip it with the reason when Apache ZooKeeper cannot run here."""
    import pytest

    try:
        ensure_installed()
    except ApacheUnavailable as e:
        pytest.skip(f"needs Apache ZooKeeper 3.8: {e}")


def classpath(admin: bool | None = None) -> str:
    """The Java classpath of Debian's package; `admin` (default: APACHE_ZK_ADMIN=1) adds the
    AdminServer's Jetty and Jackson jars."""
    jars = [JAVA_DIR / name for name in _BASE_JARS]
    jars += [
        j
        for pattern in ("netty-*.jar", "commons-cli.jar", "jline.jar")
        for j in sorted(JAVA_DIR.glob(pattern))
        if not any(f"{d}.Final" in j.name for d in "0123456789")  # versioned duplicates of the links
    ]
    if admin if admin is not None else os.environ.get("APACHE_ZK_ADMIN") == "1":
        jars += [p for name in _ADMIN_JARS if (p := JAVA_DIR / f"{name}.jar").exists()]
    return ":".join(str(j) for j in jars)


def server_command(config: str | os.PathLike[str]) -> list[str]:
    return ["java", "-cp", classpath(), SERVER_MAIN, str(config)]


def shell_command(server: str, *args: str) -> list[str]:
    return ["java", "-cp", classpath(), SHELL_MAIN, "-server", server, *args]


def run_ensemble(n: int, root: Path, base_port: int) -> int:
    """N Apache servers in the foreground (tickTime 500, as zkpy ensemble); Ctrl-C stops them all."""
    from zkpy.ops.layout import connect_string, member_home, members_from_base, write_member

    members = members_from_base(n, 0, base_port)
    procs = []
    for member in members:
        write_member(root, member, members, {"tickTime": "500"})
        home = member_home(root, member)
        with open(home / "server.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    server_command(home / "zoo.cfg"), stdout=log, stderr=subprocess.STDOUT, cwd=home
                )
            )
    print(f"Apache ZooKeeper ensemble: {connect_string(members)} (logs in {root}/s*/server.log)", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's `cmd &` starts it ignored
        signal.signal(signum, signal.default_int_handler)
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print((__doc__ or "").split("\n\n")[2])
        return 0 if args else 2
    try:
        ensure_installed()
    except ApacheUnavailable as e:
        print(f"apache-zk: {e}", file=sys.stderr)
        return NOT_AVAILABLE_EXIT
    match args:
        case ["--install"]:
            return 0
        case ["--classpath"]:
            print(classpath())
            return 0
        case ["--shell", server, *rest]:
            os.execvp("java", shell_command(server, *rest))
        case ["--ensemble", n, root, *base] if n.isdigit() and len(base) <= 1:
            return run_ensemble(int(n), Path(root).resolve(), int(base[0]) if base else 2181)
        case [config] if not config.startswith("-"):
            os.execvp("java", server_command(config))
    print(f"apache-zk: cannot make sense of {' '.join(args)!r}; --help says what it takes", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
