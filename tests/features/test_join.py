"""One head on several backbones' features and on patient metadata
(``skinfeat fit --features A --features B --metadata age,sex,localization``): the
join, the encoding, the saved model running every backbone from images in
``predict`` / ``evaluate`` / ``export``, and every bad input as one line."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import make_pooling_module
from helpers import error_line, run
from model_factory import PER_CLASS, ham_subset

from skinfeat.features.store import read_features, write_features

META = "age,sex,localization"


@pytest.fixture(scope="module")
def two(skinfeat_home, ham10000):
    """Features of one HAM subset by two backbones (the pooling module at two input
    sizes and resize policies), 2 robust views each, and a fused model with metadata."""
    from skinfeat.features.extract import extract_features
    from skinfeat.runs.fit import run_fit

    root = Path(skinfeat_home) / "test_fusion"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    module = make_pooling_module(root / "pool")
    manifest = ham_subset(ham10000)
    a = extract_features(manifest, module, out=root / "a.h5", views=2, image_size=(64, 64), progress=False).path
    b = extract_features(manifest, module, out=root / "b.h5", views=2, image_size=(48, 80), resize="pad",
                         progress=False).path
    record = run_fit([a, b], "logreg", cv=2, out=root / "model", runs=root / "runs",
                     metadata=("age", "sex", "localization"))
    image_only = run_fit(a, "logreg", cv=2, out=root / "image-only", runs=root / "runs")
    return {"a": str(a), "b": str(b), "model": str(root / "model"), "record": record, "manifest": manifest,
            "image_only": image_only["model_dir"], "root": root}


def ham_folder(tmp_path, ham10000, manifest, metadata=True):
    """The subset as a HAM10000 layout (images plus its rows of the metadata CSV)."""
    folder = tmp_path / "ham"
    (folder / "images").mkdir(parents=True)
    for path in manifest.paths:
        shutil.copy(path, folder / "images")
    wanted = set(manifest.image_ids)
    with open(Path(ham10000) / "HAM10000_metadata.csv") as f:
        rows = list(csv.reader(f))
    header = rows[0] if metadata else rows[0][:4]
    with open(folder / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(r[:len(header)] for r in rows[1:] if r[1] in wanted)
    return folder


# ----------------------------------------------------------------------------- the join

def test_joined_features_are_side_by_side_in_order_and_aligned_by_image(two, tmp_path):
    from skinfeat.features.join import fit_features

    a, b = read_features(two["a"]), read_features(two["b"])
    order = np.random.default_rng(0).permutation(len(b))  # the second file's rows in another order
    shuffled = tmp_path / "b-shuffled.h5"
    write_features(shuffled, b.features[order], b.image_ids[order], b.labels[order], b.lesion_ids[order],
                   views=b.views[order], metadata={k: v[order] for k, v in b.metadata.items()},
                   attrs={k: v for k, v in b.attrs.items() if k not in ("format", "format_version", "classes")})
    fs = fit_features([two["a"], shuffled])
    assert fs.feature_dim == a.feature_dim + b.feature_dim
    np.testing.assert_array_equal(fs.features, np.concatenate([a.features, b.features], axis=1))
    np.testing.assert_array_equal(fs.views, np.concatenate([a.views, b.views], axis=2))
    assert list(fs.image_ids) == list(a.image_ids)
    assert fs.module == f"{a.module} + {b.module}"
    assert [p["path"] for p in fs.attrs["parts"]] == [two["a"], str(shuffled)]


def test_views_are_left_out_when_made_differently(two, tmp_path):
    from skinfeat.features.join import fit_features

    b = read_features(two["b"])
    other = tmp_path / "b-mild.h5"
    attrs = {k: v for k, v in b.attrs.items() if k not in ("format", "format_version", "classes")}
    write_features(other, b.features, b.image_ids, b.labels, b.lesion_ids, views=b.views,
                   attrs=dict(attrs, augment="mild"))
    fs = fit_features([two["a"], other])
    assert fs.views is None and fs.attrs["views"] == 0


def test_fused_record_and_leaderboard_name_every_backbone(two):
    record = two["record"]
    a, b = read_features(two["a"]).module, read_features(two["b"]).module
    assert record["backbone"]["module"] == f"{a} + {b}"
    assert record["features"]["paths"] == [two["a"], two["b"]]
    assert record["metadata"] == ["age", "sex", "localization"]
    assert "metadata=age+sex+localization" in record["settings_label"]
    assert record["backbone"]["feature_dim"] == 9 + 9 + record_meta_width(two)


def record_meta_width(two):
    from skinfeat.data.metadata import width

    return width(json.loads((Path(two["model"]) / "model.json").read_text())["metadata"])


@pytest.mark.parametrize("case, message", [
    ("twice", "names"),
    ("other images", "hold different images (2 only in the first"),
    ("other labels", "disagree on the label of 1 images"),
])
def test_files_that_do_not_belong_together_are_one_line_errors(two, tmp_path, case, message):
    b = read_features(two["b"])
    attrs = {k: v for k, v in b.attrs.items() if k not in ("format", "format_version", "classes")}
    other, rows, labels = tmp_path / "other.h5", np.arange(len(b)), b.labels.copy()
    if case == "other images":
        rows = rows[2:]
    if case == "other labels":
        labels[0] = (labels[0] + 1) % 7
    write_features(other, b.features[rows], b.image_ids[rows], labels[rows], b.lesion_ids[rows], attrs=attrs)
    second = two["a"] if case == "twice" else other
    out = run("fit", "--head", "logreg", "--features", two["a"], "--features", second, "--cv", "2")
    assert message in error_line(out)
    assert not list((tmp_path / "runs").glob("*.json")) if (tmp_path / "runs").exists() else True


# ----------------------------------------------------------------------------- metadata

def test_metadata_encoding_scales_age_one_hots_categories_and_marks_missing():
    from skinfeat.data.metadata import encode, fit_encoding, names

    train = {"age": ["30", "50", "", "70"], "sex": ["male", "female", "unknown", "male"],
             "localization": ["back", "face", "back", "unknown"]}
    encoding = fit_encoding(train, ("age", "sex", "localization"))
    assert encoding["age"] == {"mean": 50.0, "std": pytest.approx(np.std([30, 50, 70]))}
    assert encoding["sex"]["categories"] == ["female", "male"]
    assert names(encoding) == ["age", "age missing", "sex=female", "sex=male", "sex missing",
                               "localization=back", "localization=face", "localization missing"]
    X, unknown = encode(encoding, {"age": ["50", "nan"], "sex": ["FEMALE", "other"],
                                   "localization": ["posterior torso", "palm"]}, 2)
    np.testing.assert_array_equal(X, [[0, 0, 1, 0, 0, 1, 0, 0],  # ISIC's posterior torso is HAM's back
                                      [0, 1, 0, 0, 1, 0, 0, 1]])  # unseen categories: missing
    assert unknown == {"sex": 1, "localization": 1}


def test_metadata_columns_go_to_the_head_and_change_its_score(two):
    fs = read_features(two["a"])
    out = run("fit", "--head", "logreg", "--features", two["a"], "--cv", "2", "--metadata", "sex", "-q")
    assert out.exit_code == 0, out.output
    record = json.loads(Path(out.stdout.split("record: ")[1].split()[0]).read_text())
    assert record["backbone"]["feature_dim"] == fs.feature_dim + 3  # female, male, missing
    assert record["features"]["key"] != fs.attrs["key"]  # its own leaderboard row


@pytest.mark.parametrize("value, message", [
    ("age,weight", "unknown column 'weight'"),
    ("age,age", "names a column twice"),
    (",", "no column"),
])
def test_bad_metadata_columns_are_usage_errors(two, value, message):
    out = run("fit", "--head", "logreg", "--features", two["a"], "--cv", "2", "--metadata", value)
    assert message in error_line(out, code=2)


def test_bad_metadata_values_and_missing_columns_are_one_line_errors(two, tmp_path):
    a = read_features(two["a"])
    attrs = {k: v for k, v in a.attrs.items() if k not in ("format", "format_version", "classes")}
    ages = np.array(a.metadata["age"], dtype=object)
    ages[3] = "forty"
    bad = tmp_path / "bad-age.h5"
    write_features(bad, a.features, a.image_ids, a.labels, a.lesion_ids, attrs=attrs,
                   metadata=dict(a.metadata, age=ages))
    line = error_line(run("fit", "--head", "logreg", "--features", bad, "--cv", "2", "--metadata", "age"))
    assert "age 'forty' is not a number" in line and str(bad) in line
    bare = tmp_path / "no-meta.h5"
    write_features(bare, a.features, a.image_ids, a.labels, a.lesion_ids, attrs=attrs)
    line = error_line(run("fit", "--head", "logreg", "--features", bare, "--cv", "2", "--metadata", "sex"))
    assert "has no sex metadata" in line


# ----------------------------------------------------------------------------- the saved model

def test_predict_runs_every_backbone_and_encodes_metadata_as_fit_did(two, ham10000):
    """Probabilities of `predict` from images equal the head on the files' own
    features of those images, joined and with the metadata encoded as in fitting."""
    from skinfeat.features.join import fit_features
    from skinfeat.model.predictor import Predictor

    model = Predictor(two["model"])
    assert len(model.parts) == 2 and [p.input_size for p in model.parts] == [(64, 64), (48, 80)]
    manifest = two["manifest"]
    out = run("predict", "--model", two["model"], "--metadata", Path(ham10000) / "HAM10000_metadata.csv",
              "--format", "json", *manifest.paths[:6])
    assert out.exit_code == 0, out.output
    got = np.array([[p["probabilities_as_trained"][c] for c in p["probabilities_as_trained"]]
                    for p in json.loads(out.stdout)])
    fs = fit_features([two["a"], two["b"]], ("age", "sex", "localization"))
    want = model.head(fs.features[:6])
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_predict_without_metadata_is_refused_unless_a_fallback_is_given(two, ham10000, tmp_path):
    paths = two["manifest"].paths[:3]
    line = error_line(run("predict", "--model", two["model"], *paths))
    assert "fitted with metadata (age, sex, localization)" in line and "--metadata CSV" in line
    isic = tmp_path / "isic_meta.csv"  # the ISIC 2019 layout, with a row for the first image only
    isic.write_text("image,age_approx,anatom_site_general,lesion_id,sex\n"
                    f"{Path(paths[0]).stem},55,posterior torso,x,male\n")
    line = error_line(run("predict", "--model", two["model"], "--metadata", isic, *paths))
    assert "no row for 2 of the 3 images" in line and "--fallback" in line
    out = run("predict", "--model", two["model"], "--metadata", isic, "--fallback", two["image_only"],
              "--format", "json", *paths)
    assert out.exit_code == 0, out.output
    from skinfeat.model.predict import predict_paths
    from skinfeat.model.predictor import Predictor

    alone = {p.image: p.proba for p in predict_paths(Predictor(two["image_only"]), paths[1:])}
    got = {p["image"]: np.array(list(p["probabilities_as_trained"].values())) for p in json.loads(out.stdout)}
    assert list(got) == [Path(p).stem for p in paths]  # input order kept
    for image, proba in alone.items():
        np.testing.assert_allclose(got[image], proba, atol=1e-6)  # no metadata row: the image-only model
    line = error_line(run("predict", "--model", two["model"], "--metadata", isic, "--fallback", two["model"],
                          *paths))
    assert "needs metadata too" in line


def test_evaluate_takes_the_datasets_own_metadata_or_a_csv(two, ham10000, tmp_path):
    unseen = ham_subset(ham10000, skip=PER_CLASS)  # images the model was not fitted on
    folder = ham_folder(tmp_path, ham10000, unseen)
    out = run("evaluate", "--model", two["model"], "--data", folder, "--no-progress", "--format", "json")
    assert out.exit_code == 0, out.output
    own = json.loads(out.stdout)["clean"]
    bare = ham_folder(tmp_path / "bare", ham10000, unseen, metadata=False)
    line = error_line(run("evaluate", "--model", two["model"], "--data", bare, "--no-progress"))
    assert "has no age, sex, localization; pass --metadata CSV" in line
    out = run("evaluate", "--model", two["model"], "--data", bare, "--no-progress", "--format", "json",
              "--metadata", Path(ham10000) / "HAM10000_metadata.csv")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["clean"] == own


def test_shift_check_shifts_each_backbone_and_caches_them_apart(two, ham10000, tmp_path):
    out = run("fit", "--head", "logreg", "--features", two["a"], "--features", two["b"], "--cv", "2",
              "--metadata", META, "--data", ham10000, "--shift", "zoom:2", "-q")
    assert out.exit_code == 0, out.output
    record = json.loads(Path(out.stdout.split("record: ")[1].split()[0]).read_text())
    assert set(record["shift"]["shifts"]) == {"zoom:2"} and record["shift"]["n"] == 14
    assert len(list((tmp_path / "features" / "shifted").glob("*.npy"))) == 4  # 2 backbones x (clean, zoom:2)
    board = run("compare").stdout
    assert f"{record['shift']['worst']['bmca']:.3f}/" in board and " + " in board


def test_export_rebuilds_every_backbone_and_refuses_one_module(two, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(two["model"], model)
    for name in ("backbone-0.tflite", "backbone-1.tflite"):
        (model / name).unlink()
    line = error_line(run("export", "--model", model))  # its backbones are SavedModel folders: named only
    assert "not in the catalog; pass it with --module" in line
    line = error_line(run("export", "--model", model, "--module", two["root"] / "pool"))
    assert "joins 2 backbones' features" in line and "got 1 --module; expected one per backbone" in line
    assert not (model / "backbone-0.tflite").exists()
    pool = two["root"] / "pool"
    out = run("export", "--model", model, "--module", pool, "--module", pool)
    assert out.exit_code == 0, out.output
    assert (model / "backbone-0.tflite").is_file() and (model / "backbone-1.tflite").is_file()
    assert out.stdout.count("exported") == 2
    from skinfeat.model.predictor import Predictor

    assert [p.input_size for p in Predictor(model).parts] == [(64, 64), (48, 80)]


def test_explain_refuses_a_fused_model_in_one_line(two):
    line = error_line(run("explain", "--model", two["model"], two["manifest"].paths[0]))
    assert "works on a model of one backbone and no metadata" in line


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(parts=m["parts"][:1]), "two or more backbones"),
    (lambda m: m["metadata"].update(columns=["age", "height"]), "column 'height'"),
    (lambda m: m["parts"][1]["export"].update(file="../x.tflite"), "parts[1].export.file"),
])
def test_damaged_fused_manifest_is_one_line(two, tmp_path, edit, message):
    model = tmp_path / "model"
    shutil.copytree(two["model"], model)
    manifest = json.loads((model / "model.json").read_text())
    edit(manifest)
    (model / "model.json").write_text(json.dumps(manifest))
    line = error_line(run("predict", "--model", model, two["manifest"].paths[0]))
    assert "incomplete or damaged" in line and message in line


def test_compare_best_saves_a_fused_run_with_its_backbones(two, tmp_path):
    from skinfeat.model.predictor import Predictor

    out = run("fit", "--head", "logreg", "--features", two["a"], "--features", two["b"], "--cv", "2", "-q")
    assert out.exit_code == 0, out.output
    best = run("compare", "--best", tmp_path / "best")
    assert best.exit_code == 0, best.output
    assert len(Predictor(tmp_path / "best").parts) == 2


def test_real_backbone_fused_with_another(skinfeat_home, ham10000, two, tmp_path):
    """The built-in EfficientNet-Lite0 joined with the pooling module: fit --out, then predict."""
    from skinfeat.features.extract import extract_features

    lite = extract_features(two["manifest"], "efficientnet-lite0", out=tmp_path / "lite.h5", progress=False).path
    out = run("fit", "--head", "logreg", "--features", lite, "--features", two["a"], "--cv", "2",
              "--out", tmp_path / "model", "-q")
    assert out.exit_code == 0, out.output
    out = run("predict", "--model", tmp_path / "model", "--format", "json", two["manifest"].paths[0])
    assert out.exit_code == 0, out.output
    assert abs(sum(json.loads(out.stdout)[0]["probabilities"].values()) - 1) < 1e-4
