"""Figures of ``skinfeat explain``: one image with its map and top classes, and a
contact sheet of many images with their maps, true and predicted classes."""

import textwrap

import numpy as np

from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.viz.plots import CLASS_COLORS

TITLES = {"occlusion": "occlusion sensitivity:\nwhere grey patches lower P({})",
          "gradient": "input gradient (SmoothGrad):\npixels that change P({}) most",
          "gradcam": "Grad-CAM (last convolutional map):\nwhere the evidence for {} lies"}
# What the map's 1 stands for (the colour bar's label), per method.
UNITS = {"occlusion": "drop of P", "gradient": "|d log P / d pixel|", "gradcam": "log P per map cell"}
CMAP = "inferno"


def _label(index):
    code = CLASSES[index]
    return "\n".join(textwrap.wrap(f"{FULL_NAMES[code]} ({code})", 20))


def draw_overlay(ax, image, saliency):
    """``image`` with ``saliency`` ([H, W] in [0, 1]) over it; unimportant parts stay visible."""
    import matplotlib

    overlay = matplotlib.colormaps[CMAP](saliency)
    overlay[..., 3] = 0.1 + 0.75 * saliency
    ax.imshow(image)
    ax.imshow(overlay)
    ax.set_xticks([])
    ax.set_yticks([])


def _colorbar(fig, ax, label, peak, **kwargs):
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(0, peak), matplotlib.colormaps[CMAP]), ax=ax,
                 label=label, **kwargs)


def plot_explanation(result, top_k=3):
    """Figure: the model input, the saliency over it, the top classes' probabilities."""
    from matplotlib.figure import Figure


    fig = Figure(figsize=(13, 4.6), dpi=100, layout="constrained")
    left, middle, right = fig.subplots(1, 3, width_ratios=(1, 1.15, 0.9))
    h, w = result.image.shape[:2]
    left.imshow(result.image)
    left.set_title(f"{result.image_id}\nmodel input, {w}x{h}", fontsize=11)
    left.set_xticks([])
    left.set_yticks([])
    draw_overlay(middle, result.image, result.saliency)
    _colorbar(fig, middle, UNITS[result.method], result.peak, shrink=0.85)
    code = CLASSES[result.target]
    middle.set_title(TITLES[result.method].format(code), fontsize=11)
    order = np.argsort(-result.proba)[:top_k][::-1]
    bars = right.barh([_label(i) for i in order], result.proba[order],
                      color=[CLASS_COLORS[CLASSES[i]] for i in order])
    right.bar_label(bars, labels=[f"{result.proba[i]:.3f}" for i in order], padding=3)
    right.set_xlim(0, 1.2)
    right.set_xticks([0, 0.25, 0.5, 0.75, 1])
    right.set_xlabel("probability")
    right.set_title(f"top {top_k} classes", fontsize=11)
    best = int(np.argmax(result.proba)) if result.decision is None else result.decision
    fig.suptitle(f"decision: {FULL_NAMES[CLASSES[best]]} ({CLASSES[best]}) {result.proba[best]:.3f}"
                 + (f"; explained: {FULL_NAMES[code]} ({code})" if result.target != best else ""),
                 fontsize=14)
    return fig


def plot_sheet(sheet, columns=6):
    """Contact sheet of a :class:`skinfeat.apps.explain.Sheet`: one cell per image (its map
    over it, scaled to its own peak, which the cell shows beside its border share; id,
    true and predicted class, green when right, red when wrong), one row per class
    with ``per_class``."""
    from matplotlib.figure import Figure

    cells = sheet.cells
    if sheet.per_class:
        rows = [[c for c in cells if c.true == k] for k in sorted({c.true for c in cells})]
        columns = max(len(r) for r in rows)
    else:
        columns = min(columns, len(cells))
        rows = [cells[i:i + columns] for i in range(0, len(cells), columns)]
    fig = Figure(figsize=(2.3 * columns + 1.2, 2.55 * len(rows) + 0.9), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), columns, squeeze=False))
    for r, row in enumerate(rows):
        for k in range(columns):
            ax = axes[r, k]
            if k >= len(row):
                ax.axis("off")
                continue
            cell = row[k]
            draw_overlay(ax, cell.image, cell.saliency)
            true = CLASSES[cell.true] if cell.true >= 0 else "?"
            right = cell.true == cell.predicted
            ax.set_title(f"{cell.image_id}\ntrue {true} · pred {CLASSES[cell.predicted]} {cell.proba:.2f}",
                         fontsize=8.5, color="black" if cell.true < 0 else ("#1a7f37" if right else "#c62828"))
            ax.set_xlabel(f"peak {cell.peak:.3g} · border {cell.border:.0%}", fontsize=8)
    # Two lines: on a one-row sheet the bar is short, and one line of label was clipped.
    _colorbar(fig, axes[:, -1].tolist(), f"{UNITS[sheet.method]},\nrelative to each map's peak", 1.0, shrink=0.6)
    width = int(fig.get_figwidth() * 11)  # characters of the title that fit across the sheet
    fig.suptitle("\n".join(textwrap.wrap(f"{sheet.title}: {TITLES[sheet.method].splitlines()[0].rstrip(':')} of the "
                                          "predicted class", width)
                           + textwrap.wrap(f"{sheet.border:.0%} of the maps' mass lies on the outer {sheet.band:.1%} "
                                           f"of each side ({sheet.band_area:.0%} of the image)", width)), fontsize=10)
    return fig
