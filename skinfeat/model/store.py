"""Saving and loading a fitted head as a model directory (``skinfeat.model``
describes the layout). Loading gives the scikit-learn head itself
(``FittedModel``); prediction without scikit-learn is ``skinfeat.model.predictor``."""

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from skinfeat import __version__
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import ModelError, SkinfeatError
from skinfeat.core.ood import FILE as OOD_FILE
from skinfeat.heads import head_class
from skinfeat.heads.inference import LOG_PROBA, mean_over_views
from skinfeat.model.export import export_into
from skinfeat.model.format import (
    BACKBONE_KEYS,
    FALLBACK,
    FORMAT,
    FORMAT_VERSION,
    HEAD_ERRORS,
    STATE,
    damaged,
    new_model_dir,
    probe_head,
    read_manifest,
    read_state,
    write_manifest,
)
from skinfeat.model.seen import write_seen


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
        return mean_over_views(self.head.predict_proba, self.head.classes_, np.asarray(features, np.float32), views)


def save_model(directory, head, head_name, attrs, training=None, export=False, skip_unavailable=False, seen=None,
               fallback=None, ood=None):
    """Save fitted ``head`` (registered as ``head_name``) trained on features whose file
    attributes are ``attrs`` into ``directory``, replacing a previous model there. With
    ``export``, the backbone that extracted the features (``attrs["module"]``, or each
    of ``attrs["parts"]``: the user named those features files) goes in too (``skinfeat.model.export.export_into``;
    ``skip_unavailable``: a backbone not available here is recorded as skipped). The
    whole model is built in a temporary directory that then takes ``directory``'s
    place (``skinfeat.model.format.new_model_dir``): it is complete or it is not there.
    ``seen``: (image ids, content hashes or None) of the images the head was fitted
    on, kept as ``seen.npz`` (``skinfeat.model.seen``) for ``evaluate``.
    ``fallback``: (what model.json says of it, ``save(folder)``) of an image-only model
    saved inside as ``fallback/``, which answers the images without metadata of a
    model fitted with it (``skinfeat.model.predictor.Predictor.fallback``).
    ``ood``: (what model.json says of it, its statistics) of the out-of-distribution
    score (``skinfeat.core.ood``), kept as ``ood.npz``."""
    directory = Path(directory)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "head": head_name,
        "params": head.get_params(), "classes": [CLASSES[int(c)] for c in head.classes_],
        "backbone": {k: attrs.get(k) for k in BACKBONE_KEYS},
        "features": {"key": attrs.get("key"), "path": attrs.get("path")},
        "training": training or {}, "skinfeat_version": _version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # The predictor evaluates the head with the functions the head itself predicts with.
        "numpy_head": {"ok": head_name in LOG_PROBA, "evaluator": "skinfeat.heads.inference"},
        "metadata": attrs.get("metadata_encoding"),
    }
    parts = attrs.get("parts")  # features of several backbones side by side (skinfeat.features.join)
    if parts:
        manifest["parts"] = [{"backbone": {k: p.get(k) for k in BACKBONE_KEYS}, "export": None} for p in parts]
    with new_model_dir(directory) as tmp:
        np.savez(tmp / STATE, **head.get_state())
        manifest["files"] = [STATE] + head.save_files(tmp)
        if seen is not None:
            manifest["training"] = dict(manifest["training"], seen=write_seen(tmp, *seen))
        if ood is not None:
            fields, stats = ood
            np.savez(tmp / OOD_FILE, **stats)
            manifest["ood"] = dict(fields, file=OOD_FILE)
            manifest["files"].append(OOD_FILE)
        if fallback is not None:
            about, save = fallback
            save(tmp / FALLBACK)
            manifest["fallback"] = dict(about, dir=FALLBACK)
        if export:
            modules = [p.get("module") for p in parts] if parts else [attrs.get("module")]
            export_into(tmp, manifest, modules, directory, skip_unavailable)
        write_manifest(tmp, manifest)
    return directory


def load_model(directory, current_fingerprint=None):
    """Load a model directory. With ``current_fingerprint`` (of the backbone as it is
    now), refuse a model fitted on features of a backbone whose fingerprint differs."""
    manifest = read_manifest(directory)
    backbone = manifest["backbone"]
    saved = backbone.get("module_fingerprint")
    if current_fingerprint is not None and saved != current_fingerprint:
        raise ModelError(
            f"model {directory} was fitted on features of module {backbone.get('module')!r} with "
            f"fingerprint {str(saved)[:12]}, but that module now has fingerprint "
            f"{str(current_fingerprint)[:12]}; its features changed, so the head no longer fits them: "
            f"re-extract features and re-fit with `skinfeat fit --head {manifest['head']} --out {directory}`")

    state = read_state(directory, manifest)
    try:
        head = head_class(manifest["head"])(**_params(manifest["params"]))
        head.set_state(state)
        head.load_files(directory)
    except SkinfeatError:
        raise
    except HEAD_ERRORS as exc:
        raise damaged(directory, f"cannot read its {manifest['head']} head ({type(exc).__name__}: {exc})") from None
    probe_head(directory, head.predict_proba, head.n_features_in_, len(head.classes_))
    return FittedModel(head, manifest["classes"], backbone, manifest, str(directory))


def _params(params):
    """JSON turned tuples into lists; give tuples back so get_params round-trips."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _version():
    return __version__
