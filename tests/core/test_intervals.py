"""The bootstrap intervals and paired tests (``skinfeat.core.intervals``): the same
figures as independent computations, and intervals that cover the truth 95 % of
the time on simulated data with a known difference, grouped and ungrouped."""

import numpy as np
import pytest

from devtools.synthetic import PAIR_RECALL as P
from devtools.synthetic import simulate_pair as simulate
from skinfeat.core.intervals import (
    Resamples,
    bootstrap_scores,
    corrected_t_test,
    interval,
    paired_difference,
    percentile_interval,
)
from skinfeat.core.metrics import classification_metrics


def predictions(n=600, k=7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba, proba.argmax(1)


def test_ungrouped_interval_is_scipys_percentile_bootstrap_on_the_same_resamples():
    from scipy import stats

    y, proba, pred = predictions(200)
    resamples = Resamples.draw(n=len(y), n_resamples=120, seed=3)
    ours = interval(y, proba, pred, resamples)
    memo = {}

    def statistic(rows, name):  # skinfeat's metrics of the resampled rows, computed once per resample
        key = rows.tobytes()
        if key not in memo:
            memo[key] = classification_metrics(y[rows], proba[rows], pred[rows])
        return memo[key][name]

    for name in ("bmca", "accuracy", "macro_auc"):
        theirs = stats.bootstrap((np.arange(len(y)),), lambda rows, name=name: statistic(rows, name),
                                 vectorized=False,
                                 n_resamples=120, method="percentile", rng=np.random.default_rng(3))
        assert ours[name]["low"] == pytest.approx(theirs.confidence_interval.low, abs=1e-9), name
        assert ours[name]["high"] == pytest.approx(theirs.confidence_interval.high, abs=1e-9), name


def test_the_point_estimate_is_the_fold_mean_a_record_shows():
    y, proba, pred = predictions(900)
    fold = np.arange(900) % 3
    lesion = np.arange(900) // 2 * 3 + fold  # two images per lesion, each lesion in one fold
    once = Resamples.draw(lesion, fold, n_resamples=1)
    once.counts[:] = 1  # every lesion once: the data itself
    scores = bootstrap_scores(y, proba, pred, once)
    for name in ("bmca", "accuracy", "macro_auc"):
        expected = np.mean([classification_metrics(y[fold == f], proba[fold == f], pred[fold == f])[name]
                            for f in range(3)])
        assert scores[name][0] == pytest.approx(expected, abs=1e-12), name


def test_lesions_are_resampled_whole_and_within_their_fold():
    lesion = np.repeat(np.arange(50), 3)
    fold = lesion % 5
    r = Resamples.draw(lesion, fold, n_resamples=20, seed=1)
    weights = r.row_weights()
    assert np.all(weights[:, 0::3] == weights[:, 1::3])  # the images of a lesion go together
    for f in range(5):  # each fold keeps its number of lesions
        assert np.all(r.counts[:, r.stratum == f].sum(1) == 10)
    with pytest.raises(ValueError, match="spans several strata"):
        Resamples.draw(lesion, np.arange(150) % 5)


def test_corrected_t_test_is_nadeau_and_bengios_formula():
    from scipy import stats

    d = np.array([0.01, 0.03, -0.005, 0.02, 0.015])
    got = corrected_t_test(d, n_train=8000, n_test=2000)
    k, mean, s2 = 5, d.mean(), np.sum((d - d.mean()) ** 2) / 4
    t = mean / np.sqrt((1 / k + 2000 / 8000) * s2)
    assert got["t"] == pytest.approx(t) and got["df"] == 4
    assert got["p"] == pytest.approx(2 * (1 - stats.t.cdf(abs(t), 4)))
    plain = stats.ttest_1samp(d, 0.0)  # the uncorrected test is more confident
    assert plain.pvalue < got["p"]


@pytest.mark.parametrize("grouped", [True, False])
def test_paired_intervals_cover_the_true_difference_95_percent_of_the_time(grouped):
    rng = np.random.default_rng(11 if grouped else 12)
    delta, n_sets, covered = 0.05, 500, 0
    for i in range(n_sets):
        y, a, b, lesion = simulate(rng, 400, delta, grouped)
        r = Resamples.draw(lesion if grouped else None, n=len(y), n_resamples=400, seed=i)
        d = paired_difference(y, a, b, r)
        covered += d["low"] <= delta <= d["high"]
    print(f"coverage {'grouped' if grouped else 'ungrouped'}: {covered / n_sets:.3f}")
    assert 0.93 <= covered / n_sets <= 0.97


def test_images_as_units_undercover_when_lesions_repeat():
    """Why the grouping: the same grouped data resampled by image covers less often."""
    rng = np.random.default_rng(13)
    covered = 0
    for i in range(300):
        y, a, _, _ = simulate(rng, 400, 0.05, True)
        d = percentile_interval(bootstrap_scores(y, None, a, Resamples.draw(n=len(y), n_resamples=300, seed=i),
                                                 ("bmca",))["bmca"])
        covered += d[0] <= P.mean() <= d[1]  # A's true BMCA
    print(f"coverage of images as units on grouped data: {covered / 300:.3f}")
    assert covered / 300 < 0.9
