"""One zkpy server for the operator tools' tests (the shell), started once and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zkpy.testing.procs import ServerProcess, running_server


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    with running_server("zkpy", {"extendedTypesEnabled": "true"}) as s:
        yield s
