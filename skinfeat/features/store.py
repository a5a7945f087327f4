"""The feature cache file: one HDF5 file per (dataset, backbone, preprocessing).

Layout (readable with plain h5py; every string is UTF-8)::

    /features      float32 [N, D]   clean view of each image (float16 on request)
    /views         float32 [N, V, D] augmented views (only when extracted with --views V)
    /image_id      str [N]          file name without extension
    /label         int8 [N]         index into CLASSES (MEL NV BCC AKIEC BKL DF VASC), -1 = unlabelled
    /lesion_id     str [N]          the image id where no grouping is known
    /meta/<column> str [N]          dx_type, age, sex, localization ... where the dataset has them
    /content_sha256 str [N]         the first 16 hex digits of the sha256 of each image file's bytes
                                    (files written before it existed have none)
    /skipped/image_id, /skipped/reason  str [M]  images that could not be read (--on-error skip)

    attributes: format="skinfeat-features", format_version, key (sha256 of the parts
    below), module, module_source, module_fingerprint, input_size, resize, views,
    augment_seed, dtype, manifest_sha256, dataset, feature_dim, n_images,
    skinfeat_version, tensorflow_version, extract_seconds, images_per_second, created;
    with a fine-tuned backbone (``skinfeat finetune``) also module_trained_on =
    {"n_rows", "rows"}: the rows whose images it was trained on, ``rows`` being
    base64 of ``np.packbits`` of a bool per row (``FeatureSet.trained_on``)

The N rows are the images that were read; skipped ones are only listed under
/skipped. Read it with pandas::

    with h5py.File(path) as f:
        df = pd.DataFrame(f["features"][:]).assign(image_id=f["image_id"].asstr()[:])
"""

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinfeat import __version__
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import FeaturesError

CONTENT_HEX = 16  # how much of each image file's sha256 a features file keeps (/content_sha256)
FORMAT = "skinfeat-features"
FORMAT_VERSION = 1
TRAINED_ON = "module_trained_on"


@dataclass
class FeatureSet:
    """Features and row metadata read from a cache file."""

    path: str
    features: np.ndarray  # [N, D] float32
    image_ids: np.ndarray  # [N] str
    labels: np.ndarray  # [N] int8, -1 unlabelled
    lesion_ids: np.ndarray  # [N] str
    views: np.ndarray | None = None  # [N, V, D] or None
    metadata: dict = field(default_factory=dict)  # column -> [N] str
    attrs: dict = field(default_factory=dict)
    extra: np.ndarray | None = None  # [N, m] encoded metadata, the last m columns of features (skinfeat.features.join)
    content: np.ndarray | None = None  # [N] str, CONTENT_HEX hex digits of each file's sha256; None in older files

    def __len__(self):
        return len(self.image_ids)

    @property
    def feature_dim(self):
        return self.features.shape[1]

    @property
    def module(self):
        return self.attrs.get("module", "?")

    @property
    def trained_on(self):
        """A bool per row: its image was in the fine-tuning set of the backbone; None
        when the backbone was not fine-tuned by skinfeat."""
        value = self.attrs.get(TRAINED_ON)
        if value is None:
            return None
        try:
            bits = np.frombuffer(base64.b64decode(value["rows"], validate=True), np.uint8)
            if len(bits) != (len(self) + 7) // 8:
                raise ValueError("wrong length")
            return np.unpackbits(bits, count=len(self)).astype(bool)
        except (TypeError, KeyError, ValueError, binascii.Error):
            raise damaged(self.path, f"its {TRAINED_ON} attribute is not what `skinfeat extract` writes") from None


def trained_on_attr(image_ids, seen):
    """The TRAINED_ON attribute of rows ``image_ids`` for a backbone fine-tuned on the ids in ``seen``."""
    return trained_on_bits(np.fromiter((str(i) in seen for i in image_ids), bool, len(image_ids)))


def trained_on_bits(mask):
    """The TRAINED_ON attribute of a bool per row."""
    mask = np.asarray(mask, bool)
    return {"n_rows": int(mask.sum()), "rows": base64.b64encode(np.packbits(mask)).decode()}


def _str_array(values):
    return np.asarray([str(v) for v in values], dtype=object)


class _Sink:
    """The file HDF5 writes through (h5py's "fileobj" driver). HDF5 does not survive
    a failed write: a full disk leaves it half-closed or reading back garbage, and
    Python crashes. So the sink never fails: after the first failed write it holds
    what HDF5 writes in memory (reads see it, so HDF5 sees a consistent file),
    ``error`` says what failed, and the writer stops at its next step and raises it
    once HDF5 has closed the file. Until then it is a plain file (pread/pwrite)."""

    def __init__(self, fd):
        self.fd, self.pos, self.error, self.held = fd, 0, None, []  # held: [(offset, bytes)] after the error

    def seek(self, offset, whence=0):
        if whence == 2:
            offset += max([os.fstat(self.fd).st_size] + [o + len(b) for o, b in self.held])
        self.pos = offset + (self.pos if whence == 1 else 0)
        return self.pos

    def tell(self):
        return self.pos

    def read(self, size):
        data = bytearray(os.pread(self.fd, size, self.pos))
        data.extend(bytes(size - len(data)))  # past the end: zeros, as HDF5's own driver reads
        for offset, block in self.held:
            lo, hi = max(offset, self.pos), min(offset + len(block), self.pos + size)
            if lo < hi:
                data[lo - self.pos:hi - self.pos] = block[lo - offset:hi - offset]
        self.pos += size
        return bytes(data)

    def write(self, data):
        data = bytes(data)
        if self.error is None:
            try:
                done = 0
                while done < len(data):  # a short write, then the error
                    done += os.pwrite(self.fd, data[done:], self.pos + done)
            except OSError as exc:
                self.error = exc
        if self.error is not None:
            self.held.append((self.pos, data))
        self.pos += len(data)
        return len(data)

    def truncate(self, size):
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self):
        pass

    def check(self):
        if self.error is not None:
            raise self.error


def write_feature_file(path, *, chunks, n, dim, image_ids, labels, lesion_ids, metadata=None,
                       views=0, dtype="float32", skipped=(), attrs=None, content=None):
    """Write a complete feature file at ``path``, one chunk in memory at a time.

    ``chunks`` yields ``(features [n_i, D], views [n_i, V, D] or None)`` whose rows
    add up to ``n``. The caller makes the write atomic (temporary name, rename).
    A failed write (a full disk) raises its OSError once the file is closed.
    """
    import h5py

    with open(path, "w+b", buffering=0) as raw:
        sink = _Sink(raw.fileno())
        try:
            with h5py.File(sink, "w") as f:
                _write_layout(f, sink.check, chunks, n, dim, image_ids, labels, lesion_ids, metadata, views,
                              dtype, skipped, attrs, content)
        except Exception:
            if sink.error is None:
                raise
        sink.check()
        os.fsync(raw.fileno())


def _write_layout(f, check, chunks, n, dim, image_ids, labels, lesion_ids, metadata, views, dtype, skipped, attrs,
                  content=None):
    import h5py

    string = h5py.string_dtype("utf-8")
    feats = f.create_dataset("features", (n, dim), dtype=dtype, chunks=(min(n, 1024), dim) if n else None)
    vds = (f.create_dataset("views", (n, views, dim), dtype=dtype, chunks=(min(n, 64), views, dim) if n else None)
           if views else None)
    start = 0
    for block, view_block in chunks:
        check()  # after a failed write, stop before the next one
        stop = start + len(block)
        feats[start:stop] = block
        if vds is not None:
            vds[start:stop] = view_block
        start = stop
    if start != n:
        raise ValueError(f"feature chunks hold {start} rows, expected {n}")
    check()
    f.create_dataset("image_id", data=_str_array(image_ids), dtype=string)
    f.create_dataset("label", data=np.asarray(labels, dtype=np.int8))
    check()
    f.create_dataset("lesion_id", data=_str_array(lesion_ids), dtype=string)
    if content is not None:
        f.create_dataset("content_sha256", data=_str_array(content), dtype=string)
    meta = f.create_group("meta")
    for column, values in (metadata or {}).items():
        check()
        meta.create_dataset(column, data=_str_array(values), dtype=string)
    skip = f.create_group("skipped")
    skipped = list(skipped)
    skip.create_dataset("image_id", data=_str_array([s[0] for s in skipped]), dtype=string)
    skip.create_dataset("reason", data=_str_array([s[1] for s in skipped]), dtype=string)
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["classes"] = json.dumps(CLASSES)
    for name, value in (attrs or {}).items():
        if isinstance(value, (list, tuple, dict)) or value is None:
            value = json.dumps(value)
        f.attrs[name] = value


def write_features(path, features, image_ids, labels, lesion_ids, views=None, **kwargs):
    """Write in-memory arrays as a feature file (for small sets and tests)."""
    features = np.asarray(features)
    n, dim = features.shape
    return write_feature_file(path, chunks=[(features, views)], n=n, dim=dim, image_ids=image_ids,
                              labels=labels, lesion_ids=lesion_ids,
                              views=0 if views is None else np.shape(views)[1],
                              dtype=str(features.dtype) if features.dtype == np.float16 else "float32",
                              **kwargs)


REEXTRACT = "delete it and run `skinfeat extract` again to rebuild it"


def damaged(path, what):
    """The FeaturesError of a features file that is not as ``write_feature_file`` writes it."""
    return FeaturesError(f"features file {path} is damaged: {what}; {REEXTRACT}")


def read_attrs(path):
    """The attributes of a skinfeat feature file, decoded; FeaturesError if it is not one."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FeaturesError(f"features file {path} does not exist; run `skinfeat extract` first "
                            "or pass the path it printed")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _decode(v) for k, v in f.attrs.items()}
    except (OSError, RuntimeError) as exc:
        raise FeaturesError(f"{path} is not a readable HDF5 file ({exc}); expected a features file written "
                            f"by `skinfeat extract`: if it was one, it is truncated or damaged: {REEXTRACT}") from None
    if attrs.get("format") != FORMAT:
        raise FeaturesError(f"{path} is an HDF5 file but not a skinfeat features file "
                            f"(attribute format={attrs.get('format')!r}, expected {FORMAT!r}); "
                            "extract features with `skinfeat extract`")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise FeaturesError(f"{path} has features format version {attrs.get('format_version')}, "
                            f"this skinfeat (version {_version()}) reads version {FORMAT_VERSION}; "
                            "re-run `skinfeat extract` to rebuild it")
    return attrs


def check_layout(f, path):
    """FeaturesError (``damaged``) unless the open file ``f`` holds the documented
    datasets with matching lengths and types; reads no feature values."""
    import h5py

    missing = [f"/{name}" for name in ("features", "image_id", "label", "lesion_id")
               if not isinstance(f.get(name), h5py.Dataset)]
    if missing:
        raise damaged(path, f"it has no {', '.join(missing)} dataset")
    feats = f["features"]
    if feats.ndim != 2 or feats.dtype.kind != "f" or not feats.shape[1]:
        raise damaged(path, f"/features holds {feats.dtype} of shape {feats.shape}, expected floats "
                            "[images, dimensions]")
    n = feats.shape[0]
    for name, kind in (("image_id", "str"), ("label", "int"), ("lesion_id", "str")):
        ds = f[name]
        if ds.shape != (n,):
            raise damaged(path, f"/{name} has shape {ds.shape}, expected ({n},) like the {n} rows of /features")
        if (h5py.check_string_dtype(ds.dtype) is None) if kind == "str" else ds.dtype.kind not in "iu":
            raise damaged(path, f"/{name} holds {ds.dtype}, expected {'strings' if kind == 'str' else 'integers'}")
    content = f.get("content_sha256")
    if content is not None and (not isinstance(content, h5py.Dataset) or content.shape != (n,)
                                or h5py.check_string_dtype(content.dtype) is None):
        raise damaged(path, f"/content_sha256 has shape {getattr(content, 'shape', None)}, expected ({n},) strings")
    views = f.get("views")
    if views is not None and (not isinstance(views, h5py.Dataset) or views.dtype.kind != "f" or views.ndim != 3
                              or (views.shape[0], views.shape[2]) != feats.shape):
        raise damaged(path, f"/views has shape {getattr(views, 'shape', None)}, expected ({n}, views, "
                            f"{feats.shape[1]}) floats")


def read_features(path, with_views=True):
    """Load a feature file into a FeatureSet, checking it is complete, consistent and finite."""
    import h5py

    attrs = read_attrs(path)
    try:
        with h5py.File(path, "r") as f:
            check_layout(f, path)
            features = f["features"][:].astype(np.float32)
            views = f["views"][:].astype(np.float32) if with_views and "views" in f else None
            fs = FeatureSet(
                path=str(path),
                features=features,
                views=views,
                image_ids=f["image_id"].asstr()[:].astype(object),
                labels=f["label"][:].astype(np.int64),
                lesion_ids=f["lesion_id"].asstr()[:].astype(object),
                metadata={k: f["meta"][k].asstr()[:].astype(object) for k in f.get("meta", {})},
                attrs=attrs,
                content=f["content_sha256"].asstr()[:].astype(object) if "content_sha256" in f else None,
            )
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:  # truncated or odd parts
        raise damaged(path, f"reading it failed ({exc})") from None
    if not len(fs):
        raise FeaturesError(f"features file {path} holds no images (every image was skipped at extraction: "
                            "its /skipped lists why); extract features of readable images")
    bad = (fs.labels < -1) | (fs.labels >= len(CLASSES))
    if bad.any():
        raise damaged(path, f"/label holds {fs.labels[bad][0]} (image {fs.image_ids[bad][0]}), expected -1 "
                            f"(unlabelled) or a class index 0-{len(CLASSES) - 1}")
    fs.labels = fs.labels.astype(np.int8)
    bad = ~np.isfinite(fs.features).all(axis=1)
    if views is not None:
        bad |= ~np.isfinite(views).all(axis=(1, 2))
    if bad.any():
        ids = ", ".join(fs.image_ids[bad][:3])
        raise FeaturesError(f"{path} holds NaN or inf features for {int(bad.sum())} images "
                            f"(e.g. {ids}); the backbone produced invalid values. Re-extract, "
                            "or check the module with `skinfeat modules info`")
    return fs


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _version():
    return __version__
