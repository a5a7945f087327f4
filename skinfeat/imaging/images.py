"""One definition of a readable image, and its decoding and resizing with PIL
and numpy, shared by ``data check``, ``extract`` (its tf.data pipeline calls
:func:`decode`), ``predict`` and the dataset layer, without importing TensorFlow.

- A readable image is a regular file (never a FIFO or device: they are not
  opened) whose name ends in :data:`IMAGE_EXTENSIONS`, whose content PIL or
  libjpeg-turbo decodes completely, with at least :data:`MIN_SIDE` pixels on
  each side, sides at most :data:`MAX_ASPECT` times as long as each other, and
  at most :data:`MAX_PIXELS` pixels (checked from the header, before decoding).
  Anything else raises :class:`FileError` saying why.
- Decoding, like ``tf.io.decode_image(channels=3)``: JPEG with libjpeg-turbo
  through ``simplejpeg`` with TensorFlow's settings (fast integer IDCT, fancy
  upsampling), so the pixels agree exactly (PIL's accurate IDCT differs by up
  to 3/255); other formats with PIL, RGB (alpha dropped, grey repeated). No
  EXIF rotation, as in TensorFlow.
- Scaling to [0, 1]: ``uint8 * (1/255)`` in float32, like ``tf.image.convert_image_dtype``.
- Resizing: ``tf.image.resize(antialias=True)`` is a separable triangle filter
  whose width grows with the down-scaling factor (``ScaleAndTranslate``); here
  it is the same filter as two small weight matrices. ``squash``, ``crop`` and
  ``pad`` follow ``skinfeat.imaging.augment.resize_tf`` step by step, in float32.

The tests hold the result against the TensorFlow pipeline (max difference ~1e-6).
"""

import io
import os
import stat
from functools import lru_cache
from pathlib import Path

import numpy as np

from skinfeat.core.errors import DataError

IMAGE_EXTENSIONS = frozenset((".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"))
FORMATS = "JPEG, PNG, BMP, GIF, TIFF or WebP"
# PIL's own decompression-bomb limit (about 9459 x 9459): 1 GB as float32 pixels.
MAX_PIXELS = 89_478_485
MIN_SIDE = 8  # the robust views blur with a 13-tap reflected kernel (sides of 6 fail); smaller shows no lesion
# A centre crop resizes a 20:1 image to 4480 x 224 first, letterboxing (pad) shrinks its short side to 1/20
# of the input size; a 3000 x 1 PNG took over 20 GB (measured), and pad fails on it in TensorFlow.
MAX_ASPECT = 20
_TOO_MANY = (f"more than the {MAX_PIXELS:,} pixels skinfeat decodes (a decompression bomb?); "
             "expected a photo: downscale it")
_INV_255 = np.float32(1.0 / 255.0)
_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


class FileError(DataError):
    """A file that cannot be used: ``reason`` says what is wrong with it (without the
    file's name), ``advice`` what to do, for a file on disk; a front end that got the
    bytes another way (an upload) says its own advice after ``reason``."""

    def __init__(self, name, reason, advice=""):
        super().__init__(f"{name} {reason}" + (f"; {advice}" if advice else ""))
        self.reason, self.advice = reason, advice

    @property
    def detail(self):
        """The message without the file's name: what is wrong, then what to do."""
        return self.reason + (f"; {self.advice}" if self.advice else "")


def shown(path):
    """``path`` as text that prints anywhere: bytes that are not UTF-8 as ``\\xe9``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _irregular(path):
    """A FileError when ``path`` is not a regular file (links followed), else None."""
    name = shown(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return FileError(name, "does not exist (no such file, or a broken symbolic link); check the path")
    except OSError as exc:
        return FileError(name, f"cannot be read ({exc.strerror}); check the path and its permissions")
    if stat.S_ISREG(mode):
        return None
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return FileError(name, f"is {kind}, not a regular file; expected a file: give the file itself")


def read_file(path):
    """The bytes of the regular file ``path``; FileError naming it otherwise.
    A FIFO, socket or device is never opened (reading one could block forever)."""
    problem = _irregular(path)
    if problem:
        raise problem
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise FileError(shown(path), f"cannot be read ({exc.strerror}); check its permissions") from None


def check_size(name, height, width):
    """FileError unless an image of ``height`` x ``width`` pixels is within the limits above."""
    size = f"is {width} x {height} pixels"
    if width * height > MAX_PIXELS:
        raise FileError(name, f"{size}, {_TOO_MANY}")
    if min(height, width) < MIN_SIDE:
        raise FileError(name, f"{size}, too small; expected at least {MIN_SIDE} pixels on each side")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise FileError(name, f"{size}, too elongated; expected sides at most {MAX_ASPECT} times as long "
                              "as each other: crop it to the lesion")


@lru_cache(maxsize=1)
def _pil():
    """PIL's Image module, its decompression-bomb limit set to MAX_PIXELS and its
    warning silenced: :func:`check_size` refuses those images with a clear message."""
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


def decode(source):
    """float32 ``[H, W, 3]`` in [0, 1] of ``source`` (a path or the file's bytes).
    FileError (a DataError) saying what is wrong when it is not a readable image."""
    import simplejpeg
    from PIL import UnidentifiedImageError

    Image = _pil()
    in_memory = isinstance(source, (bytes, bytearray))
    name = "image bytes" if in_memory else shown(source)
    data = bytes(source) if in_memory else read_file(source)
    if not data:
        raise FileError(name, "is a zero-byte file", "expected an image file: re-copy or re-export it")
    try:
        if data[:2] == b"\xff\xd8":
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            check_size(name, height, width)
            array = _decode_jpeg(data)
        else:
            with Image.open(io.BytesIO(data)) as im:
                check_size(name, im.height, im.width)
                im.load()
                if im.mode in ("I;16", "I;16B", "I"):  # 16-bit PNG: TF scales by 1/65535
                    return np.clip(np.asarray(im, np.float32) / 65535.0, 0, 1)[..., None].repeat(3, axis=2)
                array = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise FileError(name, f"is not an image (not {FORMATS})",
                        "expected an image file: remove it or pass images only") from None
    except Image.DecompressionBombError:  # over twice MAX_PIXELS: PIL refuses it while reading the header
        raise FileError(name, f"has {_TOO_MANY}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data (PIL, simplejpeg)
        raise FileError(name, f"is a damaged image ({exc})",
                        "expected a complete image file: re-copy or re-export it") from None
    return np.multiply(array, _INV_255, dtype=np.float32)  # one pass: uint8 -> float32 * (1/255)


def _decode_jpeg(data):
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)


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
    (``squash``, ``crop`` or ``pad``), as ``skinfeat.imaging.augment.resize_tf`` does."""
    if policy not in RESIZERS:
        raise DataError(f"resize policy {policy!r} is unknown; expected one of {', '.join(RESIZERS)}")
    return RESIZERS[policy](image, int(size[0]), int(size[1]))


def load_image(source, size, policy="squash"):
    """Decode ``source`` (path or bytes) and resize it: float32 ``[H, W, 3]`` in [0, 1]."""
    return resize(decode(source), size, policy)


def is_image_name(path):
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS and not Path(path).name.startswith(".")


def name_problem(path):
    """A FileError when the name of ``path`` is not UTF-8 text (no image id, CSV or HDF5 file
    could hold it), else None."""
    try:
        Path(path).name.encode("utf-8")
    except UnicodeEncodeError:
        return FileError(shown(path), "has a name that is not UTF-8 text; left out: "
                                      "rename it (letters, digits, '_' and '-' are safe)")
    return None


def _raise(path, exc):
    raise exc


def list_folder(folder, on_skip=None):
    """``[(path, is_dir)]`` of the entries of ``folder`` in name order, skipping
    hidden entries and ``__MACOSX``. What cannot be used goes to ``on_skip(path,
    FileError)`` (default: raise it) and is left out: ``folder`` itself when
    unreadable, entries whose type cannot be read (a symbolic link loop), names
    that are not UTF-8 (no id or file name downstream could hold them)."""
    on_skip = on_skip or _raise
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        on_skip(folder, FileError(shown(folder), f"is a folder that cannot be read ({exc.strerror}); its images "
                                                 "are left out: make it readable (chmod a+rx)"))
        return []
    listed = []
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows symbolic links
        except OSError as exc:
            on_skip(path, FileError(shown(path), f"cannot be followed ({exc.strerror}); left out: "
                                                 "remove or fix the symbolic link"))
            continue
        problem = name_problem(path)
        if problem:
            if is_dir or is_image_name(entry.name):
                on_skip(path, problem)
            continue
        listed.append((path, is_dir))
    return listed


def walk_images(folder, on_skip=None):
    """Paths of the regular image files under ``folder``, recursively, in name
    order, skipping hidden entries and ``__MACOSX`` folders; one at a time. Each
    folder is searched once, however many symbolic links lead to it (so a link
    loop ends). Image names that are not regular files (a FIFO, a broken link)
    and what :func:`list_folder` cannot use go to ``on_skip(path, FileError)``
    (default: raise it)."""
    yield from _walk(folder, on_skip or _raise, set())


def _walk(folder, on_skip, seen):
    try:
        st = os.stat(folder)
    except OSError as exc:
        on_skip(folder, FileError(shown(folder), f"cannot be read ({exc.strerror}); left out"))
        return
    if (st.st_dev, st.st_ino) in seen:
        on_skip(folder, FileError(shown(folder), "leads back to a folder already searched (a symbolic link "
                                                 "loop, or a second link to it); not searched again"))
        return
    seen.add((st.st_dev, st.st_ino))
    for path, is_dir in list_folder(folder, on_skip):
        if is_dir:
            yield from _walk(path, on_skip, seen)
        elif is_image_name(path.name):
            problem = _irregular(path)  # a FIFO, a device, a broken link
            if problem:
                on_skip(path, problem)
            else:
                yield path
