"""Lesion-grouped bootstrap intervals and paired comparisons of classifiers.

HAM10000 holds several images of many lesions: images of one lesion are not
independent, so resampling images understates the noise. Here the unit of
resampling is the *group* (the lesion; the image where no lesion ids exist),
drawn with replacement within each *stratum* (the cross-validation fold: each
fold keeps its number of lesions), and the statistic is the one a record shows:
the mean over folds of each fold's score (one stratum: the score itself).

- ``Resamples(groups, strata)``: the group counts of ``n_resamples`` seeded
  resamples, shared by every classifier scored on the same rows (so differences
  are paired).
- ``bootstrap_scores(y, proba, pred, resamples)``: BMCA, accuracy and macro AUC per
  resample; ``interval(...)`` their percentile 95 % intervals.
- ``paired_difference(y, pred_a, pred_b, resamples)``: the interval of the
  difference in BMCA between two classifiers on the same rows.
- ``corrected_t_test(differences, n_train, n_test)``: Nadeau and Bengio's corrected
  resampled t-test of a per-fold difference (Machine Learning 52, 2003).

Resamples are drawn as ``scipy.stats.bootstrap`` draws them (``rng.integers(0, n,
(n_resamples, n))`` per stratum, ``numpy.random.default_rng(seed)``), and the
interval is the percentile one: with images as groups and one stratum, the
figures are scipy's (``method="percentile"``) to the last digit.
"""

from dataclasses import dataclass, field

import numpy as np

N_RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
METRICS = ("bmca", "accuracy", "macro_auc")
BATCH = 125  # resamples at once in the AUC's per-image weights: [BATCH, n] floats


@dataclass
class Resamples:
    """``counts`` [B, G]: how often each group is drawn in each resample; ``group``
    [n]: each row's group index; ``stratum`` [G]: each group's stratum index."""

    counts: np.ndarray
    group: np.ndarray
    stratum: np.ndarray
    grouped_by: str
    _by_stratum: list = field(default=None, init=False, repr=False)  # by_stratum(), once
    _totals: tuple = field(default=(None, None), init=False, repr=False)  # (labels key, [B, S, K] images per class)

    @classmethod
    def draw(cls, groups=None, strata=None, n=None, n_resamples=N_RESAMPLES, seed=SEED, grouped_by=None):
        """Seeded resamples of ``groups`` (one id per row; None: each row its own group)
        within ``strata`` (one id per row, constant within a group; None: one)."""
        n = len(groups) if groups is not None else (len(strata) if strata is not None else n)
        if groups is None:
            group, names = np.arange(n), None
        else:
            names, group = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        stratum_of_row = np.zeros(n, int) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
        stratum = np.zeros(group.max() + 1 if n else 0, int)
        stratum[group] = stratum_of_row
        if names is not None and np.any(stratum[group] != stratum_of_row):
            raise ValueError("a group spans several strata (a lesion in two folds): the folds are not grouped")
        rng = np.random.default_rng(seed)
        counts = np.zeros((n_resamples, len(stratum)), np.int32)
        for s in np.unique(stratum):
            members = np.flatnonzero(stratum == s)
            drawn = rng.integers(0, len(members), (n_resamples, len(members)))
            offsets = (np.arange(n_resamples)[:, None] * len(members) + drawn).ravel()
            counts[:, members] = np.bincount(offsets, minlength=n_resamples * len(members)).reshape(
                n_resamples, len(members))
        return cls(counts, group, stratum, grouped_by or ("image" if groups is None else "group"))

    @classmethod
    def once(cls, groups=None, strata=None, n=None):
        """The data itself as one "resample" (every group once): the observed statistic."""
        drawn = cls.draw(groups, strata, n, n_resamples=0)
        return cls(np.ones((1, len(drawn.stratum)), np.int32), drawn.group, drawn.stratum, drawn.grouped_by)

    @property
    def n_resamples(self):
        return len(self.counts)

    def by_stratum(self):
        """[(group indices, [B, g] float counts)] per stratum, computed once."""
        if self._by_stratum is None:
            self._by_stratum = [(members, self.counts[:, members].astype(np.float64))
                                for members in (np.flatnonzero(self.stratum == s)
                                                for s in range(self.stratum.max() + 1 if len(self.stratum) else 0))]
        return self._by_stratum

    def row_weights(self, rows=slice(None), resamples=slice(None)):
        """[b, n] floats: how often each row (of ``rows``) is drawn in each resample."""
        return self.counts[resamples][:, self.group[rows]].astype(np.float64)


_CONTROLLER = []


def one_blas_thread():
    """A context with BLAS on one thread (threadpoolctl's controller, made once: finding
    the loaded libraries takes milliseconds in a process that holds TensorFlow)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def _class_tallies(resamples, y, pred, k):
    """Per resample, stratum and class: images (``total``) and correct ones (``hits``),
    [B, S, K] each, from per-group tallies (cheap: a [B, G] x [G, K] product)."""
    n_groups, n_strata = len(resamples.stratum), resamples.stratum.max() + 1
    cell = resamples.group * k + y
    hits = np.bincount(cell, weights=(pred == y), minlength=n_groups * k).reshape(n_groups, k)
    key = (k, hash(y.tobytes()))  # the images per class depend on the labels only: once per resamples
    if resamples._totals[0] != key:
        total = np.bincount(cell, minlength=n_groups * k).reshape(n_groups, k).astype(np.float64)
        with one_blas_thread():
            resamples._totals = (key, np.stack([counts @ total[members]
                                                for members, counts in resamples.by_stratum()], axis=1))
    out_hits = np.zeros((resamples.n_resamples, n_strata, k))
    with one_blas_thread():  # small products: one BLAS thread is 4x faster on a busy 2-core machine
        for s, (members, counts) in enumerate(resamples.by_stratum()):
            out_hits[:, s] = counts @ hits[members]
    return resamples._totals[1], out_hits


def _nanmean(values, axis):
    """np.nanmean, NaN without a warning where every value is NaN."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite.any(axis), np.where(finite, values, 0).sum(axis) / finite.sum(axis), np.nan)


def _fold_mean(values):
    """The mean over strata of [..., S] values, ignoring NaN (a stratum without the metric)."""
    return _nanmean(values, -1)


def _bmca_accuracy(total, hits):
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total > 0, hits / np.where(total > 0, total, 1), np.nan)
        present = total > 0
        bmca = np.where(present.any(-1), np.nansum(recall, -1) / np.maximum(present.sum(-1), 1), np.nan)
        accuracy = hits.sum(-1) / np.where(total.sum(-1) > 0, total.sum(-1), np.nan)
    return _fold_mean(bmca), _fold_mean(accuracy)


def _weighted_auc(weights, score, positive):
    """One-vs-rest AUC of ``score`` for each row of ``weights`` [b, n] (ties count 1/2);
    NaN where a resample has no positive or no negative."""
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    w = weights[:, order]
    pos = positive[order]
    wp = np.add.reduceat(np.where(pos, w, 0), starts, axis=1)
    wn = np.add.reduceat(np.where(pos, 0, w), starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    with np.errstate(invalid="ignore", divide="ignore"):
        return (wp * (below + 0.5 * wn)).sum(1) / (wp.sum(1) * wn.sum(1))


def _macro_auc(resamples, y, proba, k):
    """[B] mean over strata of the mean one-vs-rest AUC over the classes present."""
    n_strata = resamples.stratum.max() + 1
    out = np.full((resamples.n_resamples, n_strata), np.nan)
    row_stratum = resamples.stratum[resamples.group]
    for s in range(n_strata):
        rows = np.flatnonzero(row_stratum == s)
        classes = [c for c in range(k) if 0 < np.sum(y[rows] == c) < len(rows)]
        if not classes:
            continue
        for start in range(0, resamples.n_resamples, BATCH):
            batch = slice(start, start + BATCH)
            w = resamples.row_weights(rows, batch)
            aucs = np.stack([_weighted_auc(w, proba[rows, c], y[rows] == c) for c in classes], axis=1)
            out[batch, s] = _nanmean(aucs, 1)
    return _fold_mean(out)


def bootstrap_scores(y, proba, pred, resamples, metrics=METRICS):
    """{metric: [B] values} of the fold-mean ``metrics`` (of METRICS) on every resample.
    ``proba`` is needed for macro AUC only (None otherwise)."""
    y = np.asarray(y, int)
    pred = np.asarray(pred, int)
    k = proba.shape[1] if proba is not None else int(max(y.max(), pred.max()) + 1)
    out = {}
    if {"bmca", "accuracy"} & set(metrics):
        out["bmca"], out["accuracy"] = _bmca_accuracy(*_class_tallies(resamples, y, pred, k))
    if "macro_auc" in metrics:
        out["macro_auc"] = _macro_auc(resamples, y, np.asarray(proba, np.float64), k)
    return {m: out[m] for m in metrics}


def percentile_interval(values, level=LEVEL):
    """(low, high): the percentile interval of bootstrap ``values`` (NaN left out)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return None, None
    alpha = (1 - level) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def interval(y, proba, pred, resamples, metrics=METRICS, level=LEVEL):
    """The record's ``intervals`` block: {metric: {low, high}} and how they were made."""
    scores = bootstrap_scores(y, proba, pred, resamples, metrics)
    block = {m: dict(zip(("low", "high"), percentile_interval(v, level))) for m, v in scores.items()}
    return {**block, "level": level, "resamples": resamples.n_resamples, "seed": SEED,
            "grouped_by": resamples.grouped_by, "method": "percentile bootstrap, resampled within folds"}


def grouping(groups, image_ids):
    """(groups, grouped_by) for data whose lesion ids are ``groups`` (the image id where
    no grouping is known): by lesion where some lesion has several images, else by image."""
    groups = np.asarray(groups, dtype=str)
    if len(np.unique(groups)) < len(groups) or np.any(groups != np.asarray(image_ids, dtype=str)):
        return groups, "lesion"
    return None, "image"


def decision_intervals(y, pred, resamples, level=LEVEL):
    """{bmca: [low, high], accuracy: [low, high]}: the shift check's intervals (no AUC)."""
    scores = bootstrap_scores(y, None, pred, resamples, ("bmca", "accuracy"))
    return {m: list(percentile_interval(v, level)) for m, v in scores.items()}


def observed_bmca(y, pred, resamples):
    """The fold-mean BMCA of the data itself (every group once), on ``resamples``' strata."""
    once = Resamples(np.ones((1, len(resamples.stratum)), np.int32), resamples.group, resamples.stratum,
                     resamples.grouped_by)
    return float(bootstrap_scores(y, None, pred, once, ("bmca",))["bmca"][0])


def paired_difference(y, pred_a, pred_b, resamples, level=LEVEL, b_scores=None):
    """{difference, low, high}: BMCA of ``pred_a`` minus that of ``pred_b`` (the same
    rows, the same resamples), fold means, with its percentile interval. ``b_scores``:
    (observed, [B] bootstrap BMCA) of ``pred_b`` when already computed."""
    a = bootstrap_scores(y, None, pred_a, resamples, ("bmca",))["bmca"]
    b_point, b = b_scores or (observed_bmca(y, pred_b, resamples),
                              bootstrap_scores(y, None, pred_b, resamples, ("bmca",))["bmca"])
    low, high = percentile_interval(a - b, level)
    return {"difference": observed_bmca(y, pred_a, resamples) - b_point, "low": low, "high": high}


def corrected_t_test(differences, n_train, n_test):
    """Nadeau and Bengio's corrected resampled t-test of per-fold ``differences`` (k
    folds, each trained on ``n_train`` and tested on ``n_test`` rows): the variance of
    the mean is (1/k + n_test/n_train) s^2, not s^2/k, as the training sets overlap.
    Returns {mean, t, df, p} (two-sided; t and p None when every fold differs the same)."""
    from scipy.special import stdtr  # Student's t distribution function (scipy.stats takes seconds to import)

    d = np.asarray(differences, np.float64)
    k = len(d)
    mean = float(d.mean())
    variance = float(d.var(ddof=1)) if k > 1 else 0.0
    if variance == 0.0:
        return {"mean": mean, "t": None, "df": k - 1, "p": None}
    t = mean / np.sqrt((1 / k + n_test / n_train) * variance)
    return {"mean": mean, "t": float(t), "df": k - 1, "p": float(2 * stdtr(k - 1, -abs(t)))}


def span(bounds, spec=".3f"):
    """``[low, high]`` of an interval (a {low, high} dict or a pair); '' when there is none."""
    if isinstance(bounds, dict):
        bounds = (bounds.get("low"), bounds.get("high"))
    if not bounds or bounds[0] is None:
        return ""
    return f"[{bounds[0]:{spec}}, {bounds[1]:{spec}}]"
