"""What many test modules use: where things are, the CLI run as a user runs it, and
the one-line error a failed command must end with."""

from pathlib import Path

from click.testing import CliRunner

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
HAM10000 = SHARED / "data" / "ham10000"


def run(*args, env=None, catch_exceptions=False):
    """``skinfeat ARGS...`` through click's runner (arguments made strings); output is
    stdout and stderr together."""
    from skinfeat.cli import cli

    return CliRunner(env=env).invoke(cli, [str(a) for a in args], catch_exceptions=catch_exceptions)


def error_line(result, code=1, alone=False):
    """The ``Error:`` line a failed command ends with: exit ``code``, no traceback, no
    numpy advice, exactly one ``Error:`` line; with ``alone``, nothing else printed
    (exit 2 keeps click's usage lines)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "allow_pickle" not in result.output, result.output
    assert lines and lines[-1].startswith("Error: "), result.output
    assert sum(line.startswith("Error: ") for line in lines) == 1, result.output
    assert not alone or code == 2 or len(lines) == 1, result.output
    return lines[-1]
