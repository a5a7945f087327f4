"""``skinfeat evaluate``: a model scored on labelled images as ``predict`` runs it,
clean and under shifts, and ISIC prediction files scored against labels; every
bad input one line, nothing written."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line, run
from model_factory import PER_CLASS, ham_subset, pool_model

from skinfeat.core.classes import CLASSES
from skinfeat.core.metrics import SCALARS, classification_metrics
from skinfeat.core.paths import runs_dir
from skinfeat.features.store import read_features
from skinfeat.heads.inference import decide
from skinfeat.model.store import load_model


@pytest.fixture(scope="module")
def pool(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000)


def image_folder(tmp_path, ham10000, per_class=4, skip=PER_CLASS, labels=True):
    """The HAM subset as an ISIC-2018-style layout: images/ plus one-hot ground truth;
    by default images the pool model was not fitted on."""
    manifest = ham_subset(ham10000, per_class, skip)
    folder = tmp_path / "external"
    (folder / "images").mkdir(parents=True)
    for path in manifest.paths:
        shutil.copy(path, folder / "images")
    if labels:
        with open(folder / "truth.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", *CLASSES])
            for image_id, label in zip(manifest.image_ids, manifest.labels):
                writer.writerow([image_id] + [int(c == label) for c in range(len(CLASSES))])
    return folder, manifest


def forgetful(model, where):
    """A copy of ``model`` as an older skinfeat saved it: without the record of its training images."""
    copy = Path(shutil.copytree(model, where))
    manifest = json.loads((copy / "model.json").read_text())
    del manifest["training"]["seen"]
    (copy / "model.json").write_text(json.dumps(manifest))
    (copy / "seen.npz").unlink()
    return copy


def test_metrics_equal_fit_heads_on_the_same_rows(pool, ham10000, tmp_path):
    """The model's own features of its training images, scored by the fitted head
    (as `fit` scores), give the metrics evaluate computes from the images (a model
    that does not record its training images: evaluate cannot refuse them)."""
    folder, manifest = image_folder(tmp_path, ham10000, skip=0)
    old = forgetful(pool["model"], tmp_path / "old")
    out = run("evaluate", "--model", old, "--images", folder / "images", "--labels",
              folder / "truth.csv", "--format", "json", "--no-progress")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    fs = read_features(pool["features"], with_views=False)
    model = load_model(pool["model"])
    order = [list(fs.image_ids).index(i) for i in sorted(manifest.image_ids)]
    proba = model.predict_proba(fs.features[order])
    offsets = np.zeros(len(CLASSES))
    offsets[np.asarray(model.head.classes_, int)] = model.head.class_offsets_
    want = classification_metrics(fs.labels[order].astype(int), proba, decide(proba, offsets))
    assert got["n"] == len(order) == 28
    for name in SCALARS:
        assert got["clean"][name] == pytest.approx(want[name], abs=1e-4), name
    assert got["clean"]["confusion"] == want["confusion"]
    assert got["clean"]["baseline"]["bmca"] == pytest.approx(1 / 7)
    assert "does not record the images it was fitted on" in out.stderr
    record = json.loads(open(got["record_path"]).read())
    assert record["clean"]["bmca"] == got["clean"]["bmca"] and record["model_dir"] == str(old)


def test_evaluate_refuses_the_images_a_model_was_fitted_on_by_id_and_by_content(pool, ham10000, tmp_path):
    seen_folder, seen = image_folder(tmp_path / "seen", ham10000, per_class=2, skip=0)
    new_folder, new = image_folder(tmp_path / "new", ham10000, per_class=2)
    # One training image under a new name (its content is what the model saw), one new image beside it.
    mixed = tmp_path / "mixed"
    (mixed / "images").mkdir(parents=True)
    shutil.copy(seen.paths[0], mixed / "images" / "ISIC_9999999.jpg")
    for path in new.paths:
        shutil.copy(path, mixed / "images")
    rows = (new_folder / "truth.csv").read_text().splitlines()
    label = int(seen.labels[0])
    rows.append("ISIC_9999999," + ",".join(str(int(c == label)) for c in range(len(CLASSES))))
    (mixed / "truth.csv").write_text("\n".join(rows) + "\n")

    def evaluate(folder, *more):
        return run("evaluate", "--model", pool["model"], "--images", folder / "images", "--labels",
                   folder / "truth.csv", "--no-progress", *more)

    line = error_line(evaluate(seen_folder))
    assert f"was fitted on all 14 labelled images of {seen_folder / 'images'} (by image id or file content" in line
    assert "evaluate on images it was not fitted on" in line
    line = error_line(evaluate(mixed))
    assert "was fitted on 1 of the 15 labelled images" in line and "e.g. ISIC_9999999" in line
    assert "pass --unseen-only to score the 14 others" in line
    assert not list(runs_dir().glob("*.json"))  # nothing recorded
    result = evaluate(mixed, "--unseen-only", "--format", "json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["n"] == 14 and scored["left_out"] == 1 and "ISIC_9999999" not in scored.get("image_ids", [])
    table = evaluate(mixed, "--unseen-only")
    assert "14 labelled images of images (1 more left out: the model was fitted on them)" in table.stdout
    assert error_line(evaluate(seen_folder, "--unseen-only")).startswith(f"Error: model {pool['model']} was fitted on all")
    # The model records them compactly: ids and 16 hex digits of each file's sha256.
    with np.load(Path(pool["model"]) / "seen.npz") as npz:
        assert len(npz["image_id"]) == len(npz["content"]) == 28 and {len(h) for h in npz["content"]} == {16}
    # The leaderboard's test column names the data and its count.
    fitted = run("fit", "--head", "logreg", "--features", pool["features"], "--cv", "2", "-q", "--out", tmp_path / "m")
    assert fitted.exit_code == 0, fitted.output
    assert run("evaluate", "--model", tmp_path / "m", "--images", mixed / "images", "--labels", mixed / "truth.csv",
               "--no-progress", "--unseen-only").exit_code == 0
    row = next(line for line in run("compare").stdout.splitlines() if "logreg" in line)
    assert f"{json.loads(result.stdout)['clean']['bmca']:.3f} images (n=14)" in row


def test_table_with_shifts_and_the_worst_case(pool, ham10000, tmp_path):
    folder, _ = image_folder(tmp_path, ham10000)
    out = run("evaluate", "--model", pool["model"], "--images", folder / "images", "--labels",
              folder / "truth.csv", "--shift", "zoom:2", "--shift", "pad", "--no-progress")
    assert out.exit_code == 0, out.output
    text = out.stdout
    for needed in ("BMCA", "always-NV", "macro AUC", "recall", "confusion", "zoom:2", "pad", "worst"):
        assert needed in text, needed
    rows = {line.split()[0]: line.split()[1:3] for line in text.splitlines()
            if line.split() and line.split()[0] in ("clean", "zoom:2", "pad", "worst")}
    worst = min(float(rows[n][0]) for n in ("zoom:2", "pad"))
    assert float(rows["worst"][0]) == worst
    # The record goes where compare and report read runs; it names the data set.
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert len(records) == 1 and records[0]["schema"] == "skinfeat-evaluation"
    assert records[0]["dataset"] == "images" and set(records[0]["shifts"]) == {"zoom:2", "pad"}


def test_shifted_scores_are_deterministic(pool, ham10000, tmp_path):
    from skinfeat.imaging.shifts import parse_shifts
    from skinfeat.runs.evaluate import evaluate_model

    _, manifest = image_folder(tmp_path, ham10000, per_class=2)
    shifts = parse_shifts(["vignette", "jpeg:30"])
    a = evaluate_model(pool["model"], manifest, shifts)
    b = evaluate_model(pool["model"], manifest, shifts)
    assert a["shifts"] == b["shifts"] and a["clean"] == b["clean"]


# ----------------------------------------------------------------------------- prediction files

def test_isic_prediction_file_is_scored_like_the_model(pool, ham10000, tmp_path):
    folder, _ = image_folder(tmp_path, ham10000)
    preds = tmp_path / "preds.csv"
    out = run("predict", "--model", pool["model"], folder / "images", "--format", "isic", "--out", preds)
    assert out.exit_code == 0, out.output
    scored = json.loads(run("evaluate", "--predictions", preds, "--labels", folder / "truth.csv",
                            "--format", "json", "--no-record").stdout)
    model = json.loads(run("evaluate", "--model", pool["model"], "--images", folder / "images", "--labels",
                           folder / "truth.csv", "--format", "json", "--no-progress", "--no-record").stdout)
    # The ISIC file holds the adjusted probabilities: the same decisions, so the same BMCA.
    assert scored["clean"]["bmca"] == pytest.approx(model["clean"]["bmca"])
    assert scored["clean"]["confusion"] == model["clean"]["confusion"]


def _rewrite(path, out, edit):
    rows = list(csv.reader(open(path)))
    rows = edit(rows)
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:-3], "has no row for 3 of the 28 labelled images"),
    (lambda rows: rows + [["ISIC_9999999"] + rows[1][1:]], "has 1 images that --labels does not list (ISIC_9999999)"),
    (lambda rows: [rows[0]] + [[rows[1][0], "0.5", "0.5", "0.5", "0", "0", "0", "0"]] + rows[2:],
     "1 rows whose probabilities are not >= 0 or do not sum to 1"),
    (lambda rows: [rows[0]] + [[rows[1][0], "x"] + rows[1][2:]] + rows[2:], "1 rows with values that are not numbers"),
    (lambda rows: [rows[0][:-1]] + [r[:-1] for r in rows[1:]], "no column 'VASC'"),
])
def test_bad_prediction_files_are_one_line_errors(pool, ham10000, tmp_path, edit, message):
    folder, _ = image_folder(tmp_path, ham10000)
    preds = tmp_path / "preds.csv"
    run("predict", "--model", pool["model"], folder / "images", "--format", "isic", "--out", preds)
    bad = _rewrite(preds, tmp_path / "bad.csv", edit)
    line = error_line(run("evaluate", "--predictions", bad, "--labels", folder / "truth.csv"))
    assert message in line and "bad.csv" in line
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- bad input

def test_unlabelled_images_get_a_drift_summary_and_no_score(pool, ham10000, tmp_path):
    folder, _ = image_folder(tmp_path, ham10000, labels=False)
    result = run("evaluate", "--model", pool["model"], "--images", folder / "images")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"drift summary of 28 unlabelled images ({folder / 'images'})")
    assert "BMCA" not in result.stdout and "look: - (the model keeps no shift-check features" in result.stdout
    (written,) = (tmp_path / "runs").glob("*-drift.json")
    assert json.loads(written.read_text())["schema"] == "skinfeat-drift"
    assert "no runs recorded" in run("compare").output  # a drift summary is not a run on the leaderboard


def test_labels_outside_the_seven_classes_are_refused(pool, ham10000, tmp_path):
    folder, _ = image_folder(tmp_path, ham10000)
    text = open(ham10000 / "HAM10000_metadata.csv").read().splitlines()
    header, rows = text[0], text[1:]
    ids = {p.stem for p in (folder / "images").iterdir()}
    kept = [r for r in rows if r.split(",")[1] in ids]
    kept[0] = kept[0].replace(",mel,", ",melanoma-ish,").replace(",nv,", ",melanoma-ish,").replace(
        ",bkl,", ",melanoma-ish,")
    (folder / "meta.csv").write_text("\n".join([header] + kept) + "\n")
    line = error_line(run("evaluate", "--model", pool["model"], "--images", folder / "images",
                          "--labels", folder / "meta.csv"))
    assert "melanoma-ish" in line and "seven classes" in line
    line = error_line(run("evaluate", "--predictions", folder / "truth.csv", "--labels", folder / "meta.csv"))
    assert "melanoma-ish" in line
    assert not (tmp_path / "runs").exists()


def test_model_without_its_backbone_is_refused(pool, ham10000, tmp_path):
    folder, _ = image_folder(tmp_path, ham10000)
    model = shutil.copytree(pool["model"], tmp_path / "model")
    (model / "backbone.tflite").unlink()
    line = error_line(run("evaluate", "--model", model, "--images", folder / "images", "--labels",
                          folder / "truth.csv"))
    assert "missing backbone.tflite" in line and ("skinfeat export" in line or "skinfeat fit --out" in line)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("shift, message", [("squint", "unknown shift 'squint'"),
                                            ("zoom:0.5", "out of range"), ("rotate", "needs a level")])
def test_unknown_shift_or_level_is_a_usage_error(pool, ham10000, tmp_path, shift, message):
    folder, _ = image_folder(tmp_path, ham10000)
    out = run("evaluate", "--model", pool["model"], "--images", folder / "images", "--labels",
              folder / "truth.csv", "--shift", shift)
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output
    assert not (tmp_path / "runs").exists()


def test_unknown_tta_set_is_a_usage_error(pool, ham10000, tmp_path):
    folder, _ = image_folder(tmp_path, ham10000)
    out = run("evaluate", "--model", pool["model"], "--images", folder / "images", "--labels",
              folder / "truth.csv", "--tta", "lots")
    assert out.exit_code == 2 and "test-time augmentation 'lots' is unknown" in out.output


# ----------------------------------------------------------------------------- shift check and best model

def test_fit_shift_check_leaderboard_and_best_model(pool, ham10000, tmp_path):
    from skinfeat.model.predictor import Predictor

    args = ["--head", "logreg", "--features", pool["features"], "--cv", "2", "--data", ham10000,
            "--shift", "zoom:2", "--shift", "pad", "-q"]
    out = run("fit", *args)
    assert out.exit_code == 0, out.output
    record = json.loads(open(out.stdout.split("record: ")[1].split()[0]).read())
    check = record["shift"]
    assert check["n"] == 14 and set(check["shifts"]) == {"zoom:2", "pad"}
    # The leaderboard's figure is what predict does: fold 0's CV BMCA (cached features, clean view) is the
    # shift check's clean BMCA of the same fold (its images through the exported backbone, as predict runs).
    assert check["clean"]["bmca"] == pytest.approx(record["metrics"]["bmca"]["folds"][0], abs=1e-9)
    assert check["worst"]["bmca"] == min(m["bmca"] for m in check["shifts"].values())
    assert "worst" in out.stdout and "zoom:2" in out.stdout
    cached = sorted((tmp_path / "features" / "shifted").glob("*.npy"))
    assert len(cached) == 3  # clean and the two shifts, shared by every head of this file
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert run("fit", *args).exit_code == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # reused, not recomputed
    board = run("compare").stdout
    worst = f"{check['worst']['bmca']:.3f}/{check['worst']['accuracy']:.3f}"
    assert worst in board and check["worst"]["bmca_shift"] in board
    best = run("compare", "--best", tmp_path / "best")
    assert best.exit_code == 0, best.output
    assert f"best model: {tmp_path / 'best'}" in best.stdout and "worst shift BMCA" in best.stdout
    predictor = Predictor(tmp_path / "best")
    assert predictor.manifest["training"]["shift"]["worst"] == check["worst"]
    again = run("fit", "--head", "logreg", "--features", pool["features"], "--cv", "2", "-q")  # no --shift
    assert again.exit_code == 0, again.output
    row = next(line for line in run("compare").stdout.splitlines() if "logreg" in line)
    carried = row.split("(from run ")[1].split(")")[0]  # the earlier check, said whose
    assert worst in row and carried != row.split()[-1]
    assert json.loads((runs_dir() / f"{carried}.json").read_text())["shift"]["worst"] == check["worst"]


def test_shift_check_needs_the_dataset(pool):
    out = run("fit", "--head", "logreg", "--features", pool["features"], "--cv", "2", "--shift", "zoom:2")
    assert out.exit_code == 2 and "--shift needs --data PATH" in out.output


def test_fit_test_scores_the_saved_model(pool, ham10000, tmp_path):
    folder, _ = image_folder(tmp_path, ham10000, per_class=2, skip=4)
    out = run("fit", "--head", "logreg", "--features", pool["features"], "--cv", "2", "-q", "--out",
              tmp_path / "m", "--test", folder / "images")
    assert out.exit_code == 1 and "none of its 14 images has a label" in out.output
    assert not (tmp_path / "m").exists() and not (tmp_path / "runs").exists()
    out = run("fit", "--head", "logreg", "--features", pool["features"], "--cv", "2", "-q", "--out",
              tmp_path / "m", "--test", folder)
    assert out.exit_code == 0, out.output
    assert "test on external (14 images): BMCA" in out.stdout
    board = run("compare").stdout
    assert "external" in board


# ----------------------------------------------------------------------------- test-time augmentation

def test_predict_tta_set_averages_the_fixed_views(pool, ham10000):
    from skinfeat.imaging.images import decode
    from skinfeat.imaging.tta import TTA_VIEWS
    from skinfeat.model.predictor import load_predictor

    path = ham_subset(ham10000, per_class=1).paths[0]
    model = load_predictor(pool["model"])
    x = model.resized(decode(path))
    views = [x] + [np.ascontiguousarray(TTA_VIEWS[v](x)) for v in ("hflip", "vflip", "rot90")]
    want = model.predict_proba(np.stack(views)).mean(axis=0)
    item, = json.loads(run("predict", "--model", pool["model"], path, "--tta", "flips", "--format", "json").stdout)
    got = np.array([item["probabilities_as_trained"][c] for c in CLASSES])
    assert np.abs(got - want).max() < 1e-5
    assert all(not np.allclose(v, x) for v in views[1:])  # (the pooling backbone is blind to them)
    out = run("predict", "--model", pool["model"], path, "--tta", "lots")
    assert out.exit_code == 2 and "'lots' is not one of 'none', 'flips', 'multiscale', 'views'" in out.output


def test_report_shows_the_shift_check_and_evaluations(pool, ham10000, tmp_path):
    import re

    out = run("fit", "--head", "logreg", "--features", pool["features"], "--cv", "2", "--data", ham10000,
              "--shift", "zoom:2", "--shift", "vignette", "-q", "--out", tmp_path / "m")
    assert out.exit_code == 0, out.output
    folder, _ = image_folder(tmp_path, ham10000, per_class=2, skip=4)
    assert run("evaluate", "--model", tmp_path / "m", "--data", folder, "--shift", "zoom:2",
               "--no-progress").exit_code == 0
    report = run("report", "--out", tmp_path / "r.html", "--map", "pca")
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text()
    table = re.search(r"<table id='shifts'>(.*?)</table>", page, re.S).group(1)
    assert "shift check of the best run (fold 0, 14 images)" in table and "on external (14 images)" in table
    for name in ("clean", "zoom:2", "vignette:1", "worst"):
        assert f"<td>{name}</td>" in table
    assert "alt='shift check'" in page
    board = re.search(r"<table id='leaderboard'>(.*?)</table>", page, re.S).group(1)
    assert "external" in board  # the test column names the evaluated data set
