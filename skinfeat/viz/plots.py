"""Figures: feature-space maps and the diagnostics of a model's out-of-fold predictions.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no
display, no global figure list to leak: PNGs are drawn by Agg) and
:func:`save_figure` writes it atomically. Class colours are fixed (Okabe-Ito,
colour-blind safe) and the same in every figure::

    from skinfeat.viz.plots import plot_confusion, plot_roc_pr, plot_reliability, save_figure
    save_figure(plot_confusion(y_true, proba), "runs/confusion.png")

``y_true`` is ``[N]`` class indices in CLASSES order (rows with -1, unlabelled,
are left out); ``proba`` is ``[N, 7]``.
"""

import re
from pathlib import Path

import numpy as np

from skinfeat.core.atomic import write_atomically
from skinfeat.core.classes import CLASSES, FULL_NAMES, UNLABELLED
from skinfeat.core.metrics import ECE_BINS, expected_calibration_error

DPI = 100
# Okabe & Ito (2008), colour-blind safe; melanoma gets the warm, alarming one.
CLASS_COLORS = {"MEL": "#D55E00", "NV": "#0072B2", "BCC": "#E69F00", "AKIEC": "#CC79A7",
                "BKL": "#009E73", "DF": "#56B4E9", "VASC": "#000000"}
CATEGORY_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
MISSING_COLOR = "#BBBBBB"
MISSING_VALUES = {"", "unknown", "nan", "none", "na", "n/a", "unlabelled", "not in folds"}
SIZES = {"embedding": (12, 7.5), "confusion": (14, 6.2), "roc_pr": (14, 6.2), "reliability": (7, 8), "drift": (14, 6),
         "shifts": (12, 5.5), "history": (12, 4.5), "efficiency": (8, 5)}


def _figure(kind, **kwargs):
    from matplotlib.figure import Figure

    return Figure(figsize=SIZES[kind], dpi=DPI, layout="constrained", **kwargs)


def save_figure(fig, path, dpi=DPI):
    """Write ``fig`` to ``path`` (format from the suffix, PNG by default) atomically; return the path."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    write_atomically(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi), binary=True)
    return path


# ----------------------------------------------------------------------------- maps

def _natural_key(value):
    """Sort '2' before '10', 'fold 2' before 'fold 10', and missing values last."""
    missing = str(value).strip().lower() in MISSING_VALUES
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return missing, [(0, float(p), "") if i % 2 else (1, 0.0, p.lower()) for i, p in enumerate(parts)]


def _groups(values, kind):
    """[(label, colour, mask)] for the legend, in legend order."""
    values = np.asarray(values)
    if kind == "class":
        groups = [(f"{name} · {FULL_NAMES[name]}", CLASS_COLORS[name], values == i)
                  for i, name in enumerate(CLASSES)]
        groups.append(("unlabelled", MISSING_COLOR, values == UNLABELLED))
    elif kind == "category":
        values = values.astype(str)
        levels = sorted(set(values), key=_natural_key)
        palette = CATEGORY_COLORS if len(levels) <= len(CATEGORY_COLORS) else _tab20()
        colours = iter(palette)
        groups = [(level or "(empty)", MISSING_COLOR if _natural_key(level)[0] else next(colours),
                   values == level) for level in levels]
    else:
        raise ValueError(f"kind must be 'class' or 'category', got {kind!r}")
    return [(label, colour, mask) for label, colour, mask in groups if mask.any()]


def _tab20():
    import matplotlib

    colours = [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i not in (14, 15)]
    return colours[::2] + colours[1::2]  # dark shades first; no greys: grey means "missing" here


def _grouped_scatter(fig, ax, coords, groups, size, legend_title):
    """One colour per group, larger groups drawn first, a legend with the counts."""
    artists = {}
    for label, colour, mask in sorted(groups, key=lambda g: -g[2].sum()):
        artists[label] = ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=colour, alpha=0.75,
                                    linewidths=0, rasterized=True)
    legend = fig.legend([artists[label] for label, _, _ in groups],
                        [f"{label} ({mask.sum():,})" for label, _, mask in groups],
                        loc="outside right upper", title=legend_title, markerscale=max(1.0, 9 / np.sqrt(size)),
                        frameon=False, fontsize=10, title_fontsize=11, alignment="left")
    for handle in legend.legend_handles:
        handle.set_alpha(1)


def _numeric_scatter(fig, ax, coords, values, size, label):
    """Points coloured on one scale (viridis) with its colour bar; missing values grey, below."""
    missing = np.isnan(values)
    if missing.any():
        ax.scatter(coords[missing, 0], coords[missing, 1], s=size, color=MISSING_COLOR, alpha=0.75, linewidths=0,
                   rasterized=True, label=f"missing ({missing.sum():,})")
        fig.legend(loc="outside right lower", frameon=False, fontsize=10, markerscale=max(1.0, 9 / np.sqrt(size)))
    points = ax.scatter(coords[~missing, 0], coords[~missing, 1], c=values[~missing], cmap="viridis", s=size,
                        alpha=0.75, linewidths=0, rasterized=True)
    fig.colorbar(points, ax=ax, label=label, shrink=0.85)


def plot_embedding(coords, labels_or_values, kind="class", title=None, axis_labels=("1", "2"),
                   legend_title=None):
    """Scatter of 2-D ``coords [N, 2]`` coloured by class index (``kind="class"``, -1
    unlabelled), by any category (``kind="category"``, e.g. sex or localization) or on a
    colour scale (``kind="numeric"``, e.g. age; NaN grey).
    Larger groups are drawn first so that rare classes stay visible."""
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(labels_or_values):
        raise ValueError(f"expected coords [N, 2] and N values, got coords {coords.shape} and "
                         f"{len(labels_or_values)} values")
    fig = _figure("embedding")
    ax = fig.add_subplot()
    size = float(np.clip(50000 / max(len(coords), 1), 3, 30))
    if kind == "numeric":
        _numeric_scatter(fig, ax, coords, np.asarray(labels_or_values, float), size, legend_title)
    else:
        _grouped_scatter(fig, ax, coords, _groups(labels_or_values, kind), size, legend_title)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(coords):,} points")
    return fig


# ----------------------------------------------------------------------------- predictions

def _check_predictions(y_true, proba, two_d=True):
    """(y_true, proba) as arrays without unlabelled rows; ValueError on shapes that do not fit."""
    y_true = np.asarray(y_true).astype(int).ravel()
    proba = np.asarray(proba)
    if len(proba) != len(y_true):
        raise ValueError(f"y_true has {len(y_true)} rows but the predictions have {len(proba)}; "
                         "expected one prediction per image")
    if two_d and (proba.ndim != 2 or proba.shape[1] != len(CLASSES)):
        raise ValueError(f"expected probabilities [N, {len(CLASSES)}] in CLASSES order "
                         f"({' '.join(CLASSES)}), got shape {proba.shape}")
    if y_true.size and (y_true.max() >= len(CLASSES) or y_true.min() < UNLABELLED):
        raise ValueError(f"y_true holds {y_true.min()}..{y_true.max()}; expected class indices "
                         f"0..{len(CLASSES) - 1} (-1 for unlabelled rows, which are left out)")
    keep = y_true != UNLABELLED
    if not keep.any():
        raise ValueError("y_true holds no labelled rows (all -1); nothing to plot")
    return y_true[keep], proba[keep]


def confusion_counts(y_true, y_pred):
    """[7, 7] counts: rows true class, columns predicted class (CLASSES order)."""
    counts = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def _heatmap(ax, matrix, text, vmax, title, cmap="Blues"):
    ax.imshow(matrix, cmap=cmap, vmin=0, vmax=vmax)
    ticks = np.arange(len(CLASSES))
    ax.set_xticks(ticks, CLASSES)
    ax.set_yticks(ticks, CLASSES)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for (i, j), value in np.ndenumerate(matrix):
        dark = np.isfinite(value) and value > 0.55 * vmax
        ax.text(j, i, text(i, j), ha="center", va="center", fontsize=10,
                color="white" if dark else "black")


def plot_confusion(y_true, proba_or_pred, title=None):
    """Confusion matrix, raw counts (left) and each true class's row as fractions
    (right: the diagonal are the per-class recalls, their mean is the balanced accuracy)."""
    proba_or_pred = np.asarray(proba_or_pred)
    y_true, pred = _check_predictions(y_true, proba_or_pred, two_d=proba_or_pred.ndim == 2)
    pred = pred.argmax(axis=1) if pred.ndim == 2 else pred.astype(int)
    counts = confusion_counts(y_true, pred)
    support = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = counts / support[:, None]  # NaN rows: class absent from y_true
    recall = np.diag(rates)[support > 0]
    fig = _figure("confusion")
    left, right = fig.subplots(1, 2)
    _heatmap(left, counts, lambda i, j: f"{counts[i, j]:,}", max(counts.max(), 1), "counts")
    _heatmap(right, np.nan_to_num(rates), lambda i, j: "–" if support[i] == 0 else f"{rates[i, j]:.2f}",
             1.0, "fraction of each true class (row)")
    right.set_yticks(np.arange(len(CLASSES)), [f"{c} ({n:,})" for c, n in zip(CLASSES, support)])
    fig.suptitle(f"{title + ': ' if title else ''}balanced accuracy {recall.mean():.3f}, "
                 f"accuracy {(pred == y_true).mean():.3f}, n = {len(y_true):,}", fontsize=13)
    return fig


def plot_roc_pr(y_true, proba, title=None):
    """One-vs-rest ROC (left, AUC in the legend) and precision-recall (right, average
    precision) curves per class. Classes with no case, or only cases, in y_true are skipped."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    y_true, proba = _check_predictions(y_true, proba)
    fig = _figure("roc_pr")
    roc_ax, pr_ax = fig.subplots(1, 2)
    aucs, aps, skipped = [], [], []
    for i, name in enumerate(CLASSES):
        positive = y_true == i
        if positive.all() or not positive.any():
            skipped.append(name)
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, i])
        precision, recall, _ = precision_recall_curve(positive, proba[:, i])
        aucs.append(auc(fpr, tpr))
        aps.append(average_precision_score(positive, proba[:, i]))
        colour = CLASS_COLORS[name]
        roc_ax.plot(fpr, tpr, color=colour, lw=1.8, label=f"{name}  AUC {aucs[-1]:.3f}")
        pr_ax.plot(recall, precision, color=colour, lw=1.8, drawstyle="steps-post",
                   label=f"{name}  AP {aps[-1]:.3f} (base {positive.mean():.3f})")
    if not aucs:
        raise ValueError("y_true holds a single class; ROC and precision-recall need cases and non-cases")
    roc_ax.plot([0, 1], [0, 1], ls="--", color=MISSING_COLOR, lw=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"ROC, one class vs rest (macro AUC {np.mean(aucs):.3f})")
    pr_ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
              title=f"precision-recall (macro AP {np.mean(aps):.3f})")
    for ax in (roc_ax, pr_ax):  # legends beside the axes: inside, they hid the curves of weak classes
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=9, frameon=False)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    note = f"; not in y_true (skipped): {', '.join(skipped)}" if skipped else ""
    fig.suptitle(f"{title + ': ' if title else ''}n = {len(y_true):,}{note}", fontsize=13)
    return fig


def calibration_bins(y_true, proba, n_bins=ECE_BINS):
    """Per equal-width bin of max-probability confidence: count, mean confidence, accuracy
    (NaN in empty bins), and the expected calibration error (ECE)."""
    y_true, proba = _check_predictions(y_true, proba)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    which = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, confidence, n_bins) / count
        accuracy = np.bincount(which, correct, n_bins) / count
    return {"edges": np.linspace(0, 1, n_bins + 1), "count": count, "confidence": mean_conf,
            "accuracy": accuracy, "ece": expected_calibration_error(y_true, proba, n_bins)}


def plot_reliability(y_true, proba, n_bins=ECE_BINS, title=None):
    """Reliability diagram: accuracy against confidence (the top class's probability) per
    bin, the gap to the diagonal shaded, and how many images fall in each bin below."""
    bins = calibration_bins(y_true, proba, n_bins)
    edges, count = bins["edges"], bins["count"]
    centres, width = (edges[:-1] + edges[1:]) / 2, 1 / n_bins
    filled = count > 0
    fig = _figure("reliability")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(centres[filled], bins["accuracy"][filled], width=width, color=CLASS_COLORS["NV"],
            edgecolor="white", label="accuracy")
    gap = bins["confidence"][filled] - bins["accuracy"][filled]
    top.bar(centres[filled], gap, bottom=bins["accuracy"][filled], width=width, facecolor="none",
            edgecolor=CLASS_COLORS["MEL"], hatch="///", lw=1.2, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], ls="--", color="black", lw=1, label="perfect calibration")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
            title=f"{title + chr(10) if title else ''}reliability, ECE {bins['ece']:.3f} "
                  f"({n_bins} bins, n = {count.sum():,})")
    top.legend(loc="upper left", fontsize=10)
    top.grid(alpha=0.3)
    bottom.bar(centres, count, width=width, color=MISSING_COLOR, edgecolor="white")
    bottom.set(xlabel="confidence (probability of the predicted class)", ylabel="images")
    bottom.grid(alpha=0.3)
    return fig


def plot_shifts(check, title=None):
    """BMCA and accuracy of one model clean and under each shift (a shift check or an
    evaluation: ``{"clean": {bmca, accuracy}, "shifts": {name: {...}}}``), the worst marked."""
    names = ["clean"] + list(check["shifts"])
    values = [check["clean"]] + list(check["shifts"].values())
    x = np.arange(len(names))
    fig = _figure("shifts")
    ax = fig.subplots()
    for offset, key, color in ((-0.2, "bmca", CLASS_COLORS["MEL"]), (0.2, "accuracy", CLASS_COLORS["NV"])):
        ax.bar(x + offset, [v[key] for v in values], width=0.4, color=color, label=key if key != "bmca" else "BMCA")
    worst = min(range(1, len(values)), key=lambda i: values[i]["bmca"]) if len(values) > 1 else 0
    ax.axhline(values[worst]["bmca"], color="black", lw=1, ls="--", label=f"worst BMCA ({names[worst]})")
    ax.set_xticks(x, names, rotation=40, ha="right")
    ax.set(ylim=(0, 1.12), ylabel="score", title=f"{title + ': ' if title else ''}clean and shifted images")
    ax.legend(loc="upper center", ncol=3, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_drift(summary, title=None):
    """A drift summary (``skinfeat.runs.drift``): the class mix the model predicts on the
    new images beside its training mix, and the distance of the images' mean features
    to the shift check's fold under each condition (nearest first; the band of ties
    with the nearest shaded)."""
    fig = _figure("drift")
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.3))
    mix = summary["class_mix"]
    x = np.arange(len(mix))
    left.bar(x - 0.2, [r["predicted"] for r in mix], 0.4, color=[CLASS_COLORS[r["class"]] for r in mix],
             label="predicted on the new images")
    left.bar(x + 0.2, [r["training"] or 0 for r in mix], 0.4, color=MISSING_COLOR, label="training images")
    left.set_xticks(x, [r["class"] for r in mix])
    left.set(ylabel="share of images", title=f"class mix, n = {summary['n']:,}")
    left.legend(fontsize=9)
    left.grid(alpha=0.3, axis="y")
    rows = summary["resembles"]
    if rows:
        y = np.arange(len(rows))[::-1]
        right.barh(y, [r["distance"] for r in rows], color=[CLASS_COLORS["NV"]] + [MISSING_COLOR] * (len(rows) - 1))
        right.set_yticks(y, [r["shift"] for r in rows], fontsize=8)
        right.axvspan(rows[0]["distance"], rows[0]["distance"] + summary["tie"], color=CLASS_COLORS["MEL"],
                      alpha=0.15, label="tied with the nearest")
        right.legend(fontsize=8, loc="lower right")
    right.set(xlabel="distance of the mean features (whitened)",
              title=f"look most like: {summary['nearest'] or '-'}\n{summary['unusual']['share']:.0%} flagged unusual")
    right.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title)
    return fig


def plot_label_efficiency(points, title=None):
    """BMCA against the share of training labels (log scale), each point with its 95 %
    interval: ``points`` [(fraction, mean training images, BMCA, low, high)]."""
    points = sorted(points)
    if not points:
        raise ValueError("no point: nothing to plot")
    fig = _figure("efficiency")
    ax = fig.subplots()
    x = np.array([p[0] for p in points])
    y = np.array([p[2] for p in points])
    err = np.array([[p[2] - p[3], p[4] - p[2]] for p in points]).T
    ax.errorbar(x, y, yerr=err, marker="o", capsize=4, color=CATEGORY_COLORS[0], label="BMCA, 95% interval")
    for fraction, images, bmca, _, _ in points:
        ax.annotate(f"{images:,.0f} images", (fraction, bmca), textcoords="offset points", xytext=(6, -14),
                    fontsize=9)
    ax.set_xscale("log")
    ax.set(xlabel="share of the training lesions", ylabel="BMCA (mean over folds)", ylim=(0, 1),
           title=f"{title + ': ' if title else ''}label efficiency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=10)
    return fig


def plot_history(history, best_epoch=None, title=None):
    """A fine-tuning run's history (``skinfeat finetune``): training loss and
    validation BMCA per epoch, the kept (best) epoch marked."""
    if not history:
        raise ValueError("no epoch in the history: nothing to plot")
    fig = _figure("history")
    loss_ax, bmca_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", color=CATEGORY_COLORS[0])
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss (augmented images)")
    bmca_ax.plot(epochs, [h["val_bmca"] for h in history], marker="o", color=CATEGORY_COLORS[1], label="BMCA")
    bmca_ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color=CATEGORY_COLORS[2],
                 label="accuracy")
    if best_epoch is not None:
        bmca_ax.axvline(best_epoch, color="black", lw=1, ls="--", label=f"kept: epoch {best_epoch}")
    bmca_ax.set(xlabel="epoch", ylabel="score", ylim=(0, 1), title="validation part (clean images)")
    bmca_ax.legend(loc="best", fontsize=10)
    for ax in (loss_ax, bmca_ax):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    return fig
