"""Where did the model look? Saliency maps of one image for a fitted model.

    from skinfeat.apps.explain import explain
    result = explain("models/x", "lesion.jpg", method="occlusion", out="saliency.png")

- ``occlusion`` (any head, LightGBM included): slide a grey square over a
  ``grid`` x ``grid`` lattice of positions (the square twice the step, so windows
  overlap) and record how much the explained class's probability drops; each
  pixel gets the mean drop of the windows covering it. The occluded images run
  in batches through the same TFLite backbone and numpy head as ``predict``.
- ``gradient`` (differentiable heads: softmax, logreg): SmoothGrad, the mean
  absolute gradient of the class's log-probability with respect to the input
  pixels over noisy copies of the image. By the chain rule it is the backbone's
  vector-Jacobian product (TensorFlow autodiff through the backbone SavedModel,
  which must still have the fingerprint the model was fitted on, and be in the
  catalog or named with ``--module``: a model folder never picks a graph to run) with the
  head's gradient in feature space (central differences of the model's own
  head: no second copy of the head to keep in step). Imports TensorFlow.
- ``gradcam`` (any head): Grad-CAM on the backbone's last convolutional map A
  [h, w, C], from the module's ``feature_map`` signature (the built-in backbones
  and modules fine-tuned from them have it). The first C features are A's
  spatial mean, so d log P / d A[i, j, k] = g_k / (h w) with g the head's gradient
  in those features, and the map is ``relu(sum_k g_k A[:, :, k] / (h w))``: each
  cell's first-order share of the log-probability. For a linear head that is
  class activation mapping (CAM) of the log-probability. A tree head (LightGBM)
  is piecewise constant, so its g is a finite difference of one spatial standard
  deviation of each channel (how much one region of an image moves it) instead
  of a derivative. Features pooled from earlier stages (``-stages`` backbones)
  are not part of the map. Imports TensorFlow, one forward pass.

All explain the model input (the image resized as extraction resizes it). The
figure shows the image, the map over it, and the top classes with their
probabilities; :func:`explain_sample` draws a contact sheet of a dataset's images
(their maps, true and predicted classes, and how much of each map lies on the
image's border: letterbox bands, vignette, rulers).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinfeat.backbones.resolve import resolve_module
from skinfeat.core.calibration import calibrated
from skinfeat.core.classes import CLASSES, class_index
from skinfeat.core.errors import DataError, ModuleError, UsageError
from skinfeat.core.progress import bar
from skinfeat.core.tf_runtime import tensorflow
from skinfeat.core.writable import writing
from skinfeat.data.layouts import load_dataset
from skinfeat.model.format import backbone_spec, check_fingerprint
from skinfeat.model.predictor import load_predictor, one_blas_thread
from skinfeat.runs.combine import read_oof
from skinfeat.runs.records import read_records
from skinfeat.viz.plots import save_figure
from skinfeat.viz.saliency import plot_explanation, plot_sheet

METHODS = ("occlusion", "gradient", "gradcam")
DEFAULT_GRID = 16
GREY = 0.5
SMOOTHGRAD_SAMPLES = 12
SMOOTHGRAD_NOISE = 0.1  # standard deviation, in [0, 1] pixel units
DIFFERENTIABLE = ("logreg", "softmax")
BORDER_BAND = 0.125  # the outer band, as a fraction of each side, whose share of a map a sheet reports
DEFAULT_SAMPLE = 12


@dataclass
class Explanation:
    image_id: str
    image: np.ndarray  # [H, W, 3] the model input
    saliency: np.ndarray  # [H, W] in [0, 1] (all 0 when nothing matters)
    proba: np.ndarray  # [7] CLASSES order, as ``skinfeat predict`` shows them (calibrated)
    target: int  # the explained class (index into CLASSES)
    method: str
    peak: float = 1.0  # what 1 on the map stands for (UNITS[method])
    decision: int = None  # the model's decision (index into CLASSES), as predict makes it
    figure: object = None
    out: Path | None = None


def explain(model_dir, image_path, method="occlusion", target=None, grid=DEFAULT_GRID, out=None, module=None):
    """Saliency of ``image_path`` for model ``model_dir``: for class ``target`` (a code
    such as ``MEL``; default the model's decision). The maps follow the class's
    probability as trained. Draws the figure and, with ``out``, writes it as PNG.
    ``module``: the gradient method's backbone SavedModel, as the user names it
    (default: the recorded one, if the catalog has it)."""

    _check_method(method)
    model = load_predictor(model_dir)
    image = model.load_image(image_path)
    shown = model.prediction(image_path, model.predict_proba(image[None])[0])
    decision = CLASSES.index(shown.decision)
    index = decision if target is None else _class(target)
    backbone = method_backbone(model, method, module)
    saliency, peak = saliency_map(model, image, index, method, grid, backbone)
    result = Explanation(Path(image_path).stem, image, saliency, shown.probability, index, method, peak, decision)

    result.figure = plot_explanation(result)
    result.out = _save(result.figure, out)
    return result


def _save(figure, out):
    if out is None:
        return None

    with writing(out, "the picture"):
        return save_figure(figure, out)


@dataclass
class Cell:
    image_id: str
    image: np.ndarray
    saliency: np.ndarray  # [H, W] in [0, 1]
    peak: float
    true: int  # -1 when unlabelled
    predicted: int
    proba: float  # of the decided class (calibrated, as predict shows it)
    border: float  # the map's share on the outer band


@dataclass
class Sheet:
    cells: list
    method: str
    title: str
    per_class: bool
    band: float = BORDER_BAND
    figure: object = None
    out: Path | None = None

    @property
    def band_area(self):
        return 1 - (1 - 2 * self.band) ** 2

    @property
    def border(self):
        """The maps' mass on the outer band over their whole mass, all cells together."""
        mass = sum(c.saliency.sum() * c.peak for c in self.cells)
        return sum(c.border * c.saliency.sum() * c.peak for c in self.cells) / mass if mass > 0 else 0.0


def border_share(saliency, band=BORDER_BAND):
    """The share of ``saliency``'s mass on the outer ``band`` of each side (0 when empty)."""
    h, w = saliency.shape
    dh, dw = max(1, round(h * band)), max(1, round(w * band))
    total = saliency.sum()
    return float((total - saliency[dh:h - dh, dw:w - dw].sum()) / total) if total > 0 else 0.0


def sample_rows(labels, n, per_class=False, seed=0):
    """Row indices: ``n`` at random, or up to ``n`` of each class present (labelled rows)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if not per_class:
        return np.sort(rng.choice(len(labels), min(n, len(labels)), replace=False))
    rows = [rng.permutation(np.flatnonzero(labels == k))[:n] for k in range(len(CLASSES))]
    return np.concatenate([np.sort(r) for r in rows if len(r)])


def explain_sample(model_dir, data, n=DEFAULT_SAMPLE, per_class=False, method="occlusion", grid=8,
                   seed=0, out=None, module=None, progress=True):
    """Contact sheet of ``n`` images of dataset ``data`` (or ``n`` per class) with
    their maps for the predicted class, true and predicted classes; written as PNG
    with ``out``. Returns a :class:`Sheet`."""

    _check_method(method)
    if n < 1:
        raise UsageError(f"--sample {n}: expected a positive number of images")
    model = load_predictor(model_dir)
    manifest = load_dataset(data=data)
    if per_class and not (np.asarray(manifest.labels) >= 0).any():
        raise UsageError(f"--per-class needs labels, and {data} has none; drop --per-class")
    backbone = method_backbone(model, method, module)  # loaded once
    cells = []
    for row in bar(sample_rows(manifest.labels, n, per_class, seed), progress, unit="img", desc=f"explain ({method})"):
        image = model.load_image(manifest.paths[row])
        shown = model.prediction(manifest.paths[row], model.predict_proba(image[None])[0])
        best = CLASSES.index(shown.decision)
        saliency, peak = saliency_map(model, image, best, method, grid, backbone)
        cells.append(Cell(manifest.image_ids[row], image, saliency, peak, int(manifest.labels[row]), best,
                          float(shown.probability[best]), border_share(saliency)))

    sheet = Sheet(cells, method, f"{Path(model_dir).name} on {Path(data).name}", per_class)
    sheet.figure = plot_sheet(sheet)
    sheet.out = _save(sheet.figure, out)
    return sheet


ERRORS_PER_CLASS = 2


def error_rows(oof, per_class=ERRORS_PER_CLASS):
    """The most confident wrong out-of-fold predictions of a run (``oof``: its oof file's
    arrays, ``skinfeat.runs.combine.read_oof``): up to ``per_class`` of each true class,
    the highest probability of the wrongly decided class first, as [(row, true,
    decided)]."""
    proba, label = oof["proba"], np.asarray(oof["label"]).astype(int)
    decided = oof["pred"] if oof.get("pred") is not None else np.nan_to_num(proba, nan=-1).argmax(axis=1)
    scored = np.isfinite(proba).all(axis=1) & (np.asarray(oof["fold"]) >= 0) & (label >= 0)
    chosen = []
    for k in range(len(CLASSES)):
        wrong = np.flatnonzero(scored & (label == k) & (decided != k))
        order = wrong[np.argsort(-proba[wrong, decided[wrong]], kind="stable")][:per_class]
        chosen += [(int(r), k, int(decided[r])) for r in order]
    return chosen


def errors_sheet_path(record):
    """Where ``explain --errors`` puts a run's error gallery: beside its record, which ``report`` shows."""
    return Path(record["record_path"]).with_suffix(".errors.png")


def explain_errors(model_dir, data, per_class=ERRORS_PER_CLASS, method="occlusion", grid=8, out=None, module=None,
                   progress=True, runs=None):
    """The error gallery of the run a model was fitted by: per true class, its most
    confident wrong out-of-fold predictions (``error_rows``), each image with the
    saved model's map of the class the fold's head wrongly decided, its true class, and
    the calibrated probability out of fold; the images are found in dataset ``data``.
    Written to ``out`` (default: beside the run's record, ``errors_sheet_path``, where
    ``skinfeat report`` shows it). Returns a :class:`Sheet`."""
    _check_method(method)
    model = load_predictor(model_dir)
    run_id = (model.manifest.get("training") or {}).get("run_id")
    record = next((r for r in read_records(runs) if r.get("run_id") == run_id), None)
    if record is None:
        raise DataError(f"the run record of model {model_dir} (run {run_id}) is not in {runs or 'runs/'}; the error "
                        "gallery is drawn from its out-of-fold predictions: set $SKINFEAT_RUNS to the runs folder "
                        "it was fitted with")
    oof = read_oof(record, Path(record["record_path"]).parent)
    rows = error_rows(oof, per_class)
    if not rows:
        raise DataError(f"run {run_id} has no wrong out-of-fold prediction to show")
    manifest = load_dataset(data=data)
    where = dict(zip(manifest.image_ids, manifest.paths))
    missing = [str(oof["image_id"][r]) for r, _, _ in rows if str(oof["image_id"][r]) not in where]
    if missing:
        raise DataError(f"{data} has no image {missing[0]} ({len(missing)} of the {len(rows)} to show are missing); "
                        "expected --data to be the dataset the run's features were extracted from")
    temperature = (record.get("calibration") or {}).get("temperature")
    proba = calibrated(np.nan_to_num(oof["proba"][[r for r, _, _ in rows]]), temperature)
    backbone = method_backbone(model, method, module)
    cells = []
    for (row, true, decided), p in zip(bar(rows, progress, unit="img", desc=f"errors ({method})"), proba):
        image_id = str(oof["image_id"][row])
        image = model.load_image(where[image_id])
        saliency, peak = saliency_map(model, image, decided, method, grid, backbone)
        cells.append(Cell(image_id, image, saliency, peak, true, decided, float(p[decided]), border_share(saliency)))
    sheet = Sheet(cells, method, f"the most confident errors of run {run_id}, out of fold", per_class=True)
    sheet.figure = plot_sheet(sheet)
    sheet.out = _save(sheet.figure, out or errors_sheet_path(record))
    return sheet


def _check_method(method):
    if method not in METHODS:
        raise UsageError(f"--method {method!r} is unknown; expected one of {', '.join(METHODS)}")


def method_backbone(model, method, module=None):
    """The SavedModel function ``method`` needs (None for occlusion), loaded once;
    UsageError for a method the model's head cannot take."""
    name = model.manifest.get("head")
    if method == "gradient" and name not in DIFFERENTIABLE:
        raise UsageError(f"--method gradient needs a differentiable head ({', '.join(DIFFERENTIABLE)}); "
                         f"this model's head is {name}: use --method occlusion")
    return None if method == "occlusion" else savedmodel_backbone(model, module)


def saliency_map(model, image, target, method, grid=DEFAULT_GRID, backbone=None):
    """(map [H, W] in [0, 1], the raw value its 1 stands for) of ``image`` by ``method``,
    zero on letterbox bands (``content_mask``: they are not image, but a map can be
    hottest there); ``backbone``: the SavedModel function of gradient and gradcam."""
    if method == "occlusion":
        saliency, peak = occlusion_map(model, image, target, grid)
    elif method == "gradient":
        saliency, peak = gradient_map(model, image, target, backbone)
    else:
        saliency, peak = gradcam_map(model, image, target, backbone)
    mask = content_mask(image)
    if mask.all():
        return saliency, peak
    inside = saliency * mask
    top = inside.max()
    return (inside / top if top > 0 else inside), peak * top


def content_mask(image):
    """[H, W] True on the image, False on the letterbox bands of the ``pad`` policy:
    whole rows or columns of exact zeros reaching the edge."""
    blank = ~image.any(axis=-1)
    rows, cols = blank.all(axis=1), blank.all(axis=0)
    mask = np.ones(blank.shape, bool)
    for line, axis in ((rows, 0), (cols, 1)):
        start = int(np.argmin(line)) if not line.all() else len(line)
        stop = len(line) - int(np.argmin(line[::-1])) if not line.all() else 0
        if axis == 0:
            mask[:start], mask[stop:] = False, False
        else:
            mask[:, :start], mask[:, stop:] = False, False
    return mask


def _class(code):
    index = class_index(code)
    if index is None:
        raise UsageError(f"--target {code!r} is not a class; expected one of {', '.join(CLASSES)}")
    return index


def _normalise(saliency, percentile=100):
    """(clipped to [0, the ``percentile``-th value] and scaled to [0, 1], that value)."""
    saliency = np.clip(saliency, 0, None)
    top = float(np.percentile(saliency, percentile))
    return (np.minimum(saliency / top, 1) if top > 0 else saliency), top


# ----------------------------------------------------------------------------- occlusion

def occlusion_windows(size, grid):
    """(top, left, height, width) of the ``grid`` x ``grid`` occluding squares: each
    about 2/grid of the image side, evenly spaced from edge to edge (they overlap)."""
    h, w = size
    wh, ww = min(h, max(2, 2 * h // grid)), min(w, max(2, 2 * w // grid))
    tops = np.linspace(0, h - wh, grid).round().astype(int)
    lefts = np.linspace(0, w - ww, grid).round().astype(int)
    return [(int(t), int(left), wh, ww) for t in tops for left in lefts]


def occlusion_map(model, image, target, grid=DEFAULT_GRID, batch_size=32):
    """Mean drop of P(target) over the grey windows covering each pixel: (map [H, W] in
    [0, 1], the drop its 1 stands for)."""
    base = model.predict_proba(image[None])[0, target]
    windows = occlusion_windows(image.shape[:2], grid)
    drop = np.zeros(image.shape[:2])
    cover = np.zeros(image.shape[:2])
    for start in range(0, len(windows), batch_size):
        part = windows[start:start + batch_size]
        batch = np.repeat(image[None], len(part), axis=0)
        for k, (top, left, h, w) in enumerate(part):
            batch[k, top:top + h, left:left + w] = GREY
        probs = model.predict_proba(batch)[:, target]
        for (top, left, h, w), p in zip(part, probs):
            drop[top:top + h, left:left + w] += base - p
            cover[top:top + h, left:left + w] += 1
    return _normalise(_blur(np.clip(drop / np.maximum(cover, 1), 0, None), radius=max(1, image.shape[0] // grid // 2)))


# ----------------------------------------------------------------------------- gradient

def head_gradient(head, features, target, step=1e-4, columns=None, steps=None):
    """d log P(target) / d features [n, columns] (default all D) by central differences
    of ``head`` (features -> probabilities, evaluated in float64), every coordinate of
    a row in one batch; the step is relative to each feature (power-normalising heads
    curve steeply near 0), or ``steps`` [columns] as given."""
    n, d = features.shape
    m = d if columns is None else columns
    h = np.broadcast_to(step * np.maximum(np.abs(features[:, :m]), 1e-2) if steps is None else steps, (n, m))
    grads = np.zeros((n, m))
    for row in range(n):
        plus = np.repeat(features[row:row + 1].astype(np.float64), m, axis=0)
        minus = plus.copy()
        plus[np.arange(m), np.arange(m)] += h[row]
        minus[np.arange(m), np.arange(m)] -= h[row]
        logp = np.log(np.clip(head(np.concatenate([plus, minus]))[:, target], 1e-30, None))
        grads[row] = (logp[:m] - logp[m:]) / (2 * h[row])
    return grads


def input_gradient(backbone, head, images, target):
    """d log P(target) / d pixels [n, H, W, 3] of ``images`` [n, H, W, 3]: TensorFlow's
    vector-Jacobian product of the ``backbone`` function with the head's gradient."""

    tf = tensorflow()
    x = tf.constant(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        features = backbone(x)
    with one_blas_thread():
        g = head_gradient(head, features.numpy(), target).astype(np.float32)
    return tape.gradient(features, x, output_gradients=tf.constant(g)).numpy()


def gradient_map(model, image, target, backbone, samples=SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE, seed=0):
    """SmoothGrad saliency: mean |d log P(target) / d pixel| (max over colour channels)
    over ``samples`` noisy copies, lightly blurred: (map [H, W] in [0, 1], its top 1 % at
    1; the gradient that 1 stands for)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(image.shape[:2])
    for _ in range(samples):
        noisy = np.clip(image + rng.normal(0, noise, image.shape), 0, 1)
        total += np.abs(input_gradient(backbone, model.head, noisy[None], target)[0]).max(axis=-1)
    return _normalise(_blur(total / samples), percentile=99)  # a few extreme pixels would hide the rest


# ----------------------------------------------------------------------------- Grad-CAM

def grad_cam(head, fmap, features, target, differentiable=True):
    """Grad-CAM [h, w] before its ReLU: ``sum_k g_k fmap[:, :, k] / (h w)``, with g the
    head's d log P(target) / d features[:C] (``fmap`` [h, w, C], whose spatial mean is
    ``features`` [1, D]'s first C). A non-differentiable head's g is the central
    difference over one spatial standard deviation of each channel."""
    h, w, c = fmap.shape
    steps = None if differentiable else np.maximum(fmap.std(axis=(0, 1)), 1e-3)
    g = head_gradient(head, features, target, columns=c, steps=steps)[0]
    return np.tensordot(fmap.astype(np.float64), g, axes=([2], [0])) / (h * w)


def gradcam_map(model, image, target, backbone):
    """Grad-CAM [H, W] in [0, 1] of ``image`` for class ``target``, upsampled (bilinear,
    then a light Gaussian) from the backbone's last convolutional map; and the peak
    of the map itself, in log P per map cell."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    from skinfeat.backbones.layers import MAP_SIGNATURE

    tf = tensorflow()
    signature = (getattr(backbone.saved_model, "signatures", None) or {}).get(MAP_SIGNATURE)
    name = model.manifest["backbone"].get("module")
    if signature is None:
        raise ModuleError(f"backbone {name} has no {MAP_SIGNATURE!r} signature (its last convolutional map), "
                          "which --method gradcam needs: the built-in backbones and modules fine-tuned from "
                          "them have one; use --method occlusion")
    out = signature(images=tf.constant(image[None], tf.float32))
    fmap, features = out["feature_map"].numpy()[0], out["feature_vector"].numpy()
    c = fmap.shape[-1]
    if fmap.ndim != 3 or features.shape[1] < c or not np.allclose(
            fmap.mean(axis=(0, 1)), features[0, :c], rtol=1e-3, atol=1e-4):
        raise ModuleError(f"backbone {name}: the spatial mean of its {MAP_SIGNATURE} is not the start of its "
                          "feature vector, so Grad-CAM cannot be computed from it; use --method occlusion")
    with one_blas_thread():
        cam = np.maximum(grad_cam(model.head, fmap, features, target,
                                  model.manifest.get("head") in DIFFERENTIABLE), 0)
    height, width = image.shape[:2]
    up = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))
    # bilinear alone draws each hot cell as a cross (a product of two triangles): smooth it over a third of a cell
    up = gaussian_filter(np.maximum(up, 0).astype(np.float64), sigma=max(height / cam.shape[0], 1) / 3)
    return _normalise(up)[0], float(cam.max())


def savedmodel_backbone(model, module=None):
    """The backbone's SavedModel function: ``module`` (the user's ``--module``) or the
    recorded one if the catalog has it (``skinfeat.model.format.backbone_spec``: a model
    folder never picks a graph to run), refused if its fingerprint changed since fitting."""

    module = backbone_spec(model.directory, model.manifest, module)
    mod = resolve_module(module)
    check_fingerprint(model.directory, model.manifest, mod.fingerprint, f"backbone {module}",
                      "use --method occlusion (it runs the model's own backbone.tflite), or re-extract "
                      "features and re-fit")
    return mod.load()


def _blur(saliency, radius=2):
    from PIL import Image, ImageFilter

    top = saliency.max() or 1.0
    img = Image.fromarray((saliency / top * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(img, np.float64) / 255 * top
