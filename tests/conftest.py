"""For every test: one marked `apache` runs against Apache ZooKeeper 3.8, which it gets from
zkpy.testing.apache (Debian's package, installed with apt-get on first use); where that cannot be
had, the test is skipped with the reason rather than failing half-way."""

from __future__ import annotations

import contextlib

import pytest

from zkpy.testing import apache


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Install once before any test runs, outside every test's timeout (the first install
    downloads for minutes); a failure is remembered and each apache test skips with it."""
    if any(item.get_closest_marker("apache") for item in items):
        with contextlib.suppress(apache.ApacheUnavailable):
            apache.ensure_installed()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("apache") is not None:
        apache.require()
