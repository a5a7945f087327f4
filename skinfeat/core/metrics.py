"""Classification metrics for one evaluation part, and their summary over folds.

Every function takes integer labels ``y`` (0..K-1, CLASSES order) and
probabilities ``proba`` [n, K] over all K classes. Decision metrics (BMCA,
accuracy, macro F1, per-class precision and recall, the confusion matrix) score
the predictions ``pred`` (default: the argmax of ``proba``; a head with a prior
adjustment decides on shifted scores); ranking and calibration metrics (top-k,
AUC, log-loss, ECE) score the probabilities. A class absent from ``y``
(a fold's test part without DF, say) has no recall: it is left out of
balanced accuracy, macro F1 and macro AUC and reported as None, never as 0.

Two ways to sum up a cross-validation, named wherever both are shown: *mean over
folds* (``summarize_folds``: each fold scored on its own, the scalars a run record
and the leaderboard hold) and *pooled* (every fold's out-of-fold predictions
together: ``confusion_scores`` of the summed confusion matrix, and the report's
ROC and reliability diagrams).
"""

import numpy as np

from skinfeat.core.classes import CLASSES

NV = CLASSES.index("NV")
SCALARS = ("bmca", "accuracy", "top2", "top3", "macro_f1", "macro_auc", "log_loss", "ece")
LABELS = {"bmca": "BMCA", "accuracy": "accuracy", "top2": "top-2", "top3": "top-3",
          "macro_f1": "macro F1", "macro_auc": "macro AUC", "log_loss": "log-loss", "ece": "ECE"}


def top_k_accuracy(y, proba, k):
    """Share of rows whose true class is among the ``k`` most probable."""
    top = np.argsort(-proba, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(y)[:, None], axis=1)))


ECE_BINS = 15  # the one ECE: fit's records and the report's reliability diagram


def expected_calibration_error(y, proba, n_bins=ECE_BINS):
    """Top-label ECE: the row-weighted gap between confidence and accuracy over
    ``n_bins`` equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = np.argmax(proba, axis=1) == y
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        members = bins == b
        ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def confusion_scores(confusion, class_names=CLASSES):
    """The decision metrics a confusion matrix (rows: true class) holds: ``per_class``
    precision, recall, f1, support (None where undefined), ``bmca`` (the mean recall of
    the classes present), ``accuracy`` and ``macro_f1``. Of a matrix summed over folds,
    these are the *pooled* figures (``summarize_folds`` gives the means over folds)."""
    cm = np.asarray(confusion, dtype=np.int64)
    per_class = {}
    for c, name in enumerate(class_names):
        support, predicted, hits = int(cm[c].sum()), int(cm[:, c].sum()), int(cm[c, c])
        recall = hits / support if support else None
        precision = hits / predicted if predicted else (0.0 if support else None)
        f1 = None
        if support:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    recalls = [m["recall"] for m in per_class.values() if m["support"]]
    f1s = [m["f1"] for m in per_class.values() if m["support"]]
    total = int(cm.sum())
    return {"per_class": per_class, "bmca": float(np.mean(recalls)) if recalls else None,
            "accuracy": float(np.trace(cm) / total) if total else None,
            "macro_f1": float(np.mean(f1s)) if f1s else None}


def classification_metrics(y, proba, pred=None, class_names=CLASSES):
    """All metrics of one part: the scalars in SCALARS, ``per_class`` (precision,
    recall, f1, support; None where undefined), ``confusion`` (rows: true class,
    columns: predicted) and ``n``."""
    from sklearn.metrics import confusion_matrix, roc_auc_score  # here: importing the ECE stays light

    y = np.asarray(y, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(class_names)
    pred = np.argmax(proba, axis=1) if pred is None else np.asarray(pred, dtype=int)
    cm = confusion_matrix(y, pred, labels=range(k))
    scores = confusion_scores(cm, class_names)
    aucs = [roc_auc_score(y == c, proba[:, c]) for c, name in enumerate(class_names)
            if 0 < scores["per_class"][name]["support"] < len(y)]
    p_true = np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)
    return {
        "n": int(len(y)),
        "bmca": scores["bmca"],
        "accuracy": scores["accuracy"],
        "top2": top_k_accuracy(y, proba, 2),
        "top3": top_k_accuracy(y, proba, 3),
        "macro_f1": scores["macro_f1"],
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "log_loss": float(-np.mean(np.log(p_true))),
        "ece": expected_calibration_error(y, proba),
        "per_class": scores["per_class"],
        "confusion": cm.tolist(),
    }


def prior_baseline(y_train, y_test, n_classes=len(CLASSES)):
    """Metrics of a head that ignores the image and always answers the training
    class frequencies: it always predicts the majority class (NV on HAM10000),
    scores 1/K balanced accuracy and about 0.67 accuracy on HAM10000."""
    prior = np.bincount(np.asarray(y_train, dtype=int), minlength=n_classes) + 1e-6
    proba = np.tile(prior / prior.sum(), (len(y_test), 1))
    return classification_metrics(y_test, proba, class_names=CLASSES[:n_classes])


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def summarize_folds(fold_metrics, class_names=CLASSES):
    """Mean and std over folds of every scalar (None values ignored), of each
    class's precision and recall, and the confusion matrix summed over folds."""
    summary = {name: dict(_mean_std([m[name] for m in fold_metrics]),
                          folds=[m[name] for m in fold_metrics]) for name in SCALARS}
    per_class = {}
    for c in class_names:
        per_class[c] = {key: _mean_std([m["per_class"][c][key] for m in fold_metrics])
                        for key in ("precision", "recall", "f1")}
        per_class[c]["support"] = int(sum(m["per_class"][c]["support"] for m in fold_metrics))
    confusion = np.sum([m["confusion"] for m in fold_metrics], axis=0).tolist()
    return {"scalars": summary, "per_class": per_class, "confusion": confusion}
