"""A model directory loaded for prediction from images: the TFLite backbone
(``skinfeat.model.tflite``) plus the head evaluated in numpy by the heads' own
inference functions (``skinfeat.heads.inference``). A new process imports
neither TensorFlow nor scikit-learn: images are decoded and resized with
PIL/simplejpeg and numpy exactly as extraction does (``skinfeat.images``). Only
test-time augmentation imports TensorFlow, for extraction's own augmentation
(``skinfeat.extract._augment``)."""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from skinfeat.classes import CLASSES, FULL_NAMES
from skinfeat.errors import ModelError, SkinfeatError
from skinfeat.heads.inference import LOG_PROBA, adjusted, class_offsets, in_classes_order
from skinfeat.images import decode, resize
from skinfeat.model.format import HEAD_ERRORS, TFLITE, check_fingerprint, damaged, probe_head, read_manifest, \
    read_state, resize_policy, sha256_file
from skinfeat.model.tflite import TFLiteBackbone

DEFAULT_TOP_K = 3
DEFAULT_TTA_VIEWS = 8
TTA_SEED = 0


@lru_cache(maxsize=None)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context in which numpy's BLAS uses one thread: the small matrix products of
    resizing and heads run ~10x slower with two OpenBLAS threads spinning on a busy
    2-core machine."""
    return _blas().limit(limits=1, user_api="blas")


class HeadFunction:
    """features [n, d] -> probabilities [n, len(CLASSES)] of the head saved in a model
    directory. ``HeadFunction(X)`` is ``predict_proba`` (as trained),
    ``adjust(proba)`` adds the prior-adjustment offsets (its argmax is the head's
    decision)."""

    exact = True  # evaluated by the functions the head itself predicts with

    def __init__(self, directory, manifest):
        directory = Path(directory)
        name = manifest["head"]
        if name not in LOG_PROBA:
            raise ModelError(f"model {directory} has head {name!r}, which this skinfeat cannot evaluate; "
                             f"expected one of {', '.join(LOG_PROBA)}: re-fit with `skinfeat fit --out`")
        state = read_state(directory, manifest)
        try:
            self.columns = state["classes_"].astype(int)
            self.offsets = class_offsets(self.columns, state["class_offsets_"])
            self.n_features = int(state["n_features_in_"])
            self._log_proba = LOG_PROBA[name](state, manifest["params"], directory)
        except SkinfeatError:
            raise
        except HEAD_ERRORS as exc:
            raise damaged(directory, f"cannot read its {name} head ({type(exc).__name__}: {exc})") from None
        probe_head(directory, self._log_proba, self.n_features, len(self.columns))

    def __call__(self, features):
        """Probabilities [n, 7] as trained (CLASSES columns, 0 for classes never seen).
        float32 features are evaluated in float32 like the head; float64 ones (for
        finite differences) in float64."""
        X = np.asarray(features)
        X = X if X.dtype == np.float64 else X.astype(np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelError(f"the head expects {self.n_features} features per image, got shape "
                             f"{X.shape}; the backbone and head of this model do not belong together")
        return in_classes_order(np.exp(self._log_proba(X)), self.columns)

    def adjust(self, proba):
        """Probabilities [n, 7] with the head's prior adjustment: softmax(log p + offsets)."""
        return adjusted(proba, self.offsets)


@dataclass
class Prediction:
    """Probabilities of one image, in CLASSES order: ``proba`` as the head was
    trained, ``adjusted`` with its prior adjustment (``fit --adjust``; the same when
    the model has none), whose argmax is the model's decision."""

    image: str  # the file name without extension (the ISIC image id)
    path: str
    proba: np.ndarray
    adjusted: np.ndarray

    def top(self, k=DEFAULT_TOP_K):
        """The model's ``k`` first choices: [(code, full name, adjusted probability)]."""
        order = np.argsort(-self.adjusted, kind="stable")[:k]
        return [(CLASSES[i], FULL_NAMES[CLASSES[i]], float(self.adjusted[i])) for i in order]


def _check_export(directory, manifest, verify_hash):
    export, backbone = manifest.get("export") or {}, manifest.get("backbone") or {}
    fix = (f"run `skinfeat export --model {directory}` where backbone {backbone.get('module')!r} is available "
           "(with --module naming it, if it is not in the catalog)")
    if not export.get("file"):
        why = f" ({export['skipped']})" if export.get("skipped") else ""
        raise ModelError(f"model {directory} has no exported backbone{why}; prediction from images needs "
                         f"{TFLITE} inside the model: {fix}")
    path = Path(directory) / export["file"]
    if not path.is_file():
        raise ModelError(f"model {directory} is missing {export['file']} (its backbone); {fix}")
    check_fingerprint(directory, manifest, export.get("module_fingerprint"), f"its {export['file']}", fix)
    if verify_hash and sha256_file(path) != export.get("sha256"):
        raise ModelError(f"model {directory}: {export['file']} changed since it was exported (sha256 "
                         f"differs from model.json); {fix}")
    return path, export


class Predictor:
    """A model directory loaded for prediction: TFLite backbone plus numpy head."""

    def __init__(self, directory, verify_hash=True, threads=None):
        self.directory = Path(directory)
        self.manifest = read_manifest(directory)
        path, export = _check_export(directory, self.manifest, verify_hash)
        self.resize = resize_policy(directory, export)
        self.head = HeadFunction(directory, self.manifest)
        try:
            self.backbone = TFLiteBackbone(path, threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"model {directory}: {export['file']} cannot be loaded ({exc}); "
                             f"re-export it with `skinfeat export --model {directory}`") from None
        if self.backbone.feature_dim != self.head.n_features:
            raise ModelError(f"model {directory}: the backbone gives {self.backbone.feature_dim} features, "
                             f"the head expects {self.head.n_features}; re-export with `skinfeat export`")
        self.input_size = self.backbone.input_size
        backbone = self.manifest.get("backbone") or {}
        use_views = (self.manifest.get("training") or {}).get("use_views")
        trained_views = int(backbone.get("views") or 0) if use_views else 0
        self.tta_views = trained_views or DEFAULT_TTA_VIEWS
        self.augment = backbone.get("augment") or "mild"  # the preset its views were made with

    def load_image(self, source):
        """Decoded and resized like extraction: float32 [H, W, 3] in [0, 1]."""
        return self.resized(decode(source))

    def resized(self, image):
        with one_blas_thread():
            return resize(image, self.input_size, self.resize)

    def predict_proba(self, images):
        """Probabilities [n, 7] (CLASSES order, as trained) of resized images [n, H, W, 3]."""
        features = self.backbone(images)
        with one_blas_thread():
            return self.head(features)

    def probabilities(self, paths, shift=None, tta=(), progress=None):
        """Probabilities [n, 7] as trained of the images at ``paths`` (under ``shift``),
        the mean over the TTA views ``tta`` (``skinfeat.tta``), as ``evaluate`` runs them."""
        from skinfeat.external import image_features, model_probabilities

        feats = image_features(self.backbone, paths, self.resize, shift, tta, progress=progress)
        return model_probabilities(self, feats)

    def prediction(self, path, proba):
        return Prediction(Path(path).stem, str(path), proba, self.head.adjust(proba[None])[0])

    def predict_tta(self, image, views=None):
        """Mean probabilities [7] over the clean view and ``views`` augmented views of a
        decoded (not resized) image, augmented as extraction does."""
        batch = np.concatenate([self.resized(image)[None],
                                augmented_views(image, views or self.tta_views, self.input_size, self.resize,
                                                preset=self.augment)])
        return self.predict_proba(batch).mean(axis=0)


def load_predictor(directory, verify_hash=True):
    return Predictor(directory, verify_hash)


def augmented_views(image, n_views, size, policy, seed=TTA_SEED, preset="mild"):
    """``n_views`` views [V, H, W, 3] of a decoded image, by ``skinfeat.extract._augment``
    with seeds (seed, 0..V-1), resized as extraction does. Imports TensorFlow."""
    from skinfeat.augment import _augment, _resize
    from skinfeat.runtime import tensorflow

    tf = tensorflow()
    x = tf.constant(image)
    return np.stack([_resize(_augment(x, tf.constant([seed, v], tf.int64), preset), size, policy).numpy()
                     for v in range(n_views)])
