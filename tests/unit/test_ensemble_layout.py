"""`zkpy ensemble --http`: each member gets its own metrics and AdminServer ports on 127.0.0.1, in
the zoo.cfg the server reads (the ensemble itself is run by tests/ops/test_ensemble_command.py)."""

from __future__ import annotations

from pathlib import Path

from zkpy.ops.layout import member_home, members_from_base, write_member
from zkpy.server.config import load_config


def test_http_members_get_their_own_metrics_and_admin_ports(tmp_path: Path) -> None:
    members = members_from_base(3, 0, 2181, http=True)
    assert [(m.metrics_port, m.admin_port) for m in members] == [(7000, 8080), (7001, 8081), (7002, 8082)]
    assert members[1].ports["metrics"] == 7001 and members[1].ports["admin"] == 8081  # checked before start
    write_member(tmp_path, members[1], members)
    config = load_config(member_home(tmp_path, members[1]) / "zoo.cfg")
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 7001)
    assert config.admin_server_wanted
    assert (config.admin_server_address, config.admin_server_port) == ("127.0.0.1", 8081)


def test_without_http_no_member_serves_http(tmp_path: Path) -> None:
    members = members_from_base(3, 0, 2181)
    assert set(members[0].ports) == {"client", "quorum", "election"}
    write_member(tmp_path, members[0], members)
    config = load_config(member_home(tmp_path, members[0]) / "zoo.cfg")
    assert config.metrics_port is None and not config.admin_server_wanted
