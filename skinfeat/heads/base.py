"""What every head shares: a scikit-learn classifier that trains on a lesion-grouped
inner split, weights or resamples classes, and may shift its decisions' class priors.

Probabilities and decisions are kept apart, as scikit-learn's threshold-tuning
classifiers do: ``predict_proba`` gives the probabilities as trained (their
ranking and calibration are what top-k accuracy, AUC, log-loss and ECE
measure), while ``predict`` takes the argmax of the log-probabilities plus one
offset per class (``class_offsets_``, from ``adjust``), which is where balanced
accuracy is won on imbalanced data.

A head subclass implements three methods::

    _fit(X, y, w, train, val, full) -> log-probabilities of X[val] (or None)
    _log_proba(X)                   -> log-probabilities [n, n_classes]
    _arrays() / _set_arrays(arrays) and optionally _save_files(dir) / _load_files(dir)

``y`` is encoded as 0..K-1 (``classes_`` holds the original labels), ``w`` the
per-row weights, ``train``/``val`` the inner split (``val`` None when the data
are too small to split), ``full`` every row (resampled when ``sampling="balanced"``).
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from skinfeat.heads import imbalance
from skinfeat.heads.inference import log_softmax

MIN_SPLIT_ROWS = 40  # below this, heads train on everything without an inner validation part


def inner_split(y, groups, fraction, seed):
    """Train/validation row indices with every group (lesion) on one side and about
    ``fraction`` of each class's rows in validation; None when the data are too small
    or a class would vanish from the training side.

    Groups are assigned whole, by their majority label, in a random order; a class
    with at least two groups always gets one into validation.
    """
    if fraction <= 0 or len(y) < MIN_SPLIT_ROWS:
        return None
    rng = np.random.default_rng(seed)
    k = int(y.max()) + 1
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    _, g = np.unique(groups, return_inverse=True)
    counts = np.zeros((g.max() + 1, k))
    np.add.at(counts, (g, y), 1)
    label, size = counts.argmax(axis=1), counts.sum(axis=1)
    in_val = np.zeros(len(label), bool)
    for c in range(k):
        candidates = rng.permutation(np.flatnonzero(label == c))
        take = candidates[np.cumsum(size[candidates]) <= fraction * size[candidates].sum()]
        if len(take) == 0 and len(candidates) >= 2:
            take = candidates[:1]
        in_val[take] = True
    val, train = np.flatnonzero(in_val[g]), np.flatnonzero(~in_val[g])
    if len(val) == 0 or len(np.unique(y[train])) < k:
        return None
    return train, val


class BaseHead(ClassifierMixin, BaseEstimator):
    """Base class of the heads; see the module docstring. Subclasses list their
    parameters in ``__init__`` (scikit-learn's rule: store them, nothing else)."""

    name = None  # the registry name

    def store_params(self, params):
        """Store each ``__init__`` parameter as an attribute of its name (``params``: the
        ``__init__``'s ``locals()``), as scikit-learn's ``get_params`` expects."""
        for key, value in params.items():
            if key not in ("self", "__class__"):
                setattr(self, key, value)

    def fit(self, X, y, groups=None, sample_weight=None):
        """Fit on features ``X`` [n, d] and labels ``y``. ``groups`` (e.g. lesion ids)
        keeps related rows on one side of the inner validation split."""
        if not isinstance(self.class_weight, dict):
            imbalance.check_choice("class_weight", self.class_weight, imbalance.CLASS_WEIGHTS)
        imbalance.check_choice("sampling", self.sampling, imbalance.SAMPLINGS)
        imbalance.check_choice("adjust", self.adjust, imbalance.ADJUSTS)
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        if groups is not None and len(groups) != len(y):
            raise ValueError(f"got {len(groups)} groups for {len(y)} rows; expected one group per row")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
            if not sample_weight.any():
                raise ValueError(f"sample_weight is zero for all {len(y)} rows; expected some positive weights")
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y, got 1 class: "
                             f"{self.classes_[0]!r}")
        k = len(self.classes_)
        mode = self.class_weight
        if isinstance(mode, dict):  # {label: weight}, as in scikit-learn
            mode = np.array([mode.get(c, 1.0) for c in self.classes_], dtype=np.float64)
        w = imbalance.sample_weights(y_enc, k, mode, sample_weight)
        rng = np.random.default_rng(self.random_state)
        split = inner_split(y_enc, groups, self.val_fraction, self.random_state)
        train, val = split if split else (np.arange(len(y_enc)), None)
        full = np.arange(len(y_enc))
        if self.sampling == "balanced":
            train = train[imbalance.balanced_indices(y_enc[train], rng)]
            full = imbalance.balanced_indices(y_enc, rng)
        val_log_proba = self._fit(X, y_enc, w, train, val, full)

        effective = np.bincount(y_enc[full], weights=w[full], minlength=k)
        offsets = np.zeros(k)
        if self.adjust != "none":
            offsets = self.adjust_strength * imbalance.prior_offsets(effective)
        if self.adjust == "bmca" and val_log_proba is not None:
            offsets = imbalance.fit_bmca_offsets(val_log_proba, y_enc[val], start=offsets)
        self.class_offsets_ = offsets
        return self

    def predict_proba(self, X):
        """Class probabilities as trained (not shifted by the prior adjustment)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        return np.exp(self._log_proba(X))

    def predict_log_proba(self, X):
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))

    def decision_scores(self, X):
        """Log-probabilities plus the class offsets of the prior adjustment: their
        argmax is the head's decision (``predict``)."""
        return self.predict_log_proba(X) + self.class_offsets_

    def adjusted_proba(self, X):
        """Softmax of ``decision_scores``: probabilities whose argmax is the decision,
        for formats that score the argmax of submitted probabilities (ISIC)."""
        return np.exp(log_softmax(self.decision_scores(X)))

    def predict(self, X):
        scores = self.decision_scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    # --- saving (see skinfeat.model.store): plain arrays and safe files only ---
    def get_state(self):
        """Fitted state as a dict of numpy arrays (no objects), for np.savez."""
        check_is_fitted(self)
        classes = np.asarray(self.classes_)
        state = {"classes_": classes.astype(str) if classes.dtype == object else classes,
                 "class_offsets_": self.class_offsets_,
                 "n_features_in_": np.asarray(self.n_features_in_)}
        state.update(self._arrays())
        return state

    def set_state(self, state):
        self.classes_ = state["classes_"]
        self.class_offsets_ = state["class_offsets_"]
        self.n_features_in_ = int(state["n_features_in_"])
        self._set_arrays(state)
        return self

    def save_files(self, directory):
        """Write files other than the arrays (a LightGBM text model, Keras weights); names written."""
        return []

    def load_files(self, directory):
        return self

    def _arrays(self):
        return {}

    def _set_arrays(self, state):
        pass

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True
        return tags

