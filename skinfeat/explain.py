"""Where did the model look? Saliency maps of one image for a fitted model.

    from skinfeat.explain import explain
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

Both explain the model input (the image resized as extraction resizes it). The
figure shows the image, the map over it, and the top classes with their
probabilities.
"""

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinfeat.classes import CLASSES, FULL_NAMES, class_index
from skinfeat.errors import UsageError

METHODS = ("occlusion", "gradient")
DEFAULT_GRID = 16
GREY = 0.5
SMOOTHGRAD_SAMPLES = 12
SMOOTHGRAD_NOISE = 0.1  # standard deviation, in [0, 1] pixel units
DIFFERENTIABLE = ("logreg", "softmax")


@dataclass
class Explanation:
    image_id: str
    image: np.ndarray  # [H, W, 3] the model input
    saliency: np.ndarray  # [H, W] in [0, 1] (all 0 when nothing matters)
    proba: np.ndarray  # [7] CLASSES order, as ``skinfeat predict`` shows them (adjusted)
    target: int  # the explained class (index into CLASSES)
    method: str
    figure: object = None
    out: Path | None = None


def explain(model_dir, image_path, method="occlusion", target=None, grid=DEFAULT_GRID, out=None, module=None):
    """Saliency of ``image_path`` for model ``model_dir``: for class ``target`` (a code
    such as ``MEL``; default the model's decision). The maps follow the class's
    probability as trained. Draws the figure and, with ``out``, writes it as PNG.
    ``module``: the gradient method's backbone SavedModel, as the user names it
    (default: the recorded one, if the catalog has it)."""
    from skinfeat.model.predictor import load_predictor

    if method not in METHODS:
        raise UsageError(f"--method {method!r} is unknown; expected one of {', '.join(METHODS)}")
    model = load_predictor(model_dir)
    image = model.load_image(image_path)
    proba = model.head.adjust(model.predict_proba(image[None]))[0]
    index = int(np.argmax(proba)) if target is None else _class(target)
    if method == "occlusion":
        saliency = occlusion_map(model, image, index, grid)
    else:
        saliency = gradient_map(model, image, index, module=module)
    result = Explanation(Path(image_path).stem, image, saliency, proba, index, method)
    result.figure = plot_explanation(result)
    if out is not None:
        from skinfeat.outputs import writing
        from skinfeat.viz import save_figure

        with writing(out, "the picture"):
            result.out = save_figure(result.figure, out)
    return result


def _class(code):
    index = class_index(code)
    if index is None:
        raise UsageError(f"--target {code!r} is not a class; expected one of {', '.join(CLASSES)}")
    return index


def _normalise(saliency, percentile=100):
    """Clipped to [0, the ``percentile``-th value], scaled to [0, 1]."""
    saliency = np.clip(saliency, 0, None)
    top = np.percentile(saliency, percentile)
    return np.minimum(saliency / top, 1) if top > 0 else saliency


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
    """Mean drop of P(target) over the grey windows covering each pixel, [H, W] in [0, 1]."""
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

def head_gradient(head, features, target, step=1e-4):
    """d log P(target) / d features [n, D] by central differences of ``head``
    (features -> probabilities, evaluated in float64), every coordinate of a row in
    one batch; the step is relative to each feature (power-normalising heads
    curve steeply near 0)."""
    n, d = features.shape
    h = step * np.maximum(np.abs(features), 1e-2)
    grads = np.zeros((n, d))
    for row in range(n):
        plus = np.repeat(features[row:row + 1].astype(np.float64), d, axis=0)
        minus = plus.copy()
        plus[np.arange(d), np.arange(d)] += h[row]
        minus[np.arange(d), np.arange(d)] -= h[row]
        logp = np.log(np.clip(head(np.concatenate([plus, minus]))[:, target], 1e-30, None))
        grads[row] = (logp[:d] - logp[d:]) / (2 * h[row])
    return grads


def input_gradient(backbone, head, images, target):
    """d log P(target) / d pixels [n, H, W, 3] of ``images`` [n, H, W, 3]: TensorFlow's
    vector-Jacobian product of the ``backbone`` function with the head's gradient."""
    from skinfeat.model.predictor import one_blas_thread
    from skinfeat.runtime import tensorflow

    tf = tensorflow()
    x = tf.constant(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        features = backbone(x)
    with one_blas_thread():
        g = head_gradient(head, features.numpy(), target).astype(np.float32)
    return tape.gradient(features, x, output_gradients=tf.constant(g)).numpy()


def gradient_map(model, image, target, samples=SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE, seed=0, module=None):
    """SmoothGrad saliency [H, W] in [0, 1]: mean |d log P(target) / d pixel| (max over
    colour channels) over ``samples`` noisy copies, lightly blurred, its top 1 % at 1."""
    name = model.manifest.get("head")
    if name not in DIFFERENTIABLE:
        raise UsageError(f"--method gradient needs a differentiable head ({', '.join(DIFFERENTIABLE)}); "
                         f"this model's head is {name}: use --method occlusion")
    backbone = savedmodel_backbone(model, module)
    rng = np.random.default_rng(seed)
    total = np.zeros(image.shape[:2])
    for _ in range(samples):
        noisy = np.clip(image + rng.normal(0, noise, image.shape), 0, 1)
        total += np.abs(input_gradient(backbone, model.head, noisy[None], target)[0]).max(axis=-1)
    return _normalise(_blur(total / samples), percentile=99)  # a few extreme pixels would hide the rest


def savedmodel_backbone(model, module=None):
    """The backbone's SavedModel function: ``module`` (the user's ``--module``) or the
    recorded one if the catalog has it (``skinfeat.model.format.backbone_spec``: a model
    folder never picks a graph to run), refused if its fingerprint changed since fitting."""
    from skinfeat.backbones import resolve_module
    from skinfeat.model.format import backbone_spec, check_fingerprint

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


# ----------------------------------------------------------------------------- figure

TITLES = {"occlusion": "occlusion sensitivity:\nwhere grey patches lower P({})",
          "gradient": "input gradient (SmoothGrad):\npixels that change P({}) most"}


def _label(index):
    code = CLASSES[index]
    return "\n".join(textwrap.wrap(f"{FULL_NAMES[code]} ({code})", 20))


def plot_explanation(result, top_k=3):
    """Figure: the model input, the saliency over it, the top classes' probabilities."""
    from matplotlib.figure import Figure

    from skinfeat.viz.plots import CLASS_COLORS

    fig = Figure(figsize=(13, 4.6), dpi=100, layout="constrained")
    left, middle, right = fig.subplots(1, 3, width_ratios=(1, 1.15, 0.9))
    h, w = result.image.shape[:2]
    left.imshow(result.image)
    left.set_title(f"{result.image_id}\nmodel input, {w}x{h}", fontsize=11)
    import matplotlib
    from matplotlib.cm import ScalarMappable

    cmap = matplotlib.colormaps["inferno"]
    overlay = cmap(result.saliency)
    overlay[..., 3] = 0.1 + 0.75 * result.saliency  # unimportant parts stay visible
    middle.imshow(result.image)
    middle.imshow(overlay)
    fig.colorbar(ScalarMappable(cmap=cmap), ax=middle, shrink=0.85, label="relative importance")
    code = CLASSES[result.target]
    middle.set_title(TITLES[result.method].format(code), fontsize=11)
    for ax in (left, middle):
        ax.set_xticks([])
        ax.set_yticks([])
    order = np.argsort(-result.proba)[:top_k][::-1]
    bars = right.barh([_label(i) for i in order], result.proba[order],
                      color=[CLASS_COLORS[CLASSES[i]] for i in order])
    right.bar_label(bars, labels=[f"{result.proba[i]:.3f}" for i in order], padding=3)
    right.set_xlim(0, 1.2)
    right.set_xticks([0, 0.25, 0.5, 0.75, 1])
    right.set_xlabel("probability")
    right.set_title(f"top {top_k} classes", fontsize=11)
    best = int(np.argmax(result.proba))
    fig.suptitle(f"predicted: {FULL_NAMES[CLASSES[best]]} ({CLASSES[best]}) {result.proba[best]:.3f}"
                 + (f"; explained: {FULL_NAMES[code]} ({code})" if result.target != best else ""),
                 fontsize=14)
    return fig
