"""Near-duplicate images by the cosine similarity of their features.

HAM10000 holds several images per lesion, and copies of one image under two
lesion ids (or in both a training and a test set) inflate every score. The
search is exact: the unit-length feature rows of one set are multiplied by
those of the other (or of itself) ``BLOCK`` rows at a time in float32, and only
the pairs at or above the threshold are kept, so memory stays at the features
plus ``BLOCK`` x N similarities, never N x N::

    from skinfeat.data.duplicates import find_duplicates
    pairs = find_duplicates(read_features(path, with_views=False))   # self-search
    pairs = find_duplicates(train, test)                             # across two sets

The raw cosine and the default threshold were chosen by
``benchmarks/bench_duplicates.py`` (default backbone, HAM10000): centring
separates copies from other lesions worse at every threshold. At 0.975 it finds
every JPEG re-encode and 98.5 % of mirrored copies, but only 20-80 % of resized,
cropped or rotated ones (55 % overall; recall 1.0 would need 0.857, where 24
million pairs of different lesions qualify); HAM10000's self-search yields 20
pairs of different lesion ids, most of them one lesion photographed twice. The
full set (10,015 x 2,688) takes about 6 s.

``similarity="whitened"`` (``--similarity whitened``) compares PCA-whitened rows
(``whiten``, learnt from the reference set). With the axes learnt from the 10,015
images alone, 20 other-lesion pairs admit 100 % of re-encoded and resized copies,
92 % of cropped and 88 % of tilted ones (raw cosine: 100, 83, 41, 32 %); but its
threshold scales with the number of axes (one per 5 images): 0.3 suits 10,015
images and finds dozens of false pairs among 112, so it is not the default.

The pairs file (``--pairs-out``) is a CSV ``image_a, lesion_a, fold_a, image_b,
lesion_b, fold_b, similarity, verdict`` that ``skinfeat data split --duplicates``
reads to keep each group of near-duplicates in one fold.
"""

from dataclasses import dataclass

import numpy as np

from skinfeat.core.atomic import write_atomically
from skinfeat.core.errors import DataError, FeaturesError, UsageError
from skinfeat.data.csvfile import read_table

THRESHOLDS = {"whitened": 0.3, "raw": 0.975}  # the default --threshold of each --similarity (bench_duplicates)
DEFAULT_SIMILARITY = "raw"  # whitened: better on 10k images, but its threshold depends on the set size
DEFAULT_THRESHOLD = THRESHOLDS[DEFAULT_SIMILARITY]
IMAGES_PER_AXIS = 5  # whitening keeps one principal axis per 5 images: more, and noise axes swamp the copies
MIN_AXES = 20
BLOCK = 1024
MAX_PAIRS = 1_000_000  # more than this many pairs: the threshold finds resemblance, not copies
TOLERANCE = 1e-6  # float32 rounding: a row's similarity to an identical row is 1 +- a few ulp
SAME_BACKBONE = ("module", "module_fingerprint", "input_size", "resize")
PAIR_COLUMNS = ("image_a", "lesion_a", "fold_a", "image_b", "lesion_b", "fold_b", "similarity", "verdict")


@dataclass
class Pairs:
    """Pairs of rows (``a`` of the first set, ``b`` of the second or the same one), most similar first."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray

    def __len__(self):
        return len(self.a)


def check_threshold(threshold, similarity=DEFAULT_SIMILARITY):
    if not 0 < threshold <= 1:  # also refuses NaN
        raise UsageError(f"--threshold {threshold}: expected a cosine similarity in (0, 1], "
                         f"e.g. the default {THRESHOLDS[similarity]} of --similarity {similarity}")


def check_same_backbone(fs, other):
    """FeaturesError unless ``fs`` and ``other`` hold features of one backbone and preprocessing."""
    for key in SAME_BACKBONE:
        if fs.attrs.get(key) != other.attrs.get(key):
            raise FeaturesError(
                f"{fs.path} and {other.path} hold features of different backbones ({key} "
                f"{fs.attrs.get(key)!r} vs {other.attrs.get(key)!r}); similarities compare only features of "
                "one backbone: extract both datasets with the same --module, --resize and --size")
    if fs.feature_dim != other.feature_dim:
        raise FeaturesError(f"{fs.path} holds {fs.feature_dim} features per image but {other.path} holds "
                            f"{other.feature_dim}; expected features of one backbone: extract both datasets "
                            "with the same --module")


def _unit(x):
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # an all-zero row matches nothing
    return x


def whiten(sets, paths, block=BLOCK):
    """The rows of each of ``sets`` (float32 arrays of one width) centred on the mean row of the last
    (the reference: learning from the queries too would learn their copies' directions and scale
    them down) and projected onto its leading principal axes, one per ``IMAGES_PER_AXIS`` rows,
    each scaled to unit variance (PCA whitening): directions in which images of different lesions
    differ little then count as much as those in which they differ much."""
    n = len(sets[-1])
    if n < MIN_AXES * IMAGES_PER_AXIS:
        raise FeaturesError(f"{paths[-1]} holds {n:,} images: whitened similarity learns "
                            f"{MIN_AXES} axes or more from at least {MIN_AXES * IMAGES_PER_AXIS} images; pass "
                            f"--similarity raw (plain cosine, default threshold {THRESHOLDS['raw']})")
    axes = min(sets[0].shape[1], n // IMAGES_PER_AXIS)
    mean = sets[-1].sum(axis=0, dtype=np.float64) / n
    cov = np.zeros((len(mean), len(mean)))
    for start in range(0, n, block):  # in blocks of rows: memory stays at the features plus the covariance
        rows = sets[-1][start:start + block] - mean
        cov += rows.T @ rows
    variance, vectors = np.linalg.eigh(cov / n)  # ascending
    project = (vectors[:, -axes:] / np.sqrt(np.maximum(variance[-axes:], 1e-12))).astype(np.float32)
    return [(s - mean.astype(np.float32)) @ project for s in sets]


def find_duplicates(fs, other=None, threshold=None, similarity=DEFAULT_SIMILARITY, block=BLOCK):
    """Pairs of rows whose cosine similarity is at least ``threshold`` (default: that of
    ``similarity``), most similar first: within FeatureSet ``fs`` (each pair once, ``a < b``) or,
    with ``other``, between ``fs`` (``a``) and ``other`` (``b``). ``similarity`` "whitened"
    compares the rows after ``whiten`` (learnt from ``other``, else ``fs``), "raw" as they are."""
    threshold = THRESHOLDS[similarity] if threshold is None else threshold
    check_threshold(threshold, similarity)
    if other is not None:
        check_same_backbone(fs, other)
    sets = [s for s in (fs, other) if s is not None]
    rows = [s.features.copy() for s in sets] if similarity == "raw" else whiten([s.features for s in sets],
                                                                                [s.path for s in sets])
    x = _unit(rows[0])
    y = x if other is None else _unit(rows[1])
    found, count = [], 0
    for start in range(0, len(x), block):
        first = start if other is None else 0  # self-search: only the columns right of the diagonal
        sims = x[start:start + block] @ y[first:].T
        rows, cols = np.nonzero(sims >= threshold - TOLERANCE)
        if other is None:
            rows, cols = rows[cols > rows], cols[cols > rows]
        count += len(rows)
        if count > MAX_PAIRS:
            raise UsageError(f"--threshold {threshold}: more than {MAX_PAIRS:,} pairs of images are that similar, "
                             "so it finds look-alikes, not copies; raise --threshold (default "
                             f"{THRESHOLDS[similarity]} for --similarity {similarity})")
        found.append((rows + start, cols + first, sims[rows, cols]))
    a, b, sim = (np.concatenate(parts) for parts in zip(*found)) if found else ([], [], [])
    order = np.lexsort((b, a, -np.asarray(sim)))
    return Pairs(np.asarray(a, int)[order], np.asarray(b, int)[order],
                 np.clip(np.asarray(sim, np.float32)[order], -1, 1))


def describe(pairs, fs, other=None, folds=None):
    """One dict per pair (the PAIR_COLUMNS), its ``verdict`` saying whether it leaks: images of
    different lesions in different folds, or any pair across two sets. ``folds``: {image id: fold}."""
    folds = folds or {}
    second = fs if other is None else other
    rows = []
    for a, b, sim in zip(pairs.a, pairs.b, pairs.similarity):
        image_a, image_b = str(fs.image_ids[a]), str(second.image_ids[b])
        lesion_a, lesion_b = str(fs.lesion_ids[a]), str(second.lesion_ids[b])
        fold_a, fold_b = folds.get(image_a, "?"), folds.get(image_b, "?")
        if other is not None:
            verdict = "in both sets: leak" + (" (same lesion id)" if lesion_a == lesion_b else "")
        elif lesion_a == lesion_b:
            verdict = "same lesion"
        elif "?" in (fold_a, fold_b):
            verdict = "different lesions, fold ?"
        else:
            verdict = "different lesions, " + ("same fold" if fold_a == fold_b else "different folds: leak")
        rows.append(dict(zip(PAIR_COLUMNS, (image_a, lesion_a, fold_a, image_b, lesion_b, fold_b,
                                            float(sim), verdict))))
    return rows


def format_pair(row):
    side = lambda s: f"{row['image_' + s]} ({row['lesion_' + s]}, fold {row['fold_' + s]})"  # noqa: E731
    return f"{row['similarity']:.4f}  {side('a')}  {side('b')}  {row['verdict']}"


def summary(rows, threshold, against=False):
    n = len(rows)
    if against:
        firsts = len({r["image_a"] for r in rows})
        return (f"{n:,} pairs at similarity >= {threshold} across the two sets: {firsts:,} images of --features "
                "have a near-duplicate in --against" + (": leaks" if n else ""))
    different = [r for r in rows if r["verdict"] != "same lesion"]
    leaks = sum(r["verdict"].endswith("leak") for r in different)
    unknown = sum(r["verdict"].endswith("?") for r in different)
    unknown = f", {unknown:,} of unknown folds: pass --folds" if unknown else ""
    return (f"{n:,} pairs at similarity >= {threshold}: {len(different):,} of different lesions ({leaks:,} in "
            f"different folds: leaks{unknown}), {n - len(different):,} within one lesion (expected; --all lists them)")


def write_pairs(path, rows):
    """The pairs CSV (PAIR_COLUMNS), written atomically."""
    import csv


    def write(f):
        writer = csv.DictWriter(f, PAIR_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    write_atomically(path, write)


def read_pairs(path):
    """``[(image id, image id)]`` from a pairs CSV written by ``skinfeat data duplicates --pairs-out``."""

    purpose = "written by 'skinfeat data duplicates --pairs-out'"
    table = read_table(path)
    errors = [p for p in table.problems if p.level == "error"]
    if errors:
        raise DataError(f"{errors[0]}; expected a pairs file {purpose}")
    a, b = table.require("image_a", purpose), table.require("image_b", purpose)
    return [(row[a], row[b]) for _, row in table.rows if row[a] and row[b]]


