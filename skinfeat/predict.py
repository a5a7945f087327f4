"""Predict the lesion class of images with a fitted model directory.

    from skinfeat.predict import load_predictor, predict_paths
    model = load_predictor("models/x")
    for p in predict_paths(model, ["photos/"]):      # streams any number of images
        print(p.image, p.top(3))

The model directory is all it needs: the backbone as ``backbone.tflite``
(written by ``skinfeat.export``), the head's arrays and model.json. A new
process imports neither TensorFlow nor scikit-learn: images are decoded and
resized with PIL/simplejpeg and numpy exactly as extraction does
(``skinfeat.images``), the backbone runs in the ``ai-edge-litert`` interpreter
and the head in numpy (``skinfeat.numpy_heads``). Only ``tta=True`` imports
TensorFlow, for extraction's own augmentation (``skinfeat.extract._augment``).
"""

import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from skinfeat.classes import CLASSES, FULL_NAMES
from skinfeat.errors import DataError, ModelError
from skinfeat.images import IMAGE_EXTENSIONS, decode, is_image_name, resize
from skinfeat.runtime import stderr_without

TFLITE = "backbone.tflite"  # skinfeat.export.TFLITE
DEFAULT_TOP_K = 3
DEFAULT_TTA_VIEWS = 8
TTA_SEED = 0
BATCH_SIZE = 16


@lru_cache(maxsize=None)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context in which numpy's BLAS uses one thread: the small matrix products of
    resizing and heads run ~10x slower with two OpenBLAS threads spinning on a busy
    2-core machine."""
    return _blas().limit(limits=1, user_api="blas")


class TFLiteBackbone:
    """A TFLite image feature-vector model: float32 [B, H, W, 3] in [0, 1] -> [B, D]."""

    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        # Drops the C++ runtime's "INFO: Created TensorFlow Lite XNNPACK delegate" line.
        with stderr_without(lambda line: True):
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_size = tuple(int(s) for s in self._input["shape"][1:3])
        self.feature_dim = int(self._output["shape"][-1])
        self._batch = int(self._input["shape"][0])

    def __call__(self, images):
        images = np.ascontiguousarray(images, np.float32)
        if images.shape[1:] != (*self.input_size, 3):
            raise ValueError(f"images of shape {images.shape[1:]}, expected {(*self.input_size, 3)}")
        if len(images) != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [len(images), *self.input_size, 3])
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self._input["index"], images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()


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


def read_model_manifest(directory):
    """model.json of ``directory`` (``skinfeat.model_io.read_manifest``), with every
    file it lists present; ModelError saying what is wrong."""
    from skinfeat.model_io import MANIFEST, read_manifest

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist; expected a folder written by "
                         "`skinfeat fit --out DIR`")
    manifest = read_manifest(directory)
    missing = [name for name in manifest.get("files", []) if not (directory / name).is_file()]
    if missing:
        raise ModelError(f"model {directory} is missing {', '.join(missing)} (listed in its {MANIFEST}); "
                         f"copy the whole directory, or re-fit with `skinfeat fit --out {directory}`")
    return manifest


def _check_export(directory, manifest, verify_hash):
    export, backbone = manifest.get("export") or {}, manifest.get("backbone") or {}
    fix = f"run `skinfeat export --model {directory}` where backbone {backbone.get('module')!r} is available"
    if not export.get("file"):
        why = f" ({export['skipped']})" if export.get("skipped") else ""
        raise ModelError(f"model {directory} has no exported backbone{why}; prediction from images needs "
                         f"{TFLITE} inside the model: {fix}")
    path = Path(directory) / export["file"]
    if not path.is_file():
        raise ModelError(f"model {directory} is missing {export['file']} (its backbone); {fix}")
    if export.get("module_fingerprint") != backbone.get("module_fingerprint"):
        raise ModelError(
            f"model {directory}: its {export['file']} was exported from backbone fingerprint "
            f"{str(export.get('module_fingerprint'))[:12]}, but the head was fitted on features of fingerprint "
            f"{str(backbone.get('module_fingerprint'))[:12]}: the backbone changed since the model was fitted; {fix}")
    if verify_hash:
        from skinfeat.export import sha256_file

        if sha256_file(path) != export.get("sha256"):
            raise ModelError(f"model {directory}: {export['file']} changed since it was exported (sha256 "
                             f"differs from model.json); {fix}")
    return path, export


class Predictor:
    """A model directory loaded for prediction: TFLite backbone plus numpy head."""

    def __init__(self, directory, verify_hash=True, threads=None):
        from skinfeat.numpy_heads import HeadFunction

        self.directory = Path(directory)
        self.manifest = read_model_manifest(directory)
        path, export = _check_export(directory, self.manifest, verify_hash)
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
        self.resize = export.get("resize") or "squash"
        backbone = self.manifest.get("backbone") or {}
        trained_views = int(backbone.get("views") or 0) if self.manifest.get("training", {}).get("use_views") else 0
        self.tta_views = trained_views or DEFAULT_TTA_VIEWS

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

    def prediction(self, path, proba):
        return Prediction(Path(path).stem, str(path), proba, self.head.adjust(proba[None])[0])

    def predict_tta(self, image, views=None):
        """Mean probabilities [7] over the clean view and ``views`` augmented views of a
        decoded (not resized) image, augmented as extraction does."""
        batch = np.concatenate([self.resized(image)[None],
                                augmented_views(image, views or self.tta_views, self.input_size, self.resize)])
        return self.predict_proba(batch).mean(axis=0)


def load_predictor(directory, verify_hash=True):
    return Predictor(directory, verify_hash)


def augmented_views(image, n_views, size, policy, seed=TTA_SEED):
    """``n_views`` views [V, H, W, 3] of a decoded image, by ``skinfeat.extract._augment``
    with seeds (seed, 0..V-1), resized as extraction does. Imports TensorFlow."""
    from skinfeat.extract import _augment, _resize
    from skinfeat.runtime import tensorflow

    tf = tensorflow()
    x = tf.constant(image)
    return np.stack([_resize(_augment(x, tf.constant([seed, v], tf.int64)), size, policy).numpy()
                     for v in range(n_views)])


# ----------------------------------------------------------------------------- inputs

def iter_image_paths(inputs):
    """Image paths of ``inputs`` (files, and folders searched recursively in name
    order, hidden files skipped), one at a time. DataError for a missing path or a
    folder without images."""
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = False
            for path in _walk(item):
                found = True
                yield path
            if not found:
                raise DataError(f"folder {item} holds no images (looked recursively for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))}); give a folder of images or image files")
        elif item.exists():
            yield item
        else:
            raise DataError(f"{item}: no such file or folder; expected image files or folders of images")


def _walk(folder):
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_dir():
            yield from _walk(entry.path)
        elif is_image_name(entry.name):
            yield Path(entry.path)


def predict_paths(model, inputs, tta=False, batch_size=BATCH_SIZE, on_skip=None):
    """Predictions for every image under ``inputs``, streamed: ``batch_size`` images
    in memory at a time. An image that cannot be read is passed to
    ``on_skip(path, DataError)`` (default: raise) and left out."""
    batch = []
    for path in iter_image_paths(inputs):
        try:
            image = decode(path)
        except DataError as exc:
            if on_skip is None:
                raise
            on_skip(path, exc)
            continue
        if tta:
            yield model.prediction(path, model.predict_tta(image))
            continue
        batch.append((path, model.resized(image)))
        if len(batch) == batch_size:
            yield from _flush(model, batch)
            batch = []
    yield from _flush(model, batch)


def _flush(model, batch):
    if not batch:
        return
    proba = model.predict_proba(np.stack([image for _, image in batch]))
    for (path, _), p in zip(batch, proba):
        yield model.prediction(path, p)


# ----------------------------------------------------------------------------- output

FORMATS = ("table", "json", "csv", "isic")


def isic_row(proba, decimals=6):
    """Probabilities rounded to ``decimals`` that still sum to exactly 1 at that
    precision (the rounding remainder goes to the most probable class)."""
    units = np.round(np.asarray(proba, np.float64) / proba.sum() * 10**decimals).astype(np.int64)
    units[np.argmax(units)] += 10**decimals - units.sum()
    return [f"{u / 10**decimals:.{decimals}f}" for u in units]


def write_predictions(predictions, stream, fmt="table", top_k=DEFAULT_TOP_K):
    """Write ``predictions`` (an iterable, consumed as it comes) to the text
    ``stream`` in ``fmt`` (one of FORMATS); returns how many were written.

    - table: one line per image, ``id  name (CODE) p, ...`` for the top k
    - json: a JSON array of {image, path, top: [{class, name, probability}],
      probabilities, probabilities_as_trained}
    - csv: image, then class, name and probability of each of the top k
    - isic: the ISIC 2018 Task 3 submission, ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``

    Probabilities are the adjusted ones (``Prediction.adjusted``: the top class is
    the model's decision), except ``probabilities_as_trained``.
    """
    if fmt not in FORMATS:
        raise DataError(f"format {fmt!r} is unknown; expected one of {', '.join(FORMATS)}")
    import csv

    writer = csv.writer(stream, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(["image"] + [f"{f}_{r}" for r in range(1, top_k + 1)
                                     for f in ("class", "name", "probability")])
    elif fmt == "isic":
        writer.writerow(["image", *CLASSES])
    elif fmt == "json":
        stream.write("[")
    count = 0
    for p in predictions:
        top = p.top(top_k)
        if fmt == "table":
            shown = ", ".join(f"{name} ({code}) {prob:.3f}" for code, name, prob in top)
            stream.write(f"{p.image:<14} {shown}\n")
        elif fmt == "csv":
            writer.writerow([p.image] + [v for code, name, prob in top for v in (code, name, f"{prob:.6f}")])
        elif fmt == "isic":
            writer.writerow([p.image, *isic_row(p.adjusted)])
        else:
            item = {"image": p.image, "path": p.path,
                    "top": [{"class": c, "name": n, "probability": round(q, 6)} for c, n, q in top],
                    "probabilities": {c: round(float(q), 6) for c, q in zip(CLASSES, p.adjusted)},
                    "probabilities_as_trained": {c: round(float(q), 6) for c, q in zip(CLASSES, p.proba)}}
            stream.write(("," if count else "") + "\n " + json.dumps(item))
        count += 1
    if fmt == "json":
        stream.write("\n]\n")
    return count


def write_atomically(path, write, keep=bool):
    """Call ``write(text file)`` on a temporary file beside ``path`` and rename it into
    place when ``keep(result)``; a reader never sees a half-written file. The file
    gets the usual permissions (umask), not mkstemp's private ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            result = write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if keep(result):
            os.replace(tmp, path)
        return result
    finally:
        Path(tmp).unlink(missing_ok=True)
