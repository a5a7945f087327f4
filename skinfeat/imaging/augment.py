"""TensorFlow image operations of the extraction pipeline (``skinfeat.features.extract``):
resizing by policy, and the augmentation presets that make a file's views.

- ``resize_tf(image, size, policy)``: squash, crop (centre) or pad (letterbox).
- ``augment_image(image, seed, preset)``: one view, the same for the same seed.
  ``mild``: any rotation and flip, 0.9-1.1x zoom, light colour jitter (skinfeat's
  first preset). ``robust``: what images from other clinics and devices vary in
  (``ROBUST``): random square crops zoomed 1-3.5x, letterbox and dermatoscope-circle
  framings, any rotation, flips, colour, blur and resolution jitter.
- ``frame_view(image, seed, size)``: fine-tuning's training view (preset ``frames``),
  at exactly ``size``: framed as the crop policy frames a whole image or a square
  crop of it, zoomed 1-1.6x, rotated, flipped and colour-jittered.

``skinfeat.imaging.images`` reproduces ``resize_tf`` in numpy for prediction.
"""

import numpy as np

from skinfeat.core.tf_runtime import tensorflow


def _antialiased(resize_fn, image, size):
    """``resize_fn(image, antialias)`` with an antialiasing filter only where some
    side shrinks: enlarging with it gives the same pixels as plain bilinear (a
    triangle filter of width one either way) at 3-5x the cost."""
    tf = tensorflow()

    shrinks = tf.reduce_any(tf.shape(image)[:2] > tf.constant(size, tf.int32))
    return tf.cond(shrinks, lambda: resize_fn(image, True), lambda: resize_fn(image, False))


def resize_tf(image, size, policy):
    tf = tensorflow()

    if policy == "squash":
        return _antialiased(lambda im, aa: tf.image.resize(im, size, antialias=aa), image, size)
    if policy == "pad":
        return _antialiased(lambda im, aa: tf.image.resize_with_pad(im, size[0], size[1], antialias=aa),
                            image, size)
    # crop: scale the shorter side to fit, then take the centre.
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.reduce_max(tf.constant(size, tf.float32) / shape)
    scaled = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = _antialiased(lambda im, aa: tf.image.resize(im, scaled, antialias=aa), image, size)
    return tf.image.resize_with_crop_or_pad(image, size[0], size[1])


def augment_image(image, seed, preset="mild"):
    """One augmented view of ``image`` by ``preset`` (AUGMENTS). ``seed`` is a [2]
    int tensor: same seed, same view."""
    return AUGMENT_FUNCTIONS[preset](image, seed)


def _rotate(image, angle, zoom=1.0, shift=(0.0, 0.0)):
    """Rotation by ``angle`` and zoom about the centre, shifted; edges reflected."""
    tf = tensorflow()

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    fh, fw = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    # Output pixel (x, y) samples the input at A·(x - c) + c - shift (rotation+zoom about the centre).
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    cx, cy = (fw - 1) / 2, (fh - 1) / 2
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy - shift[0],
                          sin, cos, cy - sin * cx - cos * cy - shift[1], 0.0, 0.0])
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.stack([h, w]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")[0]


def _augment_mild(image, seed):
    """Any rotation and flip, mild zoom (0.9-1.1x), shift and colour jitter."""
    tf = tensorflow()

    seeds = tf.random.experimental.stateless_split(seed, 8)
    fh, fw = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    angle = tf.random.stateless_uniform([], seeds[1], -np.pi, np.pi)
    zoom = tf.random.stateless_uniform([], seeds[2], 0.9, 1.1)
    shift = tf.random.stateless_uniform([2], seeds[3], -0.05, 0.05) * tf.stack([fw, fh])
    image = _rotate(image, angle, zoom, shift)
    image = tf.image.stateless_random_brightness(image, 0.08, seeds[4])
    image = tf.image.stateless_random_contrast(image, 0.9, 1.1, seeds[5])
    image = tf.image.stateless_random_saturation(image, 0.9, 1.1, seeds[6])
    image = tf.image.stateless_random_hue(image, 0.02, seeds[7])
    return tf.clip_by_value(image, 0.0, 1.0)


# The robust preset's ranges: what images from other clinics and devices vary in.
ROBUST = {"zoom": (1.0, 3.5), "aspect": (3 / 4, 4 / 3), "p_letterbox": 0.1, "p_vignette": 0.15,
          "vignette_radius": (0.8, 1.3), "brightness": (0.7, 1.35), "contrast": (0.7, 1.35),
          "saturation": (0.8, 1.25), "hue": 0.02, "temperature": (0.85, 1.18), "p_blur": 0.25,
          "blur_sigma": (0.3, 2.0), "p_downscale": 0.15, "downscale": (0.3, 0.7)}


def _log_uniform(seed, bounds):
    tf = tensorflow()

    low, high = np.log(bounds[0]), np.log(bounds[1])
    return tf.exp(tf.random.stateless_uniform([], seed, low, high))


def _gaussian_blur(image, sigma):
    tf = tensorflow()

    radius = 6
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / sigma))
    k = k / tf.reduce_sum(k)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    kh = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
    kw = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
    out = tf.nn.depthwise_conv2d(padded, kh, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, kw, [1, 1, 1, 1], "VALID")[0]


def _jitter_colour(view, r, seeds):
    """Brightness, contrast, saturation, hue and colour temperature by the ranges in
    ``r`` (a preset's dict), one of the five ``seeds`` each; clipped to [0, 1]."""
    tf = tensorflow()

    view = view * _log_uniform(seeds[0], r["brightness"])
    mean = tf.reduce_mean(view)
    view = (view - mean) * _log_uniform(seeds[1], r["contrast"]) + mean
    view = tf.image.adjust_saturation(tf.clip_by_value(view, 0.0, 1.0), _log_uniform(seeds[2], r["saturation"]))
    view = tf.image.stateless_random_hue(view, r["hue"], seeds[3])
    t = _log_uniform(seeds[4], r["temperature"])
    return tf.clip_by_value(view * tf.stack([t, 1.0, 1.0 / t]), 0.0, 1.0)


def _augment_robust(image, seed):
    """A view framed, zoomed and coloured as other devices might: a random square
    crop zoomed 1-3.5x (log-uniform) with jittered centre and aspect, sometimes
    the whole image letterboxed or a dermatoscope's dark circle around it; any
    rotation (edges reflected) and flips; brightness, contrast, saturation, hue
    and colour-temperature jitter; sometimes blur or a downscale. Returns a
    square image of the input's shorter side."""
    tf = tensorflow()

    r = ROBUST
    seeds = tf.random.experimental.stateless_split(seed, 20)
    u = tf.random.stateless_uniform([8], seeds[0])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    fh, fw = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    side = tf.minimum(fh, fw)
    out = tf.cast(side, tf.int32)
    # Rotate first (reflected edges), so the crop below never shows a corner.
    image = _rotate(image, tf.random.stateless_uniform([], seeds[1], -np.pi, np.pi))
    zoom = _log_uniform(seeds[2], r["zoom"])
    aspect = tf.sqrt(_log_uniform(seeds[3], r["aspect"]))
    ch = tf.minimum(side / zoom * aspect, fh)
    cw = tf.minimum(side / zoom / aspect, fw)
    top, left = u[0] * (fh - ch), u[1] * (fw - cw)
    box = tf.stack([top / fh, left / fw, (top + ch) / fh, (left + cw) / fw])[None]
    crop = tf.image.crop_and_resize(image[None], box, [0], tf.stack([out, out]))[0]

    def letterbox():
        return tf.image.resize_with_pad(image, out, out, antialias=True)

    view = tf.cond(u[2] < r["p_letterbox"], letterbox, lambda: crop)
    view = tf.image.stateless_random_flip_left_right(view, seeds[4])
    view = tf.image.stateless_random_flip_up_down(view, seeds[5])

    def vignette():
        radius = tf.random.stateless_uniform([], seeds[6], *r["vignette_radius"]) * side / 2
        coords = tf.range(out, dtype=tf.float32) - (side - 1) / 2
        distance = tf.sqrt(tf.square(coords)[:, None] + tf.square(coords)[None, :])
        mask = tf.clip_by_value((radius - distance) / tf.maximum(1.0, 0.03 * side), 0.0, 1.0)
        return view * mask[..., None]

    view = tf.cond(u[3] < r["p_vignette"], vignette, lambda: view)
    view = _jitter_colour(view, r, seeds[7:12])
    sigma = tf.random.stateless_uniform([], seeds[12], *r["blur_sigma"])
    view = tf.cond(u[4] < r["p_blur"], lambda: _gaussian_blur(view, sigma), lambda: view)

    def downscale():
        small = tf.cast(tf.math.maximum(8.0, side * tf.random.stateless_uniform([], seeds[13], *r["downscale"])),
                        tf.int32)
        return tf.image.resize(tf.image.resize(view, tf.stack([small, small]), antialias=True),
                               tf.stack([out, out]))

    view = tf.cond(u[5] < r["p_downscale"], downscale, lambda: view)
    return tf.clip_by_value(view, 0.0, 1.0)


# The framing preset's ranges (``frame_view``: fine-tuning's training views).
FRAMES = {"zoom": (1.0, 1.6), "aspect": (0.9, 1.1), "p_vignette": 0.15,
          "vignette_radius": (0.8, 1.3), "brightness": (0.8, 1.25), "contrast": (0.8, 1.25),
          "saturation": (0.85, 1.18), "hue": 0.02, "temperature": (0.9, 1.11), "p_blur": 0.1,
          "blur_sigma": (0.3, 1.5), "p_downscale": 0.1, "downscale": (0.4, 0.8)}


def frame_view(image, seed, size):
    """A training view of ``image`` at exactly ``size`` (H, W), framed as the network
    will be shown images: a box of the size's aspect, as the crop policy frames a
    whole image (zoom 1) or a square crop of one (zoom 4/3 at 150x200), and a little
    closer (``FRAMES``: zoom 1-1.6, log-uniform, centre anywhere); any rotation (edges
    reflected), flips, colour jitter, sometimes blur or a downscale, sometimes a
    dermatoscope's dark circle around the view (as the ``vignette`` shift draws it).
    No letterbox: the crop policy cuts a landscape image's bars off again (the ``pad``
    shift scores as clean). ``seed``: a [2] int tensor, same seed same view."""
    tf = tensorflow()

    r = FRAMES
    seeds = tf.random.experimental.stateless_split(seed, 14)
    u = tf.random.stateless_uniform([5], seeds[0])
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.reduce_max(tf.constant(size, tf.float32) / shape)  # as the crop policy scales it
    image = _antialiased(lambda im, aa: tf.image.resize(im, tf.cast(tf.math.ceil(shape * scale), tf.int32),
                                                        antialias=aa), image, size)
    image = _rotate(image, tf.random.stateless_uniform([], seeds[1], -np.pi, np.pi))
    fh, fw = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    target = size[1] / size[0]  # width / height of the box
    bh = tf.minimum(fh, fw / target)
    zoom = _log_uniform(seeds[2], r["zoom"])
    aspect = tf.sqrt(_log_uniform(seeds[3], r["aspect"]))
    ch = tf.minimum(bh / zoom * aspect, fh)
    cw = tf.minimum(bh * target / zoom / aspect, fw)
    top, left = u[0] * (fh - ch), u[1] * (fw - cw)
    box = tf.stack([top / fh, left / fw, (top + ch) / fh, (left + cw) / fw])[None]
    view = tf.image.crop_and_resize(image[None], box, [0], list(size))[0]
    view = tf.image.stateless_random_flip_left_right(view, seeds[4])
    view = tf.image.stateless_random_flip_up_down(view, seeds[5])

    def vignette():  # the ``vignette`` shift's circle, radius 0.8-1.3 of the shorter side's half
        short = float(min(size))
        radius = tf.random.stateless_uniform([], seeds[13], *r["vignette_radius"]) * short / 2
        yy = tf.range(size[0], dtype=tf.float32) - (size[0] - 1) / 2
        xx = tf.range(size[1], dtype=tf.float32) - (size[1] - 1) / 2
        distance = tf.sqrt(tf.square(yy)[:, None] + tf.square(xx)[None, :])
        mask = tf.clip_by_value((radius - distance) / max(1.0, 0.03 * short), 0.0, 1.0)
        return view * mask[..., None]

    view = tf.cond(u[4] < r["p_vignette"], vignette, lambda: view)
    view = _jitter_colour(view, r, seeds[6:11])
    sigma = tf.random.stateless_uniform([], seeds[11], *r["blur_sigma"])
    view = tf.cond(u[2] < r["p_blur"], lambda: _gaussian_blur(view, sigma), lambda: view)
    factor = tf.random.stateless_uniform([], seeds[12], *r["downscale"])
    small = tf.cast(tf.maximum(8.0, tf.constant(size, tf.float32) * factor), tf.int32)
    view = tf.cond(u[3] < r["p_downscale"], lambda: tf.image.resize(
        tf.image.resize(view, small, antialias=True), list(size)), lambda: view)
    return tf.clip_by_value(view, 0.0, 1.0)


AUGMENT_FUNCTIONS = {"mild": _augment_mild, "robust": _augment_robust}
AUGMENTS = tuple(AUGMENT_FUNCTIONS)
DEFAULT_AUGMENT = "robust"
