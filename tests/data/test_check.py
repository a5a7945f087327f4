"""Every kind of bad input is found, classed as error or warning, located, and
explained; the manifest is still built from what is usable."""

import shutil

import pytest

from dataset_factory import (HAM_HEADER, four_classes_rows, make_class_folders, make_ham, make_isic, one_hot,
                             write_csv, write_image)
from skinfeat.core.classes import CLASSES
from skinfeat.data.check import check_dataset
from skinfeat.data.layouts import load_dataset
from skinfeat.data.split import make_folds
from skinfeat.core.errors import DataError

MEL, NV = CLASSES.index("MEL"), CLASSES.index("NV")


def only(problems, level):
    """The single problem of ``level``; fails listing them all otherwise."""
    found = [p for p in problems if p.level == level]
    assert len(found) == 1, [str(p) for p in problems]
    return found[0]


def test_row_whose_image_is_missing_is_an_error_with_file_and_line(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv"), ("HAM_2", "ISIC_2", "mel")])
    (tmp_path / "images" / "ISIC_2.jpg").unlink()
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["ISIC_1"]
    problem = only(m.problems, "error")
    assert problem.where.endswith("HAM10000_metadata.csv:3")
    assert "ISIC_2 has no file" in problem.message and "add the image or delete the row" in problem.message


def test_image_without_a_row_is_a_warning_and_left_out(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv")])
    extra = write_image(tmp_path / "images" / "ISIC_9.jpg")
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["ISIC_1"]
    problem = only(m.problems, "warning")
    assert problem.where == str(extra) and "ISIC_9 has no row" in problem.message


def test_one_id_with_two_files_is_an_error_and_the_first_is_used(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv")], folders=("part_1",))
    write_image(tmp_path / "part_2" / "ISIC_1.jpg")
    m = load_dataset(data=tmp_path)
    assert m.paths == [str(tmp_path / "part_1" / "ISIC_1.jpg")]
    assert "ISIC_1 has 2 files" in only(m.problems, "error").message


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.write_bytes(b""), "zero-byte file"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "damaged image"),
    (lambda p: p.write_bytes(p.read_bytes()[:-2]), "damaged image (Premature end of JPEG file)"),  # end marker lost
    (lambda p: p.write_text("<html>Not Found</html>"), "is not an image (not JPEG, PNG"),
])
def test_broken_image_files_are_errors(tmp_path, damage, expected):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv"), ("HAM_2", "ISIC_2", "mel")])
    write_image(tmp_path / "images" / "ISIC_2.jpg", size=(64, 48))  # big enough to cut in half
    damage(tmp_path / "images" / "ISIC_2.jpg")
    assert load_dataset(data=tmp_path).problems == []  # building never opens pixels
    problem = only(check_dataset(load_dataset(data=tmp_path)), "error")
    assert expected in problem.message and "ISIC_2" in problem.message
    assert problem.where.endswith("ISIC_2.jpg")


def test_a_truncated_png_is_an_error_too(tmp_path):
    make_class_folders(tmp_path, {"MEL": 1, "NV": 1})
    path = tmp_path / "NV" / "NV_0.png"
    write_image(path, size=(64, 48))
    path.write_bytes(path.read_bytes()[:-30])
    assert "NV_0" in only(check_dataset(load_dataset(data=tmp_path)), "error").message


def test_same_id_twice_with_different_labels_is_an_error_and_both_rows_are_skipped(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv"), ("HAM_2", "ISIC_2", "mel"), ("HAM_1", "ISIC_1", "bkl")])
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["ISIC_2"]
    problem = only(m.problems, "error")
    assert problem.where.endswith(":4") and "NV at" in problem.message and "BKL here" in problem.message


def test_same_id_twice_with_the_same_label_is_a_warning(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv"), ("HAM_1", "ISIC_1", "NV")])
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["ISIC_1"]
    assert "listed again with the same label" in only(m.problems, "warning").message


def test_byte_identical_files_of_different_lesions_are_an_error(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv"), ("HAM_2", "ISIC_2", "nv"), ("HAM_3", "ISIC_3", "mel")])
    shutil.copy(tmp_path / "images" / "ISIC_1.jpg", tmp_path / "images" / "ISIC_2.jpg")
    problem = only(check_dataset(load_dataset(data=tmp_path)), "error")
    assert "byte-identical" in problem.message and "ISIC_1" in problem.message and "ISIC_2" in problem.message
    assert "two folds" in problem.message


def test_byte_identical_files_within_one_lesion_are_a_warning(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv"), ("HAM_1", "ISIC_2", "nv")])
    shutil.copy(tmp_path / "images" / "ISIC_1.jpg", tmp_path / "images" / "ISIC_2.jpg")
    problems = check_dataset(load_dataset(data=tmp_path))
    assert "byte-identical" in only(problems, "warning").message


@pytest.mark.parametrize("dx, hint", [("melanoma", "did you mean MEL?"), ("nevi", "did you mean NV?"), ("", "")])
def test_label_outside_the_seven_classes_is_an_error(tmp_path, dx, hint):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "Mel"), ("HAM_2", "ISIC_2", dx)])
    m = load_dataset(data=tmp_path)
    assert m.labels.tolist() == [MEL]  # 'Mel' is fine in any case
    problem = only(m.problems, "error")
    assert problem.where.endswith(":3") and f"label '{dx}'" in problem.message and hint in problem.message


@pytest.mark.parametrize("values, complaint", [
    (["0.0"] * 7, "0 ones in the one-hot row (no class)"),
    (["1.0", "1.0"] + ["0.0"] * 5, "2 ones in the one-hot row (MEL, NV)"),
    (["0.5", "0.5"] + ["0.0"] * 5, "values other than 0 or 1 in MEL, NV"),
    (["yes"] + ["0.0"] * 6, "non-numeric one-hot values"),
])
def test_bad_one_hot_rows_are_errors(tmp_path, values, complaint):
    make_isic(tmp_path, [("ISIC_1", "NV"), ("ISIC_2", "NV")], groupings={"ISIC_1": "L1", "ISIC_2": "L2"})
    truth = next(tmp_path.rglob("*GroundTruth.csv"))
    write_csv(truth, ["image", *CLASSES], [["ISIC_1", *one_hot("NV")], ["ISIC_2", *values]])
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["ISIC_1"]
    problem = only(m.problems, "error")
    assert complaint in problem.message and problem.where.endswith(":3")


@pytest.mark.parametrize("header, message", [
    (["lesion_id", "imageid", "dx"], "no column 'image_id'.*found 'imageid': rename it to 'image_id'"),
    (["lesion_id", "image_id", "diagnosis"], "no column 'dx'.*the columns are lesion_id, image_id, diagnosis"),
])
def test_missing_or_misspelled_required_column_stops_with_a_suggestion(tmp_path, header, message):
    write_csv(tmp_path / "HAM10000_metadata.csv", header, [["HAM_1", "ISIC_1", "nv"]])
    write_image(tmp_path / "images" / "ISIC_1.jpg")
    with pytest.raises(DataError, match=message):
        load_dataset(data=tmp_path)


def test_misspelled_one_hot_class_column_is_named(tmp_path):
    header = ["image", "MEL", "NV", "BCC", "AKEIC", "BKL", "DF", "VASC"]
    write_csv(tmp_path / "truth.csv", header, [["ISIC_1", *one_hot("NV")]])
    write_image(tmp_path / "in" / "ISIC_1.jpg")
    with pytest.raises(DataError, match="no column 'AKIEC'.*found 'AKEIC'"):
        load_dataset(images=tmp_path / "in", labels=tmp_path / "truth.csv")


def test_misspelled_lesion_id_is_a_warning_and_each_image_is_its_own_lesion(tmp_path):
    write_csv(tmp_path / "HAM10000_metadata.csv", ["lesionid", "image_id", "dx"], [["HAM_1", "ISIC_1", "nv"]])
    write_image(tmp_path / "images" / "ISIC_1.jpg")
    m = load_dataset(data=tmp_path)
    assert m.lesion_ids == ["ISIC_1"]
    assert "rename 'lesionid' to 'lesion_id'" in only(m.problems, "warning").message


def test_unrecognised_labels_file_lists_the_expected_headers(tmp_path):
    write_csv(tmp_path / "labels.csv", ["file", "class"], [["ISIC_1", "nv"]])
    write_image(tmp_path / "ISIC_1.jpg")
    with pytest.raises(DataError, match="columns file, class; expected HAM10000 metadata .* or ISIC 2018"):
        load_dataset(images=tmp_path, labels=tmp_path / "labels.csv")


@pytest.mark.parametrize("options, said", [({"bom": True}, "byte-order mark"), ({"delimiter": ";"}, "';'"),
                                           ({"delimiter": "\t"}, "tab")])
def test_bom_and_other_delimiters_are_read_with_a_warning(tmp_path, options, said):
    make_ham(tmp_path, four_classes_rows(4), **options)
    m = load_dataset(data=tmp_path)
    assert len(m) == len(four_classes_rows(4)) and m.lesion_ids[0] == "HAM_0000000"
    problem = only(m.problems, "warning")
    assert said in problem.message and problem.where.endswith("HAM10000_metadata.csv:1")


def test_row_with_the_wrong_number_of_fields_is_an_error(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv")])
    with open(tmp_path / "HAM10000_metadata.csv", "a") as f:
        f.write("HAM_2,ISIC_2,nv\n")
    assert "3 fields but the header has 7" in only(load_dataset(data=tmp_path).problems, "error").message


def test_lesion_with_mixed_labels_warns_and_splits_by_majority(tmp_path):
    rows = [("HAM_1", "ISIC_1", "mel"), ("HAM_1", "ISIC_2", "mel"), ("HAM_1", "ISIC_3", "nv")]
    rows += [(f"HAM_{i}", f"ISIC_{i}", "nv") for i in range(10, 20)]
    make_ham(tmp_path, rows, header=HAM_HEADER)
    m = load_dataset(data=tmp_path)
    assert m.problems == []
    problem = only(check_dataset(m, pixels=False), "warning")
    assert "HAM_1" in problem.message and "MEL x2, NV x1" in problem.message and "as MEL" in problem.message
    folds = make_folds(m, k=2)
    assert len(set(folds[:3])) == 1


def test_class_folder_that_is_not_a_class_is_an_error(tmp_path):
    make_class_folders(tmp_path, {"MEL": 2, "melanomma": 3, "empty-notes": 0})
    write_image(tmp_path / "loose.jpg")
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["MEL_0", "MEL_1"]
    problem = only(m.problems, "error")
    assert "'melanomma' (3 images)" in problem.message and "did you mean MEL?" in problem.message
    warnings = [p.message for p in m.problems if p.level == "warning"]
    assert len(warnings) == 2 and "outside the class folders" in warnings[0] and "no lesion ids" in warnings[1]


def test_one_id_in_two_class_folders_is_a_conflict_and_left_out(tmp_path):
    make_class_folders(tmp_path, {"MEL": 2, "NV": 1})
    write_image(tmp_path / "NV" / "MEL_1.png")
    m = load_dataset(data=tmp_path)
    assert m.image_ids == ["MEL_0", "NV_0"]
    assert "MEL_1 is listed again with a different label" in only(m.problems, "error").message


def test_nothing_usable_is_a_data_error_quoting_the_first_problem(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "cancer")])
    with pytest.raises(DataError, match="no usable images.*label 'cancer'"):
        load_dataset(data=tmp_path)
