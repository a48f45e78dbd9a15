"""Silent packet drops on loopback by TCP port, with nftables: faults that send no RST.

A TCP proxy that cuts a link resets or closes connections, and a SIGSTOP freezes a whole
process; neither looks like a switch that silently loses packets, where both ends keep their
connections, retransmit into the void and learn of the partition only from their own timeouts
(heartbeats, syncLimit, a client's read timeout). `LoopbackDrops` makes such drops on 127.0.0.1:
every rule lives in one nftables table of its own (`inet zkpy_jepsen_<pid>` unless named), which
matches only the ports it is given, so other users of loopback are untouched. The table is
deleted by `close()`, which also runs at interpreter exit (atexit); nothing else is touched.

A drop is directional at the packet level: `drop(dports={p})` loses every packet sent *to* port
p on loopback, `drop(sports={p})` every packet sent *from* it. On a connection a client made to
a listening port p, dport p is the client-to-server direction and sport p the other; dropping
one of them is a one-way partition (the data of the other direction still arrives, only its
acknowledgements are lost, so its sender retransmits). Overlapping drops of one port are
counted: the port is let through again when the last of them is undone.

Needs the `nft` binary (Debian's `nftables`) and root (CAP_NET_ADMIN); `unavailable()` says why
not when it cannot work, so callers and tests can skip cleanly.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable

__all__ = ["LoopbackDrops", "unavailable"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,60}$")


def _nft(script: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nft", *args] if script is None else ["nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=10,
    )


def unavailable() -> str | None:
    """Why silent drops cannot be made here (None when they can)."""
    if shutil.which("nft") is None:
        return "no nft binary (apt-get install nftables)"
    if os.geteuid() != 0:
        return "not root: nftables needs CAP_NET_ADMIN"
    probe = _nft(None, "list", "tables")
    if probe.returncode != 0:
        return f"nft does not work here: {probe.stderr.strip() or probe.stdout.strip()}"
    return None


class LoopbackDrops:
    """One nftables table that silently drops loopback TCP packets to or from chosen ports."""

    def __init__(self, name: str | None = None) -> None:
        self.table = name or f"zkpy_jepsen_{os.getpid()}"
        if not _NAME.match(self.table):
            raise ValueError(f"bad table name {self.table!r}")
        self.counts: Counter[tuple[str, int]] = Counter()  # ("dports"|"sports", port) -> active drops
        self.opened = False

    def open(self) -> LoopbackDrops:
        """Create the table (replacing a leftover one of the same name, e.g. from a killed run
        with the same pid) and arrange its deletion at exit."""
        self._delete_table()
        script = f"""
table inet {self.table} {{
    set dports {{ type inet_service; }}
    set sports {{ type inet_service; }}
    chain out {{
        type filter hook output priority 0; policy accept;
        oifname "lo" tcp dport @dports counter drop
        oifname "lo" tcp sport @sports counter drop
    }}
}}
"""
        done = _nft(script)
        if done.returncode != 0:
            raise RuntimeError(f"nft could not create table {self.table}: {done.stderr.strip()}")
        self.opened = True
        atexit.register(self.close)
        return self

    def __enter__(self) -> LoopbackDrops:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop(self, *, dports: Iterable[int] = (), sports: Iterable[int] = ()) -> list[tuple[str, int]]:
        """Start dropping; returns the token that `undrop` takes."""
        token = [("dports", int(p)) for p in dports] + [("sports", int(p)) for p in sports]
        new = [key for key in token if self.counts[key] == 0]
        for key in token:
            self.counts[key] += 1
        self._elements("add", new)
        return token

    def undrop(self, token: list[tuple[str, int]]) -> None:
        gone = []
        for key in token:
            if self.counts[key] > 0:
                self.counts[key] -= 1
                if self.counts[key] == 0:
                    gone.append(key)
                    del self.counts[key]
        self._elements("delete", gone)

    def clear(self) -> None:
        """Let everything through again (the table stays)."""
        self._elements("delete", list(self.counts))
        self.counts.clear()

    def dropped_packets(self) -> int:
        """Packets the table's rules dropped so far."""
        if not self.opened:
            return 0
        listing = _nft(None, "list", "chain", "inet", self.table, "out")
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing.stdout))

    def close(self) -> None:
        """Delete the table (idempotent)."""
        if self.opened:
            self.opened = False
            self.counts.clear()
            self._delete_table()
            atexit.unregister(self.close)

    def _delete_table(self) -> None:
        listed = _nft(None, "list", "tables")
        if f"table inet {self.table}\n" in listed.stdout + "\n":
            _nft(None, "delete", "table", "inet", self.table)

    def _elements(self, verb: str, keys: list[tuple[str, int]]) -> None:
        if not keys or not self.opened:
            return
        lines = []
        for set_name in ("dports", "sports"):
            ports = sorted({p for s, p in keys if s == set_name})
            if ports:
                lines.append(f"{verb} element inet {self.table} {set_name} {{ {', '.join(map(str, ports))} }}")
        done = _nft("\n".join(lines) + "\n")
        if done.returncode != 0:
            raise RuntimeError(f"nft {verb} element failed: {done.stderr.strip()}")
