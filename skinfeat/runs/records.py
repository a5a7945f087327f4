"""Run records (one JSON file per fit, in ``skinfeat.core.paths.runs_dir()``) and the
leaderboard built from them. The leaderboard only reads records; it never
recomputes a metric.

Record schema (``schema: "skinfeat-run"``, ``schema_version: 1``)::

    run_id, created, skinfeat_version
    backbone:  module, module_source, module_fingerprint, input_size, resize,
               feature_dim, views, images_per_second, dataset
    features:  path, key, n_images, n_labelled
    head, params (every parameter of the head), use_views, settings (hash of head+params+use_views)
    folds:     source, k, sha256, n_used, n_unused; scored (the folds scored, when the backbone
               was fine-tuned on the others: ``skinfeat.data.folds.unseen_folds``)
    metrics:   {bmca|accuracy|top2|top3|macro_f1|macro_auc|log_loss|ece: {mean, std, folds: [...]}}
    per_class: {MEL: {precision|recall|f1: {mean, std}, support}, ...}
    confusion: [[...]] summed over folds, rows = true class (CLASSES order)
    baseline:  {name, bmca, accuracy, top3, macro_auc}   (always NV)
    timings:   load_seconds, fit_seconds [per fold], fit_seconds_total, predict_seconds_total,
               cv_seconds, final_fit_seconds (None without --out)
    model_dir: where --out saved the fitted model, or None

Records of ``skinfeat ensemble`` have the same schema, with head "stack" or "mean",
backbone.module the members' modules joined by " + ", features.key a hash of the
members' keys, settings a hash of the method and the members' (key, head, settings),
so the newest ensemble of the same member settings supersedes older ones, and
``members`` [{run_id, head, module, settings_label}] (``skinfeat.runs.ensemble``).

Records of ``skinfeat finetune`` (``schema: "skinfeat-finetune"``, FINETUNE_SCHEMA)
hold run_id, created, module (the new one), base, data, fold, settings, key,
history [{epoch, loss, val_bmca, val_accuracy, lr, seconds, images_per_second}],
best {epoch, val_bmca}, timings, model_dir, plot; the leaderboard does not read them.
"""

import hashlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from skinfeat.core.atomic import sweep, write_atomically
from skinfeat.core.jsonsafe import json_safe
from skinfeat.core.paths import runs_dir
from skinfeat.core.writable import check_writable, writing

SCHEMA = "skinfeat-run"
EVALUATION_SCHEMA = "skinfeat-evaluation"  # records of `skinfeat evaluate`
FINETUNE_SCHEMA = "skinfeat-finetune"  # records of `skinfeat finetune`
DRIFT_SCHEMA = "skinfeat-drift"  # drift summaries of `skinfeat evaluate` on unlabelled images
SCHEMA_VERSION = 1


def settings_hash(head, params, use_views, train_fraction=1.0):
    """What tells runs of one features file apart (a fraction of the training images
    below 1 is another setting; at 1 the hash is the one of records that predate it).
    A head trained on augmented views is scored on the clean view (``cv.MODE``); runs
    that predate that scored the mean over views, so they are another setting."""
    settings = {"head": head, "params": params, "use_views": bool(use_views)}
    if train_fraction < 1:
        settings["train_fraction"] = float(train_fraction)
    if use_views:
        settings["scored"] = "clean view"
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def new_run_id(head, features_key):
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{str(features_key)[:8]}-{head}"


# the fields that name files or folders: (block or None, key); a list value names several
PATH_FIELDS = (("features", "path"), ("features", "paths"), (None, "model_dir"), ("test", "record"))


def _map_paths(record, fn):
    """``record`` with ``fn`` applied to every relative path in PATH_FIELDS (in place)."""
    for block, key in PATH_FIELDS:
        holder = record.get(block) if block else record
        value = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(value, str) and value and not os.path.isabs(value):
            holder[key] = fn(value)
        elif isinstance(value, list):
            holder[key] = [fn(v) if isinstance(v, str) and v and not os.path.isabs(v) else v for v in value]
    return record


def _found(path, directory):
    """A relative path of an older record (relative to the folder `skinfeat fit` ran
    in): here, or beside the runs folder (the default ./runs), whichever exists;
    as it was when neither does (readers then say which file is missing)."""
    for base in (Path.cwd(), Path(directory).absolute().parent):
        if (base / path).exists():
            return os.path.normpath(base / path)
    return path


def write_record(record, directory=None, schema=SCHEMA):
    """Write ``record`` as ``<run_id>.json`` atomically; returns the path. Paths
    (PATH_FIELDS) are stored absolute, so the record reads the same from any folder."""
    directory = Path(directory or runs_dir())
    directory.mkdir(parents=True, exist_ok=True)
    sweep(directory, everything=True)  # records have new names: no later write of the same path sweeps
    record = {"schema": schema, "schema_version": SCHEMA_VERSION,
              **_map_paths(json_safe(record), os.path.abspath)}
    path = directory / f"{record['run_id']}.json"
    with writing(path, "the run record"):
        write_atomically(path, lambda f: json.dump(record, f, indent=1, allow_nan=False))
    return path


def check_runs_writable(directory=None):
    """CacheError, before any work, when run records cannot be written into ``directory``."""
    check_writable(directory or runs_dir(), "run records", folder=True)


# fields every reader of a record indexes: name -> type; the second set only when present
REQUIRED = {SCHEMA: {"run_id": str, "head": str, "backbone": dict, "features": dict, "metrics": dict},
            EVALUATION_SCHEMA: {"clean": dict, "n": int},
            FINETUNE_SCHEMA: {"run_id": str, "module": str, "history": list},
            DRIFT_SCHEMA: {"n": int, "class_mix": list, "resembles": list}}
OPTIONAL = {"created": str, "folds": dict, "timings": dict, "shift": dict, "test": dict, "per_class": dict,
            "confusion": list, "baseline": dict, "params": dict, "shifts": dict, "worst": dict}
_warned = set()


def _problem(record, schema):
    """Why a record of ``schema`` cannot be shown, or None."""
    for name, kind in {**OPTIONAL, **REQUIRED[schema]}.items():
        value = record.get(name)
        if not isinstance(value, kind) and (value is not None or name in REQUIRED[schema]):
            got = "missing" if value is None else f"a {type(value).__name__}"
            return f"its {name!r} is {got}, expected a {kind.__name__}"
    if schema in (FINETUNE_SCHEMA, DRIFT_SCHEMA):
        return None
    if schema == SCHEMA and not all(isinstance(v, dict) for v in record["metrics"].values()):
        return "its 'metrics' are not {name: {mean, std}}"
    bmca = (record["metrics"].get("bmca") or {}).get("mean") if schema == SCHEMA else record["clean"].get("bmca")
    if not isinstance(bmca, (int, float)):
        return "it has no BMCA"
    return None


def _warn(path, why):
    if path not in _warned:
        _warned.add(path)
        print(f"warning: skipped run record {path}: {why}; fix or delete it", file=sys.stderr)


def read_records(directory=None, schema=SCHEMA):
    """Every record of ``schema`` under ``directory``. A JSON file that is not a
    record of a known schema is skipped; one that is broken (not JSON, or a record
    lacking what readers need) is skipped with one warning line on stderr. Relative
    paths of older records are looked up (``_found``)."""
    directory = Path(directory or runs_dir())
    records = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _warn(path, f"not readable JSON ({exc})")
            continue
        if not isinstance(record, dict):
            _warn(path, f"a JSON {type(record).__name__}, expected an object")
            continue
        if record.get("schema") != schema:
            continue
        why = _problem(record, schema)
        if why:
            _warn(path, why)
            continue
        record.setdefault("record_path", str(path))  # where it is read from: its oof file and gallery lie beside it
        records.append(_map_paths(record, lambda p: _found(p, directory)))
    return records


def latest_per_setting(records):
    """The newest record for each (features key, head, settings)."""
    latest = {}
    for r in sorted(records, key=lambda r: r.get("created", "")):
        latest[(r["features"].get("key"), r["head"], r.get("settings"))] = r
    return list(latest.values())


