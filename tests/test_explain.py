"""``skinfeat explain``: saliency maps that point where the model's answer depends."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from model_factory import lite0_model, pool_model
from skinfeat.cli import cli
from skinfeat.errors import ModelError, UsageError
from skinfeat.explain import (explain, head_gradient, input_gradient, occlusion_map,
                              savedmodel_backbone)
from skinfeat.predict import load_predictor
from conftest import HAM10000

IMAGE = HAM10000 / "images" / "ISIC_0024310.jpg"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


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
    saliency = occlusion_map(QuadrantModel(), image, target=0, grid=8)
    assert saliency.shape == (64, 64) and saliency.max() == pytest.approx(1)
    assert saliency[:24, :24].mean() > 0.5
    assert saliency[48:, :].max() < 0.05 and saliency[:, 48:].max() < 0.05  # the blur spreads a little


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
    proba = load_predictor(info["model"]).predict_proba(load_predictor(info["model"]).load_image(IMAGE)[None])[0]
    assert result.stdout.startswith(f"wrote {out}: occlusion map of ") and f"{proba.max():.3f})" in result.stdout
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
