"""The README promises two set-up commands; CI must run the second one verbatim."""

import re

from tests.conftest import REPO_ROOT


def _setup_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block, "README must start with a code block of set-up commands"
    return [line for line in first_block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    assert commands[0].endswith("medseg demo")
    assert all(command.startswith("pip install torch==2.13.0") for command in commands), "torch must come from the CPU wheel first"


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert _setup_commands()[1] in ci
