"""The shift check of a cross-validation run: the head fitted on every fold but
the first, scored on the first fold's images clean and under distribution
shifts (``skinfeat.shifts``), the images going through the backbone as
``skinfeat evaluate`` sends them (TFLite, numpy resize). It puts a worst-shift
figure next to the CV one in the leaderboard.

Features of shifted images depend on the backbone, resize policy, images, shift
and TTA set only, not on the head: they are cached in ``features/shifted/``
(``$SKINFEAT_FEATURES``), so every head of a features file reuses them.
"""

import hashlib
import json
import sys

import numpy as np

from skinfeat.errors import DataError
from skinfeat.external import image_features, tta_views, worst_case
from skinfeat.heads.inference import class_offsets, decide, in_classes_order
from skinfeat.metrics import classification_metrics


def _cached(attrs, image_ids, paths, shift, tta, backbone_path, progress):
    from skinfeat.atomic import atomic_path
    from skinfeat.model.tflite import TFLiteBackbone
    from skinfeat.paths import features_dir

    key = hashlib.sha256(json.dumps([attrs.get("module_fingerprint"), attrs.get("input_size"),
                                     attrs.get("resize"), list(image_ids), shift.name if shift else None,
                                     tta]).encode()).hexdigest()[:20]
    path = features_dir() / "shifted" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    backbone = TFLiteBackbone(backbone_path)
    feats = image_features(backbone, paths, attrs["resize"], shift, tta_views(tta), progress=progress)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, feats)
    return feats


def shift_check(fs, head, rows, manifest, shifts, tta="none", fold=0, progress=True):
    """Scores (BMCA, accuracy) of fitted ``head`` on rows ``rows`` of the FeatureSet
    ``fs`` (a fold it was not trained on), clean and under each of ``shifts``;
    ``manifest`` says where those images are (the dataset the features came from)."""
    from tqdm import tqdm

    from skinfeat.model.export import cached_backbone

    ids = [str(i) for i in fs.image_ids[rows]]
    where = dict(zip(manifest.image_ids, manifest.paths))
    missing = [i for i in ids if i not in where]
    if missing:
        raise DataError(f"the shift check needs the images of fold {fold}, but the dataset has no image for "
                        f"{len(missing)} of its {len(ids)} (e.g. {', '.join(missing[:3])}); expected --data "
                        "to be the dataset the features were extracted from")
    attrs = fs.attrs
    backbone = cached_backbone({"module": attrs.get("module"), "module_fingerprint": attrs.get("module_fingerprint"),
                                "input_size": attrs.get("input_size")})
    paths = [where[i] for i in ids]
    y = fs.labels[rows].astype(int)
    offsets = class_offsets(head.classes_, head.class_offsets_)
    results = {}
    with tqdm(total=len(ids) * (1 + len(shifts)), unit="img", desc=f"shift check, fold {fold}",
              disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for shift in [None] + list(shifts):
            feats = _cached(attrs, ids, paths, shift, tta, backbone, bar.update)
            if feats is not None and bar.n < (1 + len(results)) * len(ids):
                bar.update((1 + len(results)) * len(ids) - bar.n)
            proba = np.mean([in_classes_order(head.predict_proba(feats[:, v]), head.classes_)
                             for v in range(feats.shape[1])], axis=0)
            m = classification_metrics(y, proba, decide(proba, offsets))
            results[shift.name if shift else "clean"] = {"bmca": m["bmca"], "accuracy": m["accuracy"]}
    clean = results.pop("clean")
    return {"fold": int(fold), "n": len(ids), "tta": tta, "clean": clean, "shifts": results,
            "worst": worst_case(results)}
