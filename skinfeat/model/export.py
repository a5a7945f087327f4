"""Put the backbone inside a model directory, so that prediction needs nothing else.

``export_model`` converts the backbone SavedModel that produced a model's
features (preprocessing included: it is part of the module) into a float32
TFLite flatbuffer, ``backbone.tflite``, checks it against the SavedModel on
probe images, and records under ``export`` in ``model.json``::

    file, sha256, format "tflite", module, module_fingerprint, input_size, resize,
    feature_dim, max_abs_diff (TFLite vs SavedModel on the probes), tensorflow_version

``skinfeat.model.predictor`` runs the file with the light ``ai-edge-litert``
interpreter: a new process predicts without importing TensorFlow.

The conversion runs in a fresh Python process (``python -m skinfeat.model.export``,
``skinfeat.runtime.run_fresh``), as backbone builds do: it keeps TensorFlow's
import, logs and tracing memory out of the caller (``fit`` with a numpy head
never imports TensorFlow).
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from skinfeat.errors import ModelError, SkinfeatError
from skinfeat.model.format import TFLITE, check_fingerprint, read_manifest, resize_policy, sha256_file, \
    write_manifest
from skinfeat.runtime import run_fresh

MAX_RELATIVE_DIFF = 1e-3  # TFLite vs SavedModel, relative to the largest feature


def export_backbone(directory, backbone, module=None, model=None):
    """Write ``directory/backbone.tflite`` for the model's ``backbone`` block (from
    model.json) and return the ``export`` record. ``module``: where the backbone
    is now (a spec for ``resolve_module``), by default the one recorded; ``model``:
    the model directory, for messages. Raises ModelError when it cannot be found
    or its fingerprint changed since the features were extracted."""
    spec = module or backbone.get("module")
    if not spec:
        raise ModelError("the model does not record which backbone produced its features; re-fit it "
                         "with `skinfeat fit --out` on features from `skinfeat extract`")
    out = Path(directory) / TFLITE
    args = {"module": spec, "fingerprint": backbone.get("module_fingerprint"),
            "input_size": backbone.get("input_size"), "out": str(out), "model": str(model or directory)}
    try:
        info = run_fresh("skinfeat.model.export", [json.dumps(args)], ModelError)
    except ModelError:
        out.unlink(missing_ok=True)
        raise
    info.update(file=TFLITE, sha256=sha256_file(out), module=backbone.get("module"))
    return info


def cached_backbone(backbone):
    """The TFLite copy of the backbone block's module (``export_backbone``), converted
    once into ``$SKINFEAT_HOME/tflite/`` keyed by module, fingerprint and input size;
    returns its path. For scoring features of new images without a model directory
    (``skinfeat.shiftcheck``)."""
    import hashlib

    from skinfeat.paths import skinfeat_home

    key = hashlib.sha256(json.dumps([backbone.get("module"), backbone.get("module_fingerprint"),
                                     backbone.get("input_size")]).encode()).hexdigest()[:16]
    path = skinfeat_home() / "tflite" / f"{key}.tflite"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            export_backbone(tmp, backbone)
            os.replace(Path(tmp) / TFLITE, path)
    return path


def export_model(directory, module=None, skip_unavailable=False):
    """Export the backbone into the model ``directory`` and record it in its
    model.json (both replaced atomically); returns the ``export`` record. With
    ``skip_unavailable``, a backbone that cannot be exported here is recorded as
    ``{"skipped": why}`` instead (the model is still usable with features;
    ``skinfeat export`` can add the backbone later)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".export."))
    try:
        try:
            backbone = manifest.get("backbone", {})
            resize = resize_policy(directory, backbone)  # prediction resizes images as extraction did
            info = dict(export_backbone(tmp, backbone, module, model=directory), resize=resize)
        except SkinfeatError as exc:
            if not skip_unavailable:
                raise
            info = {"skipped": str(exc)}
        else:
            os.replace(tmp / TFLITE, directory / TFLITE)
            files = manifest.get("files", [])
            manifest["files"] = files + ([] if TFLITE in files else [TFLITE])
        manifest["export"] = info
        write_manifest(directory, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


# ----------------------------------------------------------------------------- the subprocess

def _probe_images(size):
    """Deterministic test images: noise, a smooth gradient, flat grey."""
    import numpy as np

    h, w = size
    noise = np.random.default_rng(0).random((2, h, w, 3), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w] / np.float32(max(h, w))
    gradient = np.stack([yy, xx, 1 - (yy + xx) / 2], axis=-1)[None].astype(np.float32)
    grey = np.full((1, h, w, 3), 0.5, np.float32)
    return np.concatenate([noise, gradient, grey])


def convert(module, fingerprint, input_size, out, model):
    """Resolve ``module``, check its fingerprint, convert it to TFLite at ``out`` and
    verify the flatbuffer on probe images. Returns the verified facts."""
    from skinfeat.backbones import resolve_module

    mod = resolve_module(module)
    if fingerprint:
        check_fingerprint(model, {"backbone": {"module_fingerprint": fingerprint}}, mod.fingerprint,
                          f"backbone {module}", "re-extract features and re-fit, or pass --module with "
                          "the original backbone")
    import numpy as np
    from skinfeat.model.tflite import TFLiteBackbone
    from skinfeat.runtime import tensorflow

    tf = tensorflow()
    size = tuple(input_size or mod.input_size or (224, 224))
    fn = mod.load()
    spec = tf.TensorSpec([None, size[0], size[1], 3], tf.float32, name="images")
    concrete = tf.function(lambda images: fn(images), input_signature=[spec]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn.saved_model)
    try:
        Path(out).write_bytes(converter.convert())
    except Exception as exc:  # the converter raises many types; one line says why
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"backbone {module} cannot be converted to TFLite ({first}); "
                         "prediction from images needs a backbone made of TFLite built-in ops") from None
    probes = _probe_images(size)
    want = fn(tf.constant(probes)).numpy()
    got = TFLiteBackbone(out)(probes)
    diff = float(np.abs(want - got).max())
    if diff > MAX_RELATIVE_DIFF * max(float(np.abs(want).max()), 1e-6):
        raise ModelError(f"the TFLite copy of backbone {module} differs from it by {diff:.2g} on probe "
                         f"images (features up to {np.abs(want).max():.3g}); expected agreement within "
                         f"{MAX_RELATIVE_DIFF:g} relative: report this backbone")
    return {"format": "tflite", "module_fingerprint": mod.fingerprint, "input_size": list(size),
            "feature_dim": int(want.shape[1]), "max_abs_diff": diff, "probe_images": len(probes),
            "tensorflow_version": tf.__version__}


if __name__ == "__main__":
    try:
        print(json.dumps(convert(**json.loads(sys.argv[1]))))
    except SkinfeatError as exc:
        sys.exit(str(exc))
