"""A model directory loaded for prediction from images: the TFLite backbone
(``skinfeat.backbones.tflite``) plus the head evaluated in numpy by the heads' own
inference functions (``skinfeat.heads.inference``). A new process imports
neither TensorFlow nor scikit-learn: images are decoded and resized with
PIL/simplejpeg and numpy exactly as extraction does (``skinfeat.imaging.images``). Only
test-time augmentation imports TensorFlow, for extraction's own augmentation
(``skinfeat.imaging.augment.augment_image``)."""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from skinfeat.backbones.tflite import TFLiteBackbone
from skinfeat.core.calibration import calibrated, temperature_of
from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import ModelError, SkinfeatError
from skinfeat.core.ood import FILE as OOD_FILE
from skinfeat.core.ood import KEYS as OOD_KEYS
from skinfeat.core.ood import ood_scores, project
from skinfeat.core.operating import TASKS, refer
from skinfeat.core.tf_runtime import tensorflow
from skinfeat.data.metadata import beside_views, encode, width
from skinfeat.heads.inference import LOG_PROBA, adjusted, class_offsets, in_classes_order
from skinfeat.imaging.augment import augment_image, resize_tf
from skinfeat.imaging.images import decode, resize
from skinfeat.imaging.lesion import preprocess
from skinfeat.model.batches import image_features
from skinfeat.model.format import (
    HEAD_ERRORS,
    check_fingerprint,
    damaged,
    lesion_policy,
    model_parts,
    probe_head,
    read_manifest,
    read_state,
    resize_policy,
    sha256_file,
)
from skinfeat.model.seen import read_seen

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
    """One image's prediction, in CLASSES order: ``probability``, the calibrated class
    probabilities (the temperature the model's run fitted on its out-of-fold
    predictions, ``skinfeat.core.calibration``; as trained for a model without one);
    ``decision``, the model's class: the argmax of ``adjusted``, the decision scores
    (the prior adjustment of ``fit --adjust``, which balanced accuracy scores); and
    ``proba``, the probabilities as the head was trained."""

    image: str  # the file name without extension (the ISIC image id)
    path: str
    proba: np.ndarray
    adjusted: np.ndarray
    probability: np.ndarray
    calibrated: bool = True  # False: the model records no temperature, ``probability`` is as trained
    inputs: str = "image"  # what the model that answered took: "image", or "image+age+sex+..." with metadata
    refer: bool | None = None  # referred by the model's operating point (fit --operating-point); None: it has none
    ood: float | None = None  # the out-of-distribution score (skinfeat.core.ood); None: the model has none
    unusual: bool | None = None  # the score is above the model's threshold: an image unlike its training images

    @property
    def decision(self):
        """The model's class (its code): the argmax of the decision scores."""
        return CLASSES[int(np.argmax(self.adjusted))]

    def top(self, k=DEFAULT_TOP_K):
        """The ``k`` most probable classes: [(code, full name, calibrated probability)]."""
        order = np.argsort(-self.probability, kind="stable")[:k]
        return [(CLASSES[i], FULL_NAMES[CLASSES[i]], float(self.probability[i])) for i in order]


def prediction_of(path, proba, model, ood=None):
    """The ``Prediction`` of the image at ``path`` from its probabilities as trained by
    ``model`` (a Predictor or an ensemble's) and its out-of-distribution score ``ood``
    (None: the model has none): its head's ``adjust`` makes the decision scores, its
    ``temperature`` the calibrated ones."""
    point = getattr(model, "operating_point", None)
    limit = getattr(model, "ood", None)
    return Prediction(Path(path).stem, str(path), proba, model.head.adjust(proba[None])[0],
                      calibrated(proba[None], model.temperature)[0], model.temperature is not None,
                      inputs_of(model.metadata), None if point is None else bool(refer(proba[None], point)[0]),
                      None if ood is None else float(ood),
                      None if ood is None or limit is None else bool(ood > limit.threshold))


class OODScore:
    """The out-of-distribution score a model carries (``skinfeat.core.ood``, fitted on
    its training images' features) and its threshold: ``OODScore(features)`` gives the
    scores [n] of image features [n, D]."""

    def __init__(self, directory, manifest, dims):
        block = manifest["ood"]
        threshold = block.get("threshold") if isinstance(block, dict) else None
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or block.get("file") != OOD_FILE:
            raise damaged(directory, f"its model.json has ood = {str(block)[:60]}, expected "
                                     f"{{\"threshold\": a number, \"file\": \"{OOD_FILE}\", ...}}")
        self.threshold, self.about = float(threshold), block
        try:
            with np.load(Path(directory) / OOD_FILE, allow_pickle=False) as arrays:
                self.stats = {k: arrays[k].astype(np.float32) for k in OOD_KEYS}
                # the shift check's fold, clean and under each shift, in the score's space (fit --shift)
                self.shifts = (dict(zip(arrays["shift_names"].tolist(), arrays["shift_means"].astype(np.float32)))
                               if "shift_names" in arrays.files else {})
        except (OSError, ValueError, KeyError) as exc:
            raise damaged(directory, f"cannot read its {OOD_FILE} ({type(exc).__name__}: {exc})") from None
        if self.stats["mean"].shape != (dims,) or self.stats["components"].shape[0] != dims:
            raise damaged(directory, f"its {OOD_FILE} is for {self.stats['mean'].shape[0]} features, its "
                                     f"backbone gives {dims}")

    def __call__(self, features):
        with one_blas_thread():
            return ood_scores(self.stats, features)

    def project(self, features):
        """Image features [n, D] in the score's space [n, k] (``skinfeat.core.ood.project``)."""
        with one_blas_thread():
            return project(self.stats, features)


def ood_of(directory, manifest, dims):
    """The model's ``OODScore``, or None for a model fitted before skinfeat had one."""
    return OODScore(directory, manifest, dims) if manifest.get("ood") is not None else None


def operating_point_of(directory, manifest):
    """The operating point a model carries (``fit --operating-point``), or None."""
    point = (manifest.get("training") or {}).get("operating_point")
    if point is None:
        return None
    if not (isinstance(point, dict) and point.get("task") in TASKS and isinstance(point.get("threshold"), (int, float))
            and not isinstance(point.get("threshold"), bool)):
        raise damaged(directory, f"its model.json has training.operating_point = {str(point)[:60]}, expected "
                                 "{\"task\": \"melanoma\" or \"malignant\", \"threshold\": a number, ...}")
    return point


def inputs_of(metadata):
    """What a model takes, in words: "image", or "image+" its metadata columns."""
    return "+".join(["image", *(metadata or {}).get("columns", [])])


def load_fallback(directory, manifest):
    """The image-only model a model fitted with metadata holds for images without it
    (``skinfeat.model.store.save_model``'s ``fallback``), or None."""
    block = manifest.get("fallback")
    if not block:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("dir"), str) or "/" in block["dir"]:
        raise damaged(directory, f"its model.json has fallback = {str(block)[:60]}, expected {{\"dir\": \"fallback\", ...}}")
    fallback = Predictor(Path(directory) / block["dir"])
    if fallback.metadata:
        raise damaged(directory, f"its fallback model {block['dir']} needs metadata too; expected an image-only model")
    return fallback


def _check_export(directory, manifest, part, verify_hash):
    export, backbone = part["export"], part["backbone"]
    fix = (f"run `skinfeat export --model {directory}` where backbone {backbone.get('module')!r} is available "
           "(with --module naming it, if it is not in the catalog)")
    if not export.get("file"):
        why = f" ({export['skipped']})" if export.get("skipped") else ""
        raise ModelError(f"model {directory} has no exported backbone{why}; prediction from images needs "
                         f"{part['file']} inside the model: {fix}")
    path = Path(directory) / export["file"]
    if not path.is_file():
        raise ModelError(f"model {directory} is missing {export['file']} (its backbone); {fix}")
    check_fingerprint(directory, {"backbone": backbone}, export.get("module_fingerprint"), f"its {export['file']}", fix)
    if verify_hash and sha256_file(path) != export.get("sha256"):
        raise ModelError(f"model {directory}: {export['file']} changed since it was exported (sha256 "
                         f"differs from model.json); {fix}")
    return path, export


@dataclass
class Part:
    """One backbone of a model: its TFLite network and how images are prepared for it
    (the lesion preprocessing, then the resize)."""

    backbone: TFLiteBackbone
    resize: str
    input_size: tuple
    augment: str
    lesion: str


def _load_part(directory, manifest, part, verify_hash, threads):
    path, export = _check_export(directory, manifest, part, verify_hash)
    resize = resize_policy(directory, export)
    lesion = lesion_policy(f"model {directory}", part["backbone"])
    try:
        backbone = TFLiteBackbone(path, threads)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"model {directory}: {export['file']} cannot be loaded ({exc}); "
                         f"re-export it with `skinfeat export --model {directory}`") from None
    return Part(backbone, resize, backbone.input_size, part["backbone"].get("augment") or "mild", lesion)


class Predictor:
    """A model directory loaded for prediction: its TFLite backbones (one, or several
    whose features are joined) plus the numpy head, and the metadata encoding of a
    model fitted with ``--metadata``."""

    def __init__(self, directory, verify_hash=True, threads=None):
        self.directory = Path(directory)
        self.manifest = read_manifest(directory)
        self.parts = [_load_part(directory, self.manifest, part, verify_hash, threads)
                      for part in model_parts(self.manifest)]
        self.head = HeadFunction(directory, self.manifest)
        self.temperature = temperature_of(self.manifest)
        self.operating_point = operating_point_of(directory, self.manifest)
        self.fallback = load_fallback(directory, self.manifest)
        self.metadata = self.manifest.get("metadata")  # the encoding, or None for an image-only model
        n_meta = width(self.metadata) if self.metadata else 0
        dims = sum(p.backbone.feature_dim for p in self.parts)
        if dims + n_meta != self.head.n_features:
            meta = f" and {n_meta} metadata columns" if n_meta else ""
            raise ModelError(f"model {directory}: the backbone{'s' * (len(self.parts) > 1)} give{'s' * (len(self.parts) == 1)} "
                             f"{dims} features{meta}, the head expects {self.head.n_features}; re-export with "
                             "`skinfeat export`, or re-fit")
        self.image_dims = dims
        self.ood = ood_of(directory, self.manifest, dims)
        first = self.parts[0]
        self.backbone, self.resize, self.input_size = first.backbone, first.resize, first.input_size
        backbone = self.manifest.get("backbone") or {}
        use_views = (self.manifest.get("training") or {}).get("use_views")
        trained_views = int(backbone.get("views") or 0) if use_views else 0
        self.tta_views = trained_views or DEFAULT_TTA_VIEWS

    @property
    def seen(self):
        """The images it was fitted on (``skinfeat.model.seen.Seen``), or None when it does not record them."""
        return read_seen(self.directory, self.manifest)

    @property
    def image_only(self):
        """One backbone and no metadata: images alone go in (what saliency maps need)."""
        return len(self.parts) == 1 and not self.metadata

    def _image_only(self, what):
        if not self.image_only:
            raise ModelError(f"model {self.directory} joins {self.manifest['backbone'].get('module')}"
                             f"{' with metadata' if self.metadata else ''}; {what} works on a model of one "
                             "backbone and no metadata: fit one with a single --features and no --metadata")

    def load_image(self, source):
        """Decoded, cropped and resized like extraction: float32 [H, W, 3] in [0, 1] (a model of one backbone)."""
        self._image_only("loading one resized image")
        return self.resized(decode(source))

    def resized(self, image, part=None, lesion=True):
        """A decoded image as ``part`` (default: the first) takes it: preprocessed by its
        lesion option (unless ``lesion`` is False: done already), then resized."""
        part = part or self.parts[0]
        with one_blas_thread():
            return resize(preprocess(image, part.lesion) if lesion else image, part.input_size, part.resize)

    def predict_proba(self, images):
        """Probabilities [n, 7] (CLASSES order, as trained) of resized images [n, H, W, 3]
        (a model of one backbone and no metadata: saliency maps)."""
        self._image_only("predicting from resized images")
        features = self.backbone(images)
        with one_blas_thread():
            return self.head(features)

    def features(self, sources, shift=None, tta=(), progress=None, metadata=None):
        """Head inputs [n, 1 + len(tta), D] of ``sources`` (paths or decoded images):
        each backbone's features side by side, then ``metadata`` ({column: n raw
        values}) encoded as in fitting, for a model fitted with it."""
        step = (lambda n: progress(n / len(self.parts))) if progress else None
        feats = [image_features(p.backbone, sources, p.resize, shift, tta, progress=step, lesion=p.lesion)
                 for p in self.parts]
        return self._with_metadata(np.concatenate(feats, axis=2), metadata)

    def _with_metadata(self, feats, metadata):
        if not self.metadata:
            return feats
        if metadata is None:
            raise ModelError(f"model {self.directory} was fitted with metadata ({', '.join(self.metadata['columns'])}) "
                             "and none was given for these images; pass --metadata CSV")
        return beside_views(feats, encode(self.metadata, metadata, len(feats))[0])

    def probabilities(self, sources, shift=None, tta=(), progress=None, metadata=None):
        """Probabilities [n, 7] as trained, averaged over the TTA views (``features``)."""
        return self.assess(sources, shift, tta, progress, metadata)[0]

    def assess(self, sources, shift=None, tta=(), progress=None, metadata=None):
        """(``probabilities``, out-of-distribution scores [n] of the clean view, or None
        for a model without the score)."""
        feats = self.features(sources, shift, tta, progress, metadata)
        with one_blas_thread():
            proba = np.mean([self.head(feats[:, v]) for v in range(feats.shape[1])], axis=0)
        return proba, self._ood(feats[:, 0])

    def _ood(self, features):
        return None if self.ood is None else self.ood(features[:, :self.image_dims])

    def unknown_metadata(self, values, n, where="the metadata"):
        """{column: how many of the n images have a category the model never saw}; DataError
        for a value that cannot be encoded (an age that is not a number)."""
        return encode(self.metadata, values, n, where)[1] if self.metadata else {}

    def prediction(self, path, proba, ood=None):
        return prediction_of(path, proba, self, ood)

    def predict_tta(self, image, views=None, metadata=None):
        """Mean probabilities [7] over the clean view and ``views`` augmented views of a
        decoded (not resized) image (``assess_tta``)."""
        return self.assess_tta(image, views, metadata)[0]

    def assess_tta(self, image, views=None, metadata=None):
        """(mean probabilities [7] over the clean view and ``views`` augmented views of a
        decoded (not resized) image, augmented as extraction does (the same
        augmentation for every backbone, of the image cropped as for it, each
        resized to its own input); the clean view's out-of-distribution score or None)."""
        feats = []
        for part in self.parts:
            prepared = preprocess(image, part.lesion)
            batch = np.concatenate([self.resized(prepared, part, lesion=False)[None],
                                    augmented_views(prepared, views or self.tta_views, part.input_size, part.resize,
                                                    preset=part.augment)])
            feats.append(part.backbone(batch))
        joined = self._with_metadata(np.concatenate(feats, axis=1)[None], metadata)[0]
        with one_blas_thread():
            proba = self.head(joined).mean(axis=0)
        ood = self._ood(joined[:1])
        return proba, None if ood is None else ood[0]


def load_predictor(directory, verify_hash=True):
    return Predictor(directory, verify_hash)


def augmented_views(image, n_views, size, policy, seed=TTA_SEED, preset="mild"):
    """``n_views`` views [V, H, W, 3] of a decoded image, by ``skinfeat.imaging.augment.augment_image``
    with seeds (seed, 0..V-1), resized as extraction does. Imports TensorFlow."""

    tf = tensorflow()
    x = tf.constant(image)
    return np.stack([resize_tf(augment_image(x, tf.constant([seed, v], tf.int64), preset), size, policy).numpy()
                     for v in range(n_views)])
