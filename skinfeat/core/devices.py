"""Where the network runs: ``--device auto|cpu|gpu``.

``auto`` uses a GPU when TensorFlow sees one (``tf.config.list_physical_devices``)
and the CPU otherwise; ``gpu`` where none is visible is an error that says how to
get one; ``cpu`` keeps the work on the CPU even when a GPU is there. For the Ray
engine the same choice is made from the cluster's resources instead
(``skinfeat.features.ray_engine``).
"""

from skinfeat.core.errors import UsageError
from skinfeat.core.tf_runtime import tensorflow

DEVICES = ("auto", "cpu", "gpu")
DEFAULT_DEVICE = "auto"


def visible_gpus():
    """The GPUs TensorFlow can use in this process."""

    return tensorflow().config.list_physical_devices("GPU")


def choose(device, gpus, where="TensorFlow in this process"):
    """``cpu`` or ``gpu`` for the requested ``device`` given ``gpus`` (how many are visible)."""
    if device not in DEVICES:
        raise UsageError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "gpu" and not gpus:
        raise UsageError(f"--device gpu: no GPU is visible to {where}; install a GPU build of TensorFlow "
                         "with its CUDA libraries (`pip install tensorflow[and-cuda]`), check "
                         "CUDA_VISIBLE_DEVICES, or pass --device cpu")
    if device == "auto":
        return "gpu" if gpus else "cpu"
    return device


def resolve(device):
    """``cpu`` or ``gpu``: the device the local engine runs the network on."""
    return choose(device, len(visible_gpus()) if device in ("auto", "gpu") else 0)


def tf_device(kind):
    """The TensorFlow device name of ``cpu`` / ``gpu``, for ``with tf.device(...)``."""
    return "/GPU:0" if kind == "gpu" else "/CPU:0"


def cpu_bfloat16():
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX-BF16 in
    /proc/cpuinfo); without them oneDNN's bfloat16 arithmetic is emulated."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
