"""Class-imbalance remedies: weights, balanced sampling, prior/threshold adjustment."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from skinfeat.heads import make_head
from skinfeat.heads import imbalance
from devtools.synthetic import HAM10000_COUNTS, synthetic_feature_set

Y = np.repeat([0, 1, 2], [10, 80, 10])


def test_balanced_weights_equalise_class_totals():
    w = imbalance.class_weights(Y, 3, "balanced")
    totals = np.bincount(Y, weights=w[Y])
    np.testing.assert_allclose(totals, totals[0])
    assert w[Y].mean() == pytest.approx(1.0)


def test_sqrt_weights_sit_between_none_and_balanced():
    none, sqrt, bal = (imbalance.class_weights(Y, 3, m) for m in ("none", "sqrt", "balanced"))
    np.testing.assert_allclose(none, 1.0)
    ratio = lambda w: w[0] / w[1]  # noqa: E731 - minority over majority
    assert 1.0 < ratio(sqrt) < ratio(bal)
    assert ratio(sqrt) == pytest.approx(np.sqrt(ratio(bal)))


def test_balanced_indices_draw_each_class_equally():
    idx = imbalance.balanced_indices(Y, np.random.default_rng(0))
    assert len(idx) == len(Y)
    counts = np.bincount(Y[idx], minlength=3)
    assert counts.max() - counts.min() <= 1


def test_prior_offsets_flatten_the_prior():
    offsets = imbalance.prior_offsets(np.bincount(Y))
    log_prior = np.log(np.bincount(Y) / len(Y))
    assert np.ptp(log_prior + offsets) == pytest.approx(0.0, abs=1e-12)


def test_bmca_offsets_never_lower_validation_bmca():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [20, 200, 20])
    log_p = np.log(rng.dirichlet([1, 1, 1], len(y))) + np.array([0.0, 1.5, 0.0])  # biased to class 1
    before = imbalance.balanced_accuracy(y, log_p.argmax(1), 3)
    offsets = imbalance.fit_bmca_offsets(log_p, y)
    after = imbalance.balanced_accuracy(y, (log_p + offsets).argmax(1), 3)
    assert after > before


@pytest.fixture(scope="module")
def imbalanced():
    counts = tuple(c // 8 for c in HAM10000_COUNTS)  # 1,250 images, HAM10000 proportions
    fs = synthetic_feature_set(counts=counts, dim=24, separation=0.6, seed=11)
    lesions = np.unique(fs.lesion_ids)
    test_lesions = set(np.random.default_rng(0).choice(lesions, len(lesions) // 3, replace=False))
    test = np.array([les in test_lesions for les in fs.lesion_ids])
    return fs, np.flatnonzero(~test), np.flatnonzero(test)


def _bmca(imbalanced, **params):
    fs, train, test = imbalanced
    head = make_head("logreg", alpha=0.01, **params)
    head.fit(fs.features[train], fs.labels[train], groups=fs.lesion_ids[train])
    return balanced_accuracy_score(fs.labels[test], head.predict(fs.features[test]))


def test_each_remedy_beats_no_remedy_on_imbalanced_data(imbalanced):
    plain = _bmca(imbalanced, class_weight="none", adjust="none")
    for params in ({"class_weight": "balanced"}, {"sampling": "balanced"},
                   {"adjust": "prior", "adjust_strength": 1.0}, {"adjust": "bmca"}):
        remedied = _bmca(imbalanced, **{"class_weight": "none", "adjust": "none", **params})
        assert remedied > plain + 0.03, params


def test_partial_prior_adjustment_sits_between(imbalanced):
    fs, train, _ = imbalanced
    offsets = [make_head("logreg", alpha=0.01, adjust="prior", adjust_strength=s)
               .fit(fs.features[train], fs.labels[train]).class_offsets_ for s in (0.5, 1.0)]
    np.testing.assert_allclose(offsets[0], offsets[1] / 2)


def test_prior_adjustment_is_a_no_op_after_balanced_weights(imbalanced):
    fs, train, _ = imbalanced
    head = make_head("logreg", alpha=0.01, class_weight="balanced", adjust="prior")
    head.fit(fs.features[train], fs.labels[train])
    np.testing.assert_allclose(head.class_offsets_, 0.0, atol=1e-9)
