"""``skinfeat ensemble``: stacked and averaged ensembles of recorded runs, scored
on the members' folds with the meta-learner of a fold fitted on the other folds
only (a planted leak is caught), recorded as a leaderboard row, shift checked,
saved as a directory ``predict`` and ``evaluate`` take; bad run lists are one
line and leave nothing behind."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import error_line, run
from model_factory import ham_subset, pool_model

from devtools.synthetic import write_synthetic
from skinfeat.core.classes import CLASSES
from skinfeat.core.metrics import classification_metrics
from skinfeat.core.paths import features_dir, runs_dir
from skinfeat.data.folds import folds_hash
from skinfeat.heads.imbalance import prior_offsets
from skinfeat.heads.inference import decide
from skinfeat.runs.combine import cross_validate, load_members
from skinfeat.runs.compare import leaderboard_rows
from skinfeat.runs.cv import write_oof
from skinfeat.runs.records import read_records, write_record


def data(n=210, seed=0):
    """Image ids, random labels (every class), 5 folds."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"ISIC_{i:07d}" for i in range(n)])
    return ids, rng.permutation(np.arange(n) % 7), rng.permutation(np.arange(n) % 5)


def member(run_id, ids, labels, fold, proba, module="alpha", head="logreg", bmca=0.5):
    """A recorded fit with its oof file, as `skinfeat fit` writes them (proba NaN rows: unscored)."""
    rows = SimpleNamespace(image_ids=ids, labels=labels, lesion_ids=np.char.replace(ids, "ISIC", "HAM"))
    result = SimpleNamespace(oof_proba=proba, oof_pred=np.where(np.isfinite(proba).all(1), proba.argmax(1), -1))
    record = {"run_id": run_id, "created": f"2026-01-01T00:00:0{len(read_records())}", "head": head,
              "settings": f"s-{run_id}", "settings_label": "", "use_views": False,
              "backbone": {"module": module, "feature_dim": 9}, "params": {},
              "features": {"key": f"key-{module}", "path": f"/nowhere/{module}.h5"},
              "folds": {"source": "make_folds(k=5, seed=0)", "k": 5, "sha256": folds_hash(ids, fold)},
              "metrics": {"bmca": {"mean": bmca, "std": 0.0}}}
    record["predictions_file"] = write_oof(record, rows, fold, result)
    write_record(record)
    return record


def informative(labels, strength, rng):
    """Probabilities that favour the true class by ``strength`` (log-odds) in noise."""
    logits = rng.normal(size=(len(labels), 7)) + strength * np.eye(7)[labels]
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def pooled_bmca(labels, result):
    rows = result.oof_pred >= 0
    return classification_metrics(labels[rows], result.oof_proba[rows], result.oof_pred[rows])["bmca"]


def leftovers():
    return sorted(p.name for p in runs_dir().iterdir())


# ----------------------------------------------------------------------------- the nesting

def test_planted_leak_is_caught_and_the_real_stack_scores_at_chance():
    """Members whose probabilities are pure noise for random labels: a meta-learner
    that saw the rows it scores (the planted leak) scores far above chance; the
    stacked CV, whose meta-learner of fold f is fitted on the other folds, does not."""
    ids, labels, fold = data()
    rng = np.random.default_rng(1)
    records = [member(f"noise{m}", ids, labels, fold, rng.dirichlet(np.ones(7), len(ids))) for m in range(4)]
    members = load_members(records)
    honest = cross_validate(members, "stack")
    leaky = cross_validate(members, "stack", fit_rows=lambda m, f: m.scored)
    assert pooled_bmca(labels, leaky) > 0.33  # the leak is visible on this data
    assert pooled_bmca(labels, honest) < 0.25  # chance is 1/7
    assert pooled_bmca(labels, cross_validate(members, "mean")) < 0.25
    out = run("ensemble", "noise0", "noise1", "noise2", "noise3", "-q")
    assert out.exit_code == 0, out.output
    record = json.loads(Path(out.stdout.split("record: ")[1].split()[0]).read_text())
    assert record["metrics"]["bmca"]["mean"] == pytest.approx(np.mean([m["bmca"] for m in honest.fold_metrics]))


# ----------------------------------------------------------------------------- records and leaderboard

def test_mean_and_stack_records_and_leaderboard_rows():
    ids, labels, fold = data()
    rng = np.random.default_rng(2)
    member("20260101-a-logreg", ids, labels, fold, informative(labels, 1.2, rng), "alpha", bmca=0.40)
    member("20260101-b-lightgbm", ids, labels, fold, informative(labels, 1.2, rng), "beta", "lightgbm", 0.41)
    finetuned = informative(labels, 1.2, rng)
    finetuned[fold == 0] = np.nan  # a fine-tuned backbone: fold 0 was its training set
    member("20260101-c-logreg", ids, labels, fold, finetuned, "alpha", bmca=0.42)
    stack = run("ensemble", "20260101-a", "20260101-b", "20260101-c", "-q")
    assert stack.exit_code == 0, stack.output
    assert stack.stdout.startswith("metric") and "record: " in stack.stdout and "confusion" in stack.stdout
    mean = run("ensemble", "20260101-a", "20260101-b", "20260101-c", "--method", "mean")
    assert mean.exit_code == 0, mean.output
    assert "mean of 3 runs" in mean.stderr and "fold 4/4" in mean.stderr
    records = {r["head"]: r for r in read_records()}
    for method in ("stack", "mean"):
        r = records[method]
        assert r["backbone"]["module"] == "alpha + beta" and r["backbone"]["feature_dim"] is None
        assert [m["run_id"] for m in r["members"]] == ["20260101-a-logreg", "20260101-b-lightgbm", "20260101-c-logreg"]
        assert r["folds"]["scored"] == [1, 2, 3, 4] and r["folds"]["sha256"] == folds_hash(ids, fold)
        assert len(r["metrics"]["bmca"]["folds"]) == 4 and set(r["per_class"]) == set(CLASSES)
        assert r["baseline"]["bmca"] == pytest.approx(1 / 7) and np.sum(r["confusion"]) == (fold > 0).sum()
        assert r["metrics"]["bmca"]["mean"] > 0.6  # three independent noisy members: better than each
        with np.load(runs_dir() / r["predictions_file"]) as oof:
            assert np.isnan(oof["proba"][oof["fold"] == 0]).all() and np.isfinite(oof["proba"][oof["fold"] > 0]).all()
    rows = {r["head"]: r for r in leaderboard_rows(read_records())}
    assert rows["stack"]["backbone"] == "alpha + beta" and rows["stack"]["folds"].endswith("fold 1,2,3,4")
    assert rows["stack"]["settings"] == "logreg,lightgbm,logreg"
    assert run("ensemble", "20260101-a", "20260101-b", "20260101-c", "-q").exit_code == 0
    assert len([r for r in leaderboard_rows(read_records()) if r["head"] == "stack"]) == 1  # same setting: newest
    assert len(leaderboard_rows(read_records())) == 5
    top = run("ensemble", "--top", "2", "--method", "mean", "-q")
    assert top.exit_code == 0, top.output
    record = json.loads(Path(top.stdout.split("record: ")[1].split()[0]).read_text())
    assert [m["run_id"] for m in record["members"]] == ["20260101-c-logreg", "20260101-b-lightgbm"]  # best first
    with np.load(runs_dir() / record["predictions_file"]) as oof:
        rows = oof["fold"] == 1
        train = labels[(fold >= 0) & (fold != 1)]
        offsets = 0.85 * prior_offsets(np.bincount(train, minlength=7))  # the heads' prior adjustment
        assert (oof["pred"][rows] == decide(oof["proba"][rows], offsets)).all()
    report = run("report", "--out", runs_dir().parent / "r.html", "--map", "none")
    assert report.exit_code == 0, report.output


# ----------------------------------------------------------------------------- bad run lists

def test_bad_run_lists_are_one_line_and_write_nothing(tmp_path):
    ids, labels, fold = data()
    rng = np.random.default_rng(3)
    member("run-a", ids, labels, fold, informative(labels, 1, rng))
    member("run-b", ids, labels, (fold + 1) % 5, informative(labels, 1, rng), "beta")
    member("run-c", ids[10:], labels[10:], fold[10:], informative(labels[10:], 1, rng), "gamma")
    flipped = labels.copy()
    flipped[:4] = (flipped[:4] + 1) % 7
    member("run-d", ids, flipped, fold, informative(labels, 1, rng), "delta")
    member("run-e", ids, labels, fold, informative(labels, 1, rng), "eps")
    member("run-f", ids, labels, fold, informative(labels, 1, rng), "phi")
    before = leftovers()
    line = error_line(run("ensemble", "run-a", "run-b"), alone=True)
    assert "mix folds" in line and "run-a" in line and "run-b" in line
    line = error_line(run("ensemble", "run-a", "run-c"), alone=True)
    assert "different image sets: 10 labelled images" in line and "ISIC_0000000" in line
    assert "label 4 images differently" in error_line(run("ensemble", "run-a", "run-d"), alone=True)
    assert "no run 'zzz'" in error_line(run("ensemble", "run-a", "zzz"), 2, alone=True)
    assert "starts 6 run ids" in error_line(run("ensemble", "run-", "run-a"), 2, alone=True)
    assert "at least 2 runs, got 1" in error_line(run("ensemble", "run-a"), 2, alone=True)
    assert "given twice" in error_line(run("ensemble", "run-a", "run-a"), 2, alone=True)
    assert "RUN_IDs or --top K, not both" in error_line(run("ensemble", "run-a", "run-e", "--top", "2"), 2, alone=True)
    only0, only1 = (np.where((fold == f)[:, None], informative(labels, 1, rng), np.nan) for f in (0, 1))
    member("run-g", ids, labels, fold, only0, "g")
    member("run-h", ids, labels, fold, only1, "h")
    assert "score only fold 0 in common" in error_line(run("ensemble", "run-a", "run-g"), alone=True)
    assert "no fold is scored by every member" in error_line(run("ensemble", "run-g", "run-h", "--method", "mean"), alone=True)
    before = leftovers()
    (runs_dir() / "run-e.oof.npz").unlink()
    line = error_line(run("ensemble", "run-a", "run-e"), alone=True)
    assert "run run-e has no out-of-fold probabilities" in line and "run-e.oof.npz is missing" in line
    path = runs_dir() / "run-f.oof.npz"
    path.write_bytes(path.read_bytes()[:200])
    line = error_line(run("ensemble", "run-a", "run-f", "--out", tmp_path / "model"), alone=True)
    assert f"run run-f's out-of-fold probabilities {path} are damaged" in line
    line = error_line(run("ensemble", "run-a", "run-g", "--method", "mean", "--out", tmp_path / "model"), alone=True)
    assert "run run-a's features file /nowhere/alpha.h5 is not here" in line  # --out refits members
    assert leftovers() == sorted(set(before) - {"run-e.oof.npz"}) and not (tmp_path / "model").exists()
    mean = run("ensemble", "run-a", "run-g", "--method", "mean", "-q")  # the mean needs no other fold
    assert mean.exit_code == 0, mean.output


# ----------------------------------------------------------------------------- real members end to end

@pytest.fixture(scope="module")
def shifted(skinfeat_home, ham10000, tmp_path_factory):
    """Two shift-checked logreg fits (no views) on the pool backbone's features of
    28 HAM images, and `ensemble --top 2 --out`, built once in their own folders."""
    pool = pool_model(skinfeat_home, ham10000)
    root = tmp_path_factory.mktemp("ensemble")
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("HOME", skinfeat_home), ("FEATURES", root / "features"), ("RUNS", root / "runs")):
            env.setenv(f"SKINFEAT_{name}", str(value))
        for extra in ((), ("-p", "class_weight=sqrt")):
            out = run("fit", "--head", "logreg", "--features", pool["features"], "--cv", "2", "--no-views", "-q",
                      "--data", ham10000, "--shift", "zoom:2", "--shift", "pad", *extra)
            assert out.exit_code == 0, out.output
        cached = sorted((root / "features" / "shifted").iterdir())
        out = run("ensemble", "--top", "2", "--out", root / "ens", "-q")  # shift check from the members' cache
        assert out.exit_code == 0, out.output
    record = json.loads(Path(out.stdout.split("record: ")[1].split()[0]).read_text())
    return SimpleNamespace(root=root, model=root / "ens", stdout=out.stdout, record=record, cached=cached,
                           features=pool["features"],
                           cached_after=sorted((root / "features" / "shifted").iterdir()))


def use_runs(shifted):
    shutil.copytree(shifted.root / "runs", runs_dir())
    shutil.copytree(shifted.root / "features", features_dir())


def test_ensemble_shift_check_from_the_members_cache(shifted):
    assert shifted.cached_after == shifted.cached  # nothing recomputed
    record, check = shifted.record, shifted.record["shift"]
    assert check["fold"] == 0 and check["n"] == 14 and set(check["shifts"]) == {"zoom:2", "pad"}
    assert check["worst"]["bmca"] == min(m["bmca"] for m in check["shifts"].values())
    # clean images through the TFLite members and the fold-0 meta-learner: the CV's fold-0 figure
    assert check["clean"]["bmca"] == pytest.approx(record["metrics"]["bmca"]["folds"][0], abs=1e-6)
    assert "worst" in shifted.stdout and f"model: {shifted.model}" in shifted.stdout
    use_runs(shifted)
    board = run("compare").stdout
    assert f"{check['worst']['bmca']:.3f}/{check['worst']['accuracy']:.3f}" in board and " stack" in board
    shutil.rmtree(features_dir() / "shifted")
    again = run("ensemble", "--top", "2", "--method", "mean", "-q")  # no images given, nothing cached
    assert again.exit_code == 0 and "note: no shift check of the ensemble" in again.stderr
    assert "shift check" not in again.stdout


def test_ensemble_directory_predict_and_evaluate(shifted, ham10000, tmp_path):
    from skinfeat.imaging.images import decode
    from skinfeat.model.ensemble_dir import EnsemblePredictor, stack_features
    from skinfeat.model.predictor import Predictor

    model = EnsemblePredictor(shifted.model)
    assert model.manifest["format"] == "skinfeat-ensemble" and len(model.members) == 2
    assert [Predictor(shifted.model / "members" / str(i)).manifest["training"]["run_id"] for i in (0, 1)] == \
        [m["run_id"] for m in shifted.record["members"]]
    images = ham_subset(ham10000, per_class=1, skip=6)
    item = json.loads(run("predict", "--model", shifted.model, *images.paths, "--format", "json").stdout)
    got = np.array([[i["probabilities_as_trained"][c] for c in CLASSES] for i in item])
    assert np.abs(got - model.probabilities(images.paths)).max() < 1e-5
    assert [i["top"][0]["class"] for i in item] == [CLASSES[k] for k in np.argmax(model.head.adjust(got), axis=1)]
    (tmp_path / "images").mkdir()
    for path in images.paths:
        shutil.copy(path, tmp_path / "images")
    with open(tmp_path / "truth.csv", "w") as f:
        f.write("image," + ",".join(CLASSES) + "\n")
        f.writelines(f"{i}," + ",".join(str(int(c == y)) for c in range(7)) + "\n"
                     for i, y in zip(images.image_ids, images.labels))
    evaluated = run("evaluate", "--model", shifted.model, "--images", tmp_path / "images",
                    "--labels", tmp_path / "truth.csv", "--shift", "pad", "--no-progress", "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert result["n"] == 7 and result["model_run_id"] == shifted.record["run_id"] and result["head"] == "stack"
    want = classification_metrics(np.asarray(images.labels), model.probabilities(images.paths))
    assert result["clean"]["top3"] == want["top3"] and set(result["shifts"]) == {"pad"}
    assert "is an ensemble of 2 models" in error_line(run("export", "--model", shifted.model), alone=True)
    assert "members/0" in error_line(run("explain", "--model", shifted.model, images.paths[0]), alone=True)
    tta, = json.loads(run("predict", "--model", shifted.model, images.paths[0], "--tta", "--format", "json").stdout)
    members = np.stack([m.predict_tta(decode(images.paths[0]))[None] for m in model.members])
    want = model.head(stack_features(members))[0]  # each member's own training views, then the meta-learner
    assert np.abs(np.array([tta["probabilities_as_trained"][c] for c in CLASSES]) - want).max() < 1e-5


def test_mean_with_a_shift_check_on_the_data_and_as_the_best_run(shifted, ham10000, tmp_path):
    from skinfeat.core.errors import DataError
    from skinfeat.runs.save import save_best

    use_runs(shifted)
    mean = run("ensemble", "--top", "2", "--method", "mean", "--data", ham10000, "--shift", "zoom:2", "-q")
    assert mean.exit_code == 0, mean.output
    record = json.loads(Path(mean.stdout.split("record: ")[1].split()[0]).read_text())
    assert set(record["shift"]["shifts"]) == {"zoom:2"} and record["head"] == "mean"
    fit = run("fit", "--head", "logreg", "--features", shifted.features, "--cv", "2", "--no-views", "-q",
              "--metadata", "age,sex,localization", "--data", ham10000, "--shift", "zoom:2", "--shift", "pad")
    assert fit.exit_code == 0, fit.output
    with_metadata = json.loads(Path(fit.stdout.split("record: ")[1].split()[0]).read_text())
    stack = run("ensemble", shifted.record["members"][0]["run_id"], with_metadata["run_id"], "-q")
    assert stack.exit_code == 0, stack.output  # the metadata columns go with every shifted image
    assert set(json.loads(Path(stack.stdout.split("record: ")[1].split()[0]).read_text())["shift"]["shifts"]) == \
        {"zoom:2", "pad"}
    saved = run("ensemble", shifted.record["members"][0]["run_id"], with_metadata["run_id"], "--out",
                tmp_path / "meta", "-q")
    assert saved.exit_code == 0, saved.output  # a member with metadata: the ensemble asks for it
    images = [str(p) for p in sorted((Path(ham10000) / "images").glob("*.jpg"))[:2]]
    line = error_line(run("predict", "--model", tmp_path / "meta", *images), alone=True)
    assert "fitted with metadata (age, localization, sex)" in line
    out = run("predict", "--model", tmp_path / "meta", "--metadata", Path(ham10000) / "HAM10000_metadata.csv",
              *images)
    assert out.exit_code == 0, out.output
    assert len(out.stdout.splitlines()) == 1 + 2  # the header, then one line per image
    for member in record["members"]:  # compare --best when an ensemble is the best run, its members gone
        (runs_dir() / f"{member['run_id']}.json").unlink()
    with pytest.raises(DataError, match=f"ensemble {record['run_id']}: the records of its members .* are gone"):
        save_best([record], tmp_path / "best")
    assert not (tmp_path / "best").exists()


def damage_model_json(directory, **changes):
    manifest = json.loads((directory / "model.json").read_text())
    for key, value in changes.items():
        manifest[key] = value(manifest[key]) if callable(value) else value
    (directory / "model.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda d: damage_model_json(d, method="median"), 'has method = "median", expected stack or mean'),
    (lambda d: shutil.rmtree(d / "members" / "1"), "its members/1 cannot be loaded (model directory"),
    (lambda d: damage_model_json(d, members=lambda m: [dict(m[0], dir="members/1"), dict(m[1], dir="members/0")]),
     'expected {"dir": "members/0"'),
    (lambda d: damage_model_json(d, members=lambda m: [dict(m[0], run_id=m[1]["run_id"]), m[1]]),
     "its members/0 is not the model of run"),
    (lambda d: (d / "state.npz").write_bytes(b"PK\3\4"), "its meta-learner (state.npz) cannot be loaded"),
    (lambda d: damage_model_json(d, format_version=2), "ensemble format version 2, this skinfeat reads version 1"),
])
def test_damaged_ensemble_directory_is_one_line(shifted, ham10000, tmp_path, damage, message):
    shutil.copytree(shifted.model, tmp_path / "bad", symlinks=True)
    damage(tmp_path / "bad")
    line = error_line(run("predict", "--model", tmp_path / "bad", ham_subset(ham10000, 1).paths[0]))
    assert message in line and str(tmp_path / "bad") in line


def test_compare_fit_ensemble_fills_in_the_top_runs_once():
    features_dir().mkdir(parents=True)
    write_synthetic(features_dir() / "alpha.h5", counts=(30, 150, 20, 15, 30, 10, 10), dim=8,
                    separation=2.0, module="alpha", seed=5)
    result = run("compare", "--fit", "--heads", "logreg,lightgbm", "--cv", "3", "--ensemble", "2")
    assert result.exit_code == 0, result.output
    assert "fitting the stacked ensemble of the top 2 runs" in result.stderr
    rows = leaderboard_rows(read_records())
    stack = next(r for r in rows if r["head"] == "stack")
    assert stack["backbone"] == "alpha" and sorted(stack["settings"].split(",")) == ["lightgbm", "logreg"]
    assert any(line.split()[1:3] == ["alpha", "stack"] for line in result.stdout.splitlines())
    again = run("compare", "--fit", "--heads", "logreg,lightgbm", "--cv", "3", "--ensemble", "2")
    assert "fitting" not in again.stderr and len(list(runs_dir().glob("*.json"))) == 3
