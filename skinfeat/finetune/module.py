"""The network ``skinfeat finetune`` trains and what it leaves behind.

- ``build_model``: a tf-keras model, ``hub.KerasLayer(module, trainable=True)``,
  a fixed standardisation of the features, then a 7-way Dense head started from
  a linear probe (``init_head``), and the variables to train (``--unfreeze``).
- ``export_module``: the fine-tuned feature extractor as a TF-Hub image
  feature-vector SavedModel with the built-ins' contract
  (``skinfeat.backbones.layers.export_saved_model``): ``__call__(images,
  training=False)``, float32 ``[B, H, W, 3]`` in [0, 1] -> ``[B, D]``, traced both
  ways; ``variables``, ``trainable_variables``, ``regularization_losses``; a
  ``serving_default`` signature returning ``{"feature_vector"}`` (and the
  ``feature_map`` signature when the module had one). It goes into the
  module cache as ``finetuned/NAME`` (``skinfeat.backbones.cache.atomic_build``,
  fingerprinted), its descriptor holding the catalog metadata and the ids of
  every image it saw, so ``--module finetuned/NAME`` works everywhere and ``fit``
  can score only the folds it never saw.
- ``save_head``: its own trained head as a model directory (``skinfeat.model``):
  standardisation and Dense layer are a softmax regression on the features, saved
  as a ``logreg`` head with power 1 and no prior adjustment (the loss was
  class-balanced already), with the backbone exported into it as for ``fit --out``.
"""

import time

import numpy as np

from skinfeat import __version__
from skinfeat.backbones import cache
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import ModuleError, UsageError
from skinfeat.core.tf_runtime import tensorflow, tensorflow_hub
from skinfeat.features.extract import DEFAULT_RESIZE
from skinfeat.model.store import save_model

PROBE_ALPHA = 0.05  # L2 strength per row of the linear probe the head starts from (logreg's middle alpha)


def load_trainable(mod, unfreeze="all"):
    """The loaded SavedModel of module ``mod``; ModuleError when it has no trainable
    variables, UsageError when ``unfreeze`` asks for more than it has."""
    obj = mod.load().saved_model  # a cached module's fingerprint is checked first
    if not list(getattr(obj, "trainable_variables", None) or []):
        raise ModuleError(
            f"module {mod.name} is not trainable: its SavedModel has no trainable variables (a frozen "
            "graph, or saved without the Reusable SavedModel API's `trainable_variables`); fine-tune a "
            "TF2 SavedModel with trainable variables, such as the built-in backbones "
            "(`skinfeat modules list`)")
    count = len(obj.trainable_variables)
    if unfreeze != "all" and unfreeze > count:
        raise UsageError(f"--unfreeze {unfreeze}: the module has {count} trainable variables; "
                         f"pass at most {count}, or all")
    return obj


def forward_order(obj):
    """The module's trainable variables in the order its forward pass reads them (the
    inputs its traced ``__call__`` captures), or as it lists them when that is unknown."""
    variables = list(obj.trainable_variables)
    by_handle = {id(v.handle): v for v in variables}
    for concrete in getattr(getattr(obj, "__call__", None), "concrete_functions", []):
        ordered = list({id(h): by_handle[id(h)] for h in concrete.captured_inputs if id(h) in by_handle}.values())
        if len(ordered) == len(variables):
            return ordered
    return variables


def takes_training(obj):
    """Whether the module's ``__call__`` was traced with a ``training`` argument."""
    for concrete in getattr(getattr(obj, "__call__", None), "concrete_functions", []):
        args, kwargs = concrete.structured_input_signature
        if "training" in kwargs or len(args) > 1:
            return True
    return False


def build_model(obj, size, unfreeze, seed=0, mixed_precision=False):
    """(tf-keras model, its standardisation layer, its head, the variables to train).

    The model is the module, a fixed standardisation of its features (backbones
    such as the stages-pooled ones give features of very different scales) and a
    7-way Dense head, both set by ``init_head`` before training. ``unfreeze``: "all", or N:
    the last N trainable variables in forward order (``forward_order``; a built-in
    EfficientNet-Lite has 3 per convolution: kernel, BatchNorm gamma and beta), plus the head."""
    tensorflow()
    hub = tensorflow_hub()
    import tf_keras

    class Standardize(tf_keras.layers.Layer):
        def build(self, shape):
            self.mean = self.add_weight(name="mean", shape=shape[-1:], initializer="zeros", trainable=False)
            self.scale = self.add_weight(name="scale", shape=shape[-1:], initializer="ones", trainable=False)

        def call(self, x):
            return (x - self.mean) / self.scale

    backbone = forward_order(obj)
    policy = "mixed_float16" if mixed_precision else "float32"  # the SavedModel's graph stays as traced
    standardize = Standardize(name="standardize")
    head = tf_keras.layers.Dense(len(CLASSES), dtype=policy, name="head", kernel_initializer="zeros")
    model = tf_keras.Sequential([hub.KerasLayer(obj, trainable=True, name="backbone"), standardize, head])
    model.build([None, size[0], size[1], 3])
    chosen = backbone if unfreeze == "all" else backbone[len(backbone) - int(unfreeze):]
    return model, standardize, head, chosen + list(head.trainable_variables)


def init_head(model, standardize, head, batches, seed=0):
    """Start from a linear probe (LP-FT, Kumar et al. 2022: fine-tuning from a fitted
    head distorts the pretrained features less than from a blank one, and holds up
    better out of distribution): set the standardisation to the mean and standard
    deviation of the module's features over the clean images of ``batches``, and the
    head to class-balanced logistic regression on them."""
    from sklearn.linear_model import LogisticRegression

    feats, labels = [], []
    for images, y in batches:
        feats.append(model.layers[0](images, training=False).numpy())
        labels.append(y.numpy())
    feats, labels = np.concatenate(feats), np.concatenate(labels)
    mean, std = feats.mean(axis=0), feats.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    standardize.mean.assign(mean)
    standardize.scale.assign(std)
    probe = LogisticRegression(C=1.0 / (PROBE_ALPHA * len(labels)), class_weight="balanced", max_iter=300,
                               random_state=seed).fit((feats - mean) / std, labels)
    kernel = np.zeros((feats.shape[1], len(CLASSES)), np.float32)
    bias = np.full(len(CLASSES), -10.0, np.float32)  # a class the sample lacks starts unlikely
    kernel[:, probe.classes_] = probe.coef_.T
    bias[probe.classes_] = probe.intercept_
    head.kernel.assign(kernel)
    head.bias.assign(bias)


def export_module(obj, directory):
    """Save the (fine-tuned) loaded module ``obj`` into ``directory`` with the TF-Hub
    image feature-vector contract of the built-ins."""
    from skinfeat.backbones.layers import IMAGES, MAP_SIGNATURE
    tf = tensorflow()

    root = tf.train.Checkpoint(backbone=obj)
    root.variables = list(obj.variables)
    root.trainable_variables = list(obj.trainable_variables)
    root.regularization_losses = []
    if takes_training(obj):
        call = tf.function(lambda images, training=False: obj(images, training=training))
        call.get_concrete_function(IMAGES, training=True)
        features = call.get_concrete_function(IMAGES, training=False)
    else:
        call = tf.function(lambda images: obj(images))
        features = call.get_concrete_function(IMAGES)
    serving = tf.function(lambda images: {"feature_vector": features(images)}, input_signature=[IMAGES])
    root.__call__ = call
    signatures = {"serving_default": serving}
    if hasattr(obj, MAP_SIGNATURE):  # a built-in's last convolutional map, with the fine-tuned weights
        root.feature_map = signatures[MAP_SIGNATURE] = tf.function(
            lambda images: obj.feature_map(images), input_signature=[IMAGES])
    tf.saved_model.save(root, str(directory), signatures=signatures)


def publish(obj, name, descriptor, run_key):
    """Export ``obj`` into the module cache as ``name`` (replacing a module of that
    name made by another run, atomically); returns its directory."""

    final = cache.modules_dir() / name

    def produce(tmp):
        export_module(obj, tmp)
        return dict(descriptor, name=name, kind="finetuned", run_key=run_key, skinfeat_version=__version__,
                    tensorflow_version=tensorflow().__version__, built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def is_complete(directory):
        found = cache.read_descriptor(directory)
        return found is not None and found.get("run_key") == run_key

    final.parent.mkdir(parents=True, exist_ok=True)
    return cache.atomic_build(final, produce, is_complete=is_complete, force=not is_complete(final))


def save_head(directory, standardize, head, module, training, seen=None):
    """Save the standardisation and trained Dense ``head`` on the features of ``module``
    (a resolved Module) as a model directory at ``directory``, the backbone exported into it."""
    from skinfeat.heads.logreg import LogRegHead

    kernel, bias = (np.asarray(w.numpy(), np.float32) for w in head.weights)
    dim = kernel.shape[0]
    fitted = LogRegHead(power=1, adjust="none").set_state({
        "classes_": np.arange(len(CLASSES)), "class_offsets_": np.zeros(len(CLASSES)),
        "n_features_in_": dim, "mean_": standardize.mean.numpy(), "scale_": standardize.scale.numpy(),
        "coef_": kernel.T.copy(), "intercept_": bias, "C_": 0.0, "alpha_": 0.0})  # not a fitted logreg
    info = module.describe()
    attrs = {"module": module.name, "module_source": info.get("source"), "module_fingerprint": module.fingerprint,
             "module_info": info, "input_size": list(module.input_size), "resize": DEFAULT_RESIZE,
             "feature_dim": dim, "views": 0, "dtype": "float32", "key": None, "path": None}
    return save_model(directory, fitted, "logreg", attrs, training, export=True, seen=seen)
