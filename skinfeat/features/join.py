"""Heads on more than one backbone's features, and on patient metadata:
``skinfeat fit --features A.h5 --features B.h5 [--metadata age,sex,localization]``.

``fit_features`` gives the FeatureSet a head is fitted on:

- one file and no metadata: that file (``read_features``);
- several files: their features joined on image id, side by side in the order
  given (``join``). The files must hold the same images with the same labels
  and lesions. Augmented views are used when every file has them made the same
  way (preset and seed: view v is then the same augmentation of the image for
  every backbone, each resized to its own input); otherwise only clean features.
  ``attrs["parts"]`` keeps each backbone's attributes: the saved model runs
  every backbone from the images, and the shift check shifts each;
- with metadata: the encoded columns (``skinfeat.data.metadata``) appended to
  every row and every view, kept apart in ``extra`` for the shift check.
"""

import hashlib
import json

import numpy as np

from skinfeat.core.errors import FeaturesError
from skinfeat.data.metadata import beside_views, encode, fit_encoding
from skinfeat.features.store import TRAINED_ON, FeatureSet, read_features, trained_on_bits

PART_KEYS = ("module", "module_source", "module_fingerprint", "module_info", "input_size", "resize",
             "feature_dim", "views", "dtype", "augment", "augment_seed", "images_per_second", "key", "path",
             "dataset", "lesion")


def fit_features(paths, metadata=None, with_views=True):
    """The FeatureSet of features files ``paths`` (one or more), with the metadata
    columns ``metadata`` (a tuple of ``skinfeat.data.metadata.COLUMNS``) appended."""

    paths = [paths] if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__") else list(paths)
    if len(set(map(str, paths))) < len(paths):
        raise FeaturesError(f"--features names {_first_twice(paths)} twice; expected each features file once")
    sets = [read_features(p, with_views=with_views) for p in paths]
    fs = sets[0] if len(sets) == 1 else join(sets)
    return with_metadata(fs, metadata) if metadata else fs


def _first_twice(paths):
    seen = set()
    for p in map(str, paths):
        if p in seen:
            return p
        seen.add(p)


def parts(attrs):
    """The attributes of each backbone behind features with attributes ``attrs``."""
    return attrs.get("parts") or [attrs]


def join(sets):
    """One FeatureSet of several files' features of the same images, side by side."""

    first = sets[0]
    aligned = [first]
    for fs in sets[1:]:
        _check_same_images(first, fs)
        row = {i: n for n, i in enumerate(fs.image_ids)}
        aligned.append(_take(fs, np.array([row[i] for i in first.image_ids])))
    for fs in aligned[1:]:
        for what, a, b in (("label", first.labels, fs.labels), ("lesion", first.lesion_ids, fs.lesion_ids)):
            differ = np.flatnonzero(np.asarray(a) != np.asarray(b))
            if len(differ):
                i = differ[0]
                raise FeaturesError(
                    f"{first.path} and {fs.path} disagree on the {what} of {len(differ)} images (e.g. "
                    f"{first.image_ids[i]}: {a[i]} vs {b[i]}); expected features of the same dataset: "
                    "re-extract both from one dataset")
    views = _shared_views(aligned)
    features = np.concatenate([fs.features for fs in aligned], axis=1)
    view_array = (np.concatenate([fs.views[:, :views] for fs in aligned], axis=2) if views else None)
    part_attrs = [dict({k: fs.attrs.get(k) for k in PART_KEYS}, path=str(fs.path), feature_dim=fs.feature_dim)
                  for fs in aligned]
    attrs = {
        "module": " + ".join(str(p["module"]) for p in part_attrs), "parts": part_attrs,
        "module_fingerprint": _digest([p.get("module_fingerprint") for p in part_attrs]),
        "key": _digest([p.get("key") for p in part_attrs]), "views": views,
        "augment": first.attrs.get("augment") if views else None, "dataset": first.attrs.get("dataset"),
        "images_per_second": _combined_rate([p.get("images_per_second") for p in part_attrs]),
    }
    seen = [fs.trained_on for fs in aligned if fs.trained_on is not None]
    if seen:
        attrs[TRAINED_ON] = trained_on_bits(np.any(seen, axis=0))
    return FeatureSet(path=" + ".join(str(fs.path) for fs in aligned), features=features, views=view_array,
                      image_ids=first.image_ids, labels=first.labels, lesion_ids=first.lesion_ids,
                      metadata=first.metadata, attrs=attrs,
                      content=next((fs.content for fs in aligned if fs.content is not None), None))


def _check_same_images(a, b):
    ids_a, ids_b = set(a.image_ids), set(b.image_ids)
    if len(ids_b) != len(b.image_ids):
        raise FeaturesError(f"features file {b.path} lists an image twice; {_REEXTRACT}")
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise FeaturesError(
            f"{a.path} and {b.path} hold different images ({len(only_a)} only in the first"
            + (f", e.g. {', '.join(only_a[:3])}" if only_a else "") + f"; {len(only_b)} only in the second"
            + (f", e.g. {', '.join(only_b[:3])}" if only_b else "") + "); expected features of the same "
            "images: extract every backbone from the same dataset")


_REEXTRACT = "re-extract it with `skinfeat extract`"


def _take(fs, rows):
    return FeatureSet(path=fs.path, features=fs.features[rows], views=None if fs.views is None else fs.views[rows],
                      image_ids=fs.image_ids[rows], labels=fs.labels[rows], lesion_ids=fs.lesion_ids[rows],
                      metadata={k: np.asarray(v)[rows] for k, v in fs.metadata.items()},
                      attrs=_reordered_attrs(fs, rows), content=None if fs.content is None else fs.content[rows])


def _reordered_attrs(fs, rows):
    attrs = dict(fs.attrs)
    if fs.trained_on is not None:
        attrs[TRAINED_ON] = trained_on_bits(fs.trained_on[rows])
    return attrs


def _shared_views(sets):
    """How many augmented views every file has, made the same way (0: use none)."""
    if any(fs.views is None for fs in sets):
        return 0
    made = {(fs.attrs.get("augment"), fs.attrs.get("augment_seed")) for fs in sets}
    return min(fs.views.shape[1] for fs in sets) if len(made) == 1 else 0


def _digest(values):
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


def _combined_rate(rates):
    """Images per second of running every backbone one after the other."""
    if not rates or any(not r for r in rates):
        return None
    return 1.0 / sum(1.0 / r for r in rates)


def with_metadata(fs, columns):
    """``fs`` with the metadata ``columns`` encoded (``skinfeat.data.metadata``) and appended."""

    encoding = fit_encoding(fs.metadata, columns, where=f"features file {fs.path}")
    extra, _ = encode(encoding, fs.metadata, len(fs), where=f"features file {fs.path}")
    views = None
    if fs.views is not None:
        views = beside_views(fs.views, extra)
    attrs = dict(fs.attrs, metadata_encoding=encoding, key=_digest([fs.attrs.get("key"), encoding["columns"]]))
    return FeatureSet(path=fs.path, features=np.concatenate([fs.features, extra], axis=1), views=views,
                      image_ids=fs.image_ids, labels=fs.labels, lesion_ids=fs.lesion_ids, metadata=fs.metadata,
                      attrs=attrs, extra=extra, content=fs.content)


def image_width(fs):
    """How many of the columns of ``fs.features`` come from images (the rest: metadata, ``fs.extra``)."""
    return fs.features.shape[1] - (0 if fs.extra is None else fs.extra.shape[1])
