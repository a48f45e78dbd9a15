"""The README's run and test commands use a virtual environment, and .ci/run runs the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _first_command(section: str) -> str:
    """The first indented (code) line of a README section."""
    match = re.search(r"^    (\S.*)$", section, flags=re.M)
    assert match, section
    return match.group(1)


def test_the_run_command_installs_into_a_virtual_environment_and_starts_an_ensemble() -> None:
    steps = _first_command(_section("Start a local ensemble")).split(" && ")
    assert steps == [
        "python3 -m venv .venv",
        ".venv/bin/pip install -e .",
        ".venv/bin/zkpy ensemble",
    ]


def test_the_readme_points_nowhere_outside_the_repository() -> None:
    """A fresh clone has nothing beside it: no ../shared tools, no commit hashes to look up."""
    text = (ROOT / "README.md").read_text()
    assert "../" not in text
    assert not re.search(r"\b(?=[0-9]*[a-f])[0-9a-f]{7,40}\b", text)
    for link in re.findall(r"\]\(([^)#]+)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_ci_runs_the_readme_test_command() -> None:
    steps = _first_command(_section("Run the tests")).split(" && ")
    assert steps[0] == "python3 -m venv .venv" and steps[1].startswith(".venv/bin/pip install -e ")
    assert steps[-1] == ".venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert " && ".join(steps[:-1]) in ci  # the install, verbatim
    pytest_lines = [line for line in ci if " -m pytest" in line]
    assert len(pytest_lines) == 1 and pytest_lines[0].startswith(steps[-1] + " ")
    assert "set -euo pipefail" in ci
