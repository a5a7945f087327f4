"""Predict the lesion class of images with a fitted model directory.

    from skinfeat.model.predict import predict_paths
    from skinfeat.model.predictor import load_predictor
    model = load_predictor("models/x")
    for p in predict_paths(model, ["photos/"]):      # streams any number of images
        print(p.image, p.top(3))

The model directory is all it needs: the backbone as ``backbone.tflite``
(written by ``skinfeat.model.export``), the head's arrays and model.json. A new
process imports neither TensorFlow nor scikit-learn (``skinfeat.model.predictor``
says how). Only ``tta=True`` imports TensorFlow, for extraction's own augmentation.
This module streams the inputs through the predictor and writes the results.
"""

import json
from pathlib import Path

import numpy as np

from skinfeat.backbones.tflite import TFLiteBackbone
from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import DataError
from skinfeat.data.metadata import lookup
from skinfeat.imaging.images import IMAGE_EXTENSIONS, decode, name_problem, walk_images
from skinfeat.imaging.tta import tta_views
from skinfeat.model.predictor import DEFAULT_TOP_K, Prediction, Predictor, load_predictor

__all__ = ["FORMATS", "Prediction", "Predictor", "TFLiteBackbone", "isic_row", "iter_image_paths",
           "load_predictor", "predict_image", "predict_paths", "prediction_item", "write_predictions"]
BATCH_SIZE = 16


# ----------------------------------------------------------------------------- inputs

def iter_image_paths(inputs, on_skip=None):
    """Image paths of ``inputs`` (files, and folders searched recursively in name
    order, hidden files skipped), one at a time. DataError for a missing path or a
    folder without images; what a folder holds that cannot be used (a FIFO, an
    unreadable sub-folder, a name that is not UTF-8) goes to ``on_skip(path,
    DataError)`` (default: raise), as ``skinfeat.imaging.images.walk_images`` says."""
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = False
            for path in walk_images(item, on_skip):
                found = True
                yield path
            if not found:
                raise DataError(f"folder {item} holds no images (looked recursively for "
                                f"{', '.join(sorted(IMAGE_EXTENSIONS))}); give a folder of images or image files")
        elif item.exists():
            problem = name_problem(item)
            if problem is None:
                yield item
            elif on_skip is None:
                raise problem
            else:
                on_skip(item, problem)
        else:
            raise DataError(f"{item}: no such file or folder; expected image files or folders of images")


def predict_paths(model, inputs, tta=False, batch_size=BATCH_SIZE, on_skip=None, metadata=None, fallback=None):
    """Predictions for every image under ``inputs``, streamed: ``batch_size`` images
    in memory at a time. An image that cannot be read is passed to
    ``on_skip(path, DataError)`` (default: raise) and left out. ``tta``: a set of
    ``skinfeat.imaging.tta.TTA_SETS`` (fixed views, averaged), or True / "views" for
    extraction's augmentation as the model was trained (imports TensorFlow).
    A model fitted with metadata takes each image's values from ``metadata``
    (``skinfeat.data.metadata.read_metadata_csv``: image id -> values); an image with no
    row there is predicted by the image-only model ``fallback`` (default: the one the
    model holds, ``Predictor.fallback``), else DataError before any image is
    predicted. Each prediction says which inputs answered it (``Prediction.inputs``)."""

    if tta == "views":
        tta = True
    fallback = fallback if fallback is not None else getattr(model, "fallback", None)
    views = tta_views(tta) if isinstance(tta, str) else ()
    table = metadata or {}
    paths = iter_image_paths(inputs, on_skip)
    if model.metadata:
        paths = _check_metadata(model, list(paths), table, fallback)
    batch, target = [], model
    for path in paths:
        try:
            image = decode(path)
        except DataError as exc:
            if on_skip is None:
                raise
            on_skip(path, exc)
            continue
        chosen = fallback if model.metadata and Path(path).stem not in table else model
        if batch and (chosen is not target or len(batch) == batch_size):
            yield from _flush(target, batch, views, table)
            batch = []
        target = chosen
        if tta is True:
            meta = _metadata(target, [path], table)
            yield target.prediction(path, *target.assess_tta(image, metadata=meta))
            continue
        batch.append((path, image))
    yield from _flush(target, batch, views, table)


def predict_image(model, source, tta="none", metadata=None, name="image"):
    """The prediction of one image (a path or the file's bytes) as ``predict_paths``
    makes it: ``tta`` as there, ``metadata`` ({column: [value]}) for a model fitted with it."""

    image = decode(source)
    if tta in (True, "views"):
        proba, ood = model.assess_tta(image, metadata=metadata)
    else:
        proba, ood = model.assess([image], tta=tta_views(tta) if tta else (), metadata=metadata)
        proba, ood = proba[0], None if ood is None else ood[0]
    return model.prediction(name, proba, ood)


def _check_metadata(model, paths, table, fallback):
    missing = [p for p in paths if Path(p).stem not in table]
    columns = ", ".join(model.metadata["columns"])
    if missing and fallback is None:
        raise DataError(f"model {model.directory} was fitted with metadata ({columns}), and "
                        + (f"the metadata CSV has no row for {len(missing)} of the {len(paths)} images (e.g. "
                           f"{Path(missing[0]).name})" if table else "no --metadata CSV was given")
                        + "; pass --metadata CSV with their rows, or --fallback DIR (an image-only model) "
                          "for images without")
    if fallback is not None and fallback.metadata:
        raise DataError(f"fallback model {fallback.directory} needs metadata too; expected an image-only model")
    return paths


def _metadata(model, paths, table):
    if not model.metadata:
        return None

    return lookup(table, [Path(p).stem for p in paths])[0]


def _flush(model, batch, views=(), table=None):
    if not batch:
        return
    paths = [path for path, _ in batch]
    proba, ood = model.assess([image for _, image in batch], tta=views, metadata=_metadata(model, paths, table or {}))
    for i, (path, p) in enumerate(zip(paths, proba)):
        yield model.prediction(path, p, None if ood is None else ood[i])


# ----------------------------------------------------------------------------- output

FORMATS = ("table", "json", "csv", "isic")


def isic_row(proba, decimals=6):
    """Probabilities rounded to ``decimals`` that still sum to exactly 1 at that
    precision (the rounding remainder goes to the most probable class)."""
    units = np.round(np.asarray(proba, np.float64) / proba.sum() * 10**decimals).astype(np.int64)
    units[np.argmax(units)] += 10**decimals - units.sum()
    return [f"{u / 10**decimals:.{decimals}f}" for u in units]


def prediction_item(p, top_k=DEFAULT_TOP_K):
    """One prediction as ``--format json`` writes it (see ``write_predictions``)."""
    def rounded(values):
        return {c: round(float(q), 6) for c, q in zip(CLASSES, values)}

    return {"image": p.image, "path": p.path,
            "decision": {"class": p.decision, "name": FULL_NAMES[p.decision]},
            "top": [{"class": c, "name": n, "probability": round(q, 6)} for c, n, q in p.top(top_k)],
            "inputs": p.inputs, **({} if p.refer is None else {"refer": p.refer}),
            **({} if p.ood is None else {"unusual": p.unusual, "ood_score": round(p.ood, 4)}),
            "probabilities": rounded(p.probability), "calibrated": p.calibrated,
            "decision_scores": rounded(p.adjusted),
            "probabilities_as_trained": rounded(p.proba)}


def _referred(p):
    return "-" if p.refer is None else "yes" if p.refer else "no"


def _unusual(p):
    return "-" if p.unusual is None else "yes" if p.unusual else "no"


def write_predictions(predictions, stream, fmt="table", top_k=DEFAULT_TOP_K, show_inputs=False, show_refer=False,
                      show_unusual=False):
    """Write ``predictions`` (an iterable, consumed as it comes) to the text
    ``stream`` in ``fmt`` (one of FORMATS); returns how many were written.

    - table: one line per image, ``id  DECISION  name (CODE) p, ...`` for the top k,
      under a header line
    - json: a JSON array of {image, path, decision: {class, name}, top: [{class,
      name, probability}], probabilities, decision_scores, probabilities_as_trained}
    - csv: image, decision, then class, name and probability of each of the top k
    - with ``show_inputs`` (a model fitted with metadata), table and csv also say what
      answered each image: its ``inputs`` (json always does)
    - with ``show_refer`` (a model with an operating point), table and csv have a
      ``refer`` column after the decision: yes, no, or - for an image its fallback
      answered (json: ``refer``, where the answering model has a point)
    - with ``show_unusual`` (a model with an out-of-distribution score), table and csv
      have an ``unusual`` column: yes for an image unlike the model's training images
      (its score above the model's threshold), no, or - (json: ``unusual`` and
      ``ood_score``, where the answering model has the score)
    - isic: the ISIC 2018 Task 3 submission, ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``

    Probabilities are calibrated (``Prediction.probability``); the decision is the
    argmax of the decision scores (``Prediction.adjusted``), which the ISIC file
    carries, because the challenge scores the argmax of each row by balanced accuracy.
    """
    if fmt not in FORMATS:
        raise DataError(f"format {fmt!r} is unknown; expected one of {', '.join(FORMATS)}")
    import csv

    writer = csv.writer(stream, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(["image", "decision"] + (["refer"] if show_refer else [])
                        + (["unusual"] if show_unusual else [])
                        + (["inputs"] if show_inputs else [])
                        + [f"{f}_{r}" for r in range(1, top_k + 1) for f in ("class", "name", "probability")])
    elif fmt == "isic":
        writer.writerow(["image", *CLASSES])
    elif fmt == "json":
        stream.write("[")
    count = 0
    for p in predictions:
        top = p.top(top_k)
        if fmt == "table":
            if not count:
                kind = "calibrated probabilities" if p.calibrated else "probabilities as trained (the model records no calibration)"
                stream.write(f"{'image':<14} {'decision':<8}  " + ("refer  " if show_refer else "")
                             + ("unusual  " if show_unusual else "") + f"most probable classes, {kind}\n")
            shown = ", ".join(f"{name} ({code}) {prob:.3f}" for code, name, prob in top)
            stream.write(f"{p.image:<14} {p.decision:<8}  " + (f"{_referred(p):<5}  " if show_refer else "")
                         + (f"{_unusual(p):<7}  " if show_unusual else "") + shown
                         + (f"  [{p.inputs}]" if show_inputs else "") + "\n")
        elif fmt == "csv":
            writer.writerow([p.image, p.decision] + ([_referred(p)] if show_refer else [])
                            + ([_unusual(p)] if show_unusual else []) + ([p.inputs] if show_inputs else [])
                            + [v for code, name, prob in top for v in (code, name, f"{prob:.6f}")])
        elif fmt == "isic":
            writer.writerow([p.image, *isic_row(p.adjusted)])
        else:
            stream.write(("," if count else "") + "\n " + json.dumps(prediction_item(p, top_k)))
        count += 1
    if fmt == "json":
        stream.write("\n]\n")
    return count
