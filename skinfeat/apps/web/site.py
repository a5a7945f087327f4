"""``skinfeat export --format web``: a static folder whose page runs the model in
the browser, offline.

The backbone runs as the ``backbone.tflite`` the model directory already holds
(its batch fixed at 1: ``batch_of_one``), with LiteRT.js (``@litertjs/core``,
vendored under ``vendor/litertjs``: its Wasm is self-hosted, nothing is fetched
from elsewhere). The head (logreg or softmax)
is a few matrix products in the page's script, from ``model/head.json`` and the
float32 arrays of ``model/head.bin``. Baseline JPEGs are decoded by ``jpeg.js``
exactly as ``skinfeat.imaging.images`` decodes them (libjpeg-turbo's fast IDCT: the
browser's own decoder uses the accurate one, 3/255 apart, ~0.07 in probability);
other images by the browser. Resizing in the script follows ``skinfeat.imaging.images``
(the triangle filter, the crop / pad / squash policies), with the clean view
only, as ``predict`` does by default (no ``--tta``).

LiteRT.js was chosen by measurement over ONNX Runtime Web 1.30 (tf2onnx 1.17 from
the same TFLite file), both single-threaded Wasm in headless Chromium on this
CPU: EfficientNet-Lite0 warm 48-51 ms vs 83-90 ms, load 0.3-0.5 s vs 0.6-1.0 s,
features identical to predict's TFLite (0.0) vs 6e-6 apart, no conversion step
(tf2onnx needs its own TensorFlow), 9.4 MB of Wasm vs 14 MB.

Layout of SITE/::

    index.html  app.js  jpeg.js  model/backbone.tflite  model/head.json  model/head.bin
    vendor/litertjs/{core.js, wasm-utils.js, litert_wasm[_compat]_internal.{js,wasm}, LICENSE}
"""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np

from skinfeat.core.atomic import atomic_dir
from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import ModelError, UsageError
from skinfeat.core.ood import ood_line
from skinfeat.core.operating import point_line
from skinfeat.core.writable import check_writable, writing
from skinfeat.imaging.images import MAX_ASPECT, MAX_PIXELS, MIN_SIDE
from skinfeat.model.format import model_parts, read_manifest, read_state
from skinfeat.model.predictor import Predictor

HERE = Path(__file__).parent
PAGE_FILES = ("index.html", "app.js", "jpeg.js")
VENDOR = HERE / "vendor" / "litertjs"
HEAD_JSON = "model/head.json"  # also what marks a folder as a site written here (it may be replaced)


def refusal(directory, manifest):
    """Why the page cannot run this model (None when it can)."""
    backbone = manifest.get("backbone") or {}
    if len(model_parts(manifest)) > 1:
        return f"it joins several backbones' features ({backbone.get('module')})"
    if manifest.get("metadata"):
        return f"it was fitted with metadata ({', '.join(manifest['metadata'].get('columns', []))})"
    if backbone.get("lesion") not in (None, "none"):
        return f"its backbone crops the lesion first (lesion {backbone.get('lesion')!r})"
    if manifest["head"] not in ("logreg", "softmax"):
        return f"its head is {manifest['head']!r} (the page evaluates logreg and softmax heads)"
    return None


def _layers(head, state):
    """The head after standardisation as dense layers [(W [d_in, d_out], b, relu)]."""
    if head == "logreg":
        components = state.get("components_")
        first = [] if components is None else [(components.T, np.zeros(len(components)), False)]
        return first + [(state["coef_"].T, state["intercept_"], False)]
    n = sum(name.startswith("weight_") for name in state)
    weights = [state[f"weight_{i}"] for i in range(n)]
    return [(weights[i], weights[i + 1], i + 2 < n) for i in range(0, n, 2)]


def head_files(directory, manifest, predictor):
    """(head.json dict, head.bin bytes) of the model's head and how images are prepared."""
    state = read_state(directory, manifest)
    arrays, blob = {}, bytearray()

    def put(name, array):
        array = np.ascontiguousarray(array, "<f4")
        arrays[name] = {"offset": len(blob), "shape": list(array.shape)}
        blob.extend(array.tobytes())

    put("mean", state["mean_"])
    put("scale", state["scale_"])
    layers = []
    for i, (w, b, relu) in enumerate(_layers(manifest["head"], state)):
        put(f"W{i}", w)
        put(f"b{i}", b)
        layers.append({"W": f"W{i}", "b": f"b{i}", "relu": bool(relu)})
    ood = None
    if predictor.ood is not None:  # the out-of-distribution score (skinfeat.core.ood), as the predictor runs it
        for name in ("mean", "scale", "components"):
            put(f"ood_{name}", predictor.ood.stats[name])
        ood = {"threshold": predictor.ood.threshold, "rule": ood_line(predictor.ood.about)}
    backbone = manifest["backbone"]
    info = {"format": "skinfeat-web-head", "format_version": 1,
            "name": Path(directory).resolve().name, "head": manifest["head"],
            "backbone": backbone.get("module"), "input_size": list(predictor.input_size),
            "resize": predictor.resize, "classes": list(CLASSES), "full_names": [FULL_NAMES[c] for c in CLASSES],
            "columns": predictor.head.columns.tolist(), "offsets": predictor.head.offsets.tolist(),
            "temperature": predictor.temperature or 1.0, "calibrated": predictor.temperature is not None,
            "operating_point": None if predictor.operating_point is None else {
                "positive": [CLASSES.index(c) for c in predictor.operating_point["positive_classes"]],
                "threshold": predictor.operating_point["threshold"], "rule": point_line(predictor.operating_point)},
            "ood": ood,
            "power": float(manifest["params"].get("power", 1)), "n_features": predictor.head.n_features,
            "limits": {"min_side": MIN_SIDE, "max_aspect": MAX_ASPECT, "max_pixels": MAX_PIXELS},
            "arrays": arrays, "layers": layers}
    return info, bytes(blob)


def batch_of_one(flatbuffer):
    """The TFLite ``flatbuffer`` with every tensor's dynamic batch (shape_signature
    [-1, ...], as the exported backbone has) fixed at 1: LiteRT.js runs only
    static shapes. The bytes are patched in place; nothing else changes."""
    from ai_edge_litert.schema_py_generated import Model

    data = bytearray(flatbuffer)
    model = Model.GetRootAs(data, 0)
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            slot = tensor._tab.Offset(18)  # shape_signature
            if slot and tensor.ShapeSignatureLength() and tensor.ShapeSignature(0) == -1:
                start = tensor._tab.Vector(slot)
                data[start:start + 4] = (1).to_bytes(4, "little", signed=True)
    return bytes(data)


def check_out(out):
    """UsageError when ``out`` holds something other than a site written here."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / HEAD_JSON).is_file():
        raise UsageError(f"--out {out} is a folder with other files in it; expected a new or empty folder "
                         "(or a site written by `skinfeat export --format web`): give another --out")


def export_web(directory, out):
    """Write the static site of the model ``directory`` into the folder ``out``
    (replaced as a whole when complete); of a model fitted with metadata, the
    image-only model it holds. Returns {"files": n, "bytes": total, "model": the
    directory exported}."""

    directory, out = Path(directory), Path(out)
    manifest = read_manifest(directory)
    if manifest.get("metadata") and manifest.get("fallback"):  # the page has only the image: its image-only model
        directory = directory / manifest["fallback"]["dir"]
        manifest = read_manifest(directory)
    why = refusal(directory, manifest)
    if why:
        raise ModelError(f"model {directory} cannot be exported as a web page: {why}; expected a model of one "
                         "backbone, no metadata or lesion crop, and a logreg or softmax head")
    predictor = Predictor(directory)  # checks the backbone file and the head as prediction does
    check_out(out)
    check_writable(out, "the web page", folder=True)
    info, blob = head_files(directory, manifest, predictor)
    with writing(out, "the web page"), atomic_dir(out) as tmp:
        (tmp / "model").mkdir()
        (tmp / "vendor" / "litertjs").mkdir(parents=True)
        for name in PAGE_FILES:
            shutil.copyfile(HERE / name, tmp / name)
        backbone = batch_of_one((directory / manifest["export"]["file"]).read_bytes())
        (tmp / "model" / "backbone.tflite").write_bytes(backbone)
        (tmp / HEAD_JSON).write_text(json.dumps(info, indent=1))
        (tmp / "model" / "head.bin").write_bytes(blob)
        for source in VENDOR.iterdir():
            target = tmp / "vendor" / "litertjs" / source.name
            if source.suffix == ".gz":
                with gzip.open(source) as f, open(target.with_suffix(""), "wb") as g:
                    shutil.copyfileobj(f, g)
            else:
                shutil.copyfile(source, target)
        files = [p for p in tmp.rglob("*") if p.is_file()]
        return {"files": len(files), "bytes": sum(p.stat().st_size for p in files), "model": str(directory)}
