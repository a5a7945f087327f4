"""What ``skinfeat data check`` looks for beyond the manifest's own problems:
images that extract and predict cannot read (:func:`skinfeat.imaging.images.decode`:
unreadable, truncated, empty, of degenerate size, decompression bombs),
byte-identical files under two ids, and lesions whose images carry different
labels; plus the summary it prints."""

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from skinfeat.core.classes import CLASSES, UNLABELLED
from skinfeat.core.progress import bar
from skinfeat.data.manifest import ERROR, error, warning
from skinfeat.data.split import lesion_labels
from skinfeat.imaging.images import FileError, decode, read_file

MISSING_VALUES = ("", "unknown", "nan", "na", "n/a", "none")


def scan_image(path):
    """``(sha1 of the bytes, None)`` for a readable image (:func:`skinfeat.imaging.images.decode` decodes
    it completely), else ``(the sha1 or None, a FileError saying what is wrong)``."""
    try:
        data = read_file(path)
    except FileError as exc:
        return None, exc
    digest = hashlib.sha1(data).hexdigest() if data else None
    try:
        decode(data)
    except FileError as exc:
        return digest, exc
    return digest, None


def check_images(manifest, progress=False, workers=None):
    """Problems found by decoding every image of ``manifest`` (threads: PIL and
    hashlib release the GIL): broken files, and byte-identical files under two ids."""
    problems, by_digest = [], {}
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        results = pool.map(scan_image, manifest.paths)
        for i, (digest, complaint) in enumerate(bar(results, progress, total=len(manifest), unit="img",
                                                     desc="checking images", leave=False)):
            if complaint:
                problems.append(error(f"image {manifest.image_ids[i]} {complaint.detail}", manifest.paths[i]))
            if digest:
                by_digest.setdefault(digest, []).append(i)
    for same in by_digest.values():
        if len(same) > 1:
            problems.append(_duplicate_problem(manifest, same))
    return problems


def _duplicate_problem(manifest, same):
    ids = ", ".join(f"{manifest.image_ids[i]} (lesion {manifest.lesion_ids[i]}, {_name(manifest.labels[i])})"
                    for i in same)
    one_lesion = len({manifest.lesion_ids[i] for i in same}) == 1
    one_label = len({int(manifest.labels[i]) for i in same}) == 1
    if one_lesion and one_label:
        return warning(f"byte-identical files under ids {ids}: the photo counts twice, in one fold; "
                       "delete all but one", manifest.paths[same[1]])
    return error(f"byte-identical files under ids {ids}: the same photo "
                 f"{'carries different labels' if not one_label else 'can land in two folds'}; "
                 "delete all but one, or give them one lesion_id", manifest.paths[same[1]])


def _name(label):
    return CLASSES[label] if label >= 0 else "unlabelled"


def lesion_problems(manifest):
    """A warning for each lesion whose images carry different labels (splits use the majority)."""
    problems = []
    lesions, majority, members = lesion_labels(manifest)
    for lesion, label, idx in zip(lesions, majority, members):
        labels = Counter(int(x) for x in manifest.labels[idx] if x != UNLABELLED)
        if len(labels) > 1:
            shown = ", ".join(f"{_name(c)} x{n}" for c, n in sorted(labels.items()))
            problems.append(warning(f"lesion {lesion} has images with different labels ({shown}); "
                                    f"splits treat it as {_name(label)} (the majority): check its labels"))
    return problems


def check_dataset(manifest, pixels=True, progress=False, workers=None):
    """Every problem of ``manifest``, errors first: those found while building it,
    mixed-label lesions, and (``pixels``) broken or duplicated image files."""
    problems = list(manifest.problems) + lesion_problems(manifest)
    if pixels:
        problems += check_images(manifest, progress=progress, workers=workers)
    return sorted(problems, key=lambda p: p.level != ERROR)


def summarize(manifest):
    """Counts for the check report: images, lesions, per-class images, metadata coverage (0..1)."""
    coverage = {name: float(np.mean([v.strip().lower() not in MISSING_VALUES for v in values]))
                for name, values in manifest.metadata.items()}
    return {
        "layout": manifest.layout,
        "sources": dict(manifest.sources),
        "images": len(manifest),
        "lesions": len(set(manifest.lesion_ids)),
        "unlabelled": int((manifest.labels == UNLABELLED).sum()),
        "classes": manifest.class_counts(),
        "metadata_coverage": coverage,
    }
