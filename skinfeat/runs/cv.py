"""The one fold loop: a head fitted on the other folds and scored on each fold
(``cross_validate``), the final fit on every CV row, the CV summary stored in a
record, and the out-of-fold predictions written beside it.

When the file holds augmented views, a head trains on every view of its
training images (the clean one and the augmented ones, each keeping its lesion
as group) and is scored on each test image's clean view: the mode ``predict``,
``serve``, ``evaluate`` and the web page run by default (``MODE``). The mean over
the test image's views (test-time augmentation, ``predict --tta views``) is
scored beside it, with the paired difference (the record's ``modes``).
"""

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from skinfeat.core.atomic import atomic_path
from skinfeat.core.calibration import calibration_fields
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import DataError
from skinfeat.core.intervals import Resamples, interval, observed_bmca, paired_difference
from skinfeat.core.metrics import classification_metrics, expected_calibration_error, prior_baseline, summarize_folds
from skinfeat.core.operating import operating_points
from skinfeat.core.paths import runs_dir
from skinfeat.data.folds import resolve_folds, thin_classes
from skinfeat.heads import inference, make_head


def training_rows(fs, rows, use_views):
    """(X, y, groups) for ``rows``: each row's clean features, then each augmented view."""
    X = fs.features[rows]
    if use_views and fs.views is not None:
        X = np.concatenate([X] + [fs.views[rows, v] for v in range(fs.views.shape[1])])
    repeat = len(X) // len(rows)
    return X, np.tile(fs.labels[rows].astype(int), repeat), np.tile(fs.lesion_ids[rows], repeat)


MODE = "none"  # what the CV figures score: the clean view, as every front end predicts by default
TUNED = ("alpha_", "k_")  # what a head chooses on its inner split (logreg's penalty, knn's k): recorded per fold


@dataclass
class CVResult:
    fold_metrics: list
    baseline_metrics: list
    oof_proba: np.ndarray  # [N, K], NaN for rows outside the folds
    oof_pred: np.ndarray  # [N] decided class (CLASSES index, after the prior adjustment), -1 outside
    fit_seconds: list
    predict_seconds: list
    first: tuple = None  # (fold, test rows, fitted head) of the first fold, for the shift check
    train_images: list = field(default_factory=list)  # training rows of each fold (--train-fraction)
    chosen: list = field(default_factory=list)  # what each fold's head chose on its inner split (TUNED)
    oof_scores: np.ndarray = None  # [N, K] the decision scores (prior-adjusted probabilities), NaN outside
    oof_views: np.ndarray = None  # [N] decisions from the mean over every view (--tta views), -1 outside; None: no views


def lesion_fraction(rows, labels, lesions, fraction, seed, where):
    """A seeded share ``fraction`` of ``rows``, taken by whole lesions within each class
    (each lesion by its first image's label; the share of each class's lesions rounded),
    sorted. DataError when a class would keep no lesion."""
    if fraction >= 1:
        return rows
    rng = np.random.default_rng(seed)
    names, first = np.unique(np.asarray(lesions)[rows].astype(str), return_index=True)
    lesion_label = np.asarray(labels)[rows][first].astype(int)
    keep = []
    for c in range(len(CLASSES)):
        mine = names[lesion_label == c]
        if not len(mine):
            raise DataError(f"--train-fraction {fraction:g}: {where} holds no {CLASSES[c]} image, so a fraction of "
                            f"it has none either; expected folds whose training part has every class")
        n = int(round(fraction * len(mine)))
        if n == 0:
            raise DataError(f"--train-fraction {fraction:g} keeps none of the {len(mine)} {CLASSES[c]} lesions of "
                            f"{where}; expected a fraction of at least {1 / len(mine):.3g}")
        keep.extend(rng.permutation(mine)[:n])
    return rows[np.isin(np.asarray(lesions)[rows].astype(str), keep)]


def cross_validate(fs, head_name, params=None, folds=None, use_views=True, log=None, scored=None,
                   train_fraction=1.0):
    """Fit ``head_name`` once per fold on the other folds and score it on that fold
    (``scored``: only on these folds); with ``train_fraction`` < 1, on that share of
    the other folds' lesions (``lesion_fraction``, seeded by the fold), for a
    label-efficiency curve."""
    folds = folds or resolve_folds(fs)
    thin = thin_classes(fs.labels, folds.fold)
    if thin:
        print(thin, file=sys.stderr)
    use_views = use_views and fs.views is not None
    oof = np.full((len(fs), len(CLASSES)), np.nan)
    result = CVResult([], [], oof, np.full(len(fs), -1), [], [], oof_scores=np.full_like(oof, np.nan),
                      oof_views=np.full(len(fs), -1) if use_views else None)
    todo = [f for f in np.unique(folds.fold[folds.fold >= 0]) if scored is None or f in scored]
    for i, f in enumerate(todo):
        train, test = np.flatnonzero((folds.fold >= 0) & (folds.fold != f)), np.flatnonzero(folds.fold == f)
        train = lesion_fraction(train, fs.labels, fs.lesion_ids, train_fraction, int(f),
                                f"the training part of fold {f}")
        result.train_images.append(len(train))
        X, y, groups = training_rows(fs, train, use_views)
        start = time.perf_counter()
        head = make_head(head_name, **(params or {})).fit(X, y, groups=groups)
        result.fit_seconds.append(time.perf_counter() - start)
        result.chosen.append({name.rstrip("_"): getattr(head, name).item() if hasattr(getattr(head, name), "item")
                              else getattr(head, name) for name in TUNED if hasattr(head, name)})
        start = time.perf_counter()
        oof[test] = inference.mean_over_views(head.predict_proba, head.classes_, fs.features[test])
        result.predict_seconds.append(time.perf_counter() - start)
        y_test = fs.labels[test].astype(int)
        offsets = inference.class_offsets(head.classes_, head.class_offsets_)
        if use_views:
            result.oof_views[test] = inference.decide(inference.mean_over_views(
                head.predict_proba, head.classes_, fs.features[test], fs.views[test]), offsets)
        result.oof_pred[test] = inference.decide(oof[test], offsets)
        result.oof_scores[test] = inference.adjusted(oof[test], offsets)
        result.fold_metrics.append(classification_metrics(y_test, oof[test], result.oof_pred[test]))
        result.baseline_metrics.append(prior_baseline(fs.labels[train], y_test))
        if i == 0:
            result.first = (int(f), test, head)
        if log:
            m = result.fold_metrics[-1]
            log(f"fold {i + 1}/{len(todo)}: BMCA {m['bmca']:.3f}  accuracy {m['accuracy']:.3f}  "
                f"top-3 {m['top3']:.3f}  ({result.fit_seconds[-1]:.1f} s)")
    return result


def fit_final(fs, head_name, params=None, folds=None, use_views=True, leave_out=None):
    """The head fitted on every row that took part in the CV (held-out rows stay out,
    and those of fold ``leave_out``: the head of that fold's CV)."""
    used = fs.labels >= 0 if folds is None else (folds.fold >= 0) & (folds.fold != leave_out)  # != None: all
    rows = np.flatnonzero(used)
    X, y, groups = training_rows(fs, rows, use_views and fs.views is not None)
    return make_head(head_name, **(params or {})).fit(X, y, groups=groups)


def summarize(result):
    """The CV summary stored in a record: metrics and the always-NV baseline."""
    summary = summarize_folds(result.fold_metrics)
    base = summarize_folds(result.baseline_metrics)["scalars"]
    summary["baseline"] = {"name": "always NV (training prior)",
                           **{name: base[name]["mean"] for name in ("bmca", "accuracy", "top3", "macro_auc")}}
    return summary


def write_oof(record, fs, fold, result, runs=None, shift_means=None):
    """The CV's out-of-fold probabilities (as trained) and decisions next to the record,
    as ``<run_id>.oof.npz`` (image_id, label, lesion_id, fold, proba [N, 7], NaN rows
    outside the scored folds; pred [N], the decided class index, -1 outside), for
    ``skinfeat report``'s plots and ``skinfeat ensemble``. ``fs``: the rows (anything
    with ``image_ids``, ``labels``, ``lesion_ids``), ``fold`` their folds. Returns the
    file name."""
    from pathlib import Path


    name = f"{record['run_id']}.oof.npz"
    with atomic_path(Path(runs or runs_dir()) / name, suffix=".npz") as tmp:
        np.savez_compressed(tmp, image_id=np.asarray(fs.image_ids, dtype=str), label=fs.labels,
                            lesion_id=np.asarray(fs.lesion_ids, dtype=str), fold=fold,
                            proba=result.oof_proba.astype(np.float32),
                            pred=result.oof_pred, **shift_arrays(shift_means))
    return name


def shift_arrays(shift_means):
    """``write_oof``'s arrays of the shift check's mean features (none without them)."""
    if not shift_means:
        return {}
    return {"shift_names": np.asarray(list(shift_means), dtype=str),
            "shift_means": np.stack(list(shift_means.values())).astype(np.float32)}


def read_shift_means(path):
    """{shift: mean image features} a run's oof file at ``path`` keeps ({} when it has none)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "shift_names" not in npz.files:
                return {}
            return dict(zip(npz["shift_names"].tolist(), npz["shift_means"]))
    except (OSError, ValueError, KeyError):
        return {}


def cv_resamples(result, rows, fold):
    """The lesion-grouped resamples of the scored rows (lesions resampled within their
    fold; seeded), which every interval of a record is computed on."""
    scored = np.flatnonzero(result.oof_pred >= 0)
    return Resamples.draw(np.asarray(rows.lesion_ids, dtype=str)[scored], np.asarray(fold)[scored],
                          grouped_by="lesion")


def cv_intervals(result, rows, fold, resamples=None):
    """The record's ``intervals`` and ``operating_points``: lesion-grouped bootstrap 95 %
    intervals of the fold-mean BMCA, accuracy and macro AUC of the out-of-fold
    predictions (``skinfeat.core.intervals``), and the melanoma and malignant operating
    points pooled over the folds (``skinfeat.core.operating``), on the same resamples
    (lesions resampled within their fold). ``rows``: anything with ``labels`` and
    ``lesion_ids``; ``fold``: their folds."""
    scored = np.flatnonzero(result.oof_pred >= 0)
    resamples = resamples if resamples is not None else cv_resamples(result, rows, fold)
    y = np.asarray(rows.labels)[scored].astype(int)
    return (interval(y, result.oof_proba[scored], result.oof_pred[scored], resamples),
            operating_points(y, result.oof_proba[scored], resamples))


def cv_calibration(result, rows, fold):
    """The record's ``calibration``: the temperature fitted on the out-of-fold
    probabilities and their ECE before and after (``skinfeat.core.calibration``), and
    the ECE of the decision scores (the prior-adjusted probabilities, which outputs
    showed as probabilities before calibration existed)."""
    scored = np.flatnonzero(result.oof_pred >= 0)
    y = np.asarray(rows.labels)[scored].astype(int)
    fields = calibration_fields(result.oof_proba[scored], y, np.asarray(fold)[scored])
    if result.oof_scores is not None:
        fields["ece_decision_scores"] = expected_calibration_error(y, result.oof_scores[scored])
    return fields


def cv_modes(result, rows, fold, resamples=None):
    """The record's ``modes``: BMCA of the clean view (``MODE``, the CV figures) and, when
    the file has views, of the mean over views, with the paired lesion-grouped
    difference (views minus clean) on the same resamples; None without views."""
    if result.oof_views is None:
        return None
    scored = np.flatnonzero(result.oof_pred >= 0)
    y = np.asarray(rows.labels)[scored].astype(int)
    resamples = resamples if resamples is not None else cv_resamples(result, rows, fold)
    clean, views = result.oof_pred[scored], result.oof_views[scored]
    return {"scored": MODE, "none": {"bmca": observed_bmca(y, clean, resamples)},
            "views": {"bmca": observed_bmca(y, views, resamples),
                      "difference": paired_difference(y, views, clean, resamples)}}


def summary_fields(result, rows, fold):
    """What a record holds of a cross-validation: metrics over folds, their intervals
    (``cv_intervals``), per-class figures, the summed confusion matrix, the baseline,
    the calibration (``cv_calibration``)."""
    summary = summarize(result)
    resamples = cv_resamples(result, rows, fold)  # drawn once for every interval below
    intervals, operating = cv_intervals(result, rows, fold, resamples)
    return {"metrics": summary["scalars"], "intervals": intervals, "operating_points": operating,
            "per_class": summary["per_class"], "confusion": summary["confusion"], "baseline": summary["baseline"],
            "calibration": cv_calibration(result, rows, fold), "modes": cv_modes(result, rows, fold, resamples)}

