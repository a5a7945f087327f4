"""Images a model cannot judge, on the real default backbone and real HAM10000 images:
the out-of-distribution flag of ``predict`` and ``evaluate`` (photos that are not
dermoscopy against new HAM10000 images), the drift summary of a folder of unlabelled
images (zoomed images are said to look zoomed), and the refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line, run
from model_factory import ham_subset, once
from PIL import Image
from sklearn.metrics import roc_auc_score

from devtools.photos import photo_paths
from skinfeat.imaging.images import decode
from skinfeat.imaging.shifts import parse_shifts

TRAIN_PER_CLASS = 20  # 140 images, 5 folds
SHIFTS = ("zoom:3", "temperature:1.15", "rotate:30")


@pytest.fixture(scope="module")
def real(skinfeat_home, ham10000):
    """A logreg model on the default backbone's features of 140 HAM10000 images, fitted
    with a shift check and saved (as `skinfeat fit --shift ... --out` does)."""
    from skinfeat.backbones.resolve import DEFAULT_MODULE
    from skinfeat.features.extract import extract_features
    from skinfeat.runs.fit import run_fit

    root = Path(skinfeat_home) / "test_models" / "ood-default"
    with once(root):
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            manifest = ham_subset(ham10000, per_class=TRAIN_PER_CLASS)
            features = extract_features(manifest, DEFAULT_MODULE, out=root / "features.h5", views=0, progress=False)
            run_fit(features.path, "logreg", cv=5, out=root / "model", runs=root / "runs", shift_data=manifest,
                    shifts=parse_shifts(list(SHIFTS)))
            (root / "done").write_text("")
    return root / "model"


def new_ham(ham10000, per_class=4):
    return [str(p) for p in ham_subset(ham10000, per_class=per_class, skip=TRAIN_PER_CLASS).paths]


def test_photos_are_flagged_and_new_ham_images_are_not(real, ham10000):
    from skinfeat.model.predict import predict_paths
    from skinfeat.model.predictor import Predictor

    model = Predictor(real)
    about = json.loads((real / "model.json").read_text())["ood"]
    assert about["method"] == "pca-residual" and about["flagged_out_of_fold"] == pytest.approx(0.05, abs=0.02)
    photos = [str(p) for p in photo_paths()]
    assert len(photos) >= 20, "the photos come from scripts/bootstrap.sh (darknet's and scikit-image's)"
    ham = [p.ood for p in predict_paths(model, new_ham(ham10000))]
    other = [p.ood for p in predict_paths(model, photos)]
    assert roc_auc_score([0] * len(ham) + [1] * len(other), ham + other) >= 0.95
    assert np.mean(np.array(other) > model.ood.threshold) >= 0.8
    assert np.mean(np.array(ham) > model.ood.threshold) <= 0.15


def test_predict_says_which_images_are_unusual(real, ham10000):
    photos = [str(p) for p in photo_paths()[:3]]
    images = new_ham(ham10000, per_class=1)[:3] + photos
    result = run("predict", "--model", real, *images, "--format", "json")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert [item["unusual"] for item in items] == [item["ood_score"] > json.loads(
        (real / "model.json").read_text())["ood"]["threshold"] for item in items]
    assert all(item["unusual"] for item in items[3:])
    assert result.stderr.startswith("unusual: an image unlike the model's training images")
    assert f"{sum(i['unusual'] for i in items)} of 6 images are unusual" in result.stderr
    table = run("predict", "--model", real, *images).stdout.splitlines()
    assert table[0].split()[:3] == ["image", "decision", "unusual"]
    assert [line.split()[2] for line in table[1:]] == ["yes" if i["unusual"] else "no" for i in items]


def test_evaluate_counts_the_unusual_images(real, ham10000, tmp_path):
    from model_factory import write_ham_folder

    data = write_ham_folder(tmp_path / "new", ham10000, [Path(p).stem for p in new_ham(ham10000, per_class=3)])
    result = run("evaluate", "--model", real, "--data", data, "--shift", "zoom:3", "--format", "json", "--no-record")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["clean"]["unusual"]["flagged"] <= 4 and out["clean"]["unusual"]["threshold"] > 0
    assert out["shifts"]["zoom:3"]["unusual"]["flagged"] >= out["clean"]["unusual"]["flagged"]
    text = run("evaluate", "--model", real, "--data", data, "--no-record").stdout
    assert f"unusual: {out['clean']['unusual']['flagged']} of 21 images" in text


def shifted_folder(paths, shift, out):
    """The images at ``paths`` under ``shift``, as PNGs in a folder without labels."""
    out.mkdir()
    for path in paths:
        pixels = shift(decode(path)) if shift else decode(path)
        Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(out / f"{Path(path).stem}.png")
    return out


def test_the_drift_summary_says_what_the_new_images_look_like(real, ham10000, tmp_path):
    paths = new_ham(ham10000, per_class=6)  # 42 images
    shutil.copytree(Path(real).parent / "runs", tmp_path / "runs")  # the model's fit record, for the report
    for shift, want in ((None, "clean"), (parse_shifts(["zoom:3"])[0], "zoom:3")):
        folder = shifted_folder(paths, shift, tmp_path / (want.replace(":", "-")))
        result = run("evaluate", "--model", real, "--images", folder, "--format", "json",
                     env={"SKINFEAT_RUNS": str(tmp_path / "runs")})
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        distance = {r["shift"]: r["distance"] for r in summary["resembles"]}
        nearest, tie = distance[summary["nearest"]], summary["tie"]
        assert summary["n"] == 42 and distance[want] - nearest < tie  # the truth is the nearest, or tied with it
        far = "zoom:3" if want == "clean" else "clean"  # and the other is told apart
        assert distance[far] - nearest > tie
        assert sorted(r["shift"] for r in summary["resembles"]) == sorted(["clean", *SHIFTS])
        assert abs(sum(r["predicted"] for r in summary["class_mix"]) - 1) < 1e-9
        assert summary["class_mix"][1]["training"] == pytest.approx(1 / 7)  # 20 of each class in training
    text = run("evaluate", "--model", real, "--images", folder, "--no-record").stdout
    assert "look: most like the shift check's fold under zoom:3" in text and "unusual:" in text
    assert len(list((tmp_path / "runs").glob("*drift*.json"))) == 2
    report = run("report", "--out", tmp_path / "report.html", env={"SKINFEAT_RUNS": str(tmp_path / "runs")})
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report.html").read_text()
    assert "Outside images without labels (drift)" in page and "alt='drift'" in page
    (record,) = (Path(real).parent / "runs").glob("*-logreg.json")  # the run records what its model carries
    about = json.loads((real / "model.json").read_text())["ood"]
    assert json.loads(record.read_text())["ood"] == {k: v for k, v in about.items() if k != "file"}
    assert f"principal components is above {about['threshold']:.1f}" in page
    assert "look: most like the shift check&#x27;s fold under zoom:3" in page


def test_drift_refusals(real, ham10000, tmp_path):
    few = shifted_folder(new_ham(ham10000, per_class=1), None, tmp_path / "few")
    line = error_line(run("evaluate", "--model", real, "--images", few, "--no-record"))
    assert "has 7 images; the drift summary needs at least 20" in line
    line = error_line(run("evaluate", "--model", real, "--images", few, "--shift", "zoom:2", "--no-record"), 2)
    assert "has no labels: evaluate gives its drift summary, which takes no --shift" in line
    old = tmp_path / "old"
    shutil.copytree(real, old)
    manifest = json.loads((old / "model.json").read_text())
    del manifest["ood"]
    manifest["files"].remove("ood.npz")
    (old / "model.json").write_text(json.dumps(manifest))
    (old / "ood.npz").unlink()
    line = error_line(run("evaluate", "--model", old, "--images", few, "--no-record"))
    assert "has no out-of-distribution score" in line and "refit it with `skinfeat fit --out`" in line
    result = run("predict", "--model", old, new_ham(ham10000, per_class=1)[0])
    assert result.exit_code == 0 and "has no out-of-distribution score" in result.stderr
    assert "unusual" not in result.stdout


def test_the_error_gallery_of_a_real_run(real, ham10000, tmp_path):
    """`explain --errors` on the default backbone's model: its run's most confident wrong
    out-of-fold predictions, two per true class, found in the real HAM10000 folder."""
    out = tmp_path / "errors.png"
    result = run("explain", "--model", real, "--errors", "--data", ham10000, "--grid", "4", "--out", out,
                 env={"SKINFEAT_RUNS": str(Path(real).parent / "runs")})
    assert result.exit_code == 0, result.output
    assert "maps of the 14 most confident wrong out-of-fold predictions (7 true classes)" in result.output
    assert Image.open(out).size[1] > 7 * 200  # one row per true class
