"""The report's numbers against `fit`'s record: one definition per number, labelled
"mean over folds" or "pooled" where both appear; `report --run ID`; records
that survive a change of folder; legends off the curves."""

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import run
from model_factory import pool_model
from skinfeat.core.classes import CLASSES
from skinfeat.core.metrics import ECE_BINS, expected_calibration_error
from skinfeat.core.paths import runs_dir
from skinfeat.runs.records import write_record
from skinfeat.apps.report import write_report


@pytest.fixture(scope="module")
def fitted(skinfeat_home, ham10000):
    """A real fit's runs folder (record, out-of-fold probabilities) and features file."""
    info = pool_model(skinfeat_home, ham10000)
    return Path(info["record"]).parent, Path(info["features"])


def text_of(fragment):
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


def fit3(features):
    """`skinfeat fit` with 3 folds of the 28 images: their class counts differ between
    folds, so the mean over folds and the pooled figures differ. Returns the record."""
    result = run("fit", "--head", "logreg", "--features", features, "--cv", "3", "-q")
    assert result.exit_code == 0, result.output
    return result, json.loads(Path(result.stdout.split("record: ")[1].split()[0]).read_text())


def test_report_numbers_are_fits_labelled_mean_over_folds_or_pooled(fitted, tmp_path):
    _, record = fit3(fitted[1])
    runs = runs_dir()
    write_report(tmp_path / "r.html", runs=runs, map_method="none")
    page = (tmp_path / "r.html").read_text()
    k = len(record["metrics"]["bmca"]["folds"])
    m = record["metrics"]

    headline = text_of(re.search(r"<p id='headline'>(.*?)</p>", page).group(1))
    for label, name in (("BMCA", "bmca"), ("accuracy", "accuracy"), ("macro AUC", "macro_auc"), ("ECE", "ece")):
        assert f"{label} {m[name]['mean']:.3f} ± {m[name]['std']:.3f}" in headline  # the record's, as fit prints
    assert f"(mean ± std over {k} folds" in headline
    iv = record["intervals"]  # and the record's lesion-grouped intervals, as fit prints them
    assert (f"95% intervals BMCA [{iv['bmca']['low']:.3f}, {iv['bmca']['high']:.3f}], accuracy "
            f"[{iv['accuracy']['low']:.3f}, {iv['accuracy']['high']:.3f}]") in headline
    assert f"95% interval BMCA [{iv['bmca']['low']:.3f}, {iv['bmca']['high']:.3f}]" in fit3(fitted[1])[0].stdout
    operating = text_of(re.search(r"<table class='small' id='operating'>(.*?)</table>", page).group(1))
    mel = record["operating_points"]["melanoma"]["auc"]
    assert f"{mel['value']:.3f} [{mel['low']:.3f}, {mel['high']:.3f}]" in operating  # the record's, with interval
    # HAM10000 features carry its metadata: the groups' table, as recorded
    assert set(record["subgroups"]["columns"]) == {"sex", "age", "localization"}
    table = text_of(re.search(r"<table class='small' id='subgroups'>(.*?)</table>", page).group(1))
    first = record["subgroups"]["columns"]["sex"][0]
    assert f"sex {first['group']} {first['n']:,} {first['bmca']:.3f}" in " ".join(table.split())

    confusion = np.asarray(record["confusion"])
    recall = np.diag(confusion) / confusion.sum(axis=1)
    precision = np.diag(confusion) / np.maximum(confusion.sum(axis=0), 1)
    table = re.search(r"<table class='small' id='per-class'>(.*?)</table>", page).group(1)
    assert "pooled over the folds (read from the confusion matrix below)" in text_of(table)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr><td>.*?</tr>", table)]
    assert [c[0].split(" ")[0] for c in cells] == list(CLASSES)
    assert [int(c[1]) for c in cells] == confusion.sum(axis=1).tolist()
    assert [c[2] for c in cells] == [f"{v:.3f}" for v in precision]
    assert [c[3] for c in cells] == [f"{v:.3f}" for v in recall]  # the matrix's fractions, not a fold mean
    assert recall.tolist() != [record["per_class"][c]["recall"]["mean"] for c in CLASSES]  # they differ here
    assert f"{recall.mean():.3f}" != f"{m['bmca']['mean']:.3f}"

    captions = [text_of(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", page)]
    confusion_caption, roc_caption, reliability_caption = captions
    assert confusion_caption.startswith(f"Pooled over the {k} folds")
    assert f"balanced accuracy {recall.mean():.3f}, accuracy {np.trace(confusion) / confusion.sum():.3f}" \
        in confusion_caption and "mean over folds" in confusion_caption
    assert "pooled" in roc_caption and "mean over folds" in roc_caption

    # ECE: fit's function and bins, per fold; the report pools the same out-of-fold probabilities
    with np.load(runs / record["predictions_file"]) as oof:
        label, fold, proba = oof["label"], oof["fold"], oof["proba"].astype(np.float64)
    per_fold = [expected_calibration_error(label[fold == f], proba[fold == f]) for f in range(k)]
    assert per_fold == pytest.approx(m["ece"]["folds"], abs=1e-5)
    used = fold >= 0
    pooled = expected_calibration_error(label[used], proba[used])
    assert reliability_caption.startswith(f"ECE pooled over the folds {pooled:.3f} ({ECE_BINS} equal-width bins")
    assert f"the ECE above, {m['ece']['mean']:.3f}, is the mean over folds" in reliability_caption


def test_calibration_plot_uses_fits_ece_and_bins():
    from skinfeat.viz.plots import calibration_bins

    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 400)
    proba = rng.dirichlet(np.ones(7) * 0.4, 400)
    bins = calibration_bins(y, proba)
    assert len(bins["count"]) == ECE_BINS and bins["ece"] == expected_calibration_error(y, proba)


def test_roc_and_pr_legends_lie_beside_the_curves():
    from skinfeat.viz.plots import plot_roc_pr

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(7), 60)
    proba = rng.dirichlet(np.ones(7), len(y))
    proba[np.arange(len(y)), y] += 0.15  # weak classes: their PR curves run along the bottom
    fig = plot_roc_pr(y, proba / proba.sum(axis=1, keepdims=True))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in fig.axes:
        legend, frame = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not legend.overlaps(frame), (ax.get_title(), legend, frame)
        assert legend.x1 <= fig.bbox.x1 + 1  # and inside the picture


def test_fit_prints_pooled_recall_consistent_with_its_confusion(fitted):
    result, record = fit3(fitted[1])
    lines = result.stdout.splitlines()
    confusion = np.asarray(record["confusion"])
    recall = np.diag(confusion) / confusion.sum(axis=1)
    assert next(line for line in lines if line.startswith("recall")).split()[1:] == [
        *[v for c, r in zip(CLASSES, recall) for v in (c, f"{r:.2f}")], "(pooled)"]
    assert (f"(mean ± std over 3 folds; pooled over the folds, the confusion below: balanced accuracy "
            f"{recall.mean():.3f}") in result.stdout
    assert next(line for line in lines if line.startswith("BMCA")).split()[1] == f"{record['metrics']['bmca']['mean']:.3f}"


def other_dataset_record(run_id, bmca):
    """A hand-made record of another dataset, better than the real fit (first on the board)."""
    return {"run_id": run_id, "created": "2026-01-01T00:00:00", "head": "logreg", "settings": run_id,
            "backbone": {"module": "lite0", "dataset": "isic2019"}, "features": {"key": run_id},
            "metrics": {"bmca": {"mean": 0.99, "std": 0.0, "folds": [0.99]}},
            "confusion": np.eye(7, dtype=int).tolist(), "baseline": {"bmca": 0.125, "accuracy": 0.5, "top3": 0.8}}


def test_report_run_shows_the_run_asked_for(fitted, tmp_path, monkeypatch):
    runs = shutil.copytree(fitted[0], tmp_path / "runs")
    real = json.loads(next(runs.glob("*.json")).read_text())["run_id"]
    for run_id in ("x-1", "x-2"):
        write_record(other_dataset_record(run_id, 0.99), runs)
    monkeypatch.setenv("SKINFEAT_RUNS", str(runs))
    out = tmp_path / "r.html"

    result = run("report", "--out", out, "--map", "none")
    assert result.exit_code == 0, result.output
    assert "the runs come from 2 datasets (isic2019, dataset)" in result.stderr and "--run ID" in result.stderr
    assert "best lite0 + logreg (run x-1, BMCA 0.990)" in result.stdout

    result = run("report", "--out", out, "--map", "none", "--run", real[:20])  # a unique start will do
    assert result.exit_code == 0, result.output
    assert "the runs come from" not in result.stderr
    page = out.read_text()
    assert f"Run {real}, dataset dataset" in text_of(page) and "<h2>Run: " in page
    assert re.search(r"<tr class='shown'><td>dataset</td>", page)  # marked on the leaderboard
    assert len(re.findall(r"<p class='note baseline'>", page)) == 2  # a baseline per dataset
    assert result.stdout.startswith(f"wrote {out}: 3 runs, run ")

    out.unlink()
    for wrong, why in (("nope", "no run has that id"), ("x-", "2 runs' ids start with it")):
        result = run("report", "--out", out, "--run", wrong)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.output.strip().splitlines()[-1:] == [
            f"Error: --run {wrong}: {why} in {runs}; expected one run id of the leaderboard's run column "
            "(`skinfeat compare`), or a start of it that only one run has"]
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_records_survive_a_change_of_folder_and_old_relative_ones_are_found_or_named(fitted, tmp_path,
                                                                                      monkeypatch):
    here, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (here / "features").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(fitted[1], here / "features" / "f.h5")
    monkeypatch.chdir(here)
    monkeypatch.setenv("SKINFEAT_RUNS", "runs")  # the default: ./runs
    fit = run("fit", "--head", "logreg", "--features", "features/f.h5", "--cv", "2", "-q")
    assert fit.exit_code == 0, fit.output
    path = here / "runs" / Path(fit.stdout.split("record: ")[1].split()[0]).name
    record = json.loads(path.read_text())
    assert record["features"]["path"] == str(here / "features" / "f.h5")
    assert record["features"]["paths"] == [str(here / "features" / "f.h5")]

    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SKINFEAT_RUNS", str(here / "runs"))
    report = run("report", "--out", "r.html", "--map", "pca")
    assert report.exit_code == 0, report.output
    assert "note:" not in report.stderr and report.stdout.rstrip().endswith("4 figures")

    # a record written before paths were stored absolute: found beside the runs folder
    record["features"].update(path="features/f.h5", paths=["features/f.h5"])
    path.write_text(json.dumps(record))
    report = run("report", "--out", "r.html", "--map", "pca")
    assert "note:" not in report.stderr and report.stdout.rstrip().endswith("4 figures")

    # ... or named, with what to do, when it is nowhere to be found
    record["features"].update(path="gone/f.h5", paths=["gone/f.h5"])
    path.write_text(json.dumps(record))
    report = run("report", "--out", "r.html", "--map", "pca")
    assert report.exit_code == 0 and report.stdout.rstrip().endswith("3 figures")
    note = next(line for line in report.stderr.splitlines() if "gone/f.h5" in line)
    assert "relative to the folder `skinfeat fit` ran in" in note and "run the report from that folder" in note


def test_write_record_stores_every_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = write_record({"run_id": "r", "model_dir": "model", "features": {"path": "a.h5", "paths": ["a.h5", "b.h5"]},
                            "test": {"record": "runs/e.json"}}, tmp_path / "runs")
    record = json.loads(written.read_text())
    assert (record["model_dir"], record["features"]["paths"], record["test"]["record"]) == (
        str(tmp_path / "model"), [str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], str(tmp_path / "runs/e.json"))
