"""Run records (one JSON file per fit, in ``skinfeat.paths.runs_dir()``) and the
leaderboard built from them. The leaderboard only reads records; it never
recomputes a metric.

Record schema (``schema: "skinfeat-run"``, ``schema_version: 1``)::

    run_id, created, skinfeat_version
    backbone:  module, module_source, module_fingerprint, input_size, resize,
               feature_dim, views, images_per_second, dataset
    features:  path, key, n_images, n_labelled
    head, params (every parameter of the head), use_views, settings (hash of head+params+use_views)
    folds:     source, k, sha256, n_used, n_unused; scored (the folds scored, when the backbone
               was fine-tuned on the others: ``skinfeat.evaluate.unseen_folds``)
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
``members`` [{run_id, head, module, settings_label}] (``skinfeat.ensemble``).

Records of ``skinfeat finetune`` (``schema: "skinfeat-finetune"``, FINETUNE_SCHEMA)
hold run_id, created, module (the new one), base, data, fold, settings, key,
history [{epoch, loss, val_bmca, val_accuracy, lr, seconds, images_per_second}],
best {epoch, val_bmca}, timings, model_dir, plot; the leaderboard does not read them.
"""

import csv
import hashlib
import io
import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from skinfeat.atomic import sweep, write_atomically
from skinfeat.outputs import check_writable, writing
from skinfeat.paths import runs_dir

SCHEMA = "skinfeat-run"
EVALUATION_SCHEMA = "skinfeat-evaluation"  # records of `skinfeat evaluate`
FINETUNE_SCHEMA = "skinfeat-finetune"  # records of `skinfeat finetune`
SCHEMA_VERSION = 1
FORMATS = ("table", "csv", "json", "markdown")
# sort key -> (row field, descending)
SORTS = {"bmca": ("bmca", True), "worst_shift": ("worst_bmca", True), "accuracy": ("accuracy", True),
         "top3": ("top3", True), "test": ("test_bmca", True),
         "auc": ("auc", True), "fit_time": ("fit_s", False), "images_per_second": ("images_per_s", True),
         "backbone": ("backbone", False), "head": ("head", False), "created": ("created", True)}


def settings_hash(head, params, use_views):
    text = json.dumps({"head": head, "params": params, "use_views": bool(use_views)}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def json_safe(value):
    """JSON-safe copy: NaN/inf become None, numpy scalars plain numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
            FINETUNE_SCHEMA: {"run_id": str, "module": str, "history": list}}
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
    if schema == FINETUNE_SCHEMA:
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
        records.append(_map_paths(record, lambda p: _found(p, directory)))
    return records


def latest_per_setting(records):
    """The newest record for each (features key, head, settings)."""
    latest = {}
    for r in sorted(records, key=lambda r: r.get("created", "")):
        latest[(r["features"].get("key"), r["head"], r.get("settings"))] = r
    return list(latest.values())


def _mean(record, name):
    return (record.get("metrics", {}).get(name) or {}).get("mean")


def read_evaluations(directory=None):
    """Every ``skinfeat evaluate`` record under ``directory``, oldest first."""
    return sorted(read_records(directory, EVALUATION_SCHEMA), key=lambda r: r.get("created", ""))


def _test_result(record, evaluations):
    """(BMCA, dataset) of the newest clean evaluation of the record's saved model."""
    mine = [e for e in evaluations if e.get("model_run_id") == record.get("run_id")]
    if mine:
        return mine[-1]["clean"]["bmca"], mine[-1].get("dataset")
    test = record.get("test") or {}
    return test.get("bmca"), test.get("dataset")


def dataset_of(record):
    """The name of the dataset a run's features were extracted from ('?' if unrecorded)."""
    return record["backbone"].get("dataset") or "?"


def leaderboard_rows(records, sort="bmca", latest=True, evaluations=()):
    """One row (dict) per record, sorted by ``sort`` (a key of SORTS; missing values
    last) within each dataset, the datasets in the order of their first row: runs of
    one dataset stay together. ``evaluations``: ``skinfeat evaluate`` records, shown
    as the test column."""
    if latest:
        records = latest_per_setting(records)
    rows = []
    for r in records:
        bmca = r.get("metrics", {}).get("bmca", {})
        worst = (r.get("shift") or {}).get("worst") or {}
        test_bmca, test_data = _test_result(r, evaluations)
        rows.append({
            "dataset": dataset_of(r), "backbone": r["backbone"].get("module"), "head": r["head"],
            "settings": r.get("settings_label", ""), "dim": r["backbone"].get("feature_dim"),
            "views": r["backbone"].get("views") if r.get("use_views") else 0,
            "bmca": bmca.get("mean"), "bmca_std": bmca.get("std"),
            "worst_bmca": worst.get("bmca"), "worst_accuracy": worst.get("accuracy"),
            "worst_shift": worst.get("bmca_shift"), "test_bmca": test_bmca, "test_data": test_data,
            "accuracy": _mean(r, "accuracy"), "top3": _mean(r, "top3"), "auc": _mean(r, "macro_auc"),
            "fit_s": r.get("timings", {}).get("cv_seconds"),
            "images_per_s": r["backbone"].get("images_per_second"),
            "folds": _folds_cell(r.get("folds") or {}), "created": r.get("created"),
            "features_key": r["features"].get("key"), "run_id": r.get("run_id"),
        })
    field, descending = SORTS[sort]
    present = [row for row in rows if row[field] is not None]
    missing = [row for row in rows if row[field] is None]
    rows = sorted(present, key=lambda row: row[field], reverse=descending) + missing
    order = list(dict.fromkeys(row["dataset"] for row in rows))
    return sorted(rows, key=lambda row: order.index(row["dataset"]))  # stable: the sort holds within each


def _folds_cell(folds):
    """The folds' hash, and the folds scored when only some were (a fine-tuned backbone)."""
    scored = folds.get("scored")
    return str(folds.get("sha256", ""))[:8] + (f" fold {','.join(map(str, scored))}" if scored else "")


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


TABLE_COLUMNS = ("dataset", "backbone", "head", "settings", "dim", "BMCA", "worst shift", "test BMCA",
                 "accuracy", "top-3", "AUC", "fit s", "extract img/s", "folds", "run")


def _cells(row):
    bmca = "-" if row["bmca"] is None else f"{row['bmca']:.3f}±{row['bmca_std'] or 0:.3f}"
    worst = "-" if row["worst_bmca"] is None else (
        f"{row['worst_bmca']:.3f}/{row['worst_accuracy']:.3f} {row['worst_shift']}")
    test = "-" if row["test_bmca"] is None else f"{row['test_bmca']:.3f} {row['test_data']}"
    return [row["dataset"], str(row["backbone"]), row["head"] + (f"+tta{row['views']}" if row["views"] else ""),
            row["settings"] or "default", _fmt(row["dim"], "d"), bmca, worst, test, _fmt(row["accuracy"], ".3f"),
            _fmt(row["top3"], ".3f"), _fmt(row["auc"], ".3f"), _fmt(row["fit_s"], ".1f"),
            _fmt(row["images_per_s"], ".1f"), row["folds"], str(row["run_id"])]


def table_cells(rows):
    """The leaderboard as text cells: the header (TABLE_COLUMNS), then one list per row."""
    return [list(TABLE_COLUMNS)] + [_cells(row) for row in rows]


def format_leaderboard(rows, fmt="table", records=None):
    """The rows as ``table`` (aligned text), ``markdown``, ``csv`` or ``json``; with
    ``records`` (those the rows come from), table and markdown end with the always-NV
    baseline of each dataset (``baseline_lines``), markdown as paragraphs after the table."""
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["backbone"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = table_cells(rows)
    notes = baseline_lines(rows, records) if records is not None else []
    if fmt == "markdown":
        lines = ["| " + " | ".join(v.replace("|", "\\|") for v in c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|")
        return "\n\n".join(["\n".join(lines), *notes])  # a blank line ends a table
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + notes)


def rank_key(record):
    """How ``best_record`` ranks runs (higher is better): the worst-shift BMCA where
    a run was shift checked, clean CV BMCA second (and alone where none was)."""
    worst = ((record.get("shift") or {}).get("worst") or {}).get("bmca")
    return (worst if worst is not None else -1.0, _mean(record, "bmca") or 0.0)


def best_record(records):
    """The run a user should take: the latest per setting with the highest ``rank_key``."""
    rows = latest_per_setting(records)
    return max(rows, key=rank_key) if rows else None


def baseline_lines(rows, records):
    """One line per dataset of ``rows`` with the always-NV baseline of its newest
    shown run, so 0.67 accuracy reads as no skill; each dataset has its own."""
    shown = {row["run_id"] for row in rows}
    newest = {}
    for r in sorted(records, key=lambda r: r.get("created", "")):
        if r.get("run_id") in shown and r.get("baseline"):
            newest[dataset_of(r)] = r["baseline"]
    return [f"baseline (always NV) on {name if name != '?' else 'the runs that name no dataset (?)'}: BMCA {_fmt(b.get('bmca'), '.3f')}, accuracy "
            f"{_fmt(b.get('accuracy'), '.3f')}, top-3 {_fmt(b.get('top3'), '.3f')}"
            for name in dict.fromkeys(row["dataset"] for row in rows) if (b := newest.get(name))]


def summary_lines(record):
    """The result of one fit as text lines: metrics mean ± std over folds next to the
    always-NV baseline, then the pooled figures of the confusion matrix summed over
    folds (balanced accuracy, accuracy, per-class recall) and the matrix itself."""
    from skinfeat.classes import CLASSES
    from skinfeat.metrics import LABELS, SCALARS

    base = record.get("baseline", {})
    lines = [f"{'metric':<10} {'mean':>6} ± {'std':<6} always-NV"]
    for name in SCALARS:
        m = record["metrics"][name]
        b = f"{base[name]:.3f}" if base.get(name) is not None else ""
        lines.append(f"{LABELS[name]:<10} {_fmt(m['mean'], '6.3f')} ± {_fmt(m['std'], '<6.3f')} {b}")
    k = len(record["metrics"]["bmca"].get("folds") or [])
    pooled = pooled_scores(record)
    lines.append(f"(mean ± std over {k} folds; pooled over the folds, the confusion below: balanced "
                 f"accuracy {_fmt(pooled['bmca'], '.3f')}, accuracy {_fmt(pooled['accuracy'], '.3f')})")
    lines.append("recall     " + "  ".join(f"{c} {_fmt(pooled['per_class'][c]['recall'], '.2f')}"
                                           for c in CLASSES) + "  (pooled)")
    lines.append("confusion (rows: true, columns: predicted, summed over folds)")
    lines.append("       " + "".join(f"{c:>7}" for c in CLASSES))
    for c, row in zip(CLASSES, record["confusion"]):
        lines.append(f"{c:<7}" + "".join(f"{v:>7}" for v in row))
    return lines


def pooled_scores(record):
    """``metrics.confusion_scores`` of the record's confusion matrix (summed over folds):
    the pooled per-class precision, recall, F1, balanced accuracy and accuracy."""
    from skinfeat.metrics import confusion_scores

    return confusion_scores(record["confusion"])
