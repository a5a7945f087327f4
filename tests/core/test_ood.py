"""The out-of-distribution score (``skinfeat.core.ood``) on features whose truth is
known: points near a low-dimensional subspace (as backbone features of one kind of
image are), and points off it."""

import numpy as np
import pytest

from skinfeat.core.ood import QUANTILE, fit_ood, ood_fields, ood_scores, out_of_fold_scores, project

D, K = 120, 10  # features, and the dimension of the subspace the training points lie near


def near_subspace(n, seed=0, off=0.2):
    """``n`` points on a K-dimensional subspace of D dimensions (unequal scales), plus noise ``off``."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(D, K)))[0]
    X = rng.normal(0, 3, (n, K)) @ basis.T + rng.normal(0, off, (n, D))
    return (X * np.linspace(0.5, 20, D) + 5).astype(np.float32)


def test_held_out_points_are_flagged_at_the_chosen_rate_and_points_off_the_subspace_all():
    X = near_subspace(3000)
    fold = np.arange(len(X)) % 5
    fields = ood_fields(X, fold)
    assert fields["flagged_out_of_fold"] == pytest.approx(1 - QUANTILE, abs=0.01)
    stats = fit_ood(X)  # the default 64 components: the subspace and some of the noise
    new = near_subspace(2000, seed=1)
    assert (ood_scores(stats, new) > fields["threshold"]).mean() == pytest.approx(1 - QUANTILE, abs=0.02)
    off = near_subspace(500, seed=2, off=0.6)  # three times as far off the subspace
    assert (ood_scores(stats, off) > fields["threshold"]).mean() > 0.9
    rng = np.random.default_rng(3)
    strangers = rng.normal(X.mean(axis=0), X.std(axis=0), (500, D)).astype(np.float32)  # right scales, no structure
    assert (ood_scores(stats, strangers) > fields["threshold"]).mean() > 0.99


def test_the_score_is_the_residual_outside_the_components():
    X = near_subspace(2000, off=0.0)
    stats = fit_ood(X, dims=K)
    assert ood_scores(stats, X).max() < 1e-2  # on the subspace: nothing outside it
    Z = (X[:5] - stats["mean"]) / stats["scale"]
    P = project(stats, X[:5]) * stats["sd"]
    np.testing.assert_allclose(P, Z @ stats["components"], rtol=1e-4, atol=1e-4)
    assert stats["components"].shape == (D, K) and np.allclose(stats["components"].T @ stats["components"],
                                                                np.eye(K), atol=1e-4)


def test_project_divides_each_component_by_its_spread():
    X = near_subspace(4000, off=0.0)
    W = project(fit_ood(X, dims=K), X)
    np.testing.assert_allclose(W.std(axis=0), 1.0, rtol=0.02)


def test_out_of_fold_scores_never_score_a_row_with_statistics_fitted_on_it():
    X = near_subspace(600)
    fold = np.arange(len(X)) % 3
    fold[:50] = -1  # training only
    oof = out_of_fold_scores(X, fold)
    assert np.isnan(oof[:50]).all() and np.isfinite(oof[50:]).all()
    in_sample = ood_scores(fit_ood(X), X[50:])
    assert np.median(oof[50:]) > np.median(in_sample)  # held-out rows look less familiar than fitted ones


def test_features_of_another_width_are_refused():
    X = near_subspace(300)
    with pytest.raises(ValueError, match=rf"expected features \[n, {D}\], got shape \(5, {D - 1}\)"):
        ood_scores(fit_ood(X), X[:5, :D - 1])


def test_constant_features_and_fewer_rows_than_dimensions_still_give_finite_scores():
    X = near_subspace(60)
    X[:, :10] = 1.0
    stats = fit_ood(X)
    assert stats["components"].shape == (D, 60) and np.isfinite(ood_scores(stats, X)).all()
    assert np.isfinite(project(stats, X)).all()
