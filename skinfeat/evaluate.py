"""Lesion-grouped cross-validation of a head on a features file, and the run that
records it.

- Folds come from a folds file (``skinfeat data split``) or, by default, from
  ``make_folds(k=5, seed=0)``: the same for every backbone and head of a dataset.
  Rows with fold -1 (held out) and unlabelled rows take no part.
- When the file holds augmented views, a head trains on every view of its
  training images (the clean one and the augmented ones, each keeping its
  lesion as group) and scores a test image by the mean of its views'
  probabilities (test-time augmentation).
- Features of a fine-tuned backbone (``skinfeat finetune``) say which rows it was
  trained on; only the folds none of whose images it saw are scored
  (``unseen_folds``), so its figures are not inflated by the images it learnt.
"""

import hashlib
import time
from datetime import datetime, timezone
from dataclasses import dataclass

import numpy as np

from skinfeat.classes import CLASSES
from skinfeat.errors import DataError, FeaturesError, SkinfeatError, UsageError
from skinfeat.heads import make_head
from skinfeat.heads import inference
from skinfeat.metrics import classification_metrics, prior_baseline, summarize_folds

DEFAULT_K = 5
DEFAULT_SEED = 0


@dataclass
class Folds:
    """A fold per row of a FeatureSet (-1: not used), and where it came from."""

    fold: np.ndarray
    source: str
    k: int
    sha256: str

    def describe(self):
        return {"source": self.source, "k": self.k, "sha256": self.sha256,
                "n_used": int((self.fold >= 0).sum()), "n_unused": int((self.fold < 0).sum())}


def _folds_hash(image_ids, fold):
    lines = sorted(f"{i}\t{int(f)}" for i, f in zip(image_ids, fold) if f >= 0)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def resolve_folds(fs, folds_path=None, k=None, seed=DEFAULT_SEED):
    """Folds for the labelled rows of ``fs``: read from ``folds_path`` or made with
    ``make_folds(k or 5, seed)``. Raises DataError when the file does not cover the
    features' images, splits a lesion, or a class has fewer images than folds."""
    from skinfeat.data import make_folds, read_folds

    labelled = fs.labels >= 0
    if not labelled.any():
        raise FeaturesError(f"features file {fs.path} has no labelled images (all {len(fs)} are unlabelled); "
                            "fitting needs labels: extract features of a labelled dataset (HAM10000 "
                            "metadata, ISIC ground truth or class folders)")
    if folds_path is not None:
        mapping = read_folds(folds_path)
        missing = [i for i in fs.image_ids[labelled] if i not in mapping]
        if missing:
            raise DataError(
                f"folds file {folds_path} has no fold for {len(missing)} of the {int(labelled.sum())} "
                f"labelled images in {fs.path} (e.g. {', '.join(missing[:3])}); expected a folds file "
                "of the same dataset: write one with `skinfeat data split --out FILE` for it, "
                "or leave out --folds")
        fold = np.array([mapping.get(i, -1) for i in fs.image_ids], dtype=int)
        fold[~labelled] = -1
        source = str(folds_path)
        _check_lesions(fs, fold, folds_path)
    else:
        k = DEFAULT_K if k is None else int(k)
        fold = np.full(len(fs), -1, dtype=int)
        fold[labelled] = make_folds(_Labelled(fs, labelled), k=k, seed=seed)
        source = f"make_folds(k={k}, seed={seed})"
    used = np.unique(fold[fold >= 0])
    folds = Folds(fold, source, len(used), _folds_hash(fs.image_ids, fold))
    present = np.unique(fs.labels[fold >= 0])
    if len(present) < 2:
        raise FeaturesError(f"every image of {fs.path} that takes part in the folds is {CLASSES[present[0]]}; "
                            "a classifier needs at least two classes: extract features of a dataset "
                            "with more classes" + (" or use another folds file" if folds_path else ""))
    check_class_counts(fs.labels[fold >= 0], folds.k, folds_path is not None)
    return folds


class _Labelled:
    """The labelled rows of a FeatureSet, shaped as make_folds expects a manifest."""

    def __init__(self, fs, rows):
        self.labels, self.lesion_ids, self.image_ids = fs.labels[rows], fs.lesion_ids[rows], fs.image_ids[rows]

    def __len__(self):
        return len(self.labels)


def _check_lesions(fs, fold, path):
    seen = {}
    for lesion, f in zip(fs.lesion_ids, fold):
        if f >= 0 and seen.setdefault(lesion, f) != f:
            raise DataError(f"folds file {path} puts lesion {lesion} in folds {seen[lesion]} and {f}; "
                            "expected every lesion in one fold (a split leak inflates scores): "
                            "rewrite it with `skinfeat data split`")


def check_class_counts(labels, k, from_file=False):
    """DataError when a class has images but fewer than ``k`` (some folds would lack it)."""
    if k < 2:
        raise DataError(f"the folds hold {k} fold; cross-validation needs at least 2: "
                        "pass --cv 5 or a folds file from `skinfeat data split --folds 5`")
    counts = np.bincount(labels.astype(int), minlength=len(CLASSES))
    few = [(CLASSES[c], int(n)) for c, n in enumerate(counts) if 0 < n < k]
    if few:
        listed = ", ".join(f"{name} has {n}" for name, n in few)
        fix = ("write a folds file with fewer --folds" if from_file else
               f"use --cv {max(2, min(n for _, n in few))} or fewer")
        raise DataError(f"{listed} labelled image(s), fewer than the {k} folds, so some test folds "
                        f"would have none; {fix}, or add images of that class")


def training_rows(fs, rows, use_views):
    """(X, y, groups) for ``rows``: each row's clean features, then each augmented view."""
    X = fs.features[rows]
    if use_views and fs.views is not None:
        X = np.concatenate([X] + [fs.views[rows, v] for v in range(fs.views.shape[1])])
    repeat = len(X) // len(rows)
    return X, np.tile(fs.labels[rows].astype(int), repeat), np.tile(fs.lesion_ids[rows], repeat)


def decide(head, proba):
    """The fitted ``head``'s decisions (CLASSES indices) for probabilities in CLASSES
    order: argmax of the log-probabilities plus its prior-adjustment offsets."""
    return inference.decide(proba, inference.class_offsets(head.classes_, head.class_offsets_))


@dataclass
class CVResult:
    fold_metrics: list
    baseline_metrics: list
    oof_proba: np.ndarray  # [N, K], NaN for rows outside the folds
    oof_pred: np.ndarray  # [N] decided class (CLASSES index, after the prior adjustment), -1 outside
    fit_seconds: list
    predict_seconds: list
    first: tuple = None  # (fold, test rows, fitted head) of the first fold, for the shift check


def unseen_folds(fs, folds):
    """The folds to score: every fold, or for features of a fine-tuned backbone only
    those none of whose images it was trained on; None when it was not fine-tuned.
    DataError when it saw images of every fold."""
    seen = fs.trained_on
    if seen is None:
        return None
    every = [int(f) for f in np.unique(folds.fold[folds.fold >= 0])]
    unseen = [f for f in every if not seen[folds.fold == f].any()]
    if not unseen:
        counts = ", ".join(f"fold {f}: {int(seen[folds.fold == f].sum())}" for f in every)
        raise DataError(
            f"{fs.path} holds features of {fs.module}, which was fine-tuned on {int(seen.sum())} of these "
            f"images, and every fold of {folds.source} holds some of them ({counts}); scoring a fold "
            "it learnt would inflate the figures: pass --folds with the folds file it was fine-tuned "
            "with (its held-out fold is unseen), or fine-tune with --fold K instead of --all")
    return unseen


def cross_validate(fs, head_name, params=None, folds=None, use_views=True, log=None, scored=None):
    """Fit ``head_name`` once per fold on the other folds and score it on that fold
    (``scored``: only on these folds)."""
    folds = folds or resolve_folds(fs)
    use_views = use_views and fs.views is not None
    oof = np.full((len(fs), len(CLASSES)), np.nan)
    result = CVResult([], [], oof, np.full(len(fs), -1), [], [])
    todo = [f for f in np.unique(folds.fold[folds.fold >= 0]) if scored is None or f in scored]
    for i, f in enumerate(todo):
        train, test = np.flatnonzero((folds.fold >= 0) & (folds.fold != f)), np.flatnonzero(folds.fold == f)
        X, y, groups = training_rows(fs, train, use_views)
        start = time.perf_counter()
        head = make_head(head_name, **(params or {})).fit(X, y, groups=groups)
        result.fit_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        oof[test] = inference.mean_over_views(head.predict_proba, head.classes_, fs.features[test],
                                              fs.views[test] if use_views else None)
        result.predict_seconds.append(time.perf_counter() - start)
        y_test = fs.labels[test].astype(int)
        result.oof_pred[test] = decide(head, oof[test])
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


def _settings_label(cls, params):
    defaults = cls().get_params()
    changed = {k: v for k, v in params.items() if defaults.get(k) != v}
    return ",".join(f"{k}={v}" for k, v in sorted(changed.items()))


def run_fit(features, head, params=None, folds_path=None, cv=None, use_views=True, out=None,
            log=None, runs=None, shift_data=None, shifts=(), tta="none", test=None, test_name=None,
            progress=False, metadata=None):
    """Cross-validate ``head`` on the features file ``features`` (or a list of files of
    several backbones, joined, and ``metadata`` columns appended: ``skinfeat.fusion``); with ``shifts`` (and
    ``shift_data``, the Manifest of the images the features came from), score the
    first fold's head on that fold's images under each shift (``skinfeat.shiftcheck``);
    with ``out``, fit the head on every CV row, save it as a model directory and export
    its backbone into it (recorded as skipped when the backbone is not available
    here), and with ``test`` (a Manifest, called ``test_name``) score the saved model
    on it (``skinfeat.external``); then write the run record (returned, with its
    path under ``record_path``)."""
    from skinfeat import __version__
    from skinfeat.fusion import fit_features, parts
    from skinfeat.heads import head_class
    from skinfeat.model.format import lesion_policy
    from skinfeat.model.store import save_model
    from skinfeat.outputs import check_writable
    from skinfeat.records import check_runs_writable, new_run_id, settings_hash, write_record

    if folds_path is not None and cv is not None:
        raise UsageError("--folds and --cv both given; expected one: a folds file, or K for default folds")
    cls = head_class(head)
    all_params = make_head(cls.name, **(params or {})).get_params()
    check_runs_writable(runs)
    if out is not None:
        check_writable(out, "the model", folder=True)
    start = time.perf_counter()
    fs = fit_features(features, metadata, with_views=use_views)
    load_seconds = time.perf_counter() - start
    for part in parts(fs.attrs):  # its model prepares images as these features' were: a way this skinfeat knows
        lesion_policy(f"features file {part.get('path') or fs.path}", part, FeaturesError)
    use_views = bool(use_views and fs.views is not None)
    folds = resolve_folds(fs, folds_path, cv)
    scored = unseen_folds(fs, folds)
    if log:
        views = f", training on {fs.views.shape[1] + 1} views, TTA" if use_views else ""
        meta = f" (with {fs.extra.shape[1]} metadata columns)" if fs.extra is not None else ""
        log(f"{cls.name} on {fs.path}: {fs.module}, {int((folds.fold >= 0).sum())} images, "
            f"{fs.feature_dim}-D{meta}{views}; folds {folds.source} ({folds.sha256[:8]})")
    if scored is not None:  # said even with --quiet: the figures cover part of the folds
        (log or _stderr)(f"leak guard: {fs.module} was fine-tuned on {int(fs.trained_on.sum())} of these "
                         f"images; scoring only fold{'s' * (len(scored) > 1)} {', '.join(map(str, scored))} "
                         f"of {folds.k} (never seen by it)")
    start = time.perf_counter()
    result = cross_validate(fs, cls.name, all_params, folds, use_views, log, scored)
    cv_seconds = time.perf_counter() - start
    attrs = dict(fs.attrs, path=str(fs.path), feature_dim=fs.feature_dim)
    columns = metadata_columns(fs)
    record = {
        "run_id": new_run_id(cls.name, attrs.get("key")),
        "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "skinfeat_version": __version__,
        "backbone": {k: attrs.get(k) for k in ("module", "module_source", "module_fingerprint",
                                                "input_size", "resize", "lesion", "feature_dim", "views",
                                                "images_per_second", "dataset")},
        "features": {"path": str(fs.path), "paths": feature_paths(fs), "key": attrs.get("key"),
                     "n_images": len(fs), "n_labelled": int((fs.labels >= 0).sum())},
        "metadata": columns,
        "head": cls.name, "params": all_params, "use_views": use_views,
        "settings": settings_hash(cls.name, all_params, use_views),
        "settings_label": ",".join(filter(None, [_settings_label(cls, all_params),
                                                 "metadata=" + "+".join(columns) if columns else "",
                                                 "no-views" if fs.attrs.get("views") and not use_views
                                                 else ""])),
        "folds": dict(folds.describe(), **({"scored": scored} if scored is not None else {})),
        **_summary_fields(result),
        "timings": {"load_seconds": load_seconds, "fit_seconds": result.fit_seconds,
                    "fit_seconds_total": sum(result.fit_seconds),
                    "predict_seconds_total": sum(result.predict_seconds),
                    "cv_seconds": cv_seconds, "final_fit_seconds": None},
        "model_dir": None,
    }
    if shifts:
        from skinfeat.shiftcheck import shift_check

        fold, rows, fold_head = result.first
        record["shift"] = shift_check(fs, fold_head, rows, shift_data, shifts, tta, fold, progress)
        if log:
            w = record["shift"]["worst"]
            log(f"shift check on fold {fold}: clean BMCA {record['shift']['clean']['bmca']:.3f}, worst "
                f"{w['bmca']:.3f} ({w['bmca_shift']}); accuracy worst {w['accuracy']:.3f} ({w['accuracy_shift']})")
    if out is not None:
        start = time.perf_counter()
        final = fit_final(fs, cls.name, all_params, folds, use_views)
        record["timings"]["final_fit_seconds"] = time.perf_counter() - start
        record["model_dir"] = str(save_model(out, final, cls.name, attrs, training_info(fs, folds, record),
                                             export=True, skip_unavailable=test is None))
        if test is not None:
            from skinfeat.external import evaluate_images

            evaluation = evaluate_images(out, test, where=test_name, runs=runs, progress=progress)
            record["test"] = {"dataset": evaluation["dataset"], "n": evaluation["n"],
                              "bmca": evaluation["clean"]["bmca"], "accuracy": evaluation["clean"]["accuracy"],
                              "record": evaluation["record_path"]}
    record["predictions_file"] = write_oof(record, fs, folds.fold, result, runs)
    record["record_path"] = str(write_record(record, runs))
    return record


def feature_paths(fs):
    """The features files behind ``fs``: one, or each joined backbone's."""
    return [p["path"] for p in fs.attrs["parts"]] if fs.attrs.get("parts") else [str(fs.path)]


def metadata_columns(fs):
    encoding = fs.attrs.get("metadata_encoding")
    return list(encoding["columns"]) if encoding else None


def _stderr(line):
    import sys

    print(line, file=sys.stderr)


def training_info(fs, folds, record):
    """The ``training`` block of a saved model fitted on the CV rows of ``fs``, from
    its run ``record``: images, class counts, views, folds, CV and shift-check figures."""
    used = folds.fold >= 0
    return {"n_images": int(used.sum()), "use_views": record["use_views"],
            "class_counts": np.bincount(fs.labels[used].astype(int), minlength=len(CLASSES)).tolist(),
            "folds": folds.describe(), "cv_bmca": record["metrics"]["bmca"], "run_id": record["run_id"],
            "shift": record.get("shift")}


def write_oof(record, fs, fold, result, runs=None):
    """The CV's out-of-fold probabilities (as trained) and decisions next to the record,
    as ``<run_id>.oof.npz`` (image_id, label, lesion_id, fold, proba [N, 7], NaN rows
    outside the scored folds; pred [N], the decided class index, -1 outside), for
    ``skinfeat report``'s plots and ``skinfeat ensemble``. ``fs``: the rows (anything
    with ``image_ids``, ``labels``, ``lesion_ids``), ``fold`` their folds. Returns the
    file name."""
    from pathlib import Path

    from skinfeat.atomic import atomic_path
    from skinfeat.paths import runs_dir

    name = f"{record['run_id']}.oof.npz"
    with atomic_path(Path(runs or runs_dir()) / name, suffix=".npz") as tmp:
        np.savez_compressed(tmp, image_id=np.asarray(fs.image_ids, dtype=str), label=fs.labels,
                            lesion_id=np.asarray(fs.lesion_ids, dtype=str), fold=fold,
                            proba=result.oof_proba.astype(np.float32),
                            pred=result.oof_pred)
    return name


def _summary_fields(result):
    summary = summarize(result)
    return {"metrics": summary["scalars"], "per_class": summary["per_class"],
            "confusion": summary["confusion"], "baseline": summary["baseline"]}


def missing_runs(feature_files, heads, records, params=None, use_views=True, shifts=()):
    """(features file, head) pairs with no record at the same features key, head and
    settings (and, when ``shifts`` are asked for, a shift check of all of them)."""
    from skinfeat.features import read_attrs
    from skinfeat.records import settings_hash

    wanted = {s.name for s in shifts}
    done = {(r["features"].get("key"), r["head"], r.get("settings")) for r in records
            if wanted <= set((r.get("shift") or {}).get("shifts", {}))}
    missing = []
    for path in feature_files:
        attrs = read_attrs(path)
        for head in heads:
            all_params = make_head(head, **(params or {})).get_params()
            views = bool(use_views and attrs.get("views"))
            if (attrs.get("key"), head, settings_hash(head, all_params, views)) not in done:
                missing.append((path, head))
    return missing


def fit_missing(feature_files, heads, folds_path=None, cv=None, use_views=True, log=None, runs=None,
                shift_data=None, shifts=(), tta="none", progress=False):
    """Run every (features file, head) combination not recorded yet with these settings;
    returns ``(new records, failures)``. A file or fit that fails with a skinfeat
    error becomes a failure ``(what, message)``, logged on one line, and the
    others go on. Used by ``skinfeat compare --fit``."""
    from skinfeat.heads import head_class
    from skinfeat.records import check_runs_writable, read_records

    heads = [head_class(h).name for h in heads]
    check_runs_writable(runs)
    failures, done = [], read_records(runs)

    def attempt(what, work):
        try:
            return work()
        except UsageError:
            raise
        except SkinfeatError as exc:
            failures.append((what, str(exc)))
            if log:
                log(f"failed: {what}: {exc}")
            return None

    todo = [pair for path in feature_files for pair in attempt(
        str(path), lambda: missing_runs([path], heads, done, use_views=use_views, shifts=shifts)) or []]
    records = []
    for i, (path, head) in enumerate(todo):
        if log:
            log(f"[{i + 1}/{len(todo)}] fitting {head} on {path}")
        records.append(attempt(f"{head} on {path}", lambda: run_fit(
            path, head, folds_path=folds_path, cv=cv, use_views=use_views, log=log, runs=runs,
            shift_data=shift_data, shifts=shifts, tta=tta, progress=progress)))
    return [r for r in records if r is not None], failures
