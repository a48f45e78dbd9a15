"""zkpy.testing.apache, the in-repository way to Apache ZooKeeper: where it cannot be had, the reason
is the real one (no package and no apt-get, or no root), and the tests that need it skip with it.

Fails before this change: the reference came from ../shared/tools/apache-zk, outside the repository;
a fresh clone skipped 23 byte-diff tests as "Java or the Apache ZooKeeper reference is not
available" with both installed, and test_server_restart[apache] failed on the missing file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zkpy.testing import apache

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setattr(apache, "ZOOKEEPER_JAR", tmp_path / "zookeeper.jar")
    monkeypatch.setattr(apache, "_install_error", None)
    return monkeypatch


def _which(missing: str):  # type: ignore[no-untyped-def]
    real = apache.shutil.which
    return lambda name: None if name == missing else (real(name) or f"/usr/bin/{name}")


def test_without_the_package_and_without_apt_get_the_reason_says_so(no_package: pytest.MonkeyPatch) -> None:
    no_package.setattr(apache.shutil, "which", _which("apt-get"))
    reason = apache.unavailable_reason()
    assert reason is not None and "no apt-get" in reason and "zookeeper" in reason
    with pytest.raises(apache.ApacheUnavailable, match="no apt-get"):
        apache.ensure_installed()
    with pytest.raises(pytest.skip.Exception, match=r"needs Apache ZooKeeper 3\.8: .*no apt-get"):
        apache.require()


def test_with_apt_get_but_no_root_the_reason_says_so(no_package: pytest.MonkeyPatch) -> None:
    no_package.setattr(apache.shutil, "which", _which("sudo"))
    no_package.setattr(apache.os, "geteuid", lambda: 1000)
    reason = apache.unavailable_reason()
    assert reason is not None and "root or passwordless sudo" in reason


def test_with_apt_get_as_root_it_is_installable(no_package: pytest.MonkeyPatch) -> None:
    no_package.setattr(apache.shutil, "which", _which("nothing"))
    no_package.setattr(apache.os, "geteuid", lambda: 0)
    assert apache.unavailable_reason() is None


def test_the_script_runs_from_a_checkout_and_exits_3_with_the_reason_when_unavailable(tmp_path: Path) -> None:
    """scripts/apache-zk needs nothing installed (only PYTHONPATH); PATH without apt-get or java
    and a Python without the package stand for a machine that cannot have it."""
    env = {**os.environ, "PATH": str(tmp_path), "PYTHON": sys.executable}
    code = "import sys, zkpy.testing.apache as a, pathlib; a.ZOOKEEPER_JAR = pathlib.Path('/nonexistent'); sys.exit(a.main(['--classpath']))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}
    )
    assert result.returncode == apache.NOT_AVAILABLE_EXIT
    assert "no apt-get" in result.stderr
    helped = subprocess.run(
        ["bash", str(ROOT / "scripts" / "apache-zk"), "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--ensemble N DIR" in helped.stdout


@pytest.mark.skipif(not apache.ZOOKEEPER_JAR.exists(), reason="Debian's zookeeper package is not installed")
def test_the_classpath_names_the_server_and_its_logging() -> None:
    jars = apache.classpath(admin=False).split(":")
    assert jars[:3] == [
        f"/usr/share/java/{j}" for j in ("zookeeper.jar", "zookeeper-jute.jar", "slf4j-simple.jar")
    ]
    assert all(Path(j).exists() for j in jars)
    assert not any("jetty" in j for j in jars)
