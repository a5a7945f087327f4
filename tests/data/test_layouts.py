"""Each layout a user may arrive with becomes the same kind of Manifest."""

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dataset_factory import four_classes_rows, make_class_folders, make_ham, make_isic, write_image
from skinfeat.core.classes import CLASSES, UNLABELLED
from skinfeat.cli import cli
from skinfeat.data.manifest import Manifest
from skinfeat.data.layouts import load_dataset
from skinfeat.data.layouts import NO_GROUPING
from skinfeat.core.errors import DataError, UsageError

MEL, NV, BCC, BKL = (CLASSES.index(c) for c in ("MEL", "NV", "BCC", "BKL"))


def test_ham10000_with_images_split_over_two_part_folders(tmp_path):
    rows = [("HAM_1", "ISIC_1", "mel"), ("HAM_1", "ISIC_2", "mel"), ("HAM_2", "ISIC_3", "NV")]
    make_ham(tmp_path, rows, folders=("HAM10000_images_part_1", "HAM10000_images_part_2"))
    m = load_dataset(data=tmp_path)
    assert m.layout == "ham10000"
    assert m.image_ids == ["ISIC_1", "ISIC_2", "ISIC_3"]
    assert m.labels.dtype == np.int8 and m.labels.tolist() == [MEL, MEL, NV]
    assert m.lesion_ids == ["HAM_1", "HAM_1", "HAM_2"]
    assert m.paths[1] == str(tmp_path / "HAM10000_images_part_2" / "ISIC_2.jpg")
    assert all(os.path.isabs(p) for p in m.paths)
    assert list(m.metadata) == ["dx_type", "age", "sex", "localization"]
    assert m.metadata["age"] == ["50.0"] * 3
    assert m.problems == []


def test_explicit_images_and_labels_match_auto_detection(tmp_path):
    make_ham(tmp_path, four_classes_rows(8))
    auto = load_dataset(data=tmp_path)
    explicit = load_dataset(images=tmp_path / "images", labels=tmp_path / "HAM10000_metadata.csv")
    assert explicit.image_ids == auto.image_ids and explicit.paths == auto.paths
    assert explicit.labels.tolist() == auto.labels.tolist()


def test_data_may_name_the_labels_csv_itself(tmp_path):
    make_ham(tmp_path, four_classes_rows(4))
    assert len(load_dataset(data=tmp_path / "HAM10000_metadata.csv")) == len(four_classes_rows(4))


def test_image_ids_written_with_an_extension_are_matched(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1.jpg", "bcc")], images=False)
    write_image(tmp_path / "images" / "ISIC_1.jpg")
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["ISIC_1"] and m.labels.tolist() == [BCC]


def test_isic2018_with_lesion_groupings(tmp_path):
    make_isic(tmp_path, [("ISIC_1", "MEL"), ("ISIC_2", "BKL"), ("ISIC_3", "BKL")],
              groupings={"ISIC_1": "IL_1", "ISIC_2": "IL_2", "ISIC_3": "IL_2"})
    m = load_dataset(data=tmp_path)
    assert m.layout == "isic2018"
    assert m.labels.tolist() == [MEL, BKL, BKL]
    assert m.lesion_ids == ["IL_1", "IL_2", "IL_2"]
    assert m.metadata == {"dx_type": ["histopathology"] * 3}
    assert m.sources["groupings"].endswith("ISIC2018_Task3_Training_LesionGroupings.csv")
    assert m.problems == []


def test_isic2018_explicit_without_groupings_warns_that_each_image_is_its_own_lesion(tmp_path):
    make_isic(tmp_path, [("ISIC_1", "MEL"), ("ISIC_2", "NV")])
    m = load_dataset(images=tmp_path / "ISIC2018_Task3_Training_Input",
                     labels=tmp_path / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv")
    assert m.lesion_ids == ["ISIC_1", "ISIC_2"]
    assert [p.level for p in m.problems] == ["warning"]
    assert "LesionGroupings" in m.problems[0].message


def test_class_folders_match_class_names_in_any_case(tmp_path):
    make_class_folders(tmp_path, {"MEL": 2, "nv": 3, "Bcc": 1})
    m = load_dataset(data=tmp_path)
    assert m.layout == "class-folders"
    assert sorted(m.image_ids) == m.image_ids
    assert dict(zip(m.image_ids, m.labels.tolist())) == {
        "Bcc_0": BCC, "MEL_0": MEL, "MEL_1": MEL, "nv_0": NV, "nv_1": NV, "nv_2": NV}
    assert m.lesion_ids == m.image_ids
    assert m.metadata == {} and [(p.level, p.message) for p in m.problems] == [("warning", NO_GROUPING)]


def test_class_folders_recognise_full_names_and_common_spellings(tmp_path):
    names = ["Melanoma", "melanocytic_nevi", "2-basal cell carcinoma", "actinic-keratoses", "Benign keratosis-like "
             "lesions", "dermatofibroma", "vascular lesions"]
    make_class_folders(tmp_path, {name: 1 for name in names})
    m = load_dataset(data=tmp_path)
    assert m.layout == "class-folders" and len(m) == 7
    assert {Path(p).parent.name: CLASSES[k] for p, k in zip(m.paths, m.labels)} == dict(zip(names, CLASSES))


def test_a_keras_train_val_tree_is_read_as_one_dataset_with_a_warning(tmp_path):
    make_class_folders(tmp_path / "train", {"mel": 2, "nv": 3})
    make_class_folders(tmp_path / "val", {"melanoma": 1, "nevus": 1}, suffix=".jpg")
    m = load_dataset(data=tmp_path)
    assert m.layout == "class-folders" and len(m) == 7
    assert m.labels.tolist().count(MEL) == 3 and m.labels.tolist().count(NV) == 4
    messages = [p.message for p in m.problems]
    assert messages[0] == (f"class folders found in 2 parts (train/, val/): read as one dataset of 7 images, since "
                           f"skinfeat makes its own lesion-grouped folds; pass one part as --data ({tmp_path / 'train'}) "
                           "to use it alone") and messages[1] == NO_GROUPING


def test_folders_named_like_no_class_are_said_not_silently_unlabelled(tmp_path):
    make_class_folders(tmp_path, {"cats": 2, "dogs": 1})
    m = load_dataset(data=tmp_path)
    assert m.layout == "unlabelled" and len(m) == 3
    assert [p.level for p in m.problems] == ["warning"]
    assert m.problems[0].message.startswith("the images lie in sub-folders (cats/, dogs/) whose names are none of "
                                            "the seven classes MEL, NV, BCC, AKIEC, BKL, DF, VASC")
    result = CliRunner().invoke(cli, ["data", "check", "--data", str(tmp_path)])
    assert "cats/, dogs/" in result.output
    from fakes import make_pooling_module

    module = make_pooling_module(tmp_path / "module")
    features = tmp_path / "f.h5"
    runner = CliRunner()
    result = runner.invoke(cli, ["extract", "--module", module, "--data", str(tmp_path), "--out", str(features),
                                 "--no-progress", "--views", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["fit", "--features", str(features), "--head", "logreg"])
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and last.startswith(f"Error: features file {features} has no labelled images")


def test_unlabelled_folder_searched_recursively_skipping_hidden_files(tmp_path):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "deeper" / "b.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._a.jpg").write_bytes(b"macOS resource fork")
    m = load_dataset(images=tmp_path)
    assert m.layout == "unlabelled"
    assert m.image_ids == ["a", "b"]
    assert m.labels.tolist() == [UNLABELLED, UNLABELLED]
    assert m.lesion_ids == ["a", "b"]


def test_subset_keeps_every_column_aligned(tmp_path):
    make_ham(tmp_path, four_classes_rows(6))
    m = load_dataset(data=tmp_path)
    sub = m.subset([4, 0])
    assert isinstance(sub, Manifest) and len(sub) == 2
    for column in ("image_ids", "paths", "lesion_ids"):
        assert getattr(sub, column) == [getattr(m, column)[4], getattr(m, column)[0]]
    assert sub.labels.tolist() == [m.labels[4], m.labels[0]]
    assert sub.metadata["sex"] == [m.metadata["sex"][4], m.metadata["sex"][0]]
    assert len(m.subset(m.labels == MEL)) == int((m.labels == MEL).sum())
    assert len(m.subset([])) == 0 and m.subset([]).labels.dtype == np.int8


def test_a_folds_file_beside_the_data_is_not_taken_for_labels(tmp_path):
    make_ham(tmp_path, four_classes_rows(4))
    (tmp_path / "folds.csv").write_text("image_id,lesion_id,label,fold\nISIC_0000000,HAM_0000000,NV,0\n")
    assert load_dataset(data=tmp_path).layout == "ham10000"


def test_two_label_files_ask_to_choose(tmp_path):
    make_ham(tmp_path, four_classes_rows(2))
    make_isic(tmp_path, [("ISIC_9", "MEL")])
    with pytest.raises(DataError, match="found 2 label files.*--images DIR --labels CSV"):
        load_dataset(data=tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "no dataset given"),
    ({"data": ".", "images": "."}, "not both"),
    ({"labels": "x.csv"}, "--labels needs --images"),
])
def test_bad_option_combinations_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        load_dataset(**kwargs)


def test_missing_paths_and_empty_folders_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(data=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no images found in .*point --data"):
        load_dataset(data=tmp_path)
    with pytest.raises(DataError, match="--labels .*no such file"):
        load_dataset(images=tmp_path, labels=tmp_path / "nowhere.csv")


def test_manifest_rejects_columns_of_different_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        Manifest(["a", "b"], ["/a.jpg"], [0, 1], ["a", "b"], "unlabelled")


def test_real_ham10000_manifest(ham10000):
    m = load_dataset(data=ham10000)
    assert m.layout == "ham10000"
    assert len(m) == 10015 and len(set(m.lesion_ids)) == 7470
    assert m.class_counts() == {"MEL": 1113, "NV": 6705, "BCC": 514, "AKIEC": 327,
                                "BKL": 1099, "DF": 115, "VASC": 142}
    assert m.problems == []
    assert sum(v == "" for v in m.metadata["age"]) == 57
    assert os.path.basename(m.paths[0]) == m.image_ids[0] + ".jpg"


@pytest.mark.parametrize("spelling", ["outside", "./outside", "outside/", "sub/../outside", "link", "with space",
                                      "dossier-été"])
def test_a_folder_of_unlabelled_images_reads_the_same_however_it_is_named(tmp_path, monkeypatch, spelling):
    """Relative, ./, trailing-slash, .., symlinked, spaced and non-ASCII spellings of a
    folder of images without labels give the manifest its absolute path gives."""
    for name in ("outside", "with space", "dossier-été"):
        for i, sub in enumerate(("", "", "a", "b")):  # two sub-folders that are no class: a warning, not a crash
            write_image(tmp_path / name / sub / f"ISIC_{i:07d}.jpg")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "outside")
    monkeypatch.chdir(tmp_path)
    m = load_dataset(data=spelling)
    absolute = load_dataset(data=str(tmp_path / spelling))
    assert m.layout == "unlabelled" and m.image_ids == absolute.image_ids == [f"ISIC_{i:07d}" for i in range(4)]
    assert [p.message for p in m.problems] == [p.message for p in absolute.problems]
    assert any("sub-folders (a/, b/)" in p.message for p in m.problems)
    result = CliRunner().invoke(cli, ["data", "check", "--data", spelling])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
