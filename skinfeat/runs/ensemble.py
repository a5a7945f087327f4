"""``skinfeat ensemble``: an ensemble of recorded runs, cross-validated on their
folds (``skinfeat.runs.combine``, which says what is nested), shift-checked and saved
(``skinfeat.runs.save``), recorded as a run of the fit schema (``skinfeat.runs.records``):
head "stack" or "mean", the members' backbones joined by " + ", ``members``."""

import hashlib
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from skinfeat import __version__
from skinfeat.core.errors import DataError, SkinfeatError, UsageError
from skinfeat.core.paths import runs_dir
from skinfeat.core.writable import check_writable
from skinfeat.features.join import parts
from skinfeat.heads import make_head
from skinfeat.heads.inference import mean_over_views
from skinfeat.imaging.shifts import parse_shifts
from skinfeat.model.ensemble_dir import META_HEAD, METHODS
from skinfeat.runs.combine import META_PARAMS, check_folds, cross_validate, load_members, short
from skinfeat.runs.compare import rank_key
from skinfeat.runs.cv import fit_final, summary_fields, write_oof
from skinfeat.runs.records import (
    check_runs_writable,
    latest_per_setting,
    new_run_id,
    read_records,
    settings_hash,
    write_record,
)
from skinfeat.runs.save import check_refittable, features_files, record_features, save_ensemble
from skinfeat.runs.shiftcheck import fold_features, fold_paths, scored_shifts, tflite_backbone


def select_runs(records, run_ids=(), top=None, log=None, where="the runs folder"):
    """The member records: ``run_ids`` (each a run id or its unique start) or the
    ``top`` best fits (``records.rank_key``) on the folds of the best one, of
    ``records`` (read from ``where``)."""
    if run_ids and top is not None:
        raise UsageError("give RUN_IDs or --top K, not both")
    if top is not None:
        rows = sorted(latest_per_setting([r for r in records if not r.get("members")]), key=rank_key, reverse=True)
        if not rows:
            raise DataError(f"no fit recorded in {where} to ensemble; run `skinfeat fit` or `skinfeat compare "
                            "--fit` first")
        sha = rows[0].get("folds", {}).get("sha256")
        chosen = [r for r in rows if r.get("folds", {}).get("sha256") == sha][:top]
        if len(chosen) < 2:
            raise DataError(f"--top {top}: only the best run ({rows[0]['run_id']}) is on its folds "
                            f"{str(sha)[:8]}; an ensemble needs at least 2 runs on the same folds: fit more "
                            "heads or backbones with the same --folds or --cv")
        if len(chosen) < top and log:
            log(f"note: only {len(chosen)} runs are on the folds of the best run; ensembling those")
        return chosen
    if not run_ids:
        raise UsageError("no runs given; expected RUN_ID... (`skinfeat compare --format csv` lists run_id) "
                         "or --top K")
    chosen = []
    for given in run_ids:
        matches = [r for r in records if r["run_id"] == given] or [r for r in records
                                                                   if r["run_id"].startswith(given)]
        if not matches:
            raise UsageError(f"no run {given!r} is recorded in {where}; expected the run id (or its "
                             "unique start) of a `skinfeat fit` record: `skinfeat compare --all --format csv` "
                             "lists them")
        if len(matches) > 1:
            raise UsageError(f"{given!r} starts {len(matches)} run ids ({', '.join(r['run_id'] for r in matches[:3])}"
                             f"{', ...' if len(matches) > 3 else ''}); give more of the run id")
        record = matches[0]
        if record.get("members"):
            raise UsageError(f"run {record['run_id']} is an ensemble; the members of an ensemble are fits: give "
                             "its members' run ids instead")
        if record in chosen:
            raise UsageError(f"run {record['run_id']} is given twice; give each member once")
        chosen.append(record)
    if len(chosen) < 2:
        raise UsageError(f"an ensemble needs at least 2 runs, got 1 ({chosen[0]['run_id']}); give more RUN_IDs "
                         "or --top K")
    return chosen


def _key_and_settings(records, method, params):
    keys = sorted(str(r["features"].get("key")) for r in records)
    key = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    parts = sorted([str(r["features"].get("key")), r["head"], str(r.get("settings"))] for r in records)
    return key, settings_hash(method, dict(params, members=parts), False)


def run_ensemble(run_ids=(), top=None, method="stack", shift_data=None, shifts=(), tta="none", out=None,
                 log=None, runs=None, progress=False):
    """Ensemble the recorded runs ``run_ids`` (or the ``top`` best) with ``method``,
    cross-validated on their folds; shift-checked with ``shifts`` on ``shift_data``
    (a Manifest), or on the members' own shift checks' cached features when they all
    have one; with ``out``, saved as an ensemble model directory. Writes the run
    record (and its oof file) and returns it, with its path under ``record_path``."""

    if method not in METHODS:
        raise UsageError(f"--method {method!r} is unknown; expected one of {', '.join(METHODS)}")
    check_runs_writable(runs)
    if out is not None:
        check_writable(out, "the ensemble", folder=True)
    start = time.perf_counter()
    records = select_runs(read_records(runs), run_ids, top, log, runs or runs_dir())
    members = load_members(records, runs)
    check_folds(members, method)
    if out is not None or shifts:
        check_refittable(records)
    load_seconds = time.perf_counter() - start
    if log:
        log(f"{method} of {len(records)} runs: {short(records)}; {int(members.scored.sum())} images, folds "
            f"{', '.join(map(str, members.scored_folds))}")
    start = time.perf_counter()
    result = cross_validate(members, method, log=log)
    cv_seconds = time.perf_counter() - start
    params = make_head(META_HEAD, **META_PARAMS).get_params() if method == "stack" else {}
    key, settings = _key_and_settings(records, method, params)
    scored = members.scored_folds
    first = records[0]
    modules = list(dict.fromkeys(str(r["backbone"].get("module")) for r in records))
    record = {
        "run_id": new_run_id(method, key),
        "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "skinfeat_version": __version__,
        "backbone": {"module": " + ".join(modules), "module_source": None, "module_fingerprint": None,
                     "input_size": None, "resize": None, "feature_dim": None, "views": None,
                     "images_per_second": None, "dataset": first["backbone"].get("dataset")},
        "features": {"path": None, "key": key, "n_images": len(members.labels), "n_labelled": len(members.labels)},
        "head": method, "params": params, "use_views": False, "settings": settings,
        "settings_label": ",".join(r["head"] + (f"[{r['settings_label']}]" if r.get("settings_label") else "")
                                   for r in records),
        "members": [{"run_id": r["run_id"], "head": r["head"], "module": r["backbone"].get("module"),
                     "settings_label": r.get("settings_label", "")} for r in records],
        "folds": dict({k: v for k, v in first["folds"].items() if k != "scored"},
                      **({"scored": scored} if len(scored) < first["folds"].get("k", len(scored)) else {})),
        **summary_fields(result, members, members.fold),
        "timings": {"load_seconds": load_seconds, "fit_seconds": result.fit_seconds,
                    "fit_seconds_total": sum(result.fit_seconds),
                    "predict_seconds_total": sum(result.predict_seconds),
                    "cv_seconds": cv_seconds, "final_fit_seconds": None},
        "model_dir": None,
    }
    record["shift"] = shift_block(members, result, shift_data, shifts, tta, progress, log)
    if out is not None:
        start = time.perf_counter()
        record["model_dir"] = str(save_ensemble(record, out, runs, log, members))
        record["timings"]["final_fit_seconds"] = time.perf_counter() - start
    record["predictions_file"] = write_oof(record, members, members.fold, result, runs)
    record["record_path"] = str(write_record(record, runs))
    return record


class _NotCached(Exception):
    pass


def _no_images():
    raise _NotCached


def recorded_shifts(records):
    """(shifts, TTA set, fold) of the members' own shift checks when they all ran the
    same ones on the same fold and their features files are still here; else None."""

    checks = [r.get("shift") for r in records]
    if not all(checks) or not all(Path(str(f)).is_file() for r in records for f in features_files(r)):
        return None
    if len({(tuple(c.get("shifts", {})), c.get("tta"), c.get("fold")) for c in checks}) > 1:
        return None
    return parse_shifts(list(checks[0]["shifts"])), checks[0]["tta"], checks[0]["fold"]


def shift_check(members, result, manifest, shifts, tta="none", progress=False):
    """The shift block (``skinfeat.runs.shiftcheck.shift_check``) of the ensemble's first
    fold: each member's head of that fold refitted on the other folds, scored on
    the fold's images under each shift (features cached per backbone in
    ``features/shifted/``, so members of one backbone share them), combined by that
    fold's combiner. Without ``manifest`` only cached features are used
    (``_NotCached`` when some are missing)."""

    fold, rows, combiner = result.first
    loaded, inputs, cache = {}, [], {}
    for record in members.records:
        key = (tuple(map(str, features_files(record))), tuple(record.get("metadata") or ()), record["use_views"],
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
    return scored_shifts(members.labels[rows], probabilities, combiner.offsets, shifts, tta, fold, progress,
                         groups=members.lesion_ids[rows])


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


def top_ensemble(k, manifest, shifts, tta, log):
    """Record the stacked ensemble of the top ``k`` runs (``compare --ensemble K``) unless
    an ensemble of exactly those runs, shift-checked as asked, is recorded already;
    returns [(what, message)] when it fails with a skinfeat error (usage errors raise)."""
    try:
        records = read_records()
        members = {r["run_id"] for r in select_runs(records, top=k)}
        wanted = {s.name for s in shifts}
        if not any(r["head"] == "stack" and {m["run_id"] for m in r["members"]} == members
                   and wanted <= set((r.get("shift") or {}).get("shifts", {})) for r in records if r.get("members")):
            log(f"fitting the stacked ensemble of the top {k} runs")
            run_ensemble(top=k, shift_data=manifest, shifts=shifts, tta=tta, log=log, progress=True)
    except UsageError:
        raise
    except SkinfeatError as exc:
        log(f"failed: ensemble of the top {k}: {exc}")
        return [(f"ensemble of the top {k}", str(exc))]
    return []
