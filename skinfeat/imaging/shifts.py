"""Deterministic distribution shifts of an image, for stress-testing a model
(``skinfeat evaluate --shift``) on the framings, zooms and colours that images
from other clinics and devices have.

A shift takes a decoded image (float32 ``[H, W, 3]`` in [0, 1], before the
model's own resize) and returns another one; the same input always gives the
same output. Shifts are named ``NAME`` or ``NAME:LEVEL``:

========================  =====================================================
``crop``                  square centre crop (no letterbox, the sides cut)
``pad``                   letterboxed to a square with black bars, as ``pad``
                          resizing makes them
``vignette[:R]``          the dark circular border of many dermatoscopes: black
                          outside a centred circle of radius R x half the
                          shorter side (default 1.0)
``zoom:Z``                centre crop 1/Z of each side, upsampled back (Z > 1)
``rotate:DEG``            rotated about the centre, the corners filled by
                          reflection
``brightness:F``          pixel values times F
``contrast:F``            distances from the mean grey times F
``temperature:T``         colour temperature: red times T, blue divided by T
                          (T > 1 warmer, < 1 cooler)
``blur:SIGMA``            Gaussian blur of SIGMA pixels (of the image as given)
``jpeg:Q``                re-encoded as JPEG at quality Q
``downscale:F``           shrunk to F of its size and enlarged back
========================  =====================================================

``standard`` names the documented set, ``STANDARD``.
"""

import io
from dataclasses import dataclass

import numpy as np

from skinfeat.core.errors import UsageError
from skinfeat.imaging.images import decode, resize_exact


def _square_crop(image, level):
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def _pad(image, level):
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, 3), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def _vignette(image, radius):
    h, w = image.shape[:2]
    r = radius * min(h, w) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    distance = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    edge = max(1.0, 0.03 * min(h, w))  # a soft rim, as optics leave it
    mask = np.clip((r - distance) / edge, 0.0, 1.0).astype(np.float32)
    return image * mask[..., None]


def _zoom(image, factor):
    h, w = image.shape[:2]
    ch, cw = max(1, int(round(h / factor))), max(1, int(round(w / factor)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize_exact(np.ascontiguousarray(image[top:top + ch, left:left + cw]), h, w)


def _rotate(image, degrees):
    from scipy.ndimage import rotate

    return np.clip(rotate(image, degrees, axes=(1, 0), reshape=False, order=1, mode="mirror"),
                   0, 1).astype(np.float32)


def _brightness(image, factor):
    return np.clip(image * np.float32(factor), 0, 1)


def _contrast(image, factor):
    mean = image.mean(dtype=np.float64)
    return np.clip((image - mean) * np.float32(factor) + np.float32(mean), 0, 1).astype(np.float32)


def _temperature(image, t):
    scale = np.array([t, 1.0, 1.0 / t], np.float32)
    return np.clip(image * scale, 0, 1)


def _blur(image, sigma):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma=(sigma, sigma, 0), mode="mirror").astype(np.float32)


def _jpeg(image, quality):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(quality))
    return decode(buffer.getvalue())


def _downscale(image, factor):
    h, w = image.shape[:2]
    small = resize_exact(image, max(1, int(round(h * factor))), max(1, int(round(w * factor))))
    return resize_exact(small, h, w)


@dataclass(frozen=True)
class Kind:
    fn: object
    default: float | None  # None: the level is required (or, for crop/pad, takes none)
    valid: object  # level -> bool
    expected: str
    takes_level: bool = True


KINDS = {
    "crop": Kind(_square_crop, None, lambda v: True, "no level", takes_level=False),
    "pad": Kind(_pad, None, lambda v: True, "no level", takes_level=False),
    "vignette": Kind(_vignette, 1.0, lambda v: 0.2 <= v <= 2.0, "a radius from 0.2 to 2"),
    "zoom": Kind(_zoom, None, lambda v: 1.0 < v <= 8.0, "a factor above 1 and at most 8"),
    "rotate": Kind(_rotate, None, lambda v: -360 <= v <= 360, "degrees from -360 to 360"),
    "brightness": Kind(_brightness, None, lambda v: 0.1 <= v <= 3.0, "a factor from 0.1 to 3"),
    "contrast": Kind(_contrast, None, lambda v: 0.1 <= v <= 3.0, "a factor from 0.1 to 3"),
    "temperature": Kind(_temperature, None, lambda v: 0.5 <= v <= 2.0, "a factor from 0.5 to 2"),
    "blur": Kind(_blur, None, lambda v: 0.0 < v <= 20.0, "a sigma in pixels above 0 and at most 20"),
    "jpeg": Kind(_jpeg, None, lambda v: 1 <= v <= 100 and float(v).is_integer(), "a quality from 1 to 100"),
    "downscale": Kind(_downscale, None, lambda v: 0.05 <= v < 1.0, "a factor from 0.05 to below 1"),
}

STANDARD = ("crop", "pad", "vignette", "zoom:1.5", "zoom:2", "zoom:3", "rotate:30",
            "brightness:0.7", "brightness:1.3", "contrast:0.7", "temperature:0.85",
            "temperature:1.15", "blur:1.5", "jpeg:30", "downscale:0.5")


@dataclass(frozen=True)
class Shift:
    """A parsed shift: ``shift(image)`` applies it."""

    name: str  # canonical, e.g. "zoom:2"
    kind: str
    level: float | None

    def __call__(self, image):
        return KINDS[self.kind].fn(np.asarray(image, np.float32), self.level)


def _number(text):
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_shift(spec):
    """One ``Shift`` for ``NAME`` or ``NAME:LEVEL``; UsageError saying what is accepted."""
    name, _, level_text = str(spec).strip().partition(":")
    name = name.strip().lower()
    if name not in KINDS:
        raise UsageError(f"unknown shift {spec!r}; expected one of {', '.join(KINDS)} (NAME or NAME:LEVEL), "
                         "or 'standard' for the documented set")
    kind = KINDS[name]
    if not kind.takes_level:
        if level_text:
            raise UsageError(f"shift {name!r} takes no level, got {spec!r}; write just {name}")
        return Shift(name, name, None)
    if not level_text:
        if kind.default is None:
            raise UsageError(f"shift {name!r} needs a level ({kind.expected}), e.g. {name}:2")
        level = kind.default
    else:
        try:
            level = _number(level_text)
        except ValueError:
            raise UsageError(f"shift {spec!r}: level {level_text!r} is not a number; "
                             f"expected {kind.expected}") from None
    if not np.isfinite(level) or not kind.valid(level):
        raise UsageError(f"shift {spec!r}: level {level_text or level} is out of range; expected {kind.expected}")
    return Shift(f"{name}:{_number(level)}" if level_text or kind.default is not None else name, name, level)


def parse_shifts(specs):
    """Shifts for every spec in ``specs`` (``standard`` expands to STANDARD), in
    order, without repeats."""
    out = []
    for spec in specs:
        for one in (STANDARD if str(spec).strip().lower() == "standard" else (spec,)):
            shift = parse_shift(one)
            if shift.name not in [s.name for s in out]:
                out.append(shift)
    return out
