"""Every command explains itself with --help and is documented in the README."""

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from skinfeat.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _commands(command, path)


COMMANDS = sorted(_commands(cli))


def test_the_cli_has_the_core_commands():
    top = {path[0] for path in COMMANDS}
    assert {"data", "modules", "extract", "fit", "compare"} <= top


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(path):
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    body = result.output.split("Options:")[0]
    assert len(re.sub(r"\s+", " ", body)) > 60, f"`skinfeat {' '.join(path)} --help` says too little"
    assert f"skinfeat {' '.join(path)}" in README, f"`skinfeat {' '.join(path)}` is missing from README.md"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    first_block = README.split("```")[1]
    lines = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert lines == ["bash scripts/main.sh", "bash scripts/test.sh"]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
