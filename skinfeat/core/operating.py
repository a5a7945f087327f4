"""Operating points of two clinical questions, each with its lesion-grouped 95 % interval.

- ``melanoma``: MEL against the rest, scored by P(MEL);
- ``malignant``: MEL, BCC and AKIEC against the benign classes, scored by the sum
  of their probabilities.

For each: ROC AUC, the sensitivity at specificities 82, 89 and 95 % (the best
threshold whose specificity reaches it: ISIC's and dermatologists' reference
points) and the specificity at 95 % sensitivity. Pooled over the folds (one ROC of
every out-of-fold probability), each figure with the percentile interval of the
same lesion resamples as ``skinfeat.core.intervals`` (lesions resampled within
their fold).
"""

import numpy as np

from skinfeat.core.classes import CLASSES
from skinfeat.core.intervals import BATCH, percentile_interval

TASKS = {"melanoma": ("MEL",), "malignant": ("MEL", "BCC", "AKIEC")}
SPECIFICITIES = (0.82, 0.89, 0.95)
SENSITIVITY = 0.95


def _figures(weights, score, positive):
    """{auc, sens@spec..., spec@sens} per row of ``weights`` [b, n] (ties count as one
    threshold); NaN where a row has no positive or no negative weight."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last row of each distinct score
    w, pos = weights[:, order], positive[order]
    tp = np.cumsum(np.where(pos, w, 0), axis=1)[:, ends]
    fp = np.cumsum(np.where(pos, 0, w), axis=1)[:, ends]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / tp[:, -1:], fp / fp[:, -1:]
        # AUC by the trapezoid from (0, 0): ties are a diagonal step, half credit
        prev_tpr = np.concatenate([np.zeros((len(w), 1)), tpr[:, :-1]], axis=1)
        prev_fpr = np.concatenate([np.zeros((len(w), 1)), fpr[:, :-1]], axis=1)
        out = {"auc": np.sum((fpr - prev_fpr) * (tpr + prev_tpr) / 2, axis=1)}
        for spec in SPECIFICITIES:
            out[f"sensitivity_at_specificity_{spec:g}"] = np.max(np.where(fpr <= 1 - spec + 1e-12, tpr, 0.0), axis=1)
        reach = tpr >= SENSITIVITY - 1e-12
        out[f"specificity_at_sensitivity_{SENSITIVITY:g}"] = 1 - np.min(np.where(reach, fpr, 1.0), axis=1)
    bad = ~(np.isfinite(tpr[:, -1]) & np.isfinite(fpr[:, -1]))
    for v in out.values():
        v[bad] = np.nan
    return out


def task_score(proba, task):
    """The score of ``task`` (a key of TASKS): the summed probability of its positive classes."""
    return np.asarray(proba, np.float64)[:, [CLASSES.index(c) for c in TASKS[task]]].sum(axis=1)


def operating_points(y, proba, resamples):
    """The record's ``operating_points``: {task: {figure: {value, low, high}}, n_positive,
    n_negative} for rows of true classes ``y`` with probabilities ``proba`` [n, 7],
    intervals from ``resamples`` (``skinfeat.core.intervals.Resamples``)."""
    y = np.asarray(y, int)
    block = {}
    for task, classes in TASKS.items():
        positive = np.isin(y, [CLASSES.index(c) for c in classes])
        score = task_score(proba, task)
        if positive.all() or not positive.any():
            continue
        point = _figures(np.ones((1, len(y))), score, positive)
        boots = [_figures(resamples.row_weights(resamples=slice(start, start + BATCH)), score, positive)
                 for start in range(0, resamples.n_resamples, BATCH)]
        entry = {}
        for name, value in point.items():
            low, high = percentile_interval(np.concatenate([b[name] for b in boots]))
            entry[name] = {"value": float(value[0]), "low": low, "high": high}
        block[task] = {**entry, "n_positive": int(positive.sum()), "n_negative": int((~positive).sum()),
                       "positive_classes": list(classes)}
    return block


def operating_lines(block):
    """Text lines of an ``operating_points`` block (fit's and evaluate's output)."""
    if not block:
        return []
    lines = ["operating points (pooled over the folds; 95% intervals)"]
    for task, entry in block.items():
        sens = ", ".join(f"sens@spec{spec:g} {figure(entry, f'sensitivity_at_specificity_{spec:g}')}"
                         for spec in SPECIFICITIES)
        lines.append(f"{task} ({'+'.join(entry['positive_classes'])} vs rest, {entry['n_positive']} positive): "
                     f"AUC {figure(entry, 'auc')}; {sens}; spec@sens{SENSITIVITY:g} "
                     f"{figure(entry, f'specificity_at_sensitivity_{SENSITIVITY:g}')}")
    return lines


def figure(entry, name):
    """``0.912 [0.897, 0.925]``: one figure of a task's entry with its interval."""
    e = entry[name]
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" if e["low"] is not None else f"{e['value']:.3f}"


# ----------------------------------------------------------------------------- a chosen operating point

ALIASES = {"melanoma": "melanoma", "mel": "melanoma", "malignant": "malignant"}
BY = {"sens": "sensitivity", "sensitivity": "sensitivity", "spec": "specificity", "specificity": "specificity"}
POINT_HELP = "TASK:sens=X or TASK:spec=X, TASK melanoma (mel) or malignant, X in (0, 1): e.g. mel:sens=0.95"


def parse_point(text):
    """(task, "sensitivity" | "specificity", target) of ``fit --operating-point``; ValueError
    with what was expected."""
    task, _, rest = str(text).partition(":")
    by, _, value = rest.partition("=")
    try:
        target = float(value)
    except ValueError:
        target = None
    if task.lower() not in ALIASES or by.lower() not in BY or target is None or not 0 < target < 1:
        raise ValueError(f"{text!r} is not an operating point; expected {POINT_HELP}")
    return ALIASES[task.lower()], BY[by.lower()], target


def choose_point(y, proba, text, resamples):
    """The operating point ``text`` (``parse_point``) set on out-of-fold probabilities
    (as trained) of true classes ``y``: the threshold on the task's score that reaches
    the target (sensitivity: the highest threshold whose sensitivity reaches it;
    specificity: the lowest whose specificity does), and the sensitivity and
    specificity there with their lesion-grouped intervals (``resamples``). An image
    is referred when its score is at least the threshold."""
    task, by, target = parse_point(text)
    y = np.asarray(y, int)
    positive = np.isin(y, [CLASSES.index(c) for c in TASKS[task]])
    if positive.all() or not positive.any():
        raise ValueError(f"the {task} operating point needs positive and negative images; these have "
                         f"{int(positive.sum())} positive of {len(y)}")
    score = task_score(proba, task)
    thresholds = np.unique(score)[::-1]  # high to low: sensitivity rises, specificity falls
    sens = np.array([(score[positive] >= t).mean() for t in thresholds])
    spec = np.array([(score[~positive] < t).mean() for t in thresholds])
    if by == "sensitivity":
        threshold = thresholds[np.flatnonzero(sens >= target - 1e-12)[0]]
    else:
        threshold = thresholds[np.flatnonzero(spec >= target - 1e-12)[-1]]
    referred = score >= threshold
    entry = {"task": task, "positive_classes": list(TASKS[task]), "by": by, "target": target,
             "threshold": float(threshold), "n_positive": int(positive.sum()), "n_negative": int((~positive).sum()),
             "set_on": "out-of-fold probabilities (as trained)"}
    for name, rows, hit in (("sensitivity", positive, referred), ("specificity", ~positive, ~referred)):
        w = resamples.row_weights()
        with np.errstate(invalid="ignore", divide="ignore"):
            boots = (w[:, rows] * hit[rows]).sum(axis=1) / w[:, rows].sum(axis=1)
        low, high = percentile_interval(boots)
        entry[name] = {"value": float(hit[rows].mean()), "low": low, "high": high}
    return entry


def refer(proba, point):
    """A bool per image of probabilities (as trained) ``proba`` [n, 7]: referred by the ``point``."""
    return task_score(proba, point["task"]) >= point["threshold"]


def point_line(point):
    """One line of a chosen operating point, for the outputs that apply it."""
    return (f"refer: {point['task']} ({'+'.join(point['positive_classes'])}) score >= {point['threshold']:.4g}, "
            f"set for {point['by']} {point['target']:g} on the out-of-fold predictions: sensitivity "
            f"{figure(point, 'sensitivity')}, specificity {figure(point, 'specificity')}")


__all__ = ["POINT_HELP", "SENSITIVITY", "SPECIFICITIES", "TASKS", "choose_point", "figure", "operating_lines",
           "operating_points", "parse_point", "point_line", "refer", "task_score"]
