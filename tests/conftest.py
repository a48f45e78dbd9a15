"""For every test: one marked `apache` runs against Apache ZooKeeper 3.8, which it gets from
zkpy.testing.apache (Debian's package, installed with apt-get on first use); where that cannot be
had, the test is skipped with the reason rather than failing half-way."""

from __future__ import annotations

import pytest

from zkpy.testing import apache


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("apache") is not None:
        apache.require()
