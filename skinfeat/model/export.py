"""Put the backbone inside a model directory, so that prediction needs nothing else.

``export_model`` (``export_into`` for a model being written) converts the
backbone SavedModel that produced a model's features (preprocessing included:
it is part of the module) into a float32 TFLite flatbuffer, ``backbone.tflite``,
checks it against the SavedModel on probe images, and records under ``export``
in ``model.json``::

    file, sha256, format "tflite", module, module_fingerprint, input_size, resize,
    feature_dim, max_abs_diff (TFLite vs SavedModel on the probes), tensorflow_version

Features extracted at another precision (``skinfeat.features.precision``) keep it: for int8
the backbone is the int8 TFLite copy they were extracted with (so prediction computes
the same features); bfloat16 has no TFLite form, so its export is refused
(``Unavailable``: ``fit`` records it as skipped).

``skinfeat.model.predictor`` runs the file with the light ``ai-edge-litert``
interpreter: a new process predicts without importing TensorFlow.

``fit --out`` exports into the model's temporary directory before it takes the
model's place; ``skinfeat export`` builds a copy of the model with the new
backbone beside it, so the old backbone stays until the new one is in. Which
backbone it may load: ``skinfeat.model.format.backbone_spec``.

The conversion runs in a fresh Python process (``python -m skinfeat.model.export``,
``skinfeat.core.tf_runtime.run_fresh``), as backbone builds do: it keeps TensorFlow's
import, logs and tracing memory out of the caller (``fit`` with a numpy head
never imports TensorFlow). A caller that holds TensorFlow already (fine-tuning,
a head fitted in TensorFlow) converts in its own process: the import is paid.
"""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from skinfeat.backbones.resolve import quick_fingerprint, resolve_module
from skinfeat.backbones.tflite import TFLiteBackbone
from skinfeat.core.atomic import atomic_dir, write_atomically
from skinfeat.core.errors import ModelError, SkinfeatError
from skinfeat.core.paths import skinfeat_home
from skinfeat.core.tf_runtime import run_fresh, tensorflow
from skinfeat.core.writable import write_error
from skinfeat.features.precision import cached_int8
from skinfeat.model.format import (
    TFLITE,
    backbone_spec,
    check_fingerprint,
    lesion_policy,
    model_parts,
    new_model_dir,
    precision_policy,
    read_manifest,
    resize_policy,
    sha256_file,
    write_manifest,
)
from skinfeat.model.predictor import HeadFunction

MAX_RELATIVE_DIFF = 1e-3  # TFLite vs SavedModel, relative to the largest feature


class Unavailable(ModelError):
    """The backbone cannot be exported here: not found, not convertible, or changed
    since the features were extracted (a full disk or a crash is something else)."""


def export_backbone(directory, backbone, module, model=None, file=TFLITE):
    """Write ``directory/backbone.tflite`` of ``module`` (a spec for ``resolve_module``:
    the caller decides which it may load, see ``backbone_spec``), checked against the
    fingerprint in the model's ``backbone`` block (from model.json), and return the
    ``export`` record; ``model``: the model directory, for messages. Raises Unavailable
    when it cannot be found, converted, or its fingerprint changed since the features
    were extracted; OSError when the file cannot be written (a full disk); ModelError
    when the conversion crashed."""
    if not module:
        raise Unavailable("the model does not record which backbone produced its features; re-fit it "
                          "with `skinfeat fit --out` on features from `skinfeat extract`")
    out = Path(directory) / file
    precision = precision_policy(f"model {model or directory}", backbone, Unavailable)
    if precision != "float32":
        info = _copy_precision(out, backbone, precision, model or directory)
        return dict(info, file=file, sha256=sha256_file(out))
    cached = conversion_cache(backbone.get("module_fingerprint"), backbone.get("input_size"))
    if (cached is not None and cached.with_suffix(".json").is_file() and cached.is_file()
            and quick_fingerprint(module) == backbone.get("module_fingerprint")):
        shutil.copyfile(cached, out)  # this very module, converted and verified before: no new process
        info = json.loads(cached.with_suffix(".json").read_text())
        return dict(info, file=file, sha256=sha256_file(out), module=backbone.get("module"))
    args = {"module": module, "fingerprint": backbone.get("module_fingerprint"),
            "input_size": backbone.get("input_size"), "out": str(out), "model": str(model or directory)}
    if "tensorflow" in sys.modules:  # the caller holds TensorFlow already (fine-tuning, a TF head)
        try:
            info = _answer(args)
        except Exception as exc:  # noqa: BLE001 - as a crash of the fresh process reads
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"exporting backbone {module} crashed: {first}") from None
    else:
        info = run_fresh("skinfeat.model.export", [json.dumps(args)], ModelError,
                         prefix=f"exporting backbone {module} crashed: ")
    if "os_error" in info:
        raise OSError(*info["os_error"])
    if "unavailable" in info:
        raise Unavailable(info["unavailable"])
    info.update(file=file, sha256=sha256_file(out), module=backbone.get("module"))
    return info


def _copy_precision(out, backbone, precision, model):
    """The backbone of features extracted at ``precision`` (not float32) at ``out``: for
    int8 the TFLite copy they were extracted with (``skinfeat.features.precision.int8_file``), so
    prediction computes the same features; Unavailable for bfloat16 (no TFLite form)."""

    if precision == "bfloat16":
        raise Unavailable(f"the features of model {model} were extracted at bfloat16 (oneDNN mixed precision), "
                          "which has no TFLite form; re-extract at float32 or int8 and re-fit to predict from images")
    cached = cached_int8(backbone, Unavailable)
    shutil.copyfile(cached, out)
    return {**json.loads(cached.with_suffix(".json").read_text()), "format": "tflite", "precision": precision,
            "module": backbone.get("module"),
            "module_fingerprint": backbone.get("module_fingerprint"), "input_size": backbone.get("input_size"),
            "feature_dim": backbone.get("feature_dim"), "int8_calibration": backbone.get("int8_calibration")}


def cached_backbone(backbone):
    """The TFLite copy of the backbone block's module (``export_backbone``), from the
    conversion cache (``conversion_cache``: converted once per fingerprint and input
    size); returns its path. For scoring features of new images without a model
    directory (``skinfeat.runs.shiftcheck``)."""
    path = conversion_cache(backbone.get("module_fingerprint"), backbone.get("input_size"))
    if path is None:  # no fingerprint recorded: keyed by the module's name
        path = cache_dir() / f"{hashlib.sha256(str(backbone.get('module')).encode()).hexdigest()[:16]}.tflite"
    if not path.is_file():
        try:
            with atomic_dir(path.with_suffix(".export")) as tmp:  # a killed export is swept next time
                export_backbone(tmp, backbone, backbone.get("module"))
                os.replace(Path(tmp) / TFLITE, path)
        except OSError as exc:
            raise write_error(path, exc, f"the TFLite copy of backbone {backbone.get('module')}") from None
    return path


def cache_dir():
    """Where converted backbones are kept: ``$SKINFEAT_HOME/tflite``."""
    return skinfeat_home() / "tflite"


def conversion_cache(fingerprint, input_size):
    """Where the verified TFLite conversion of the module with ``fingerprint`` at
    ``input_size`` is kept (``$SKINFEAT_HOME/tflite/<key>.tflite``, its export record
    beside it as ``.json``); None without a fingerprint. Every model directory, shift
    check and ensemble member of that backbone copies it instead of converting again."""
    if not fingerprint:
        return None
    key = hashlib.sha256(json.dumps([fingerprint, list(input_size) if input_size else None]).encode()).hexdigest()
    return cache_dir() / f"{key[:16]}.tflite"


def export_into(directory, manifest, modules, model, skip_unavailable=False):
    """Export each backbone of the model being written in ``directory`` (``modules``:
    one spec per ``model_parts`` entry) and record it in ``manifest`` (the caller
    writes it); returns the ``export`` records. With ``skip_unavailable``, a
    backbone that cannot be exported here is recorded as ``{"skipped": why}``
    instead (the model is still usable with features; ``skinfeat export`` can add
    the backbone later). A file that cannot be written (a full disk) is never
    "unavailable": its OSError goes up."""
    parts, infos = model_parts(manifest), []
    for i, (part, module) in enumerate(zip(parts, modules)):
        backbone = part["backbone"]
        try:
            resize = resize_policy(model, backbone, Unavailable)  # prediction resizes images as extraction did
            lesion_policy(f"model {model}", backbone, Unavailable)  # and crops them so: one it knows
            info = dict(export_backbone(directory, backbone, module, model, part["file"]), resize=resize)
        except Unavailable as exc:
            if not skip_unavailable:
                raise
            info = {"skipped": str(exc)}
        manifest["files"] = [n for n in manifest["files"] if n != part["file"]] + ([part["file"]] if "file" in info else [])
        if manifest.get("parts"):
            manifest["parts"][i]["export"] = info
        else:
            manifest["export"] = info
        infos.append(info)
    return infos


def export_model(directory, modules=()):
    """Export the backbones into the model ``directory`` (again, or for the first time):
    a copy of the model (the files its model.json lists) with the new backbones is made
    beside it and takes its place, so the old backbones stay until the new ones are in.
    ``modules``: where each backbone is (the user's ``--module``s, one per backbone, in
    order; a string for one); by default the recorded one if the catalog has it
    (``backbone_spec``). Returns the ``export`` records, one per backbone."""

    directory = Path(directory)
    manifest = read_manifest(directory, optional=("*.tflite",))  # the backbones are what is being made
    HeadFunction(directory, manifest)  # a damaged head is refused now: a new backbone cannot mend it
    parts = model_parts(manifest)
    modules = [modules] if isinstance(modules, str) else list(modules or ())
    if modules and len(modules) != len(parts):
        raise ModelError(f"model {directory} joins {len(parts)} backbone{'s' * (len(parts) > 1)}' features "
                         f"({manifest['backbone'].get('module')}) and got {len(modules)} --module; expected one "
                         "per backbone in their order, or none (each is exported from the module it records)")
    specs = [backbone_spec(directory, manifest, m, part["backbone"])
             for part, m in zip(parts, modules or [None] * len(parts))]
    files = {p["file"] for p in parts}
    with new_model_dir(directory) as tmp:
        for name in manifest["files"]:
            if name not in files:
                shutil.copyfile(directory / name, tmp / name)
        infos = export_into(tmp, manifest, specs, directory)
        write_manifest(tmp, manifest)
    return infos


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

    mod = resolve_module(module)
    if fingerprint:
        check_fingerprint(model, {"backbone": {"module_fingerprint": fingerprint}}, mod.fingerprint,
                          f"backbone {module}", "re-extract features and re-fit, or pass --module with "
                          "the original backbone")
    import numpy as np


    size = tuple(input_size or mod.input_size or (224, 224))
    cached = conversion_cache(mod.fingerprint, size)
    if cached is not None and cached.is_file() and cached.with_suffix(".json").is_file():
        shutil.copyfile(cached, out)  # converted and verified before: the same bytes
        return json.loads(cached.with_suffix(".json").read_text())
    tf = tensorflow()
    fn = mod.load()
    spec = tf.TensorSpec([None, size[0], size[1], 3], tf.float32, name="images")
    concrete = tf.function(lambda images: fn(images), input_signature=[spec]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn.saved_model)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises many types; one line says why
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"backbone {module} cannot be converted to TFLite ({first}); "
                         "prediction from images needs a backbone made of TFLite built-in ops") from None
    Path(out).write_bytes(flatbuffer)
    probes = _probe_images(size)
    want = fn(tf.constant(probes)).numpy()
    got = TFLiteBackbone(out)(probes)
    diff = float(np.abs(want - got).max())
    if diff > MAX_RELATIVE_DIFF * max(float(np.abs(want).max()), 1e-6):
        raise ModelError(f"the TFLite copy of backbone {module} differs from it by {diff:.2g} on probe "
                         f"images (features up to {np.abs(want).max():.3g}); expected agreement within "
                         f"{MAX_RELATIVE_DIFF:g} relative: report this backbone")
    info = {"format": "tflite", "module_fingerprint": mod.fingerprint, "input_size": list(size),
            "feature_dim": int(want.shape[1]), "max_abs_diff": diff, "probe_images": len(probes),
            "tensorflow_version": tf.__version__}
    if cached is not None:
        _keep(cached, out, info)
    return info


def _keep(cached, out, info):
    """Put a verified conversion into the cache (best effort: a cache that cannot be
    written only means converting again next time)."""

    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cached, lambda f: f.write(Path(out).read_bytes()), binary=True)
        write_atomically(cached.with_suffix(".json"), lambda f: f.write(json.dumps(info)))
    except OSError:
        pass


def _answer(args):
    """``convert``'s answer as a dict: what was exported, why the backbone is unavailable
    here, or the OSError of writing the file (the caller raises it again)."""
    try:
        return convert(**args)
    except SkinfeatError as exc:
        return {"unavailable": str(exc)}
    except OSError as exc:
        return {"os_error": [exc.errno, exc.strerror, exc.filename]}


if __name__ == "__main__":
    print(json.dumps(_answer(json.loads(sys.argv[1]))))
