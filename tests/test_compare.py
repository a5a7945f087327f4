"""``skinfeat compare``: the leaderboard reads records (never recomputes) and
``--fit`` fills the missing backbone x head runs."""

import csv
import io
import json

from click.testing import CliRunner

from skinfeat.cli import cli
from skinfeat.paths import features_dir, runs_dir
from skinfeat.records import leaderboard_rows, read_records, write_record
from synthetic import write_synthetic


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def record(run_id, module, head, bmca, created, settings="s1", fit_s=10.0, folds="f" * 64):
    """A hand-made record: compare must show exactly these numbers."""
    return {"run_id": run_id, "created": created, "head": head, "settings": settings, "use_views": False,
            "settings_label": "" if settings == "s1" else "class_weight=sqrt",
            "backbone": {"module": module, "feature_dim": 1280, "images_per_second": 130.5},
            "features": {"key": f"key-{module}"}, "folds": {"sha256": folds},
            "metrics": {"bmca": {"mean": bmca, "std": 0.01}, "accuracy": {"mean": 0.8, "std": 0.0},
                        "top3": {"mean": 0.95, "std": 0.0}, "macro_auc": {"mean": 0.9, "std": 0.0}},
            "baseline": {"bmca": 1 / 7, "accuracy": 0.669, "top3": 0.89},
            "timings": {"cv_seconds": fit_s}}


def fill_runs():
    write_record(record("a", "lite0", "logreg", 0.612, "2026-01-01T00:00:00", fit_s=20.0))
    write_record(record("b", "lite0", "logreg", 0.599, "2026-01-02T00:00:00", fit_s=25.0))  # newer: wins
    write_record(record("c", "lite0", "softmax", 0.641, "2026-01-01T00:00:00", fit_s=30.0))
    write_record(record("d", "mobilenet", "logreg", 0.555, "2026-01-01T00:00:00", settings="s2", fit_s=5.0))


def test_table_sorted_by_bmca_with_baseline():
    fill_runs()
    result = run("compare")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["backbone", "head", "settings", "dim", "BMCA", "worst", "shift", "test", "BMCA",
                                "accuracy", "top-3", "AUC", "fit", "s", "extract", "img/s", "folds"]
    assert [line.split()[:2] for line in lines[2:5]] == [["lite0", "softmax"], ["lite0", "logreg"],
                                                         ["mobilenet", "logreg"]]
    assert lines[2].split()[3:11] == ["1280", "0.641±0.010", "-", "-", "0.800", "0.950", "0.900", "30.0"]
    assert "0.612" not in result.stdout  # the older lite0 x logreg record is superseded
    assert lines[3].split()[2] == "default" and lines[4].split()[2] == "class_weight=sqrt"
    assert lines[-1] == "baseline (always NV): BMCA 0.143, accuracy 0.669, top-3 0.890"


def test_sort_all_and_formats():
    fill_runs()
    fastest = run("compare", "--sort", "fit_time", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(fastest)))
    assert [r["backbone"] for r in rows] == ["mobilenet", "lite0", "lite0"]
    assert float(rows[0]["bmca"]) == 0.555
    everything = json.loads(run("compare", "--all", "--format", "json").stdout)
    assert sorted(r["run_id"] for r in everything) == ["a", "b", "c", "d"]
    markdown = run("compare", "--format", "markdown").stdout.splitlines()
    assert markdown[0].startswith("| backbone | head |") and markdown[1].startswith("|---|")


def test_bad_sort_key_and_empty_runs():
    result = run("compare", "--sort", "speed")
    assert result.exit_code == 2 and "'speed' is not one of" in result.output
    result = run("compare")
    assert result.exit_code == 0 and "no runs recorded in" in result.stderr


def test_different_folds_are_flagged():
    fill_runs()
    write_record(record("e", "lite2", "logreg", 0.5, "2026-01-03T00:00:00", folds="0" * 64))
    assert "scored on different folds" in run("compare").stderr


def test_compare_fit_fills_missing_combinations_once():
    features_dir().mkdir(parents=True)
    for module in ("alpha", "beta"):
        write_synthetic(features_dir() / f"{module}.h5", counts=(30, 150, 20, 15, 30, 10, 10), dim=8,
                        separation=2.0, module=module, seed=len(module))
    result = run("compare", "--fit", "--heads", "logreg,lightgbm", "--cv", "3")
    assert result.exit_code == 0, result.output
    assert "[4/4] fitting" in result.stderr
    rows = leaderboard_rows(read_records())
    assert sorted((r["backbone"], r["head"]) for r in rows) == [
        ("alpha", "lightgbm"), ("alpha", "logreg"), ("beta", "lightgbm"), ("beta", "logreg")]
    assert len({r["folds"] for r in rows}) == 2  # the two synthetic sets group lesions differently
    again = run("compare", "--fit", "--heads", "logreg,lightgbm", "--cv", "3")
    assert "fitting" not in again.stderr and len(list(runs_dir().glob("*.json"))) == 4


def test_compare_fit_rejects_unknown_head():
    result = run("compare", "--fit", "--heads", "logreg,softmx")
    assert result.exit_code == 2 and "did you mean 'softmax'?" in result.output
