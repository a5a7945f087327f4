"""Model folders from elsewhere, damaged or hostile: a model folder never makes skinfeat
run a graph the user did not name, and every damage is one line naming the folder, in
every command that takes --model. Bad head parameters are usage errors before any work.
(Model writes that are killed or run out of disk: test_model_writes.py.)"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import HAM10000, error_line, run
from model_factory import PER_CLASS, ham_subset, pool_model

from skinfeat.core.classes import CLASSES

IMAGE = HAM10000 / "images" / "ISIC_0024310.jpg"


@pytest.fixture(scope="module")
def pool(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, ham10000):
    """Seven labelled images (one per class) as an ISIC-style folder for ``evaluate``,
    none of them among the test models' training images."""
    folder = tmp_path_factory.mktemp("labelled")
    manifest = ham_subset(ham10000, per_class=1, skip=PER_CLASS)
    (folder / "images").mkdir()
    lines = ["image," + ",".join(CLASSES)]
    for path, image_id, label in zip(manifest.paths, manifest.image_ids, manifest.labels):
        shutil.copy(path, folder / "images")
        lines.append(image_id + "," + ",".join(str(int(c == label)) for c in range(len(CLASSES))))
    (folder / "truth.csv").write_text("\n".join(lines) + "\n")
    return folder


def copy_model(info, where):
    return Path(shutil.copytree(info["model"], where))


def edit_manifest(model, change):
    manifest = json.loads((model / "model.json").read_text())
    manifest = change(manifest)
    (model / "model.json").write_text(json.dumps(manifest))


# ============================================================================= 1. hostile backbones

class _Writer(tf.Module):
    """The fake pooling backbone, plus a side effect: it writes a file when it runs."""

    def __init__(self, target):
        super().__init__()
        self.target = str(target)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        tf.io.write_file(self.target, "ran")
        return tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2]),
                          tf.reduce_max(images, [1, 2])], axis=1)


@pytest.fixture
def crafted(pool, tmp_path, monkeypatch):
    """A model folder whose model.json names a SavedModel (inside the folder, by a path
    relative to the working directory) that writes ``tmp_path/ran`` when it runs; both
    fingerprints in model.json are the crafted module's, so the fingerprint check passes."""
    from skinfeat.backbones.cache import fingerprint

    monkeypatch.chdir(tmp_path)
    model = copy_model(pool, tmp_path / "crafted")
    tf.saved_model.save(_Writer(tmp_path / "ran"), str(model / "graph"))
    digest = fingerprint(model / "graph")

    def change(manifest):
        manifest["backbone"].update(module="crafted/graph", module_fingerprint=digest)
        manifest["export"]["module_fingerprint"] = digest
        return manifest

    edit_manifest(model, change)
    return model


def test_a_model_folder_cannot_make_explain_or_export_run_its_graph(crafted, tmp_path):
    for args in (["explain", "--model", crafted, IMAGE, "--method", "gradient", "--out", tmp_path / "g.png"],
                 ["export", "--model", crafted]):
        line = error_line(run(*args))
        assert line == (f"Error: model {crafted}'s backbone is the SavedModel at crafted/graph, which is not in "
                        "the catalog; pass it with --module crafted/graph if you trust it"), line
        assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "g.png").exists()


def test_predict_and_evaluate_of_a_crafted_folder_run_only_its_tflite(crafted, tmp_path, labelled):
    assert run("predict", "--model", crafted, IMAGE).exit_code == 0
    result = run("evaluate", "--model", crafted, "--images", labelled / "images", "--labels",
                 labelled / "truth.csv", "--no-record", "--no-progress")
    assert result.exit_code == 0, result.output
    assert run("explain", "--model", crafted, IMAGE, "--grid", "4", "--out", tmp_path / "o.png").exit_code == 0
    assert not (tmp_path / "ran").exists()


def test_the_backbone_the_user_names_with_module_is_used(crafted, tmp_path):
    result = run("explain", "--model", crafted, IMAGE, "--method", "gradient", "--module", "crafted/graph",
                 "--out", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ran").read_text() == "ran" and (tmp_path / "g.png").is_file()


def test_export_of_a_model_on_a_local_savedmodel_needs_module(pool, tmp_path):
    model = copy_model(pool, tmp_path / "m")
    module = json.loads((model / "model.json").read_text())["backbone"]["module"]
    line = error_line(run("export", "--model", model))
    assert f"backbone is the SavedModel at {module}, which is not in the catalog; pass it with --module" in line
    result = run("export", "--model", model, "--module", module)
    assert result.exit_code == 0 and result.output.startswith("exported "), result.output
    assert run("predict", "--model", model, IMAGE).exit_code == 0


# ============================================================================= 4. damaged folders

def _set(*keys, value):
    def change(manifest):
        block = manifest
        for key in keys[:-1]:
            block = block[key]
        block[keys[-1]] = value
        return manifest
    return change


def _without(key):
    def change(manifest):
        del manifest[key]
        return manifest
    return change


def _manifest(change):
    return lambda model: edit_manifest(model, change)


def _text(name, text):
    return lambda model: (model / name).write_text(text)


def _truncate(name):
    def damage(model):
        data = (model / name).read_bytes()
        (model / name).write_bytes(data[:len(data) // 2])
    return damage


def _state(**arrays):
    """Replace arrays in state.npz (a function of the old array, or a value)."""
    def damage(model):
        with np.load(model / "state.npz") as npz:
            state = {k: npz[k] for k in npz.files}
        for key, value in arrays.items():
            state[key] = value(state[key]) if callable(value) else value
        np.savez(model / "state.npz", **state)
    return damage


def _with_nan(a):
    a = a.copy()
    a.flat[0] = np.nan
    return a


def _garbage_tflite(rehash):
    def damage(model):
        (model / "backbone.tflite").write_bytes(b"TFL3" + os.urandom(4000))
        if rehash:
            from skinfeat.model.format import sha256_file

            edit_manifest(model, _set("export", "sha256", value=sha256_file(model / "backbone.tflite")))
    return damage


def _symlink_out(name):
    def damage(model):
        outside = model.parent / f"outside-{name}"
        shutil.move(model / name, outside)
        (model / name).symlink_to(outside)
    return damage


DAMAGES = {
    "manifest a list": _text("model.json", "[1, 2]"),
    "manifest null": _text("model.json", "null"),
    "manifest a number": _text("model.json", "3.5"),
    "manifest invalid JSON": _text("model.json", '{"format": "skinfeat-model",'),
    "manifest not UTF-8": lambda model: (model / "model.json").write_bytes(b'{"format": "\xff"}'),
    "no head": _manifest(_without("head")),
    "no classes": _manifest(_without("classes")),
    "no backbone": _manifest(_without("backbone")),
    "no files": _manifest(_without("files")),
    "no params": _manifest(_without("params")),
    "head a number": _manifest(_set("head", value=5)),
    "unknown head": _manifest(_set("head", value="forest")),
    "classes a string": _manifest(_set("classes", value="MEL")),
    "unknown class names": _manifest(_set("classes", value=["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "CAT"])),
    "classes reordered": _manifest(_set("classes", value=list(reversed(CLASSES)))),
    "backbone a list": _manifest(_set("backbone", value=[])),
    "params a string": _manifest(_set("params", value="x")),
    "param of the wrong type": _manifest(_set("params", "power", value="abc")),
    "unknown param": _manifest(_set("params", "gamma", value=1)),
    "files a string": _manifest(_set("files", value="state.npz")),
    "file outside the folder": _manifest(_set("files", value=["state.npz", "../state.npz"])),
    "export a string": _manifest(_set("export", value="x")),
    "export file outside": _manifest(_set("export", "file", value="../backbone.tflite")),
    "export input_size text": _manifest(_set("export", "input_size", value="abc")),
    "unknown resize policy": _manifest(_set("export", "resize", value="bogus")),
    "training a list": _manifest(_set("training", value=[])),
    "class counts text": _manifest(_set("training", "class_counts", value="x")),
    "views text": _manifest(_set("backbone", "views", value="two")),
    "state truncated": _truncate("state.npz"),
    "state not an npz": _text("state.npz", "hello, not an archive"),
    "state a pickle": lambda model: (model / "state.npz").write_bytes(__import__("pickle").dumps({"coef_": 1})),
    "state empty": _text("state.npz", ""),
    "coef of the wrong shape": _state(coef_=lambda a: a[:, :-2]),
    "coef of objects": _state(coef_=lambda a: a.astype(object)),
    "coef of strings": _state(coef_=lambda a: a.astype(str)),
    "coef with NaN": _state(coef_=_with_nan),
    "mean of the wrong shape": _state(mean_=lambda a: np.concatenate([a, a])),
    "no coef": _state(coef_=np.zeros(0)),
    "classes_ out of range": _state(classes_=lambda a: a + 10),
    "classes_ not integers": _state(classes_=lambda a: a + 0.5),
    "offsets of the wrong length": _state(class_offsets_=np.zeros(3)),
    "n_features text": _state(n_features_in_=np.asarray("nine")),
    "tflite missing": lambda model: (model / "backbone.tflite").unlink(),
    "tflite garbage": _garbage_tflite(rehash=False),
    "tflite garbage, hash updated": _garbage_tflite(rehash=True),
    "tflite truncated, hash updated": lambda model: (_truncate("backbone.tflite")(model), _garbage_tflite_hash(model)),
    "state symlinked outside": _symlink_out("state.npz"),
    "tflite symlinked outside": _symlink_out("backbone.tflite"),
    "manifest symlinked outside": _symlink_out("model.json"),
}


def _garbage_tflite_hash(model):
    from skinfeat.model.format import sha256_file

    edit_manifest(model, _set("export", "sha256", value=sha256_file(model / "backbone.tflite")))


COMMANDS = {
    "predict": lambda model, env: ["predict", "--model", model, IMAGE],
    "evaluate": lambda model, env: ["evaluate", "--model", model, "--images", env["labelled"] / "images",
                                    "--labels", env["labelled"] / "truth.csv", "--no-record", "--no-progress"],
    "export": lambda model, env: ["export", "--model", model, "--module", env["module"]],
    "explain": lambda model, env: ["explain", "--model", model, IMAGE, "--grid", "4", "--out",
                                   model.parent / "x.png"],
}


# What `export` mends: it writes the backbone and its record anew (the others say to run it).
MENDED_BY_EXPORT = {"tflite missing", "tflite garbage", "tflite garbage, hash updated",
                    "tflite truncated, hash updated", "unknown resize policy"}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_model_folder_is_one_line_naming_it_in_every_command(pool, labelled, tmp_path, damage):
    model = copy_model(pool, tmp_path / "model")
    DAMAGES[damage](model)
    before = sorted(os.listdir(tmp_path))
    env = {"labelled": labelled, "module": pool["module"]}
    for command, args in COMMANDS.items():
        if command == "export" and damage in MENDED_BY_EXPORT:
            continue
        line = error_line(run(*args(model, env)))
        assert str(model) in line and ("re-fit" in line or "skinfeat export --model" in line), (command, line)
        assert sorted(os.listdir(tmp_path)) == before, command  # nothing written, nothing left
    if damage in ("tflite missing", "tflite garbage, hash updated"):  # each export takes seconds
        result = run(*COMMANDS["export"](model, env))
        assert result.exit_code == 0, result.output
        assert run("predict", "--model", model, IMAGE).exit_code == 0


@pytest.fixture(scope="module")
def lgbm(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000, head="lightgbm")


@pytest.mark.parametrize("text", ["", "garbage\nTree=0\nsplit_feature=x\n", "tree\nnum_class=7\nTree=0\n"
                                  "split_feature=99\nthreshold=1\ndecision_type=0\nleft_child=-1\n"
                                  "right_child=-2\nleaf_value=1 2\n"])
def test_a_damaged_lightgbm_model_is_one_line(lgbm, tmp_path, text):
    model = copy_model(lgbm, tmp_path / "model")
    (model / "lightgbm.txt").write_text(text)
    line = error_line(run("predict", "--model", model, IMAGE))
    assert str(model) in line and "re-fit" in line
    from skinfeat.core.errors import ModelError
    from skinfeat.model.store import load_model

    with pytest.raises(ModelError, match="re-fit"):
        load_model(model)


@pytest.mark.parametrize("damage", ["coef of the wrong shape", "coef with NaN", "state not an npz", "classes reordered",
                                    "param of the wrong type", "state symlinked outside"])
def test_loading_the_scikit_learn_head_refuses_the_same_damage(pool, tmp_path, damage):
    from skinfeat.core.errors import ModelError
    from skinfeat.model.store import load_model

    model = copy_model(pool, tmp_path / "model")
    DAMAGES[damage](model)
    with pytest.raises(ModelError, match=f"model {model}.*re-fit") as info:
        load_model(model)
    assert "allow_pickle" not in str(info.value)


# ============================================================================= 5. head parameters

@pytest.mark.parametrize("head, param, expected", [
    ("logreg", "alpha=abc", "logreg parameter alpha: got 'abc'; expected 'auto' or a number > 0"),
    ("logreg", "alpha=-1", "logreg parameter alpha: got -1; expected 'auto' or a number > 0"),
    ("logreg", "alpha=Infinity", "logreg parameter alpha: got inf; expected 'auto' or a number > 0"),
    ("logreg", "alpha=NaN", "logreg parameter alpha: got nan; expected 'auto' or a number > 0"),
    ("logreg", "alpha=inf", "logreg parameter alpha: got 'inf'; expected 'auto' or a number > 0"),
    ("logreg", "max_iter=abc", "logreg parameter max_iter: got 'abc'; expected an integer >= 1"),
    ("logreg", "max_iter=2.5", "logreg parameter max_iter: got 2.5; expected an integer >= 1"),
    ("logreg", "max_iter=true", "logreg parameter max_iter: got True; expected an integer >= 1"),
    ("logreg", "alphas=[]", "logreg parameter alphas: got []; expected a list of numbers > 0"),
    ("logreg", "alphas=[0.1,-2]", "logreg parameter alphas: got [0.1, -2]; expected a list of numbers > 0"),
    ("logreg", "n_components=0", "logreg parameter n_components: got 0; expected null or an integer >= 1"),
    ("logreg", "power=0", "logreg parameter power: got 0; expected a number > 0"),
    ("logreg", "val_fraction=1", "logreg parameter val_fraction: got 1; expected a number >= 0 and < 1"),
    ("logreg", "random_state=-1", "logreg parameter random_state: got -1; expected null or an integer >= 0"),
    ("logreg", "C=inf", "head 'logreg' has no parameter C; its parameters are: "),
    ("logreg", "unknown=1", "head 'logreg' has no parameter unknown; its parameters are: "),
    ("softmax", "hidden=abc", "softmax parameter hidden: got 'abc'; expected an integer >= 0"),
    ("softmax", "dropout=1.5", "softmax parameter dropout: got 1.5; expected a number >= 0 and < 1"),
    ("softmax", "loss=hinge", "softmax parameter loss: got 'hinge'; expected one of crossentropy, focal"),
    ("softmax", "learning_rate=0", "softmax parameter learning_rate: got 0; expected a number > 0"),
    ("lightgbm", "num_leaves=1.5", "lightgbm parameter num_leaves: got 1.5; expected an integer >= 2"),
    ("lightgbm", "feature_fraction=0", "lightgbm parameter feature_fraction: got 0; expected a number > 0 and <= 1"),
    ("lightgbm", "class_weight=heavy", "lightgbm parameter class_weight: got 'heavy'; expected one of none, "
                                       "balanced, sqrt"),
])
def test_a_bad_head_parameter_is_a_usage_error_before_any_work(tmp_path, head, param, expected):
    # The features file does not exist: the parameter is refused before anything is read.
    result = run("fit", "--head", head, "--features", tmp_path / "none.h5", "-p", param, "--out", tmp_path / "m")
    line = error_line(result, code=2)
    assert expected in line, line
    assert sorted(os.listdir(tmp_path)) == []


def test_good_parameters_pass_and_every_head_parameter_has_a_type():
    from skinfeat.heads import HEADS, head_class, make_head
    from skinfeat.heads.params import PARAMS

    for name in HEADS:
        assert set(PARAMS[name]) == set(head_class(name)().get_params()), name
        make_head(name, **head_class(name)().get_params())  # the defaults are valid
    make_head("logreg", alpha=0.05, n_components=None, alphas=[0.1, 0.2], class_weight={"0": 2.0})
    make_head("lightgbm", num_leaves=31, feature_fraction=1)
