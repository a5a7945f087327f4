"""Lesion-grouped cross-validation of a head on a features file, and the run that
records it.

- Folds come from a folds file (``skinfeat data split``) or, by default, from
  ``make_folds(k=5, seed=0)``: the same for every backbone and head of a dataset.
  Rows with fold -1 (held out) and unlabelled rows take no part.
- When the file holds augmented views, a head trains on every view of its
  training images (the clean one and the augmented ones, each keeping its
  lesion as group) and is scored on each test image's clean view, as
  ``predict`` runs it; the mean over the views (``--tta views``) is scored
  beside it (``skinfeat.runs.cv``).
- Features of a fine-tuned backbone (``skinfeat finetune``) say which rows it was
  trained on; only the folds none of whose images it saw are scored
  (``unseen_folds``), so its figures are not inflated by the images it learnt.
"""

import time
from datetime import datetime, timezone

import numpy as np

from skinfeat import __version__
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import FeaturesError, SkinfeatError, UsageError
from skinfeat.core.ood import fit_ood, ood_fields, project
from skinfeat.core.operating import choose_point
from skinfeat.core.writable import check_writable
from skinfeat.data.folds import resolve_folds, unseen_folds
from skinfeat.features.join import fit_features, image_width, parts
from skinfeat.features.store import read_attrs
from skinfeat.heads import head_class, make_head
from skinfeat.model.format import lesion_policy
from skinfeat.model.store import save_model
from skinfeat.runs.cv import cross_validate, cv_resamples, fit_final, summary_fields, write_oof
from skinfeat.runs.evaluate import evaluate_images
from skinfeat.runs.records import check_runs_writable, new_run_id, read_records, settings_hash, write_record
from skinfeat.runs.shiftcheck import shift_check
from skinfeat.runs.subgroups import subgroup_scores


def _settings_label(cls, params):
    defaults = cls().get_params()
    changed = {k: v for k, v in params.items() if defaults.get(k) != v}
    return ",".join(f"{k}={v}" for k, v in sorted(changed.items()))


def run_fit(features, head, params=None, folds_path=None, cv=None, use_views=True, out=None,
            log=None, runs=None, shift_data=None, shifts=(), tta="none", test=None, test_name=None,
            progress=False, metadata=None, train_fraction=1.0, operating_point=None):
    """Cross-validate ``head`` on the features file ``features`` (or a list of files of
    several backbones, joined, and ``metadata`` columns appended: ``skinfeat.features.join``); with ``shifts`` (and
    ``shift_data``, the Manifest of the images the features came from), score the
    first fold's head on that fold's images under each shift (``skinfeat.runs.shiftcheck``);
    with ``out``, fit the head on every CV row, save it as a model directory and export
    its backbone into it (recorded as skipped when the backbone is not available
    here), and with ``test`` (a Manifest, called ``test_name``) score the saved model
    on it (``skinfeat.runs.evaluate``); then write the run record (returned, with its
    path under ``record_path``)."""

    if folds_path is not None and cv is not None:
        raise UsageError("--folds and --cv both given; expected one: a folds file, or K for default folds")
    if not 0 < train_fraction <= 1:
        raise UsageError(f"--train-fraction {train_fraction:g} is out of range; expected a share in (0, 1]")
    if train_fraction < 1 and out is not None:
        raise UsageError("--train-fraction below 1 scores a label-efficiency curve; expected no --out with it: "
                         "fit the model to save on every image, without --train-fraction")
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
        views = f", training on {fs.views.shape[1] + 1} views, scored on the clean view" if use_views else ""
        meta = f" (with {fs.extra.shape[1]} metadata columns)" if fs.extra is not None else ""
        log(f"{cls.name} on {fs.path}: {fs.module}, {int((folds.fold >= 0).sum())} images, "
            f"{fs.feature_dim}-D{meta}{views}; folds {folds.source} ({folds.sha256[:8]})")
    if scored is not None:  # said even with --quiet: the figures cover part of the folds
        (log or _stderr)(f"leak guard: {fs.module} was fine-tuned on {int(fs.trained_on.sum())} of these "
                         f"images; scoring only fold{'s' * (len(scored) > 1)} {', '.join(map(str, scored))} "
                         f"of {folds.k} (never seen by it)")
    start = time.perf_counter()
    result = cross_validate(fs, cls.name, all_params, folds, use_views, log, scored, train_fraction)
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
        "settings": settings_hash(cls.name, all_params, use_views, train_fraction),
        "train_fraction": train_fraction, "train_images": result.train_images, "chosen": result.chosen,
        "settings_label": ",".join(filter(None, [_settings_label(cls, all_params),
                                                 f"train_fraction={train_fraction:g}" if train_fraction < 1 else "",
                                                 "metadata=" + "+".join(columns) if columns else "",
                                                 "no-views" if fs.attrs.get("views") and not use_views
                                                 else ""])),
        "folds": dict(folds.describe(), **({"scored": scored} if scored is not None else {})),
        **summary_fields(result, fs, folds.fold),
        "timings": {"load_seconds": load_seconds, "fit_seconds": result.fit_seconds,
                    "fit_seconds_total": sum(result.fit_seconds),
                    "predict_seconds_total": sum(result.predict_seconds),
                    "cv_seconds": cv_seconds, "final_fit_seconds": None},
        "model_dir": None,
    }
    scored_rows = np.flatnonzero(result.oof_pred >= 0)
    shift_means = {}
    if operating_point is not None:
        try:
            record["operating_point"] = choose_point(fs.labels[scored_rows], result.oof_proba[scored_rows],
                                                     operating_point, cv_resamples(result, fs, folds.fold))
        except ValueError as exc:
            raise UsageError(f"--operating-point {exc}") from None
    record["subgroups"] = subgroup_scores(
        fs.labels[scored_rows], result.oof_pred[scored_rows], np.asarray(fs.lesion_ids)[scored_rows],
        {c: np.asarray(v, dtype=object)[scored_rows] for c, v in (fs.metadata or {}).items()})
    record["ood"] = ood_threshold(fs, folds, scored)
    if shifts:
        fold, rows, fold_head = result.first
        record["shift"] = shift_check(fs, fold_head, rows, shift_data, shifts, tta, fold, progress, shift_means)
        if log:
            w = record["shift"]["worst"]
            log(f"shift check on fold {fold}: clean BMCA {record['shift']['clean']['bmca']:.3f}, worst "
                f"{w['bmca']:.3f} ({w['bmca_shift']}); accuracy worst {w['accuracy']:.3f} ({w['accuracy_shift']})")
    if out is not None:
        start = time.perf_counter()
        final = fit_final(fs, cls.name, all_params, folds, use_views)
        record["timings"]["final_fit_seconds"] = time.perf_counter() - start
        record["model_dir"] = str(save_model(out, final, cls.name, attrs, training_info(fs, folds, record),
                                             export=True, skip_unavailable=test is None, seen=seen_rows(fs, folds),
                                             ood=(record["ood"], model_ood(fs, folds, shift_means))))
        if test is not None:
            evaluation = evaluate_images(out, test, where=test_name, runs=runs, progress=progress)
            record["test"] = {"dataset": evaluation["dataset"], "n": evaluation["n"],
                              "bmca": evaluation["clean"]["bmca"], "accuracy": evaluation["clean"]["accuracy"],
                              "record": evaluation["record_path"]}
    record["predictions_file"] = write_oof(record, fs, folds.fold, result, runs, shift_means)
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
            "cv_intervals": record.get("intervals"), "calibration": record.get("calibration"),
            "operating_point": record.get("operating_point"),
            "shift": record.get("shift")}


def ood_threshold(fs, folds, scored=None):
    """What a run records of the out-of-distribution score (``skinfeat.core.ood``) its
    model carries: its threshold, set on the out-of-fold scores of the CV rows' image
    features (not metadata) in the ``scored`` folds (default: every fold; the leak
    guard's, for a fine-tuned backbone, whose own training images would look more
    familiar than new ones), and the share of them it flags."""
    used = folds.fold >= 0
    fold = folds.fold[used]
    if scored is not None:
        fold = np.where(np.isin(fold, scored), fold, -1)
    return ood_fields(fs.features[used, :image_width(fs)], fold)


def model_ood(fs, folds, shift_means=None):
    """The statistics of the out-of-distribution score of a model fitted on the CV rows
    of ``fs``, with ``shift_means`` (the shift check's mean features per condition)
    projected into its space, for the drift summary (``skinfeat.runs.drift``)."""
    stats = fit_ood(fs.features[folds.fold >= 0, :image_width(fs)])
    if shift_means:
        stats.update(shift_names=np.asarray(list(shift_means), dtype=str),
                     shift_means=project(stats, np.stack(list(shift_means.values()))))
    return stats


def seen_rows(fs, folds):
    """(image ids, content hashes or None) of the rows a final fit uses: every CV row."""
    used = folds.fold >= 0
    return fs.image_ids[used], None if fs.content is None else fs.content[used]


def missing_runs(feature_files, heads, records, params=None, use_views=True, shifts=()):
    """(features file, head) pairs with no record at the same features key, head and
    settings (and, when ``shifts`` are asked for, a shift check of all of them)."""

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
