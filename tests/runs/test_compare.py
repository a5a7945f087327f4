"""``skinfeat compare``: the leaderboard reads records (never recomputes) and
``--fit`` fills the missing backbone x head runs."""

import csv
import io
import json

import pytest
from helpers import run

from devtools.synthetic import write_synthetic
from skinfeat.core.paths import features_dir, runs_dir
from skinfeat.runs.compare import leaderboard_rows
from skinfeat.runs.records import read_records, write_record


def record(run_id, module, head, bmca, created, settings="s1", fit_s=10.0, folds="f" * 64, dataset="ham10000",
           baseline=(1 / 7, 0.669, 0.89), label=None):
    """A hand-made record: compare must show exactly these numbers."""
    return {"run_id": run_id, "created": created, "head": head, "settings": settings, "use_views": False,
            "settings_label": label or ("" if settings == "s1" else "class_weight=sqrt"),
            "backbone": {"module": module, "feature_dim": 1280, "images_per_second": 130.5, "dataset": dataset},
            "features": {"key": f"key-{module}-{dataset}"}, "folds": {"sha256": folds},
            "metrics": {"bmca": {"mean": bmca, "std": 0.01}, "accuracy": {"mean": 0.8, "std": 0.0},
                        "top3": {"mean": 0.95, "std": 0.0}, "macro_auc": {"mean": 0.9, "std": 0.0}},
            "baseline": dict(zip(("bmca", "accuracy", "top3"), baseline)),
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
    assert lines[0].split() == ["dataset", "backbone", "head", "settings", "dim", "BMCA", "[95%", "CI]", "vs", "best",
                                "worst", "shift", "test", "BMCA", "accuracy", "top-3", "AUC", "fit", "s", "extract",
                                "img/s", "folds", "run"]
    assert [line.split()[:3] for line in lines[2:5]] == [["ham10000", "lite0", "softmax"],
                                                         ["ham10000", "lite0", "logreg"],
                                                         ["ham10000", "mobilenet", "logreg"]]
    # records from before the intervals: mean ± std, and no paired figure without their predictions
    assert lines[2].split()[4:13] == ["1280", "0.641±0.010", "best", "-", "-", "0.800", "0.950", "0.900", "30.0"]
    assert "not paired: out-of-fold predictions missing" in lines[3]
    assert [line.split()[-1] for line in lines[2:5]] == ["c", "b", "d"]  # the run ids, for report --run
    assert "0.612" not in result.stdout  # the older lite0 x logreg record is superseded
    assert lines[3].split()[3] == "default" and lines[4].split()[3] == "class_weight=sqrt"
    assert lines[-1] == "baseline (always NV) on ham10000: BMCA 0.143, accuracy 0.669, top-3 0.890"


def test_sort_all_and_formats():
    fill_runs()
    fastest = run("compare", "--sort", "fit_time", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(fastest)))
    assert [r["backbone"] for r in rows] == ["mobilenet", "lite0", "lite0"]
    assert float(rows[0]["bmca"]) == 0.555
    everything = json.loads(run("compare", "--all", "--format", "json").stdout)
    assert sorted(r["run_id"] for r in everything) == ["a", "b", "c", "d"]
    markdown = run("compare", "--format", "markdown").stdout.splitlines()
    assert markdown[0].startswith("| dataset | backbone | head |") and markdown[1].startswith("|---|")


def two_datasets():
    """Runs of two datasets in one runs folder, their BMCAs interleaved, each dataset
    with its own always-NV baseline; one old record names no dataset."""
    write_record(record("h1", "lite0", "logreg", 0.70, "2026-01-01T00:00:00"))
    write_record(record("h2", "lite2", "logreg", 0.50, "2026-01-01T00:00:00"))
    write_record(record("i1", "lite0", "logreg", 0.60, "2026-01-02T00:00:00", dataset="isic2019",
                        baseline=(0.125, 0.508, 0.79), label="C=0.5|sqrt"))
    old = record("o1", "lite1", "logreg", 0.65, "2025-06-01T00:00:00")
    del old["backbone"]["dataset"]
    write_record(old)


def test_runs_of_two_datasets_stay_apart_each_with_its_baseline():
    two_datasets()
    result = run("compare")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [(line.split()[0], line.split()[-1]) for line in lines[2:6]] == [
        ("ham10000", "h1"), ("ham10000", "h2"), ("?", "o1"), ("isic2019", "i1")]  # best first within each
    assert lines[6:] == ["baseline (always NV) on ham10000: BMCA 0.143, accuracy 0.669, top-3 0.890",
                         "baseline (always NV) on the runs that name no dataset (?): BMCA 0.143, accuracy 0.669, "
                         "top-3 0.890",
                         "baseline (always NV) on isic2019: BMCA 0.125, accuracy 0.508, top-3 0.790"]
    rows = list(csv.DictReader(io.StringIO(run("compare", "--format", "csv").stdout)))
    assert [(r["dataset"], r["run_id"]) for r in rows] == [("ham10000", "h1"), ("ham10000", "h2"), ("?", "o1"),
                                                           ("isic2019", "i1")]


def test_markdown_is_one_table_and_the_baselines_paragraphs_after_it():
    from markdown_it import MarkdownIt

    from skinfeat.runs.compare import TABLE_COLUMNS

    two_datasets()
    result = run("compare", "--format", "markdown")
    assert result.exit_code == 0, result.output
    tokens = MarkdownIt("commonmark").enable("table").parse(result.stdout)  # GitHub's table rules
    assert [t.type for t in tokens].count("table_open") == 1
    body = tokens[[t.type for t in tokens].index("tbody_open"):[t.type for t in tokens].index("tbody_close")]
    rows, row = [], None
    for t in body:
        if t.type == "tr_open":
            row = []
            rows.append(row)
        elif t.type == "inline":
            row.append(t.content)
    assert len(rows) == 4 and all(len(r) == len(TABLE_COLUMNS) for r in rows)
    assert [(r[0], r[-1]) for r in rows] == [("ham10000", "h1"), ("ham10000", "h2"), ("?", "o1"), ("isic2019", "i1")]
    assert rows[3][3] == "C=0.5|sqrt"  # a "|" in a cell (escaped) stays in its cell
    after = tokens[[t.type for t in tokens].index("table_close") + 1:]
    paragraphs = [t.content for t in after if t.type == "inline"]
    assert paragraphs == ["baseline (always NV) on ham10000: BMCA 0.143, accuracy 0.669, top-3 0.890",
                          "baseline (always NV) on the runs that name no dataset (?): BMCA 0.143, accuracy 0.669, "
                          "top-3 0.890",
                          "baseline (always NV) on isic2019: BMCA 0.125, accuracy 0.508, top-3 0.790"]


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


def test_intervals_and_paired_marks_from_real_fits():
    """Real fits on synthetic features (shared lesions): each row shows its
    lesion-grouped interval and its paired difference to the best; a head that is
    the best's twin is tied with it; a run of other folds is not paired; --vs prints
    the full table with the corrected t-test."""
    features_dir().mkdir(parents=True)
    path = features_dir() / "alpha.h5"
    write_synthetic(path, counts=(60, 300, 40, 30, 60, 20, 20), dim=8, separation=1.2, module="alpha", seed=4)
    for head, extra in (("logreg", ()), ("logreg", ("--param", "alpha=30")), ("softmax", ())):
        done = run("fit", "--features", str(path), "--head", head, "--cv", "5", *extra)
        assert done.exit_code == 0, done.output
    other = run("fit", "--features", str(path), "--head", "logreg", "--cv", "3")
    assert other.exit_code == 0, other.output
    records = {(r["head"], r["settings_label"], r["folds"]["k"]): r for r in read_records()}
    best = records[("logreg", "", 5)]
    iv = best["intervals"]
    assert iv["grouped_by"] == "lesion" and iv["resamples"] == 1000
    for metric in ("bmca", "accuracy", "macro_auc"):
        mean = best["metrics"][metric]["mean"]
        assert iv[metric]["low"] < mean < iv[metric]["high"] and iv[metric]["high"] - iv[metric]["low"] < 0.3
    rows = {(r["head"], r["settings"], r["folds"][:8] == best["folds"]["sha256"][:8]): r
            for r in leaderboard_rows(read_records())}
    top = max(rows.values(), key=lambda r: r["bmca"] if r["folds"].startswith(best["folds"]["sha256"][:8]) else 0)
    assert top["vs_best_note"] == f"best on folds {top['folds']}"
    for r in rows.values():
        if r is top:
            continue
        if not r["folds"].startswith(top["folds"][:8]):
            assert r["vs_best_note"] == "alone on its folds" and r["vs_best"] is None
            continue
        assert r["vs_best"] == pytest.approx(r["bmca"] - top["bmca"], abs=1e-9)  # the fold means' difference
        assert r["vs_best_low"] <= r["vs_best"] <= r["vs_best_high"]
        assert (r["vs_best_note"] == "tied") == (r["vs_best_low"] <= 0 <= r["vs_best_high"])
    weak = rows[("logreg", "alpha=30", True)]
    assert weak["vs_best_high"] < 0 and weak["vs_best_note"] is None  # a much weaker head: a real difference
    table = run("compare").stdout
    assert f"{top['bmca']:.3f} [" in table and "alone on its folds" in table
    versus = run("compare", "--vs", top["run_id"])
    assert versus.exit_code == 0, versus.output
    lines = versus.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "head", "settings"] and "(the reference)" in versus.stdout
    assert "not paired: other folds" in versus.stdout  # the 3-fold run
    weak_line = next(line for line in lines if weak["run_id"] in line)
    assert "worse" in weak_line and f"{weak['vs_best']:+.3f} [" in weak_line
    t = float(weak_line.split()[-2])
    assert t < 0  # the corrected t of a worse run is negative


def test_vs_refuses_unknown_or_ambiguous_runs():
    fill_runs()
    write_record(record("xy1", "lite0", "knn", 0.5, "2026-01-05T00:00:00", settings="s3"))
    write_record(record("xy12", "lite0", "knn", 0.5, "2026-01-05T00:00:00", settings="s4"))
    unknown = run("compare", "--vs", "zzz")
    assert unknown.exit_code == 2 and "no recorded run has that id" in unknown.output
    ambiguous = run("compare", "--vs", "xy")
    assert ambiguous.exit_code == 2 and "is ambiguous: 2 runs contain it" in ambiguous.output
    exact = run("compare", "--vs", "xy1")  # an exact id beats the one that contains it
    assert exact.exit_code == 0 and "reference: xy1 " in exact.stdout
    assert "not paired: out-of-fold predictions missing" in exact.stdout
    both = run("compare", "--vs", "b", "--fit")
    assert both.exit_code == 2 and "--vs prints one comparison" in both.output


def test_runs_option_reads_another_folder(tmp_path, monkeypatch):
    """compare and report --runs DIR read the records of DIR from any working folder;
    a missing folder, or --runs with a writing option, is a one-line usage error."""
    fill_runs()
    where = runs_dir().resolve()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("SKINFEAT_RUNS", raising=False)
    assert "no runs recorded in runs" in run("compare").stderr  # here, the default ./runs is empty
    board = run("compare", "--runs", where)
    assert board.exit_code == 0 and [line.split()[-1] for line in board.stdout.splitlines()[2:5]] == ["c", "b", "d"]
    versus = run("compare", "--runs", where, "--vs", "c")
    assert versus.exit_code == 0 and "reference: c " in versus.stdout
    missing = run("compare", "--runs", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "is not a folder; expected the runs folder" in missing.output
    writing = run("compare", "--runs", where, "--fit")
    assert writing.exit_code == 2 and "set SKINFEAT_RUNS=DIR" in writing.output
    report = run("report", "--runs", where, "--map", "none", "--out", tmp_path / "r.html")
    assert report.exit_code == 0 and (tmp_path / "r.html").is_file()
    assert run("report", "--runs", tmp_path / "nowhere").exit_code == 2
