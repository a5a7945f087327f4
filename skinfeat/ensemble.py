"""``skinfeat ensemble``: an ensemble of recorded runs, cross-validated on their
folds (``skinfeat.stacking``, which says what is nested), shift-checked and saved
(``skinfeat.refit``), recorded as a run of the fit schema (``skinfeat.records``):
head "stack" or "mean", the members' backbones joined by " + ", ``members``."""

import hashlib
import time
from datetime import datetime, timezone

from skinfeat.errors import DataError, UsageError
from skinfeat.evaluate import _summary_fields, write_oof
from skinfeat.heads import make_head
from skinfeat.model.ensemble import META_HEAD, METHODS
from skinfeat.records import check_runs_writable, latest_per_setting, new_run_id, rank_key, read_records, \
    settings_hash, write_record
from skinfeat.refit import check_refittable, save_ensemble, shift_block
from skinfeat.stacking import META_PARAMS, check_folds, cross_validate, load_members, short


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
    from skinfeat import __version__
    from skinfeat.outputs import check_writable
    from skinfeat.paths import runs_dir

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
        **_summary_fields(result),
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
