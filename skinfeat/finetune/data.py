"""What ``skinfeat finetune`` trains on, and the tf.data pipelines that read it.

- ``split_rows``: the training folds of a folds file (every fold but ``--fold K``,
  or all of them with ``--all``; held-out rows, -1, never), less a lesion-grouped,
  class-stratified validation part (``VAL_FRACTION`` of them by seed, as the heads
  split theirs: ``skinfeat.heads.base.inner_split``) that scores each epoch for
  early stopping.
- ``train_batches``: the training images in a seeded order per epoch, each one a
  fresh view by the run's preset (``AUGMENTS``; "frames" by default); ``clean_batches``: the images as
  ``skinfeat extract`` sees them. Images are decoded by ``skinfeat.imaging.images.decode``
  (as extract and predict do); one that cannot be read is left out.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import DataError, UsageError
from skinfeat.core.tf_runtime import tensorflow
from skinfeat.data.split import read_folds
from skinfeat.features.extract import DEFAULT_RESIZE
from skinfeat.features.pipeline import DECODE_THREADS, decode_path
from skinfeat.imaging.augment import AUGMENT_FUNCTIONS, augment_image, frame_view, resize_tf

VAL_FRACTION = 0.1
CLEAN_BATCH = 32
# Training views: "frames" (``skinfeat.imaging.augment.frame_view``: framed as the network
# will see images, zoom 1-1.6x), or an extraction preset ("robust": square crops zoomed
# 1-3.5x, "mild") resized by the crop policy.
AUGMENTS = ("frames", *AUGMENT_FUNCTIONS)


@dataclass
class Split:
    train: np.ndarray  # manifest rows the network trains on
    val: np.ndarray  # manifest rows of the validation part (early stopping)
    unseen: np.ndarray  # manifest rows of the fold left out (empty with --all)
    folds: list  # the folds file's folds (0..K-1)
    folds_sha256: str

    def seen_ids(self, manifest):
        """Every image the fine-tuned network saw (trained on or validated with)."""
        return sorted(str(manifest.image_ids[i]) for i in np.concatenate([self.train, self.val]))


def split_rows(manifest, folds_path, fold, seed):
    """The Split of ``manifest`` by the folds file ``folds_path`` (``fold`` None: all
    folds train). DataError when the file does not match the data, splits a lesion
    between training and the left-out fold, or leaves a class without training images."""
    from skinfeat.heads.base import MIN_SPLIT_ROWS, inner_split

    mapping = read_folds(folds_path)
    labels = np.asarray(manifest.labels)
    labelled = np.flatnonzero(labels >= 0)
    if not len(labelled):
        raise DataError(f"none of the {len(manifest)} images of the data has a label; fine-tuning needs "
                        "labelled images (HAM10000 metadata, ISIC ground truth or class folders)")
    ids = [str(manifest.image_ids[i]) for i in labelled]
    missing = [i for i in ids if i not in mapping]
    if missing:
        raise DataError(f"folds file {folds_path} has no fold for {len(missing)} of the {len(ids)} labelled "
                        f"images of the data (e.g. {', '.join(missing[:3])}); expected a folds file of this "
                        "dataset: write one with `skinfeat data split --data D --out FILE`")
    part = np.array([mapping[i] for i in ids])
    folds = sorted(int(f) for f in set(part.tolist()) if f >= 0)
    if fold is not None and fold not in folds:
        raise UsageError(f"--fold {fold}: folds file {folds_path} has folds "
                         f"{', '.join(map(str, folds)) or 'none'} for these images; pass one of them, or --all")
    train_all = labelled[(part >= 0) & (part != fold)] if fold is not None else labelled[part >= 0]
    unseen = labelled[part == fold] if fold is not None else np.zeros(0, int)
    lesions = np.asarray(manifest.lesion_ids, dtype=object)
    shared = set(lesions[train_all]) & set(lesions[unseen])
    if shared:
        raise DataError(f"folds file {folds_path} puts lesion {sorted(shared)[0]} in fold {fold} and in a "
                        "training fold; expected every lesion in one fold (a split leak inflates scores): "
                        "rewrite it with `skinfeat data split`")
    _check_classes(labels[train_all], folds_path, fold)
    inner = inner_split(labels[train_all].astype(int), lesions[train_all], VAL_FRACTION, seed)
    if inner is None:
        raise DataError(f"the training folds hold {len(train_all)} images, too few to set a validation part "
                        f"aside (at least {MIN_SPLIT_ROWS} are needed, with every class in both parts); "
                        "fine-tune on more images")
    train, val = train_all[inner[0]], train_all[inner[1]]
    with open(folds_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return Split(train, val, unseen, folds, digest)


def _check_classes(labels, folds_path, fold, after_validation=False):
    counts = np.bincount(labels.astype(int), minlength=len(CLASSES))
    empty = [CLASSES[c] for c in range(len(CLASSES)) if counts[c] == 0]
    if not empty:
        return
    where = (f"the training folds of {folds_path}" + (f" (every fold but {fold})" if fold is not None else "")
             + (" once the validation part is taken out" if after_validation else ""))
    raise DataError(f"{', '.join(empty)}: no training image in {where}; the network learns all "
                    f"{len(CLASSES)} classes: add images of {'them' if len(empty) > 1 else 'it'}, "
                    "or use a folds file whose training folds hold some")


def class_weights(labels):
    """Inverse-frequency weights n / (K n_c) of the training labels (every class present)."""
    counts = np.bincount(np.asarray(labels, int), minlength=len(CLASSES)).astype(np.float64)
    return (counts.sum() / (len(CLASSES) * counts)).astype(np.float32)


def sample(labels, rows, n, seed, per_class=16):
    """Up to ``n`` of ``rows`` at random, plus at least ``per_class`` of each class where
    it has them (a rare class is not left out), sorted."""
    order = np.asarray(rows)[np.random.default_rng(seed).permutation(len(rows))]
    rare = [order[labels[order] == c][:per_class] for c in range(len(CLASSES))]
    return np.unique(np.concatenate([order[:n], *rare]))


def _images(manifest, rows, load, batch):
    tf = tensorflow()

    paths = np.asarray(manifest.paths, dtype=object)[rows].astype(str)
    labels = np.asarray(manifest.labels)[rows].astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(rows, np.int64), paths, labels))
    ds = ds.map(load, num_parallel_calls=DECODE_THREADS, deterministic=True).ignore_errors()
    options = tf.data.Options()
    options.threading.private_threadpool_size = DECODE_THREADS
    return ds.batch(batch).prefetch(2).with_options(options)


def _decoded(path):
    tf = tensorflow()

    image = tf.numpy_function(decode_path, [path], tf.float32, stateful=False)
    image.set_shape([None, None, 3])
    return image


def train_batches(manifest, rows, size, batch, seed, epoch, augment="frames"):
    """(images [B, H, W, 3], labels [B]) of ``rows`` in the order of (seed, epoch), each
    image a view by preset ``augment`` (AUGMENTS) seeded by (seed, epoch, row): a resumed
    epoch sees what a whole one would."""
    tf = tensorflow()

    order = np.asarray(rows)[np.random.default_rng([seed, epoch]).permutation(len(rows))]

    @tf.autograph.experimental.do_not_convert
    def load(row, path, label):
        view_seed = tf.stack([tf.constant(seed * 1_000_003 + epoch, tf.int64), row])
        if augment == "frames":
            view = frame_view(_decoded(path), view_seed, size)
        else:
            view = resize_tf(augment_image(_decoded(path), view_seed, augment), size, DEFAULT_RESIZE)
        view.set_shape([size[0], size[1], 3])
        return view, label

    return _images(manifest, order, load, batch)


def clean_batches(manifest, rows, size, batch=CLEAN_BATCH):
    """(images, labels) of ``rows`` in order, resized as extraction resizes them."""
    tf = tensorflow()

    @tf.autograph.experimental.do_not_convert
    def load(row, path, label):
        image = resize_tf(_decoded(path), size, DEFAULT_RESIZE)
        image.set_shape([size[0], size[1], 3])
        return image, label

    return _images(manifest, rows, load, batch)
