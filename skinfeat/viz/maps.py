"""A map of a feature file, coloured by class, a metadata column or the folds.

    from skinfeat.viz.maps import feature_map
    result = feature_map("features/x.h5", method="umap", color="localization", out="map.png")

The coordinates come from the cache (:func:`skinfeat.viz.embed.embedding_for`),
so drawing the same map with another colour or file name costs only the drawing.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinfeat.core.classes import UNLABELLED
from skinfeat.core.errors import DataError, UsageError
from skinfeat.data.metadata import MISSING
from skinfeat.data.split import read_folds
from skinfeat.features.store import read_features
from skinfeat.viz.embed import embedding_for, get_method
from skinfeat.viz.plots import plot_embedding, save_figure

TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
KNOWN_COLORS = ("class", "dx_type", "localization", "sex", "age", "fold")


@dataclass
class MapResult:
    embedding: object  # skinfeat.viz.embed.Embedding
    figure: object  # matplotlib Figure
    out: Path | None
    notes: list = field(default_factory=list)  # things the user should know, one line each


def _by_class(fs, folds, notes):
    unlabelled = int((fs.labels == UNLABELLED).sum())
    if unlabelled == len(fs):
        raise UsageError(f"{fs.path} holds unlabelled features (all {len(fs):,} labels are -1), so "
                         f"there is no class to colour by; use --color with {_choices(fs, with_class=False)}")
    if unlabelled:
        notes.append(f"{unlabelled:,} of {len(fs):,} images are unlabelled: drawn grey")
    return fs.labels, "class"


def _by_fold(fs, folds, notes):
    if folds is None:
        raise UsageError("--color fold needs --folds FOLDS.csv (written by 'skinfeat data split')")
    if not isinstance(folds, dict):
        folds = read_folds(folds)
    found = [folds.get(str(i)) for i in fs.image_ids]
    missing = sum(f is None for f in found)
    if missing == len(fs):
        raise DataError(f"none of the {len(fs):,} images of {fs.path} is in the folds file; expected "
                        "the folds of the dataset these features were extracted from")
    if missing:
        notes.append(f"{missing:,} of {len(fs):,} images are not in the folds file: drawn grey")
    names = ["not in folds" if f is None else "held out" if f < 0 else f"fold {f}" for f in found]
    return np.asarray(names), "category"


COLORINGS = {"class": _by_class, "fold": _by_fold}


def _choices(fs, with_class=True):
    columns = ", ".join(sorted(fs.metadata)) or "none: this file has no metadata columns"
    return f"{'class, ' if with_class else ''}fold (with --folds) or a metadata column of this file ({columns})"


def color_values(fs, color, folds=None, notes=None):
    """``(values [N], kind)`` to colour the rows of FeatureSet ``fs`` by: class indices
    (``kind="class"``), floats of a column whose values are all numbers, such as age
    (``"numeric"``, NaN where missing), or strings (``"category"``). ``folds``: a folds file or
    ``{image_id: fold}``, for ``color="fold"``."""
    notes = [] if notes is None else notes
    if color in COLORINGS:
        return COLORINGS[color](fs, folds, notes)
    if color not in fs.metadata:
        raise UsageError(f"cannot colour by {color!r}: {fs.path} has no such column; choose {_choices(fs)}")
    values = np.asarray(fs.metadata[color], dtype=str)
    numbers = _numbers(values)
    if numbers is not None:  # age: a colour scale, not one colour per value
        missing = int(np.isnan(numbers).sum())
        if missing:
            notes.append(f"{missing:,} of {len(fs):,} images have no {color}: drawn grey")
        return numbers, "numeric"
    return values, "category"


def _numbers(values):
    """``values`` as floats (NaN where missing) when every given one is a number, else None."""

    given = [v for v in values if v.strip().lower() not in MISSING]
    try:
        [float(v) for v in given]
    except ValueError:
        return None
    if not given:
        return None
    return np.array([float(v) if v.strip().lower() not in MISSING else np.nan for v in values])


def default_out(features_path, method, color):
    """``<features file stem>__<method>-<color>.png`` in the current folder."""
    return Path(f"{Path(features_path).stem}__{method}-{color}.png")


def feature_map(features, method="umap", color="class", folds=None, subsample=None, seed=0,
                out=None, cache_dir=None, **params):
    """Map a features file (path or FeatureSet) to 2-D, colour it and, with ``out``, save the PNG."""

    get_method(method)
    fs = read_features(features, with_views=False) if isinstance(features, (str, Path)) else features
    notes = []
    values, kind = color_values(fs, color, folds, notes)  # bad colours fail before the slow part
    if folds is not None and color != "fold":
        notes.append("--folds is only used with --color fold")
    if subsample is not None and subsample >= len(fs):
        notes.append(f"--subsample {subsample:,} is not below the {len(fs):,} images in the file: using all")
    emb = embedding_for(fs, method, subsample, seed, cache_dir, **params)
    shown = f"{len(emb.indices):,} of {len(fs):,} images (seed {seed})" if len(emb.indices) < len(fs) \
        else f"{len(fs):,} images"
    title = f"{TITLES[method]} of {shown}, {fs.module} features, by {color}"
    fig = plot_embedding(emb.coords, values[emb.indices], kind=kind, title=title,
                         axis_labels=emb.axis_labels, legend_title=color)
    if out is not None:
        out = save_figure(fig, out)
    return MapResult(emb, fig, out, notes)
