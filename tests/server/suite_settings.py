"""Settings shared by the server suite's fixtures and tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import os

SERVER_KIND = os.environ.get("ZKPY_TEST_SERVER", "zkpy")
# Password "test": kazoo's own harness uses the same super digest.
SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
SUPER_AUTH = "super:test"
# How often containers and TTL nodes are swept, and how long a test waits for a sweep at most.
CONTAINER_CHECK_MS = int(os.environ.get("ZKPY_TEST_CONTAINER_CHECK_MS", "300"))
CONTAINER_WAIT_S = float(os.environ.get("ZKPY_TEST_CONTAINER_WAIT", "15"))
CLIENT_TIMEOUT = 10.0
