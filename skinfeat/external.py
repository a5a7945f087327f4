"""Features and scores of a fitted model on images it never saw: external
labelled data, clean or under a distribution shift (``skinfeat.shifts``).

Images go through the model exactly as ``skinfeat predict`` sends them:
decoded and resized with numpy (``skinfeat.images``), the backbone run by the
TFLite interpreter, the head in numpy. A shift is applied to the decoded
image, before the model's resize, as a different camera or framing would
change it. Test-time augmentation (``TTA_SETS``) adds deterministic views of
the resized image (flips, rotations, centre zoom) whose probabilities are
averaged with the clean one's.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from skinfeat.errors import UsageError
from skinfeat.images import decode, resize, resize_exact


def _zoom(image, factor):
    h, w = image.shape[:2]
    ch, cw = int(round(h / factor)), int(round(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize_exact(np.ascontiguousarray(image[top:top + ch, left:left + cw]), h, w)


TTA_VIEWS = {
    "hflip": lambda x: x[:, ::-1],
    "vflip": lambda x: x[::-1],
    "rot90": lambda x: np.rot90(x),
    "rot270": lambda x: np.rot90(x, 3),
    "zoom1.3": lambda x: _zoom(x, 1.3),
    "zoom1.3-hflip": lambda x: _zoom(x, 1.3)[:, ::-1],
}
TTA_SETS = {
    "none": (),
    "flips": ("hflip", "vflip", "rot90"),
    "multiscale": ("hflip", "vflip", "rot90", "zoom1.3", "zoom1.3-hflip"),
}


def tta_views(name):
    """The view names of TTA set ``name``; UsageError for an unknown one."""
    if name not in TTA_SETS:
        raise UsageError(f"test-time augmentation {name!r} is unknown; expected one of {', '.join(TTA_SETS)}")
    return TTA_SETS[name]


def prepared(path, size, policy, shift=None, tta=()):
    """Views [1 + len(tta), H, W, 3] of the image at ``path``: decoded, shifted,
    resized by ``policy``, then each TTA view of the resized image."""
    image = decode(path)
    if shift is not None:
        image = shift(image)
    x = resize(image, size, policy)
    return np.stack([x] + [np.ascontiguousarray(TTA_VIEWS[v](x)) for v in tta])


def image_features(backbone, paths, policy, shift=None, tta=(), batch_size=32, progress=None):
    """Backbone features [n, 1 + len(tta), D] of the images at ``paths`` (their
    TTA views second). ``backbone``: a callable [B, H, W, 3] -> [B, D] with an
    ``input_size``. Decoding runs on a second thread, beside the network."""
    size, n_views = backbone.input_size, 1 + len(tta)
    out = np.zeros((len(paths), n_views, 0), np.float32)
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]

    def load(chunk):
        return np.concatenate([prepared(p, size, policy, shift, tta) for p in chunk])

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
