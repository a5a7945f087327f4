"""Lesion-grouped, class-stratified folds, and the folds file every later
command reads so that all backbones and heads are scored on the same split.

Why not sklearn's ``StratifiedGroupKFold``: it has no held-out part. The greedy
assignment below puts each lesion (largest first, ties in seeded random order)
into the part that lacks most of the lesion's class, relative to that part's
share; on HAM10000 every class of 100+ images stays within a fraction of a
percentage point of its overall proportion in every part.

The folds file is a CSV ``image_id,lesion_id,label,fold``: ``label`` is the
class name (empty when unlabelled), ``fold`` is ``0..K-1``, or ``-1`` for the
held-out part. :func:`read_folds` refuses any other fold value.
"""

import csv
import re

import numpy as np

from skinfeat.core.atomic import write_atomically
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import DataError, UsageError
from skinfeat.data.csvfile import read_table

HOLDOUT = -1
FOLDS_COLUMNS = ("image_id", "lesion_id", "label", "fold")


def lesion_labels(manifest):
    """``(lesion ids, their label, image indices of each)``: a lesion whose images
    disagree takes its majority label (ties: the first class in CLASSES order)."""
    members = {}
    for i, lesion in enumerate(manifest.lesion_ids):
        members.setdefault(lesion, []).append(i)
    lesions = list(members)
    labels = np.array([np.bincount(manifest.labels[members[les]] + 1).argmax() - 1 for les in lesions], dtype=int)
    return lesions, labels, [members[les] for les in lesions]


def make_folds(manifest, k=5, seed=0, holdout=0.0):
    """A part per image: ``0..k-1``, or ``-1`` for the held-out fraction
    ``holdout`` of the images. All images of a lesion share a part, and each
    part holds about its share of every class. Same inputs, same folds."""
    if not isinstance(k, (int, np.integer)) or k < 1 or (k < 2 and not holdout):
        raise UsageError(f"--folds {k}: expected an integer of at least 2 (or 1 together with --holdout)")
    if not 0.0 <= holdout < 1.0:
        raise UsageError(f"--holdout {holdout}: expected a fraction in [0, 1), e.g. 0.2")
    lesions, labels, members = lesion_labels(manifest)
    shares = np.full(k, (1.0 - holdout) / k)
    if holdout:
        shares = np.append(shares, holdout)
    if not len(lesions):  # fit passes the labelled images only
        raise DataError("the dataset has no labelled images, so there is nothing to split "
                        "into folds; label them: class folders (MEL/, nevus/, ...) or a HAM10000 / ISIC 2018 "
                        "labels CSV (`skinfeat data check` shows what was found)")
    if len(lesions) < len(shares):
        raise DataError(f"{len(lesions)} lesions cannot fill {len(shares)} parts; use fewer --folds")
    sizes = np.array([len(m) for m in members])
    rng = np.random.default_rng(seed)
    part_of_lesion = np.empty(len(lesions), dtype=int)
    totals = np.zeros(len(shares))
    for label in sorted(set(labels.tolist()), key=lambda c: -sizes[labels == c].sum()):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        idx = idx[np.argsort(-sizes[idx], kind="stable")]
        counts = np.zeros(len(shares))
        want = shares * sizes[idx].sum()
        rank = rng.permutation(len(shares))  # breaks exact ties without favouring part 0
        for lesion in idx:
            part = _neediest(want - counts, shares * sizes.sum() - totals, rank)
            part_of_lesion[lesion] = part
            counts[part] += sizes[lesion]
            totals[part] += sizes[lesion]
    folds = np.empty(len(manifest), dtype=int)
    for lesion, idx in enumerate(members):
        folds[idx] = part_of_lesion[lesion]
    folds[folds == k] = HOLDOUT
    return folds


def _neediest(gap, overall, rank):
    """The part with the largest gap for this class; then the largest overall gap; then the lowest rank."""
    best = np.flatnonzero(gap >= gap.max() - 1e-9)
    if len(best) > 1:
        best = best[overall[best] >= overall[best].max() - 1e-9]
    return best[np.argmin(rank[best])]


def fold_balance(labels, folds, min_count=100):
    """The largest gap, in percentage points, between a class's share of a part
    and its share of the whole, over classes with at least ``min_count`` images."""
    labels, folds = np.asarray(labels), np.asarray(folds)
    worst = 0.0
    for c in np.unique(labels):
        if (labels == c).sum() < min_count:
            continue
        whole = (labels == c).mean()
        for part in np.unique(folds):
            worst = max(worst, abs((labels[folds == part] == c).mean() - whole) * 100)
    return worst


def leaking_lesions(lesion_ids, folds):
    """Lesions whose images sit in more than one part (none, for folds made here)."""
    parts = {}
    for lesion, fold in zip(lesion_ids, folds):
        parts.setdefault(lesion, set()).add(int(fold))
    return sorted(lesion for lesion, p in parts.items() if len(p) > 1)


def merge_lesions(image_ids, lesion_ids, pairs, source):
    """``lesion_ids`` with every group of lesions that near-duplicate ``pairs`` (of image ids) link
    under one id, the group's smallest (union-find), so :func:`make_folds` keeps each group in one
    part. Pairs naming an image outside ``image_ids`` are ignored; DataError if all do."""
    lesion_of = dict(zip(image_ids, lesion_ids))
    known = [(lesion_of[a], lesion_of[b]) for a, b in pairs if a in lesion_of and b in lesion_of]
    if pairs and not known:
        raise DataError(f"{source}: none of its {len(pairs)} pairs names two images of this dataset; expected "
                        "the pairs file of this dataset's features ('skinfeat data duplicates --pairs-out')")
    parent = {}

    def root(lesion):
        while parent.get(lesion, lesion) != lesion:
            lesion = parent[lesion]
        return lesion

    for a, b in known:
        a, b = root(a), root(b)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(lesion) for lesion in lesion_ids]


def write_folds(path, manifest, folds):
    """Write the folds file atomically: a half-written file never appears under ``path``."""
    folds = np.asarray(folds)
    if len(folds) != len(manifest):
        raise DataError(f"got {len(folds)} folds for {len(manifest)} images; expected one fold per image")
    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FOLDS_COLUMNS)
        for image_id, lesion, label, fold in zip(manifest.image_ids, manifest.lesion_ids, manifest.labels, folds):
            writer.writerow((image_id, lesion, CLASSES[label] if label >= 0 else "", int(fold)))

    write_atomically(path, write)


def read_folds(path):
    """``{image id: fold}`` from a folds file written by :func:`write_folds` (``-1``: held out).

    DataError naming the file and lines for a row without an image id, an image
    listed twice, or a fold that is not an integer, below -1, or beyond a gap in
    ``0..K-1`` (so no row silently drops out of cross-validation). Images of the
    file that a features file lacks are ignored (features of part of a dataset);
    images of the features that the file lacks are an error where it is read
    (``skinfeat.data.folds.resolve_folds``)."""
    table = read_table(path)
    errors = [p for p in table.problems if p.level == "error"]
    if errors:
        raise DataError(f"{errors[0]}; expected a folds file written by 'skinfeat data split'")
    image_col = table.require("image_id", "written by 'skinfeat data split'")
    fold_col = table.require("fold", "written by 'skinfeat data split'")
    folds, lines, bad = {}, {}, {}
    for line, row in table.rows:
        image_id, value = row[image_col], row[fold_col]
        if not image_id:
            raise DataError(f"{path}:{line}: empty image_id; expected one row per image: "
                            f"{_REWRITE}")
        if image_id in folds:
            raise DataError(f"{path}:{line}: image {image_id} is listed twice (first on line {lines[image_id]}); "
                            f"expected one row per image: {_REWRITE}")
        folds[image_id], lines[image_id] = _fold_number(value), line
        if folds[image_id] is None:
            bad.setdefault(f"'{value[:20]}' (not an integer)", []).append(line)
    if not folds:
        raise DataError(f"{path}: no rows; expected one row per image: run 'skinfeat data split'")
    used = set(folds.values()) - {None}
    k = next(i for i in range(len(used) + 1) if i not in used)  # folds 0..k-1 are all there
    for value in sorted(used - set(range(-1, k))):
        bad[str(value)] = [lines[i] for i, f in folds.items() if f == value]  # below -1, or beyond a gap
    if bad:
        shown = "; ".join(f"fold {value} on line{'s' * (len(at) > 1)} {_lines(at)}"
                          for value, at in list(bad.items())[:_SHOWN])
        more = f"; and {len(bad) - _SHOWN} more values" if len(bad) > _SHOWN else ""
        expected = f"0..{k - 1} (its {k} folds" if k else "folds numbered from 0 (there is no fold 0"
        gap = f"; no fold {k}, so higher ones are out of range" if k and any(f > k for f in used) else ""
        raise DataError(f"{path}: {shown}{more}; expected {expected}{gap}) or -1 (held out): {_REWRITE}")
    return folds


_REWRITE = "rewrite the file with 'skinfeat data split'"
_SHOWN = 5  # values and lines listed in a message


def _fold_number(value):
    """The fold ``value`` names as an int, or None when it is not a plain integer."""
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else None


def _lines(lines):
    return ", ".join(map(str, lines[:_SHOWN])) + (f" and {len(lines) - _SHOWN} more" if len(lines) > _SHOWN else "")
