"""Operating points (``skinfeat.core.operating``): the figures scikit-learn's ROC gives,
with intervals from the lesion resamples (their time: benchmarks/bench_intervals.py)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from skinfeat.core.classes import CLASSES
from skinfeat.core.intervals import Resamples
from skinfeat.core.operating import SPECIFICITIES, operating_lines, operating_points, task_score


def predictions(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(7, n, p=[0.11, 0.67, 0.05, 0.03, 0.11, 0.01, 0.02])
    logits = rng.normal(size=(n, 7)) + 1.5 * np.eye(7)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, np.round(proba, 2)  # rounded: ties between scores, as real probabilities have


def test_figures_are_scikit_learns_roc_and_the_intervals_hold_them():
    y, proba = predictions(3000)
    lesion = np.arange(3000) // 2
    block = operating_points(y, proba, Resamples.draw(lesion.astype(str), lesion % 5, n_resamples=300))
    for task, classes in (("melanoma", ["MEL"]), ("malignant", ["MEL", "BCC", "AKIEC"])):
        positive = np.isin(y, [CLASSES.index(c) for c in classes])
        score = task_score(proba, task)
        entry = block[task]
        assert entry["auc"]["value"] == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
        fpr, tpr, _ = roc_curve(positive, score)
        for spec in SPECIFICITIES:
            want = tpr[fpr <= 1 - spec + 1e-12].max()
            assert entry[f"sensitivity_at_specificity_{spec:g}"]["value"] == pytest.approx(want, abs=1e-12)
        assert entry["specificity_at_sensitivity_0.95"]["value"] == pytest.approx(1 - fpr[tpr >= 0.95].min(),
                                                                                  abs=1e-12)
        for name, figure in entry.items():
            if isinstance(figure, dict):
                assert figure["low"] <= figure["value"] <= figure["high"], (task, name, figure)
        assert entry["n_positive"] == positive.sum()
    lines = operating_lines(block)
    assert lines[1].startswith("melanoma (MEL vs rest, ") and "sens@spec0.82" in lines[1]


def test_a_task_without_positives_is_left_out():
    y = np.full(50, CLASSES.index("NV"))
    proba = np.full((50, 7), 1 / 7)
    assert operating_points(y, proba, Resamples.draw(n=50, n_resamples=20)) == {}
