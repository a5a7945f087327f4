"""Hostile dataset input (issue "harden every command against bad input"): bad
folds files, ambiguous or broken CSVs, odd dataset folders (link loops,
unreadable folders, FIFOs, names that are not UTF-8) and images of any format
or size. Each gives a one-line error or a warning counted in the summary, never
a traceback nor a hang, and ``data check``, ``extract`` and ``predict`` agree on
which images are readable (``skinfeat.imaging.images``)."""

import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from dataset_factory import HAM_HEADER, four_classes_rows, make_class_folders, make_ham, write_csv, write_image
from helpers import (
    REPO,  # noqa: E402
    error_line,
    run,
)
from model_factory import pool_model
from PIL import Image

from devtools.synthetic import write_synthetic
from skinfeat.core.errors import DataError
from skinfeat.data.layouts import load_dataset
from skinfeat.data.split import make_folds, read_folds, write_folds
from skinfeat.features.store import read_features
from skinfeat.imaging.images import MAX_PIXELS, decode

# PIL warns about decompression bombs before skinfeat refuses them; the CLI silences it once,
# but pytest resets warning filters for every test.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture(scope="module")
def model(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000)["model"]


def extract(data, module, out):
    return run("extract", "--data", data, "--module", module, "--views", "0", "--out", out, "--no-progress")


@contextmanager
def fifo(path):
    """A FIFO at ``path``; if anything opens it for reading, a watchdog writes EOF
    after 20 s, so a regression fails the test instead of hanging it."""
    os.mkfifo(path)
    done = threading.Event()

    def unblock():
        while not done.wait(20):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # nobody is reading

    threading.Thread(target=unblock, daemon=True).start()
    try:
        yield Path(path)
    finally:
        done.set()


# ----------------------------------------------------------------------------- folds files

@pytest.fixture
def features(tmp_path):
    fs = write_synthetic(tmp_path / "syn.h5", counts=(30, 60, 20, 15, 20, 10, 10), dim=8, separation=2.0, seed=1)
    write_folds(tmp_path / "folds.csv", fs, make_folds(fs, k=3))
    return tmp_path / "syn.h5", tmp_path / "folds.csv"


def _edit_folds(path, lines, value):
    text = path.read_text().splitlines()
    for n in lines:
        text[n - 1] = text[n - 1].rsplit(",", 1)[0] + f",{value}"
    path.write_text("\n".join(text) + "\n")


@pytest.mark.parametrize("value, shown", [
    ("-7", "fold -7 on lines 3, 10"),
    ("7", "fold 7 on lines 3, 10"),  # beyond fold 3, which does not exist
    ("1.5", "fold '1.5' (not an integer) on lines 3, 10"),
    ("one", "fold 'one' (not an integer) on lines 3, 10"),
])
def test_folds_outside_0_to_k_minus_1_are_an_error_naming_file_values_and_lines(features, value, shown):
    path, folds = features
    _edit_folds(folds, [3, 10], value)
    line = error_line(run("fit", "--head", "logreg", "--features", path, "--folds", folds, "-q"))
    assert line.startswith(f"Error: {folds}: {shown}; expected 0..2 (its 3 folds") and "or -1 (held out)" in line
    assert "rewrite the file with 'skinfeat data split'" in line


def test_held_out_rows_and_rows_of_other_images_are_fine(features):
    path, folds = features
    _edit_folds(folds, [3, 10], "-1")
    with folds.open("a") as f:
        f.write("NOT_IN_FEATURES,L,NV,0\n")  # folds of a whole dataset, features of part of it
    result = run("fit", "--head", "logreg", "--features", path, "--folds", folds, "-q")
    assert result.exit_code == 0, result.output
    assert read_folds(folds)["NOT_IN_FEATURES"] == 0


def test_folds_file_lacking_images_of_the_features_or_listing_one_twice(features):
    path, folds = features
    lines = folds.read_text().splitlines()
    folds.write_text("\n".join(lines[:-1]) + "\n")
    assert "has no fold for 1 of the" in error_line(run("fit", "--head", "logreg", "--features", path,
                                                         "--folds", folds, "-q"))
    folds.write_text("\n".join(lines + [lines[1]]) + "\n")
    line = error_line(run("fit", "--head", "logreg", "--features", path, "--folds", folds, "-q"))
    assert f"{folds}:{len(lines) + 1}: image" in line and "is listed twice (first on line 2)" in line


# ----------------------------------------------------------------------------- CSV files

@pytest.mark.parametrize("header, message", [
    (["lesion_id", "image_id", "dx", "dx"], "columns 3 ('dx') and 4 ('dx') have one name"),
    (["image_id", "lesion_id", "image_id", "dx"], "columns 1 ('image_id') and 3 ('image_id') have one name"),
    (["lesion_id", "image_id", "dx", " DX "], "columns 3 ('dx') and 4 ('DX') have one name"),
])
def test_duplicate_or_ambiguous_columns_are_an_error(tmp_path, header, message):
    write_csv(tmp_path / "HAM10000_metadata.csv", header, [["HAM_1", "ISIC_1", "nv", "mel"]])
    write_image(tmp_path / "images" / "ISIC_1.jpg")
    line = error_line(run("data", "check", "--data", tmp_path))
    assert line.startswith(f"Error: {tmp_path / 'HAM10000_metadata.csv'}:1: {message}")
    assert "ambiguous" in line and "rename or delete one of them" in line


def test_a_field_over_the_csv_limit_is_an_error_naming_file_and_line(tmp_path):
    make_ham(tmp_path, four_classes_rows(4))
    csv_path = tmp_path / "HAM10000_metadata.csv"
    with csv_path.open("a") as f:
        f.write('HAM_9,ISIC_9,nv,histo,"' + "x" * 200_000 + '",female,back\n')
    line = error_line(run("data", "check", "--data", tmp_path))
    assert line.startswith(f"Error: {csv_path}:") and "field larger than field limit" in line
    assert "a quote" in line


@pytest.mark.parametrize("content, message", [
    (b"", "empty file or empty header line"),
    (np.random.default_rng(0).bytes(4000), "not UTF-8 text"),
    ("lesion_id,image_id,dx\nHAM_1,ISIC_1,nv\n".encode("utf-16"), "UTF-16 text"),
    ("lesion_id,image_id,dx\n".encode("utf-16-le"), "binary data or UTF-16 text"),
    (b"\x00\x01\x02garbage\x00", "binary data or UTF-16 text"),
])
def test_a_labels_file_that_is_not_a_csv_says_so(tmp_path, content, message):
    write_image(tmp_path / "images" / "ISIC_1.jpg")
    (tmp_path / "labels.csv").write_bytes(content)
    line = error_line(run("data", "check", "--images", tmp_path / "images", "--labels", tmp_path / "labels.csv"))
    assert line.startswith(f"Error: {tmp_path / 'labels.csv'}") and message in line


def test_header_only_csv_next_to_images_says_the_labels_have_no_rows(tmp_path):
    make_ham(tmp_path, four_classes_rows(4))
    write_csv(tmp_path / "HAM10000_metadata.csv", HAM_HEADER, [])
    line = error_line(run("data", "check", "--data", tmp_path))
    assert line.startswith(f"Error: {tmp_path / 'HAM10000_metadata.csv'}: the labels file has a header")
    assert "but no rows" in line and "no images found" not in line


def test_data_pointing_at_an_image_or_a_folds_file_says_what_data_expects(tmp_path):
    image = write_image(tmp_path / "ISIC_1.jpg")
    line = error_line(run("data", "check", "--data", image))
    assert line.startswith(f"Error: {image} is an image, not a labels CSV; expected HAM10000 metadata")
    assert "\\x" not in line and "\ufffd" not in line and len(line) < 400
    make_ham(tmp_path / "ham", four_classes_rows(4))
    assert run("data", "split", "--data", tmp_path / "ham", "--folds", "2", "--out", tmp_path / "f.csv").exit_code == 0
    line = error_line(run("data", "check", "--data", tmp_path / "f.csv"))
    assert "is a folds file (written by 'skinfeat data split'), not labels" in line and "--folds" in line


def test_a_huge_number_of_columns_gives_a_short_message(tmp_path):
    header = [f"col{i}" for i in range(5000)]
    write_csv(tmp_path / "labels.csv", header, [[str(i) for i in range(5000)]])
    write_image(tmp_path / "images" / "x.jpg")
    line = error_line(run("data", "check", "--images", tmp_path / "images", "--labels", tmp_path / "labels.csv"))
    assert "col0, col1" in line and "and 4,988 more" in line and len(line) < 600


def test_a_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    line = error_line(run("data", "check", "--data", tmp_path))
    assert line.startswith(f"Error: no images found in {tmp_path} (looked recursively for .bmp, .gif")


# ----------------------------------------------------------------------------- dataset folders

def _check(data):
    """``data check`` output lines and exit code."""
    result = run("data", "check", "--data", data)
    assert "Traceback" not in result.output
    return result.exit_code, result.output.splitlines()  # problems on stderr, the summary and count on stdout


def test_a_symbolic_link_loop_is_searched_once_with_a_warning(tmp_path):
    make_ham(tmp_path, four_classes_rows(4))
    os.symlink("..", tmp_path / "images" / "loop")
    code, out = _check(tmp_path)
    assert code == 0 and out[-1] == "0 errors, 1 warnings"
    assert f"warning: {tmp_path / 'images' / 'loop'}: loop leads back to a folder already searched (a symbolic " \
           "link loop, or a second link to it); not searched again" in out
    assert f"{len(four_classes_rows(4))} images" in "\n".join(out)


def test_a_fifo_named_like_an_image_is_never_opened(tmp_path, pool_module, model):
    rows = four_classes_rows(4)
    make_ham(tmp_path, rows)
    listed = tmp_path / "images" / f"{rows[0][1]}.jpg"
    listed.unlink()
    with fifo(listed), fifo(tmp_path / "images" / "x.jpg") as pipe, fifo(tmp_path / "more.csv") as csv_pipe:
        code, out = _check(tmp_path)  # more.csv is not read either
        assert code == 1 and out[-1] == "1 errors, 2 warnings: fix the errors above"
        assert f"warning: {pipe}: x.jpg is a named pipe (FIFO), not a regular file; expected a file: " \
               "give the file itself" in out
        assert any(f"{rows[0][1]} has no file" in line for line in out)  # its only "file" is a FIFO
        result = extract(tmp_path, pool_module, tmp_path / "f.h5")
        assert result.exit_code == 0 and "3 problems in the data" in result.stderr, result.output
        assert len(read_features(tmp_path / "f.h5")) == len(rows) - 1
        result = run("predict", "--model", model, tmp_path / "images", pipe)
        assert result.exit_code == 0, result.output
        assert result.stderr.count("is a named pipe (FIFO), not a regular file") == 3  # two in the folder, once given
        assert len(result.stdout.splitlines()) == 1 + len(rows) - 1  # the header, then one line per image
        line = error_line(run("data", "check", "--data", csv_pipe))
        assert line == (f"Error: --data {csv_pipe}: not a regular file or folder (a FIFO or a device?); "
                        "expected a dataset folder or a labels CSV")
        line = error_line(run("data", "check", "--images", tmp_path / "images", "--labels", csv_pipe))
        assert line == f"Error: --labels {csv_pipe}: not a regular file (a FIFO or a device?); expected a CSV of labels"


def test_a_file_name_that_is_not_utf8_is_left_out_with_a_warning_everywhere(tmp_path, pool_module, model):
    rows = four_classes_rows(4)
    make_ham(tmp_path, rows)
    latin = Path(os.fsdecode(bytes(tmp_path / "images") + b"/caf\xe9.jpg"))
    write_image(latin)
    os.mkdir(os.fsdecode(bytes(tmp_path / "images") + b"/d\xe9j\xe0"))
    code, out = _check(tmp_path)
    assert code == 0 and out[-1] == "0 errors, 2 warnings"
    assert f"warning: {tmp_path / 'images'}/caf\\xe9.jpg: caf\\xe9.jpg has a name that is not UTF-8 text; " \
           "left out: rename it (letters, digits, '_' and '-' are safe)" in out
    result = extract(tmp_path, pool_module, tmp_path / "f.h5")
    assert result.exit_code == 0 and "2 problems in the data" in result.stderr, result.output
    assert "caf\\xe9.jpg has a name that is not UTF-8 text; left out" in result.stderr  # named, escaped
    assert len(read_features(tmp_path / "f.h5")) == len(rows)
    result = run("predict", "--model", model, tmp_path / "images", latin, "--format", "csv",
                 "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("caf\\xe9.jpg has a name that is not UTF-8") == 2  # in the folder, and given
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + len(rows)


def test_an_unreadable_sub_folder_is_a_warning_not_a_traceback(tmp_path):
    """As root, chmod alone does not stop reading: the command runs without the
    capabilities that bypass file permissions (a subprocess, via setpriv)."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed: cannot drop the permission-bypass capabilities")
    rows = four_classes_rows(4)
    make_ham(tmp_path, rows, folders=("images", "locked"))
    os.chmod(tmp_path / "locked", 0)
    try:
        result = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "skinfeat",
             "data", "check", "--data", str(tmp_path)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert "Traceback" not in result.stderr, result.stderr
    out = result.stderr.splitlines()
    assert f"warning: {tmp_path / 'locked'}: locked is a folder that cannot be read (Permission denied); its " \
           "images are left out: make it readable (chmod a+rx)" in out
    assert result.returncode == 1 and sum("has no file" in line for line in out) == len(rows) // 2


# ----------------------------------------------------------------------------- one readable image

def _png_header(width, height):
    """A PNG that claims ``width`` x ``height`` pixels but holds almost none (header checks only)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


READABLE = ("a.tif", "b.gif", "c.webp", "d.bmp", "e.png", "f.jpg", "png_named.jpg", "g.tiff")
REFUSED = {
    "wide.png": ((3000, 1), "is 3000 x 1 pixels, too small; expected at least 8 pixels on each side"),
    "dot.png": ((1, 1), "is 1 x 1 pixels, too small"),
    "tiny.jpg": ((7, 9), "is 7 x 9 pixels, too small"),
    "strip.png": ((300, 10), "is 300 x 10 pixels, too elongated; expected sides at most 20 times as long"),
    "bomb.png": (None, f"is 10000 x 10000 pixels, more than the {MAX_PIXELS:,} pixels skinfeat decodes"),
    "bigger_bomb.png": (None, f"has more than the {MAX_PIXELS:,} pixels skinfeat decodes (a decompression bomb?)"),
    "empty.jpg": (None, "is a zero-byte file"),
    "cut.jpg": (None, "is a damaged image (Premature end of JPEG file)"),
    "text.png": (None, "is not an image (not JPEG, PNG, BMP, GIF, TIFF or WebP)"),
}


@pytest.fixture
def zoo(tmp_path):
    """A folder of unlabelled images: READABLE ones of every format, REFUSED ones of every kind."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in READABLE:  # each its own photo: byte-identical files would be errors too
        photo = Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8))
        photo.save(folder / name, format="PNG" if name == "png_named.jpg" else None)
    for name, (size, _) in REFUSED.items():
        if size:
            Image.new("RGB", size, (90, 20, 30)).save(folder / name)
    (folder / "bomb.png").write_bytes(_png_header(10_000, 10_000))
    (folder / "bigger_bomb.png").write_bytes(_png_header(15_000, 15_000))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.jpg").write_bytes((folder / "f.jpg").read_bytes()[:-2])
    (folder / "text.png").write_text("<html>Not Found</html>")
    return folder


def test_check_extract_and_predict_agree_on_every_image(zoo, pool_module, model, tmp_path):
    code, out = _check(zoo)
    assert code == 1 and out[-1] == f"{len(REFUSED)} errors, 0 warnings: fix the errors above"
    for name, (_, reason) in REFUSED.items():
        assert any(line.startswith(f"error: {zoo / name}: image {Path(name).stem} {reason}") for line in out), name

    result = extract(zoo, pool_module, tmp_path / "f.h5")
    assert result.exit_code == 0, result.output
    assert sorted(read_features(tmp_path / "f.h5").image_ids) == sorted(Path(n).stem for n in READABLE)
    for name, (_, reason) in REFUSED.items():
        assert f"  {Path(name).stem}: {zoo / name} {reason}" in result.stderr, name

    result = run("predict", "--model", model, zoo)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert sorted(line.split()[0] for line in result.stdout.splitlines()[1:]) == sorted(Path(n).stem for n in READABLE)
    for name, (_, reason) in REFUSED.items():
        assert f"skipped {zoo / name}: {zoo / name} {reason}" in result.stderr, name


def test_a_decompression_bomb_alone_is_a_one_line_error_in_predict(zoo, model):
    line = error_line(run("predict", "--model", model, zoo / "bigger_bomb.png"))
    assert line == (f"Error: {zoo / 'bigger_bomb.png'} has more than the {MAX_PIXELS:,} pixels skinfeat decodes "
                    "(a decompression bomb?); expected a photo: downscale it")


def test_extraction_decodes_as_predict_does(zoo):
    """extract's pipeline decodes through skinfeat.imaging.images.decode: the same pixels, TIFF included."""
    from skinfeat.features.pipeline import image_pipeline
    from skinfeat.imaging.augment import resize_tf

    names = ["a.tif", "f.jpg", "b.gif"]
    (_, images, _), = list(image_pipeline([str(zoo / n) for n in names], [(0, 3)], (16, 16), "crop", 0, 0))
    for name, got in zip(names, images.numpy()):
        np.testing.assert_array_equal(got, resize_tf(decode(zoo / name), (16, 16), "crop").numpy())


# ----------------------------------------------------------------------------- across commands

def test_hostile_rows_and_files_are_counted_not_fatal_in_check_split_and_extract(tmp_path, pool_module):
    rows = four_classes_rows(8)
    make_ham(tmp_path, rows + [("HAM_X", "ISIC_NOFILE", "nv"), ("HAM_Y", "ISIC_ODD", "xyz")])
    images = tmp_path / "images"
    (images / "ISIC_NOFILE.jpg").unlink()
    (images / f"{rows[0][1]}.jpg").write_bytes(b"")  # zero bytes
    write_image(images / f"{rows[1][1]}.jpg", size=(64, 48))
    (images / f"{rows[1][1]}.jpg").write_bytes((images / f"{rows[1][1]}.jpg").read_bytes()[:300])  # truncated
    Image.new("RGB", (20, 20), (1, 2, 3)).save(images / f"{rows[2][1]}.jpg", format="PNG")  # a PNG named .jpg
    code, out = _check(tmp_path)
    assert code == 1 and out[-1] == "4 errors, 1 warnings: fix the errors above", out
    assert any("ISIC_NOFILE has no file" in line for line in out) and any("label 'xyz'" in line for line in out)
    result = run("data", "split", "--data", tmp_path, "--folds", "2", "--out", tmp_path / "folds.csv")
    assert result.exit_code == 0 and "3 problems in the data (2 errors" in result.stderr, result.output
    assert len(read_folds(tmp_path / "folds.csv")) == len(rows)
    result = extract(tmp_path, pool_module, tmp_path / "f.h5")
    assert result.exit_code == 0 and "skipped 2 unreadable images" in result.stderr, result.output
    assert len(read_features(tmp_path / "f.h5")) == len(rows) - 2


def test_load_dataset_raises_data_errors_only(tmp_path):
    """The library, not just the CLI: every case above is a DataError."""
    (tmp_path / "bin.csv").write_bytes(b"\xff\xd8\xff\xe0 not text")
    write_image(tmp_path / "images" / "x.jpg")
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset(images=tmp_path / "images", labels=tmp_path / "bin.csv")
    with pytest.raises(DataError, match="is a named pipe"):
        with fifo(tmp_path / "labels.csv") as pipe:
            read_folds(pipe)
    make_class_folders(tmp_path / "classes", {"MEL": 1, "NV": 1})
    os.symlink("loop", tmp_path / "classes" / "loop")
    m = load_dataset(data=tmp_path / "classes")
    assert len(m) == 2 and "cannot be followed (Too many levels of symbolic links)" in m.problems[0].message
