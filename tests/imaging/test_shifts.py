"""The distribution shifts of ``skinfeat evaluate --shift``: deterministic, each
doing what it says, on a real HAM10000 image; and their parsing."""

import numpy as np
import pytest

from skinfeat.core.errors import UsageError
from skinfeat.imaging.images import decode
from skinfeat.imaging.shifts import KINDS, STANDARD, parse_shift, parse_shifts


@pytest.fixture(scope="module")
def image(ham10000):
    return decode(next(p for p in sorted(ham10000.rglob("*.jpg"))))


@pytest.mark.parametrize("spec", STANDARD)
def test_standard_shift_is_deterministic_and_changes_the_image(image, spec):
    shift = parse_shift(spec)
    a, b = shift(image), shift(image.copy())
    assert a.dtype == np.float32 and a.ndim == 3 and a.shape[2] == 3
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    if a.shape == image.shape:
        assert np.abs(a - image).mean() > 1e-3


def test_standard_set_covers_every_kind_of_shift_the_issue_names():
    kinds = {parse_shift(s).kind for s in STANDARD}
    assert kinds == set(KINDS)
    zooms = sorted(parse_shift(s).level for s in STANDARD if s.startswith("zoom"))
    assert zooms == [1.5, 2, 3]


def test_framing_shifts(image):
    h, w = image.shape[:2]
    crop = parse_shift("crop")(image)
    assert crop.shape == (min(h, w), min(h, w), 3)
    left = (w - min(h, w)) // 2
    np.testing.assert_array_equal(crop, image[:, left:left + h] if w > h else image[left:left + w])
    pad = parse_shift("pad")(image)
    assert pad.shape == (max(h, w), max(h, w), 3)
    bar = (max(h, w) - min(h, w)) // 2
    assert not pad[:bar].any() and not pad[-bar:].any()  # black bars, as pad resizing makes them
    vignette = parse_shift("vignette")(image)
    assert not vignette[0, 0].any() and not vignette[-1, -1].any()  # the corners are dark
    np.testing.assert_array_equal(vignette[h // 2, w // 2], image[h // 2, w // 2])


def test_zoom_magnifies_the_centre(image):
    h, w = image.shape[:2]
    zoomed = parse_shift("zoom:2")(image)
    assert zoomed.shape == image.shape
    # The zoomed image's quarter point shows what was halfway to the centre.
    np.testing.assert_allclose(zoomed[h // 4:3 * h // 4:8, w // 4:3 * w // 4:8].mean(),
                               image[3 * h // 8:5 * h // 8, 3 * w // 8:5 * w // 8].mean(), atol=0.02)


def test_photometric_shifts(image):
    assert parse_shift("brightness:0.7")(image).mean() < image.mean()
    assert parse_shift("contrast:0.7")(image).std() < image.std()
    warm = parse_shift("temperature:1.15")(image)
    assert warm[..., 0].mean() > image[..., 0].mean() and warm[..., 2].mean() < image[..., 2].mean()
    blurred = parse_shift("blur:1.5")(image)
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(image, axis=1)).mean()
    rotated = parse_shift("rotate:90")(image[:100, :100])
    np.testing.assert_allclose(rotated, np.rot90(image[:100, :100]), atol=1e-5)


def test_parse_names_and_levels():
    assert parse_shift("zoom:2").name == "zoom:2"
    assert parse_shift(" Zoom:2.0 ").name == "zoom:2"
    assert parse_shift("vignette").name == "vignette:1"
    assert [s.name for s in parse_shifts(["crop", "standard", "crop"])][:2] == ["crop", "pad"]
    assert len(parse_shifts(["standard"])) == len(STANDARD)


@pytest.mark.parametrize("spec, message", [
    ("squint", "unknown shift 'squint'; expected one of crop, pad"),
    ("zoom", "shift 'zoom' needs a level"),
    ("zoom:0.5", "out of range; expected a factor above 1"),
    ("zoom:two", "level 'two' is not a number"),
    ("crop:2", "shift 'crop' takes no level"),
    ("jpeg:30.5", "out of range; expected a quality from 1 to 100"),
    ("blur:nan", "out of range"),
])
def test_bad_shift_names_say_what_is_accepted(spec, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse_shift(spec)
