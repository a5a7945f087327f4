"""``skinfeat data check`` and ``skinfeat data split`` as a user runs them."""

import click
import pytest
from click.testing import CliRunner

from helpers import run
from dataset_factory import four_classes_rows, make_class_folders, make_ham
from skinfeat.commands.options import dataset_options, load_manifest
from skinfeat.data.split import read_folds


@pytest.mark.slow
def test_check_on_the_real_data(ham10000):
    result = run("data", "check", "--data", ham10000)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "10,015 images, 7,470 lesions" in lines
    for line in ["MEL      1,113   11.1%", "NV       6,705   66.9%", "BCC        514    5.1%",
                 "AKIEC      327    3.3%", "BKL      1,099   11.0%", "DF         115    1.1%",
                 "VASC       142    1.4%"]:
        assert line in lines
    assert "metadata coverage: dx_type 100.0%, age 99.4%, sex 99.4%, localization 97.7%" in lines
    assert lines[-1] == "0 errors, 2 warnings"  # two photos stored twice within their lesion


def test_check_clean_data_exits_0(tmp_path):
    make_ham(tmp_path, four_classes_rows(4))
    result = run("data", "check", "--data", tmp_path)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "layout: ham10000"
    assert result.stdout.splitlines()[-1] == "0 errors, 0 warnings"


def test_check_lists_errors_and_exits_1(tmp_path):
    make_ham(tmp_path, [("HAM_1", "ISIC_1", "nv"), ("HAM_2", "ISIC_2", "mole"), ("HAM_3", "ISIC_3", "bcc")])
    (tmp_path / "images" / "ISIC_3.jpg").write_bytes(b"")
    result = run("data", "check", "--data", tmp_path)
    assert result.exit_code == 1
    out = result.stderr.splitlines()  # the problems; the summary and the count on stdout
    assert f"error: {tmp_path}/HAM10000_metadata.csv:3: label 'mole' of ISIC_2 is not one of the seven classes " \
           "MEL, NV, BCC, AKIEC, BKL, DF, VASC; row skipped: fix the label" in out
    assert any(line.startswith("error: ") and "image ISIC_3 is a zero-byte file" in line for line in out)
    assert any(line.startswith("warning: ") and "ISIC_2 has no row" in line for line in out)
    assert result.stdout.splitlines()[-1] == "2 errors, 1 warnings: fix the errors above"
    assert result.stdout.splitlines()[0] == "layout: ham10000" and "error:" not in result.stdout


def test_check_warnings_only_exit_0_and_no_pixels_skips_decoding(tmp_path):
    make_ham(tmp_path, four_classes_rows(4), delimiter=";")
    (tmp_path / "images" / "ISIC_0000000.jpg").write_bytes(b"")
    assert run("data", "check", "--data", tmp_path).exit_code == 1
    result = run("data", "check", "--data", tmp_path, "--no-pixels")
    assert result.exit_code == 0
    assert "separated by ';'" in result.stderr and result.stdout.splitlines()[-1] == "0 errors, 1 warnings"


def test_check_of_unlabelled_images(tmp_path):
    make_class_folders(tmp_path, {"batch": 3})
    result = run("data", "check", "--images", tmp_path / "batch")
    assert result.exit_code == 0
    assert "layout: unlabelled" in result.stdout and "unlabelled: 3" in result.stdout
    assert "class   images" not in result.stdout


def test_unusable_labels_file_is_a_one_line_error(tmp_path):
    make_ham(tmp_path, four_classes_rows(2), header=["lesion_id", "image", "dx", "a", "b", "c", "d"])
    result = run("data", "check", "--data", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "rename it to 'image_id'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_option_clash_is_a_usage_error(tmp_path):
    result = run("data", "check", "--data", tmp_path, "--images", tmp_path)
    assert result.exit_code == 2 and "not both" in result.stderr


def test_split_writes_the_folds_file(tmp_path):
    make_ham(tmp_path / "d", four_classes_rows(40))
    out = tmp_path / "folds.csv"
    result = run("data", "split", "--data", tmp_path / "d", "--folds", 4, "--seed", 1, "--holdout", 0.25,
                 "--out", out)
    assert result.exit_code == 0, result.output
    folds = read_folds(out)
    assert len(folds) == len(four_classes_rows(40)) and set(folds.values()) == {-1, 0, 1, 2, 3}
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote {out}: {len(folds)} images, 40 lesions"
    assert [line.split(":")[0].strip() for line in lines[1:6]] == ["fold 0", "fold 1", "fold 2", "fold 3",
                                                                   "held out"]
    assert lines[-1].startswith("largest class-share gap to the whole")
    again = tmp_path / "again.csv"
    run("data", "split", "--data", tmp_path / "d", "--folds", 4, "--seed", 1, "--holdout", 0.25, "--out", again)
    assert again.read_text() == out.read_text()


def test_split_notes_data_problems_on_stderr(tmp_path):
    make_ham(tmp_path, four_classes_rows(8))
    (tmp_path / "images" / "ISIC_0000001.jpg").unlink()
    result = run("data", "split", "--data", tmp_path, "--folds", 2, "--out", tmp_path / "f.csv")
    assert result.exit_code == 0
    assert "1 problems in the data (1 errors" in result.stderr and "skinfeat data check" in result.stderr
    assert "ISIC_0000001" not in read_folds(tmp_path / "f.csv")


@pytest.mark.parametrize("args, message", [(["--folds", "1"], "--folds 1"), (["--holdout", "1"], "--holdout"),
                                           ([], "Missing option '--out'")])
def test_split_bad_options_exit_2(tmp_path, args, message):
    make_ham(tmp_path, four_classes_rows(8))
    out = ["--out", tmp_path / "f.csv"] if "--out" not in message else []
    result = run("data", "split", "--data", tmp_path, *args, *out)
    assert result.exit_code == 2 and message in result.stderr


def test_dataset_options_give_other_commands_the_same_manifest(tmp_path):
    make_class_folders(tmp_path, {"MEL": 1, "VASC": 2})

    @click.command()
    @dataset_options
    def count(data, images, labels):
        click.echo(len(load_manifest(data, images, labels)))

    result = CliRunner().invoke(count, ["--images", str(tmp_path)], catch_exceptions=False)
    assert result.stdout == "3\n"
    assert all(opt in CliRunner().invoke(count, ["--help"]).stdout for opt in ("--data", "--images", "--labels"))


@pytest.mark.parametrize("command, phrases", [
    (["data"], ["HAM10000", "ISIC 2018", "class folders", "unlabelled", "check", "split"]),
    (["data", "check"], ["Errors (exit 1", "Warnings (usable as is)", "truncated", "--pixels / --no-pixels"]),
    (["data", "split"], ["lesion", "--holdout", "Fold -1", "--folds", "--seed", "--out"]),
])
def test_help_explains_itself(command, phrases):
    result = run(*command, "--help")
    assert result.exit_code == 0
    for phrase in phrases:
        assert phrase in result.stdout
