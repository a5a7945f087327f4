"""Lesion-centred cropping and hair removal: a preprocessing option of
``skinfeat extract --lesion`` that a model records and applies to every image
it is given (``skinfeat.model.predictor``), after any shift and before the resize.

No segmentation masks ship with HAM10000, so the lesion is found without labels,
on a copy of the image shrunk to :data:`MASK_SIDE` pixels:

1. the dermatoscope's dark vignette and black letterbox bars (very dark regions
   touching the image border) are set aside, with a band around them;
2. the lesion is darker than the skin, in green and blue above all (brown,
   black and red lesions alike): an Otsu threshold on the mean of the green and
   blue channels over the rest, then a morphological opening and closing;
3. of the connected regions, those too small, too large or lying along the
   border are dropped; the largest near the centre is the lesion, if it is
   darker than the skin around it by :data:`MIN_CONTRAST` or more.

The crop is a square box around it, :data:`MARGIN` of its size wider on each
side (published work found that a dilated box helped and that removing the
background hurt), kept inside the image, at full resolution. When nothing
convincing is found it is the whole image.

Hair removal (``crop+hair``) is DullRazor's: thin dark lines found by a
morphological black-hat of the grey image (smoothed: camera noise is no hair), long ones kept, painted over by
OpenCV's inpainting (Telea); it runs on the whole image, before the lesion is
looked for (hair would be taken for it).

Images are float32 ``[H, W, 3]`` in [0, 1], as ``skinfeat.imaging.images.decode`` gives.
"""

import numpy as np

from skinfeat.imaging.images import MIN_SIDE

LESION_OPTIONS = ("none", "crop", "crop+hair")
DEFAULT_LESION = "none"
TAGS = {"none": "", "crop": "-lesion", "crop+hair": "-lesion-hair"}  # in feature file names

MASK_SIDE = 160  # the lesion is looked for on the image shrunk to this longest side
MARGIN = 0.15  # of the lesion box's longest side, added on every side
MIN_CROP = 0.25  # of the image's shorter side: the crop's least side (a speck keeps its surroundings)
DARK = 0.15  # grey level under which a region touching the border is the vignette or a bar
MIN_AREA, MAX_AREA = 0.005, 0.8  # of the image, for a region to be the lesion
MAX_CONTACT = 0.2  # of a region's box perimeter that may lie along the border
MIN_CONTRAST = 0.06  # lesion vs surrounding skin, mean of green and blue
HAIR_LEVEL = 10 / 255  # black-hat depth of a hair
HAIR_KERNEL = 1 / 35  # black-hat element side, of the image's longest side
HAIR_LENGTH = 1.5  # a hair is at least this many element sides long


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # images are prepared one per thread beside the network
    return cv2


def preprocess(image, lesion):
    """``image`` prepared by ``lesion`` (one of :data:`LESION_OPTIONS`)."""
    if lesion == "none":
        return image
    if lesion == "crop+hair":
        image = remove_hair(image)
    top, left, bottom, right = crop_box(image)
    return image[top:bottom, left:right]


def _odd(n):
    return max(3, int(n) | 1)


def remove_hair(image):
    """``image`` with thin dark hairs painted over (DullRazor); other pixels unchanged."""
    mask = hair_mask(image)
    if not mask.any():
        return image
    cv2 = _cv2()
    pixels = np.round(image * 255).astype(np.uint8)
    painted = cv2.inpaint(pixels, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    out = image.copy()
    out[mask] = painted[mask] * np.float32(1 / 255)
    return out


def hair_mask(image):
    """bool [H, W]: the pixels of long thin dark lines (hairs)."""
    cv2 = _cv2()
    side = _odd(max(image.shape[:2]) * HAIR_KERNEL)
    grey = cv2.GaussianBlur(np.round(image.mean(axis=2) * 255).astype(np.uint8), (3, 3), 0)  # not the noise
    depth = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    lines = (depth > HAIR_LEVEL * 255).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    long = np.zeros(n, bool)
    long[1:] = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]) >= HAIR_LENGTH * side
    mask = long[labels].astype(np.uint8)
    return cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(bool)


def crop_box(image):
    """(top, left, bottom, right) of the square crop around the lesion in ``image``,
    :data:`MARGIN` wider than it on every side and inside the image; the whole image
    when no lesion is found."""
    h, w = image.shape[:2]
    box = find_lesion(image)
    if box is None:
        return 0, 0, h, w
    top, left, bottom, right = box
    side = max(max(bottom - top, right - left) * (1 + 2 * MARGIN), MIN_CROP * min(h, w), MIN_SIDE)
    (y0, y1), (x0, x1) = _span((top + bottom) / 2, side, h), _span((left + right) / 2, side, w)
    return y0, x0, y1, x1


def _span(centre, length, limit):
    """[start, stop) of ``length`` around ``centre``, moved (then cut) to fit in [0, limit)."""
    length = min(int(round(length)), limit)
    start = min(max(int(round(centre - length / 2)), 0), limit - length)
    return start, start + length


def find_lesion(image):
    """(top, left, bottom, right) of the lesion in ``image`` (full-resolution pixels,
    bottom and right excluded), or None when no region is convincing."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    scale = MASK_SIDE / max(h, w)
    sh, sw = max(int(round(h * scale)), 8), max(int(round(w * scale)), 8)
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else image
    sh, sw = small.shape[:2]
    grey = small.mean(axis=2)
    darkness = (small[..., 1] + small[..., 2]) / 2
    n, labels, stats, _ = cv2.connectedComponentsWithStats((grey < DARK).astype(np.uint8), connectivity=8)
    bars = np.zeros(n, bool)
    bars[1:] = _touches_border(stats[1:], sh, sw)
    aside = cv2.dilate(bars[labels].astype(np.uint8), np.ones((7, 7), np.uint8))
    field = ~aside.astype(bool)
    border = cv2.dilate(aside, np.ones((3, 3), np.uint8)).astype(bool)  # what touches it...
    border[[0, -1], :] = border[:, [0, -1]] = True  # ... or the image's own edge
    if field.sum() < MIN_AREA * sh * sw * 10:
        return None
    level = _otsu(darkness[field])
    if level is None:  # one flat colour
        return None
    dark = ((darkness < level) & field).astype(np.uint8)
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    dark = cv2.morphologyEx(cv2.morphologyEx(dark, cv2.MORPH_OPEN, ellipse), cv2.MORPH_CLOSE, ellipse)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n < 2:
        return None
    area = stats[1:, cv2.CC_STAT_AREA].astype(float)
    bw, bh = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    contact = np.bincount(labels[border & (labels > 0)], minlength=n)[1:]
    offset = np.hypot((centroids[1:, 0] - sw / 2) / sw, (centroids[1:, 1] - sh / 2) / sh) / np.sqrt(0.5)
    ok = (area >= MIN_AREA * sh * sw) & (bw * bh <= MAX_AREA * sh * sw) & (contact <= MAX_CONTACT * 2 * (bw + bh))
    if not ok.any():
        return None
    best = int(np.argmax(np.where(ok, area * (1 - offset) ** 2, -1)))
    region = labels == best + 1
    around = cv2.dilate(region.astype(np.uint8), ellipse, iterations=3).astype(bool)
    ring = around & field & ~dark.astype(bool)  # the skin just around it
    if not ring.any() or darkness[ring].mean() - darkness[region].mean() < MIN_CONTRAST:
        return None
    x, y = stats[best + 1, cv2.CC_STAT_LEFT], stats[best + 1, cv2.CC_STAT_TOP]
    fy, fx = h / sh, w / sw
    return (int(np.floor(y * fy)), int(np.floor(x * fx)),
            min(h, int(np.ceil((y + bh[best]) * fy))), min(w, int(np.ceil((x + bw[best]) * fx))))


def _touches_border(stats, h, w):
    import cv2

    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    return (left == 0) | (top == 0) | (left + stats[:, cv2.CC_STAT_WIDTH] == w) | \
        (top + stats[:, cv2.CC_STAT_HEIGHT] == h)


def _otsu(values, bins=128):
    """Otsu's threshold of ``values`` in [0, 1]; None when they all fall in one bin."""
    counts, edges = np.histogram(values, bins=bins, range=(0, 1))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    total = weight[-1]
    mass = np.cumsum(counts * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * weight / total - mass) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between[:-1], nan=-1)
    return edges[int(np.argmax(between)) + 1] if between.max() > 0 else None
