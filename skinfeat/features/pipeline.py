"""The input pipeline of extraction, shared by the local engine (``skinfeat.features.extract``)
and the Ray actors (``skinfeat.features.ray_engine``): images read, decoded, cropped to the
lesion if asked, resized and augmented by tf.data in parallel with the network,
in batches that never span two chunks; and the forward step of a batch.
"""

import os

import numpy as np

from skinfeat.core.tf_runtime import tensorflow
from skinfeat.imaging.augment import augment_image, resize_tf
from skinfeat.imaging.images import decode
from skinfeat.imaging.lesion import DEFAULT_LESION, preprocess

BATCH_SIZE = 32
# Decoding a small JPEG costs ~1 ms against ~10 ms of network per image on a CPU:
# half the cores keep the network fed; on 2 cores one decoder thread leaves the
# network both cores instead of making it wait on a preempted thread.
DECODE_THREADS = max(1, (os.cpu_count() or 2) // 2)


def image_loader(size, resize, views, augment_seed, augment="mild", lesion=DEFAULT_LESION):
    """The tf.data map function ``(row, path) -> (row, image [H,W,3], views [V,H,W,3])``.
    ``lesion``: the preprocessing of each decoded image (``skinfeat.imaging.lesion``), before
    the resize and the augmented views; a view's seed depends on its row only."""
    tf = tensorflow()

    # Plain TF ops, no tensor-dependent Python control flow: autograph has nothing
    # to convert (and only warns when it tries).
    @tf.autograph.experimental.do_not_convert
    def load(row, path):
        # skinfeat.imaging.images.decode, as predict and data check: one definition of a readable image
        # (TIFF included; bombs, degenerate sizes and FIFOs refused), the same pixels as tf.io.decode_image.
        image = tf.numpy_function(lambda p: decode_path(p, lesion), [path], tf.float32, stateful=False)
        image.set_shape([None, None, 3])
        clean = resize_tf(image, size, resize)
        clean.set_shape([size[0], size[1], 3])
        if not views:
            return row, clean, tf.zeros([0], tf.float32)
        seeds = tf.stack([tf.fill([views], tf.cast(augment_seed, tf.int64) * 1_000_003 + row),
                          tf.range(views, dtype=tf.int64)], axis=1)
        extra = tf.map_fn(lambda s: resize_tf(augment_image(image, s, augment), size, resize), seeds,
                          fn_output_signature=tf.TensorSpec([size[0], size[1], 3], tf.float32))
        return row, clean, extra
    return load


def batched(rows, paths, load):
    """The tf.data batches of ``load`` over ``rows`` (int64) and their ``paths``: images
    that fail to decode are dropped, so their rows are missing from the output."""
    tf = tensorflow()

    ds = tf.data.Dataset.from_tensor_slices((rows, paths))
    return ds.map(load, num_parallel_calls=DECODE_THREADS, deterministic=True).ignore_errors().batch(BATCH_SIZE)


def image_pipeline(paths, spans, size, resize, views, augment_seed, augment="mild", lesion=DEFAULT_LESION):
    """Batches of (row index, images [B,H,W,3], views [B,V,H,W,3]) over the rows of
    every ``(start, stop)`` span, in order (``image_loader``). A batch never spans two spans.
    The whole pipeline is traced once, whatever the number of spans."""
    tf = tensorflow()

    load = image_loader(size, resize, views, augment_seed, augment, lesion)
    all_paths = tf.constant(np.asarray(paths, dtype=object).astype(str))

    @tf.autograph.experimental.do_not_convert
    def span(bounds):
        rows = tf.range(bounds[0], bounds[1])
        return batched(rows, tf.gather(all_paths, rows), load)

    spans = tf.constant(np.asarray(spans, np.int64).reshape(-1, 2))
    ds = tf.data.Dataset.from_tensor_slices(spans).flat_map(span).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = DECODE_THREADS
    return ds.with_options(options)


def forward_views(fwd, images, extra, views):
    """The features [B, D] of a batch and, with ``views``, of its views [B, V, D]."""
    feats = fwd(images)
    if not views:
        return feats, None
    tf = tensorflow()

    b = images.shape[0]
    flat = tf.reshape(tf.transpose(extra, [1, 0, 2, 3, 4]), [views * b, *images.shape[1:]])
    return feats, np.stack([fwd(flat[v * b:(v + 1) * b]) for v in range(views)], axis=1)


def decode_path(path, lesion=DEFAULT_LESION):
    return preprocess(decode(os.fsdecode(path)), lesion)
