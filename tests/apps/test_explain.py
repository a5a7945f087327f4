"""``skinfeat explain``: saliency maps that point where the model's answer depends."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import HAM10000, run
from model_factory import ham_subset, lite0_model, map_model, pool_model, write_ham_folder
from PIL import Image

from skinfeat.apps.explain import (
    border_share,
    content_mask,
    explain,
    explain_sample,
    grad_cam,
    head_gradient,
    input_gradient,
    occlusion_map,
    saliency_map,
    savedmodel_backbone,
)
from skinfeat.cli import cli
from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import ModelError, ModuleError, UsageError
from skinfeat.imaging.images import resize
from skinfeat.model.predictor import load_predictor

IMAGE = HAM10000 / "images" / "ISIC_0024310.jpg"


@pytest.fixture(scope="module")
def pool(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000)


class QuadrantModel:
    """P(MEL) rises with the brightness of the top-left quadrant only."""

    def predict_proba(self, images):
        h, w = images.shape[1:3]
        z = 8 * (images[:, : h // 2, : w // 2].mean(axis=(1, 2, 3)) - 0.5)
        p = 1 / (1 + np.exp(-z))
        return np.stack([p, 1 - p] + [np.zeros_like(p)] * 5, axis=1)


def test_occlusion_finds_the_region_the_answer_depends_on():
    image = np.full((64, 64, 3), 0.9, np.float32)
    saliency, peak = occlusion_map(QuadrantModel(), image, target=0, grid=8)
    assert saliency.shape == (64, 64) and saliency.max() == pytest.approx(1)
    sigmoid = 1 / (1 + np.exp(-np.array([3.2, 2.4])))  # P(MEL): clean; a window greys 1/4 of the quadrant
    assert peak == pytest.approx(sigmoid[0] - sigmoid[1], rel=0.1)  # the colour bar's 1: that drop
    assert saliency[:24, :24].mean() > 0.5
    assert saliency[48:, :].max() < 0.05 and saliency[:, 48:].max() < 0.05  # the blur spreads a little


class BandModel:
    """P(MEL) rises with the darkness of the top 8 rows and the brightness of the next 8."""

    def predict_proba(self, images):
        z = 8 * (images[:, 8:16].mean(axis=(1, 2, 3)) - images[:, :8].mean(axis=(1, 2, 3)) - 0.5)
        p = 1 / (1 + np.exp(-z))
        return np.stack([p, 1 - p] + [np.zeros_like(p)] * 5, axis=1)


def test_letterbox_bands_are_not_part_of_the_map():
    """A model that reads the letterbox band at the top: the map is zero on the band
    (not image) and still reaches 1 on the image."""
    image = resize(np.full((150, 200, 3), 0.9, np.float32), (64, 64), "pad")
    mask = content_mask(image)
    assert not mask[:7].any() and mask[8:56].all() and not mask[57:].any() and mask.mean() == pytest.approx(0.75, abs=0.02)
    raw, _ = occlusion_map(BandModel(), image, target=0, grid=8)
    assert raw[:7].max() > 0.5  # unmasked, the band lights up
    saliency, _ = saliency_map(BandModel(), image, 0, "occlusion", grid=8)
    assert saliency[~mask].max() == 0 and saliency.max() == pytest.approx(1)
    assert content_mask(resize(np.random.default_rng(0).random((150, 200, 3), np.float32), (64, 64), "crop")).all()


def test_head_gradient_matches_the_analytic_one():
    A = np.random.default_rng(0).normal(size=(5, 7))

    def head(X):
        z = np.asarray(X) @ A
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    X = np.random.default_rng(1).normal(size=(3, 5))
    want = A[:, 2][None] - head(X) @ A.T  # d log softmax_2 / dX
    np.testing.assert_allclose(head_gradient(head, X, 2), want, atol=1e-5)


def test_input_gradient_is_the_derivative_of_the_model(pool):
    """<gradient, v> equals the change of log P along v (central difference through the
    TFLite backbone and numpy head that predict uses). The pooling backbone is smooth
    along a uniform shift of each colour channel (its max has ties); EfficientNet's
    ReLU6 kinks make central differences too noisy for this check."""
    model = load_predictor(pool["model"])
    image = 0.1 + 0.8 * model.load_image(IMAGE)  # no pixel at 0 or 1: nothing clips
    target = int(model.predict_proba(image[None])[0].argmax())
    grad = input_gradient(savedmodel_backbone(model, pool["module"]), model.head, image[None], target)[0]
    v = np.broadcast_to(np.float32([-0.6, -1.0, -0.3]), image.shape)
    eps = 1e-2  # smaller steps drown in float32 rounding of the pooled features
    logp = [np.log(model.predict_proba((image + s * eps * v)[None])[0, target]) for s in (1, -1)]
    directional = (logp[0] - logp[1]) / (2 * eps)
    assert abs(directional) > 1e-2
    assert float(np.sum(grad * v)) == pytest.approx(directional, rel=0.02)


def test_cli_occlusion_with_the_real_backbone_writes_the_figure(skinfeat_home, ham10000, tmp_path):
    info = lite0_model(skinfeat_home, ham10000)
    out = tmp_path / "saliency.png"
    result = run("explain", "--model", info["model"], IMAGE, "--out", out, "--grid", "8")
    assert result.exit_code == 0, result.output
    model = load_predictor(info["model"])
    shown = model.prediction(IMAGE, model.predict_proba(model.load_image(IMAGE)[None])[0])  # as predict shows it
    assert result.stdout.startswith(f"wrote {out}: occlusion map of {shown.decision} ")
    assert f"(decision {FULL_NAMES[shown.decision]} ({shown.decision}), probability " \
           f"{shown.probability[CLASSES.index(shown.decision)]:.3f})" in result.stdout
    with Image.open(out) as png:
        assert png.size == (1300, 460)
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 20  # not blank


def test_gradient_map_with_the_real_backbone(skinfeat_home, ham10000, tmp_path):
    info = lite0_model(skinfeat_home, ham10000)
    result = explain(info["model"], IMAGE, method="gradient", target="MEL", out=tmp_path / "g.png")
    assert result.target == 0 and result.saliency.shape == (224, 224)
    assert 0 <= result.saliency.min() and result.saliency.max() == pytest.approx(1)
    assert (tmp_path / "g.png").stat().st_size > 10_000


def test_lightgbm_head_occlusion_works_gradient_is_refused(skinfeat_home, ham10000, tmp_path):
    info = pool_model(skinfeat_home, ham10000, head="lightgbm")
    result = explain(info["model"], IMAGE, method="occlusion", grid=4)
    assert result.saliency.shape == (224, 224)
    with pytest.raises(UsageError, match="needs a differentiable head .* this model's head is lightgbm: "
                                         "use --method occlusion"):
        explain(info["model"], IMAGE, method="gradient")


def test_gradient_refuses_a_backbone_changed_since_fitting(pool, tmp_path):
    model = shutil.copytree(pool["model"], tmp_path / "model")
    manifest = json.loads((model / "model.json").read_text())
    manifest["backbone"]["module_fingerprint"] = manifest["export"]["module_fingerprint"] = "f" * 64
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="the backbone changed since the model was fitted; use --method occlusion"):
        explain(model, IMAGE, method="gradient", module=pool["module"])


def test_bad_image_and_bad_class_are_one_line_errors(pool, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run("explain", "--model", pool["model"], bad)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith(f"Error: {bad} is not an image")
    result = run("explain", "--model", pool["model"], IMAGE, "--target", "XYZ")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == \
        "Error: --target 'XYZ' is not a class; expected one of MEL, NV, BCC, AKIEC, BKL, DF, VASC"


# ----------------------------------------------------------------------------- Grad-CAM

@pytest.fixture(scope="module")
def linear(skinfeat_home, ham10000):
    """The tiny convolutional backbone with a linear head (logreg without power normalisation)."""
    return map_model(skinfeat_home, ham10000, params={"power": 1})


def _feature_map(info, image):
    obj = savedmodel_backbone(load_predictor(info["model"]), info["module"]).saved_model
    out = obj.signatures["feature_map"](images=image[None])
    return out["feature_map"].numpy()[0], out["feature_vector"].numpy()


def test_gradcam_of_a_linear_head_is_class_activation_mapping(linear):
    """For global average pooling and a linear head, Grad-CAM of log P(c) is CAM of the
    log-probability: sum_k (w_ck - sum_j p_j w_jk) A_k / (h w), w the head's weights on
    the raw features (standardisation folded in), computed here from the head's arrays."""
    model = load_predictor(linear["model"])
    state = np.load(f"{linear['model']}/state.npz")
    weights = state["coef_"] / state["scale_"]  # [7, C]: d logit / d feature
    for image_id in ("ISIC_0024310", "ISIC_0024306"):
        image = model.load_image(HAM10000 / "images" / f"{image_id}.jpg")
        fmap, features = _feature_map(linear, image)
        p = model.head(features)[0]
        cams = np.tensordot(fmap, weights, axes=([2], [1]))  # [h, w, 7]: CAM of every class
        h, w = fmap.shape[:2]
        for target in (int(p.argmax()), int(p.argmin())):
            want = (cams[..., target] - cams @ p) / (h * w)
            got = grad_cam(model.head, fmap, features, target)
            assert want.std() > 0.2 * np.abs(want).mean() > 0  # not a flat map
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())


def test_gradcam_map_is_the_upsampled_positive_part(linear):
    result = explain(linear["model"], IMAGE, method="gradcam", module=linear["module"])
    model = load_predictor(linear["model"])
    fmap, features = _feature_map(linear, result.image)
    cam = np.maximum(grad_cam(model.head, fmap, features, result.target), 0)
    assert result.saliency.shape == result.image.shape[:2] and result.saliency.max() == pytest.approx(1)
    assert result.peak == pytest.approx(cam.max(), rel=0.02)  # the colour bar's 1, in log P per cell
    # every 2x2 block of the input is one map cell: the map's hottest cell is where the picture is hottest
    top = np.unravel_index(np.argmax(cam), cam.shape)
    assert result.saliency[2 * top[0]:2 * top[0] + 2, 2 * top[1]:2 * top[1] + 2].max() > 0.9


def test_gradcam_works_with_a_tree_head(skinfeat_home, ham10000):
    info = map_model(skinfeat_home, ham10000, head="lightgbm")
    result = explain(info["model"], IMAGE, method="gradcam", module=info["module"])
    assert result.saliency.max() == pytest.approx(1) and result.peak > 0


def test_gradcam_with_the_real_backbone_and_a_sheet(skinfeat_home, ham10000, tmp_path):
    """The built-in Lite0 has the map signature; the sheet draws real HAM10000 images,
    one row per class, with their true and predicted classes."""
    info = lite0_model(skinfeat_home, ham10000)
    result = explain(info["model"], IMAGE, method="gradcam", out=tmp_path / "g.png")
    assert result.saliency.shape == (224, 224) and result.saliency.max() == pytest.approx(1)
    assert (tmp_path / "g.png").stat().st_size > 10_000
    data = write_ham_folder(tmp_path / "data", ham10000, ham_subset(ham10000, per_class=2, skip=4).image_ids)
    out = tmp_path / "sheet.png"
    run_ = CliRunner().invoke(cli, ["explain", "--model", info["model"], "--data", str(data), "--sample", "2",
                                    "--per-class", "--method", "gradcam", "--out", str(out)])
    assert run_.exit_code == 0, run_.output
    line = run_.stdout.strip()
    assert line.startswith(f"wrote {out}: gradcam maps of 14 images (") and " predicted right); " in line
    assert line.endswith("of the maps' mass on the outer band (44% of the image)")
    with Image.open(out) as png:
        assert png.size[0] > 500 and png.size[1] > 7 * 200  # seven rows
        assert np.asarray(png.convert("RGB")).std() > 20


def test_sheet_with_occlusion_counts_right_and_wrong(pool, ham10000, tmp_path):
    data = write_ham_folder(tmp_path / "data", ham10000, ham_subset(ham10000, per_class=1, skip=6).image_ids)
    sheet = explain_sample(pool["model"], data, n=5, grid=4, seed=1, out=tmp_path / "s.png", progress=False)
    manifest_ids = set(ham_subset(ham10000, per_class=1, skip=6).image_ids)
    assert len(sheet.cells) == 5 and {c.image_id for c in sheet.cells} <= manifest_ids
    model = load_predictor(pool["model"])
    for cell in sheet.cells:
        shown = model.prediction(cell.image_id, model.predict_proba(cell.image[None])[0])  # as predict shows it
        assert CLASSES[cell.predicted] == shown.decision
        assert cell.proba == pytest.approx(shown.probability[cell.predicted])
        assert cell.true >= 0 and 0 <= cell.border <= 1
    again = explain_sample(pool["model"], data, n=5, grid=4, seed=2, progress=False)
    assert [c.image_id for c in again.cells] != [c.image_id for c in sheet.cells]  # the seed draws others
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_border_share():
    saliency = np.zeros((80, 80))
    saliency[:10] = 1  # the top band only
    assert border_share(saliency) == 1.0
    saliency = np.zeros((80, 80))
    saliency[30:50, 30:50] = 1
    assert border_share(saliency) == 0.0
    assert border_share(np.ones((80, 80))) == pytest.approx(1 - 0.75 ** 2)
    assert border_share(np.zeros((80, 80))) == 0.0


def test_gradcam_refuses_a_module_without_a_map(pool):
    with pytest.raises(ModuleError, match="has no 'feature_map' signature .* use --method occlusion"):
        explain(pool["model"], IMAGE, method="gradcam", module=pool["module"])
    result = run("explain", "--model", pool["model"], IMAGE, "--method", "gradcam", "--module", pool["module"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: backbone ")


def test_explain_bad_inputs_are_one_line_errors(pool, ham10000, tmp_path):
    with pytest.raises(UsageError, match="--method 'cam' is unknown; expected one of occlusion, gradient, gradcam"):
        explain(pool["model"], IMAGE, method="cam")
    data = write_ham_folder(tmp_path / "data", ham10000, ["ISIC_0024306"])
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    shutil.copy(IMAGE, unlabelled)
    cases = [
        (("explain", "--model", pool["model"], IMAGE, "--method", "cam"), 2, "Invalid value for '--method'"),
        (("explain", "--model", pool["model"]), 2, "Error: give one IMAGE, or --data PATH for a contact sheet"),
        (("explain", "--model", pool["model"], IMAGE, "--data", data), 2, "Error: give one IMAGE, or --data PATH"),
        (("explain", "--model", pool["model"], "--data", data, "--sample", "0"), 2,
         "Error: --sample 0: expected a positive number of images"),
        (("explain", "--model", pool["model"], "--data", data, "--target", "MEL"), 2,
         "Error: --target explains one image; a sheet shows each image's predicted class"),
        (("explain", "--model", pool["model"], "--data", unlabelled, "--per-class"), 2,
         f"Error: --per-class needs labels, and {unlabelled} has none"),
        (("explain", "--model", pool["model"], "--data", tmp_path / "nowhere"), 1, "Error: "),
    ]
    for args, code, start in cases:
        result = run(*args)
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output
        last = result.output.strip().splitlines()[-1]
        assert start in last, (args, last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "unlabelled"]  # no picture half-written


def test_error_rows_are_the_most_confident_wrong_ones_per_true_class():
    from skinfeat.apps.explain import error_rows

    proba = np.full((8, 7), 0.01)
    label = np.array([0, 0, 0, 1, 1, 2, 3, -1])
    pred = np.array([1, 2, 0, 0, 1, 4, 3, 0])  # rows 0, 1 (MEL), 3 (NV), 5 (BCC) wrong; row 7 unlabelled
    proba[np.arange(8), pred] = [0.6, 0.9, 0.8, 0.7, 0.5, 0.4, 0.9, 0.99]
    fold = np.array([0, 1, 0, 1, 0, 1, -1, 0])
    oof = {"proba": proba, "label": label, "pred": pred, "fold": fold}
    assert error_rows(oof, per_class=1) == [(1, 0, 2), (3, 1, 0), (5, 2, 4)]
    assert error_rows(oof, per_class=2)[:2] == [(1, 0, 2), (0, 0, 1)]
    oof["fold"] = np.array([0, 1, 0, -1, 0, 1, -1, 0])  # a row outside the scored folds is not an error shown
    assert error_rows(oof, per_class=1) == [(1, 0, 2), (5, 2, 4)]


def test_explain_errors_draws_the_runs_gallery_and_the_report_shows_it(pool, ham10000, tmp_path):
    from skinfeat.apps.explain import error_rows
    from skinfeat.runs.combine import read_oof

    runs = tmp_path / "runs"
    shutil.copytree(Path(pool["record"]).parent, runs)
    result = run("explain", "--model", pool["model"], "--errors", "--data", ham10000, env={"SKINFEAT_RUNS": str(runs)})
    assert result.exit_code == 0, result.output
    record = json.loads(Path(pool["record"]).read_text())
    sheet = runs / Path(pool["record"]).with_suffix(".errors.png").name
    assert f"wrote {sheet}" in result.output and Image.open(sheet).size[0] > 500
    oof = read_oof(record, runs)
    wrong = error_rows(oof)
    assert len(wrong) >= 3 and f"the {len(wrong)} most confident wrong out-of-fold predictions" in result.output
    assert all(oof["label"][r] == true != decided for r, true, decided in wrong)
    report = run("report", "--out", tmp_path / "report.html", env={"SKINFEAT_RUNS": str(runs)})
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Most confident errors" in page and "alt='errors'" in page
    line = run("explain", "--model", pool["model"], "--errors", str(IMAGE)).output
    assert "--errors draws the run's errors from the dataset it was fitted on" in line
