"""Lesion-grouped folds for the rows of a features file: read from a folds file
(``skinfeat data split``) or made with ``make_folds(k=5, seed=0)``, checked (every lesion
in one fold, enough images of each class), and, for features of a fine-tuned
backbone, the folds it never saw (``unseen_folds``).
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import DataError, FeaturesError
from skinfeat.data.split import make_folds, read_folds

DEFAULT_K = 5


DEFAULT_SEED = 0


@dataclass
class Folds:
    """A fold per row of a FeatureSet (-1: not used), and where it came from."""

    fold: np.ndarray
    source: str
    k: int
    sha256: str

    def describe(self):
        return {"source": self.source, "k": self.k, "sha256": self.sha256,
                "n_used": int((self.fold >= 0).sum()), "n_unused": int((self.fold < 0).sum())}


def folds_hash(image_ids, fold):
    """SHA-256 of the sorted "image_id<TAB>fold" lines of the rows in a fold (fold >= 0)."""
    fold = np.asarray(fold)
    used = fold >= 0
    ids = np.asarray(image_ids, dtype=str)[used]
    lines = sorted(np.char.add(np.char.add(ids, "\t"), fold[used].astype(np.int64).astype(str)).tolist())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def resolve_folds(fs, folds_path=None, k=None, seed=DEFAULT_SEED):
    """Folds for the labelled rows of ``fs``: read from ``folds_path`` or made with
    ``make_folds(k or 5, seed)``. Raises DataError when the file does not cover the
    features' images, splits a lesion, or a class has fewer images than folds."""

    labelled = fs.labels >= 0
    if not labelled.any():
        raise FeaturesError(f"features file {fs.path} has no labelled images (all {len(fs)} are unlabelled); "
                            "fitting needs labels: extract features of a labelled dataset (HAM10000 "
                            "metadata, ISIC ground truth or class folders)")
    if folds_path is not None:
        mapping = read_folds(folds_path)
        missing = [i for i in fs.image_ids[labelled] if i not in mapping]
        if missing:
            raise DataError(
                f"folds file {folds_path} has no fold for {len(missing)} of the {int(labelled.sum())} "
                f"labelled images in {fs.path} (e.g. {', '.join(missing[:3])}); expected a folds file "
                "of the same dataset: write one with `skinfeat data split --out FILE` for it, "
                "or leave out --folds")
        fold = np.array([mapping.get(i, -1) for i in fs.image_ids], dtype=int)
        fold[~labelled] = -1
        source = str(folds_path)
        _check_lesions(fs, fold, folds_path)
    else:
        k = DEFAULT_K if k is None else int(k)
        fold = np.full(len(fs), -1, dtype=int)
        fold[labelled] = make_folds(_Labelled(fs, labelled), k=k, seed=seed)
        source = f"make_folds(k={k}, seed={seed})"
    used = np.unique(fold[fold >= 0])
    if not len(used):
        raise DataError(f"folds file {folds_path} holds out every one of the {int(labelled.sum())} labelled images "
                        f"of {fs.path} (fold -1), so there is nothing to cross-validate; expected images in at "
                        "least 2 folds: write one with `skinfeat data split --folds 5 --out FILE`, or leave out --folds")
    folds = Folds(fold, source, len(used), folds_hash(fs.image_ids, fold))
    present = np.unique(fs.labels[fold >= 0])
    if len(present) < 2:
        raise FeaturesError(f"every image of {fs.path} that takes part in the folds is {CLASSES[present[0]]}; "
                            "a classifier needs at least two classes: extract features of a dataset "
                            "with more classes" + (" or use another folds file" if folds_path else ""))
    check_class_counts(fs.labels[fold >= 0], folds.k, folds_path is not None)
    return folds


class _Labelled:
    """The labelled rows of a FeatureSet, shaped as make_folds expects a manifest."""

    def __init__(self, fs, rows):
        self.labels, self.lesion_ids, self.image_ids = fs.labels[rows], fs.lesion_ids[rows], fs.image_ids[rows]

    def __len__(self):
        return len(self.labels)


def _check_lesions(fs, fold, path):
    seen = {}
    for lesion, f in zip(fs.lesion_ids, fold):
        if f >= 0 and seen.setdefault(lesion, f) != f:
            raise DataError(f"folds file {path} puts lesion {lesion} in folds {seen[lesion]} and {f}; "
                            "expected every lesion in one fold (a split leak inflates scores): "
                            "rewrite it with `skinfeat data split`")


THIN = 5  # fewer test images of a class than this in some fold: its recall there moves in steps of 0.2 or more


def thin_classes(labels, fold):
    """A note when some fold tests fewer than THIN images of a class (per-class recall,
    and so BMCA, is then noise), naming the thinnest; None when every fold has enough."""
    labels, fold = np.asarray(labels), np.asarray(fold)
    worst = None
    for f in np.unique(fold[fold >= 0]):
        counts = np.bincount(labels[(fold == f) & (labels >= 0)].astype(int), minlength=len(CLASSES))
        for c in np.flatnonzero((counts < THIN) & (np.bincount(labels[labels >= 0].astype(int),
                                                                minlength=len(CLASSES)) > 0)):
            if worst is None or counts[c] < worst[2]:
                worst = (int(f), CLASSES[c], int(counts[c]))
    if worst is None:
        return None
    return (f"note: fold {worst[0]} tests {worst[2]} {worst[1]} image{'s' * (worst[2] != 1)} (fewer than {THIN} of "
            "a class in some fold): its recall, and so BMCA, moves in big steps; the interval says how much: "
            "use more images or fewer folds for figures to compare")


def check_class_counts(labels, k, from_file=False):
    """DataError when a class has images but fewer than ``k`` (some folds would lack it)."""
    if k < 2:
        raise DataError(f"the folds hold {k} fold; cross-validation needs at least 2: "
                        "pass --cv 5 or a folds file from `skinfeat data split --folds 5`")
    counts = np.bincount(labels.astype(int), minlength=len(CLASSES))
    few = [(CLASSES[c], int(n)) for c, n in enumerate(counts) if 0 < n < k]
    if few:
        listed = ", ".join(f"{name} has {n}" for name, n in few)
        fix = ("write a folds file with fewer --folds" if from_file else
               f"use --cv {max(2, min(n for _, n in few))} or fewer")
        raise DataError(f"{listed} labelled image(s), fewer than the {k} folds, so some test folds "
                        f"would have none; {fix}, or add images of that class")


def unseen_folds(fs, folds):
    """The folds to score: every fold, or for features of a fine-tuned backbone only
    those none of whose images it was trained on; None when it was not fine-tuned.
    DataError when it saw images of every fold."""
    seen = fs.trained_on
    if seen is None:
        return None
    every = [int(f) for f in np.unique(folds.fold[folds.fold >= 0])]
    unseen = [f for f in every if not seen[folds.fold == f].any()]
    if not unseen:
        counts = ", ".join(f"fold {f}: {int(seen[folds.fold == f].sum())}" for f in every)
        raise DataError(
            f"{fs.path} holds features of {fs.module}, which was fine-tuned on {int(seen.sum())} of these "
            f"images, and every fold of {folds.source} holds some of them ({counts}); scoring a fold "
            "it learnt would inflate the figures: pass --folds with the folds file it was fine-tuned "
            "with (its held-out fold is unseen), or fine-tune with --fold K instead of --all")
    return unseen

