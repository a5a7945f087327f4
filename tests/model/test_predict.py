"""``skinfeat predict`` and ``export``: images -> classes from a self-contained model
directory, equal to what the same images' extracted features give."""

import csv
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import error_line, run
from model_factory import ham_subset, lite0_model, pool_model
from PIL import Image

from skinfeat.core.calibration import calibrated
from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import DataError
from skinfeat.features.store import read_features
from skinfeat.model.predict import isic_row, predict_paths
from skinfeat.model.predictor import HeadFunction, Predictor, load_predictor

# Probabilities from images vs from the same images' extracted features.
PROBA_TOLERANCE = 1e-4  # measured: 5e-6 (EfficientNet-Lite0 on 300 HAM images)
FEATURE_TOLERANCE = 1e-4  # absolute; Lite0 features reach ~6


@pytest.fixture(scope="module")
def pool(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000)


def _paths(info):
    fs = read_features(info["features"], with_views=False)
    return [_find(i) for i in fs.image_ids]


def _find(image_id):
    from helpers import HAM10000

    return HAM10000 / "images" / f"{image_id}.jpg"


def _copy_model(info, tmp_path):
    return shutil.copytree(info["model"], tmp_path / "model")


# ----------------------------------------------------------------------------- agreement

def _encoded(array, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_decode_and_resize_equal_extractions_tensorflow_pipeline():
    """PIL/simplejpeg + numpy against tf.io.decode_image and skinfeat.imaging.augment.resize_tf:
    JPEG pixels exactly (TensorFlow's fast IDCT), every resize policy to ~1e-6."""
    import tensorflow as tf

    from skinfeat.imaging.augment import resize_tf
    from skinfeat.imaging.images import decode, resize

    rng = np.random.default_rng(0)
    files = [_find(i).read_bytes() for i in ("ISIC_0024306", "ISIC_0024310")]
    for h, w in [(150, 200), (450, 600), (224, 224), (37, 500), (1000, 333)]:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        files += [_encoded(pixels, "PNG"), _encoded(pixels, "JPEG", quality=90),
                  _encoded(pixels[..., 0], "JPEG"), _encoded(pixels, "JPEG", subsampling=0)]
    for data in files:
        want = tf.image.convert_image_dtype(tf.io.decode_image(data, channels=3, expand_animations=False),
                                            tf.float32)
        got = decode(data)
        np.testing.assert_array_equal(got, want.numpy())
        for policy in ("squash", "crop", "pad"):
            for size in [(224, 224), (260, 240)]:
                np.testing.assert_allclose(resize(got, size, policy), resize_tf(want, size, policy).numpy(),
                                           rtol=0, atol=2e-6)


def test_lite0_images_give_the_probabilities_of_their_extracted_features(skinfeat_home, ham10000):
    info = lite0_model(skinfeat_home, ham10000)
    model = load_predictor(info["model"])
    fs = read_features(info["features"], with_views=False)
    paths = [_find(i) for i in fs.image_ids]
    images = np.stack([model.load_image(p) for p in paths])
    features = model.backbone(images)
    assert np.abs(features - fs.features).max() < FEATURE_TOLERANCE
    from_images = np.stack([p.proba for p in predict_paths(model, paths)])
    from_features = model.head(fs.features)
    assert np.abs(from_images - from_features).max() < PROBA_TOLERANCE
    assert model.manifest["export"]["max_abs_diff"] < 1e-3
    assert model.input_size == (224, 224) and model.backbone.feature_dim == 1280


def test_pool_images_give_the_probabilities_of_their_features(pool):
    model = load_predictor(pool["model"])
    fs = read_features(pool["features"], with_views=False)
    proba = np.stack([p.proba for p in predict_paths(model, [_find(i) for i in fs.image_ids])])
    assert np.abs(proba - model.head(fs.features)).max() < PROBA_TOLERANCE
    assert np.allclose(proba.sum(axis=1), 1)
    assert model.manifest["numpy_head"]["ok"] and model.head.exact  # the fast numpy head is used


def test_tta_averages_extractions_own_augmented_views(pool, tmp_path, ham10000):
    """--tta uses _augment with seeds (0, v): extraction's seeds for row 0 with seed 0."""
    from skinfeat.features.extract import extract_features

    one = ham_subset(ham10000, per_class=1).subset([0])
    fs = read_features(extract_features(one, pool["module"], out=tmp_path / "one.h5", views=2,
                                        progress=False).path)
    model = load_predictor(pool["model"])
    assert model.tta_views == 2  # the model was trained with 2 views
    want = model.head(np.concatenate([fs.features, fs.views[0]])).mean(axis=0)
    from skinfeat.imaging.images import decode

    got = model.predict_tta(decode(one.paths[0]))
    assert np.abs(got - want).max() < PROBA_TOLERANCE
    assert np.abs(got - model.predict_proba(model.load_image(one.paths[0])[None])[0]).max() > 1e-4
    item, = json.loads(run("predict", "--model", pool["model"], one.paths[0], "--tta", "--format", "json").stdout)
    assert np.abs(np.array([item["probabilities_as_trained"][c] for c in CLASSES]) - want).max() < 1e-5


# ----------------------------------------------------------------------------- CLI

def test_table_shows_the_decision_then_top_k_calibrated_probabilities(pool):
    path = _paths(pool)[0]
    result = run("predict", "--model", pool["model"], path, "--top-k", "2")
    assert result.exit_code == 0, result.output
    header, line = result.stdout.splitlines()
    assert header.split()[:2] == ["image", "decision"] and "calibrated" in header
    model = load_predictor(pool["model"])
    proba = model.predict_proba(model.load_image(path)[None])[0]
    shown = calibrated(proba[None], model.temperature)[0]
    top = np.argsort(-shown)[:2]
    want = ", ".join(f"{FULL_NAMES[CLASSES[i]]} ({CLASSES[i]}) {shown[i]:.3f}" for i in top)
    decision = CLASSES[int(np.argmax(model.head.adjust(proba[None])[0]))]
    unusual = "yes" if model.assess([path])[1][0] > model.ood.threshold else "no"  # the out-of-distribution flag
    assert header.split()[:3] == ["image", "decision", "unusual"]
    assert line == f"{path.stem:<14} {decision:<8}  {unusual:<7}  {want}"


def test_every_output_gives_the_same_calibrated_probabilities_and_decision(pool, tmp_path):
    """The Python API, the table, JSON, CSV and the ISIC file agree for the same images
    (serve and the web page are held to the JSON in their own tests); the model carries
    the temperature its run fitted, and the ISIC file carries the decision scores."""
    paths = _paths(pool)[:12]
    model = load_predictor(pool["model"])
    record = json.loads(Path(pool["record"]).read_text())
    assert model.temperature == pytest.approx(record["calibration"]["temperature"]) and model.temperature != 1
    api = list(predict_paths(model, paths))
    for p in api:
        assert np.allclose(p.probability, calibrated(p.proba[None], model.temperature)[0])
        assert np.argsort(-p.probability).tolist() == np.argsort(-p.proba).tolist()  # order kept
    assert len({p.decision for p in api}) > 1
    out = {fmt: run("predict", "--model", pool["model"], *paths, "--format", fmt, "--top-k", "7").stdout
           for fmt in ("table", "json", "csv", "isic")}
    items = json.loads(out["json"])
    rows = list(csv.DictReader(io.StringIO(out["csv"])))
    isic = list(csv.DictReader(io.StringIO(out["isic"])))
    lines = out["table"].splitlines()[1:]
    for p, item, row, sub, line in zip(api, items, rows, isic, lines, strict=True):
        want = dict(zip(CLASSES, p.probability))
        assert item["decision"]["class"] == row["decision"] == line.split()[1] == p.decision
        assert max(sub, key=lambda c: float(sub[c]) if c in CLASSES else -1) == p.decision
        for c in CLASSES:
            assert item["probabilities"][c] == pytest.approx(want[c], abs=1e-6)
            assert item["decision_scores"][c] == pytest.approx(float(sub[c]), abs=1e-5)  # ISIC rows sum to 1
        by_class = {row[f"class_{r}"]: float(row[f"probability_{r}"]) for r in range(1, 8)}
        assert by_class == pytest.approx(want, abs=1e-6)
        assert [t["class"] for t in item["top"]] == [row[f"class_{r}"] for r in range(1, 8)]
        shown = {code: float(prob) for code, prob in re.findall(r"\((\w+)\) (0\.\d{3}|1\.000)", line)}
        assert shown == pytest.approx(want, abs=5e-4)


def test_a_model_without_a_temperature_says_its_probabilities_are_as_trained(pool, tmp_path):
    model = _copy_model(pool, tmp_path)
    manifest = json.loads((model / "model.json").read_text())
    del manifest["training"]["calibration"]  # a model saved before calibration existed
    (model / "model.json").write_text(json.dumps(manifest))
    path = _paths(pool)[0]
    header, line = run("predict", "--model", model, path, "--top-k", "7").stdout.splitlines()
    assert "as trained" in header and "calibrated" not in header.replace("no calibration", "")
    item, = json.loads(run("predict", "--model", model, path, "--format", "json").stdout)
    assert item["calibrated"] is False and item["probabilities"] == item["probabilities_as_trained"]


def test_isic_csv_of_a_folder_streamed_with_a_bad_image_skipped(pool, tmp_path):
    folder = tmp_path / "photos"
    sub = folder / "more"
    sub.mkdir(parents=True)
    paths = _paths(pool)[:20]
    for i, p in enumerate(paths):
        shutil.copy(p, (folder if i % 2 else sub) / p.name)
    (folder / "notes.txt").write_text("not an image, and not named like one: ignored")
    (folder / "broken.jpg").write_bytes(paths[0].read_bytes()[:2000])  # truncated
    out = tmp_path / "submission.csv"
    result = run("predict", "--model", pool["model"], folder, "--format", "isic", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"skipped {folder / 'broken.jpg'}: " in result.stderr and "damaged image" in result.stderr
    assert result.stderr.strip().endswith(f"wrote {out}: 20 images, 1 skipped")
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert sorted(r[0] for r in rows[1:]) == sorted(p.stem for p in paths)
    for row in rows[1:]:
        assert sum(float(v) for v in row[1:]) == pytest.approx(1, abs=1e-9)


def test_json_and_csv_formats(pool):
    paths = _paths(pool)[:3]
    items = json.loads(run("predict", "--model", pool["model"], *paths, "--format", "json").stdout)
    assert [i["image"] for i in items] == [p.stem for p in paths]
    assert len(items[0]["top"]) == 3 and set(items[0]["probabilities"]) == set(CLASSES)
    assert items[0]["top"][0]["probability"] == max(items[0]["probabilities"].values())
    rows = list(csv.reader(io.StringIO(run("predict", "--model", pool["model"], *paths, "--format", "csv",
                                           "--top-k", "1").stdout)))
    assert rows[0] == ["image", "decision", "unusual", "class_1", "name_1", "probability_1"] and len(rows) == 4
    assert rows[1][1] == items[0]["decision"]["class"] and rows[1][3] == items[0]["top"][0]["class"]
    assert [r[2] for r in rows[1:]] == ["yes" if i["unusual"] else "no" for i in items]


def test_isic_rows_sum_to_one_exactly_at_their_precision():
    for p in np.random.default_rng(0).dirichlet(np.ones(7) * 0.3, 200):
        assert sum(int(v.replace(".", "")) for v in isic_row(p)) == 10**6


# ----------------------------------------------------------------------------- bad input

def test_not_an_image_and_truncated_image_alone_fail_with_one_line(pool, tmp_path):
    text = tmp_path / "report.jpg"
    text.write_text("hello")
    result = run("predict", "--model", pool["model"], text)
    assert error_line(result) == (f"Error: {text} is not an image (not JPEG, PNG, BMP, GIF, TIFF or WebP); "
                                  "expected an image file: remove it or pass images only")
    assert result.output.count("not an image") == 1 and result.stdout == ""
    two = run("predict", "--model", pool["model"], text, text)
    assert error_line(two).startswith("Error: none of the 2 images could be read (e.g. ")
    model = load_predictor(pool["model"])
    with pytest.raises(DataError, match="is not an image"):
        model.load_image(text)
    png = tmp_path / "cut.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 99, 199)).save(buffer, "PNG")
    png.write_bytes(buffer.getvalue()[:60])
    with pytest.raises(DataError, match=r"cut.png is a damaged image \(.*\); expected a complete image"):
        model.load_image(png)


def test_empty_folder_and_missing_path(pool, tmp_path):
    (tmp_path / "empty").mkdir()
    line = error_line(run("predict", "--model", pool["model"], tmp_path / "empty"))
    assert line.startswith(f"Error: folder {tmp_path / 'empty'} holds no images (looked recursively for .bmp,")
    line = error_line(run("predict", "--model", pool["model"], tmp_path / "nope.jpg"))
    assert line == f"Error: {tmp_path / 'nope.jpg'}: no such file or folder; expected image files or folders of images"


@pytest.mark.parametrize("remove, message", [
    ("state.npz", "is missing state.npz (listed in its model.json); copy the whole directory"),
    ("backbone.tflite", "is missing backbone.tflite (listed in its model.json)"),
    ("model.json", "holds no model.json; expected a model directory written by `skinfeat fit --out DIR`"),
])
def test_model_directory_with_parts_missing(pool, tmp_path, remove, message):
    model = _copy_model(pool, tmp_path)
    (model / remove).unlink()
    assert message in error_line(run("predict", "--model", model, _paths(pool)[0]))


def test_model_whose_backbone_changed_since_it_was_fitted(pool, tmp_path, skinfeat_home, ham10000):
    model = _copy_model(pool, tmp_path)
    other = lite0_model(skinfeat_home, ham10000)["model"]
    shutil.copy(f"{other}/backbone.tflite", model / "backbone.tflite")
    line = error_line(run("predict", "--model", model, _paths(pool)[0]))
    assert "backbone.tflite changed since it was exported" in line and "skinfeat export --model" in line
    manifest = json.loads((model / "model.json").read_text())
    manifest["backbone"]["module_fingerprint"] = "0" * 64  # fitted on another backbone's features
    (model / "model.json").write_text(json.dumps(manifest))
    line = error_line(run("predict", "--model", model, _paths(pool)[0]))
    assert "the backbone changed since the model was fitted" in line
    line = error_line(run("export", "--model", model, "--module", pool["module"]))
    assert "has fingerprint" in line and "but the model was fitted on features of fingerprint 000000000000" in line


def test_model_without_exported_backbone_points_to_export(pool, tmp_path):
    model = _copy_model(pool, tmp_path)
    manifest = json.loads((model / "model.json").read_text())
    manifest["export"] = {"skipped": "backbone 'x' could not be found"}
    manifest["files"].remove("backbone.tflite")
    (model / "model.json").write_text(json.dumps(manifest))
    (model / "backbone.tflite").unlink()
    line = error_line(run("predict", "--model", model, _paths(pool)[0]))
    assert "has no exported backbone (backbone 'x' could not be found)" in line
    assert f"run `skinfeat export --model {model}`" in line
    result = run("export", "--model", model, "--module", pool["module"])
    assert result.exit_code == 0 and result.stdout.startswith("exported ")
    assert len(list(predict_paths(Predictor(model), _paths(pool)[:2]))) == 2


def test_prediction_imports_neither_tensorflow_nor_scikit_learn(pool):
    script = ("import sys; from click.testing import CliRunner; from skinfeat.commands.predict import predict; "
              f"r = CliRunner().invoke(predict, ['--model', {pool['model']!r}, {str(_paths(pool)[0])!r}]); "
              "assert r.exit_code == 0, r.output; "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'sklearn', 'lightgbm', 'scipy'}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("repeat", [1, 60])  # output left in the buffer at exit; a write failing mid-run
def test_a_reader_that_closes_the_pipe_ends_it_quietly(pool, repeat, tmp_path):
    """`skinfeat predict ... | head -1` in a shell with pipefail: the first line, exit 0, nothing on stderr.
    The images (28 x ``repeat``) are links in one folder: a command line of 1,680 paths would
    outgrow Linux's 128 KiB per argument in a deeply placed checkout."""
    folder = tmp_path / "images"
    folder.mkdir()
    for r in range(repeat):
        for i, path in enumerate(_paths(pool)):
            (folder / f"{r:03d}-{i:03d}-{Path(path).name}").symlink_to(path)
    command = f"{shlex.quote(sys.executable)} -m skinfeat predict --model {shlex.quote(pool['model'])} " \
              f"--format isic {shlex.quote(str(folder))} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
    assert "Error" not in done.stderr and "Traceback" not in done.stderr and "Exception" not in done.stderr


# ----------------------------------------------------------------------------- heads in numpy

@pytest.mark.parametrize("head, params", [("logreg", {}), ("logreg", {"adjust": "prior", "n_components": 4}),
                                          ("softmax", {"max_epochs": 3}), ("lightgbm", {"n_estimators": 15})])
def test_numpy_heads_equal_the_fitted_heads(tmp_path, head, params):
    from devtools.synthetic import synthetic_feature_set
    from skinfeat.heads import make_head
    from skinfeat.model.format import read_manifest
    from skinfeat.model.store import load_model, save_model

    fs = synthetic_feature_set(counts=(30, 60, 20, 0, 20, 10, 10), dim=12, seed=3)
    X = fs.features.copy()
    X[:20, 0] = 0.0  # exact zeros: LightGBM's zero handling
    fitted = make_head(head, **params).fit(X, fs.labels)
    save_model(tmp_path / "m", fitted, head, {"module": "synthetic"})
    got = HeadFunction(tmp_path / "m", read_manifest(tmp_path / "m"))(X)
    want = load_model(tmp_path / "m").predict_proba(X)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[:, 3].max() == 0  # AKIEC was not in the training data


def test_lightgbm_text_model_with_missing_values(tmp_path):
    import lightgbm as lgb

    from skinfeat.heads.lgbm_text import LightGBMText

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6))
    X[:60, 0], X[60:90, 1] = 0.0, np.nan
    y = rng.integers(0, 3, 400)
    for extra in ({}, {"zero_as_missing": True}, {"use_missing": False}):
        booster = lgb.train({"objective": "multiclass", "num_class": 3, "num_leaves": 5, "verbosity": -1,
                             **extra}, lgb.Dataset(X, y), 10)
        booster.save_model(str(tmp_path / "m.txt"))
        np.testing.assert_allclose(LightGBMText(tmp_path / "m.txt").raw_score(X),
                                   booster.predict(X, raw_score=True), rtol=0, atol=1e-12)


def test_model_that_does_not_record_its_resize_policy_is_refused(pool, tmp_path):
    model = _copy_model(pool, tmp_path)
    manifest = json.loads((model / "model.json").read_text())
    del manifest["export"]["resize"]
    (model / "model.json").write_text(json.dumps(manifest))
    line = error_line(run("predict", "--model", model, _paths(pool)[0]))
    assert f"model {model} does not record the resize policy its features were extracted with" in line
    manifest["backbone"]["resize"] = None
    (model / "model.json").write_text(json.dumps(manifest))
    assert "does not record the resize policy" in error_line(run("export", "--model", model, "--module",
                                                                 pool["module"]))


def test_tta_followed_by_an_image_names_the_choices(tmp_path):
    """`--tta IMAGE` (the value forgotten): a usage error that lists every set, views
    included, not a missing-argument message about the image it swallowed."""
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"")
    result = run("predict", "--model", tmp_path, "--tta", image)
    assert result.exit_code == 2
    assert f"'{image}' is not one of 'none', 'flips', 'multiscale', 'views'" in result.output
    assert "Missing argument" not in result.output
