"""The manifest: one row per image (id, path, class index, lesion id, metadata),
and the problems found while building it."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinfeat.core.classes import CLASSES, UNLABELLED

LAYOUTS = ("ham10000", "isic2018", "class-folders", "unlabelled")
METADATA_COLUMNS = ("dx_type", "age", "sex", "localization")

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """Something wrong with the data: ``level`` is ``error`` (the data needs
    fixing: ``data check`` exits 1) or ``warning`` (usable as it is)."""

    level: str
    message: str
    where: str = ""  # "file:line" or a path; empty when it concerns the whole dataset

    def __str__(self):
        where = f"{self.where}: " if self.where else ""
        return f"{self.level}: {where}{self.message}"


def error(message, where=""):
    return Problem(ERROR, message, str(where))


def warning(message, where=""):
    return Problem(WARNING, message, str(where))


@dataclass
class Manifest:
    """Images of a dataset in a fixed order, never their pixels.

    ``labels`` index :data:`skinfeat.core.classes.CLASSES` (``-1`` when unlabelled);
    ``lesion_ids`` is the image id where no grouping is known; ``metadata``
    holds the extra columns present (dx_type, age, sex, localization), one value
    per image. ``sources`` names the files and folders it was read from.
    """

    image_ids: list
    paths: list
    labels: np.ndarray
    lesion_ids: list
    layout: str
    metadata: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int8)
        n = len(self.image_ids)
        lengths = {"paths": len(self.paths), "labels": len(self.labels), "lesion_ids": len(self.lesion_ids)}
        lengths.update({f"metadata[{k!r}]": len(v) for k, v in self.metadata.items()})
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"manifest columns differ in length: {n} image_ids but {bad}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {LAYOUTS}")

    def __len__(self):
        return len(self.image_ids)

    def subset(self, indices):
        """The manifest of the images at ``indices`` (ints or a boolean mask), in that order."""
        idx = np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(int).reshape(-1)
        pick = lambda values: [values[i] for i in idx]  # noqa: E731
        return Manifest(
            image_ids=pick(self.image_ids),
            paths=pick(self.paths),
            labels=self.labels[idx],
            lesion_ids=pick(self.lesion_ids),
            layout=self.layout,
            metadata={k: pick(v) for k, v in self.metadata.items()},
            problems=list(self.problems),
            sources=dict(self.sources),
        )

    @property
    def labelled(self):
        """True when every image has a class."""
        return bool(len(self)) and bool((self.labels != UNLABELLED).all())

    def class_counts(self):
        """``{class name: number of images}`` in CLASSES order."""
        counts = np.bincount(self.labels[self.labels >= 0].astype(int), minlength=len(CLASSES))
        return dict(zip(CLASSES, counts.tolist()))

    def errors(self):
        return [p for p in self.problems if p.level == ERROR]


def content_hashes(manifest):
    """The sha256 (hex) of each row's file bytes; "unreadable:ERRNO" where it cannot be read."""
    hashes = []
    for path in manifest.paths:
        try:
            hashes.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        except OSError as exc:
            hashes.append(f"unreadable:{exc.errno}")
    return hashes
