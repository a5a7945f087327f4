"""The leaderboard (``skinfeat compare``): one row per recorded run, sorted within
each dataset, as a table, CSV, JSON or Markdown, with the always-NV baseline of
each dataset and each row's paired difference to the best of its dataset; one
run against every other (``versus_lines``, ``compare --vs``); the best run
(``best_record``); a fit's summary lines. It reads the records and the
out-of-fold predictions stored beside them; it never refits a head.
"""

import csv
import io
import json

from skinfeat.core.classes import CLASSES
from skinfeat.core.intervals import span
from skinfeat.core.metrics import LABELS, SCALARS, confusion_scores
from skinfeat.core.operating import operating_lines, point_line
from skinfeat.core.paths import runs_dir
from skinfeat.runs.paired import Pairing, verdict
from skinfeat.runs.records import EVALUATION_SCHEMA, latest_per_setting, read_records
from skinfeat.runs.subgroups import subgroup_lines

FORMATS = ("table", "csv", "json", "markdown")


# sort key -> (row field, descending)
SORTS = {"bmca": ("bmca", True), "worst_shift": ("worst_bmca", True), "accuracy": ("accuracy", True),
         "top3": ("top3", True), "test": ("test_bmca", True),
         "auc": ("auc", True), "fit_time": ("fit_s", False), "images_per_second": ("images_per_s", True),
         "backbone": ("backbone", False), "head": ("head", False), "created": ("created", True)}


def _mean(record, name):
    return (record.get("metrics", {}).get(name) or {}).get("mean")


def read_evaluations(directory=None):
    """Every ``skinfeat evaluate`` record under ``directory``, oldest first."""
    return sorted(read_records(directory, EVALUATION_SCHEMA), key=lambda r: r.get("created", ""))


def _test_result(record, evaluations):
    """(BMCA, dataset) of the newest clean evaluation of the record's saved model."""
    mine = [e for e in evaluations if e.get("model_run_id") == record.get("run_id")]
    test = mine[-1] if mine else dict(record.get("test") or {}, clean={"bmca": (record.get("test") or {}).get("bmca")})
    if test.get("clean", {}).get("bmca") is None:
        return None, None
    return test["clean"]["bmca"], f"{test.get('dataset')} (n={test['n']})" if test.get("n") else test.get("dataset")


def dataset_of(record):
    """The name of the dataset a run's features were extracted from ('?' if unrecorded)."""
    return record["backbone"].get("dataset") or "?"


def leaderboard_rows(records, sort="bmca", latest=True, evaluations=(), runs=None):
    """One row (dict) per record, sorted by ``sort`` (a key of SORTS; missing values
    last) within each dataset, the datasets in the order of their first row: runs of
    one dataset stay together. ``evaluations``: ``skinfeat evaluate`` records, shown
    as the test column. Each row is marked against the best BMCA of its dataset
    (``vs_best``: the paired difference and its interval, from the runs' out-of-fold
    files in ``runs``; ``skinfeat.runs.paired``)."""
    checked = _newest_shift_checks(records)
    if latest:
        records = latest_per_setting(records)
    rows = []
    for r in records:
        bmca = r.get("metrics", {}).get("bmca", {})
        interval = (r.get("intervals") or {}).get("bmca") or {}
        carried = None if r.get("shift") else checked.get(_setting(r))
        worst = ((r.get("shift") or (carried or {}).get("shift") or {}).get("worst")) or {}
        test_bmca, test_data = _test_result(r, evaluations)
        rows.append({
            "dataset": dataset_of(r), "backbone": r["backbone"].get("module"), "head": r["head"],
            "settings": r.get("settings_label", ""), "dim": r["backbone"].get("feature_dim"),
            "views": r["backbone"].get("views") if r.get("use_views") else 0,
            "views_scored": bool(r.get("use_views")) and not (r.get("modes") or {}).get("scored"),
            "bmca": bmca.get("mean"), "bmca_std": bmca.get("std"),
            "bmca_low": interval.get("low"), "bmca_high": interval.get("high"),
            "vs_best": None, "vs_best_low": None, "vs_best_high": None, "vs_best_note": None,
            "worst_bmca": worst.get("bmca"), "worst_bmca_interval": worst.get("bmca_interval"), "worst_accuracy": worst.get("accuracy"),
            "worst_shift": worst.get("bmca_shift"), "test_bmca": test_bmca, "test_data": test_data,
            "worst_from": carried.get("run_id") if carried else None,
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
    rows = sorted(rows, key=lambda row: order.index(row["dataset"]))  # stable: the sort holds within each
    mark_against_best(rows, records, runs)
    return rows


def _setting(record):
    """What makes two records the same run done again: features, head, settings and folds."""
    return (record["features"].get("key"), record["head"], record.get("settings"),
            (record.get("folds") or {}).get("sha256"))


def _newest_shift_checks(records):
    """{setting: the newest record of it that was shift-checked}: a rerun without --shift
    shows the check of an earlier run of the same setting (labelled with its run)."""
    found = {}
    for r in sorted(records, key=lambda r: r.get("created", "")):
        if (r.get("shift") or {}).get("worst"):
            found[_setting(r)] = r
    return found


def mark_against_best(rows, records, runs=None):
    """Fill each row's ``vs_best*`` fields: its paired BMCA difference to the row with
    the highest BMCA among those of its dataset scored on the same folds (runs on
    other folds cannot be paired), the interval, and a note: 'best' ('best on folds
    F' where the dataset has runs on other folds too), 'tied' (the interval holds 0),
    'alone on its folds', or why it cannot be paired."""
    by_id = {r.get("run_id"): r for r in records}
    scored = [row for row in rows if row["bmca"] is not None]
    for dataset in dict.fromkeys(row["dataset"] for row in scored):
        groups = {}
        for row in scored:
            if row["dataset"] == dataset:
                groups.setdefault(row["folds"], []).append(row)
        for folds, mine in groups.items():
            if len(mine) < 2:
                mine[0]["vs_best_note"] = "alone on its folds" if len(groups) > 1 else None
                continue
            best = max(mine, key=lambda row: row["bmca"])
            pairing = Pairing(by_id[best["run_id"]], runs or runs_dir())
            for row in mine:
                paired = pairing.against(by_id[row["run_id"]])
                if paired.get("self"):
                    row["vs_best_note"] = "best" if len(groups) == 1 else f"best on folds {folds}"
                elif "unpaired" in paired:
                    row["vs_best_note"] = f"not paired: {paired['unpaired']}"
                else:
                    row.update(vs_best=paired["difference"], vs_best_low=paired["low"],
                               vs_best_high=paired["high"], vs_best_note="tied" if verdict(paired) == "tied" else None)


def _folds_cell(folds):
    """The folds' hash, and the folds scored when only some were (a fine-tuned backbone)."""
    scored = folds.get("scored")
    return str(folds.get("sha256", ""))[:8] + (f" fold {','.join(map(str, scored))}" if scored else "")


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


TABLE_COLUMNS = ("dataset", "backbone", "head", "settings", "dim", "BMCA [95% CI]", "vs best", "worst shift", "test BMCA",
                 "accuracy", "top-3", "AUC", "fit s", "extract img/s", "folds", "run")


def _vs_best(row):
    if row["vs_best"] is None:
        return row["vs_best_note"] or "-"
    figure = f"{row['vs_best']:+.3f} {span((row['vs_best_low'], row['vs_best_high']), '+.3f')}"
    return f"tied with the best {figure}" if row["vs_best_note"] == "tied" else figure


def head_label(row):
    """The head column: "logreg +2 views" (trained on each image's clean view and 2
    augmented ones, scored on the clean view as predict runs it); "logreg+tta2" for
    a record that predates that, which scored the mean over the views."""
    if not row["views"]:
        return row["head"]
    return row["head"] + (f"+tta{row['views']}" if row["views_scored"] else f" +{row['views']} views")


def _cells(row):
    if row["bmca"] is None:
        bmca = "-"
    elif row["bmca_low"] is not None:
        bmca = f"{row['bmca']:.3f} {span((row['bmca_low'], row['bmca_high']))}"
    else:  # a record from before the intervals
        bmca = f"{row['bmca']:.3f}±{row['bmca_std'] or 0:.3f}"
    worst = "-" if row["worst_bmca"] is None else (
        f"{row['worst_bmca']:.3f}/{row['worst_accuracy']:.3f} {row['worst_shift']}"
        + (f" {span(row['worst_bmca_interval'])}" if row["worst_bmca_interval"] else "")
        + (f" (from run {row['worst_from']})" if row["worst_from"] else ""))
    test = "-" if row["test_bmca"] is None else f"{row['test_bmca']:.3f} {row['test_data']}"
    return [row["dataset"], str(row["backbone"]), head_label(row),
            row["settings"] or "default", _fmt(row["dim"], "d"), bmca, _vs_best(row), worst, test, _fmt(row["accuracy"], ".3f"),
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


def versus_lines(records, reference, runs=None, latest=True):
    """``compare --vs``: every run of ``reference``'s dataset against it, as aligned
    text: BMCA and its interval, the paired difference (the row minus the reference)
    with its interval and verdict, and the corrected t-test over folds."""
    chosen = latest_per_setting(records) if latest else list(records)
    if reference["run_id"] not in {r["run_id"] for r in chosen}:
        chosen.append(reference)
    mine = [r for r in chosen if dataset_of(r) == dataset_of(reference)]
    pairing = Pairing(reference, runs or runs_dir())
    cells = [["run", "head", "settings", "BMCA [95% CI]", "minus the reference [95% CI]", "verdict",
              "t (corrected)", "p"]]
    for r in sorted(mine, key=lambda r: -(_mean(r, "bmca") or 0)):
        paired = pairing.against(r)
        interval = (r.get("intervals") or {}).get("bmca")
        bmca = f"{_mean(r, 'bmca'):.3f} {span(interval)}".strip()
        test = paired.get("t_test") or {}
        if paired.get("self"):
            diff, word = "(the reference)", ""
        elif "unpaired" in paired:
            diff, word = f"not paired: {paired['unpaired']}", ""
        else:
            diff = f"{paired['difference']:+.3f} {span(paired, '+.3f')}"
            word = verdict(paired)
        cells.append([str(r["run_id"]), r["head"], r.get("settings_label") or "default", bmca, diff, word,
                      _fmt(test.get("t"), "+.2f"), _fmt(test.get("p"), ".3f")])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines + [f"reference: {reference['run_id']} ({reference['head']}, dataset {dataset_of(reference)}); "
                    "paired lesion-grouped bootstrap of the fold-mean BMCA difference (1,000 resamples); t-test "
                    "over folds corrected for overlapping training sets (Nadeau & Bengio); tied: the interval holds 0"]


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

    base = record.get("baseline", {})
    lines = [f"{'metric':<10} {'mean':>6} ± {'std':<6} always-NV"]
    for name in SCALARS:
        m = record["metrics"][name]
        b = f"{base[name]:.3f}" if base.get(name) is not None else ""
        lines.append(f"{LABELS[name]:<10} {_fmt(m['mean'], '6.3f')} ± {_fmt(m['std'], '<6.3f')} {b}")
    k = len(record["metrics"]["bmca"].get("folds") or [])
    pooled = pooled_scores(record)
    chosen = [c for c in record.get("chosen") or [] if c]
    if chosen:
        lines.append("chosen on each fold's inner lesion-grouped split: " + "; ".join(
            ", ".join(f"{k} {v:g}" for k, v in c.items()) for c in chosen))
    intervals = record.get("intervals")
    if intervals:
        lines.append("95% interval " + ", ".join(f"{LABELS[m]} {span(intervals[m])}" for m in ("bmca", "accuracy",
                                                                                          "macro_auc")
                                              if intervals.get(m))
                     + f" ({intervals['resamples']} bootstrap resamples of the {intervals['grouped_by']}s, "
                       "within folds)")
    lines.append(f"(mean ± std over {k} folds; pooled over the folds, the confusion below: balanced "
                 f"accuracy {_fmt(pooled['bmca'], '.3f')}, accuracy {_fmt(pooled['accuracy'], '.3f')})")
    lines.append("recall     " + "  ".join(f"{c} {_fmt(pooled['per_class'][c]['recall'], '.2f')}"
                                           for c in CLASSES) + "  (pooled)")
    lines.append("confusion (rows: true, columns: predicted, summed over folds)")
    lines.append("       " + "".join(f"{c:>7}" for c in CLASSES))
    for c, row in zip(CLASSES, record["confusion"]):
        lines.append(f"{c:<7}" + "".join(f"{v:>7}" for v in row))
    if record.get("operating_point"):
        lines.append(point_line(record["operating_point"]))
    modes = record.get("modes")
    if modes:
        d = modes["views"]["difference"]
        lines.append(f"scored on the clean view (as predict runs it): BMCA {modes['none']['bmca']:.3f}; the mean over "
                     f"the views (predict --tta views) {modes['views']['bmca']:.3f}, paired difference "
                     f"{d['difference']:+.3f} {span((d['low'], d['high']))}"
                     + (" (a tie)" if d["low"] <= 0 <= d["high"] else ""))
    calibration = record.get("calibration")
    if calibration:
        lines.append(f"calibration: temperature {calibration['temperature']:.2f} fitted on the out-of-fold "
                     f"probabilities; ECE {calibration['ece_as_trained']:.3f} as trained -> "
                     f"{calibration['ece_calibrated']:.3f} calibrated (cross-fitted by fold)"
                     + (f"; the decision scores {calibration['ece_decision_scores']:.3f}"
                        if calibration.get("ece_decision_scores") is not None else ""))
    return lines + operating_lines(record.get("operating_points")) + subgroup_lines(record.get("subgroups"))


def pooled_scores(record):
    """``metrics.confusion_scores`` of the record's confusion matrix (summed over folds):
    the pooled per-class precision, recall, F1, balanced accuracy and accuracy."""

    return confusion_scores(record["confusion"])

