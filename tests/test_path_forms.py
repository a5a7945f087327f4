"""Every command that takes a path, given it in each form a user types: relative,
``./``, with a trailing slash, through ``..``, through a symbolic link, and a name
with a space and letters beyond ASCII, run from another working folder. Each must
give what the absolute form gives (issue 29): the same exit code, image ids,
folds, features, predictions and scores, and no traceback.

The data: 28 HAM10000 images with their metadata (labelled) and 8 of them as a
plain folder of JPEGs (unlabelled), the fake pooling backbone and its model."""

import csv
import io
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from model_factory import PER_CLASS, ham_subset, pool_model, write_ham_folder

from skinfeat.cli import cli

FORMS = ("relative", "dot", "slash", "dotdot", "symlink", "spaced")


@pytest.fixture(scope="module")
def place(tmp_path_factory, skinfeat_home, ham10000):
    """A working folder ``work`` holding the labelled set ``work/ham``, the unlabelled
    folder ``work/photos``, a features file and the model; the links and the spaced,
    non-ASCII copies of each name beside them."""
    root = tmp_path_factory.mktemp("forms")
    work = root / "work"
    work.mkdir()
    info = pool_model(skinfeat_home, ham10000)
    subset = ham_subset(ham10000, skip=PER_CLASS)  # not the model's training images: evaluate scores them
    write_ham_folder(work / "ham", ham10000, subset.image_ids)
    (work / "photos").mkdir()
    for path in subset.paths[:8]:
        (work / "photos" / Path(path).name).symlink_to(path)
    os.symlink(info["features"], work / "feats.h5")
    for name in ("ham", "photos", "feats.h5"):
        (work / f"link-{name}").symlink_to(work / name)
        (work / f"my dätä {name}").symlink_to(work / name)
    return {"root": root, "work": work, "model": info["model"], "module": info["module"], "absolute": {}}


def spelled(place, name, form):
    """``work/name`` as typed in ``form``, from the working folder ``work``."""
    folder = not name.endswith(".h5")
    return {"absolute": str(place["work"] / name), "relative": name, "dot": f"./{name}",
            "slash": f"{name}/" if folder else name, "dotdot": f"../work/{name}", "symlink": f"link-{name}",
            "spaced": f"my dätä {name}"}[form]


def invoke(place, monkeypatch, *args):
    monkeypatch.chdir(place["work"])
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    return result


def csv_rows(text):
    return list(csv.reader(io.StringIO(text)))


def check(place, monkeypatch, form):
    """What `data check` says of the labelled set, but the lines that echo its path (as
    typed: checked here)."""
    typed = spelled(place, "ham", form).rstrip("/")
    result = invoke(place, monkeypatch, "data", "check", "--data", spelled(place, "ham", form))
    lines = result.stdout.splitlines()
    echoed = [line for line in lines if line.startswith(("labels:", "images:"))]
    assert echoed and all(typed in line or os.path.normpath(typed) in line for line in echoed), (typed, echoed)
    return result.exit_code, [line for line in lines if line not in echoed]


def split(place, monkeypatch, form, out):
    result = invoke(place, monkeypatch, "data", "split", "--data", spelled(place, "ham", form), "--folds", "3",
                    "--out", out)
    return result.exit_code, Path(out).read_text() if result.exit_code == 0 else result.output


def extract(place, monkeypatch, form, out):
    result = invoke(place, monkeypatch, "extract", "--module", place["module"], "--images",
                    spelled(place, "photos", form), "-o", out, "--no-progress")
    if result.exit_code:
        return result.exit_code, result.output
    with h5py.File(out, "r") as f:
        return 0, (f["image_id"].asstr()[:].tolist(), np.round(f["features"][:], 5).tolist())


def predict(place, monkeypatch, form):
    result = invoke(place, monkeypatch, "predict", "--model", place["model"], spelled(place, "photos", form),
                    "--format", "csv")
    rows = csv_rows(result.stdout)
    image = rows[0].index("image") if rows else 0
    return result.exit_code, sorted((r[image], *r[image + 1:]) for r in rows[1:] if r)


def evaluate(place, monkeypatch, form):
    result = invoke(place, monkeypatch, "evaluate", "--model", place["model"], "--data",
                    spelled(place, "ham", form), "--no-progress")
    return result.exit_code, [line for line in result.stdout.splitlines() if line.split()[:1] in (["BMCA"],
                                                                                                 ["accuracy"])]


def fit(place, monkeypatch, form):
    result = invoke(place, monkeypatch, "fit", "--head", "logreg", "--features", spelled(place, "feats.h5", form),
                    "--cv", "2", "-q")
    return result.exit_code, [line for line in result.stdout.splitlines() if line.split()[:1] == ["BMCA"]]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("command", ["check", "split", "extract", "predict", "evaluate", "fit"])
def test_every_path_form_gives_what_the_absolute_one_gives(place, monkeypatch, tmp_path, command, form):
    def once(how, tag):
        if command == "check":
            return check(place, monkeypatch, how)
        if command == "split":
            return split(place, monkeypatch, how, tmp_path / f"folds-{tag}.csv")
        if command == "extract":
            return extract(place, monkeypatch, how, tmp_path / f"f-{tag}.h5")
        return {"predict": predict, "evaluate": evaluate, "fit": fit}[command](place, monkeypatch, how)

    if command not in place["absolute"]:  # the absolute form's result, once per command
        place["absolute"][command] = once("absolute", "a")
    want = place["absolute"][command]
    got = once(form, "b")
    assert want[0] == 0, want
    assert got == want
    assert want[1], want  # something was compared


@pytest.mark.parametrize("form", FORMS)
def test_runs_folder_and_report_in_every_form(place, monkeypatch, tmp_path, form):
    """compare and report --runs DIR: the same leaderboard whichever way the folder is named."""
    runs = place["work"] / "runs"
    if not runs.is_dir():
        monkeypatch.setenv("SKINFEAT_RUNS", str(runs))
        assert invoke(place, monkeypatch, "fit", "--head", "logreg", "--features", "feats.h5", "--cv", "2",
                      "-q").exit_code == 0
        monkeypatch.delenv("SKINFEAT_RUNS")
    if not (place["work"] / "link-runs").exists():
        (place["work"] / "link-runs").symlink_to(runs)
        (place["work"] / "my dätä runs").symlink_to(runs)
    board = invoke(place, monkeypatch, "compare", "--runs", spelled(place, "runs", form), "--format", "json")
    want = invoke(place, monkeypatch, "compare", "--runs", runs, "--format", "json")
    assert board.exit_code == want.exit_code == 0, board.output
    assert [r["run_id"] for r in json.loads(board.stdout)] == [r["run_id"] for r in json.loads(want.stdout)]
    report = invoke(place, monkeypatch, "report", "--runs", spelled(place, "runs", form), "--map", "none",
                    "--out", tmp_path / "r.html")
    assert report.exit_code == 0 and (tmp_path / "r.html").is_file(), report.output
