"""Lesion-centred cropping and hair removal (``skinfeat.imaging.lesion``, ``extract --lesion``):
the box on synthetic lesions (IoU), the fallback to the whole image, hair removal
on synthetic hair, and the option flowing from extraction through fit into the
model, prediction, evaluation, the shift check and export."""

import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import run, error_line
from fakes import make_pooling_module
from model_factory import PER_CLASS, ham_subset
from skinfeat.imaging import lesion
from skinfeat.core.errors import UsageError
from skinfeat.features.store import read_features
from skinfeat.imaging.images import decode

SKIN, BROWN, PINK = (0.88, 0.68, 0.62), (0.45, 0.28, 0.22), (0.80, 0.36, 0.45)
TOLERANCE = 1e-4  # features from images (TFLite, numpy resize) vs extraction (SavedModel, tf.data)


def synthetic(box=(150, 200, 300, 420), size=(450, 600), colour=BROWN, vignette=None, bars=0, seed=0):
    """Skin with noise and a lit-from-one-side gradient, an elliptical lesion filling
    ``box`` (top, left, bottom, right); optionally the dermatoscope's dark circle
    (radius ``vignette`` x half the diagonal) and black bars ``bars`` rows high.
    Returns (image, the lesion's true box)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.asarray(SKIN, np.float32) * (0.95 + 0.05 * xx[..., None] / w) + rng.normal(0, 0.02, (h, w, 3))
    top, left, bottom, right = box
    cy, cx, ry, rx = (top + bottom - 1) / 2, (left + right - 1) / 2, (bottom - top) / 2, (right - left) / 2
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image[inside] = np.asarray(colour) + rng.normal(0, 0.04, (int(inside.sum()), 3))
    if vignette:
        image[np.hypot(yy - h / 2, xx - w / 2) > vignette * np.hypot(h, w) / 2] = 0.03
    if bars:
        image[:bars] = image[-bars:] = 0
    ys, xs = np.nonzero(inside)
    return np.clip(image, 0, 1).astype(np.float32), (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def with_hair(image, n=14, seed=1):
    """``image`` with ``n`` dark curved hairs, 2-3 pixels wide; and their mask."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros((h, w), bool)
    for _ in range(n):
        y0, x0, angle, bend = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi), rng.uniform(-1e-3, 1e-3)
        along = (xx - x0) * np.cos(angle) + (yy - y0) * np.sin(angle)
        across = -(xx - x0) * np.sin(angle) + (yy - y0) * np.cos(angle) - bend * along ** 2
        mask |= (np.abs(across) < rng.uniform(1.0, 1.5)) & (np.abs(along) < rng.uniform(80, 250))
    out = image.copy()
    out[mask] = 0.12
    return out, mask


# ----------------------------------------------------------------------------- the box

CASES = {
    "centred": {},
    "off centre": {"box": (60, 60, 200, 260)},
    "small": {"box": (200, 270, 260, 330)},
    "elongated": {"box": (180, 100, 270, 500)},
    "large": {"box": (40, 60, 410, 540)},
    "pink on pale skin": {"colour": PINK},
    "dermatoscope circle": {"vignette": 0.8},
    "letterbox bars": {"bars": 60, "box": (160, 220, 290, 400)},
    "portrait": {"size": (600, 450), "box": (200, 120, 420, 330)},
}


@pytest.mark.parametrize("case", CASES)
def test_lesion_box_matches_the_synthetic_lesion(case):
    image, truth = synthetic(**CASES[case])
    box = lesion.find_lesion(image)
    assert box is not None and iou(box, truth) >= 0.8, (box, truth)


@pytest.mark.parametrize("case", CASES)
def test_crop_is_a_dilated_square_around_the_lesion_inside_the_image(case):
    image, truth = synthetic(**CASES[case])
    h, w = image.shape[:2]
    top, left, bottom, right = lesion.crop_box(image)
    assert 0 <= top < bottom <= h and 0 <= left < right <= w
    side = max(truth[2] - truth[0], truth[3] - truth[1])
    assert top <= truth[0] and left <= truth[1] and bottom >= truth[2] and right >= truth[3]
    if (1 + 2 * lesion.MARGIN) * side < min(h, w):  # room for it: square, and a margin on every side
        assert bottom - top == right - left
        assert max(bottom - top, right - left) >= 1.2 * side
    cropped = lesion.preprocess(image, "crop")
    assert cropped.shape == (bottom - top, right - left, 3) and cropped.dtype == np.float32


def test_crop_stays_inside_the_image_for_a_lesion_in_a_corner():
    image, truth = synthetic(box=(5, 5, 100, 140))
    top, left, bottom, right = lesion.crop_box(image)
    assert (top, left) == (0, 0) and bottom == right and bottom >= 140


FALLBACKS = {
    "plain skin": lambda: synthetic(box=(0, 0, 1, 1))[0],
    "no contrast": lambda: synthetic(colour=(0.86, 0.66, 0.60))[0],
    "a speck": lambda: synthetic(box=(220, 295, 226, 301))[0],
    "lesion filling the image": lambda: synthetic(box=(-200, -200, 650, 800))[0],
    "shadow along one side": lambda: np.concatenate([synthetic(size=(450, 300), box=(0, 0, 1, 1))[0] * 0.6,
                                                     synthetic(size=(450, 300), box=(0, 0, 1, 1))[0]], axis=1),
    "black": lambda: np.zeros((450, 600, 3), np.float32),
    "white": lambda: np.ones((450, 600, 3), np.float32),
    "tiny image": lambda: synthetic(size=(8, 8), box=(2, 2, 6, 6))[0],
    "dermatoscope circle only": lambda: synthetic(box=(0, 0, 1, 1), vignette=0.8)[0],
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_no_convincing_lesion_falls_back_to_the_whole_image(case):
    image = FALLBACKS[case]()
    h, w = image.shape[:2]
    if case != "tiny image":
        assert lesion.find_lesion(image) is None
        assert lesion.crop_box(image) == (0, 0, h, w)
    for option in lesion.LESION_OPTIONS:  # never fails, never below the smallest readable image
        out = lesion.preprocess(image, option)
        assert min(out.shape[:2]) >= min(8, h) and np.isfinite(out).all()


def test_crop_is_fast_enough_to_run_inside_extraction(ham10000):
    """~100 images/s on 2 cores leaves a few ms per 600 x 450 image (measured on 300
    HAM10000 images: ~2 ms crop, ~5 ms crop+hair); the bounds leave room for a busy machine."""
    images = [decode(p) for p in ham_subset(ham10000, per_class=2).paths]
    timings = {}
    for option in ("crop", "crop+hair"):
        start = time.perf_counter()
        for image in images:
            lesion.preprocess(image, option)
        timings[option] = (time.perf_counter() - start) / len(images)
    assert timings["crop"] < 0.015 and timings["crop+hair"] < 0.04, timings


# ----------------------------------------------------------------------------- hair

def test_hair_removal_paints_over_synthetic_hair_and_leaves_the_rest():
    clean, truth = synthetic()
    hairy, hair = with_hair(clean)
    out = lesion.remove_hair(hairy)
    before, after = (np.abs(x[hair] - clean[hair]).mean() for x in (hairy, out))
    assert after < 0.3 * before, (before, after)
    found = lesion.hair_mask(hairy)
    assert found[hair].mean() > 0.9  # the hairs are found...
    assert (out[~found] == hairy[~found]).all()  # ...and only what was found is changed
    assert found.mean() < 4 * hair.mean()  # the hairs, a pixel wider on each side
    top, left, bottom, right = truth
    inside = np.zeros(hair.shape, bool)
    inside[top + 20:bottom - 20, left + 20:right - 20] = True
    assert np.abs(out - clean)[inside & ~hair].mean() < 0.01  # the lesion is not painted over


def test_hair_removal_leaves_hairless_images_and_lesion_texture_alone():
    image, _ = synthetic()
    assert lesion.hair_mask(image).mean() < 0.002
    dotted = image.copy()  # round dark dots (globules) are not hairs
    for y, x in [(200, 260), (230, 320), (250, 380), (190, 350)]:
        dotted[y - 3:y + 3, x - 3:x + 3] = 0.1
    assert lesion.hair_mask(dotted).sum() == lesion.hair_mask(image).sum()


def test_hair_removal_lets_the_crop_find_a_hairy_lesion():
    clean, truth = synthetic(colour=PINK)
    hairy, _ = with_hair(clean, n=30)
    box = lesion.find_lesion(lesion.remove_hair(hairy))
    assert box is not None and iou(box, truth) >= 0.8


# ----------------------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, skinfeat_home, ham10000):
    """Pooling-backbone features of a HAM subset (2 robust views) without and with the
    crop, and a model fitted (with its TFLite backbone) on each."""
    from skinfeat.runs.fit import run_fit
    from skinfeat.features.extract import extract_features

    root = tmp_path_factory.mktemp("lesion")
    module = make_pooling_module(root / "pool")
    manifest = ham_subset(ham10000)
    with pytest.MonkeyPatch.context() as env:  # set up before the per-test caches are
        for name, value in (("HOME", skinfeat_home), ("FEATURES", root / "features"), ("RUNS", root / "runs")):
            env.setenv(f"SKINFEAT_{name}", str(value))
        kinds = {option: extract_features(manifest, module, views=2, augment="robust", lesion=option,
                                          dataset_name="ham", progress=False) for option in ("none", "crop")}
        models = {option: root / f"model-{option}" for option in kinds}
        for option, result in kinds.items():
            run_fit(result.path, "logreg", cv=2, out=models[option])
    return {"root": root, "module": module, "manifest": manifest, "features": {k: v.path for k, v in kinds.items()},
            "models": models}


def test_cropped_features_have_their_own_key_name_and_attrs(fitted):
    none, crop = (read_features(fitted["features"][k]) for k in ("none", "crop"))
    assert "__crop-lesion-robust2__" in Path(crop.path).name
    assert crop.attrs["lesion"] == "crop" and none.attrs["lesion"] == "none"
    assert crop.attrs["key"] != none.attrs["key"]
    assert (np.abs(crop.features - none.features).max(axis=1) > 1e-3).mean() > 0.5  # most images are cropped


def test_feature_key_of_uncropped_features_is_unchanged(fitted, ham10000):
    """--lesion none is the key features had before the option existed: caches stay valid."""
    from skinfeat.features.extract import feature_key

    attrs = read_features(fitted["features"]["none"]).attrs
    parts = {k: attrs[k] for k in ("module", "module_fingerprint", "input_size", "resize", "views", "augment_seed",
                                   "augment", "dtype", "manifest_sha256", "format_version")}
    assert feature_key(parts) == attrs["key"]


def test_model_fitted_on_cropped_features_crops_at_prediction(fitted):
    from skinfeat.model.predictor import Predictor

    crop, none = (read_features(fitted["features"][k]) for k in ("crop", "none"))
    manifest = json.loads((fitted["models"]["crop"] / "model.json").read_text())
    assert manifest["backbone"]["lesion"] == "crop"
    predictor = Predictor(fitted["models"]["crop"])
    feats = predictor.features(list(fitted["manifest"].paths))[:, 0]
    assert np.abs(feats - crop.features).max() < TOLERANCE
    assert np.abs(feats - none.features).max() > 1e-2
    image = decode(fitted["manifest"].paths[0])
    assert predictor.load_image(fitted["manifest"].paths[0]).shape == (224, 224, 3)
    assert np.abs(predictor.load_image(fitted["manifest"].paths[0])
                  - predictor.resized(lesion.preprocess(image, "crop"), lesion=False)).max() == 0


def test_views_are_augmentations_of_the_cropped_image(fitted):
    """Row 0's views are seeded (0, v): the predictor's TTA views of the cropped image."""
    from skinfeat.model.predictor import Predictor, augmented_views

    crop = read_features(fitted["features"]["crop"])
    predictor = Predictor(fitted["models"]["crop"])
    image = lesion.preprocess(decode(fitted["manifest"].paths[0]), "crop")
    views = augmented_views(image, 2, predictor.input_size, "crop", seed=0, preset="robust")
    assert np.abs(predictor.backbone(views) - crop.views[0]).max() < TOLERANCE


def test_predict_and_evaluate_run_a_cropping_model(fitted, tmp_path):
    paths = [str(p) for p in fitted["manifest"].paths[:3]]
    result = run("predict", "--model", fitted["models"]["crop"], "--format", "json", *paths)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3
    result = run("predict", "--model", fitted["models"]["crop"], "--tta", "views", paths[0])
    assert result.exit_code == 0, result.output
    images = tmp_path / "images"
    images.mkdir()
    unseen = ham_subset(Path(fitted["manifest"].paths[0]).parents[1], skip=PER_CLASS)  # not the model's images
    for p in unseen.paths:
        shutil.copy(p, images)
    lines = (Path(fitted["manifest"].paths[0]).parents[1] / "HAM10000_metadata.csv").read_text().splitlines()
    ids = set(unseen.image_ids)
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join([lines[0]] + [line for line in lines[1:] if line.split(",")[1] in ids]) + "\n")
    result = run("evaluate", "--model", fitted["models"]["crop"], "--images", images, "--labels", labels,
                 "--shift", "zoom:1.5", "--format", "json", "--no-record")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == len(unseen)


def test_shift_check_crops_each_shifted_image_as_prediction_does(fitted):
    """The shift check (fit --shift) and evaluate shift the image, then crop, then resize."""
    from skinfeat.model.predictor import Predictor
    from skinfeat.runs.shiftcheck import shifted_features
    from skinfeat.imaging.shifts import parse_shifts

    crop, none = (read_features(fitted["features"][k]) for k in ("crop", "none"))
    ids, paths = list(crop.image_ids[:6]), list(fitted["manifest"].paths[:6])
    clean = shifted_features(crop.attrs, ids, paths, None)[:, 0]
    assert np.abs(clean - crop.features[:6]).max() < TOLERANCE
    (shift,) = parse_shifts(["pad"])
    shifted = shifted_features(crop.attrs, ids, paths, shift)[:, 0]
    assert np.abs(shifted - Predictor(fitted["models"]["crop"]).features(paths, shift=shift)[:, 0]).max() < TOLERANCE
    assert np.abs(shifted - shifted_features(none.attrs, ids, paths, shift)[:, 0]).max() > 1e-2


def test_fit_with_shift_check_on_cropped_features(fitted):
    result = run("fit", "--head", "logreg", "--features", fitted["features"]["crop"], "--cv", "2", "--shift", "blur:2",
                 "--data", Path(fitted["manifest"].paths[0]).parents[1])
    assert result.exit_code == 0, result.output


def test_export_keeps_the_crop(fitted, tmp_path):
    from skinfeat.model.predictor import Predictor

    model = shutil.copytree(fitted["models"]["crop"], tmp_path / "model")
    (model / "backbone.tflite").unlink()
    result = run("export", "--model", model, "--module", fitted["module"])
    assert result.exit_code == 0, result.output
    assert json.loads((model / "model.json").read_text())["backbone"]["lesion"] == "crop"
    assert Predictor(model).parts[0].lesion == "crop"


def test_joined_features_keep_each_backbones_crop(fitted, tmp_path):
    from skinfeat.runs.fit import run_fit
    from skinfeat.model.predictor import Predictor

    files = [fitted["features"]["crop"], fitted["features"]["none"]]
    run_fit(files, "logreg", cv=2, out=tmp_path / "model", runs=tmp_path / "runs")
    predictor = Predictor(tmp_path / "model")
    assert [p.lesion for p in predictor.parts] == ["crop", "none"]
    feats = predictor.features(list(fitted["manifest"].paths[:4]))[:, 0]
    want = np.concatenate([read_features(f).features[:4] for f in files], axis=1)
    assert np.abs(feats - want).max() < TOLERANCE


def test_model_from_before_the_option_means_no_crop(fitted, tmp_path):
    from skinfeat.model.predictor import Predictor

    model = shutil.copytree(fitted["models"]["none"], tmp_path / "model")
    manifest = json.loads((model / "model.json").read_text())
    del manifest["backbone"]["lesion"]
    (model / "model.json").write_text(json.dumps(manifest))
    feats = Predictor(model).features(list(fitted["manifest"].paths[:4]))[:, 0]
    assert np.abs(feats - read_features(fitted["features"]["none"]).features[:4]).max() < TOLERANCE


# ----------------------------------------------------------------------------- bad input

def test_model_with_an_unknown_lesion_option_is_refused(fitted, tmp_path):
    model = shutil.copytree(fitted["models"]["crop"], tmp_path / "model")
    manifest = json.loads((model / "model.json").read_text())
    manifest["backbone"]["lesion"] = "crop+magic"
    (model / "model.json").write_text(json.dumps(manifest))
    for args in (["predict", "--model", model, fitted["manifest"].paths[0]],
                 ["export", "--model", model, "--module", fitted["module"]]):
        line = error_line(run(*args))
        assert str(model) in line and "'crop+magic'" in line and "crop+hair" in line, line
    assert json.loads((model / "model.json").read_text())["backbone"]["lesion"] == "crop+magic"
    manifest["backbone"]["lesion"] = 3
    (model / "model.json").write_text(json.dumps(manifest))
    line = error_line(run("predict", "--model", model, fitted["manifest"].paths[0]))
    assert "backbone.lesion" in line, line


def test_features_with_an_unknown_lesion_option_are_refused_by_fit(fitted, tmp_path):
    path = shutil.copy(fitted["features"]["crop"], tmp_path / "features.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["lesion"] = "crop+magic"
    line = error_line(run("fit", "--head", "logreg", "--features", path, "--cv", "2", "--out", tmp_path / "model"))
    assert str(path) in line and "'crop+magic'" in line, line
    assert not (tmp_path / "model").exists() and not list((tmp_path / "runs").glob("**/*.json"))


def test_unknown_lesion_option_for_extract_is_refused(fitted, tmp_path):
    from skinfeat.features.extract import extract_features

    result = run("extract", "--data", tmp_path, "--lesion", "segment")
    assert result.exit_code == 2 and "Invalid value for '--lesion'" in result.output, result.output
    assert "Traceback" not in result.output
    with pytest.raises(UsageError, match="--lesion 'segment': expected one of none, crop, crop\\+hair"):
        extract_features(fitted["manifest"], fitted["module"], lesion="segment", progress=False)
    assert not Path(tmp_path / "features").exists()


def test_tiny_and_odd_images_are_extracted_with_the_crop(tmp_path):
    """8-pixel images, flat black and white ones, a grey PNG: cropped, augmented, none skipped."""
    from PIL import Image

    from skinfeat.data.layouts import load_dataset
    from skinfeat.features.extract import extract_features

    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "NV"
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / "tiny.png")
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(folder / "black.png")
    Image.fromarray(np.full((50, 60, 3), 255, np.uint8)).save(folder / "white.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 300), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray((synthetic()[0] * 255).astype(np.uint8)).save(folder / "lesion.jpg")
    manifest = load_dataset(data=tmp_path / "data")
    result = extract_features(manifest, make_pooling_module(tmp_path / "pool"), views=2, augment="robust",
                              lesion="crop+hair", progress=False, dataset_name="odd")
    assert result.n_images == 5 and not result.skipped
    assert "__crop-lesion-hair-robust2__" in result.path.name
    assert read_features(result.path).attrs["lesion"] == "crop+hair"
