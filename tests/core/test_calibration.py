"""Temperature scaling and the expected calibration error (skinfeat.core.calibration)."""

import numpy as np
import pytest
from scipy.special import softmax

from skinfeat.core.calibration import calibrated, calibration_fields, fit_temperature, temperature_of
from skinfeat.core.metrics import expected_calibration_error


def _sampled(n=6000, k=7, seed=0, sharpen=2.0):
    """Labels drawn from softmax(z), and the over-confident probabilities softmax(sharpen * z)
    a model would give: the temperature that undoes it is ``sharpen``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    truth = softmax(z, axis=1)
    y = np.array([rng.choice(k, p=p) for p in truth])
    return softmax(sharpen * z, axis=1), y, truth


def test_temperature_one_gives_the_probabilities_back_and_any_keeps_their_order_and_zeros():
    p = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.4, 0.1]])
    assert calibrated(p, 1) is not None and np.array_equal(calibrated(p, 1), p)
    for t in (0.5, 2.0):
        q = calibrated(p, t)
        assert np.allclose(q.sum(axis=1), 1) and q[0, 3] == 0
        assert (np.argsort(-q, axis=1, kind="stable") == np.argsort(-p, axis=1, kind="stable")).all()
    assert calibrated(p, 2.0)[0, 0] < 0.7 < calibrated(p, 0.5)[0, 0]  # T > 1 softens, T < 1 sharpens


def test_the_fitted_temperature_undoes_a_known_over_confidence():
    proba, y, truth = _sampled(sharpen=2.0)
    t = fit_temperature(proba, y)
    assert t == pytest.approx(2.0, rel=0.08)
    assert fit_temperature(truth, y) == pytest.approx(1.0, rel=0.08)  # calibrated already: left alone
    under, _, _ = _sampled(sharpen=0.5, seed=1)
    assert fit_temperature(under, _sampled(sharpen=0.5, seed=1)[1]) == pytest.approx(0.5, rel=0.08)


def test_calibration_fields_cross_fit_and_lower_the_error_of_over_confident_probabilities():
    proba, y, _ = _sampled(sharpen=2.5, seed=4)
    fold = np.arange(len(y)) % 5
    fields = calibration_fields(proba, y, fold)
    assert fields["method"] == "temperature" and fields["temperature"] == pytest.approx(2.5, rel=0.08)
    assert fields["ece_as_trained"] > 0.1 and fields["ece_calibrated"] < 0.03
    # Cross-fitted: each fold rescaled by the temperature of the others, not by the overall one.
    overall = expected_calibration_error(y, calibrated(proba, fields["temperature"]))
    assert fields["ece_calibrated"] != overall and abs(fields["ece_calibrated"] - overall) < 0.01


@pytest.mark.parametrize("manifest, want", [
    ({}, None), ({"training": None}, None), ({"training": {"calibration": None}}, None),
    ({"training": {"calibration": {"temperature": 0.8}}}, 0.8),
    ({"training": {"calibration": {"temperature": -2}}}, None),
    ({"training": {"calibration": {"temperature": True}}}, None),
    ({"training": {"calibration": {"temperature": "hot"}}}, None),
])
def test_a_model_without_a_usable_temperature_gives_probabilities_as_trained(manifest, want):
    assert temperature_of(manifest) == want
    p = np.array([[0.6, 0.3, 0.1]])
    assert np.array_equal(calibrated(p, temperature_of(manifest)), p) == (want is None)
