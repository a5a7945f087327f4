"""``skinfeat data duplicates``: near-duplicate images by feature similarity, exact in
blocks; planted copies of real HAM10000 images are found; ``data split
--duplicates`` keeps linked lesions in one fold; every bad input is one line."""

import csv

import h5py
import numpy as np
import pytest
from PIL import Image

from helpers import run
from dataset_factory import make_ham
from model_factory import ham_subset
from skinfeat.data.layouts import load_dataset
from skinfeat.data.split import read_folds
from skinfeat.data.duplicates import DEFAULT_THRESHOLD, find_duplicates
from skinfeat.features.store import read_features, write_features


def fails(result, code, *words):
    """Exit ``code``, one line 'Error: ...' holding ``words``, no traceback."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert str(word) in lines[0], result.output


ATTRS = {"module": "pool", "module_fingerprint": "f1", "input_size": [224, 224], "resize": "crop"}


def features_file(path, features, image_ids, lesion_ids, **attrs):
    features = np.asarray(features, np.float32)
    write_features(path, features, image_ids, [1] * len(image_ids), lesion_ids, attrs={**ATTRS, **attrs})
    return path


@pytest.fixture
def toy(tmp_path):
    """Six images: I0/I1 one lesion (near-identical), I2 (lesion L2) a near copy of I3 (lesion L3),
    I4 and I5 unlike anything; a HAM layout with their (made-up) files, and a features file."""
    rng = np.random.default_rng(0)
    base = rng.random((6, 16)) + np.eye(6, 16) * 5
    base[1] = base[0] + 0.01
    base[3] = base[2] + 0.02
    ids = [f"I{i}" for i in range(6)]
    lesions = ["L0", "L0", "L2", "L3", "L4", "L5"]
    data = make_ham(tmp_path / "ham", [(les, i, "nv") for les, i in zip(lesions, ids)])
    return {"features": features_file(tmp_path / "toy.h5", base, ids, lesions), "data": data, "tmp": tmp_path}


def folds_file(path, folds):
    with open(path, "w") as f:
        f.write("image_id,lesion_id,label,fold\n" + "".join(f"{i},x,NV,{k}\n" for i, k in folds.items()))
    return path


def test_block_search_is_exact_and_worst_first():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    x[150:] = x[:150] + 0.3 * rng.standard_normal((150, 12))  # 150 near pairs
    y = x[:80] + 0.1
    fs = read_like(x)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = x - x.mean(0)
    variance, vectors = np.linalg.eigh(centred.T @ centred / len(x))
    white = centred @ vectors / np.sqrt(variance)  # 300 rows: all 12 axes (one per 5 rows or fewer)
    for similarity, rows in (("raw", x), ("whitened", white)):
        got = find_duplicates(fs, threshold=0.9, similarity=similarity, block=64)
        u = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        sims = u @ u.T
        want = {(a, b) for a, b in zip(*np.nonzero(sims >= 0.9 - 1e-6)) if a < b}
        assert set(zip(got.a.tolist(), got.b.tolist())) == want and len(got) == len(want) > 100
        assert np.all(np.diff(got.similarity) <= 0)
        assert np.allclose(got.similarity, sims[got.a, got.b], atol=1e-5)
    across = find_duplicates(read_like(y), fs, threshold=0.9, similarity="whitened")  # learnt from fs only
    queries = (y - x.mean(0)) @ vectors / np.sqrt(variance)
    u, v = (r / np.linalg.norm(r, axis=1, keepdims=True) for r in (queries, white))
    assert set(zip(across.a.tolist(), across.b.tolist())) == set(zip(*np.nonzero(u @ v.T >= 0.9 - 1e-6)))
    across = find_duplicates(fs, read_like(y), threshold=0.95, block=64)
    sims = unit @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T
    assert set(zip(across.a.tolist(), across.b.tolist())) == set(zip(*np.nonzero(sims >= 0.95 - 1e-6)))


class read_like:
    """A FeatureSet-like holder of in-memory rows (only what find_duplicates reads)."""

    def __init__(self, x):
        self.features, self.attrs, self.path = x, dict(ATTRS), "mem"

    @property
    def feature_dim(self):
        return self.features.shape[1]


def test_self_search_lists_leaks_and_keeps_same_lesion_pairs_apart(toy):
    folds = folds_file(toy["tmp"] / "folds.csv", {"I0": 0, "I1": 0, "I2": 0, "I3": 1, "I4": 1, "I5": 0})
    pairs_csv = toy["tmp"] / "pairs.csv"
    result = run("data", "duplicates", "--features", toy["features"], "--threshold", 0.99, "--folds", folds,
                 "--pairs-out", pairs_csv)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[1:4] == ["I2", "(L2,", "fold"] and "I3 (L3, fold 1)" in lines[0]
    assert lines[0].endswith("different lesions, different folds: leak")
    assert "I0" not in result.output.split("\n2 pairs")[0]  # the same-lesion pair is counted, not listed
    assert "2 pairs at similarity >= 0.99: 1 of different lesions (1 in different folds: leaks), 1 within one" in \
        result.output
    listed = run("data", "duplicates", "--features", toy["features"], "--threshold", 0.99, "--all")
    assert "I0 (L0, fold ?)  I1 (L0, fold ?)  same lesion" in listed.output
    assert "different lesions, fold ?" in listed.output
    with open(pairs_csv) as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["image_a"], r["image_b"], r["fold_b"], r["verdict"]) for r in rows) == [
        ("I0", "I1", "0", "same lesion"), ("I2", "I3", "1", "different lesions, different folds: leak")]


def test_split_keeps_near_duplicates_in_one_fold(toy):
    pairs_csv = toy["tmp"] / "pairs.csv"
    run("data", "duplicates", "--features", toy["features"], "--threshold", 0.99, "--pairs-out", pairs_csv)
    apart = {}
    for seed in range(20):  # without the pairs file some seed puts L2 and L3 in different folds
        run("data", "split", "--data", toy["data"], "--folds", 3, "--seed", seed, "--out", toy["tmp"] / "f.csv")
        apart[seed] = read_folds(toy["tmp"] / "f.csv")
    assert any(f["I2"] != f["I3"] for f in apart.values())
    for seed in range(20):
        out = toy["tmp"] / f"g{seed}.csv"
        result = run("data", "split", "--data", toy["data"], "--folds", 3, "--seed", seed, "--duplicates",
                     pairs_csv, "--out", out)
        assert result.exit_code == 0, result.output
        assert "1 lesions joined" in result.output
        folds = read_folds(out)
        assert folds["I2"] == folds["I3"] and folds["I0"] == folds["I1"]
        with open(out) as f:
            assert {r["image_id"]: r["lesion_id"] for r in csv.DictReader(f)}["I3"] == "L3"  # ids as they were


def test_contact_sheet_draws_the_pairs(toy):
    sheet = toy["tmp"] / "sheet.png"
    result = run("data", "duplicates", "--features", toy["features"], "--threshold", 0.99, "--out", sheet,
                 "--data", toy["data"])
    assert result.exit_code == 0, result.output
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.height > 100
    assert [p.name for p in toy["tmp"].iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.fixture(scope="module")
def planted(tmp_path_factory, ham10000):
    """28 real HAM10000 images and, in a second set, copies of 4 of them: JPEG quality 70 and
    flipped left-right; features of both by the default backbone (no views)."""
    from skinfeat.features.extract import extract_features

    tmp = tmp_path_factory.mktemp("planted")
    (tmp / "copies").mkdir()
    subset = ham_subset(ham10000)
    sources = subset.image_ids[::7]
    for image_id, path in zip(subset.image_ids[::7], subset.paths[::7]):
        with Image.open(path) as im:
            im.save(tmp / "copies" / f"{image_id}-jpeg.jpg", quality=70)
            im.transpose(Image.FLIP_LEFT_RIGHT).save(tmp / "copies" / f"{image_id}-flip.jpg", quality=95)
    module = "efficientnet-lite0-stages-sog"
    full = extract_features(subset, module, out=tmp / "full.h5", views=0, progress=False).path
    copies = extract_features(load_dataset(images=str(tmp / "copies")), module, out=tmp / "copies.h5", views=0,
                              progress=False).path
    return {"full": full, "copies": copies, "sources": sources, "tmp": tmp}


def test_planted_copies_are_found_at_the_default_threshold(planted):
    result = run("data", "duplicates", "--features", planted["copies"], "--against", planted["full"])
    assert result.exit_code == 0, result.output
    pairs = [line.split()[1:6:4] for line in result.output.splitlines()[:-1]]
    assert sorted(pairs) == sorted([f"{s}-{kind}", s] for s in planted["sources"] for kind in ("jpeg", "flip"))
    assert f"8 pairs at similarity >= {DEFAULT_THRESHOLD} across the two sets: 8 images" in result.output
    assert all(line.endswith("in both sets: leak") for line in result.output.splitlines()[:-1])
    own = run("data", "duplicates", "--features", planted["full"])  # 28 images of 28 lesions: nothing alike
    assert own.output.startswith(f"0 pairs at similarity >= {DEFAULT_THRESHOLD}"), own.output


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "nan", "abc"])
def test_threshold_out_of_range(toy, value):
    result = run("data", "duplicates", "--features", toy["features"], "--threshold", value)
    fails(result, 2, "--threshold")


@pytest.mark.parametrize("attrs", [{"module": "other"}, {"module_fingerprint": "f2"}, {"input_size": [256, 256]},
                                   {"resize": "pad"}])
def test_against_features_of_another_backbone(toy, attrs):
    rows = read_features(toy["features"])
    other = features_file(toy["tmp"] / "other.h5", rows.features, rows.image_ids, rows.lesion_ids, **attrs)
    fails(run("data", "duplicates", "--features", toy["features"], "--against", other), 1,
          "different backbones", toy["features"], other, next(iter(attrs)))


def test_against_features_of_another_width(toy):
    other = features_file(toy["tmp"] / "wide.h5", np.ones((2, 20)), ["A", "B"], ["A", "B"])
    fails(run("data", "duplicates", "--features", toy["features"], "--against", other), 1, "16", "20", other)


def test_missing_and_foreign_features_files(toy):
    tmp = toy["tmp"]
    fails(run("data", "duplicates", "--features", tmp / "none.h5"), 1, "none.h5", "does not exist")
    (tmp / "text.h5").write_text("not hdf5")
    fails(run("data", "duplicates", "--features", tmp / "text.h5"), 1, "text.h5", "not a readable HDF5")
    with h5py.File(tmp / "foreign.h5", "w") as f:
        f["x"] = [1]
    fails(run("data", "duplicates", "--features", toy["features"], "--against", tmp / "foreign.h5"), 1,
          "foreign.h5", "not a skinfeat features file")


def test_too_few_images_to_whiten(toy):
    fails(run("data", "duplicates", "--features", toy["features"], "--similarity", "whitened"), 1, toy["features"],
          "6 images", "--similarity raw")


def test_too_low_a_threshold_is_refused_not_a_memory_blowup(toy, monkeypatch):
    monkeypatch.setattr("skinfeat.data.duplicates.MAX_PAIRS", 3)
    fails(run("data", "duplicates", "--features", toy["features"], "--threshold", 0.01), 2,
          "--threshold 0.01", "more than 3 pairs", "raise --threshold")


def test_sheet_needs_the_images_and_outputs_must_be_writable(toy):
    fails(run("data", "duplicates", "--features", toy["features"], "--out", toy["tmp"] / "s.png"), 2,
          "--out", "--data")
    fails(run("data", "duplicates", "--features", toy["features"], "--pairs-out", toy["tmp"]), 2,
          "--pairs-out", "directory")
    under_a_file = toy["features"] / "pairs.csv"
    fails(run("data", "duplicates", "--features", toy["features"], "--pairs-out", under_a_file), 1,
          under_a_file, "the pairs file", "is a file, not a folder")


def test_split_refuses_a_pairs_file_of_another_dataset_or_kind(toy):
    other = toy["tmp"] / "other_pairs.csv"
    other.write_text("image_a,image_b\nX1,X2\n")
    fails(run("data", "split", "--data", toy["data"], "--folds", 2, "--duplicates", other, "--out",
              toy["tmp"] / "f.csv"), 1, "other_pairs.csv", "none of its 1 pairs")
    folds = folds_file(toy["tmp"] / "folds.csv", {"I0": 0})
    fails(run("data", "split", "--data", toy["data"], "--folds", 2, "--duplicates", folds, "--out",
              toy["tmp"] / "f.csv"), 1, "folds.csv", "image_a")
    assert not (toy["tmp"] / "f.csv").exists()
