"""Decode and resize one image with PIL and numpy, as extraction's TensorFlow
pipeline does (``skinfeat.extract._pipeline``), without importing TensorFlow.

- Decoding, like ``tf.io.decode_image(channels=3)``: JPEG with libjpeg-turbo
  through ``simplejpeg`` with TensorFlow's settings (fast integer IDCT, fancy
  upsampling), so the pixels agree exactly (PIL's accurate IDCT differs by up
  to 3/255); other formats with PIL, RGB (alpha dropped, grey repeated). No
  EXIF rotation, as in TensorFlow.
- Scaling to [0, 1]: ``uint8 * (1/255)`` in float32, like ``tf.image.convert_image_dtype``.
- Resizing: ``tf.image.resize(antialias=True)`` is a separable triangle filter
  whose width grows with the down-scaling factor (``ScaleAndTranslate``); here
  it is the same filter as two small weight matrices. ``squash``, ``crop`` and
  ``pad`` follow ``skinfeat.extract._resize`` step by step, in float32.

The tests hold the result against the TensorFlow pipeline (max difference ~1e-6).
"""

import io
from functools import lru_cache
import os
from pathlib import Path

import numpy as np

from skinfeat.errors import DataError

IMAGE_EXTENSIONS = frozenset((".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"))
_INV_255 = np.float32(1.0 / 255.0)


def decode(source):
    """float32 ``[H, W, 3]`` in [0, 1] of ``source`` (a path or the file's bytes).
    DataError saying what is wrong when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    in_memory = isinstance(source, (bytes, bytearray))
    name = "image bytes" if in_memory else str(source)
    try:
        data = bytes(source) if in_memory else Path(source).read_bytes()
        if data[:2] == b"\xff\xd8":
            return _decode_jpeg(data) * _INV_255
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):  # 16-bit PNG: TF scales by 1/65535
                return np.clip(np.asarray(im, np.float32) / 65535.0, 0, 1)[..., None].repeat(3, axis=2)
            array = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise DataError(f"{name} is not an image (not JPEG, PNG, BMP, GIF, TIFF or WebP); "
                        "expected an image file: remove it or pass images only") from None
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{name} is a folder; expected an image file") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data (PIL, simplejpeg)
        raise DataError(f"{name} is a damaged image ({exc}); expected a complete image file: "
                        "re-copy or re-export it") from None
    return array.astype(np.float32) * _INV_255


def _decode_jpeg(data):
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False).astype(np.float32)


@lru_cache(maxsize=64)
def _weights(in_size, out_size):
    """[out_size, in_size] weights of TF's antialiased triangle resampling along one axis."""
    scale = np.float32(out_size) / np.float32(in_size)
    inv_scale = np.float32(1.0 / scale)
    kernel_scale = max(inv_scale, np.float32(1.0))
    sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
    source = np.arange(in_size, dtype=np.float32) + np.float32(0.5)
    w = np.maximum(np.float32(0), 1 - np.abs((source[None, :] - sample[:, None]) / kernel_scale))
    total = w.sum(axis=1, keepdims=True)
    return (w / np.where(total > 0, total, 1)).astype(np.float32)


def resize_exact(image, height, width):
    """``tf.image.resize(image, [height, width], antialias=True)`` (bilinear) in numpy."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    rows, cols = _weights(h, height), _weights(w, width)
    out = (rows @ image.reshape(h, w * 3)).reshape(height, w, 3)  # along the height
    out = cols @ np.ascontiguousarray(out.transpose(1, 0, 2)).reshape(w, height * 3)  # the width
    return np.ascontiguousarray(out.reshape(width, height, 3).transpose(1, 0, 2))


def _crop(image, height, width):
    h, w = image.shape[:2]
    scale = max(np.float32(height) / np.float32(h), np.float32(width) / np.float32(w))
    scaled = resize_exact(image, int(np.ceil(np.float32(h) * scale)), int(np.ceil(np.float32(w) * scale)))
    top, left = max((scaled.shape[0] - height) // 2, 0), max((scaled.shape[1] - width) // 2, 0)
    return _pad_to(scaled[top:top + height, left:left + width], height, width)


def _pad(image, height, width):
    h, w = (np.float32(s) for s in image.shape[:2])
    ratio = max(w / np.float32(width), h / np.float32(height))
    rh, rw = h / ratio, w / ratio
    resized = resize_exact(image, int(np.floor(rh)), int(np.floor(rw)))
    top = max(int(np.floor((np.float32(height) - rh) / 2)), 0)
    left = max(int(np.floor((np.float32(width) - rw) / 2)), 0)
    return _pad_to(resized, height, width, top, left)


def _pad_to(image, height, width, top=None, left=None):
    """Zero-pad ``image`` into [height, width], centred unless ``top``/``left`` are given."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    top = (height - h) // 2 if top is None else top
    left = (width - w) // 2 if left is None else left
    out = np.zeros((height, width, 3), np.float32)
    out[top:top + h, left:left + w] = image
    return out


RESIZERS = {"squash": resize_exact, "crop": _crop, "pad": _pad}


def resize(image, size, policy="squash"):
    """``image`` [H, W, 3] float32 resized to ``size`` (height, width) by ``policy``
    (``squash``, ``crop`` or ``pad``), as ``skinfeat.extract._resize`` does."""
    if policy not in RESIZERS:
        raise DataError(f"resize policy {policy!r} is unknown; expected one of {', '.join(RESIZERS)}")
    return RESIZERS[policy](image, int(size[0]), int(size[1]))


def load_image(source, size, policy="squash"):
    """Decode ``source`` (path or bytes) and resize it: float32 ``[H, W, 3]`` in [0, 1]."""
    return resize(decode(source), size, policy)


def is_image_name(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS and not Path(path).name.startswith(".")


def walk_images(folder):
    """Paths of the image files under ``folder``, recursively, in name order,
    skipping hidden entries and ``__MACOSX`` folders; one at a time."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_dir():
            yield from walk_images(entry.path)
        elif is_image_name(entry.name):
            yield Path(entry.path)
