"""Is an image one the model can judge? An out-of-distribution score from the
backbone's features, and its threshold.

The score is the distance of an image's standardised features from the subspace of
the top ``DIMS`` principal components of the training images' (the norm of the
residual the components leave): images like the training ones lie close to it,
photos of other things and strongly shifted lesions do not. Chosen by
``benchmarks/bench_ood.py`` (README, "Images the model cannot judge") against the
Mahalanobis distance to the nearest class in those components (Lee et al., 2018),
the two combined (probabilistic PCA), the distance to the 10th nearest training
image (Sun et al., 2022, which needs every training image's features in the
model) and the head's own confidence (which failed: photos get confident answers).

The threshold is the ``QUANTILE`` of the training images' out-of-fold scores
(each fold scored by statistics fitted on the other folds), so that about
``1 - QUANTILE`` of images like the training data are flagged.

The drift summary (``skinfeat.runs.drift``) compares images in the same components,
each divided by its standard deviation (``project``).
"""

import numpy as np

DIMS = 64  # principal components kept
QUANTILE = 0.95  # of the out-of-fold scores: the threshold flags about 5 % of images like the training data
FILE = "ood.npz"  # the statistics inside a model directory
KEYS = ("mean", "scale", "components", "sd")


def fit_ood(X, dims=DIMS):
    """The statistics of the score, fitted on training features ``X`` [n, D], float32:
    {mean, scale: the standardisation; components [D, k]: the top k principal
    components (orthonormal columns); sd [k]: the standard deviation along each}."""
    from sklearn.utils.extmath import randomized_svd

    X = np.asarray(X, np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-6 * max(scale.max(), 1e-12), scale, 1.0)
    Z = (X - mean) / scale
    k = int(min(dims, *Z.shape))
    _, values, vt = randomized_svd(Z, k, random_state=0)
    sd = np.maximum(values / np.sqrt(max(len(Z) - 1, 1)), 1e-6)
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
            "components": vt.T.astype(np.float32), "sd": sd.astype(np.float32)}


def _standardised(stats, X):
    X = np.asarray(X, np.float32)
    if X.ndim != 2 or X.shape[1] != stats["mean"].shape[0]:
        raise ValueError(f"expected features [n, {stats['mean'].shape[0]}], got shape {X.shape}")
    return ((X - stats["mean"]) / stats["scale"]).astype(np.float64)


def ood_scores(stats, X):
    """Scores [n] of features ``X`` [n, D]: the norm of their standardised features'
    residual outside the principal components (larger: less like the training images)."""
    Z = _standardised(stats, X)
    P = Z @ stats["components"]
    return np.sqrt(np.maximum((Z ** 2).sum(axis=1) - (P ** 2).sum(axis=1), 0.0))


def project(stats, X):
    """Features ``X`` [n, D] in the principal components, each divided by its standard deviation [n, k]."""
    return (_standardised(stats, X) @ stats["components"]) / stats["sd"]


def out_of_fold_scores(X, fold):
    """Each scored row's score [n] by statistics fitted on the other folds' rows
    (``fold`` >= 0: scored; -1: training only); NaN for rows of no fold."""
    X, fold = np.asarray(X), np.asarray(fold)
    scores = np.full(len(X), np.nan)
    for f in np.unique(fold[fold >= 0]):
        test = fold == f
        scores[test] = ood_scores(fit_ood(X[~test]), X[test])
    return scores


def ood_fields(X, fold, quantile=QUANTILE):
    """What a run or model records: the method, the threshold (the ``quantile`` of
    the out-of-fold scores) and the share of out-of-fold rows it flags."""
    oof = out_of_fold_scores(X, fold)
    oof = oof[np.isfinite(oof)]
    threshold = float(np.quantile(oof, quantile))
    return {"method": "pca-residual", "dims": DIMS, "quantile": quantile,
            "threshold": threshold, "flagged_out_of_fold": float((oof > threshold).mean()), "n": int(len(oof))}


def ood_line(about):
    """What a model's ``unusual`` flag means, in one line, from what model.json says of its score."""
    return (f"unusual: an image unlike the model's training images (its out-of-distribution score, the distance of "
            f"its features from their principal subspace, above {about['threshold']:.1f}, which "
            f"{about.get('flagged_out_of_fold', 1 - QUANTILE):.0%} of its training images reach out of fold): "
            "do not trust its classes")


def refit_line(directory):
    """What to do with a model saved before the score existed."""
    return (f"note: model {directory} has no out-of-distribution score (saved before skinfeat had one), so images "
            "unlike its training images are not flagged; refit it with `skinfeat fit --out` (or `compare --best`)")
