"""The stacked and averaged ensembles' cross-validation (``skinfeat ensemble``,
run by ``skinfeat.runs.ensemble``): the members' out-of-fold probabilities
(``<run_id>.oof.npz`` beside each fit record) joined and combined on the same
lesion-grouped folds.

- Members must be fits on the same folds (the same folds hash) of the same
  labelled images with the same labels; only rows scored by every member take
  part (a member on a fine-tuned backbone scores only some folds).
- ``mean``: the average of the members' probabilities; decisions divide it by the
  training prior of the other folds as the heads do (``prior_offsets`` at the
  logreg head's default strength).
- ``stack``: skinfeat's ``logreg`` head as meta-learner on the log-probabilities
  of every member ([n, 7 M], clipped at 1e-6), lesion ids as groups.

What is nested, and what is not. Nested: a row of fold f is scored by member
heads fitted on the other folds (the members' own CV) and by a meta-learner
fitted only on rows of the other folds, so no model that scores a row saw that
row or its label (``other_folds``; a test plants a leak there). Not nested: the
meta-learner's inputs on its training rows (the OOF probabilities of folds
g != f) come from member heads that were trained on fold f among others, so
what it learns depends on fold f's images and labels at one remove, as in all
stacked generalisation; removing that would refit every member without fold f
inside each outer fold ((k-1) times the member fits), which this does not do.
"""

import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import DataError
from skinfeat.core.metrics import classification_metrics, prior_baseline
from skinfeat.core.paths import runs_dir
from skinfeat.data.folds import folds_hash
from skinfeat.heads import make_head
from skinfeat.heads.imbalance import prior_offsets
from skinfeat.heads.inference import adjusted, class_offsets, decide, in_classes_order
from skinfeat.model.ensemble_dir import META_HEAD, combine, stack_features
from skinfeat.runs.cv import CVResult

META_PARAMS = {"power": 1}  # log-probabilities are already on a sensible scale: no power normalisation


@dataclass
class Members:
    """The members' out-of-fold probabilities, joined on image id: the labelled rows
    taking part in the folds, in the first member's order."""

    records: list
    image_ids: np.ndarray
    labels: np.ndarray
    lesion_ids: np.ndarray  # the image ids where an oof file predates lesion ids
    fold: np.ndarray
    proba: np.ndarray  # [M, N, 7] as trained; NaN rows where a member scored no fold
    scored: np.ndarray = field(init=False)  # [N] scored by every member

    def __post_init__(self):
        self.scored = np.isfinite(self.proba).all(axis=(0, 2))

    @property
    def scored_folds(self):
        return [int(f) for f in np.unique(self.fold[self.scored])]


# ----------------------------------------------------------------------------- members

def read_oof(record, runs):
    """The arrays of a record's oof file (image_id, label, fold, proba, lesion_id and
    pred: the decided class, the argmax in files that predate it), checked against the
    record; DataError saying what to do when it is missing or damaged."""
    run, name = record["run_id"], record.get("predictions_file")
    path = Path(runs) / name if isinstance(name, str) else None
    fix = (f"re-run its fit (`skinfeat fit --head {record['head']} --features {record['features'].get('path')}`) "
           "or leave the run out")
    if path is None or not path.is_file():
        raise DataError(f"run {run} has no out-of-fold probabilities ({path or 'none recorded'} is missing); "
                        f"an ensemble is made from them: {fix}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            oof = {k: npz[k] for k in ("image_id", "label", "fold", "proba")}
            oof["lesion_id"] = npz["lesion_id"] if "lesion_id" in npz.files else oof["image_id"]
            oof["pred"] = npz["pred"] if "pred" in npz.files else None
        n = len(oof["image_id"])
        proba = oof["proba"].astype(np.float64)
        if proba.shape != (n, len(CLASSES)) or any(oof[k].shape != (n,) for k in ("label", "fold", "lesion_id")):
            raise ValueError(f"proba has shape {proba.shape} for {n} images, expected ({n}, {len(CLASSES)})")
        if oof["label"].dtype.kind not in "iu" or oof["fold"].dtype.kind not in "iu":
            raise ValueError("its labels or folds are not integers")
        rows = np.isfinite(proba).all(axis=1)
        if (proba[rows] < 0).any() or (np.abs(proba[rows].sum(axis=1) - 1) > 1e-3).any():
            raise ValueError("some probabilities are negative or do not sum to 1")
        if folds_hash(oof["image_id"], oof["fold"]) != record.get("folds", {}).get("sha256"):
            raise ValueError("its folds are not the ones its record names")
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"run {run}'s out-of-fold probabilities {path} are damaged ({exc}); {fix}") from None
    oof["proba"] = proba
    if oof["pred"] is None or oof["pred"].shape != (n,):
        oof["pred"] = np.where(rows, np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1), -1)
    return oof


def short(records):
    return ", ".join(r["run_id"] for r in records)


def load_members(records, runs=None):
    """The members' OOF probabilities joined (``Members``); DataError for runs on
    different images, labels or folds, or no fold scored by all."""

    oofs = [read_oof(r, runs or runs_dir()) for r in records]
    first = oofs[0]
    labelled = set(first["image_id"][first["label"] >= 0])
    for record, oof in zip(records[1:], oofs[1:]):
        diff = sorted(labelled ^ set(oof["image_id"][oof["label"] >= 0]))
        if diff:
            raise DataError(f"runs {records[0]['run_id']} and {record['run_id']} are on different image sets: "
                            f"{len(diff)} labelled images are in one and not the other (e.g. "
                            f"{', '.join(diff[:3])}); an ensemble combines runs on features of the same dataset")
    rows = np.flatnonzero((first["fold"] >= 0) & (first["label"] >= 0))
    ids = first["image_id"][rows]
    proba = []
    for record, oof in zip(records, oofs):
        index = dict(zip(oof["image_id"], range(len(oof["image_id"]))))
        at = np.array([index[i] for i in ids], dtype=int)
        differ = np.flatnonzero(oof["label"][at] != first["label"][rows])
        if len(differ):
            raise DataError(f"runs {records[0]['run_id']} and {record['run_id']} label {len(differ)} images "
                            f"differently (e.g. {', '.join(ids[differ[:3]])}); expected the same labels: "
                            "re-extract their features from the same metadata")
        proba.append(oof["proba"][at])
    hashes = {}
    for record in records:
        hashes.setdefault(record["folds"]["sha256"], []).append(record)
    if len(hashes) > 1:
        listed = "; ".join(f"folds {h[:8]}: {short(rs)}" for h, rs in hashes.items())
        raise DataError(f"the runs mix folds ({listed}); an ensemble needs runs scored on the same folds, or "
                        "a row one member trained on would be scored: give runs fitted with the same --folds "
                        "file or --cv K")
    members = Members(records, ids, first["label"][rows].astype(int), first["lesion_id"][rows],
                      first["fold"][rows].astype(int), np.stack(proba))
    if not members.scored.any():
        scored = "; ".join(f"{r['run_id']}: folds {r['folds']['scored']}" for r in records if r["folds"].get("scored"))
        raise DataError(f"no fold is scored by every member ({scored}); members on fine-tuned backbones must "
                        "have an unseen fold in common: leave one of them out")
    return members


# ----------------------------------------------------------------------------- cross-validation

@dataclass
class Combiner:
    """A fitted combination of member probabilities: ``proba`` [M, n, 7] -> [n, 7]
    as trained, ``offsets`` its prior adjustment (CLASSES order)."""

    method: str
    meta: object
    offsets: np.ndarray

    def proba(self, member_proba):
        meta = None if self.meta is None else (
            lambda X: in_classes_order(self.meta.predict_proba(X), self.meta.classes_))
        return combine(self.method, member_proba, meta)


def mean_offsets(labels):
    """The mean's prior adjustment for training labels ``labels``: as the logreg
    head's default (``adjust="prior"`` at ``DEFAULT_ADJUST_STRENGTH``)."""
    from skinfeat.heads.logreg import DEFAULT_ADJUST_STRENGTH

    return DEFAULT_ADJUST_STRENGTH * prior_offsets(np.bincount(labels, minlength=len(CLASSES)))


def fit_combiner(method, members, rows, prior_labels):
    """The ``method`` combiner fitted on ``rows`` of ``members`` (the stack's
    meta-learner), or with the prior of ``prior_labels`` (the mean)."""
    if method == "mean":
        return Combiner(method, None, mean_offsets(prior_labels))
    meta = make_head(META_HEAD, **META_PARAMS).fit(stack_features(members.proba[:, rows]), members.labels[rows],
                                                   groups=members.lesion_ids[rows])
    return Combiner(method, meta, class_offsets(meta.classes_, meta.class_offsets_))


def other_folds(members, fold):
    """The meta-learner's training rows for ``fold``: those of every other fold scored by all."""
    return members.scored & (members.fold != fold)


def check_folds(members, method):
    """The folds the ensemble scores; DataError when a stack has no other fold to fit on."""
    folds = members.scored_folds
    if method == "stack" and len(folds) < 2:
        raise DataError(f"the members score only fold {folds[0]} in common; a stacked meta-learner is fitted on "
                        "other folds than the one it scores: use --method mean, or members that score more folds")
    return folds


def cross_validate(members, method="stack", fit_rows=other_folds, log=None):
    """Score the ``method`` ensemble on each fold scored by every member, its
    combiner fitted on ``fit_rows(members, fold)`` (a test passes a leaky one)."""
    n = len(members.labels)
    result = CVResult([], [], np.full((n, len(CLASSES)), np.nan), np.full(n, -1), [], [],
                      oof_scores=np.full((n, len(CLASSES)), np.nan))
    folds = check_folds(members, method)
    for i, f in enumerate(folds):
        test = np.flatnonzero(members.scored & (members.fold == f))
        prior = members.labels[(members.fold >= 0) & (members.fold != f)]
        start = time.perf_counter()
        combiner = fit_combiner(method, members, np.flatnonzero(fit_rows(members, f)), prior)
        result.fit_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        proba = result.oof_proba[test] = combiner.proba(members.proba[:, test])
        result.predict_seconds.append(time.perf_counter() - start)
        result.oof_pred[test] = decide(proba, combiner.offsets)
        result.oof_scores[test] = adjusted(proba, combiner.offsets)
        result.fold_metrics.append(classification_metrics(members.labels[test], proba, result.oof_pred[test]))
        result.baseline_metrics.append(prior_baseline(prior, members.labels[test]))
        if i == 0:
            result.first = (f, test, combiner)
        if log:
            m = result.fold_metrics[-1]
            log(f"fold {i + 1}/{len(folds)}: BMCA {m['bmca']:.3f}  accuracy {m['accuracy']:.3f}  "
                f"top-3 {m['top3']:.3f}")
    return result


