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

from contextlib import contextmanager


from skinfeat.errors import UsageError

PRECISIONS = ("float32", "bfloat16", "int8")
DEFAULT_PRECISION = "float32"
_AMP = "auto_mixed_precision_onednn_bfloat16"


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
    from skinfeat.runtime import tensorflow

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
        from skinfeat.model.tflite import TFLiteBackbone

        return TFLiteBackbone(int8_path)
    from skinfeat.devices import tf_device
    from skinfeat.runtime import tensorflow

    tf = tensorflow()
    fn, name = mod.load(), tf_device(device)

    def run(images):
        with tf.device(name):
            if precision == "bfloat16":
                with bfloat16_rewrite():
                    return fn(tf.convert_to_tensor(images, tf.float32)).numpy()
            return fn(tf.convert_to_tensor(images, tf.float32)).numpy()
    return run


def int8_model(mod, manifest, size, resize, lesion):
    """The int8 TFLite copy of ``mod``, calibrated on images of ``manifest``; its path."""
    raise UsageError("--precision int8 is not available yet")
