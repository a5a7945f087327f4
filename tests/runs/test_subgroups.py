"""Scores per patient subgroup (``skinfeat.runs.subgroups``) on real HAM10000 metadata."""

import numpy as np
import pytest

from skinfeat.core.metrics import classification_metrics
from skinfeat.runs.subgroups import AGE_BANDS, MIN_LESIONS, subgroup_lines, subgroup_scores


@pytest.fixture(scope="module")
def ham():
    import csv

    from helpers import HAM10000

    from skinfeat.core.classes import CLASSES

    with open(HAM10000 / "HAM10000_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    y = np.array([CLASSES.index(r["dx"].upper()) for r in rows])
    lesions = np.array([r["lesion_id"] for r in rows])
    meta = {c: [r[c] for r in rows] for c in ("sex", "age", "localization")}
    return y, lesions, meta


def test_groups_scores_counts_and_a_flag_where_the_model_is_worse(ham):
    """A classifier that is right on every image but those of the face (and half the
    others at random): the face group is flagged, its figures are its images' own,
    the counts add up, small groups have no interval."""
    y, lesions, meta = ham
    rng = np.random.default_rng(0)
    face = np.array([v == "face" for v in meta["localization"]])
    right = np.where(face, rng.random(len(y)) < 0.3, rng.random(len(y)) < 0.8)
    pred = np.where(right, y, (y + 1) % 7)
    block = subgroup_scores(y, pred, lesions, meta)
    assert block["overall"]["n"] == len(y)
    assert block["overall"]["bmca"] == pytest.approx(classification_metrics(y, np.eye(7)[pred])["bmca"])
    by = {c: {e["group"]: e for e in entries} for c, entries in block["columns"].items()}
    assert list(by["age"])[:len(AGE_BANDS)] == [b[2] for b in AGE_BANDS]  # bands in order, unknown last
    for column, groups in by.items():
        assert sum(e["n"] for e in groups.values()) == len(y), column
    f = by["localization"]["face"]
    assert f["n"] == face.sum() and f["below"] and f["bmca_interval"][1] < block["overall"]["bmca"]
    assert f["accuracy"] == pytest.approx(np.mean(right[face]))
    assert not by["sex"]["male"]["below"] and not by["sex"]["female"]["below"]
    small = [e for groups in by.values() for e in groups.values() if e["lesions"] < MIN_LESIONS]
    assert small and all(e["bmca_interval"] is None and not e["below"] for e in small)  # e.g. acral, genital
    lines = subgroup_lines(block)
    face_line = next(line for line in lines if line.split()[:2] == ["localization", "face"])
    assert face_line.endswith("!") and f"{f['n']}" in face_line
    assert any(f"(< {MIN_LESIONS} lesions)" in line for line in lines)


def test_no_metadata_no_block():
    assert subgroup_scores([0, 1], [0, 1], ["a", "b"], {}) is None
