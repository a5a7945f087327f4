"""The feature cache file: one HDF5 file per (dataset, backbone, preprocessing).

Layout (readable with plain h5py; every string is UTF-8)::

    /features      float32 [N, D]   clean view of each image (float16 on request)
    /views         float32 [N, V, D] augmented views (only when extracted with --views V)
    /image_id      str [N]          file name without extension
    /label         int8 [N]         index into CLASSES (MEL NV BCC AKIEC BKL DF VASC), -1 = unlabelled
    /lesion_id     str [N]          the image id where no grouping is known
    /meta/<column> str [N]          dx_type, age, sex, localization ... where the dataset has them
    /skipped/image_id, /skipped/reason  str [M]  images that could not be read (--on-error skip)

    attributes: format="skinfeat-features", format_version, key (sha256 of the parts
    below), module, module_source, module_fingerprint, input_size, resize, views,
    augment_seed, dtype, manifest_sha256, dataset, feature_dim, n_images,
    skinfeat_version, tensorflow_version, extract_seconds, images_per_second, created

The N rows are the images that were read; skipped ones are only listed under
/skipped. Read it with pandas::

    with h5py.File(path) as f:
        df = pd.DataFrame(f["features"][:]).assign(image_id=f["image_id"].asstr()[:])
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinfeat.classes import CLASSES
from skinfeat.errors import FeaturesError

FORMAT = "skinfeat-features"
FORMAT_VERSION = 1


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

    def __len__(self):
        return len(self.image_ids)

    @property
    def feature_dim(self):
        return self.features.shape[1]

    @property
    def module(self):
        return self.attrs.get("module", "?")


def _str_array(values):
    return np.asarray([str(v) for v in values], dtype=object)


def write_feature_file(path, *, chunks, n, dim, image_ids, labels, lesion_ids, metadata=None,
                       views=0, dtype="float32", skipped=(), attrs=None):
    """Write a complete feature file at ``path``, one chunk in memory at a time.

    ``chunks`` yields ``(features [n_i, D], views [n_i, V, D] or None)`` whose rows
    add up to ``n``. The caller makes the write atomic (temporary name, rename).
    """
    import h5py

    string = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        feats = f.create_dataset("features", (n, dim), dtype=dtype, chunks=(min(max(n, 1), 1024), dim))
        vds = (f.create_dataset("views", (n, views, dim), dtype=dtype, chunks=(min(max(n, 1), 64), views, dim))
               if views else None)
        start = 0
        for block, view_block in chunks:
            stop = start + len(block)
            feats[start:stop] = block
            if vds is not None:
                vds[start:stop] = view_block
            start = stop
        if start != n:
            raise ValueError(f"feature chunks hold {start} rows, expected {n}")
        f.create_dataset("image_id", data=_str_array(image_ids), dtype=string)
        f.create_dataset("label", data=np.asarray(labels, dtype=np.int8))
        f.create_dataset("lesion_id", data=_str_array(lesion_ids), dtype=string)
        meta = f.create_group("meta")
        for column, values in (metadata or {}).items():
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
    except OSError as exc:
        raise FeaturesError(f"{path} is not a readable HDF5 file ({exc}); "
                            "expected a features file written by `skinfeat extract`") from None
    if attrs.get("format") != FORMAT:
        raise FeaturesError(f"{path} is an HDF5 file but not a skinfeat features file "
                            f"(attribute format={attrs.get('format')!r}, expected {FORMAT!r}); "
                            "extract features with `skinfeat extract`")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise FeaturesError(f"{path} has features format version {attrs.get('format_version')}, "
                            f"this skinfeat (version {_version()}) reads version {FORMAT_VERSION}; "
                            "re-run `skinfeat extract` to rebuild it")
    return attrs


def read_features(path, with_views=True):
    """Load a feature file into a FeatureSet, checking it is complete and finite."""
    import h5py

    attrs = read_attrs(path)
    with h5py.File(path, "r") as f:
        features = f["features"][:].astype(np.float32)
        views = f["views"][:].astype(np.float32) if with_views and "views" in f else None
        fs = FeatureSet(
            path=str(path),
            features=features,
            views=views,
            image_ids=f["image_id"].asstr()[:].astype(object),
            labels=f["label"][:].astype(np.int8),
            lesion_ids=f["lesion_id"].asstr()[:].astype(object),
            metadata={k: f["meta"][k].asstr()[:].astype(object) for k in f.get("meta", {})},
            attrs=attrs,
        )
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
    from skinfeat import __version__

    return __version__
