"""Recorded runs refitted from their features files: a fit's model directory
(``save_run_model``: ``compare --best``, and each member of an ensemble), and
what an ensemble (``skinfeat.ensemble``) needs its members' features for: its
shift check, with each member's head of the checked fold refitted on the other
folds (as the member's own CV fitted it), and its model directory."""

import sys
from pathlib import Path

import numpy as np

from skinfeat.classes import CLASSES
from skinfeat.errors import DataError
from skinfeat.stacking import fit_combiner, load_members
from skinfeat.evaluate import fit_final, resolve_folds, training_info
from skinfeat.heads.inference import mean_over_views
from skinfeat.model.ensemble import ENSEMBLE_FORMAT, FORMAT_VERSION, META_HEAD


def save_best(records, out, log=None):
    """Fit the leaderboard's best run (``skinfeat.records.best_record``) on every CV
    row, save it into ``out`` with its backbone, and return (the model directory,
    the run); an ensemble directory when the best run is an ensemble."""
    from skinfeat.records import best_record

    best = best_record(records)
    if best is None:
        raise DataError("no fit recorded to choose the best model from; run `skinfeat compare --fit` first")
    if best.get("members"):
        return save_ensemble(best, out, log=log), best
    return save_run_model(best, out, log), best


def record_features(record):
    """(FeatureSet, Folds) of a fit ``record``: its features (files and metadata) and
    folds as it ran; DataError when the folds are no longer the recorded ones."""
    from skinfeat.fusion import fit_features

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


def save_run_model(record, out, log=None):
    """The fit ``record``'s head fitted on every CV row, saved into ``out`` with its backbone."""
    from skinfeat.model.store import save_model

    fs, folds = record_features(record)
    if log:
        log(f"saving run {record['run_id']} ({record['head']} on {record['backbone']['module']}) fitted on all "
            f"{int((folds.fold >= 0).sum())} CV images into {out}")
    final = fit_final(fs, record["head"], record["params"], folds, record["use_views"])
    attrs = dict(fs.attrs, path=str(fs.path), feature_dim=fs.feature_dim)
    return save_model(out, final, record["head"], attrs, training_info(fs, folds, record), export=True)


class _NotCached(Exception):
    pass


def _no_images():
    raise _NotCached


def _features_files(record):
    return record["features"].get("paths") or [record["features"].get("path")]


def recorded_shifts(records):
    """(shifts, TTA set, fold) of the members' own shift checks when they all ran the
    same ones on the same fold and their features files are still here; else None."""
    from skinfeat.shifts import parse_shifts

    checks = [r.get("shift") for r in records]
    if not all(checks) or not all(Path(str(f)).is_file() for r in records for f in _features_files(r)):
        return None
    if len({(tuple(c.get("shifts", {})), c.get("tta"), c.get("fold")) for c in checks}) > 1:
        return None
    return parse_shifts(list(checks[0]["shifts"])), checks[0]["tta"], checks[0]["fold"]


def shift_check(members, result, manifest, shifts, tta="none", progress=False):
    """The shift block (``skinfeat.shiftcheck.shift_check``) of the ensemble's first
    fold: each member's head of that fold refitted on the other folds, scored on
    the fold's images under each shift (features cached per backbone in
    ``features/shifted/``, so members of one backbone share them), combined by that
    fold's combiner. Without ``manifest`` only cached features are used
    (``_NotCached`` when some are missing)."""
    from skinfeat.fusion import parts
    from skinfeat.shiftcheck import fold_features, fold_paths, scored_shifts, tflite_backbone

    fold, rows, combiner = result.first
    loaded, inputs, cache = {}, [], {}
    for record in members.records:
        key = (tuple(map(str, _features_files(record))), tuple(record.get("metadata") or ()), record["use_views"],
               record["folds"]["source"])
        fs, folds = loaded[key] = loaded.get(key) or record_features(record)
        own = np.flatnonzero(folds.fold == fold)  # the member's own order: its shift check's cache entries
        position = dict(zip(fs.image_ids[own], range(len(own))))
        head = fit_final(fs, record["head"], record["params"], folds, record["use_views"], leave_out=fold)
        backbones = [(part, tflite_backbone(part) if manifest is not None else _no_images)
                     for part in parts(fs.attrs)]
        paths = fold_paths([str(i) for i in fs.image_ids[own]], manifest, fold) if manifest is not None else None
        inputs.append((key, fs, own, paths, backbones, head, [position[i] for i in members.image_ids[rows]]))

    def probabilities(shift, update):
        member_proba = []
        for key, fs, own, paths, backbones, head, order in inputs:
            at = (key, shift.name if shift else None)
            if at not in cache:
                cache[at] = fold_features(fs, own, paths, shift, tta, update, backbones)
            feats = cache[at]
            member_proba.append(mean_over_views(head.predict_proba, head.classes_, feats[:, 0],
                                                feats[:, 1:] if feats.shape[1] > 1 else None)[order])
        return combiner.proba(np.stack(member_proba))
    return scored_shifts(members.labels[rows], probabilities, combiner.offsets, shifts, tta, fold, progress)


def shift_block(members, result, manifest, shifts, tta, progress, log):
    """The ensemble's shift block: asked for, or from the members' own checks; None otherwise."""
    if not shifts:
        recorded = recorded_shifts(members.records)
        if recorded is None or recorded[2] != result.first[0]:
            return None
        shifts, tta, _ = recorded
    try:
        block = shift_check(members, result, manifest, shifts, tta, progress)
    except _NotCached:
        print(f"note: no shift check of the ensemble: the members' shifted features of fold {result.first[0]} "
              "are not all cached; pass --data DATASET --shift NAME... to compute them", file=sys.stderr)
        return None
    if log:
        w = block["worst"]
        log(f"shift check on fold {block['fold']}: clean BMCA {block['clean']['bmca']:.3f}, worst "
            f"{w['bmca']:.3f} ({w['bmca_shift']}); accuracy worst {w['accuracy']:.3f} ({w['accuracy_shift']})")
    return block


def check_refittable(records):
    """DataError, before any work, for a member that cannot be refitted: its features
    files are gone."""
    for r in records:
        missing = [f for f in _features_files(r) if not Path(str(f)).is_file()]
        if missing:
            raise DataError(f"run {r['run_id']}'s features file {missing[0]} is not here; the shift check and "
                            "--out refit every member on its features: extract them again with `skinfeat "
                            "extract`, or leave out --shift and --out")


def save_ensemble(record, out, runs=None, log=None, members=None):
    """The ensemble ``record`` as a model directory ``out`` (``skinfeat.model.ensemble``):
    each member refitted on every CV row and saved with its backbone into
    ``members/<i>``, the combiner fitted on every OOF row scored by all; written
    whole (``new_model_dir``). Returns ``out``."""
    from skinfeat.model.format import STATE, new_model_dir, write_manifest
    from skinfeat.records import read_records

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
                             "shift": record.get("shift")},
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
        write_manifest(tmp, manifest)
    return Path(out)
