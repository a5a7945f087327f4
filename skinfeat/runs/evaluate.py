"""Features and scores of a fitted model on images it never saw: external
labelled data, clean or under a distribution shift (``skinfeat.imaging.shifts``).

Images go through the model exactly as ``skinfeat predict`` sends them:
decoded and resized with numpy (``skinfeat.imaging.images``), the backbone run by the
TFLite interpreter, the head in numpy. A shift is applied to the decoded
image, before the model's resize, as a different camera or framing would
change it. Test-time augmentation (``TTA_SETS``) adds deterministic views of
the resized image (flips, rotations, centre zoom) whose probabilities are
averaged with the clean one's.
"""

import sys

import numpy as np

from skinfeat.core.calibration import calibrated
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import DataError
from skinfeat.core.intervals import Resamples, decision_intervals, grouping, interval, span
from skinfeat.core.metrics import LABELS, SCALARS, classification_metrics, expected_calibration_error, prior_baseline
from skinfeat.core.operating import operating_lines, operating_points
from skinfeat.core.progress import bar
from skinfeat.data.manifest import content_hashes
from skinfeat.data.metadata import lookup
from skinfeat.data.submission import read_labels, read_predictions
from skinfeat.heads.inference import decide
from skinfeat.imaging.tta import TTA_SETS, tta_views  # noqa: F401 (re-exported)
from skinfeat.model.ensemble_dir import load_any, read_any_manifest
from skinfeat.model.predictor import inputs_of
from skinfeat.runs.records import EVALUATION_SCHEMA, check_runs_writable, new_run_id, write_record
from skinfeat.runs.subgroups import subgroup_lines, subgroup_scores

# ----------------------------------------------------------------------------- scoring a model

def labelled(manifest, where):
    """Rows of ``manifest`` with a label; DataError when there are none."""
    rows = np.flatnonzero(np.asarray(manifest.labels) >= 0)
    if not len(rows):
        raise DataError(f"{where}: none of its {len(manifest)} images has a label; evaluate needs labelled "
                        "images (HAM10000 metadata, ISIC one-hot ground truth or class folders): "
                        "use `skinfeat predict` for unlabelled ones")
    return rows


def score(y, proba, offsets, train_counts=None, resamples=None, full=True):
    """Every metric ``fit`` reports for probabilities ``proba`` [n, 7] of true classes
    ``y``, deciding by argmax of log p + ``offsets`` (the model's prior adjustment),
    and the always-NV baseline (the training class frequencies when known); with
    ``resamples`` (``skinfeat.core.intervals``) their 95 % ``intervals``: BMCA,
    accuracy and macro AUC (``full``) or BMCA and accuracy."""
    pred = decide(proba, offsets)
    metrics = classification_metrics(y, proba, pred)
    if resamples is not None:
        metrics["intervals"] = (interval(y, proba, pred, resamples) if full
                                else decision_intervals(y, pred, resamples))
    prior = np.asarray(train_counts if train_counts is not None else np.bincount(y, minlength=len(CLASSES)))
    base = prior_baseline(np.repeat(np.arange(len(CLASSES)), prior.astype(int)), y)
    metrics["baseline"] = {"name": "always NV (training prior)",
                           **{k: base[k] for k in ("bmca", "accuracy", "top3", "macro_auc")}}
    return metrics


def metadata_for(predictor, image_ids, table=None, own=None, where="the data"):
    """The metadata ({column: values}) of ``image_ids`` for a model fitted with metadata
    (None for an image-only model): from ``table`` (``skinfeat.data.metadata.read_metadata_csv``,
    the user's --metadata CSV) or else ``own`` (the dataset's own metadata columns).
    DataError when there is none, or the table has no row for some images."""

    if not predictor.metadata:
        return None
    columns = ", ".join(predictor.metadata["columns"])
    absent = [c for c in predictor.metadata["columns"] if c not in (own or {})]
    if table is None and absent:
        raise DataError(f"model {predictor.directory} was fitted with metadata ({columns}) and {where} has "
                        f"no {', '.join(absent)}; pass --metadata CSV (HAM10000_metadata.csv or the ISIC "
                        "metadata layout)")
    if table is not None:
        values, missing = lookup(table, image_ids)
        if missing:
            raise DataError(f"the metadata CSV has no row for {len(missing)} of the {len(image_ids)} images of "
                            f"{where} (e.g. {', '.join(missing[:3])}); the model needs {columns}: add their rows")
    else:
        values = own
    unknown = predictor.unknown_metadata(values, len(image_ids), where=f"metadata of {where}")
    for column, count in unknown.items():
        if count:
            print(f"note: {count} images of {where} have a {column} the model never saw in training; "
                  "encoded as unknown", file=sys.stderr)
    return values


def unseen(predictor, manifest, rows, where, unseen_only=False):
    """``rows`` of ``manifest`` less the images the model was fitted on (by image id, and
    by file content where the model recorded it: ``skinfeat.model.seen``), and how many
    were left out. DataError when any is left out without ``unseen_only``, or all are."""
    seen = predictor.seen
    if seen is None:
        print(f"note: model {predictor.directory} does not record the images it was fitted on (saved by an "
              "older skinfeat), so evaluate cannot check that these are new to it", file=sys.stderr)
        return rows, 0
    ids = [manifest.image_ids[i] for i in rows]
    hashes = content_hashes(manifest.subset(rows)) if seen.content else None
    overlap = seen.overlap(ids, hashes)
    n = int(overlap.sum())
    if not n:
        return rows, 0
    matched = f"by image id{' or file content' if seen.content else ''}, e.g. {ids[int(np.argmax(overlap))]}"
    if n == len(rows):
        raise DataError(f"model {predictor.directory} was fitted on all {n} labelled images of {where} ({matched}); "
                        "a score on them says nothing of new images: evaluate on images it was not fitted on")
    if not unseen_only:
        raise DataError(f"model {predictor.directory} was fitted on {n} of the {len(rows)} labelled images of "
                        f"{where} ({matched}); pass --unseen-only to score the {len(rows) - n} others, or "
                        "evaluate on other data")
    return rows[~overlap], n


def answering(predictor, manifest, table, where):
    """The model that scores ``manifest``: ``predictor``, or the image-only model it holds
    (``Predictor.fallback``) when it was fitted with metadata and neither the data nor a
    --metadata CSV has any, as ``predict`` answers such images; said on stderr."""
    if not predictor.metadata or predictor.fallback is None or table is not None:
        return predictor
    if any(c in manifest.metadata for c in predictor.metadata["columns"]):
        return predictor
    print(f"note: {where} has no {', '.join(predictor.metadata['columns'])}; scoring the image-only model "
          f"{predictor.fallback.directory} that model {predictor.directory} holds for images without metadata",
          file=sys.stderr)
    return predictor.fallback


def evaluate_model(directory, manifest, shifts=(), tta="none", where="the data", progress=None, metadata=None,
                   unseen_only=False):
    """Score the model in ``directory`` on the labelled images of ``manifest`` it was not
    fitted on (``unseen``), clean and under each of ``shifts``
    (``skinfeat.imaging.shifts.Shift``), with TTA set ``tta`` (``metadata``: a
    --metadata CSV table, for a model fitted with metadata). Returns ``{"clean":
    metrics, "shifts": {name: metrics}, "worst": {...}, "left_out": n}``.
    ``progress(n)`` is called as images are done."""

    views = tta_views(tta)
    predictor = answering(load_any(directory), manifest, metadata, where)
    rows, left_out = unseen(predictor, manifest, labelled(manifest, where), where, unseen_only)
    paths = [manifest.paths[i] for i in rows]
    ids = [manifest.image_ids[i] for i in rows]
    own = {k: [v[i] for i in rows] for k, v in manifest.metadata.items()}
    meta = metadata_for(predictor, ids, metadata, own, where)
    y = np.asarray(manifest.labels)[rows].astype(int)
    counts = (predictor.manifest.get("training") or {}).get("class_counts")
    groups, grouped_by = grouping([manifest.lesion_ids[i] for i in rows], ids)
    resamples = Resamples.draw(groups, n=len(rows), grouped_by=grouped_by)
    results, clean_proba = {}, None
    for shift in [None] + list(shifts):
        proba, ood = predictor.assess(paths, shift, views, progress=progress, metadata=meta)
        if shift is None:
            clean_proba = proba
        name = shift.name if shift else "clean"
        results[name] = score(y, proba, predictor.head.offsets, counts, resamples, full=shift is None)
        results[name]["ece_calibrated"] = expected_calibration_error(y, calibrated(proba, predictor.temperature))
        results[name]["unusual"] = unusual_fields(predictor, ood)
    clean = results.pop("clean")
    clean["calibration"] = {"temperature": predictor.temperature, "ece_as_trained": clean["ece"],
                            "ece_calibrated": clean["ece_calibrated"]}
    clean["subgroups"] = subgroup_scores(y, decide(clean_proba, predictor.head.offsets),
                                         groups if groups is not None else ids, {**(meta or {}), **own})
    clean["operating_points"] = operating_points(y, clean_proba, resamples)
    return {"n": len(rows), "image_ids": ids, "tta": tta, "grouped_by": grouped_by, "left_out": left_out,
            "inputs": inputs_of(predictor.metadata), "answered_by": str(predictor.directory),
            "clean": clean, "shifts": results, "worst": worst_case(results)}


def unusual_fields(predictor, ood):
    """How many images the model's out-of-distribution score flags (``skinfeat.core.ood``);
    None for a model without the score."""
    if ood is None:
        return None
    flagged = int((ood > predictor.ood.threshold).sum())
    return {"flagged": flagged, "share": flagged / max(len(ood), 1), "threshold": predictor.ood.threshold,
            "expected_share": predictor.ood.about.get("flagged_out_of_fold")}


def worst_case(shift_metrics):
    """The lowest BMCA and the lowest accuracy over shifts, and which shift gave each."""
    if not shift_metrics:
        return None
    bmca = min(shift_metrics, key=lambda k: shift_metrics[k]["bmca"])
    accuracy = min(shift_metrics, key=lambda k: shift_metrics[k]["accuracy"])
    return {"bmca": shift_metrics[bmca]["bmca"], "bmca_shift": bmca,
            "accuracy": shift_metrics[accuracy]["accuracy"], "accuracy_shift": accuracy,
            **({"bmca_interval": shift_metrics[bmca]["intervals"]["bmca"]} if "intervals" in shift_metrics[bmca]
               else {})}


# ----------------------------------------------------------------------------- records and text

def _dataset_name(where):
    from pathlib import Path

    return Path(str(where)).resolve().name if where else "data"


def _write(result, write, runs=None):
    if write:
        result["run_id"] = new_run_id("evaluation", result.get("model_run_id") or result["dataset"])
        record = {k: v for k, v in result.items() if k != "image_ids"}
        result["record_path"] = str(write_record(record, runs, schema=EVALUATION_SCHEMA))
    return result


def evaluate_images(directory, manifest, shifts=(), tta="none", where=None, write=True, progress=True,
                    runs=None, metadata=None, unseen_only=False):
    """``evaluate_model`` with a progress bar, described and (``write``) recorded in runs/."""
    from datetime import datetime, timezone


    if write:
        check_runs_writable(runs)
    info = read_any_manifest(directory)
    total = int((np.asarray(manifest.labels) >= 0).sum()) * (1 + len(shifts))
    with bar(None, progress, total=total, unit="img", desc="evaluate") as shown:
        result = evaluate_model(directory, manifest, shifts, tta, where=where or "the data", progress=shown.update,
                                metadata=metadata, unseen_only=unseen_only)
    if result["answered_by"] != str(directory):  # the image-only model it holds: its run is what was scored
        info = read_any_manifest(result["answered_by"])
    backbone = info.get("backbone") or {}
    result.update(created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                  model_dir=str(directory), model_run_id=(info.get("training") or {}).get("run_id"),
                  head=info.get("head"), module=backbone.get("module"), resize=backbone.get("resize"),
                  dataset=_dataset_name(where), data=str(where))
    return _write(result, write, runs)


def evaluate_predictions(path, labels_path, write=True, runs=None):
    """Score an ISIC-format prediction file against a labels CSV (decisions: argmax)."""
    from datetime import datetime, timezone


    if write:
        check_runs_writable(runs)
    ids, proba, y = read_predictions(path, read_labels(labels_path))
    result = {"n": len(ids), "image_ids": ids, "tta": None, "grouped_by": "image",
              "clean": score(y, proba, np.zeros(len(CLASSES)), resamples=Resamples.draw(n=len(ids), grouped_by="image")),
              "shifts": {}, "worst": None, "predictions": str(path), "labels": str(labels_path),
              "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
              "dataset": _dataset_name(labels_path), "model_run_id": None}
    return _write(result, write, runs)


def format_evaluation(result):
    """Text lines: every metric next to the always-NV baseline, per-class recall, the
    confusion matrix and, with shifts, BMCA and accuracy per shift and the worst."""

    m = result["clean"]
    what = (f"model {result['model_dir']} ({result.get('head')} on {result.get('module')}, {result.get('resize')})"
            if result.get("model_dir") else f"predictions {result.get('predictions')}")
    if result.get("answered_by") not in (None, result.get("model_dir")):
        what += f", answered by the image-only model it holds ({result['answered_by']})"
    lines = [f"{what}: {result['n']} labelled images of {result.get('dataset')}"
             + (f" ({result['left_out']} more left out: the model was fitted on them)" if result.get("left_out") else "")
             + (f", TTA {result['tta']}" if result.get("tta") not in (None, "none") else ""),
             f"{'metric':<10} {'value':>6}  {'95% interval':<14}  always-NV"]
    intervals = m.get("intervals") or {}
    for name in SCALARS:
        value, base = m.get(name), m["baseline"].get(name)
        lines.append(f"{LABELS[name]:<10} {_fmt(value):>6}  {span(intervals.get(name)):<14}  "
                     f"{_fmt(base) if base is not None else ''}")
    if intervals:
        lines.append(f"(95% intervals: {intervals['resamples']} bootstrap resamples of the "
                     f"{result.get('grouped_by', 'image')}s)")
    lines.append("recall     " + "  ".join(f"{c} {_fmt(m['per_class'][c]['recall'], '.2f')}" for c in CLASSES))
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append("       " + "".join(f"{c:>7}" for c in CLASSES))
    lines += [f"{c:<7}" + "".join(f"{v:>7}" for v in row) for c, row in zip(CLASSES, m["confusion"])]
    calibration = m.get("calibration")
    if calibration:
        lines.append(f"calibration: ECE {calibration['ece_calibrated']:.3f} of the probabilities the model gives "
                     f"(temperature {calibration['temperature']:.2f}; as trained {calibration['ece_as_trained']:.3f})")
    lines += operating_lines(m.get("operating_points")) + subgroup_lines(m.get("subgroups"))
    unusual = m.get("unusual")
    if unusual:
        lines.append(f"unusual: {unusual['flagged']} of {result['n']} images ({unusual['share']:.1%}) are unlike the "
                     f"model's training images (out-of-distribution score above {unusual['threshold']:.1f}; "
                     f"{_fmt(unusual.get('expected_share'), '.1%')} of its training images out of fold)")
    elif result.get("model_dir") and "unusual" in m:
        lines.append("unusual: - (the model has no out-of-distribution score: it was saved before skinfeat had one; "
                     "refit it with `skinfeat fit --out`)")
    if result.get("shifts"):
        lines.append(f"{'shift':<16} {'BMCA':>6} {'95% interval':<14} {'accuracy':>8} {'ECE':>6} {'unusual':>7}")
        lines.append(f"{'clean':<16} {_fmt(m['bmca']):>6} {span(intervals.get('bmca')):<14} "
                     f"{_fmt(m['accuracy']):>8} {_fmt(m.get('ece_calibrated')):>6} {_share(unusual):>7}")
        for name, s in result["shifts"].items():
            lines.append(f"{name:<16} {_fmt(s['bmca']):>6} {span((s.get('intervals') or {}).get('bmca')):<14} "
                         f"{_fmt(s['accuracy']):>8} {_fmt(s.get('ece_calibrated')):>6} {_share(s.get('unusual')):>7}")
        w = result["worst"]
        lines.append(f"{'worst':<16} {_fmt(w['bmca']):>6} {span(w.get('bmca_interval')):<14} "
                     f"{_fmt(w['accuracy']):>8}   (BMCA: {w['bmca_shift']}, accuracy: {w['accuracy_shift']})")
    return lines


def _share(unusual):
    return "-" if not unusual else f"{unusual['share']:.1%}"


def _fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)
