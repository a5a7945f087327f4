"""One self-contained HTML report of what has been fitted: the leaderboard, the best
run's diagnostics, a map of its features and a summary of its dataset.

    from skinfeat.apps.report import write_report
    result = write_report("report.html")

Everything is inside the file (figures as base64 PNG, inline CSS, a content
security policy that forbids any fetch), so it opens offline in any browser.
It only reads what is recorded: run records (``skinfeat.runs.records``), the
out-of-fold probabilities that ``fit`` stores next to them (``<run_id>.oof.npz``)
and the shown run's features file; nothing is refitted.

- Headline figures (BMCA, accuracy, top-3, macro AUC, ECE): the record's, mean
  ± std over folds, exactly as ``fit`` and the leaderboard show them.
- Confusion matrix: from the record (the head's decisions, summed over folds);
  the per-class table and the balanced accuracy beside it are read from it
  (*pooled*, ``metrics.confusion_scores``), and labelled so.
- ROC / precision-recall and reliability: from the out-of-fold probabilities,
  pooled, when stored (runs recorded before skinfeat stored them have none: the
  report says so); the ECE is ``metrics.expected_calibration_error`` with fit's bins.
- Feature map: ``skinfeat.viz.maps.feature_map`` (coordinates cached), by class.
"""

import base64
import html
import io
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinfeat import __version__
from skinfeat.apps.explain import errors_sheet_path
from skinfeat.core.atomic import write_atomically
from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import DataError, FeaturesError, UsageError
from skinfeat.core.intervals import span
from skinfeat.core.metrics import ECE_BINS, expected_calibration_error
from skinfeat.core.operating import SENSITIVITY, SPECIFICITIES, figure
from skinfeat.core.paths import runs_dir
from skinfeat.core.writable import check_writable, writing
from skinfeat.features.store import read_features
from skinfeat.runs.compare import (
    baseline_lines,
    dataset_of,
    leaderboard_rows,
    pooled_scores,
    read_evaluations,
    table_cells,
)
from skinfeat.runs.drift import format_drift
from skinfeat.runs.records import DRIFT_SCHEMA, read_records
from skinfeat.viz.maps import feature_map
from skinfeat.viz.plots import (
    plot_confusion,
    plot_drift,
    plot_label_efficiency,
    plot_reliability,
    plot_roc_pr,
    plot_shifts,
)

MAP_METHODS = ("umap", "tsne", "pca", "none")
DEFAULT_MAP = "umap"
MAP_SUBSAMPLE = None  # all images (UMAP of 10,015 takes ~25 s once; the coordinates are cached)


@dataclass
class ReportResult:
    path: Path
    n_runs: int
    best: dict  # the record of the run shown in detail (the best, or --run's)
    figures: list = field(default_factory=list)  # titles of the embedded figures
    notes: list = field(default_factory=list)  # what could not be shown, and why


def write_report(out="report.html", runs=None, map_method=DEFAULT_MAP, map_subsample=MAP_SUBSAMPLE, run=None):
    """Write the HTML report of the runs recorded in ``runs`` (default
    ``skinfeat.core.paths.runs_dir()``) to ``out``; returns a ReportResult. The run
    shown in detail is ``run`` (a run id, or a unique start of one), else the
    leaderboard's first."""

    check_writable(out, "the report")
    runs = Path(runs or runs_dir())
    records = read_records(runs)
    evaluations = read_evaluations(runs)
    rows = leaderboard_rows(records, evaluations=evaluations)
    if not rows:
        raise DataError(f"no runs recorded in {runs}; fit a head first (`skinfeat fit --head logreg "
                        "--features FILE`) or point $SKINFEAT_RUNS at the runs folder")
    best = _pick(records, run or rows[0]["run_id"], runs, exact=run is None)
    result = ReportResult(Path(out), len(rows), best)
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    if len(datasets) > 1 and run is None:
        result.notes.append(f"the runs come from {len(datasets)} datasets ({', '.join(datasets)}); the run shown "
                            "in detail is the leaderboard's first: pick another with `skinfeat report --run ID`")
    sections = [_leaderboard_section(rows, records, best), _run_section(best, runs, result, run is None),
                _efficiency_section(best, records, result),
                _shift_section(best, evaluations, result, "the best run" if run is None else "the run"),
                _errors_section(best, records, result), _drift_section(read_records(runs, DRIFT_SCHEMA), result)]
    fs = _features(best, result)
    if fs is not None:
        sections.append(_map_section(fs, map_method, map_subsample, result))
        sections.append(_dataset_section(fs))
    page = _page(sections, runs, result)
    with writing(result.path, "the report"):
        write_atomically(result.path, lambda f: f.write(page))
    return result


# ----------------------------------------------------------------------------- sections

def _pick(records, run_id, runs, exact):
    """The record of run ``run_id`` (or of the one run whose id starts with it)."""
    hits = [r for r in records if r.get("run_id") == run_id] or (
        [] if exact else [r for r in records if str(r.get("run_id")).startswith(run_id)])
    if len(hits) != 1:
        why = "no run has that id" if not hits else f"{len(hits)} runs' ids start with it"
        raise UsageError(f"--run {run_id}: {why} in {runs}; expected one run id of the leaderboard's run "
                         "column (`skinfeat compare`), or a start of it that only one run has")
    return hits[0]


def _leaderboard_section(rows, records, shown):
    cells = table_cells(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join(("<tr class='shown'>" if row["run_id"] == shown.get("run_id") else "<tr>")
                   + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>"
                   for row, line in zip(rows, cells[1:]))
    notes = "".join(f"<p class='note baseline'>{html.escape(line)}</p>" for line in baseline_lines(rows, records))
    return (f"<h2>Leaderboard</h2><p>{_count(len(rows), 'run')}: the newest per features file, head and settings, "
            "grouped by dataset, best balanced multiclass accuracy (BMCA, the ISIC metric) first: the mean over "
            "lesion-grouped folds with its 95% interval (a bootstrap of the lesions, 1,000 resamples within "
            "folds; mean ± std for runs recorded before intervals). <i>vs best</i>: the paired difference to the "
            "best run of the dataset on the same folds, with its interval; <i>tied with the best</i> when the "
            "interval holds 0: such a difference is noise.</p><div class='wide'><table id='leaderboard'><thead><tr>"
            f"{head}</tr></thead><tbody>{body}</tbody></table></div>{notes}")


HEADLINE = (("bmca", "BMCA"), ("accuracy", "accuracy"), ("top3", "top-3"), ("macro_auc", "macro AUC"), ("ece", "ECE"))


def _run_section(record, runs, result, best):
    name = f"{record['backbone'].get('module')} + {record['head']}"
    heading = name + (f" ({record['settings_label']})" if record.get("settings_label") else "")  # metadata=...
    metrics = record.get("metrics", {})
    k = len((metrics.get("bmca") or {}).get("folds") or [])
    summary = ", ".join(f"{label} {metrics[key]['mean']:.3f} ± {metrics[key].get('std') or 0:.3f}"
                        for key, label in HEADLINE if (metrics.get(key) or {}).get("mean") is not None)
    intervals = record.get("intervals") or {}
    if intervals:
        summary += ("; 95% intervals " + ", ".join(f"{label} {span(intervals[key])}" for key, label in HEADLINE
                                                  if intervals.get(key))
                    + f" ({intervals['resamples']:,} bootstrap resamples of the {intervals['grouped_by']}s)")
    parts = [f"<h2>{'Best run' if best else 'Run'}: {html.escape(heading)}</h2>",
             f"<p id='headline'>{html.escape(summary)} (mean ± std over {k} folds, as `skinfeat fit` and the "
             f"leaderboard show them). Run {html.escape(str(record.get('run_id')))}, dataset "
             f"{html.escape(dataset_of(record))}, settings {html.escape(record.get('settings_label') or 'default')}, "
             f"{_count(record['features'].get('n_labelled') or 0, 'labelled image')}, folds "
             f"{html.escape(str(record.get('folds', {}).get('source')))}.</p>"]
    if record.get("operating_points"):
        parts.append(_operating_table(record["operating_points"]))
    if record.get("subgroups"):
        parts.append(_subgroup_table(record["subgroups"]))
    if record["head"] not in ("stack", "mean"):  # an ensemble's model uses its first member's score
        parts.append(_ood_note(record.get("ood"), record.get("model_dir")))
    pooled_title = f"pooled over {k} folds · {name}"  # the label first: a long module name is cut at the end
    if record.get("confusion"):
        pooled = pooled_scores(record)
        parts.append(_per_class_table(pooled))
        y, pred = _pairs_from_confusion(record["confusion"])
        parts.append(_figure(plot_confusion(y, pred, title=pooled_title), "confusion matrix", result,
                             f"Pooled over the {k} folds (every fold's test part, summed): balanced accuracy "
                             f"{pooled['bmca']:.3f}, accuracy {pooled['accuracy']:.3f}; the table above is read "
                             "from this matrix. The BMCA above is the mean over folds of each fold's own."))
    oof = _load_oof(record, runs, result)
    if oof is not None:
        y, proba = oof
        parts.append(_figure(plot_roc_pr(y, proba, title=pooled_title), "ROC and precision-recall", result,
                             "Out-of-fold probabilities, pooled over the folds; the macro AUC above is the "
                             "mean over folds."))
        ece = (metrics.get("ece") or {}).get("mean")
        parts.append(_figure(plot_reliability(y, proba, title=pooled_title), "reliability", result,
                             f"ECE pooled over the folds {expected_calibration_error(y, proba):.3f} ({ECE_BINS} "
                             f"equal-width bins, as drawn); the ECE above, {_mean(ece)}, is the mean over folds "
                             "of each fold's ECE (the same definition and bins). These are the probabilities "
                             "as trained" + _calibration_note(record.get("calibration"))))
    return "<section>" + "".join(parts) + "</section>"


def _calibration_note(calibration):
    if not calibration:
        return "; this run records no calibration, so its model gives them as they are."
    return (f"; its model gives them calibrated by the temperature {calibration['temperature']:.2f} fitted on "
            f"them, whose ECE (cross-fitted by fold) is {calibration['ece_calibrated']:.3f}.")


def _efficiency_section(record, records, result):
    """The label-efficiency curve of the shown run's features and head (``fit
    --train-fraction``), when runs at other training fractions are recorded."""
    def base(r):
        label = ",".join(part for part in (r.get("settings_label") or "").split(",")
                         if not part.startswith("train_fraction="))
        return r["features"].get("key"), r["head"], label

    mine = {}
    for r in sorted(records, key=lambda r: r.get("created", "")):
        if base(r) == base(record) and (r.get("intervals") or {}).get("bmca"):
            mine[r.get("train_fraction", 1.0)] = r  # the newest per fraction
    if len(mine) < 2:
        return ""
    points = [(f, sum(r.get("train_images") or [0]) / max(1, len(r.get("train_images") or [])),
               r["metrics"]["bmca"]["mean"], r["intervals"]["bmca"]["low"], r["intervals"]["bmca"]["high"])
              for f, r in mine.items()]
    name = f"{record['backbone'].get('module')} + {record['head']}"
    return ("<section><h2>Label efficiency</h2>" + _figure(
        plot_label_efficiency(points, title=name), "label efficiency", result,
        "Each fold's head trained on a share of its training lesions (`skinfeat fit --train-fraction`), scored on "
        "the whole test fold; bars: the lesion-grouped bootstrap 95% interval.") + "</section>")


def _shift_section(record, evaluations, result, which):
    """BMCA / accuracy per shift: the shown run's shift check (plotted too) and every
    `skinfeat evaluate` record (external data, clean and shifted)."""

    checks = ([(f"shift check of {which} (fold {record['shift']['fold']}, {record['shift']['n']} images)",
                record["shift"])] if record.get("shift") else [])
    checks += [(f"evaluate {e.get('model_dir')} on {e.get('dataset')} ({e['n']} images)", e)
               for e in evaluations if e.get("clean")]
    if not checks:
        return ""
    names = ["clean"] + sorted({n for _, c in checks for n in c.get("shifts", {})},
                               key=lambda n: [m for _, c in checks for m in c.get("shifts", {})].index(n))
    head = "<th>shift</th>" + "".join(f"<th>{html.escape(label)}</th>" for label, _ in checks)

    def cell(check, name):
        m = check["clean"] if name == "clean" else check.get("shifts", {}).get(name)
        bounds = (m or {}).get("intervals", {}).get("bmca")
        return "-" if not m else f"{m['bmca']:.3f} / {m['accuracy']:.3f}" + (f" {span(bounds)}" if bounds else "")
    body = "".join(f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{cell(c, n)}</td>" for _, c in checks)
                   + "</tr>" for n in names)
    worst = "".join(f"<td>{c['worst']['bmca']:.3f} / {c['worst']['accuracy']:.3f} ({html.escape(c['worst']['bmca_shift'])})"
                    "</td>" if c.get("worst") else "<td>-</td>" for _, c in checks)
    parts = ["<section><h2>Under shift</h2><p>BMCA / accuracy on images framed, zoomed and coloured "
             "otherwise (`skinfeat evaluate --shift`): a model that only holds on its own framing shows it here. "
             "In brackets: the BMCA's 95% interval (lesion-grouped bootstrap).</p>",
             f"<table id='shifts'><thead><tr>{head}</tr></thead><tbody>{body}<tr><td>worst</td>{worst}</tr>"
             "</tbody></table>"]
    if record.get("shift"):
        name = f"{record['backbone'].get('module')} + {record['head']}"
        parts.append(_figure(plot_shifts(record["shift"], title=name), "shift check", result))
    return "".join(parts) + "</section>"


def _errors_section(record, records, result):
    """The error gallery (``skinfeat explain --errors``) of the run shown, else of the newest
    run that has one; how to make it when none has."""
    def sheet(r):
        return errors_sheet_path(r) if r.get("record_path") else None

    shown = record if sheet(record) and sheet(record).is_file() else next(
        (r for r in sorted(records, key=lambda r: r.get("created", ""), reverse=True)
         if sheet(r) and sheet(r).is_file()), None)
    if shown is None:
        return ("<section><h2>Most confident errors</h2><p class='note'>No error gallery yet: "
                "<code>skinfeat explain --model MODEL --errors --data DATA</code> draws, per true class, the run's "
                "most confident wrong out-of-fold predictions with their saliency maps, and this report shows it."
                "</p></section>")
    data = base64.b64encode(sheet(shown).read_bytes()).decode("ascii")
    result.figures.append("errors")
    which = ("" if shown is record
             else f" (of run {html.escape(str(shown.get('run_id')))}, {html.escape(shown['head'])})")
    return (f"<section><h2>Most confident errors{which}</h2><figure><img alt='errors' src='data:image/png;base64,"
            f"{data}'><figcaption>Per true class (one row each), the wrong out-of-fold predictions the run was most "
            "sure of: the image, its true class, the class wrongly decided with its calibrated probability, and "
            "the saved model's saliency map of that class.</figcaption></figure></section>")


def _drift_section(drifts, result):
    """The newest drift summary of unlabelled outside images (``skinfeat evaluate`` on a
    folder without labels), or nothing when none was made."""
    if not drifts:
        return ""
    d = max(drifts, key=lambda r: r.get("created", ""))
    return ("<section><h2>Outside images without labels (drift)</h2>"
            + _figure(plot_drift(d, title=f"{d['data']} under {d['model_dir']}"), "drift", result,
                      "The class mix the model predicts on the new images beside its training mix, and how close the "
                      "mean of their features is to the shift check's fold under each condition (nearest first).")
            + "<pre>" + html.escape("\n".join(format_drift(d))) + "</pre></section>")


def _ood_note(ood, model_dir):
    """What the run's model does with images unlike its training images (``skinfeat.core.ood``)."""
    if not ood:
        return ("<p id='ood'>Images unlike the training images: this run's record predates the out-of-distribution "
                "score; refit it to have its figures here (a model saved from it now carries the score).</p>")
    saved = f" ({html.escape(str(model_dir))})" if model_dir else " (saved by `fit --out` or `compare --best`)"
    return (f"<p id='ood'>Images unlike the training images: its model{saved} flags an "
            f"image as unusual when the distance of its standardised features from the subspace of the "
            f"training features' top {ood['dims']} principal components is above {ood['threshold']:.1f}, the "
            f"{ood['quantile']:.0%} "
            f"point of the training images' out-of-fold scores ({ood['flagged_out_of_fold']:.1%} of the "
            f"{ood['n']:,} flagged); `predict`, `serve`, the web page and `evaluate` say so.</p>")


def _operating_table(block):
    """Melanoma and malignant-vs-benign operating points, each figure with its interval."""
    names = [("auc", "ROC AUC")] + [(f"sensitivity_at_specificity_{s:g}", f"sensitivity at {s:.0%} specificity")
                                    for s in SPECIFICITIES] + [
        (f"specificity_at_sensitivity_{SENSITIVITY:g}", f"specificity at {SENSITIVITY:.0%} sensitivity")]
    head = "<th>question</th>" + "".join(f"<th>{html.escape(label)}</th>" for _, label in names)
    rows = "".join(f"<tr><td>{html.escape(task)} ({'+'.join(e['positive_classes'])} vs rest, "
                   f"{e['n_positive']:,} positive)</td>" + "".join(f"<td>{figure(e, n)}</td>" for n, _ in names)
                   + "</tr>" for task, e in block.items())
    return ("<table class='small' id='operating'><caption>Operating points, pooled over the folds, with "
            f"lesion-grouped 95% intervals</caption><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def _subgroup_table(block):
    """Per patient subgroup: images, BMCA with its interval, accuracy; flagged rows in bold."""
    rows = []
    for column, entries in block["columns"].items():
        for e in entries:
            bounds = span(e["bmca_interval"]) or f"(fewer than {block['min_lesions']} lesions)"
            cells = [column, e["group"], f"{e['n']:,}", f"{e['bmca']:.3f} {bounds}", f"{e['accuracy']:.3f}",
                     "below" if e["below"] else ""]
            rows.append(("<tr class='below'>" if e["below"] else "<tr>")
                        + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("column", "group", "images", "BMCA [95% CI]", "accuracy", "flag"))
    return (f"<table class='small' id='subgroups'><caption>Per patient subgroup, pooled over the folds (overall "
            f"BMCA {block['overall']['bmca']:.3f}); <b>below</b>: the group's interval lies wholly under it"
            f"</caption><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _per_class_table(pooled):
    head = "<tr><th>class</th><th>support</th><th>precision</th><th>recall</th><th>F1</th></tr>"
    rows = []
    for c in CLASSES:
        m = pooled["per_class"][c]
        rows.append(f"<tr><td>{c} · {html.escape(FULL_NAMES[c])}</td><td>{m['support']:,}</td>"
                    + "".join(f"<td>{_mean(m[k])}</td>" for k in ("precision", "recall", "f1")) + "</tr>")
    return ("<table class='small' id='per-class'><caption>Per class, pooled over the folds (read from the "
            f"confusion matrix below)</caption><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")


def _count(n, noun):
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _mean(value):
    mean = value.get("mean") if isinstance(value, dict) else value
    return "-" if mean is None else f"{mean:.3f}"


def _pairs_from_confusion(confusion):
    """(true, predicted) index arrays with exactly the counts of a confusion matrix."""
    counts = np.asarray(confusion, dtype=int)
    true, pred = np.nonzero(counts)
    reps = counts[true, pred]
    return np.repeat(true, reps), np.repeat(pred, reps)


def _load_oof(record, runs, result):
    name = record.get("predictions_file")
    path = runs / name if name else None
    if path is None or not path.is_file():
        result.notes.append("the run has no stored out-of-fold probabilities (it was recorded "
                            "before skinfeat stored them, or the file was removed), so its ROC, "
                            "precision-recall and reliability plots are left out; re-run its "
                            "`skinfeat fit` to get them")
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            label, fold, proba = npz["label"].astype(int), npz["fold"], npz["proba"].astype(np.float64)
        keep = (fold >= 0) & (label >= 0) & np.isfinite(proba).all(axis=1)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        result.notes.append(f"the run's out-of-fold probabilities {path} cannot be read ({exc}), so its ROC, "
                            "precision-recall and reliability plots are left out; re-run its `skinfeat fit`")
        return None
    return label[keep], proba[keep]


def _features(record, result):
    path = record["features"].get("path")
    if not path or not Path(path).is_file():
        relative = (f" (the record names it relative to the folder `skinfeat fit` ran in, and it is neither under "
                    f"{Path.cwd()} nor beside the runs folder: run the report from that folder, or re-run the fit)"
                    if path and not Path(path).is_absolute() else "")
        result.notes.append(f"the run's features file {path} is not here{relative}, so the feature map and "
                            "the dataset summary are left out")
        return None
    try:
        return read_features(path, with_views=False)
    except FeaturesError as exc:
        result.notes.append(f"{exc}; so the feature map and the dataset summary are left out")
        return None


def _map_section(fs, method, subsample, result):
    if method == "none":
        return ""

    mapped = feature_map(fs, method=method, color="class", subsample=subsample)
    result.notes.extend(mapped.notes)
    return ("<section><h2>Feature map</h2><p>Each point is an image, placed by its backbone features "
            "(2-D map of the run's features file), coloured by class.</p>"
            + _figure(mapped.figure, f"{method} feature map", result) + "</section>")


def _dataset_section(fs):
    counts = np.bincount(fs.labels[fs.labels >= 0].astype(int), minlength=len(CLASSES))
    n_lab = int(counts.sum())
    rows = "".join(f"<tr><td>{c} · {html.escape(FULL_NAMES[c])}</td><td>{n:,}</td>"
                   f"<td>{n / max(n_lab, 1):.1%}</td></tr>" for c, n in zip(CLASSES, counts))
    facts = [f"{len(fs):,} images ({n_lab:,} labelled) of {len(set(fs.lesion_ids)):,} lesions",
             f"backbone {fs.module}, {fs.feature_dim}-D features, resize {fs.attrs.get('resize')}, "
             f"input {fs.attrs.get('input_size')}",
             f"features file {fs.path}"]
    skipped = _skipped(fs.path)
    if skipped:
        facts.append(f"{skipped} unreadable images skipped at extraction")
    for column in ("dx_type", "sex", "localization"):
        if column in fs.metadata:
            values, n = np.unique(np.asarray(fs.metadata[column], dtype=str), return_counts=True)
            top = ", ".join(f"{v} {c:,}" for v, c in sorted(zip(values, n), key=lambda t: -t[1])[:6])
            facts.append(f"{column}: {top}")
    items = "".join(f"<li>{html.escape(f)}</li>" for f in facts)
    return (f"<section><h2>Dataset</h2><ul>{items}</ul><table class='small'><thead><tr><th>class</th>"
            f"<th>images</th><th>share</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _skipped(path):
    import h5py

    with h5py.File(path, "r") as f:
        return len(f["skipped/image_id"]) if "skipped/image_id" in f else 0


# ----------------------------------------------------------------------------- page

def _figure(fig, title, result, caption=""):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    result.figures.append(title)
    caption = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>{caption}</figure>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:1.5em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0}th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3}table.small{font-size:.92em}figure{margin:1em 0}img{max-width:100%;height:auto}
.note{color:#555}tr.shown{background:#eef5fb}tr.below{font-weight:bold;color:#a33}.wide{overflow-x:auto;max-width:100%}caption{text-align:left;color:#555}h2{margin-top:1.6em;border-bottom:2px solid #0072B2}"""
# When every picture has decoded, the page says so (used by the headless-browser test).
SCRIPT = """addEventListener('load',()=>{const i=[...document.images];
document.body.dataset.images=i.length;document.body.dataset.rendered=i.filter(x=>x.complete&&x.naturalWidth>0).length;});"""


def _page(sections, runs, result):
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    notes = f"<section><h2>Notes</h2><ul class='note'>{notes}</ul></section>" if notes else ""
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
            f"<title>skinfeat report</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>skinfeat report</h1><p class='note'>{_count(result.n_runs, 'run')} from {html.escape(str(runs))}; "
            f"written {time.strftime('%Y-%m-%d %H:%M')} by skinfeat {__version__}.</p>"
            + "".join(sections) + notes + "</body></html>\n")
