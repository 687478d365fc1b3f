"""The README's two commands are the ones the project runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text):
    """Indented shell lines after a '::' paragraph of the README."""
    return [line.strip() for line in text.splitlines()
            if line.startswith("    ") and ("pip install" in line
                                            or "python -m" in line)]


def test_ci_runs_the_readme_test_command():
    # The test command, then the documentation site's build.
    readme = (ROOT / "README.rst").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = [line for line in ci.splitlines() if line.startswith("pip ")]
    assert len(ci_commands) == 2, ci_commands
    assert "pytest" in ci_commands[0] and "sphinx -W" in ci_commands[1]
    for ci_command in ci_commands:
        assert ci_command in _commands(readme), ci_command


def test_readme_main_job_is_the_demo():
    readme = (ROOT / "README.rst").read_text()
    demo = [c for c in _commands(readme) if re.search(r"python -m sklearn_ltr demo$",
                                                      c)]
    assert demo and demo[0].startswith("pip install torch==2.13.0")
