"""Images through a backbone in batches, as prediction and evaluation send them:
decoded (``skinfeat.imaging.images``), optionally shifted, cropped to the lesion when the
model's features were (``skinfeat.imaging.lesion``), resized by the model's policy,
then each test-time view of the resized image (``skinfeat.imaging.tta``); decoding runs on
a second thread beside the network."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from skinfeat.imaging.images import decode, resize
from skinfeat.imaging.lesion import preprocess
from skinfeat.imaging.tta import with_views


def prepared(source, size, policy, shift=None, tta=(), lesion="none"):
    """Views [1 + len(tta), H, W, 3] of the image at ``source`` (a path, or an image
    decoded already): decoded, shifted, preprocessed by ``lesion``, resized by
    ``policy``, then each TTA view of the resized image."""
    image = source if isinstance(source, np.ndarray) else decode(source)
    if shift is not None:
        image = shift(image)
    return with_views(resize(preprocess(image, lesion), size, policy), tta)


def image_features(backbone, paths, policy, shift=None, tta=(), batch_size=32, progress=None, lesion="none"):
    """Backbone features [n, 1 + len(tta), D] of the images at ``paths`` (or decoded images; their
    TTA views second). ``backbone``: a callable [B, H, W, 3] -> [B, D] with an
    ``input_size``. Decoding runs on a second thread, beside the network."""
    size, n_views = backbone.input_size, 1 + len(tta)
    out = np.zeros((len(paths), n_views, 0), np.float32)
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]

    def load(chunk):
        return np.concatenate([prepared(p, size, policy, shift, tta, lesion) for p in chunk])

    parts = []
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            images = pending.result()
            pending = pool.submit(load, chunks[i + 1]) if i + 1 < len(chunks) else None
            feats = backbone(images)
            parts.append(feats.reshape(len(chunks[i]), n_views, -1))
            if progress:
                progress(len(chunks[i]))
    return np.concatenate(parts) if parts else out
