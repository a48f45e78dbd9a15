"""The AdminServer (zoo.cfg: admin.serverPort): Apache's /commands/<name> JSON and a small page.

Routes:
- /commands/<name>: Apache 3.8's command JSON (admin_commands.py), HTTP 200 with "error" set when a
  command cannot answer, as Apache does; /commands lists the commands as Apache's index does;
- / : the page (admin_page.html): who leads, who is in sync and how far behind, a znode browser,
  live session and watch counts. It reads the two JSON routes below every few seconds;
- /zkpy/overview: this server's view of the ensemble for the page;
- /zkpy/znode?path=P: one znode's Stat, ACL, children and data. Data is shown only when the
  znode's ACL lets anyone (world:anyone) read it: the page must not become a way around ACLs.
  Digest ACL entries show the user name, never the password hash.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from typing import Any

from zkpy.ops.admin_commands import COMMANDS, run_command
from zkpy.ops.http import Handler, Request, Response
from zkpy.ops.source import Source
from zkpy.server.fourletter import hex_id

JSON_TYPE = "application/json"
READ = 1  # ZooDefs.Perms.READ
MAX_CHILDREN_SHOWN = 1000
MAX_DATA_SHOWN = 64 * 1024


def _json(value: Any, status: int = 200) -> Response:
    return Response(status, (json.dumps(value, indent=2) + "\n").encode(), JSON_TYPE)


def command_index() -> bytes:
    """Apache's /commands page: a link per command."""
    return "".join(f'<a href="/commands/{c.name}">{c.name}</a>\n<br/>\n' for c in COMMANDS).encode()


def _zxid(value: int) -> str:
    return f"0x{hex_id(value)}"


def _behind(leader_last: int, acked: int | None) -> int | None:
    """Transactions a learner lacks: counters differ within one epoch; across epochs, unknown."""
    if acked is None or acked < 0:
        return None
    if acked >> 32 != leader_last >> 32:
        return None if acked < leader_last else 0
    return max(0, leader_last - acked)


def overview(source: Source) -> dict[str, Any]:
    """Who leads, each member's role and how far behind the leader it is, and the live counts."""
    from zkpy.replication.leader import Leader
    from zkpy.replication.leader_core import SYNCED

    config = source.config
    server = source.current()
    peer = source.peer
    answer: dict[str, Any] = {
        "server_id": config.server_id if peer is not None else None,
        "state": source.state(),
        "serving": server is not None,
        "leader_id": None,
        "last_zxid": None,
        "znode_count": None,
        "sessions": None,
        "watches": None,
        "connections": None,
        "outstanding_requests": None,
        "members": [],
    }
    if server is not None:
        answer.update(
            last_zxid=_zxid(server.tree.last_zxid),
            znode_count=server.tree.node_count(),
            sessions=len(server.sessions.timeouts),
            watches=server.watches.count(),
            connections=len(server.connections),
            outstanding_requests=server.pipeline.outstanding,
        )
    if peer is None:
        return answer
    decided = peer.election.decided
    leader_id = decided.leader if decided is not None and server is not None else None
    answer["leader_id"] = leader_id
    role = peer.role
    learners: dict[int, Any] = {}
    acks: dict[int, int] = {}
    if isinstance(role, Leader):
        learners = {x.sid: x for x in role.core.learners.values() if x.sid >= 0}
        acks = role.core.acks
    leader_last = peer.history.last
    for sid in sorted(config.servers):
        spec = config.servers[sid]
        member: dict[str, Any] = {
            "id": sid,
            "address": f"{spec.host}:{spec.peer_port}",
            "type": spec.role,
            "is_leader": sid == leader_id,
            "is_me": sid == peer.my_id,
            "sync": "unknown",  # only the leader sees every member's progress
            "acked_zxid": None,
            "behind": None,
        }
        if sid == peer.my_id:
            member["sync"] = source.state()
            member["acked_zxid"] = _zxid(peer.tree.last_zxid)
        if isinstance(role, Leader):
            learner = learners.get(sid)
            if sid == peer.my_id:
                member["sync"], member["behind"] = "leader", 0
            elif learner is None:
                member["sync"] = "not connected"
            else:
                acked = acks.get(sid, learner.last_zxid if learner.stage == SYNCED else None)
                member["sync"] = "in sync" if learner.stage == SYNCED else "syncing"
                member["acked_zxid"] = _zxid(acked) if acked is not None and acked >= 0 else None
                member["behind"] = _behind(leader_last, acked)
        answer["members"].append(member)
    return answer


def _acl_entry(perms: int, scheme: str, ident: str) -> dict[str, Any]:
    if scheme == "digest":
        ident = ident.split(":", 1)[0] + ":…"  # the user, never the password hash
    letters = "".join(c for bit, c in zip((1, 2, 4, 8, 16), "rwcda", strict=True) if perms & bit)
    return {"perms": letters, "scheme": scheme, "id": ident}


def znode(source: Source, path: str) -> tuple[int, dict[str, Any]]:
    server = source.current()
    if server is None:
        return 503, {"error": "this server is not serving (electing or syncing)"}
    if not path.startswith("/") or (len(path) > 1 and path.endswith("/")):
        return 400, {"error": f"not a znode path: {path!r}"}
    node = server.tree.get(path)
    if node is None:
        return 404, {"error": f"no znode {path}"}
    stat = node.stat()
    readable = any(
        scheme == "world" and ident == "anyone" and perms & READ for perms, scheme, ident in node.acl
    )
    data: dict[str, Any] = {"shown": readable, "length": stat.dataLength}
    if readable and node.data is not None:
        raw = node.data[:MAX_DATA_SHOWN]
        data["truncated"] = len(node.data) > MAX_DATA_SHOWN
        try:
            data["text"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            data["base64"] = base64.b64encode(raw).decode("ascii")
    children = sorted(node.children)
    return 200, {
        "path": path,
        "stat": {
            "czxid": _zxid(stat.czxid),
            "mzxid": _zxid(stat.mzxid),
            "pzxid": _zxid(stat.pzxid),
            "ctime": stat.ctime,
            "mtime": stat.mtime,
            "version": stat.version,
            "cversion": stat.cversion,
            "aversion": stat.aversion,
            "ephemeralOwner": f"0x{hex_id(stat.ephemeralOwner)}",
            "dataLength": stat.dataLength,
            "numChildren": stat.numChildren,
        },
        "acl": [_acl_entry(*entry) for entry in node.acl],
        "data": data,
        "children": children[:MAX_CHILDREN_SHOWN],
        "children_truncated": len(children) > MAX_CHILDREN_SHOWN,
    }


def page() -> bytes:
    return resources.files("zkpy.ops").joinpath("admin_page.html").read_bytes()


def handler(source: Source) -> Handler:
    def handle(request: Request) -> Response:
        path = request.path
        if path in ("/", "/index.html"):
            return Response(200, page(), "text/html; charset=utf-8")
        if path.rstrip("/") == "/commands":
            return Response(200, command_index(), "text/html; charset=utf-8")
        if path.startswith("/commands/"):
            return _json(run_command(source, path.removeprefix("/commands/")))
        if path == "/zkpy/overview":
            return _json(overview(source))
        if path == "/zkpy/znode":
            status, body = znode(source, request.arg("path", "/"))
            return _json(body, status)
        return Response(404, b"not found: see / or /commands\n")

    return handle
