"""Scores per patient subgroup: does the model hold for every sex, age band and body site?

For each metadata column the data has (HAM10000: sex, age, localization; age in
bands), the BMCA and accuracy of the images of each group, pooled over the folds
(a fold-mean is too noisy in a small group), each with its lesion-grouped 95 %
bootstrap interval (``skinfeat.core.intervals``) and its count. A group whose
BMCA interval lies wholly below the overall pooled BMCA is flagged: the model is
worse there beyond the noise. A group of fewer than MIN_LESIONS lesions is shown
with its count only.
"""

import numpy as np

from skinfeat.core.intervals import Resamples, bootstrap_scores, percentile_interval

COLUMNS = ("sex", "age", "localization")
AGE_BANDS = ((0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 1000, "75+"))
MIN_LESIONS = 20
UNKNOWN = "unknown"


def _groups(column, values):
    """Each row's group name in ``column``: an age band for ages, else the value
    (lower case); blank, 'unknown' and unreadable values are 'unknown'."""
    out = []
    for v in values:
        text = str(v).strip().lower()
        if column == "age":
            try:
                age = float(text)
            except ValueError:
                age = float("nan")
            out.append(next((name for low, high, name in AGE_BANDS if low <= age < high), UNKNOWN))
        else:
            out.append(text if text and text not in ("nan", "none", UNKNOWN) else UNKNOWN)
    return np.asarray(out, dtype=object)


def _scores(y, pred, lesions, rows):
    """{n, lesions, bmca, accuracy} of ``rows``, with intervals when they hold enough lesions."""
    one = Resamples.once(lesions[rows])
    point = bootstrap_scores(y[rows], None, pred[rows], one, ("bmca", "accuracy"))
    entry = {"n": int(len(rows)), "lesions": int(len(one.stratum)), "bmca": float(point["bmca"][0]),
             "accuracy": float(point["accuracy"][0]), "bmca_interval": None, "accuracy_interval": None}
    if entry["lesions"] >= MIN_LESIONS:
        boot = bootstrap_scores(y[rows], None, pred[rows], Resamples.draw(lesions[rows], grouped_by="lesion"),
                                ("bmca", "accuracy"))
        entry["bmca_interval"] = list(percentile_interval(boot["bmca"]))
        entry["accuracy_interval"] = list(percentile_interval(boot["accuracy"]))
    return entry


def subgroup_scores(y, pred, lesions, metadata):
    """The record's ``subgroups`` block for decisions ``pred`` of true classes ``y``
    (rows with a decision only), their ``lesions`` and ``metadata`` ({column: values}):
    {overall: {...}, columns: {column: [{group, n, lesions, bmca, accuracy,
    bmca_interval, accuracy_interval, below}]}}; None when no column of COLUMNS is there."""
    y, pred = np.asarray(y, int), np.asarray(pred, int)
    lesions = np.asarray(lesions, dtype=str)
    present = [c for c in COLUMNS if c in (metadata or {})]
    if not present or not len(y):
        return None
    overall = _scores(y, pred, lesions, np.arange(len(y)))
    columns = {}
    for column in present:
        groups = _groups(column, metadata[column])
        entries = []
        bands = [band[2] for band in AGE_BANDS]
        for name in sorted(set(groups), key=lambda g: (g == UNKNOWN, bands.index(g) if g in bands else 0, g)):
            entry = {"group": name, **_scores(y, pred, lesions, np.flatnonzero(groups == name))}
            entry["below"] = bool(entry["bmca_interval"] and entry["bmca_interval"][1] < overall["bmca"])
            entries.append(entry)
        columns[column] = entries
    return {"overall": overall, "columns": columns, "pooled": True, "min_lesions": MIN_LESIONS}


def subgroup_lines(block):
    """``fit``'s short table of a ``subgroups`` block: one line per group."""
    if not block:
        return []
    o = block["overall"]
    lines = [f"subgroups (pooled over the folds; overall BMCA {o['bmca']:.3f}; "
             "! = its interval lies wholly below the overall BMCA)",
             f"{'column':<13} {'group':<16} {'images':>6}  {'BMCA':>5} {'95% interval':<14}  accuracy"]
    for column, entries in block["columns"].items():
        for e in entries:
            span = (f"[{e['bmca_interval'][0]:.3f}, {e['bmca_interval'][1]:.3f}]" if e["bmca_interval"]
                    else f"(< {block['min_lesions']} lesions)")
            lines.append(f"{column:<13} {e['group'][:16]:<16} {e['n']:>6}  {e['bmca']:.3f} {span:<14}  "
                         f"{e['accuracy']:.3f}{'  !' if e['below'] else ''}")
    return lines
