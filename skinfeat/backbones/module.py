"""A resolved backbone (``Module``) and the check that a SavedModel is an image
feature-vector module: float32 ``[B, H, W, 3]`` in [0, 1] in, ``[B, D]`` out."""

from dataclasses import dataclass

from skinfeat.backbones import cache
from skinfeat.core.errors import ModuleError
from skinfeat.core.tf_runtime import tensorflow, tensorflow_hub

PROBE_SIZE = (224, 224)  # image size used to probe a module that accepts any size
# Modules skinfeat wrote into its cache: their descriptor records the fingerprint and
# the feature dimension ("finetuned": by `skinfeat finetune`, see skinfeat.finetune).
CACHED_KINDS = ("builtin", "finetuned")
# What a fine-tuned module's descriptor says about its training, recorded with its features.
FINETUNE_KEYS = ("base", "base_fingerprint", "data", "fold", "folds_sha256", "epochs", "best_epoch",
                 "val_bmca", "input_size", "n_trained_on", "trained_on_sha256", "run_key")


@dataclass
class FeatureFunction:
    """What ``inspect_saved_model`` finds: the callable and its declared shapes."""
    fn: object
    fixed_size: tuple | None
    feature_dim: int | None


def _is_training_variant(args, kwargs):
    return kwargs.get("training") is True or any(a is True for a in args[1:])


def _candidates(obj):
    """(callable, input spec, output structure) of ``__call__`` or a serving signature."""
    tf = tensorflow()

    call = getattr(obj, "__call__", None)
    for concrete in getattr(call, "concrete_functions", []):
        args, kwargs = concrete.structured_input_signature
        if args and isinstance(args[0], tf.TensorSpec) and not _is_training_variant(args, kwargs):
            # Pass the traced extra arguments (e.g. training=False) too: a call that
            # does not bind formats every input tensor into an error before falling back.
            fn = concrete if len(args) == 1 and not kwargs else (
                lambda images, c=concrete, a=args[1:], k=kwargs: c(images, *a, **k))
            yield fn, args[0], concrete.structured_outputs
    signatures = getattr(obj, "signatures", {}) or {}
    for key in ("serving_default", "default", "image_feature_vector"):
        if key in signatures and len(signatures[key].structured_input_signature[1]) == 1:
            sig = signatures[key]
            (arg, spec), = sig.structured_input_signature[1].items()
            yield (lambda images, sig=sig, arg=arg: sig(**{arg: images})), spec, sig.structured_outputs


def _single_output(outputs):
    """Pick the feature tensor out of a signature's outputs (a tensor or a dict)."""
    if isinstance(outputs, dict):
        for key in ("feature_vector", "default"):
            if key in outputs:
                return key, outputs[key]
        if len(outputs) == 1:
            return next(iter(outputs.items()))
        return None, None
    return None, outputs


def inspect_saved_model(path, where):
    """Load the SavedModel at ``path`` and return its ``FeatureFunction``; a
    ModuleError that says what is wrong when it is not an image feature vector."""

    tf, hub = tensorflow(), tensorflow_hub()

    try:
        obj = hub.load(str(path))
    except Exception as exc:  # TF raises many types for unreadable SavedModels
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModuleError(f"{where}: cannot load the SavedModel: {first_line}") from None
    problems = []
    for fn, spec, outputs in _candidates(obj):
        key, out = _single_output(outputs)
        if spec.shape.rank != 4 or spec.dtype != tf.float32 or spec.shape[-1] not in (3, None):
            problems.append(f"takes {_show(spec)}, not float32 images [batch, height, width, 3]")
            continue
        if getattr(out, "dtype", None) != tf.float32 or out.shape.rank != 2:
            problems.append(f"returns {_show(out)}, not a float32 feature vector [batch, D]")
            continue
        if key is not None:
            fn = (lambda images, f=fn, k=key: f(images)[k])
        height, width = spec.shape[1], spec.shape[2]
        fixed = (height, width) if height is not None and width is not None else None
        return FeatureFunction(_keep_alive(fn, obj), fixed, out.shape[-1])
    if not problems:
        problems.append("has neither a __call__ nor a serving signature taking one image batch")
    raise ModuleError(f"{where} is not an image feature-vector module: it {'; '.join(dict.fromkeys(problems))}")


def _show(spec):
    """``float32 [None, 224, 224, 3]`` for a TensorSpec; anything else as it prints."""
    try:
        return f"{spec.dtype.name} {spec.shape.as_list()}"
    except (AttributeError, ValueError):
        return repr(spec)


def _keep_alive(fn, obj):
    """A function that calls ``fn`` and holds the loaded object (and so its variables)."""
    def features(images):
        return fn(images)
    features.saved_model = obj
    return features


class Module:
    """A backbone ready to use. See ``skinfeat.backbones.resolve.resolve_module``."""

    def __init__(self, name, path, kind, entry=None, input_size=None):
        self.name, self.path, self.kind, self.entry = name, str(path), kind, entry
        self._requested_size = tuple(input_size) if input_size else None
        self._function = None
        self._descriptor = None
        self._fingerprint = None

    def __repr__(self):
        return f"Module(name={self.name!r}, path={self.path!r})"

    def __getstate__(self):
        """Pickled (to a Ray actor) without the loaded function: it loads again there."""
        return {**self.__dict__, "_function": None}

    @property
    def builtin(self):
        return self.kind == "builtin"

    @property
    def cached(self):
        """Written into the module cache by skinfeat (a built-in or a fine-tuned module)."""
        return self.kind in CACHED_KINDS

    @property
    def input_size(self):
        if self._requested_size:
            return self._requested_size
        if self.entry is not None and self.entry.input_size:
            return tuple(self.entry.input_size)
        return self._inspect().fixed_size

    def _built(self):
        """The descriptor written when skinfeat built this module."""
        if self._descriptor is None:
            self._descriptor = cache.read_descriptor(self.path)
            if self._descriptor is None:
                how = ("run its `skinfeat finetune` command again" if self.kind == "finetuned"
                       else f"rebuild with `skinfeat modules build {self.name} --force`")
                raise ModuleError(f"{self.path} lost its descriptor; {how}")
        return self._descriptor

    @property
    def feature_dim(self):
        if self.cached:
            return int(self._built()["feature_dim"])
        if self.entry is not None:
            return self.entry.feature_dim
        function = self._inspect()
        if function.feature_dim is None:  # not declared by the signature: run it once
            tf = tensorflow()
            height, width = self.input_size or PROBE_SIZE
            function.feature_dim = int(function.fn(tf.zeros([1, height, width, 3])).shape[-1])
        return function.feature_dim

    @property
    def fingerprint(self):
        """sha256 of the SavedModel's files: recorded at build time for built-ins,
        computed (once per Module) for the others."""
        if self.cached:
            return self._built()["fingerprint"]
        if self._fingerprint is None:
            self._fingerprint = cache.fingerprint(self.path)
        return self._fingerprint

    def describe(self):
        """Metadata to record with features computed by this module."""
        info = {"name": self.name, "kind": self.kind, "path": self.path, "source": self.name,
                "preprocessing": "inside the module (TF-Hub image contract: inputs in [0, 1])",
                "value_range": [0.0, 1.0], "pretraining": "unknown", "license": "unknown"}
        if self.entry is not None:
            info.update(self.entry.describe())
        info.update({"input_size": list(self.input_size) if self.input_size else None,
                     "feature_dim": self.feature_dim, "fingerprint": self.fingerprint})
        if self.kind == "finetuned":
            info["finetune"] = {k: self._built().get(k) for k in FINETUNE_KEYS}
        return info

    def trained_on(self):
        """The ids of the images a fine-tuned module was trained on (a set), None for others."""
        if self.kind != "finetuned":
            return None
        return set(self._built().get("trained_on") or ())

    def load(self):
        """The feature function: float32 ``[B, H, W, 3]`` in [0, 1] -> float32 ``[B, D]``."""
        if self.cached and self._function is None:
            cache.verify(self.path)
        return self._inspect().fn

    def saved_model(self):
        """The loaded SavedModel object (e.g. ``.imagenet_logits`` of a built-in)."""
        return self._inspect().fn.saved_model

    def check(self):
        """Load and validate now (raises ModuleError); returns self."""
        self._inspect()
        return self

    def _inspect(self):
        if self._function is None:
            function = inspect_saved_model(self.path, self.name)
            if self._requested_size and function.fixed_size and function.fixed_size != self._requested_size:
                raise ModuleError(
                    f"module {self.name} expects image size {function.fixed_size}, "
                    f"but size {self._requested_size} is requested; drop the size option or pick another module")
            self._function = function
        return self._function
