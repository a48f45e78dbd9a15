"""The AdminServer of a zkpy ensemble: Apache's leader, voting_view, zabstate, server_stats and
configuration with Apache's fields (recorded from a 3-server Apache 3.8 ensemble in
apache_ensemble_admin.json), and the page's view of who leads and who is in sync."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from opshelp import browse, chromium, ensemble_with_ports, get_json, http_get, shape, texts_by_id

from zkpy.testing.procs import ServerProcess

pytestmark = pytest.mark.timeout(240)

APACHE = json.loads(Path(__file__).with_name("apache_ensemble_admin.json").read_text())
RECORDED = ["leader", "voting_view", "zabstate", "server_stats", "configuration"]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[ServerProcess, str]]]:
    """Three zkpy servers, each with an AdminServer on its own port: [(server, base URL)]."""
    lines = "admin.enableServer=true\nadmin.serverPort={}\nadmin.serverAddress=127.0.0.1\n".format
    with ensemble_with_ports(tmp_path_factory.mktemp("admin"), lines) as members:
        yield [(server, f"http://127.0.0.1:{port}") for server, port in members]


def by_role(ensemble: list[tuple[ServerProcess, str]]) -> dict[str, list[tuple[ServerProcess, str]]]:
    roles: dict[str, list[tuple[ServerProcess, str]]] = {}
    for server, url in ensemble:
        roles.setdefault(str(server.mode()), []).append((server, url))
    return roles


@pytest.mark.parametrize("command", RECORDED)
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_ensemble_commands_have_apaches_fields(
    ensemble: list[tuple[ServerProcess, str]], command: str, role: str
) -> None:
    """fails before the AdminServer: nothing listens on admin.serverPort."""
    _, url = by_role(ensemble)[role][0]
    answer = get_json(f"{url}/commands/{command}")
    assert shape(answer) == shape(APACHE[role][command]), f"apache: {APACHE[role][command]}\nzkpy: {answer}"


def test_every_member_names_the_same_leader(ensemble: list[tuple[ServerProcess, str]]) -> None:
    roles = by_role(ensemble)
    leader, leader_url = roles["leader"][0]
    leader_id = int((leader.data_dir / "myid").read_text())
    for server, url in ensemble:
        answer = get_json(f"{url}/commands/leader")
        assert (answer["leader_id"], answer["is_leader"]) == (leader_id, server is leader)
        view = get_json(f"{url}/commands/voting_view")["current_config"]
        assert sorted(view) == ["1", "2", "3"]
        assert view[str(leader_id)]["learner_type"] == "participant"
    zab = get_json(f"{leader_url}/commands/zabstate")
    assert (zab["myid"], zab["is_leader"], zab["zabstate"]) == (leader_id, True, "broadcast")


def test_the_leaders_overview_shows_each_follower_in_sync(ensemble: list[tuple[ServerProcess, str]]) -> None:
    """What the page shows: the leader, and each follower in sync and 0 transactions behind once
    it has acknowledged the last write."""
    roles = by_role(ensemble)
    leader, leader_url = roles["leader"][0]
    zk = KazooClient(hosts=leader.hosts)
    zk.start()
    try:
        for i in range(3):
            zk.create(f"/o{i}", b"v")
        deadline = time.monotonic() + 10
        while True:
            overview: dict[str, Any] = get_json(f"{leader_url}/zkpy/overview")
            followers = [m for m in overview["members"] if not m["is_leader"]]
            if all(m["behind"] == 0 for m in followers) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert overview["state"] == "leader"
        assert [m["sync"] for m in followers] == ["in sync", "in sync"]
        assert [m["behind"] for m in followers] == [0, 0]
        assert overview["sessions"] == 1 and overview["znode_count"] >= 7
        status, body = http_get(f"{leader_url}/zkpy/znode?path=/o1")
        assert status == 200 and json.loads(body)["data"]["text"] == "v"
    finally:
        zk.stop()
        zk.close()


def test_page_in_chromium_shows_the_leader_and_who_is_in_sync(
    ensemble: list[tuple[ServerProcess, str]], tmp_path: Path
) -> None:
    """What a person sees on the leader's page and on a follower's: the same leader; on the
    leader's, both followers in sync, 0 transactions behind."""
    chromium()
    roles = by_role(ensemble)
    leader, leader_url = roles["leader"][0]
    leader_id = (leader.data_dir / "myid").read_text().strip()
    deadline = time.monotonic() + 10
    while any(m["behind"] != 0 for m in get_json(f"{leader_url}/zkpy/overview")["members"]):
        assert time.monotonic() < deadline, "followers never caught up"
        time.sleep(0.1)
    shot = tmp_path / "admin-page-leader.png"
    seen = texts_by_id(browse(f"{leader_url}/", tmp_path / "profile", screenshot=shot))
    print(f"leader's admin page screenshot: {shot}")
    assert seen["leader"] == leader_id
    assert seen["state"] == "leader"
    for server, _ in roles["follower"]:
        sid = (server.data_dir / "myid").read_text().strip()
        assert "in sync" in seen[f"member-{sid}"] and "0 txns" in seen[f"member-{sid}"]
    _, follower_url = roles["follower"][0]
    seen = texts_by_id(browse(f"{follower_url}/", tmp_path / "profile2"))
    assert (seen["leader"], seen["state"]) == (leader_id, "follower")
