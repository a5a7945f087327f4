"""Recorded runs refitted from their features files: a fit's model directory
(``save_run_model``: ``compare --best``, and each member of an ensemble), and
what an ensemble (``skinfeat.runs.ensemble``) needs its members' features for: its
shift check, with each member's head of the checked fold refitted on the other
folds (as the member's own CV fitted it), and its model directory."""

from pathlib import Path

import numpy as np

from skinfeat.core.calibration import calibration_fields
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import DataError
from skinfeat.data.folds import resolve_folds
from skinfeat.features.join import fit_features
from skinfeat.model.ensemble_dir import FORMAT_VERSION, META_HEAD
from skinfeat.model.format import ENSEMBLE_FORMAT, FALLBACK, STATE, new_model_dir, write_manifest
from skinfeat.model.store import save_model
from skinfeat.runs.combine import fit_combiner, load_members, read_oof
from skinfeat.runs.compare import best_record
from skinfeat.runs.cv import fit_final, read_shift_means
from skinfeat.runs.fit import model_ood, ood_threshold, seen_rows, training_info
from skinfeat.runs.records import read_records


def save_best(records, out, log=None):
    """Fit the leaderboard's best run (``skinfeat.runs.compare.best_record``) on every CV
    row, save it into ``out`` with its backbone, and return (the model directory,
    the run); an ensemble directory when the best run is an ensemble."""

    best = best_record(records)
    if best is None:
        raise DataError("no fit recorded to choose the best model from; run `skinfeat compare --fit` first")
    fallback = None
    if needs_metadata(best, records):  # photos come without it: the best image-only run answers them
        fallback = best_record([r for r in records if not needs_metadata(r, records)])
        if log and fallback is None:
            log(f"note: the best run {best['run_id']} needs metadata and no image-only run is recorded, so "
                f"{out} cannot classify an image alone: fit one (`skinfeat compare --fit`) and save again")
    if best.get("members"):
        return save_ensemble(best, out, log=log, fallback=fallback), best
    return save_run_model(best, out, log, fallback=fallback), best


def needs_metadata(record, records):
    """True for a run fitted with metadata, or an ensemble with such a member."""
    if record.get("metadata"):
        return True
    members = {m["run_id"] for m in record.get("members") or []}
    return any(r.get("metadata") for r in records if r["run_id"] in members)


def fallback_part(record, log=None):
    """``save_model``'s ``fallback`` of the image-only fit ``record`` (None: none)."""
    if record is None:
        return None
    about = {"run_id": record["run_id"], "head": record["head"], "cv_bmca": record["metrics"]["bmca"],
             "cv_intervals": record.get("intervals"), "worst_shift": (record.get("shift") or {}).get("worst")}
    return about, lambda folder: save_run_model(record, folder, log)


def record_features(record):
    """(FeatureSet, Folds) of a fit ``record``: its features (files and metadata) and
    folds as it ran; DataError when the folds are no longer the recorded ones."""

    fs = fit_features(record["features"].get("paths") or record["features"]["path"], record.get("metadata"),
                      with_views=record["use_views"])
    source = record["folds"]["source"]
    folds_path = None if source.startswith("make_folds") else source
    folds = resolve_folds(fs, folds_path, None if folds_path else record["folds"]["k"])
    if folds.sha256 != record["folds"].get("sha256"):
        raise DataError(f"run {record['run_id']} was scored on folds {str(record['folds'].get('sha256'))[:8]}, "
                        f"but {fs.path} with {source} now gives folds {folds.sha256[:8]}: the features or "
                        f"folds file changed since; re-run its `skinfeat fit`")
    return fs, folds


def save_run_model(record, out, log=None, fallback=None):
    """The fit ``record``'s head fitted on every CV row, saved into ``out`` with its
    backbone (and the image-only fit ``fallback`` inside it, for images without metadata)."""

    fs, folds = record_features(record)
    if log:
        log(f"saving run {record['run_id']} ({record['head']} on {record['backbone']['module']}) fitted on all "
            f"{int((folds.fold >= 0).sum())} CV images into {out}")
    final = fit_final(fs, record["head"], record["params"], folds, record["use_views"])
    attrs = dict(fs.attrs, path=str(fs.path), feature_dim=fs.feature_dim)
    record = dict(record, calibration=calibration_of(record))
    oof = (Path(record["record_path"]).parent / record["predictions_file"]
           if record.get("predictions_file") and record.get("record_path") else None)
    fields = record.get("ood") or ood_threshold(fs, folds, record["folds"].get("scored"))  # older records: now
    stats = model_ood(fs, folds, read_shift_means(oof) if oof else None)
    return save_model(out, final, record["head"], attrs, training_info(fs, folds, record), export=True,
                      seen=seen_rows(fs, folds), fallback=fallback_part(fallback, log), ood=(fields, stats))


def calibration_of(record):
    """The record's calibration; for a record that predates it, fitted now on its
    out-of-fold probabilities (None when they are gone: the model then gives its
    probabilities as trained)."""
    if record.get("calibration") or not record.get("record_path"):
        return record.get("calibration")
    try:
        oof = read_oof(record, Path(record["record_path"]).parent)
    except DataError:
        return None
    scored = np.isfinite(oof["proba"]).all(axis=1) & (oof["fold"] >= 0)
    return calibration_fields(oof["proba"][scored], oof["label"][scored], oof["fold"][scored])


def features_files(record):
    return record["features"].get("paths") or [record["features"].get("path")]


def check_refittable(records):
    """DataError, before any work, for a member that cannot be refitted: its features
    files are gone."""
    for r in records:
        missing = [f for f in features_files(r) if not Path(str(f)).is_file()]
        if missing:
            raise DataError(f"run {r['run_id']}'s features file {missing[0]} is not here; the shift check and "
                            "--out refit every member on its features: extract them again with `skinfeat "
                            "extract`, or leave out --shift and --out")


def save_ensemble(record, out, runs=None, log=None, members=None, fallback=None):
    """The ensemble ``record`` as a model directory ``out`` (``skinfeat.model.ensemble_dir``):
    each member refitted on every CV row and saved with its backbone into
    ``members/<i>``, the combiner fitted on every OOF row scored by all; written
    whole (``new_model_dir``). Returns ``out``."""

    if members is None:
        wanted = [m["run_id"] for m in record["members"]]
        found = {r["run_id"]: r for r in read_records(runs) if r["run_id"] in wanted}
        lost = [w for w in wanted if w not in found]
        if lost:
            raise DataError(f"ensemble {record['run_id']}: the records of its members {', '.join(lost)} are gone "
                            "from the runs folder; refit them and run `skinfeat ensemble` again")
        members = load_members([found[w] for w in wanted], runs)
    check_refittable(members.records)
    used = members.fold >= 0
    combiner = fit_combiner(record["head"], members, np.flatnonzero(members.scored), members.labels[used])
    manifest = {"format": ENSEMBLE_FORMAT, "format_version": FORMAT_VERSION, "method": record["head"],
                "head": record["head"],
                "members": [dict(m, dir=f"members/{i}") for i, m in enumerate(record["members"])],
                "backbone": {"module": record["backbone"]["module"], "resize": None},
                "training": {"run_id": record["run_id"], "n_images": int(used.sum()),
                             "class_counts": np.bincount(members.labels[used], minlength=len(CLASSES)).tolist(),
                             "folds": record["folds"], "cv_bmca": record["metrics"]["bmca"],
                             "calibration": calibration_of(record), "shift": record.get("shift")},
                "skinfeat_version": record.get("skinfeat_version"), "files": []}
    if log:
        log(f"saving the {record['head']} ensemble of {len(members.records)} runs into {out}")
    with new_model_dir(out) as tmp:
        for i, member in enumerate(members.records):
            save_run_model(member, tmp / "members" / str(i), log)
        if combiner.meta is None:
            manifest["offsets"] = combiner.offsets.tolist()
        else:
            np.savez(tmp / STATE, **combiner.meta.get_state())
            manifest.update(files=[STATE], meta={"head": META_HEAD, "params": combiner.meta.get_params(),
                                                 "classes": [CLASSES[int(c)] for c in combiner.meta.classes_]})
        part = fallback_part(fallback, log)
        if part is not None:
            part[1](tmp / FALLBACK)
            manifest["fallback"] = dict(part[0], dir=FALLBACK)
        write_manifest(tmp, manifest)
    return Path(out)
