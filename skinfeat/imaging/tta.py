"""Test-time augmentation by fixed views of a resized image (numpy, no
TensorFlow): ``skinfeat predict --tta SET`` and ``skinfeat evaluate --tta SET``
average the model's probabilities over the image and these views."""

import numpy as np

from skinfeat.core.errors import UsageError
from skinfeat.imaging.images import resize_exact


def _zoom(image, factor):
    h, w = image.shape[:2]
    ch, cw = int(round(h / factor)), int(round(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize_exact(np.ascontiguousarray(image[top:top + ch, left:left + cw]), h, w)


TTA_VIEWS = {
    "hflip": lambda x: x[:, ::-1],
    "vflip": lambda x: x[::-1],
    "rot90": lambda x: np.rot90(x, 1 if x.shape[0] == x.shape[1] else 2),  # a non-square input turns 180°
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


def with_views(image, views):
    """``image`` [H, W, 3] and each named view of it: [1 + len(views), H, W, 3]."""
    return np.stack([image] + [np.ascontiguousarray(TTA_VIEWS[v](image)) for v in views])
