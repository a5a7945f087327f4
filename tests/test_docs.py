"""Every command explains itself with --help and is documented in the README."""

import json
import re
import subprocess
import sys
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


def test_the_python_api_example_runs(tmp_path, ham10000):
    """docs/api.md's example, as a user would paste it, in a folder with ../shared beside it."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "shared").symlink_to(ham10000.parent.parent)
    (tmp_path / "work").mkdir()
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "work", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"251 images in \d+ s \(\d+ s in the backbone\)", lines[0])
    assert lines[1] == "(251, 2688) efficientnet-lite0-stages-sog"  # the CLI's default backbone
    assert re.fullmatch(r"BMCA per fold: \[0\.\d+, 0\.\d+, 0\.\d+\]", lines[2])
    assert "note: fold" in done.stderr and "moves in big steps" in done.stderr  # folds of a handful of DF
    assert re.fullmatch(r"CV BMCA 0\.\d+", next(line for line in lines if line.startswith("CV BMCA")))
    from skinfeat.data.layouts import load_dataset

    first = load_dataset(data=ham10000).image_ids[:120:40]
    assert [line.split()[0] for line in lines[-3:]] == first
    assert all(re.match(r"ISIC_\d{7} [A-Z]+ \[\('[A-Z]+', '[a-z]", line) for line in lines[-3:])
    assert (tmp_path / "work" / "model" / "model.json").is_file()


def test_the_readme_h5py_snippet_runs(tmp_path, ham10000):
    """The feature-file snippet of the README, on a real file named as extract names it."""
    from fakes import make_pooling_module
    from model_factory import ham_subset

    from skinfeat.features.extract import extract_features

    subset = ham_subset(ham10000, per_class=1)
    extract_features(subset, make_pooling_module(tmp_path / "pool"), dataset_name="ham10000", progress=False)
    code = re.search(r"```python\n(from pathlib import Path\nimport h5py\n.*?)```", README, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code + "\nimport json; print(json.dumps([X.shape, list(image_ids), "
                           "y.tolist(), module]))"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from skinfeat.features.store import read_features

    fs = read_features(next((tmp_path / "features").glob("ham10000__*.h5")))
    assert json.loads(done.stdout) == [[7, 9], fs.image_ids.tolist(), fs.labels.tolist(), fs.module]


def test_shell_completion_as_the_readme_says():
    assert 'eval "$(_SKINFEAT_COMPLETE=bash_source skinfeat)"' in README
    env = {**__import__("os").environ, "_SKINFEAT_COMPLETE": "bash_source"}
    done = subprocess.run([sys.executable, "-m", "skinfeat"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "_skinfeat_completion()" in done.stdout
    env = {**env, "_SKINFEAT_COMPLETE": "bash_complete", "COMP_WORDS": "skinfeat ex", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "skinfeat"], env=env, capture_output=True, text=True)
    assert {"plain,explain", "plain,export", "plain,extract"} <= set(done.stdout.split())
