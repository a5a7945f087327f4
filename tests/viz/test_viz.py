"""Maps of feature space (real scikit-learn and umap on small synthetic features),
their coordinate cache, the diagnostic figures and the ``viz`` command."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from threadpoolctl import threadpool_limits

from skinfeat.core.classes import CLASSES
from skinfeat.cli import SkinfeatGroup
from skinfeat.commands.viz import METHODS as CLI_METHODS
from skinfeat.commands.viz import viz
from skinfeat.core.errors import UsageError
from skinfeat.features.store import read_features, write_features
from skinfeat.viz.embed import METHODS, embed
from skinfeat.viz.embed import embedding_for, subsample_indices
from skinfeat.core.metrics import expected_calibration_error
from skinfeat.viz.maps import feature_map
from skinfeat.viz.plots import plot_confusion, plot_embedding, plot_reliability, plot_roc_pr, save_figure
from skinfeat.viz.plots import DPI, SIZES

COUNTS = (40, 150, 30, 20, 35, 12, 13)  # 300 images, imbalanced like HAM10000


def synthetic(n_dim=32, seed=0, counts=COUNTS):
    """Seven well-separated Gaussian clusters, one per class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int8)
    centres = rng.normal(scale=6, size=(len(counts), n_dim))
    return (centres[labels] + rng.normal(size=(len(labels), n_dim))).astype(np.float32), labels


def write_synthetic(path, labels=None, metadata=True, seed=0):
    x, y = synthetic(seed=seed)
    y = y if labels is None else labels
    ids = [f"ISIC_{i:07d}" for i in range(len(x))]
    rng = np.random.default_rng(1)
    meta = {"sex": rng.choice(["male", "female", "unknown"], len(x)),
            "localization": rng.choice(["back", "face", "trunk"], len(x)),
            "age": np.where(np.arange(len(x)) % 50 == 0, "", (5 * rng.integers(0, 18, len(x))).astype(str))} \
        if metadata else {}
    write_features(path, x, ids, y, ids, metadata=meta, attrs={"module": "synthetic"})
    return path


def knn_agreement(coords, labels, k=5):
    """Share of points whose k nearest map neighbours mostly carry their class."""
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = labels[np.argsort(d, axis=1)[:, :k]]
    return float(((nearest == labels[:, None]).mean(axis=1) > 0.5).mean())


def png_size(path):
    assert path.stat().st_size > 10_000
    with Image.open(path) as im:
        return im.size


def expected_size(kind):
    return tuple(round(v * DPI) for v in SIZES[kind])


@pytest.fixture(autouse=True)
def _one_thread():
    """t-SNE's OpenMP threads spin against each other on the shared 2-core test machine:
    one thread is 2-3x faster there."""
    with threadpool_limits(1):
        yield


@pytest.fixture()
def features_file(tmp_path):
    return write_synthetic(tmp_path / "syn.h5")


@pytest.fixture()
def run(monkeypatch, tmp_path):
    """``skinfeat viz ...`` through the error handling of the real command group."""
    monkeypatch.chdir(tmp_path)
    group = SkinfeatGroup(name="skinfeat", commands={"viz": viz})
    return lambda *args: CliRunner().invoke(group, ["viz", *args], catch_exceptions=False)


# ----------------------------------------------------------------------------- maps

def test_cli_lists_every_method():
    assert set(CLI_METHODS) == set(METHODS)


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_maps_keep_the_class_structure(method):
    x, y = synthetic()
    coords = embed(x, method, seed=0)
    assert coords.shape == (len(x), 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert knn_agreement(coords, y) > 0.9
    if method != "pca":  # same seed, same map
        np.testing.assert_allclose(embed(x, method, seed=0), coords, atol=1e-4)


def test_subsample_is_stratified_seeded_and_capped():
    labels = np.repeat(np.arange(7), [1000, 6000, 500, 300, 1000, 100, 150])
    rows = subsample_indices(labels, 1000, seed=3)
    assert len(rows) == 1000 and len(set(rows)) == 1000 and (np.diff(rows) > 0).all()
    share = np.bincount(labels[rows], minlength=7) / 1000
    np.testing.assert_allclose(share, np.bincount(labels) / len(labels), atol=0.0011)
    np.testing.assert_array_equal(rows, subsample_indices(labels, 1000, seed=3))
    assert not np.array_equal(rows, subsample_indices(labels, 1000, seed=4))
    np.testing.assert_array_equal(subsample_indices(labels, 10**6), np.arange(len(labels)))


def test_unknown_method_and_parameter_are_refused():
    x, _ = synthetic()
    with pytest.raises(UsageError, match="unknown map method 'mds'; choose one of pca, tsne, umap"):
        embed(x, "mds")
    with pytest.raises(UsageError, match="pca takes no parameter perplexity"):
        embed(x, "pca", perplexity=5)


# ----------------------------------------------------------------------------- cache

def test_coordinates_are_cached_and_keyed_by_every_input(features_file, tmp_path):
    fs = read_features(features_file)
    cache = tmp_path / "cache"
    first = embedding_for(fs, "tsne", subsample=100, seed=0, cache_dir=cache)
    again = embedding_for(fs, "tsne", subsample=100, seed=0, cache_dir=cache)
    assert first.computed and not again.computed
    np.testing.assert_array_equal(first.coords, again.coords)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert again.seconds == first.seconds  # how long the map took, not the read
    for changed in ({"method": "pca"}, {"subsample": 90}, {"seed": 1}, {"perplexity": 10.0}):
        args = {"method": "tsne", "subsample": 100, "seed": 0, **changed}
        assert embedding_for(fs, cache_dir=cache, **args).computed, changed
    assert len(list(cache.glob("*.npz"))) == 5 and not list(cache.glob("*.tmp"))


def test_cache_follows_the_feature_file(tmp_path):
    cache = tmp_path / "cache"
    a = read_features(write_synthetic(tmp_path / "a.h5"))
    b = read_features(write_synthetic(tmp_path / "b.h5", seed=1))  # other features, same ids
    assert embedding_for(a, "pca", cache_dir=cache).computed
    assert embedding_for(b, "pca", cache_dir=cache).computed
    assert not embedding_for(read_features(tmp_path / "a.h5"), "pca", cache_dir=cache).computed
    a.attrs["key"] = "k1"  # files written by extract carry a content key: that is the identity
    assert embedding_for(a, "pca", cache_dir=cache).computed
    assert not embedding_for(a, "pca", cache_dir=cache).computed


def test_subsample_of_all_rows_shares_the_full_map(features_file, tmp_path):
    fs = read_features(features_file)
    assert embedding_for(fs, "pca", cache_dir=tmp_path).computed
    assert not embedding_for(fs, "pca", subsample=len(fs) + 1, cache_dir=tmp_path).computed


def test_damaged_cache_file_is_recomputed(features_file, tmp_path):
    fs = read_features(features_file)
    emb = embedding_for(fs, "pca", cache_dir=tmp_path)
    emb.cache_path.write_bytes(b"half a file")
    again = embedding_for(fs, "pca", cache_dir=tmp_path)
    assert again.computed
    np.testing.assert_allclose(again.coords, emb.coords, atol=1e-5)


# ----------------------------------------------------------------------------- figures

def predictions(n_per_class=60, seed=0, skill=2.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    logits = rng.normal(size=(len(y), len(CLASSES)))
    logits[np.arange(len(y)), y] += skill
    proba = np.exp(logits)
    return y, proba / proba.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("kind,draw", [
    ("confusion", lambda y, p: plot_confusion(y, p, title="logreg")),
    ("confusion", lambda y, p: plot_confusion(y, p.argmax(axis=1))),
    ("roc_pr", plot_roc_pr),
    ("reliability", plot_reliability),
])
def test_prediction_figures_are_written_at_their_size(tmp_path, kind, draw):
    y, proba = predictions()
    path = save_figure(draw(y, proba), tmp_path / "sub" / f"{kind}.png")
    assert png_size(path) == expected_size(kind)
    assert [p.name for p in path.parent.iterdir()] == [f"{kind}.png"]  # no temporary left


def test_absent_classes_and_unlabelled_rows_are_skipped(tmp_path):
    y, proba = predictions()
    y = np.where(y == CLASSES.index("DF"), -1, y)  # no DF case, and unlabelled rows
    fig = plot_roc_pr(y, proba)
    assert "not in y_true (skipped): DF" in fig.get_suptitle()
    legend = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert len(legend) == 12 and not any(t.startswith("DF") for t in legend)
    fig = plot_confusion(y, proba)
    assert "n = 360" in fig.get_suptitle()
    save_figure(fig, tmp_path / "c.png")
    save_figure(plot_reliability(y, proba), tmp_path / "r.png")


def test_confusion_title_holds_balanced_accuracy():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])  # recalls 2/3, 1, 0
    assert "balanced accuracy 0.556, accuracy 0.667, n = 6" in plot_confusion(y, pred).get_suptitle()


def test_expected_calibration_error():
    proba = np.full((10, len(CLASSES)), 0.05)
    proba[:, 0] = 0.7  # confidence 0.7 everywhere
    y = np.array([0] * 7 + [1] * 3)  # accuracy 0.7: calibrated
    assert expected_calibration_error(y, proba) == pytest.approx(0.0)
    y = np.array([0] * 4 + [1] * 6)  # accuracy 0.4
    assert expected_calibration_error(y, proba) == pytest.approx(0.3)
    assert "ECE 0.300" in plot_reliability(y, proba).axes[0].get_title()


def test_bad_prediction_shapes_say_what_was_expected():
    y, proba = predictions()
    with pytest.raises(ValueError, match="y_true has 420 rows but the predictions have 419"):
        plot_roc_pr(y, proba[:-1])
    with pytest.raises(ValueError, match=r"expected probabilities \[N, 7\] in CLASSES order"):
        plot_reliability(y, proba[:, :5])
    with pytest.raises(ValueError, match="no labelled rows"):
        plot_confusion(np.full(len(y), -1), proba)


def test_embedding_figure_colours_by_class_and_category(tmp_path):
    x, y = synthetic()
    coords = x[:, :2]
    fig = plot_embedding(coords, np.where(np.arange(len(y)) < 5, -1, y), title="t")
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[0] == "MEL · melanoma (35)" and texts[-1] == "unlabelled (5)"
    assert png_size(save_figure(fig, tmp_path / "e.png")) == expected_size("embedding")
    fig = plot_embedding(coords, np.array(["10", "2", "unknown"] * 100), kind="category")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["2 (100)", "10 (100)", "unknown (100)"]


def test_age_is_a_colour_scale_not_categories(features_file, tmp_path):
    from skinfeat.viz.maps import color_values, feature_map

    notes = []
    values, kind = color_values(read_features(features_file), "age", notes=notes)
    assert kind == "numeric" and values.dtype == float and np.isnan(values).sum() == 6 and np.nanmax(values) <= 85
    assert notes == ["6 of 300 images have no age: drawn grey"]
    fig = feature_map(features_file, method="pca", color="age", cache_dir=tmp_path).figure
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "age"  # one colour bar, not 18 legend entries
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["missing (6)"]
    values, kind = color_values(read_features(features_file), "localization")
    assert kind == "category"


# ----------------------------------------------------------------------------- command

def test_viz_draws_then_restyles_from_the_cache(run, features_file, tmp_path):
    result = run("--features", str(features_file), "--method", "pca")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote syn__pca-class.png: pca of 300 images, computed in ")
    assert png_size(tmp_path / "syn__pca-class.png") == expected_size("embedding")
    result = run("--features", str(features_file), "--method", "pca", "--color", "sex", "--out", "m/sex.png")
    assert result.exit_code == 0
    assert result.output == "wrote m/sex.png: pca of 300 images, coordinates from the cache\n"
    assert png_size(tmp_path / "m" / "sex.png") == expected_size("embedding")


def test_viz_subsample_larger_than_the_file_uses_all(run, features_file):
    result = run("--features", str(features_file), "--method", "pca", "--subsample", "5000")
    assert result.exit_code == 0
    assert result.stderr == "note: --subsample 5,000 is not below the 300 images in the file: using all\n"
    assert "pca of 300 images" in result.stdout


def test_viz_colours_by_fold(run, features_file, tmp_path):
    ids = read_features(features_file).image_ids
    folds = tmp_path / "folds.csv"
    folds.write_text("image_id,lesion_id,label,fold\n" + "".join(f"{i},{i},,{n % 3 - 1}\n"
                                                                  for n, i in enumerate(ids[:-10])))
    result = run("--features", str(features_file), "--method", "pca", "--color", "fold", "--folds", str(folds))
    assert result.exit_code == 0, result.output
    assert result.stderr == "note: 10 of 300 images are not in the folds file: drawn grey\n"
    result = run("--features", str(features_file), "--method", "pca", "--color", "fold")
    assert result.exit_code == 2
    assert "Error: --color fold needs --folds FOLDS.csv (written by 'skinfeat data split')" in result.output


@pytest.mark.parametrize("args,code,message", [
    (["--color", "dx_type"], 2, "Error: cannot colour by 'dx_type': {f} has no such column; choose class, "
                                "fold (with --folds) or a metadata column of this file (age, localization, sex)"),
    (["--method", "mds"], 2, "Error: Invalid value for '--method': 'mds' is not one of 'umap', 'tsne', 'pca'."),
    (["--subsample", "2"], 2, "Error: Invalid value for '--subsample': 2 is not in the range x>=3."),
])
def test_viz_bad_options(run, features_file, args, code, message):
    result = run("--features", str(features_file), "--method", "pca", *args)
    assert result.exit_code == code
    assert message.format(f=features_file) in result.output


def test_viz_unlabelled_or_missing_file(run, tmp_path):
    path = write_synthetic(tmp_path / "u.h5", labels=np.full(300, -1, np.int8), metadata=False)
    result = run("--features", str(path), "--method", "pca")
    assert result.exit_code == 2
    assert result.output.endswith(f"Error: {path} holds unlabelled features (all 300 labels are -1), so there "
                                  "is no class to colour by; use --color with fold (with --folds) or a "
                                  "metadata column of this file (none: this file has no metadata columns)\n")
    result = run("--features", str(tmp_path / "nope.h5"))
    assert result.exit_code == 1
    assert "Error: " in result.output and "nope.h5 does not exist" in result.output


def test_feature_map_in_python(features_file, tmp_path):
    result = feature_map(str(features_file), "pca", "localization", subsample=100, cache_dir=tmp_path,
                         out=tmp_path / "m.png")
    assert len(result.embedding.indices) == 100 and result.out.exists() and result.notes == []
    assert result.figure.axes[0].get_title() == "PCA of 100 of 300 images (seed 0), synthetic features, " \
                                                "by localization"
