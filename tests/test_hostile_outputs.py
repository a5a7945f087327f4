"""Every command against places it cannot write and files that are not what they
claim: full disks (real tmpfs mounts), read-only folders, writers killed with
SIGKILL, damaged feature files and run records. Each must end in one line naming
the place or file and saying what to do, never a traceback or a crash, and leave
nothing half-written behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import helpers

from helpers import REPO
from dataset_factory import four_classes_rows, make_ham, write_csv
from model_factory import ham_subset
from skinfeat.core.classes import CLASSES
from skinfeat.features.extract import extract_features
from skinfeat.features.store import read_features, write_features
from skinfeat.runs.records import write_record
from devtools.synthetic import write_synthetic

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args, env=None):
    return helpers.run(*args, env=env, catch_exceptions=True)


def assert_one_line_error(result, *words, code=1):
    """Exit ``code``, the last line ``Error: ...`` holding every one of ``words``, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.output
    for word in words:
        assert str(word) in last, (word, last)
    return last


@pytest.fixture(scope="module")
def wide_module(tmp_path_factory):
    """The pooling module's 9 features repeated (and scaled) to 1,276: 203 images make
    a part of 1.04 MB and a file 32 KB bigger, so that on a 2 MB tmpfs the part fits
    and the free space left (1.05 MB) is more than the features alone, less than the file."""
    import tensorflow as tf

    class Wide(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            pooled = tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2]),
                                tf.reduce_max(images, [1, 2])], axis=1)
            return tf.tile(pooled, [1, 142])[:, :1276] * tf.range(1.0, 1277.0)

    path = tmp_path_factory.mktemp("wide") / "wide"
    tf.saved_model.save(Wide(), str(path))
    return str(path)


@pytest.fixture
def features(tmp_path):
    """A small valid features file (6 images of each class, 8-D)."""
    path = tmp_path / "feats.h5"
    write_synthetic(path, counts=(6,) * 7, dim=8)
    return path


def leftovers(folder):
    return sorted(p.name for p in Path(folder).rglob(".*"))


# ----------------------------------------------------------------------------- 1. full disks

FULL_DISK = r"""
import json, subprocess, sys
from pathlib import Path
import h5py, numpy as np
from click.testing import CliRunner
from skinfeat.cli import cli
images, module = sys.argv[1:3]
for place in map(Path, sys.argv[3:]):
    args = ["extract", "--images", images, "--module", module, "--views", "0", "--out", str(place / "f.h5"),
            "--no-progress"]
    first = CliRunner().invoke(cli, args)
    parts = sorted((place / "f.h5.parts").glob("chunk-*.npz"))
    out = {"place": str(place), "exit": first.exit_code, "output": first.output, "parts": len(parts),
           "seconds": round(sum(float(np.load(p)["seconds"]) for p in parts), 3)}
    if first.exit_code:
        subprocess.run(["mount", "-o", "remount,size=8m", str(place)], check=True)
        again = CliRunner().invoke(cli, args)
        out.update(again=again.exit_code, again_output=again.output)
        with h5py.File(place / "f.h5") as f:
            out.update(rows=len(f["features"]), extract_seconds=float(f.attrs["extract_seconds"]))
    out["left"] = sorted(p.name for p in place.iterdir())
    print(json.dumps(out), flush=True)
"""


def test_a_full_disk_during_extraction_is_one_line_at_every_size_and_the_rerun_resumes(
        tmpfs, tmp_path, wide_module, ham10000):
    images = tmp_path / "images"
    images.mkdir()
    for path in ham_subset(ham10000, per_class=29).paths:  # 203 images
        (images / Path(path).name).symlink_to(path)
    places = [tmpfs(size) for size in ("300k", "1100k", "2m", "4m")]  # see wide_module
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(images), wide_module, *map(str, places)],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the extraction crashed (exit {done.returncode}): {done.stderr[-3000:]}"
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(places)
    for r in results:
        if r["exit"] == 0:
            assert r["left"] == ["f.h5"]
            continue
        assert r["exit"] == 1 and "Traceback" not in r["output"], r
        error = r["output"].strip().splitlines()[-1]
        assert error.startswith(f"Error: cannot write features to {r['place']}/f.h5: the disk is full"), error
        assert ("resumes from the 1 finished part" in error) == bool(r["parts"]), error
        assert r["again"] == 0 and r["rows"] == 203, r["again_output"]
        if r["parts"]:  # the kept part was used, not computed again
            assert r["extract_seconds"] == r["seconds"]
        assert r["left"] == ["f.h5"], "a rerun must leave only the finished file"
    outcomes = {(r["exit"], r["parts"] > 0, "needs at least" in r["output"]) for r in results}
    assert (1, False, False) in outcomes, "no size failed before the part was written"
    assert (1, True, True) in outcomes, "no size failed at the free-space check of the final write"
    assert (1, True, False) in outcomes, "no size filled up while HDF5 wrote the final file"
    assert (0, False, False) in outcomes, "no size was big enough"


WRITER_SWEEP = r"""
import errno, os, sys
import numpy as np
from skinfeat.features.store import write_features
place, n = sys.argv[1], 2000
ids = [f"ISIC_{i:07d}" for i in range(n)]
def write(path):
    write_features(path, np.ones((n, 64), np.float32), ids, np.zeros(n), ids, metadata={"sex": ["male"] * n})
write(f"{place}/whole.h5")
size = os.path.getsize(f"{place}/whole.h5")
os.remove(f"{place}/whole.h5")
failed = 0
for free in range(0, size + 16384, 4096):
    st = os.statvfs(place)
    with open(f"{place}/filler", "wb") as f:
        f.write(b"x" * (st.f_bavail * st.f_frsize - free))
    try:
        write(f"{place}/f.h5")
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        failed += 1
    for name in os.listdir(place):
        os.remove(f"{place}/{name}")
print(failed, size // 4096)
"""


def test_the_feature_file_writer_survives_a_full_disk_at_every_byte_it_writes(tmpfs):
    """HDF5 left half-closed by a failed write crashes Python later (h5py issue 914):
    fill the disk at every page of the file, HDF5's own close included."""
    place = tmpfs("2m")
    done = subprocess.run([sys.executable, "-c", WRITER_SWEEP, str(place)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"
    failed, pages = map(int, done.stdout.split())
    assert failed >= pages - 1


# ----------------------------------------------------------------------------- 2. killed writers

def start_and_kill(args, ready):
    """Start ``args``, SIGKILL it once ``ready()`` is true, and return when it is dead."""
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not ready():
        assert proc.poll() is None, f"it ended before it could be killed: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


PAUSED_EXTRACT = r"""
import sys, time
from pathlib import Path
import skinfeat.features.extract as extract
from model_factory import ham_subset
original = extract.write_feature_file
def paused(path, *, chunks, **kwargs):
    def slow():
        for i, chunk in enumerate(chunks):
            if i:  # the first chunk is in the file: stop in the middle of the final write
                Path(sys.argv[3]).touch()
                time.sleep(600)
            yield chunk
    return original(path, chunks=slow(), **kwargs)
extract.write_feature_file = paused
extract.extract_features(ham_subset(sys.argv[1], per_class=8), sys.argv[2], out=sys.argv[4], chunk_size=32,
                         progress=False)
"""


def test_a_kill_during_the_final_write_of_extract_is_swept_by_the_rerun(tmp_path, pool_module, ham10000):
    out, ready = tmp_path / "out" / "f.h5", tmp_path / "ready"
    start_and_kill([sys.executable, "-c", PAUSED_EXTRACT, str(ham10000), pool_module, str(ready), str(out)],
                   ready.exists)
    assert not out.exists(), "a killed write must not leave a finished-looking file"
    left = [name for name in leftovers(out.parent) if name.startswith(".f.h5.")]
    assert len(left) == 1 and left[0].endswith(".tmp")
    assert len(list((out.parent / "f.h5.parts").glob("chunk-*.npz"))) == 2
    result = extract_features(ham_subset(ham10000, per_class=8), pool_module, out=out, chunk_size=32,
                              progress=False)
    assert len(read_features(result.path)) == 56
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.h5"]


# ----------------------------------------------------------------------------- 3. output places

def predictions_and_labels(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in range(7)]
    labels = write_csv(tmp_path / "truth.csv", ["image", *CLASSES],
                       [[i, *("1.0" if c == k else "0.0" for c in range(7))] for k, i in enumerate(ids)])
    preds = write_csv(tmp_path / "preds.csv", ["image", *CLASSES],
                      [[i, *("0.4" if c == k else "0.1" for c in range(7))] for k, i in enumerate(ids)])
    return ["--predictions", preds, "--labels", labels]


# name -> (environment variable that names the place, or None for --out; arguments given the place).
# test_hostile_corpus.py covers split, extract, predict, report, viz, explain and fit --out/runs the same way;
# here: the places it does not, and that fit stops before its cross-validation.
PLACES = {
    "fit --out": (None, lambda p, c: ["fit", "--head", "logreg", "--features", c["features"], "--cv", 2,
                                      "--out", p / "model"]),
    "compare --best": (None, lambda p, c: ["compare", "--best", p / "best"]),
    "fit, runs": ("SKINFEAT_RUNS", lambda p, c: ["fit", "--head", "logreg", "--features", c["features"], "--cv", 2]),
    "compare --fit, runs": ("SKINFEAT_RUNS", lambda p, c: ["compare", "--fit", "--heads", "logreg", "--cv", 2]),
    "evaluate, runs": ("SKINFEAT_RUNS", lambda p, c: ["evaluate", *c["predictions"]]),
    "extract, features": ("SKINFEAT_FEATURES", lambda p, c: ["extract", "--data", c["ham"], "--module",
                                                             c["module"], "--no-progress"]),
}


@pytest.fixture
def inputs(tmp_path, features, pool_module, monkeypatch):
    monkeypatch.setenv("SKINFEAT_FEATURES", str(features.parent))
    return {"ham": make_ham(tmp_path / "ham", four_classes_rows(12)), "features": features,
            "predictions": predictions_and_labels(tmp_path), "module": pool_module}


@pytest.mark.parametrize("kind, reason", [("read-only", "read-only"), ("full", "the disk is full")])
@pytest.mark.parametrize("case", list(PLACES))
def test_an_output_place_that_cannot_be_written_fails_first_on_one_line(case, kind, reason, tmpfs, inputs):
    place = tmpfs("400k", kind)
    variable, args = PLACES[case]
    result = run(*args(place, inputs), env={variable: str(place)} if variable else None)
    assert_one_line_error(result, place, reason)
    assert "fold 1/" not in result.output, "the check must come before the work"


@pytest.mark.parametrize("args, code", [
    (lambda d, f: ["predict", "--model", "m", "x.jpg", "--out", d], 2),
    (lambda d, f: ["report", "--out", d], 2),
    (lambda d, f: ["data", "split", "--data", "x", "--out", d], 2),
    (lambda d, f: ["fit", "--head", "logreg", "--features", f, "--out", f], 2),
    (lambda d, f: ["report", "--out", f / "r.html"], 1),
    (lambda d, f: ["data", "split", "--data", "x", "--out", f / "sub" / "f.csv"], 1),
])
def test_a_folder_where_a_file_is_expected_and_the_other_way_round(args, code, tmp_path, features):
    assert_one_line_error(run(*args(tmp_path, features)), code=code)
    assert features.is_file() and read_features(features)


def test_a_runs_folder_that_is_a_file_stops_fit_before_the_folds(tmp_path, features):
    runs = tmp_path / "runs.json"
    runs.write_text("{}")
    result = run("fit", "--head", "logreg", "--features", features, "--cv", 2, env={"SKINFEAT_RUNS": str(runs)})
    assert_one_line_error(result, runs, "not a folder")


# ----------------------------------------------------------------------------- 4. damaged features

def _replace(f, name, data):
    del f[name]
    f[name] = data


DAMAGES = {
    "no /label": (lambda f: f.__delitem__("label"), "no /label dataset"),
    "a label of 9": (lambda f: f["label"].__setitem__(0, 9), "/label holds 9"),
    "a label of -5": (lambda f: f["label"].__setitem__(0, -5), "/label holds -5"),
    "image_id shorter": (lambda f: _replace(f, "image_id", f["image_id"][:-3]), "/image_id has shape (39,)"),
    "NaN features": (lambda f: f["features"].__setitem__((0, 0), np.nan), "NaN or inf"),
    "inf features": (lambda f: f["features"].__setitem__((1, 2), np.inf), "NaN or inf"),
    "integer features": (lambda f: _replace(f, "features", f["features"][:].astype(np.int32)), "holds int32"),
    "numeric image_id": (lambda f: _replace(f, "image_id", np.arange(42)), "/image_id holds int64"),
    "float labels": (lambda f: _replace(f, "label", f["label"][:].astype(np.float32)), "/label holds float32"),
    "a single class": (lambda f: f["label"].__setitem__(slice(None), 1), "at least two classes"),
    "zero rows": (None, "holds no images"),
    "all unlabelled": (lambda f: f["label"].__setitem__(slice(None), -1), "has no labelled images"),
    "truncated": ("truncate", "not a readable HDF5 file"),
    "garbage": ("garbage", "not a readable HDF5 file"),
    "foreign HDF5": ("foreign", "not a skinfeat features file"),
}


def damage(path, how):
    change, _ = DAMAGES[how]
    if change is None:
        write_features(path, np.zeros((0, 8), np.float32), [], [], [], attrs={"key": "k"})
    elif change == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif change == "garbage":
        path.write_bytes(os.urandom(5000))
    elif change == "foreign":
        path.unlink()
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    else:
        with h5py.File(path, "r+") as f:
            change(f)
    return path


@pytest.mark.parametrize("how", list(DAMAGES))
def test_fit_on_a_damaged_features_file_says_what_is_wrong_on_one_line(how, features):
    damage(features, how)
    result = run("fit", "--head", "logreg", "--features", features, "--cv", 2)
    assert_one_line_error(result, features, DAMAGES[how][1])


@pytest.mark.parametrize("how", ["a label of -5", "integer features"])  # the corpus has the others
def test_viz_on_a_damaged_features_file_says_what_is_wrong_on_one_line(how, features, tmp_path):
    damage(features, how)
    result = run("viz", "--features", features, "--method", "pca", "--out", tmp_path / "m.png")
    assert_one_line_error(result, features, DAMAGES[how][1], "skinfeat extract")
    assert not (tmp_path / "m.png").exists()


def test_extract_rebuilds_a_damaged_cached_file_instead_of_reusing_it(tmp_path, pool_module, ham10000):
    subset = ham_subset(ham10000, per_class=2)
    path = extract_features(subset, pool_module, out=tmp_path / "f.h5", progress=False).path
    damage(path, "no /label")
    again = extract_features(subset, pool_module, out=path, progress=False)
    assert not again.reused and len(read_features(path)) == 14


# ----------------------------------------------------------------------------- 5. compare --fit goes on

def test_compare_fit_reports_a_bad_file_and_fits_the_others(features, monkeypatch):
    folder = features.parent
    monkeypatch.setenv("SKINFEAT_FEATURES", str(folder))
    good = folder / "good.h5"
    features.rename(good)
    one_class = folder / "one.h5"
    write_synthetic(one_class, counts=(6,) * 7, dim=8)
    damage(one_class, "a single class")
    (folder / "junk.h5").write_bytes(b"not hdf5")
    result = run("compare", "--fit", "--heads", "logreg", "--cv", 2)
    assert_one_line_error(result, "2 of the fits failed")
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and str(one_class) in failed[0] + failed[1] and "junk.h5" in failed[0] + failed[1]
    assert "synthetic" in result.stdout and "logreg" in result.stdout  # the good file's run is on the board


# ----------------------------------------------------------------------------- 6. broken run records

def good_record(run_id="good"):
    return {"run_id": run_id, "created": "2026-01-01T00:00:00", "head": "logreg", "settings": "s",
            "backbone": {"module": "lite0", "feature_dim": 8}, "features": {"key": "k"}, "folds": {"sha256": "f"},
            "metrics": {"bmca": {"mean": 0.6, "std": 0.01}}}


BROKEN = {
    "no-features.json": {k: v for k, v in good_record("a").items() if k != "features"},
    "string-metrics.json": {**good_record("b"), "metrics": "high"},
    "no-bmca.json": {**good_record("c"), "metrics": {"accuracy": {"mean": 0.8}}},
    "list-folds.json": {**good_record("d"), "folds": [1, 2]},
}


@pytest.mark.parametrize("command", [["compare"], ["report", "--map", "none"]])
def test_a_broken_run_record_is_skipped_with_one_warning_and_the_rest_shown(command, tmp_path):
    runs = Path(os.environ["SKINFEAT_RUNS"])
    write_record(good_record())
    for name, record in BROKEN.items():
        (runs / name).write_text(json.dumps({"schema": "skinfeat-run", **record}))
    (runs / "invalid.json").write_text('{"schema": "skinfeat-run", "run_id": ')
    (runs / "list.json").write_text("[1, 2]")
    (runs / "evaluation.json").write_text(json.dumps({"schema": "skinfeat-evaluation", "n": 3}))
    result = run(*command, *(["--out", tmp_path / "r.html"] if command[0] == "report" else []))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped run record")]
    assert sorted(Path(line.split()[4].rstrip(":")).name for line in warnings) == sorted(
        [*BROKEN, "invalid.json", "list.json", "evaluation.json"])
    assert "lite0" in (result.stdout if command == ["compare"] else (tmp_path / "r.html").read_text())
