"""``skinfeat fit`` as a user runs it: records, saved models, and bad input."""

import json

import click
import h5py
import numpy as np
import pytest
from helpers import run

from devtools.synthetic import synthetic_feature_set, write_synthetic
from skinfeat.cli import cli
from skinfeat.core.errors import ModelError
from skinfeat.core.paths import runs_dir
from skinfeat.data.split import write_folds
from skinfeat.model.store import load_model

SMALL = (30, 150, 20, 15, 30, 10, 10)  # 265 images, HAM10000-like imbalance


@pytest.fixture
def features(tmp_path):
    return write_synthetic(tmp_path / "syn.h5", counts=SMALL, dim=16, separation=2.0, seed=1), tmp_path / "syn.h5"


def one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: "), result.output
    return lines[-1]


def test_fit_prints_metrics_with_baseline_and_writes_one_record(features):
    _, path = features
    result = run("fit", "--head", "logreg", "--features", path, "--cv", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == "metric       mean ± std    always-NV"
    bmca = next(line for line in out if line.startswith("BMCA"))
    assert float(bmca.split()[1]) > 0.9 and bmca.endswith("0.143")
    assert "fold 3/3: BMCA" in result.stderr
    records = list(runs_dir().glob("*.json"))
    assert len(records) == 1 and out[-1] == f"record: {records[0]}"
    record = json.loads(records[0].read_text())
    assert record["schema"] == "skinfeat-run" and record["head"] == "logreg"
    assert record["backbone"]["module"] == "synthetic" and record["backbone"]["feature_dim"] == 16
    assert record["params"]["class_weight"] == "none" and record["params"]["adjust"] == "prior"
    assert record["folds"]["source"] == "make_folds(k=3, seed=0)" and len(record["folds"]["sha256"]) == 64
    assert set(record["metrics"]["bmca"]) == {"mean", "std", "folds"} and len(record["metrics"]["bmca"]["folds"]) == 3
    assert record["baseline"]["accuracy"] == pytest.approx(150 / 265, abs=0.02)
    assert len(record["timings"]["fit_seconds"]) == 3 and record["model_dir"] is None
    mel = record["operating_points"]["melanoma"]  # MEL vs rest, pooled, with intervals, printed
    assert mel["n_positive"] == 30 and mel["auc"]["low"] <= mel["auc"]["value"] <= mel["auc"]["high"]
    assert any(line.startswith("melanoma (MEL vs rest, 30 positive): AUC ") for line in out)


def test_same_folds_for_the_same_images_by_default(features):
    _, path = features
    run("fit", "--head", "logreg", "--features", path, "-q")
    run("fit", "--head", "lightgbm", "--features", path, "-q", "-p", "n_estimators=20")
    folds = {json.loads(p.read_text())["folds"]["sha256"] for p in runs_dir().glob("*.json")}
    assert len(folds) == 1


def test_folds_file_is_used(features, tmp_path):
    fs, path = features
    write_folds(tmp_path / "folds.csv", fs, np.arange(len(fs)) % 1 + _lesion_folds(fs, 4))
    result = run("fit", "--head", "logreg", "--features", path, "--folds", tmp_path / "folds.csv", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads(next(runs_dir().glob("*.json")).read_text())
    assert record["folds"]["source"] == str(tmp_path / "folds.csv") and record["folds"]["k"] == 4


def _lesion_folds(fs, k):
    _, index = np.unique(fs.lesion_ids, return_inverse=True)
    return index % k


def test_views_train_on_every_view_and_the_clean_view_is_scored(tmp_path):
    path = tmp_path / "views.h5"
    write_synthetic(path, counts=SMALL, dim=16, separation=2.0, views=2, seed=2)
    result = run("fit", "--head", "softmax", "--features", path, "--cv", "3", "-p", "max_epochs=15")
    assert result.exit_code == 0, result.output
    assert "training on 3 views, scored on the clean view" in result.stderr
    record = json.loads(next(runs_dir().glob("*.json")).read_text())
    assert record["use_views"] is True and record["metrics"]["bmca"]["mean"] > 0.9
    modes = record["modes"]
    assert modes["scored"] == "none" and modes["none"]["bmca"] == pytest.approx(record["metrics"]["bmca"]["mean"])
    d = modes["views"]["difference"]
    assert d["difference"] == pytest.approx(modes["views"]["bmca"] - modes["none"]["bmca"])
    assert d["low"] <= d["difference"] <= d["high"]
    assert "scored on the clean view (as predict runs it): BMCA" in result.stdout
    run("fit", "--head", "softmax", "--features", path, "--cv", "3", "-p", "max_epochs=15", "--no-views")
    labels = {json.loads(p.read_text())["settings_label"] for p in runs_dir().glob("*.json")}
    assert labels == {"max_epochs=15", "max_epochs=15,no-views"}
    assert "softmax +2 views" in run("compare").stdout


def test_the_cv_scores_each_test_images_clean_view_with_a_head_trained_on_every_view(tmp_path):
    from skinfeat.data.folds import resolve_folds
    from skinfeat.features.store import read_features
    from skinfeat.heads import make_head
    from skinfeat.heads.inference import in_classes_order
    from skinfeat.runs.cv import cross_validate, training_rows

    path = tmp_path / "views.h5"
    write_synthetic(path, counts=SMALL, dim=16, separation=1.0, views=2, seed=3)
    fs = read_features(path)
    folds = resolve_folds(fs, None, 3)
    result = cross_validate(fs, "logreg", folds=folds)
    for f in range(3):
        train, test = np.flatnonzero(folds.fold != f), np.flatnonzero(folds.fold == f)
        X, y, groups = training_rows(fs, train, use_views=True)
        assert len(X) == 3 * len(train)
        head = make_head("logreg").fit(X, y, groups=groups)
        want = in_classes_order(head.predict_proba(fs.features[test]), head.classes_)
        np.testing.assert_allclose(result.oof_proba[test], want, atol=1e-6)
    assert (result.oof_views >= 0).all() and (result.oof_views != result.oof_pred).any()


@pytest.mark.parametrize("head", ["logreg", "lightgbm", "softmax"])
def test_out_saves_a_model_that_reloads_and_predicts(features, tmp_path, head):
    fs, path = features
    result = run("fit", "--head", head, "--features", path, "--cv", "2", "--out", tmp_path / "model",
                 "-p", "max_epochs=15" if head == "softmax" else "random_state=0")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"model: {tmp_path / 'model'}"
    model = load_model(tmp_path / "model", current_fingerprint=fs.attrs["module_fingerprint"])
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["classes"] == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert manifest["backbone"]["module_fingerprint"] == fs.attrs["module_fingerprint"]
    assert manifest["backbone"]["input_size"] == 224 and manifest["backbone"]["resize"] == "bilinear"
    assert not list((tmp_path / "model").glob("*.pkl")) and not list((tmp_path / "model").glob("*.joblib"))
    proba = model.predict_proba(fs.features)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert np.mean(proba.argmax(1) == fs.labels) > 0.9


def test_loading_refuses_a_changed_backbone_fingerprint(features, tmp_path):
    _, path = features
    run("fit", "--head", "logreg", "--features", path, "--cv", "2", "--out", tmp_path / "m", "-q")
    with pytest.raises(ModelError, match=r"fitted on features of module 'synthetic' with fingerprint "
                                         r"\w{12}, but that module now has fingerprint 0123456789ab; .*re-fit"):
        load_model(tmp_path / "m", current_fingerprint="0123456789abcdef")
    (tmp_path / "m" / "state.npz").unlink()
    with pytest.raises(ModelError, match="incomplete or damaged"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelError, match="holds no model.json"):
        load_model(tmp_path)


# --- bad input: one clear line each ---------------------------------------------------

def test_foreign_hdf5_file(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    result = run("fit", "--head", "logreg", "--features", tmp_path / "other.h5")
    assert result.exit_code == 1
    assert "is an HDF5 file but not a skinfeat features file" in one_error_line(result)


def test_features_from_another_version(features):
    _, path = features
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    result = run("fit", "--head", "logreg", "--features", path)
    assert result.exit_code == 1
    assert "has features format version 99" in one_error_line(result)


def test_nan_features(features):
    _, path = features
    with h5py.File(path, "a") as f:
        f["features"][3, 0] = np.nan
    result = run("fit", "--head", "logreg", "--features", path)
    assert result.exit_code == 1
    assert "holds NaN or inf features for 1 images" in one_error_line(result)


def test_class_with_fewer_images_than_folds(tmp_path):
    write_synthetic(tmp_path / "few.h5", counts=(30, 150, 20, 15, 30, 3, 10), dim=8, seed=3)
    result = run("fit", "--head", "logreg", "--features", tmp_path / "few.h5", "--cv", "5")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "Error: DF has 3 labelled image(s), fewer than the 5 folds, so some test folds would have "
        "none; use --cv 3 or fewer, or add images of that class")


def test_folds_for_other_images(features, tmp_path):
    other = synthetic_feature_set(counts=SMALL, dim=4, seed=9)
    other.image_ids = np.array([f"OTHER_{i}" for i in range(len(other))], dtype=object)
    write_folds(tmp_path / "folds.csv", other, np.arange(len(other)) % 5)
    result = run("fit", "--head", "logreg", "--features", features[1], "--folds", tmp_path / "folds.csv")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "has no fold for 265 of the 265 labelled images" in line and "skinfeat data split" in line


def test_folds_that_split_a_lesion(features, tmp_path):
    fs, path = features
    write_folds(tmp_path / "leaky.csv", fs, np.arange(len(fs)) % 5)  # ignores lesions
    result = run("fit", "--head", "logreg", "--features", path, "--folds", tmp_path / "leaky.csv")
    assert result.exit_code == 1
    assert "expected every lesion in one fold" in one_error_line(result)


def test_unknown_head_suggests_a_close_name(features):
    result = run("fit", "--head", "logrek", "--features", features[1])
    assert result.exit_code == 2
    assert one_error_line(result) == ("Error: unknown head 'logrek'; did you mean 'logreg'? "
                                      "expected one of: softmax, logreg, lightgbm, knn")


def test_folds_and_cv_together(features, tmp_path):
    result = run("fit", "--head", "logreg", "--features", features[1], "--cv", "3", "--folds", tmp_path / "f.csv")
    assert result.exit_code == 2
    assert "--folds and --cv both given" in one_error_line(result)


def test_bad_param_syntax(features):
    result = run("fit", "--head", "logreg", "--features", features[1], "-p", "C")
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.output


def test_fit_has_help():
    result = run("fit", "--help")
    assert result.exit_code == 0 and "lesion-grouped cross-validation" in result.output
    assert isinstance(cli, click.Group)


@pytest.mark.parametrize("head", ["softmax", "logreg"])
def test_fit_prints_no_numpy_warnings(features, head):
    """A new user saw numpy's 'divide by zero encountered in log' from a softmax fit."""
    import warnings

    _, path = features
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = run("fit", "--head", head, "--features", path, "--cv", "5", "--param", "max_epochs=3"
                     if head == "softmax" else "alpha=0.05")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output and "divide by zero" not in result.output


def test_a_folds_file_that_holds_every_image_out(features, tmp_path):
    fs, path = features
    write_folds(tmp_path / "out.csv", fs, np.full(len(fs), -1))
    result = run("fit", "--head", "logreg", "--features", path, "--folds", tmp_path / "out.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = one_error_line(result)
    assert "holds out every one of the 265 labelled images" in line and "skinfeat data split --folds 5" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no record written


@pytest.mark.parametrize("flag", ["-q", "--quiet", "--no-progress"])
def test_every_spelling_of_no_progress_silences_the_folds(features, flag):
    loud, quiet = run("fit", "--head", "logreg", "--features", features[1], "--cv", "3"), \
        run("fit", "--head", "logreg", "--features", features[1], "--cv", "3", flag)
    assert loud.exit_code == quiet.exit_code == 0, quiet.output
    assert "fold 1/3" in loud.output and "fold 1/3" not in quiet.output


def test_train_fraction_records_a_label_efficiency_curve(tmp_path):
    """--train-fraction 0.25,1: one record per share, each fold's head trained on that
    share of its training lesions (every class kept), scored on the whole test fold,
    each with its interval; the curve printed; share 1 is the plain fit's setting."""
    fs = write_synthetic(tmp_path / "syn.h5", counts=(60, 300, 40, 30, 60, 20, 20), dim=16, separation=0.8,
                         seed=2)
    result = run("fit", "--head", "logreg", "--features", tmp_path / "syn.h5", "--cv", "3",
                 "--train-fraction", "1,0.25")
    assert result.exit_code == 0, result.output
    records = sorted((json.loads(p.read_text()) for p in runs_dir().glob("*.json")), key=lambda r: r["train_fraction"])
    assert [r["train_fraction"] for r in records] == [0.25, 1.0]
    small, whole = records
    assert small["settings_label"] == "train_fraction=0.25" and whole["settings_label"] == ""
    n_lesions = len(set(fs.lesion_ids))
    for f, (a, b) in enumerate(zip(small["train_images"], whole["train_images"])):
        assert 0.15 < a / b < 0.35, (f, a, b)  # a quarter of the lesions, so about a quarter of the images
    assert sum(whole["train_images"]) == 2 * len(fs.labels) and n_lesions < len(fs.labels)
    assert small["metrics"]["bmca"]["mean"] < whole["metrics"]["bmca"]["mean"]  # fewer labels, less skill
    assert small["intervals"]["bmca"]["high"] - small["intervals"]["bmca"]["low"] > 0
    curve = result.stdout.split("label efficiency")[1].splitlines()
    assert curve[2].split()[:3] == ["0.25", f"{sum(small['train_images']) / 3:.0f}",
                                    f"{small['metrics']['bmca']['mean']:.3f}"]
    plain = run("fit", "--head", "logreg", "--features", tmp_path / "syn.h5", "--cv", "3")
    assert json.loads(open(plain.stdout.split("record: ")[1].split()[0]).read())["settings"] == whole["settings"]
    from skinfeat.apps.report import write_report

    report = write_report(tmp_path / "report.html", map_method="none")
    assert "label efficiency" in report.figures  # the curve, plotted for the run shown


@pytest.mark.parametrize("value, message", [
    ("0", "got 0; expected shares in (0, 1]"), ("1.5", "got 1.5; expected shares in (0, 1]"),
    ("0.1,x", "got 'x'; expected shares in (0, 1] separated by commas"),
])
def test_train_fraction_bad_values(features, value, message):
    result = run("fit", "--head", "logreg", "--features", features[1], "--cv", "3", "--train-fraction", value)
    assert result.exit_code == 2 and message in result.output
    assert not runs_dir().exists() or not list(runs_dir().glob("*.json"))


def test_train_fraction_that_leaves_a_class_without_lesions_writes_nothing(features, tmp_path):
    result = run("fit", "--head", "logreg", "--features", features[1], "--cv", "3", "--train-fraction", "0.01,1")
    assert result.exit_code == 1
    assert "--train-fraction 0.01 keeps none of the" in one_error_line(result)
    assert "expected a fraction of at least" in one_error_line(result)
    assert not runs_dir().exists() or not list(runs_dir().glob("*.json"))
    out = run("fit", "--head", "logreg", "--features", features[1], "--cv", "3", "--train-fraction", "0.5",
              "--out", tmp_path / "model")
    assert out.exit_code == 2 and "expected no --out with it" in out.output


def test_knn_head_fits_records_its_k_and_saves_a_model(tmp_path):
    """The knn probe through `skinfeat fit`: each fold's k (chosen on its inner
    split) recorded and printed, a model directory saved."""
    write_synthetic(tmp_path / "syn.h5", counts=(60, 300, 40, 30, 60, 20, 20), dim=16, separation=1.2, seed=3)
    result = run("fit", "--head", "knn", "--features", tmp_path / "syn.h5", "--cv", "3", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    record = json.loads(open(result.stdout.split("record: ")[1].split()[0]).read())
    assert len(record["chosen"]) == 3 and all(c["k"] in (5, 10, 20, 40) for c in record["chosen"])
    assert "chosen on each fold's inner lesion-grouped split: k " in result.stdout
    assert record["metrics"]["bmca"]["mean"] > 0.6
    assert load_model(tmp_path / "m").head.k_ in (5, 10, 20, 40)
    logreg = run("fit", "--head", "logreg", "--features", tmp_path / "syn.h5", "--cv", "3")
    alphas = json.loads(open(logreg.stdout.split("record: ")[1].split()[0]).read())["chosen"]
    assert len(alphas) == 3 and all(c["alpha"] in (0.15, 0.05, 0.015) for c in alphas)


def test_folds_that_test_a_handful_of_a_class_are_noted(tmp_path):
    from skinfeat.data.folds import THIN, thin_classes

    path = tmp_path / "small.h5"
    write_synthetic(path, counts=SMALL, dim=8, separation=2.0, seed=4)  # 10 DF, 10 VASC: 3-4 per fold of 3
    result = run("fit", "--head", "logreg", "--features", path, "--cv", "3", "-q")
    assert result.exit_code == 0, result.output
    note, = [line for line in result.stderr.splitlines() if line.startswith("note: fold")]
    assert f"fewer than {THIN} of a class in some fold" in note and ("DF" in note or "VASC" in note)
    labels = np.repeat(np.arange(7), 20)
    fold = np.tile(np.arange(4), 35)  # 5 of every class in each of 4 folds: enough
    assert thin_classes(labels, fold) is None
    fold[(labels == 5) & (fold == 2)] = 1  # fold 2 now tests no DF at all
    assert thin_classes(labels, fold).startswith("note: fold 2 tests 0 DF images")
