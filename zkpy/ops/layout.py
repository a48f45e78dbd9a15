"""Where the members of a local ensemble live and how each is configured: zoo.cfg and myid.

One writer for everything that starts several servers on one machine: `zkpy ensemble`, the test
harness (zkpy.testing.procs) and the ensemble tests. Each member N has a home directory `sN` with
its zoo.cfg, its dataDir `sN/data` (holding myid) and its log `sN/server.log`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
# The words an operator's tools use to see what a server does, and nothing that costs the server much
# (wchc/wchp/dump walk every watch or session) or changes it (crst/srst reset its statistics).
LOCAL_FOUR_LETTER_WORDS = "ruok,srvr,stat,mntr,conf,cons,envi,isro,wchs,dirs"
# ZooKeeper's documentation puts member i's quorum and election ports at 2880+i and 3880+i for client
# port 2180+i: the same offsets from any base port.
QUORUM_PORT_OFFSET = 700
ELECTION_PORT_OFFSET = 1700
# With --http: Apache's default metrics (7000) and AdminServer (8080) ports for member 1 at the
# default base port, the next ones for the other members.
METRICS_PORT_OFFSET = 7000 - 2181
ADMIN_PORT_OFFSET = 8080 - 2181


@dataclass(frozen=True, slots=True)
class Member:
    """One server of the ensemble: its id (the N of server.N and myid) and its three ports."""

    sid: int
    client_port: int
    quorum_port: int
    election_port: int
    observer: bool = False
    metrics_port: int = 0  # 0: no Prometheus endpoint
    admin_port: int = 0  # 0: no AdminServer

    @property
    def server_line(self) -> str:
        return f"{HOST}:{self.quorum_port}:{self.election_port}" + (":observer" if self.observer else "")

    @property
    def ports(self) -> dict[str, int]:
        ports = {"client": self.client_port, "quorum": self.quorum_port, "election": self.election_port}
        if self.metrics_port:
            ports["metrics"] = self.metrics_port
        if self.admin_port:
            ports["admin"] = self.admin_port
        return ports


def members_from_base(voters: int, observers: int, base_port: int, http: bool = False) -> list[Member]:
    """Members 1..voters+observers on fixed ports: client base+i-1, quorum and election at the
    documented offsets (2181 -> 2881, 3881), so a second run of the same command finds the same
    servers where it left them; with `http`, metrics and AdminServer ports too (7000, 8080 for
    member 1 at base 2181)."""
    return [
        Member(
            i,
            base_port + i - 1,
            base_port + QUORUM_PORT_OFFSET + i - 1,
            base_port + ELECTION_PORT_OFFSET + i - 1,
            observer=i > voters,
            metrics_port=base_port + METRICS_PORT_OFFSET + i - 1 if http else 0,
            admin_port=base_port + ADMIN_PORT_OFFSET + i - 1 if http else 0,
        )
        for i in range(1, voters + observers + 1)
    ]


def members_on_free_ports(voters: int, observers: int, free_port: Callable[[], int]) -> list[Member]:
    """Members on ports picked by `free_port` (tests, which must not collide with one another)."""
    return [
        Member(i, free_port(), free_port(), free_port(), observer=i > voters)
        for i in range(1, voters + observers + 1)
    ]


def write_config(path: Path, port: int, data_dir: Path, extra: dict[str, str] | None = None) -> None:
    """A zoo.cfg for a server on 127.0.0.1:`port`; `extra` adds or overrides settings.

    The defaults suit tests (every four-letter word, no connection limit, no AdminServer).
    """
    settings = {
        "tickTime": "2000",
        "dataDir": str(data_dir),
        "clientPort": str(port),
        "clientPortAddress": HOST,
        "maxClientCnxns": "0",
        "4lw.commands.whitelist": "*",
        "admin.enableServer": "false",
        **(extra or {}),
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))


def member_home(root: Path, member: Member) -> Path:
    return root / f"s{member.sid}"


def write_member(
    root: Path, member: Member, members: list[Member], extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Write `member`'s zoo.cfg and myid under `root`/sN (creating it, keeping any data there);
    returns the settings written beyond write_config's defaults."""
    home = member_home(root, member)
    data_dir = home / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "myid").write_text(f"{member.sid}\n")
    settings = {
        "initLimit": "10",
        "syncLimit": "5",
        **{f"server.{m.sid}": m.server_line for m in members},
        **(extra or {}),
    }
    if member.observer:
        settings["peerType"] = "observer"
    if member.metrics_port:
        settings["metricsProvider.httpHost"] = HOST
        settings["metricsProvider.httpPort"] = str(member.metrics_port)
    if member.admin_port:
        settings["admin.enableServer"] = "true"
        settings["admin.serverAddress"] = HOST
        settings["admin.serverPort"] = str(member.admin_port)
    write_config(home / "zoo.cfg", member.client_port, data_dir, settings)
    return settings


def connect_string(members: list[Member]) -> str:
    """host:port,... for every member, as clients take it."""
    return ",".join(f"{HOST}:{m.client_port}" for m in members)
