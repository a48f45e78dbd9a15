"""The README's client example runs as written, and examples/master_worker.py survives a killed master."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

import zkpy.client
from zkpy.testing.procs import running_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "master_worker.py"
README_ADDRESS = "127.0.0.1:2181"


def readme_client_example() -> str:
    """The first ```python block of the README's "Client library" section, exactly as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Client library\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
    assert blocks, "no python block in the README's Client library section"
    return str(blocks[0])


async def test_the_readme_client_example_runs_as_written_against_a_fresh_server(tmp_path: Path) -> None:
    code = readme_client_example()
    # The only change: the README's address becomes this test server's (a free port, not 2181).
    assert code.count(README_ADDRESS) == 1, code
    with running_server("zkpy") as server:
        script = tmp_path / "demo.py"
        script.write_text(code.replace(README_ADDRESS, server.hosts))
        result = await trio.run_process(
            [sys.executable, str(script)], capture_stdout=True, capture_stderr=True, check=False
        )
        out, err = result.stdout.decode(), result.stderr.decode()
        assert result.returncode == 0, out + err
        assert "created /jobs/job-0000000000" in out and "held the lock" in out, out
        async with zkpy.client.connect(server.hosts) as zk:  # the chroot was made by makepath
            assert await zk.exists("/app/jobs/job-0000000000") is not None
            assert (await zk.get("/app/config"))[0] == b"v2"


async def test_master_worker_demo_survives_the_master_being_killed(hosts: str) -> None:
    result = await trio.run_process(
        [sys.executable, str(EXAMPLE), "demo", "--hosts", hosts], capture_stdout=True, check=False
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "new master" in out and "all 20 tasks done exactly once" in out
    # One "assigned" line per task: never for a task already done or already assigned.
    assigned = re.findall(r"\] assigned (task-\d+) -> ", out)
    assert len(assigned) == 20 and len(set(assigned)) == 20, out
    assert "reassigned" not in out and "already assigned" not in out, out


def test_master_worker_demo_runs_against_zkpy_by_default() -> None:
    """Fails before the default changed: `demo` alone chose `--server apache`, which needs Java and
    Apache ZooKeeper that a fresh machine does not have."""
    import runpy

    example = runpy.run_path(str(EXAMPLE), run_name="master_worker")
    assert example["build_parser"]().parse_args(["demo"]).server == "zkpy"


def test_master_worker_run_with_a_python_without_zkpy_says_which_python_to_use() -> None:
    """Fails before this change: a Python without trio (here: the venv's with -S, no site-packages)
    died with ModuleNotFoundError's traceback instead of naming the venv's Python."""
    import subprocess

    result = subprocess.run([sys.executable, "-S", str(EXAMPLE), "demo"], capture_output=True, text=True)
    assert result.returncode == 1
    assert ".venv/bin/python examples/master_worker.py demo" in result.stderr
    assert "Traceback" not in result.stderr
