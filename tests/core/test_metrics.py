"""Metrics against scikit-learn's definitions, absent classes, and the always-NV baseline."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, roc_auc_score

from skinfeat.core.classes import CLASSES
from skinfeat.core.metrics import (NV, classification_metrics, expected_calibration_error, prior_baseline,
                              summarize_folds, top_k_accuracy)


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 400)
    logits = rng.normal(size=(400, 7))
    logits[np.arange(400), y] += 1.5  # some skill
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba


def test_scalars_match_sklearn(sample):
    y, proba = sample
    m = classification_metrics(y, proba)
    pred = proba.argmax(1)
    assert m["bmca"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(y, proba, labels=range(7)))
    assert m["accuracy"] <= m["top2"] <= m["top3"] <= 1.0
    assert np.sum(m["confusion"]) == len(y) == m["n"]
    assert m["per_class"]["MEL"]["support"] == int(np.sum(y == 0))


def test_top_k():
    proba = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert top_k_accuracy([1, 0], proba, 1) == 0.0
    assert top_k_accuracy([1, 0], proba, 2) == 0.5
    assert top_k_accuracy([1, 0], proba, 3) == 1.0


def test_absent_class_is_left_out_not_zero(sample):
    y, proba = sample
    keep = y != CLASSES.index("DF")
    m = classification_metrics(y[keep], proba[keep])
    assert m["per_class"]["DF"]["recall"] is None and m["per_class"]["DF"]["f1"] is None
    assert m["bmca"] == pytest.approx(balanced_accuracy_score(y[keep], proba[keep].argmax(1)))
    # Only one class in the part: still no crash, AUC undefined.
    only_nv = classification_metrics(np.full(5, NV), proba[:5])
    assert only_nv["macro_auc"] is None and only_nv["bmca"] is not None


def test_ece_is_zero_when_confidence_matches_accuracy():
    y = np.array([0, 0, 0, 1] * 25)
    proba = np.tile([0.75, 0.25], (100, 1))  # 75 % confident, 75 % right
    assert expected_calibration_error(y, proba) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.tile([1.0, 0.0], (100, 1))) == pytest.approx(0.25)


def test_always_nv_baseline_shows_accuracy_without_skill():
    counts = np.array([1113, 6705, 514, 327, 1099, 115, 142])
    y = np.repeat(np.arange(7), counts)
    base = prior_baseline(y, y)
    assert base["bmca"] == pytest.approx(1 / 7)
    assert base["accuracy"] == pytest.approx(6705 / 10015)
    assert base["macro_auc"] == pytest.approx(0.5)


def test_summary_over_folds_ignores_undefined_values(sample):
    y, proba = sample
    a = classification_metrics(y, proba)
    b = classification_metrics(y[y != 5], proba[y != 5])
    s = summarize_folds([a, b])
    assert s["scalars"]["bmca"]["mean"] == pytest.approx((a["bmca"] + b["bmca"]) / 2)
    assert s["scalars"]["bmca"]["folds"] == [a["bmca"], b["bmca"]]
    assert s["per_class"]["DF"]["recall"]["mean"] == pytest.approx(a["per_class"]["DF"]["recall"])
    assert s["per_class"]["DF"]["recall"]["std"] == 0.0
    np.testing.assert_array_equal(s["confusion"], np.add(a["confusion"], b["confusion"]))
