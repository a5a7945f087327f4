"""The shift check of a cross-validation run: the head fitted on every fold but
the first, scored on the first fold's images clean and under distribution
shifts (``skinfeat.imaging.shifts``), the images going through the backbone as
``skinfeat evaluate`` sends them (TFLite, numpy resize). It puts a worst-shift
figure next to the CV one in the leaderboard.

Features of shifted images depend on the backbone, resize policy, images, shift
and TTA set only, not on the head: they are cached in ``features/shifted/``
(``$SKINFEAT_FEATURES``), so every head of a features file reuses them.
"""

import functools
import hashlib
import json
import sys

import numpy as np

from skinfeat.backbones.tflite import TFLiteBackbone
from skinfeat.core.atomic import atomic_path
from skinfeat.core.errors import DataError, FeaturesError
from skinfeat.core.intervals import Resamples, decision_intervals
from skinfeat.core.metrics import classification_metrics
from skinfeat.core.paths import features_dir
from skinfeat.core.progress import bar as progress_bar
from skinfeat.core.writable import reason
from skinfeat.data.metadata import beside_views
from skinfeat.features import precision as precisions
from skinfeat.features.join import image_width, parts
from skinfeat.heads.inference import class_offsets, decide, mean_over_views
from skinfeat.imaging.tta import tta_views
from skinfeat.model.batches import image_features
from skinfeat.model.export import cached_backbone
from skinfeat.model.format import lesion_policy, precision_policy
from skinfeat.runs.evaluate import worst_case


def shifted_features(attrs, image_ids, paths, shift, tta="none", progress=None, backbone=None):
    """Features [n, 1 + TTA views, D] of the images at ``paths`` (ids ``image_ids``)
    under ``shift`` (None: clean), through the TFLite copy of the backbone that
    features with attributes ``attrs`` came from, in their precision, cropped and resized as
    they were; cached in ``features/shifted/``. ``backbone``: a function returning the loaded
    backbone (``tflite_backbone``; called only when the features must be computed)."""

    lesion = lesion_policy(f"the features of {attrs.get('module')}", attrs, FeaturesError)
    precision = precision_policy(f"the features of {attrs.get('module')}", attrs, FeaturesError)
    key = hashlib.sha256(json.dumps([attrs.get("module_fingerprint"), attrs.get("input_size"),
                                     attrs.get("resize"), list(image_ids), shift.name if shift else None, tta]
                                    + ([lesion] if lesion != "none" else [])
                                    + ([precision, attrs.get("int8_calibration")] if precision != "float32" else [])
                                    ).encode()).hexdigest()[:20]
    path = features_dir() / "shifted" / f"{key}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a damaged cache entry: computed again and replaced
            pass
    feats = image_features((backbone or tflite_backbone(attrs))(), paths, attrs["resize"], shift,
                           tta_views(tta), progress=progress, lesion=lesion)
    try:
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, feats)
    except OSError as exc:  # a cache: the check goes on without it

        print(f"note: cannot cache shifted features in {path.parent} ({reason(exc)}); "
              "they are computed again next time", file=sys.stderr)
    return feats


def tflite_backbone(attrs):
    """A function loading, once, the backbone of the features with ``attrs`` in the
    arithmetic they were extracted in (numpy images -> numpy features): the TFLite copy of
    the module (float32), the int8 TFLite copy they were extracted with, or the module run
    under bfloat16 (``skinfeat.features.precision``)."""

    precision = precision_policy(f"the features of {attrs.get('module')}", attrs, FeaturesError)

    @functools.lru_cache(maxsize=1)
    def load():
        if precision == "bfloat16":
            return precisions.bfloat16_backbone(attrs, FeaturesError)
        if precision == "int8":
            return TFLiteBackbone(precisions.cached_int8(attrs, FeaturesError))
        return TFLiteBackbone(cached_backbone({k: attrs.get(k) for k in
                                               ("module", "module_fingerprint", "input_size")}))
    return load


def shift_check(fs, head, rows, manifest, shifts, tta="none", fold=0, progress=True, means=None):
    """Scores (BMCA, accuracy) of fitted ``head`` on rows ``rows`` of the FeatureSet
    ``fs`` (a fold it was not trained on), clean and under each of ``shifts``
    (each backbone of joined features shifted, metadata columns unchanged);
    ``manifest`` says where those images are (the dataset the features came from).
    ``means``: a dict that gets each shift's mean image features [D] ("clean" too),
    what the drift summary compares new images with (``skinfeat.runs.drift``)."""
    paths = fold_paths([str(i) for i in fs.image_ids[rows]], manifest, fold)
    backbones = [(part, tflite_backbone(part)) for part in parts(fs.attrs)]

    def probabilities(shift, update):
        feats = fold_features(fs, rows, paths, shift, tta, update, backbones)
        if means is not None:
            means[shift.name if shift else "clean"] = feats[:, 0, :image_width(fs)].mean(axis=0)
        return mean_over_views(head.predict_proba, head.classes_, feats[:, 0],
                               feats[:, 1:] if feats.shape[1] > 1 else None)
    return scored_shifts(fs.labels[rows].astype(int), probabilities, class_offsets(head.classes_, head.class_offsets_),
                         shifts, tta, fold, progress, groups=fs.lesion_ids[rows])


def fold_paths(ids, manifest, fold):
    """The paths in ``manifest`` of images ``ids`` (of fold ``fold``); DataError when some are missing."""
    where = dict(zip(manifest.image_ids, manifest.paths))
    missing = [i for i in ids if i not in where]
    if missing:
        raise DataError(f"the shift check needs the images of fold {fold}, but the dataset has no image for "
                        f"{len(missing)} of its {len(ids)} (e.g. {', '.join(missing[:3])}); expected --data "
                        "to be the dataset the features were extracted from")
    return [where[i] for i in ids]


def fold_features(fs, rows, paths, shift, tta, progress, backbones):
    """Head inputs [n, 1 + TTA views, D] of rows ``rows`` of ``fs`` (images at
    ``paths``) under ``shift``: each backbone's (``backbones``: [(part attrs, loader)])
    shifted features side by side, then the rows' metadata columns, which no shift of
    the image changes."""
    ids = [str(i) for i in fs.image_ids[rows]]
    step = (lambda n: progress(n / len(backbones))) if progress else None
    feats = np.concatenate([shifted_features(part, ids, paths, shift, tta, step, backbone)
                            for part, backbone in backbones], axis=2)
    return feats if fs.extra is None else beside_views(feats, fs.extra[rows])


def scored_shifts(y, probabilities, offsets, shifts, tta="none", fold=0, progress=True, groups=None):
    """The shift check's block: BMCA and accuracy of ``probabilities(shift, update)``
    ([n, 7] for the images of true classes ``y``; ``shift`` None: clean; ``update(k)``
    as k images are done) decided with ``offsets``, clean and under each of ``shifts``,
    each with its 95 % intervals (``intervals``: lesion-grouped by ``groups``, the
    same resamples for every shift)."""

    resamples = Resamples.draw(None if groups is None else np.asarray(groups, dtype=str), n=len(y),
                               grouped_by="image" if groups is None else "lesion")
    results = {}
    with progress_bar(None, progress, total=len(y) * (1 + len(shifts)), unit="img",
                      desc=f"shift check, fold {fold}") as bar:
        for done, shift in enumerate([None] + list(shifts), start=1):
            proba = probabilities(shift, bar.update)
            bar.update(done * len(y) - bar.n)  # cached shifts count as done too
            pred = decide(proba, offsets)
            m = classification_metrics(y, proba, pred)
            results[shift.name if shift else "clean"] = {"bmca": m["bmca"], "accuracy": m["accuracy"],
                                                         "intervals": decision_intervals(y, pred, resamples)}
    clean = results.pop("clean")
    return {"fold": int(fold), "n": len(y), "tta": tta, "clean": clean, "shifts": results,
            "worst": worst_case(results), "grouped_by": resamples.grouped_by}
