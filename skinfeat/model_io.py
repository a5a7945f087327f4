"""Fitted models on disk, in safe formats only: loading parses JSON, numpy arrays
(``allow_pickle=False``) and, for LightGBM, its text model; it never unpickles
or runs code.

Layout of a model directory::

    model.json    format "skinfeat-model", format_version, head (registry name),
                  params (every head parameter), classes (output columns, CLASSES names),
                  backbone (module, module_source, module_fingerprint, module_info (with
                  the preprocessing and value range), input_size, resize, feature_dim,
                  views, dtype), features (key, path), training (images, views used,
                  folds, CV metrics), skinfeat_version, created, files, numpy_head (the
                  check of the head's fast numpy evaluation), export (backbone.tflite)
    state.npz     the head's fitted arrays (scaler, PCA, weights, class offsets, classes_)
    lightgbm.txt  LightGBM's text model (lightgbm head only)
    backbone.tflite  the backbone as TFLite, when it could be exported (``skinfeat.export``;
                  model.json ``export`` says how, or why it was skipped): prediction
                  from images then needs nothing outside the directory

The backbone block holds what prediction from images needs to reproduce the
features: which module, its fingerprint, input size and resize method.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from skinfeat.classes import CLASSES
from skinfeat.errors import ModelError, SkinfeatError

FORMAT = "skinfeat-model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
STATE = "state.npz"
BACKBONE_KEYS = ("module", "module_source", "module_fingerprint", "module_info", "input_size",
                 "resize", "feature_dim", "views", "dtype")


@dataclass
class FittedModel:
    """A loaded model: the fitted head, its class names and the backbone it expects."""

    head: object
    classes: list
    backbone: dict
    info: dict
    path: str = ""

    def predict_proba(self, features, views=None):
        """Probabilities [n, len(CLASSES)] in CLASSES order, averaged over ``views``
        [n, V, d] when given (test-time augmentation)."""
        from skinfeat.evaluate import predict_tta

        return predict_tta(self.head, np.asarray(features, np.float32), views)

    def predict(self, features, views=None):
        """The decided class names (after the head's prior adjustment)."""
        from skinfeat.evaluate import decide

        return [CLASSES[i] for i in decide(self.head, self.predict_proba(features, views))]

    def adjusted_proba(self, features, views=None):
        """Probabilities shifted by the prior adjustment, whose argmax is ``predict``:
        what an ISIC-style submission (scored by its argmax) should hold."""
        from skinfeat.evaluate import class_offsets
        from skinfeat.heads.base import log_softmax

        with np.errstate(divide="ignore"):
            scores = np.log(self.predict_proba(features, views)) + class_offsets(self.head)
        return np.exp(log_softmax(np.where(np.isfinite(scores), scores, -1e30)))

    def check_features(self, attrs):
        """ModelError unless features with attributes ``attrs`` come from this model's backbone."""
        want, got = self.backbone.get("module_fingerprint"), attrs.get("module_fingerprint")
        if want and got and want != got:
            raise ModelError(f"features from module {attrs.get('module')!r} (fingerprint {str(got)[:12]}) "
                             f"do not match model {self.path} (module {self.backbone.get('module')!r}, "
                             f"fingerprint {str(want)[:12]}); extract features with the model's backbone")


def save_model(directory, head, head_name, attrs, training=None, export=True):
    """Save fitted ``head`` (registered as ``head_name``) trained on features whose file
    attributes are ``attrs`` into ``directory``, replacing a previous model there.
    Written to a temporary directory first, then renamed into place. With ``export``,
    the backbone goes in too (``skinfeat.export``) when it is available here, and the
    head's numpy evaluation for fast prediction is checked (``skinfeat.numpy_heads``)."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / MANIFEST).is_file():
        raise ModelError(f"{directory} exists and is not a skinfeat model directory; "
                         "expected an empty or new directory for --out: pick another path")
    state = head.get_state()
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "head": head_name,
        "params": head.get_params(), "classes": [CLASSES[int(c)] for c in head.classes_],
        "backbone": {k: attrs.get(k) for k in BACKBONE_KEYS},
        "features": {"key": attrs.get("key"), "path": attrs.get("path")},
        "training": training or {}, "skinfeat_version": _version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        np.savez(tmp / STATE, **state)
        manifest["files"] = [STATE] + head.save_files(tmp)
        if export:  # what prediction from images needs (skinfeat.predict)
            from skinfeat.export import try_export
            from skinfeat.numpy_heads import check_numpy_head

            manifest["numpy_head"] = check_numpy_head(tmp, manifest, head)
            manifest["export"] = try_export(tmp, manifest["backbone"])
            manifest["files"] += [manifest["export"]["file"]] if "file" in manifest["export"] else []
        from skinfeat.records import json_safe

        (tmp / MANIFEST).write_text(json.dumps(json_safe(manifest), indent=1), encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_manifest(directory):
    """The decoded model.json of ``directory``; ModelError when it is not a model."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{directory} holds no {MANIFEST}; expected a model directory written by "
                         "`skinfeat fit --out DIR`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); re-fit with `skinfeat fit --out`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not a skinfeat model (format={manifest.get('format')!r} "
                         f"if a dict, expected {FORMAT!r}); re-fit with `skinfeat fit --out`")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has model format version {manifest.get('format_version')}, this "
                         f"skinfeat reads version {FORMAT_VERSION}; re-fit with `skinfeat fit --out`")
    return manifest


def load_model(directory, current_fingerprint=None):
    """Load a model directory. With ``current_fingerprint`` (of the backbone as it is
    now), refuse a model fitted on features of a backbone whose fingerprint differs."""
    manifest = read_manifest(directory)
    backbone = manifest.get("backbone", {})
    saved = backbone.get("module_fingerprint")
    if current_fingerprint is not None and saved != current_fingerprint:
        raise ModelError(
            f"model {directory} was fitted on features of module {backbone.get('module')!r} with "
            f"fingerprint {str(saved)[:12]}, but that module now has fingerprint "
            f"{str(current_fingerprint)[:12]}; its features changed, so the head no longer fits them: "
            f"re-extract features and re-fit with `skinfeat fit --head {manifest.get('head')} --out {directory}`")
    from skinfeat.heads import head_class  # here: reading a manifest must stay light (predict)

    try:
        cls = head_class(manifest["head"])
        head = cls(**_params(manifest["params"]))
        with np.load(Path(directory) / STATE, allow_pickle=False) as npz:
            head.set_state({name: npz[name] for name in npz.files})
        head.load_files(directory)
    except SkinfeatError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model {directory} is incomplete or damaged ({type(exc).__name__}: {exc}); "
                         "re-fit with `skinfeat fit --out`") from None
    return FittedModel(head, manifest["classes"], backbone, manifest, str(directory))


def _params(params):
    """JSON turned tuples into lists; give tuples back so get_params round-trips."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _version():
    from skinfeat import __version__

    return __version__
