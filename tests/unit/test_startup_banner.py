"""The block a server logs once at startup names where it listens, where its data is and how to stop it."""

from __future__ import annotations

import time

from zkpy.testing.procs import running_server


def test_banner_names_the_address_data_dir_and_how_to_stop() -> None:
    with running_server("zkpy", {"znode.container.checkIntervalMs": "500"}) as server:
        deadline = time.monotonic() + 10
        log = ""
        while "stop:" not in log and time.monotonic() < deadline:  # the banner follows the first ruok
            time.sleep(0.05)
            log = server.log_path.read_text()
    assert log.count("(standalone, pid ") == 1, log
    assert f"clients:    127.0.0.1:{server.port}" in log
    assert f"dataDir:    {server.data_dir.resolve()} " in log
    assert "TTL nodes:  on (extendedTypesEnabled; Apache ZooKeeper leaves them off" in log
    assert "containers: on, swept every 500 ms" in log
    assert "stop:       Ctrl-C, or kill -TERM " in log
