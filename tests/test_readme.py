"""The README's first lines give the two fresh-machine commands, and .ci/run runs command (2) verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> dict[str, str]:
    head = (REPO / "README.md").read_text().splitlines()[:6]
    return {m[1]: m[2] for line in head if (m := re.match(r"^([12])\. [^`]*`([^`]+)`\s*$", line))}


def test_readme_starts_with_the_two_commands():
    commands = _readme_commands()
    assert set(commands) == {"1", "2"}
    assert commands["1"].endswith("diffinfinite demo")
    assert "pip install -e .[test,pyqt6]" in commands["2"] and "pytest" in commands["2"]


def test_ci_runs_readme_command_2_verbatim():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[0].startswith("#!") and "bash" in ci[0]
    assert "set -euxo pipefail" in ci
    assert _readme_commands()["2"] in ci, ".ci/run must run the README's command (2) verbatim"
    assert (REPO / ".ci" / "run").stat().st_mode & 0o111
