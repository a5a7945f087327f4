"""The augmentation presets of ``skinfeat extract --views``, on a real HAM10000 image."""

import numpy as np
import pytest

from skinfeat.core.errors import UsageError
from skinfeat.imaging.augment import AUGMENTS, ROBUST, augment_image
from skinfeat.features.extract import extract_features
from skinfeat.imaging.images import decode
from skinfeat.core.tf_runtime import tensorflow

tf = tensorflow()


@pytest.fixture(scope="module")
def image(ham10000):
    return decode(next(p for p in sorted(ham10000.rglob("*.jpg"))))


def views(image, preset, n, seed=0):
    return [augment_image(tf.constant(image), tf.constant([seed, v], tf.int64), preset).numpy() for v in range(n)]


@pytest.mark.parametrize("preset", AUGMENTS)
def test_same_seed_same_view_other_seed_other_view(image, preset):
    a, b, c = views(image, preset, 1)[0], views(image, preset, 1)[0], views(image, preset, 1, seed=1)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_robust_views_are_square_crops_zoomed_and_sometimes_framed(image):
    h, w = image.shape[:2]
    many = views(image, "robust", 60)
    assert all(v.shape == (min(h, w), min(h, w), 3) for v in many)
    # Black corners: a letterboxed or dermatoscope-circle framing (about 25 % of views).
    framed = sum(bool(v[:3, :3].max() < 0.02 and v[-3:, -3:].max() < 0.02) for v in many)
    expected = (ROBUST["p_letterbox"] + ROBUST["p_vignette"]) * len(many)
    assert 0.3 * expected <= framed <= 2.5 * expected
    # Zoomed views show less detail per pixel: their mean gradient varies widely.
    sharpness = [np.abs(np.diff(v, axis=1)).mean() for v in many]
    assert max(sharpness) > 1.5 * min(sharpness)


def test_unknown_preset_is_refused_before_any_work(ham10000, tmp_path):
    from skinfeat.data.layouts import load_dataset

    manifest = load_dataset(data=ham10000)
    with pytest.raises(UsageError, match="--augment 'strong': expected one of mild, robust"):
        extract_features(manifest, "efficientnet-lite0", views=1, augment="strong", out=tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())
