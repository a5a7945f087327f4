"""The training itself: the first epoch keeps what the linear probe knew (easy
synthetic classes, the tiny trainable module), and the "frames" training views.
(The training and evaluate pipelines' agreement: test_finetune.py.)"""

import colorsys

import numpy as np
import pytest
from fakes import make_trainable_module
from PIL import Image

from skinfeat.core.classes import CLASSES

SIZE = (48, 64)


def easy_folder(root, per_class=30):
    """Class folders of noisy flat-coloured images, one hue per class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        rgb = np.array(colorsys.hsv_to_rgb(c / len(CLASSES), 0.8, 0.8))
        for i in range(per_class):
            image = np.clip(rgb + rng.normal(0, 0.06, (60, 80, 3)), 0, 1)
            Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    from skinfeat.data.layouts import load_dataset
    from skinfeat.data.split import make_folds, write_folds

    root = tmp_path_factory.mktemp("easy")
    manifest = load_dataset(data=easy_folder(root / "data"))
    write_folds(root / "folds.csv", manifest, make_folds(manifest, k=3, seed=0))
    return {"root": root, "manifest": manifest, "folds": root / "folds.csv",
            "module": make_trainable_module(root / "tiny")}


def first_epoch(easy, monkeypatch, tmp_path, **options):
    from skinfeat.finetune import finetune

    monkeypatch.setenv("SKINFEAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKINFEAT_RUNS", str(tmp_path / "runs"))
    result = finetune(easy["manifest"], easy["module"], easy["folds"], 0, dataset_name="easy", epochs=1,
                      size=SIZE, batch=8, progress=False, **options)
    probe, history = result.state["probe"], result.state["history"]
    n_val = history[0]["n_val"]
    return probe["val_bmca"], history[0]["val_bmca"], n_val


def test_the_first_epoch_keeps_what_the_probe_knew(easy, monkeypatch, tmp_path):
    probe, epoch1, n_val = first_epoch(easy, monkeypatch, tmp_path)
    assert probe > 0.8, probe  # the probe on the module's features separates the hues
    noise = 1.5 / (n_val / len(CLASSES))  # one validation image of a class, and a half
    assert epoch1 >= probe - noise, (probe, epoch1, n_val)


def test_the_check_sees_a_collapse(easy, monkeypatch, tmp_path):
    """The same measurement catches a start that destroys the probe (a learning rate
    far too high): the test above can fail."""
    probe, epoch1, n_val = first_epoch(easy, monkeypatch, tmp_path, lr=3.0)
    assert epoch1 < probe - 1.5 / (n_val / len(CLASSES)), (probe, epoch1)


def test_frame_views_have_the_training_size_aspect_and_are_seeded():
    import tensorflow as tf

    from skinfeat.imaging.augment import frame_view

    image = tf.constant(np.random.default_rng(0).random((150, 200, 3)), tf.float32)
    views = [frame_view(image, tf.constant([s, 1], tf.int64), (150, 200)).numpy() for s in range(6)]
    assert all(v.shape == (150, 200, 3) and 0 <= v.min() and v.max() <= 1 for v in views)
    np.testing.assert_array_equal(views[0], frame_view(image, tf.constant([0, 1], tf.int64), (150, 200)).numpy())
    assert min(np.abs(views[0] - v).mean() for v in views[1:]) > 0.01
    big = tf.constant(np.random.default_rng(1).random((450, 600, 3)), tf.float32)  # larger than the size
    square = tf.constant(np.random.default_rng(2).random((224, 224, 3)), tf.float32)  # a square crop
    for source in (big, square):
        assert frame_view(source, tf.constant([3, 4], tf.int64), (150, 200)).shape == (150, 200, 3)


def test_some_frame_views_show_the_dermatoscope_circle_the_vignette_shift_draws():
    """The worst shift of the first full fold run was ``vignette`` (0.437 against 0.654
    clean): the training views must show that circle now and then, and as the shift
    draws it (black corners, centre untouched), but not most of the time."""
    import tensorflow as tf

    from skinfeat.imaging.augment import FRAMES, frame_view
    from skinfeat.imaging.shifts import parse_shift

    image = tf.fill((150, 200, 3), 0.6)  # no black anywhere, whatever the rotation, zoom or colour
    views = [frame_view(image, tf.constant([s, 7], tf.int64), (150, 200)).numpy() for s in range(80)]
    circled = [v for v in views if v[:8, :8].max() < 0.05 and v[-8:, -8:].max() < 0.05]
    share = len(circled) / len(views)
    assert 0.05 <= share <= 0.3, share  # p_vignette 0.15
    assert FRAMES["p_vignette"] == 0.15
    assert all(v[60:90, 85:115].min() > 0.1 for v in circled)
    shifted = parse_shift("vignette")(np.full((150, 200, 3), 0.6, np.float32))
    assert shifted[:8, :8].max() < 0.05 and shifted[60:90, 85:115].min() > 0.5  # the same picture
