"""Every command against a corpus of bad inputs, as a clumsy or a hostile user
would give them: damaged datasets, feature files, folds files, model folders,
parameters, and output places that are read-only or full.

Each case must end with no traceback, a one-line ``Error:`` message that names
the input, the right exit code (1: bad data, 2: bad usage) and nothing written
or left behind. The per-area tests (test_hostile_data/model/outputs.py) cover
the details; this file checks the same promises across every command.
"""

import csv
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from model_factory import ham_subset, pool_model
from skinfeat.core.classes import CLASSES
from skinfeat.cli import cli

GOOD_DATA = "good"


def _mount(path, options):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


def _fill(path):
    """Fill a tmpfs so that any further write fails with ENOSPC."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, skinfeat_home, ham10000):
    """The bad inputs, each beside good ones, built once for the module."""
    root = tmp_path_factory.mktemp("corpus")
    info = pool_model(skinfeat_home, ham10000)
    c = {"root": root, "module": info["module"]}

    # A good dataset: the model's own 28 HAM10000 images (linked, not copied), HAM layout.
    manifest = ham_subset(ham10000)
    good = root / GOOD_DATA
    (good / "images").mkdir(parents=True)
    for path in manifest.paths:
        os.symlink(path, good / "images" / Path(path).name)
    with open(ham10000 / "HAM10000_metadata.csv", newline="") as f:
        table = list(csv.reader(f))
    keep = set(manifest.image_ids)
    columns = table[0]
    meta = [row for row in table[1:] if row[columns.index("image_id")] in keep]
    header = ",".join(columns)
    (good / "HAM10000_metadata.csv").write_text(header + "\n" + "".join(",".join(r) + "\n" for r in meta))
    c["good"] = good
    c["image"] = good / "images" / Path(manifest.paths[0]).name

    def dataset(name, csv_text=None, csv_bytes=None, images=True):
        d = root / name
        (d / "images").mkdir(parents=True)
        if images:
            for path in manifest.paths[:6]:
                os.symlink(path, d / "images" / Path(path).name)
        if csv_text is not None or csv_bytes is not None:
            data = csv_bytes if csv_bytes is not None else csv_text.encode()
            (d / "HAM10000_metadata.csv").write_bytes(data)
        c[name] = d

    rows = "".join(",".join(r) + "\n" for r in meta[:6])
    dataset("empty_dir", images=False)
    dataset("empty_csv", csv_bytes=b"")
    dataset("header_only", header + "\n")
    dataset("garbage_csv", csv_bytes=bytes(range(256)) * 8)
    dataset("two_dx", header + ",dx\n" + "".join(line + ",nv\n" for line in rows.splitlines()))
    dataset("huge_field", header + "\n" + rows + "x" * 200_000 + "," * (len(columns) - 1) + "\n")
    dataset("unknown_dx", header + "\n" + rows.replace(",mel,", ",xyz,").replace(",nv,", ",xyz,"))
    c["jpg_as_data"] = c["image"]
    c["missing"] = root / "does-not-exist"

    # Feature files: copies of the model's good one, each damaged one way.
    feats = root / "features"
    feats.mkdir()
    c["features"] = feats / "good.h5"
    shutil.copy(info["features"], c["features"])

    def damaged_features(name, change):
        path = feats / f"{name}.h5"
        shutil.copy(c["features"], path)
        with h5py.File(path, "r+") as f:
            change(f)
        c[name] = path

    def replace(f, name, values):
        attrs = dict(f[name].attrs)
        del f[name]
        f[name] = values
        f[name].attrs.update(attrs)

    def set_labels(value):
        return lambda f: replace(f, "label", np.full(len(f["label"]), value, np.int8))

    def zero_rows(f):
        for name in ("features", "views", "image_id", "label", "lesion_id"):
            if name in f:
                replace(f, name, f[name][:0])

    damaged_features("no_label", lambda f: f.__delitem__("label"))
    damaged_features("label_9", lambda f: f["label"].__setitem__(0, 9))
    damaged_features("short_ids", lambda f: replace(f, "image_id", f["image_id"][:-3]))
    damaged_features("one_class", set_labels(1))
    damaged_features("unlabelled", set_labels(-1))
    damaged_features("zero_rows", zero_rows)
    damaged_features("nan_features", lambda f: f["features"].__setitem__((0, 0), np.nan))
    (feats / "garbage.h5").write_bytes(os.urandom(5000))
    c["garbage_h5"] = feats / "garbage.h5"
    with h5py.File(feats / "foreign.h5", "w") as f:
        f["x"] = np.arange(10)
    c["foreign_h5"] = feats / "foreign.h5"
    (feats / "truncated.h5").write_bytes(c["features"].read_bytes()[:3000])
    c["truncated_h5"] = feats / "truncated.h5"

    # Folds files.
    with h5py.File(c["features"]) as f:
        ids, labels = list(f["image_id"].asstr()[:]), [CLASSES[i] for i in f["label"][:]]
        lesions = list(f["lesion_id"].asstr()[:])
    part = {lesion: i % 2 for i, lesion in enumerate(sorted(set(lesions)))}  # lesion-grouped: no leak
    folds_dir = root / "folds"
    folds_dir.mkdir()

    def folds_file(name, fold=lambda i: part[lesions[i]], image_id=lambda x: x, columns=("image_id", "lesion_id", "label", "fold"),
                   text=None):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for i, x in enumerate(ids):
            row = {"image_id": image_id(x), "lesion_id": lesions[i], "label": labels[i], "fold": fold(i)}
            writer.writerow([row[k] for k in columns])
        path = folds_dir / f"{name}.csv"
        path.write_text(text if text is not None else out.getvalue())
        c[name] = path

    folds_file("folds_out_of_range", fold=lambda i: -7 if i % 3 == 0 else part[lesions[i]])
    folds_file("folds_not_int", fold=lambda i: "abc" if i == 0 else part[lesions[i]])
    folds_file("folds_no_fold_column", columns=("image_id", "lesion_id", "label"))
    folds_file("folds_foreign_ids", image_id=lambda x: "ISIC_" + x)
    folds_file("folds_empty", text="")
    folds_file("folds_good")

    # Model folders: copies of the good model, each damaged one way.
    models = root / "models"
    models.mkdir()
    c["model"] = models / "good"
    shutil.copytree(info["model"], c["model"])

    def damaged_model(name, change):
        path = models / name
        shutil.copytree(c["model"], path)
        change(path)
        c[name] = path

    def write(name, data):
        return lambda p: (p / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    def wrong_shapes(p):
        with np.load(p / "state.npz") as npz:
            state = {k: npz[k] for k in npz.files}
        state = {k: (v[:-1] if v.ndim >= 1 and v.size > 1 else v) for k, v in state.items()}
        np.savez(p / "state.npz", **state)

    def outside_module(p):
        manifest = json.loads((p / "model.json").read_text())
        manifest["backbone"]["module"] = str(Path(info["module"]).resolve())
        (p / "model.json").write_text(json.dumps(manifest))

    damaged_model("json_list", write("model.json", "[]"))
    damaged_model("json_null", write("model.json", "null"))
    damaged_model("json_invalid", write("model.json", "{not json"))
    damaged_model("state_truncated", lambda p: write("state.npz", (p / "state.npz").read_bytes()[:200])(p))
    damaged_model("state_pickle", write("state.npz", pickle.dumps({"coef": [1, 2, 3]})))
    damaged_model("state_wrong_shape", wrong_shapes)
    damaged_model("no_tflite", lambda p: (p / "backbone.tflite").unlink())
    damaged_model("tflite_garbage", write("backbone.tflite", os.urandom(4096)))
    damaged_model("module_outside", outside_module)

    # Output places: a read-only file system and a full one (real tmpfs mounts).
    c["ro"], c["full"] = root / "ro", root / "full"
    c["runs"] = root / "runs"
    c["runs"].mkdir()
    shutil.copy(info["record"], c["runs"])
    try:
        _mount(c["ro"], "size=1m,ro")
        _mount(c["full"], "size=256k")
        _fill(c["full"])
        yield c
    finally:
        for mount in (c["ro"], c["full"]):
            subprocess.run(["umount", "-l", str(mount)], check=False)


# (id, argv with {placeholders} from the corpus, expected exit codes, what the message must name)
DATA_COMMANDS = {
    "check": ["data", "check", "--data", "{X}"],
    "split": ["data", "split", "--data", "{X}", "--folds", "2", "--out", "{root}/split-out.csv"],
    "extract": ["extract", "--data", "{X}", "--module", "{module}", "--out", "{root}/extract-out.h5",
                "--no-progress"],
    "evaluate": ["evaluate", "--model", "{model}", "--data", "{X}", "--no-progress", "--no-record"],
}
BAD_DATA = {  # name: (exit codes, what the message names)
    "missing": ({1}, "does-not-exist"),
    "empty_dir": ({1}, "empty_dir"),
    "empty_csv": ({1}, "HAM10000_metadata.csv"),
    "header_only": ({1}, "HAM10000_metadata.csv"),
    "garbage_csv": ({1}, "HAM10000_metadata.csv"),
    "two_dx": ({1}, "dx"),
    "huge_field": ({1}, "HAM10000_metadata.csv"),
    "jpg_as_data": ({1, 2}, "{image_name}"),
}
FEATURE_COMMANDS = {
    "fit": ["fit", "--head", "logreg", "--features", "{X}", "--cv", "2", "-q"],
    "viz": ["viz", "--features", "{X}", "--method", "pca", "--out", "{root}/viz-out.png"],
}
BAD_FEATURES = ["no_label", "label_9", "short_ids", "one_class", "unlabelled", "zero_rows", "nan_features",
                "garbage_h5", "foreign_h5", "truncated_h5"]
BAD_FOLDS = ["folds_out_of_range", "folds_not_int", "folds_no_fold_column", "folds_foreign_ids", "folds_empty"]
MODEL_COMMANDS = {
    "predict": ["predict", "--model", "{X}", "{image}"],
    "evaluate": ["evaluate", "--model", "{X}", "--data", "{good}", "--no-progress", "--no-record"],
    # the pool backbone is a SavedModel outside the catalog: export and explain are told where it is
    "export": ["export", "--model", "{X}", "--module", "{module}"],
    "explain": ["explain", "--model", "{X}", "--module", "{module}", "--method", "gradient", "{image}",
                "--out", "{root}/explain-out.png"],
}
BAD_MODELS = ["json_list", "json_null", "json_invalid", "state_truncated", "state_pickle", "state_wrong_shape",
              "no_tflite", "tflite_garbage"]
BAD_PARAMS = [("logreg", "alpha=abc", "alpha"), ("logreg", "max_iter=abc", "max_iter"),
              ("logreg", "no_such_param=1", "no_such_param"), ("softmax", "hidden=abc", "hidden"),
              ("lightgbm", "num_leaves=1.5", "num_leaves"), ("logreg", "C=-1", "C")]
OUTPUT_COMMANDS = {
    "split": (["data", "split", "--data", "{good}", "--folds", "2", "--out", "{P}/folds.csv"], {}),
    "extract": (["extract", "--data", "{good}", "--module", "{module}", "--out", "{P}/f.h5", "--no-progress"], {}),
    "predict": (["predict", "--model", "{model}", "{image}", "--out", "{P}/pred.csv"], {}),
    "report": (["report", "--out", "{P}/report.html", "--map", "none"], {"SKINFEAT_RUNS": "{runs}"}),
    "viz": (["viz", "--features", "{features}", "--method", "pca", "--out", "{P}/viz.png"], {}),
    "explain": (["explain", "--model", "{model}", "--module", "{module}", "{image}", "--grid", "4",
                 "--out", "{P}/explain.png"], {}),
    "fit-out": (["fit", "--head", "logreg", "--features", "{features}", "--cv", "2", "-q", "--out", "{P}/model"],
                {}),
    "fit-runs": (["fit", "--head", "logreg", "--features", "{features}", "--cv", "2", "-q"],
                 {"SKINFEAT_RUNS": "{P}/runs"}),
}


def _cases():
    for name, (codes, needle) in BAD_DATA.items():
        for command, argv in DATA_COMMANDS.items():
            yield pytest.param(argv, {"X": name}, {}, codes, needle, id=f"{command}-{name}")
    yield pytest.param(DATA_COMMANDS["check"], {"X": "unknown_dx"}, {}, {1}, "xyz", id="check-unknown_dx")
    for name in BAD_FEATURES:
        for command, argv in FEATURE_COMMANDS.items():
            if command == "viz" and name == "one_class":
                continue  # a map of one class is a fine map
            # a map coloured by class needs labels: --color class on an unlabelled file is a usage error
            codes = {2} if command == "viz" and name == "unlabelled" else {1}
            yield pytest.param(argv, {"X": name}, {}, codes, "{X_name}", id=f"{command}-{name}")
    for name in BAD_FOLDS:
        argv = ["fit", "--head", "logreg", "--features", "{X}", "-q", "--folds", "{F}"]
        yield pytest.param(argv, {"X": "features", "F": name}, {}, {1}, "{F_name}", id=f"fit-{name}")
    for name in BAD_MODELS:
        for command, argv in MODEL_COMMANDS.items():
            if "tflite" in name and command in ("export", "explain"):
                continue  # export writes the backbone anew; explain runs the --module it is given
            yield pytest.param(argv, {"X": name}, {}, {1}, "{X_name}", id=f"{command}-{name}")
    for command in ("explain", "export"):  # not told: the folder's own word is not enough
        argv = list(MODEL_COMMANDS[command])
        del argv[argv.index("--module"):argv.index("--module") + 2]
        yield pytest.param(argv, {"X": "module_outside"}, {}, {1}, "--module", id=f"{command}-module_outside")
    for head, param, needle in BAD_PARAMS:
        argv = ["fit", "--head", head, "--features", "{features}", "--cv", "2", "-q", "-p", param]
        yield pytest.param(argv, {}, {}, {2}, needle, id=f"fit-{head}-{param}")
    for place in ("ro", "full"):
        for command, (argv, env) in OUTPUT_COMMANDS.items():
            yield pytest.param(argv, {"P": place}, env, {1}, "{P}", id=f"{command}-{place}")


def _files(*roots):
    """Every file under ``roots`` with its size and modification time."""
    found = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                st = path.lstat()
                found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.mark.parametrize("argv, inputs, env, codes, needle", list(_cases()))
def test_a_bad_input_gets_one_line_the_right_exit_code_and_leaves_nothing(corpus, tmp_path, monkeypatch, argv,
                                                                          inputs, env, codes, needle):
    monkeypatch.chdir(tmp_path)
    values = {k: str(v) for k, v in corpus.items()}
    values["image_name"] = Path(corpus["image"]).name
    for key, name in inputs.items():
        values[key] = str(corpus[name])
        values[f"{key}_name"] = Path(corpus[name]).name
    argv = [a.format(**values) for a in argv]
    env = {k: v.format(**values) for k, v in env.items()}
    before = _files(corpus["root"], tmp_path)

    result = CliRunner().invoke(cli, argv, env=env)

    shown = f"$ skinfeat {' '.join(argv)}\n{result.output}"
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"{shown}\ntraceback: {result.exc_info and result.exc_info[1]!r}"
    assert "Traceback" not in result.output, shown
    assert result.exit_code in codes, shown
    if argv[:2] == ["data", "check"]:  # check lists every problem, one line each
        errors = [line for line in result.output.splitlines() if line.lower().startswith("error:")]
        assert errors, shown
        message = "\n".join(errors)
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, shown
        message = errors[0]
    assert needle.format(**values) in message or values.get(needle.strip("{}"), "\0") in message, \
        f"the message should name {needle.format(**values)!r}:\n{shown}"
    assert "allow_pickle" not in result.output, shown
    after = _files(corpus["root"], tmp_path)
    new = {path for path in after if path not in before}
    changed = {path for path in before if path in after and after[path] != before[path]}
    gone = {path for path in before if path not in after}
    assert not (new or changed or gone), f"{shown}\nnew {sorted(new)}, changed {sorted(changed)}, gone {sorted(gone)}"


@pytest.mark.parametrize("command, code", [("split", 0), ("extract", 0), ("evaluate", 1)])
def test_a_row_with_an_unknown_class_is_left_out_with_a_warning_or_refused(corpus, tmp_path, monkeypatch, command,
                                                                           code):
    """Training-side commands leave the row out and say so; scoring a model refuses data with errors."""
    monkeypatch.chdir(tmp_path)
    values = {k: str(v) for k, v in corpus.items()}
    values["X"] = str(corpus["unknown_dx"])
    argv = [a.format(**values) for a in DATA_COMMANDS[command]]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == code and "Traceback" not in result.output, result.output
    assert "1 errors" in result.stderr if code == 0 else "'xyz'" in result.stderr, result.output
    assert "skinfeat data check" in result.stderr if code == 0 else True


def test_a_fifo_named_like_an_image_does_not_hang_any_reader(corpus, tmp_path):
    """A FIFO called x.jpg would block whoever opens it: every reader must pass it by."""
    data = tmp_path / "fifo"
    shutil.copytree(corpus["good"], data, symlinks=True)
    os.mkfifo(data / "images" / "ISIC_fifo.jpg")
    for argv in (["data", "check", "--data", str(data)],
                 ["predict", "--model", str(corpus["model"]), str(data / "images")]):
        proc = subprocess.run([sys.executable, "-m", "skinfeat", *argv], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert "Traceback" not in proc.stderr and proc.returncode in (0, 1), proc.stderr
        assert "ISIC_fifo" in proc.stderr + proc.stdout, "the FIFO should be named as passed by"


def test_a_read_only_cache_home_costs_the_cache_not_the_map(corpus, tmp_path, monkeypatch):
    """The map's coordinate cache lives under SKINFEAT_HOME: when that cannot be
    written the map is still drawn, with a note."""
    monkeypatch.setenv("SKINFEAT_HOME", str(corpus["ro"]))
    out = tmp_path / "map.png"
    result = CliRunner().invoke(cli, ["viz", "--features", str(corpus["features"]), "--method", "pca",
                                      "--out", str(out)])
    assert result.exit_code == 0 and out.stat().st_size > 0, result.output
    assert "cannot cache the map's coordinates" in result.stderr and str(corpus["ro"]) in result.stderr
