"""The arithmetic extraction runs the backbone in: ``--precision float32|bfloat16|int8``.

* ``float32``: the module as it is (the default; see the README's precision table).
* ``bfloat16``: oneDNN's auto-mixed precision, which rewrites the module's graph to
  compute convolutions and matrix products in bfloat16 (AMX-BF16 on CPUs that have
  it) and keeps the rest in float32. The rewrite is a TensorFlow-wide option read
  when a function runs, so it is switched on only around each call here.
* ``int8``: a TFLite copy of the module with int8 weights and activations,
  calibrated on images of the dataset being extracted (``int8_model``).

``forward(mod, precision, device)`` returns the feature function every engine
calls: float32 images ``[B, H, W, 3]`` in [0, 1] (numpy or tf) -> numpy ``[B, D]``.
"""

import hashlib
import json
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from skinfeat.backbones.resolve import resolve_module
from skinfeat.backbones.tflite import TFLiteBackbone
from skinfeat.core.atomic import atomic_path, write_atomically
from skinfeat.core.devices import tf_device
from skinfeat.core.errors import ModelError, SkinfeatError, UsageError
from skinfeat.core.paths import skinfeat_home
from skinfeat.core.tf_runtime import run_fresh, tensorflow
from skinfeat.core.writable import write_error
from skinfeat.features.pipeline import batched, image_loader

PRECISIONS = ("float32", "bfloat16", "int8")
DEFAULT_PRECISION = "float32"
_AMP = "auto_mixed_precision_onednn_bfloat16"
# int8 (benchmarks/bench_precision.py, README precision table): calibrated on
# CALIBRATION_IMAGES rows evenly spaced over the dataset (the same dataset, the same
# rows), decoded, cropped and resized as extraction does. The ops that are not
# convolutions (colour constancy's power/mean/divide, the (x*255-127)/128 scaling,
# the stage pooling's moments) stay float: int8 cannot hold x**6 or a divide by a
# small illuminant; then every node whose int8 output is still off by more than
# MAX_NODE_ERROR quantization steps on the calibration images stays float too.
CALIBRATION_IMAGES = 256
FLOAT_OPS = ("POW", "DIV", "MUL", "SUB", "MAXIMUM", "MINIMUM", "RELU", "MEAN", "SQUARED_DIFFERENCE", "SQRT",
             "REDUCE_MAX", "CONCATENATION")
MAX_NODE_ERROR = 2.0
DEBUG_IMAGES = 16  # of the calibration images, for the per-node errors


def check(precision, device="cpu"):
    """Refuse an unknown precision, or one the chosen device cannot run."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "float32" and device == "gpu":
        raise UsageError(f"--precision {precision} is a CPU path (oneDNN bfloat16 / TFLite int8) and the "
                         "network would run on a GPU; pass --device cpu, or --precision float32 on the GPU")


@contextmanager
def bfloat16_rewrite():
    """oneDNN's bfloat16 auto-mixed precision on for the functions run inside."""

    tf = tensorflow()
    before = tf.config.optimizer.get_experimental_options().get(_AMP, False)
    tf.config.optimizer.set_experimental_options({_AMP: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({_AMP: before})


def forward(mod, precision=DEFAULT_PRECISION, device="cpu", int8_path=None):
    """The feature function of module ``mod`` at ``precision`` on ``device`` (``cpu``/``gpu``).
    ``int8_path``: the int8 TFLite copy (``int8_model``), for ``int8``."""
    check(precision, device)
    if precision == "int8":
        return TFLiteBackbone(int8_path)

    tf = tensorflow()
    fn, name = mod.load(), tf_device(device)

    def run(images):
        with tf.device(name), (bfloat16_rewrite() if precision == "bfloat16" else nullcontext()):
            return fn(tf.convert_to_tensor(images, tf.float32)).numpy()
    return run


class Bfloat16Backbone:
    """The SavedModel of ``mod`` run under ``bfloat16_rewrite``, with TFLiteBackbone's call
    interface (numpy [B, H, W, 3] in [0, 1] -> numpy [B, D]): for scoring new images as
    features extracted at bfloat16 were (there is no TFLite form of that arithmetic)."""

    def __init__(self, mod, input_size):
        self.input_size, self.feature_dim = tuple(input_size), int(mod.feature_dim)
        self._run = forward(mod, "bfloat16")

    def __call__(self, images):
        return self._run(np.ascontiguousarray(images, np.float32))


def bfloat16_backbone(attrs, error=ModelError):
    """The ``Bfloat16Backbone`` of the module features with ``attrs`` came from; ``error``
    when that module changed since (another fingerprint)."""

    mod = resolve_module(attrs.get("module"))
    if attrs.get("module_fingerprint") and mod.fingerprint != attrs["module_fingerprint"]:
        raise error(f"backbone {attrs.get('module')} changed since the features were extracted (fingerprint "
                    f"{mod.fingerprint[:12]}, the features record {attrs['module_fingerprint'][:12]}); "
                    "re-extract the features")
    return Bfloat16Backbone(mod, attrs.get("input_size") or mod.input_size)


def calibration_ids(manifest, n=CALIBRATION_IMAGES):
    """The image ids int8 is calibrated on: ``n`` rows evenly spaced over ``manifest``."""
    rows = np.unique(np.linspace(0, len(manifest) - 1, min(n, len(manifest))).round().astype(int))
    return [str(manifest.image_ids[r]) for r in rows], rows


def extra_attrs(precision, manifest):
    """What the features' attrs record to find the backbone again: for int8 the digest of
    the calibration image ids (``int8_calibration``)."""
    if precision != "int8":
        return {}
    ids, _ = calibration_ids(manifest)
    return {"int8_calibration": hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]}


def int8_file(attrs):
    """Where the int8 TFLite copy of the features with attrs (or backbone block) ``attrs`` is
    cached: ``$SKINFEAT_HOME/tflite/``, keyed by module, fingerprint, input size, resize,
    lesion and the calibration ids."""

    key = hashlib.sha256(json.dumps([attrs.get("module"), attrs.get("module_fingerprint"),
                                     list(attrs.get("input_size") or ()), attrs.get("resize"),
                                     attrs.get("lesion") or "none", "int8",
                                     attrs.get("int8_calibration")]).encode()).hexdigest()[:16]
    return skinfeat_home() / "tflite" / f"int8-{key}.tflite"


def _built(path):
    """Whether the int8 copy at ``path`` and its ``.json`` (written first) are both there."""
    return path.is_file() and path.with_suffix(".json").is_file()


def cached_int8(attrs, error=ModelError):
    """The path of the cached int8 TFLite copy (``int8_file``); ``error`` when it is not there."""
    path = int8_file(attrs)
    if not _built(path):
        raise error(f"the int8 TFLite copy of backbone {attrs.get('module')} that the features were extracted "
                    f"with is not in {path.parent} (`skinfeat extract --precision int8` makes it); extract those "
                    "features again on this machine (delete the features file first)")
    return path


def int8_model(mod, manifest, size, resize, lesion):
    """The int8 TFLite copy of ``mod``, calibrated on ``calibration_ids(manifest)`` decoded
    as extraction decodes them; built once (in a fresh process, as ``skinfeat export``
    converts) and cached (``int8_file``), with what ``convert_int8`` said of it beside
    (``.json``). Its path."""

    attrs = {"module": mod.name, "module_fingerprint": mod.fingerprint, "input_size": list(size),
             "resize": resize, "lesion": lesion, **extra_attrs("int8", manifest)}
    path = int8_file(attrs)
    if _built(path):
        return path
    _, rows = calibration_ids(manifest)
    batches = batched(rows.astype(np.int64), np.asarray(manifest.paths, dtype=object)[rows].astype(str),
                       image_loader(tuple(size), resize, 0, 0, lesion=lesion))
    images = [b[1].numpy() for b in batches]
    if not images:
        raise ModelError(f"none of the {len(rows)} calibration images of --precision int8 could be read; "
                         "check the dataset with `skinfeat data check`")
    try:
        with tempfile.TemporaryDirectory() as calibration, atomic_path(path, suffix=".tflite") as tmp:
            np.save(Path(calibration) / "images.npy", np.concatenate(images))
            info = run_fresh("skinfeat.features.precision", [json.dumps({"module": str(mod.path), "images": str(calibration),
                                                                "out": str(tmp)})],
                             ModelError, prefix=f"converting backbone {mod.name} to int8 TFLite failed: ")
            write_atomically(path.with_suffix(".json"), lambda f: json.dump(info, f))  # before the .tflite is in
    except OSError as exc:
        raise write_error(path, exc, f"the int8 TFLite copy of backbone {mod.name}") from None
    return path


# ----------------------------------------------------------------------------- the subprocess

def _node_errors(debugger):
    """{node (tensor) name: RMSE in quantization steps} of a QuantizationDebugger's run."""
    import csv
    import io

    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    return {r["tensor_name"]: float(r["mean_squared_error"]) ** 0.5 / float(r["scale"])
            for r in csv.DictReader(buf) if float(r["scale"]) > 0}


def convert_int8(module, images, out):
    """Full-integer TFLite of the SavedModel ``module`` with float input and output,
    calibrated on ``images/images.npy``, the ops of FLOAT_OPS and the nodes off by
    more than MAX_NODE_ERROR steps kept float; written to ``out``. Returns the nodes kept
    float and the largest difference to the SavedModel on the first DEBUG_IMAGES images."""

    tf = tensorflow()
    images = np.load(Path(images) / "images.npy")
    fn = resolve_module(module).load()
    spec = tf.TensorSpec([None, *images.shape[1:]], tf.float32, name="images")
    concrete = tf.function(lambda x: fn(x), input_signature=[spec]).get_concrete_function()

    def debugger(nodes=None):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn.saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS),
                                                                denylisted_nodes=nodes)
        return tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_options=options,
            debug_dataset=lambda: ([images[i:i + 1]] for i in range(min(DEBUG_IMAGES, len(images)))))

    try:
        errors = _node_errors(debugger())
    except ValueError as exc:
        if "debug mode" not in str(exc):  # what the debugger says of a model with no int8 op
            raise
        raise ModelError(f"backbone {module} has no convolution or matrix product for --precision int8 to "
                         "quantize; extract it at float32") from None
    noisy = sorted(n for n, e in errors.items() if e > MAX_NODE_ERROR)
    Path(out).write_bytes(debugger(noisy or None).get_nondebug_quantized_model())

    probes = images[:DEBUG_IMAGES]
    diff = float(np.abs(TFLiteBackbone(out)(probes) - fn(tf.constant(probes)).numpy()).max())
    return {"float_nodes": noisy, "max_abs_diff": diff, "probe_images": len(probes),
            "calibration_images": len(images), "tensorflow_version": tf.__version__}


if __name__ == "__main__":
    try:
        print(json.dumps(convert_int8(**json.loads(sys.argv[1]))))
    except SkinfeatError as exc:  # one line, raised again by the caller
        sys.exit(f"{exc}")
