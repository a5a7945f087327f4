"""Class-imbalance helpers shared by the heads.

HAM10000 is two thirds NV and about 1 % DF, so a head that minimises plain
log-loss learns to answer NV. Three remedies, each a head parameter:

- ``class_weight``: ``none``, ``balanced`` (n / (K * n_c), as scikit-learn) or
  ``sqrt`` (the square root of the balanced weight, a milder correction);
- ``sampling="balanced"``: resample the training rows so that every class is
  drawn equally often (same total number of rows);
- ``adjust``: after training, shift the log-probabilities by one offset per
  class: ``prior`` divides the probabilities by the (weighted) training prior
  raised to ``adjust_strength`` (1: the Bayes rule for balanced accuracy when
  the probabilities are calibrated; less keeps more of the ranking that top-k
  accuracy and AUC measure); ``bmca`` starts there and climbs balanced accuracy
  on the head's inner lesion-grouped validation part.
"""

import numpy as np

from skinfeat.core.errors import UsageError

CLASS_WEIGHTS = ("none", "balanced", "sqrt")
SAMPLINGS = ("none", "balanced")
ADJUSTS = ("none", "prior", "bmca")


def check_choice(name, value, choices):
    """Raise UsageError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UsageError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def class_weights(y, n_classes, mode="balanced"):
    """Weight per class (array of n_classes) for encoded labels ``y`` in 0..n_classes-1;
    ``mode`` is one of CLASS_WEIGHTS or an array of explicit weights per class.

    The weights are scaled so that the mean weight of a training row is 1,
    which keeps learning rates and regularisation comparable across modes.
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if not isinstance(mode, str):  # explicit weights per class
        weights = np.asarray(mode, dtype=np.float64)
        return weights / (weights[y].mean() if len(y) else 1.0)
    check_choice("class_weight", mode, CLASS_WEIGHTS)
    weights = np.ones(n_classes)
    if mode != "none":
        present = counts > 0
        weights[present] = len(y) / (present.sum() * counts[present])
        if mode == "sqrt":
            weights = np.sqrt(weights)
    return weights / (weights[y].mean() if len(y) else 1.0)


def sample_weights(y, n_classes, mode="balanced", sample_weight=None):
    """Per-row weights: the class weight of each row, times ``sample_weight``."""
    w = class_weights(y, n_classes, mode)[y]
    if sample_weight is not None:
        w = w * np.asarray(sample_weight, dtype=np.float64)
    return w


def balanced_indices(y, rng):
    """Row indices that draw every present class equally often (with replacement
    for small classes, without for large ones), as many rows as ``y`` has."""
    classes = np.unique(y)
    per_class = int(np.ceil(len(y) / len(classes)))
    parts = []
    for c in classes:
        rows = np.flatnonzero(y == c)
        parts.append(rng.choice(rows, per_class, replace=per_class > len(rows)))
    return rng.permutation(np.concatenate(parts))[: len(y)]


def prior_offsets(class_counts):
    """Centred ``-log prior`` offsets for (possibly weighted) class counts, 0 for absent
    classes: added to log-probabilities, they turn the training prior into a flat one."""
    counts = np.asarray(class_counts, dtype=np.float64)
    offsets = np.zeros(len(counts))
    present = counts > 0
    offsets[present] = -np.log(counts[present] / counts.sum())
    return offsets - offsets[present].mean()


def balanced_accuracy(y, pred, n_classes):
    """Mean recall over the classes present in ``y``."""
    recalls = [np.mean(pred[y == c] == c) for c in range(n_classes) if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def fit_bmca_offsets(log_proba, y, start=None, steps=(1.0, 0.5, 0.25, 0.1), rounds=3):
    """Per-class offsets added to ``log_proba`` that maximise balanced accuracy on
    (``log_proba``, ``y``), by coordinate search from ``start`` (default zeros).

    The search moves one class offset at a time over a few step sizes and keeps
    a move only when it strictly improves balanced accuracy, so on a flat
    validation set it stays at ``start``.
    """
    n_classes = log_proba.shape[1]
    offsets = np.zeros(n_classes) if start is None else np.array(start, dtype=np.float64)

    def score(o):
        return balanced_accuracy(y, np.argmax(log_proba + o, axis=1), n_classes)

    best = score(offsets)
    for _ in range(rounds):
        improved = False
        for step in steps:
            for c in range(n_classes):
                for sign in (1.0, -1.0):
                    trial = offsets.copy()
                    trial[c] += sign * step
                    s = score(trial)
                    if s > best + 1e-12:
                        best, offsets, improved = s, trial, True
        if not improved:
            break
    return offsets - offsets.mean()
