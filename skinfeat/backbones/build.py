"""Convert a built-in catalog entry into a SavedModel in the module cache.

The conversion runs in a fresh Python process (``python -m
skinfeat.backbones.build NAME DIR``, through ``skinfeat.core.tf_runtime.run_fresh``): TensorFlow names traced functions with
process-wide counters, so only a fresh process writes the same
``saved_model.pb``, and so the same fingerprint, whatever the caller did
before. It also keeps the tracing memory out of the caller.
"""

import importlib
import json
import sys
import time

from skinfeat import __version__
from skinfeat.backbones import cache
from skinfeat.backbones.catalog import load_catalog
from skinfeat.core.errors import ModuleError
from skinfeat.core.tf_runtime import run_fresh, tensorflow

# Converters by the catalog's ``builder`` name: skinfeat.backbones.<name>.build(weights_path)
BUILDERS = ("efficientnet_lite", "mobilenet_v1")
# Bump when a converter changes what it writes: cached builds of another version are rebuilt.
BUILD_VERSION = 2  # 2: the feature_map signature (Grad-CAM)


def builtin_dir(entry):
    return cache.modules_dir() / entry.name


def is_built(entry):
    """True if the cache holds a complete build of ``entry`` by this converter version."""
    descriptor = cache.read_descriptor(builtin_dir(entry))
    return (descriptor is not None and descriptor.get("build_version") == BUILD_VERSION
            and descriptor.get("weights") == entry.weights
            and descriptor.get("options", {}) == entry.builder_options())


def build_builtin(entry, force=False):
    """Build ``entry`` once (atomically) and return its SavedModel directory."""
    if entry.builder not in BUILDERS:
        raise ModuleError(f"backbone {entry.name!r}: unknown builder {entry.builder!r} "
                          f"(known: {', '.join(BUILDERS)})")
    if not force and is_built(entry):
        return builtin_dir(entry)
    entry.weights_path()  # a missing package is a clear error before any work
    print(f"skinfeat: building backbone {entry.name} from its packaged weights into the module cache "
          "(once; 15-40 s on 2 cores)", file=sys.stderr)

    def produce(tmp):
        return run_fresh("skinfeat.backbones.build", [entry.name, tmp], ModuleError,
                         prefix=f"building {entry.name} failed: ")

    return cache.atomic_build(builtin_dir(entry), produce, is_complete=lambda d: is_built(entry),
                              force=force)


def convert(entry, directory):
    """Write ``entry`` as a SavedModel into ``directory``; return its descriptor."""
    from skinfeat.backbones.layers import export_saved_model

    tf = tensorflow()
    converter = importlib.import_module(f"skinfeat.backbones.{entry.builder}")
    net = converter.build(entry.weights_path(), **entry.builder_options())
    height, width = entry.input_size
    feature_dim = int(net.features(tf.zeros([1, height, width, 3])).shape[-1])
    if feature_dim != entry.feature_dim:
        raise ModuleError(f"backbone {entry.name!r} gives {feature_dim} features, but the catalog "
                          f"declares {entry.feature_dim}; fix skinfeat/configs/backbones.toml")
    export_saved_model(net, directory)
    return {"name": entry.name, "builder": entry.builder, "build_version": BUILD_VERSION,
            "weights": entry.weights, "options": entry.builder_options(), "source": entry.source,
            "input_size": list(entry.input_size), "feature_dim": feature_dim,
            "skinfeat_version": __version__, "tensorflow_version": tf.__version__,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


if __name__ == "__main__":
    name, directory = sys.argv[1:]
    try:
        print(json.dumps(convert(load_catalog().get(name), directory)))
    except ModuleError as exc:
        sys.exit(str(exc))
