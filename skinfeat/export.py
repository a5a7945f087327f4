"""Put the backbone inside a model directory, so that prediction needs nothing else.

``export_backbone`` converts the backbone SavedModel that produced a model's
features (preprocessing included: it is part of the module) into a float32
TFLite flatbuffer, ``backbone.tflite``, checks it against the SavedModel on
probe images, and returns what ``model.json`` records under ``export``::

    file, sha256, format "tflite", module, module_fingerprint, input_size, resize,
    feature_dim, max_abs_diff (TFLite vs SavedModel on the probes), tensorflow_version

``skinfeat.predict`` runs the file with the light ``ai-edge-litert`` interpreter:
a new process predicts without importing TensorFlow.

The conversion runs in a fresh Python process (``python -m skinfeat.export``),
as backbone builds do: it keeps TensorFlow's import, logs and tracing memory
out of the caller (``fit`` with a numpy head never imports TensorFlow).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from skinfeat import paths
from skinfeat.errors import ModelError, SkinfeatError

TFLITE = "backbone.tflite"
MAX_RELATIVE_DIFF = 1e-3  # TFLite vs SavedModel, relative to the largest feature


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_backbone(directory, backbone, module=None):
    """Write ``directory/backbone.tflite`` for the model's ``backbone`` block (from
    model.json) and return the ``export`` record. ``module``: where the backbone
    is now (a spec for ``resolve_module``), by default the one recorded. Raises
    ModelError when it cannot be found or its fingerprint changed since the
    features were extracted."""
    spec = module or backbone.get("module")
    if not spec:
        raise ModelError("the model does not record which backbone produced its features; re-fit it "
                         "with `skinfeat fit --out` on features from `skinfeat extract`")
    out = Path(directory) / TFLITE
    args = {"module": spec, "fingerprint": backbone.get("module_fingerprint"),
            "input_size": backbone.get("input_size"), "out": str(out)}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.PROJECT_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "skinfeat.export", json.dumps(args)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        out.unlink(missing_ok=True)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ModelError(lines[-1] if lines else f"exporting backbone {spec} failed ({done.returncode})")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    info.update(file=TFLITE, sha256=sha256_file(out), resize=backbone.get("resize") or "squash",
                module=backbone.get("module"))
    return info


def try_export(directory, backbone):
    """``export_backbone``, or ``{"skipped": why}`` when the backbone is not available
    here (a model is still saved; ``skinfeat export`` can add the backbone later)."""
    try:
        return export_backbone(directory, backbone)
    except SkinfeatError as exc:
        return {"skipped": str(exc)}


def export_model(directory, module=None):
    """Export the backbone into an existing model directory and record it in its
    model.json (both replaced atomically); returns the ``export`` record."""
    from skinfeat.model_io import MANIFEST, read_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".export."))
    try:
        info = export_backbone(tmp, manifest.get("backbone", {}), module)
        os.replace(tmp / TFLITE, directory / TFLITE)
        manifest["export"] = info
        manifest["files"] = sorted(set(manifest.get("files", [])) | {TFLITE})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(tmp / MANIFEST, directory / MANIFEST)
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


def convert(module, fingerprint, input_size, out):
    """Resolve ``module``, check its fingerprint, convert it to TFLite at ``out`` and
    verify the flatbuffer on probe images. Returns the verified facts."""
    from skinfeat.backbones import resolve_module

    mod = resolve_module(module)
    if fingerprint and mod.fingerprint != fingerprint:
        raise ModelError(
            f"backbone {module} has fingerprint {mod.fingerprint[:12]} now, but the model was fitted on "
            f"features of fingerprint {fingerprint[:12]}: the backbone changed since, so its features no "
            "longer fit the head; re-extract features and re-fit, or pass --module with the original backbone")
    import numpy as np
    from skinfeat.predict import TFLiteBackbone
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
