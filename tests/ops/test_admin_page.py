"""The admin page in a real browser (headless Chromium): what a person sees of a standalone
server, a znode's data, Stat and ACL, and that data an ACL hides stays hidden. A screenshot is
kept under the test's tmp dir (its path is printed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl
from opshelp import browse, chromium, texts_by_id

from zkpy.testing.procs import ServerProcess, free_port, running_server

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def admin_server() -> Iterator[tuple[ServerProcess, str]]:
    chromium()  # skip before starting anything when there is no browser
    port = free_port()
    settings = {
        "admin.enableServer": "true",
        "admin.serverPort": str(port),
        "admin.serverAddress": "127.0.0.1",
    }
    with running_server("zkpy", settings) as server:
        zk = KazooClient(hosts=server.hosts)
        zk.start()
        try:
            zk.create("/app/config", b"hello from zkpy", makepath=True)
            zk.create("/app/secret", b"do not show", acl=[make_digest_acl("admin", "pw", all=True)])
            zk.get("/app/config", watch=lambda event: None)
            yield server, f"http://127.0.0.1:{port}/"
        finally:
            zk.stop()
            zk.close()


def test_page_shows_the_server_and_a_znode(admin_server: tuple[ServerProcess, str], tmp_path: Path) -> None:
    """fails before the admin page: nothing answers on admin.serverPort, Chromium shows an error page."""
    _, url = admin_server
    shot = tmp_path / "admin-page.png"
    seen = texts_by_id(browse(url + "#/app/config", tmp_path / "profile", screenshot=shot))
    print(f"admin page screenshot: {shot}")
    assert seen["state"] == "standalone"
    assert seen["leader"] == "standalone"
    assert seen["sessions"] == "1"
    assert seen["watches"] == "1"
    assert seen["znode-path"] == "/app/config"
    assert seen["znode-data"] == "hello from zkpy"
    assert "dataLength = 15" in seen["znode-stat"] and "version = 0" in seen["znode-stat"]
    assert seen["znode-acl"] == "world:anyone rwcda"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_browser_lists_children_and_hides_what_the_acl_hides(
    admin_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    _, url = admin_server
    dom = browse(url + "#/app", tmp_path / "profile")
    children = dom[dom.index('id="children"') :].split("</div>", 1)[0]
    assert re.findall(r'<a href="(#[^"]*)">([^<]*)</a>', children) == [
        ("#/", ".."), ("#/app/config", "config"), ("#/app/secret", "secret"),
    ]  # fmt: skip
    secret = texts_by_id(browse(url + "#/app/secret", tmp_path / "profile2"))
    assert "not shown" in secret["znode-data"] and "do not show" not in secret["znode-data"]
    assert secret["znode-acl"] == "digest:admin:… rwcda"  # the user, not the password hash
