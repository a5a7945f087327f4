"""ISIC-format prediction files (``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``, one row
of probabilities per image) read and checked against a labels file, for
``skinfeat evaluate --predictions CSV --labels CSV``.

Labels come from either layout skinfeat reads: HAM10000 metadata (image_id, dx)
or ISIC 2018 one-hot ground truth (image, MEL, ..., VASC). No image is opened.
"""

import numpy as np

from skinfeat.core.classes import CLASSES, class_index
from skinfeat.core.errors import DataError
from skinfeat.data.csvfile import read_table
from skinfeat.data.layouts import csv_kind, image_id_of, one_hot

SUM_TOLERANCE = 1e-3  # rows of probabilities must sum to 1 within this
_SHOWN = 5


def _listed(ids):
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(ids[:_SHOWN]) + more


def read_labels(path):
    """``{image id: CLASSES index}`` of a HAM10000 metadata or ISIC 2018 one-hot CSV."""
    kind = csv_kind(path)
    table = read_table(path)
    labels, bad = {}, []
    if kind == "ham10000":
        image_col = table.require("image_id", "the image file name without extension")
        dx_col = table.require("dx", f"the diagnosis, one of {', '.join(CLASSES)}")
        for line, row in table.rows:
            label = class_index(row[dx_col])
            (bad.append(f"line {line}: {row[dx_col]!r}") if label is None
             else labels.__setitem__(image_id_of(row[image_col]), label))
    elif kind == "isic2018":
        image_col = table.require("image", "the image file name without extension")
        columns = [table.require(name, f"the one-hot column of class {name}") for name in CLASSES]
        for line, row in table.rows:
            label, complaint = one_hot(row, columns)
            (bad.append(f"line {line}: {complaint}") if complaint
             else labels.__setitem__(image_id_of(row[image_col]), label))
    else:
        raise DataError(f"--labels {path}: columns {', '.join(table.columns) or '(none)'}; expected HAM10000 "
                        f"metadata (image_id,dx,...) or ISIC 2018 one-hot ground truth (image,{','.join(CLASSES)})")
    if bad:
        raise DataError(f"--labels {path}: {len(bad)} rows whose label is not one of the seven classes "
                        f"{', '.join(CLASSES)} ({_listed(bad)}); fix them or remove the rows")
    if not labels:
        raise DataError(f"--labels {path} has no labelled rows; expected one row per image")
    return labels


def read_predictions(path, labels):
    """(image ids, probabilities [n, 7] in CLASSES order, CLASSES indices [n]) of the
    prediction file at ``path``, in the labels' image order. DataError, saying which
    rows, for missing columns, non-numbers, rows not summing to 1, duplicates, and
    images missing from either file."""
    table = read_table(path)
    if table.problems and any(p.level == "error" for p in table.problems):
        first = next(p for p in table.problems if p.level == "error")
        raise DataError(f"--predictions {path}: {first.message} ({first.where})")
    image_col = table.require("image", "the image id of each row")
    columns = [table.require(name, f"the probability of class {name}") for name in CLASSES]
    rows, bad_numbers, bad_sums, duplicates = {}, [], [], []
    for line, row in table.rows:
        image_id = image_id_of(row[image_col])
        try:
            p = np.array([float(row[c]) for c in columns])
        except ValueError:
            bad_numbers.append(f"line {line}")
            continue
        if not np.all(np.isfinite(p)) or p.min() < 0 or abs(p.sum() - 1) > SUM_TOLERANCE:
            bad_sums.append(f"line {line} ({image_id}: sum {p.sum():.4g})")
        if image_id in rows:
            duplicates.append(image_id)
        rows[image_id] = p
    where = f"--predictions {path}"
    if bad_numbers:
        raise DataError(f"{where}: {len(bad_numbers)} rows with values that are not numbers ({_listed(bad_numbers)}); "
                        f"expected probabilities in columns {', '.join(CLASSES)}")
    if bad_sums:
        raise DataError(f"{where}: {len(bad_sums)} rows whose probabilities are not >= 0 or do not sum to 1 "
                        f"within {SUM_TOLERANCE:g} ({_listed(bad_sums)}); expected one probability per class, "
                        "summing to 1 (`skinfeat predict --format isic` writes such a file)")
    if duplicates:
        raise DataError(f"{where}: {len(duplicates)} images appear more than once ({_listed(duplicates)}); "
                        "expected one row per image")
    missing = [i for i in labels if i not in rows]
    extra = [i for i in rows if i not in labels]
    if missing:
        raise DataError(f"{where} has no row for {len(missing)} of the {len(labels)} labelled images "
                        f"({_listed(missing)}); expected a prediction for every image of --labels")
    if extra:
        raise DataError(f"{where} has {len(extra)} images that --labels does not list ({_listed(extra)}); "
                        "expected the same images as the labels file: remove them or use the matching labels")
    ids = list(labels)
    proba = np.stack([rows[i] for i in ids])
    return ids, proba / proba.sum(axis=1, keepdims=True), np.array([labels[i] for i in ids])
