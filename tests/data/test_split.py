"""Folds keep every lesion on one side, keep class shares, and survive a round trip."""

import numpy as np
import pytest

from skinfeat.core.classes import CLASSES
from skinfeat.data.manifest import Manifest
from skinfeat.data.split import fold_balance, leaking_lesions, make_folds, read_folds, write_folds
from skinfeat.data.layouts import load_dataset
from skinfeat.core.errors import DataError, UsageError


def synthetic(n_lesions=3000, seed=1):
    """A HAM10000-like manifest without files: skewed classes, 1-6 images per lesion."""
    rng = np.random.default_rng(seed)
    shares = [0.11, 0.67, 0.05, 0.03, 0.11, 0.015, 0.015]
    ids, lesions, labels = [], [], []
    for lesion in range(n_lesions):
        label = rng.choice(len(CLASSES), p=np.array(shares) / sum(shares))
        for _ in range(rng.choice([1, 1, 1, 2, 3, 6])):
            ids.append(f"ISIC_{len(ids):07d}")
            lesions.append(f"HAM_{lesion:07d}")
            labels.append(label)
    return Manifest(ids, [f"/nowhere/{i}.jpg" for i in ids], labels, lesions, "ham10000")


def test_folds_group_lesions_and_keep_class_shares():
    m = synthetic()
    folds = make_folds(m, k=5, seed=0)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    assert leaking_lesions(m.lesion_ids, folds) == []
    assert fold_balance(m.labels, folds) < 2.0
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 6  # at most one big lesion apart


def test_holdout_takes_its_fraction_and_the_rest_is_folded():
    m = synthetic()
    folds = make_folds(m, k=3, seed=0, holdout=0.2)
    assert sorted(set(folds.tolist())) == [-1, 0, 1, 2]
    assert abs((folds == -1).mean() - 0.2) < 0.005
    assert leaking_lesions(m.lesion_ids, folds) == []
    assert fold_balance(m.labels, folds) < 2.0
    single = make_folds(m, k=1, holdout=0.25)
    assert sorted(set(single.tolist())) == [-1, 0]


def test_same_seed_same_folds_other_seed_other_folds():
    m = synthetic(500)
    assert np.array_equal(make_folds(m, 5, seed=3), make_folds(m, 5, seed=3))
    assert not np.array_equal(make_folds(m, 5, seed=3), make_folds(m, 5, seed=4))


def test_fold_balance_measures_a_skewed_split():
    labels = np.array([0] * 100 + [1] * 100)
    skewed = np.array([0] * 60 + [1] * 40 + [0] * 40 + [1] * 60)
    assert fold_balance(labels, skewed) == pytest.approx(10.0)
    assert fold_balance(labels, skewed, min_count=101) == 0.0


@pytest.mark.parametrize("kwargs, message", [({"k": 1}, "--folds 1"), ({"k": 0}, "--folds 0"),
                                             ({"holdout": 1.0}, "--holdout 1.0")])
def test_bad_fold_settings_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        make_folds(synthetic(50), **kwargs)


def test_more_parts_than_lesions_is_a_data_error():
    m = Manifest(["a", "b"], ["/a", "/b"], [0, 0], ["L", "L"], "ham10000")
    with pytest.raises(DataError, match="1 lesions cannot fill 2 parts"):
        make_folds(m, k=2)


def test_folds_file_round_trip_and_format(tmp_path):
    m = synthetic(40)
    folds = make_folds(m, k=4, holdout=0.25)
    path = tmp_path / "out" / "folds.csv"
    write_folds(path, m, folds)
    assert read_folds(path) == dict(zip(m.image_ids, folds.tolist()))
    lines = path.read_text().splitlines()
    assert lines[0] == "image_id,lesion_id,label,fold"
    image, lesion, label, fold = lines[1].split(",")
    assert (image, lesion, label, int(fold)) == (m.image_ids[0], m.lesion_ids[0], CLASSES[m.labels[0]], folds[0])
    assert [p.name for p in path.parent.iterdir()] == ["folds.csv"]  # no temporary left behind


def test_unlabelled_images_are_written_with_an_empty_label(tmp_path):
    m = Manifest(["a", "b", "c"], ["/a", "/b", "/c"], [-1, -1, -1], ["a", "b", "c"], "unlabelled")
    write_folds(tmp_path / "f.csv", m, make_folds(m, k=3))
    assert [line.split(",")[2] for line in (tmp_path / "f.csv").read_text().splitlines()[1:]] == ["", "", ""]


def test_a_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("old")
    m = synthetic(10)
    with pytest.raises(DataError, match="got 3 folds for"):
        write_folds(path, m, [0, 1, 0])
    with pytest.raises(TypeError):  # fails half-way through the rows
        write_folds(path, m, [0] * (len(m) - 1) + [None])
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["folds.csv"]


@pytest.mark.parametrize("text, message", [
    ("image_id,lesion_id,label,fold\na,a,MEL,x\n", r"f.csv: fold 'x' \(not an integer\) on line 2"),
    ("image_id,lesion_id,label,fold\na,a,MEL,0\na,a,MEL,1\n", ":3: image a is listed twice"),
    ("image,fold\na,0\n", "no column 'image_id'.*found 'image'"),
    ("image_id,lesion_id,label,fold\n", "no rows"),
    ("image_id,lesion_id,label,fold\na,a,0\n", "3 fields but the header has 4"),
])
def test_bad_folds_files_are_data_errors(tmp_path, text, message):
    (tmp_path / "f.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_folds(tmp_path / "f.csv")


@pytest.mark.parametrize("holdout", [0.0, 0.2])
def test_real_ham10000_folds_are_grouped_and_stratified(ham10000, tmp_path, holdout):
    m = load_dataset(data=ham10000)
    folds = make_folds(m, k=5, seed=0, holdout=holdout)
    write_folds(tmp_path / "folds.csv", m, folds)
    read = read_folds(tmp_path / "folds.csv")
    assert len(read) == 10015
    back = np.array([read[i] for i in m.image_ids])
    assert leaking_lesions(m.lesion_ids, back) == []
    assert fold_balance(m.labels, back, min_count=100) < 2.0
