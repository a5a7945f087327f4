"""``skinfeat finetune``: a tiny trainable fake backbone end to end on real HAM10000
images (CLI in-process), the new module through extract, fit (leak guard) and
predict, bad input, a full disk while checkpointing, resume after a real SIGKILL,
and one real epoch of the built-in EfficientNet-Lite0."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fakes import make_pooling_module, make_trainable_module
from model_factory import ham_subset

from skinfeat.cli import cli

PER_CLASS = 9  # 63 images, 3 folds: 42 training images, enough for a validation part
FAST = ["--size", "32", "48", "--no-progress"]
from helpers import REPO  # noqa: E402


def write_ham_folder(root, manifest):
    """A HAM10000 folder (metadata CSV + copied images) of ``manifest``'s images."""
    from skinfeat.core.classes import CLASSES

    root.mkdir(parents=True)
    lines = ["lesion_id,image_id,dx"]
    for image_id, lesion, label, path in zip(manifest.image_ids, manifest.lesion_ids, manifest.labels,
                                             manifest.paths):
        lines.append(f"{lesion},{image_id},{CLASSES[label].lower()}")
        shutil.copy(path, root / f"{image_id}.jpg")
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory, ham10000):
    """A 63-image HAM folder, its 3-fold folds file, the tiny trainable module, and
    the module fine-tuned from it on folds 1-2 (made once, by the CLI, in a home of
    its own: the session's module cache stays as the other tests expect it)."""
    from skinfeat.data.layouts import load_dataset
    from skinfeat.data.split import make_folds, write_folds

    root = tmp_path_factory.mktemp("finetune")
    data = write_ham_folder(root / "hamsub", ham_subset(ham10000, PER_CLASS))
    manifest = load_dataset(data=data)
    write_folds(root / "folds.csv", manifest, make_folds(manifest, k=3, seed=0))
    module = make_trainable_module(root / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKINFEAT_HOME", str(root / "home"))
        mp.setenv("SKINFEAT_RUNS", str(root / "runs"))
        start = time.perf_counter()
        result = CliRunner().invoke(cli, ["finetune", "--module", module, "--data", str(data), "--folds",
                                          str(root / "folds.csv"), "--fold", "0", "--epochs", "2", *FAST,
                                          "--device", "cpu"])
        seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    return {"root": root, "data": str(data), "folds": str(root / "folds.csv"), "module": module,
            "name": result.stdout.strip().splitlines()[-1], "result": result, "runs": root / "runs",
            "home": root / "home", "seconds": seconds}


@pytest.fixture
def setup(made, monkeypatch):
    monkeypatch.setenv("SKINFEAT_HOME", str(made["home"]))
    return made


def finetune(setup, *args, module=None):
    return CliRunner().invoke(cli, ["finetune", "--module", module or setup["module"], "--data", setup["data"],
                                    "--folds", setup["folds"], *args])


def test_tiny_trainable_module_end_to_end(setup):
    from skinfeat.backbones import cache
    from skinfeat.backbones.resolve import resolve_module

    name = setup["name"]
    assert name == "finetuned/tiny-hamsub-fold0"
    assert "epoch 2/2" in setup["result"].stderr and "Traceback" not in setup["result"].output
    descriptor = cache.read_descriptor(setup["home"] / "modules" / name)
    assert descriptor["fold"] == 0 and descriptor["epochs"] == 2 and descriptor["input_size"] == [32, 48]
    assert descriptor["base"] == setup["module"] and descriptor["n_trained_on"] == len(descriptor["trained_on"])
    mod = resolve_module(name)
    assert mod.kind == "finetuned" and mod.feature_dim == 8 and mod.input_size == (32, 48)
    record = json.loads(next(setup["runs"].glob("*-finetune.json")).read_text())
    assert record["schema"] == "skinfeat-finetune" and [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["module"] == name and Path(record["model_dir"], "backbone.tflite").is_file()
    assert next(setup["runs"].glob("*.history.png")).stat().st_size > 1000
    run_dir = setup["home"] / "finetune" / record["key"]
    assert not list(run_dir.glob("epoch-*"))  # the optimizer checkpoints go once the module is out

    listing = CliRunner().invoke(cli, ["modules", "list"])
    assert name in listing.stdout and "fine-tuned" in listing.stdout
    again = finetune(setup, "--fold", "0", "--epochs", "2", *FAST)  # --device auto: the device is not in the key
    assert again.exit_code == 0 and again.stdout.strip().splitlines()[-1] == name
    assert "up to date" in again.stderr


def test_up_to_date_and_refusals_answer_without_tensorflow(setup):
    """A rerun of a finished fold run, and --all with an epoch count no fold run chose,
    answer without importing TensorFlow (about 9 s here): what the main job's tier
    does on every rerun."""
    script = ("import sys\nfrom skinfeat.cli import cli\ntry:\n    cli(sys.argv[1:], prog_name='skinfeat')\n"
              "except SystemExit as exit:\n    print('exit', exit.code, 'tensorflow' in sys.modules, file=sys.stderr)\n")
    common = ["finetune", "--module", setup["module"], "--data", setup["data"], "--folds", setup["folds"]]
    env = dict(os.environ, PYTHONPATH=str(REPO), SKINFEAT_HOME=str(setup["home"]))
    again = subprocess.run([sys.executable, "-c", script, *common, "--fold", "0", "--epochs", "2", *FAST],
                           env=env, capture_output=True, text=True)
    assert "up to date" in again.stderr and again.stderr.splitlines()[-1] == "exit 0 False", again.stderr
    assert again.stdout.strip() == setup["name"]
    refused = subprocess.run([sys.executable, "-c", script, *common, "--all", "--epochs", "5", *FAST],
                             env=env, capture_output=True, text=True)
    assert "--epochs 5: the fold runs of these settings chose" in refused.stderr, refused.stderr
    assert refused.stderr.splitlines()[-1] == "exit 2 False"


def test_the_module_honours_the_tf_hub_contract(setup):
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

    directory = str(setup["home"] / "modules" / setup["name"])
    layer = hub.KerasLayer(directory, trainable=True)
    model = tf_keras.Sequential([layer])
    images = tf.random.uniform([2, 40, 56, 3])
    assert model(images).shape == (2, 8) and len(layer.trainable_weights) == 3
    obj = hub.load(directory)
    assert obj.signatures["serving_default"](images=images)["feature_vector"].shape == (2, 8)
    after = obj.signatures["feature_map"](images=images)  # Grad-CAM's map, with the fine-tuned weights
    assert after["feature_map"].shape == (2, 20, 28, 8)
    np.testing.assert_allclose(after["feature_vector"], obj(images, training=False), rtol=1e-5)
    np.testing.assert_allclose(obj(images, training=False), model(images), rtol=1e-5)
    assert obj(images, training=True).shape == (2, 8) and obj.regularization_losses == []


def test_new_module_through_extract_fit_and_predict_with_the_leak_guard(setup, tmp_path):
    runner = CliRunner()
    extracted = runner.invoke(cli, ["extract", "--module", setup["name"], "--data", setup["data"], "--views", "0",
                                    "--no-progress"])
    assert extracted.exit_code == 0, extracted.output
    features = extracted.stdout.strip().splitlines()[-1]
    from skinfeat.features.store import read_features

    fs = read_features(features)
    assert fs.attrs["module_info"]["finetune"]["fold"] == 0
    assert 0 < fs.trained_on.sum() < len(fs)

    fitted = runner.invoke(cli, ["fit", "--head", "logreg", "--features", features, "--folds", setup["folds"],
                                 "--out", str(tmp_path / "model")])
    assert fitted.exit_code == 0, fitted.output
    assert "leak guard" in fitted.stderr and "scoring only fold 0 of 3" in fitted.stderr
    record = json.loads(Path(fitted.stdout.split("record: ")[1].splitlines()[0]).read_text())
    assert record["folds"]["scored"] == [0] and len(record["metrics"]["bmca"]["folds"]) == 1
    board = runner.invoke(cli, ["compare"])
    assert "fold 0" in board.stdout, board.output

    image = Path(setup["data"]) / f"{fs.image_ids[0]}.jpg"
    for model in (tmp_path / "model", Path(json.loads(next(setup["runs"].glob("*-finetune.json")).read_text())
                                           ["model_dir"])):
        predicted = runner.invoke(cli, ["predict", "--model", str(model), str(image), "--format", "csv"])
        assert predicted.exit_code == 0, predicted.output
        assert fs.image_ids[0] in predicted.stdout
    # the model names its backbone finetuned/NAME: export finds it in the module cache, no --module needed
    exported = runner.invoke(cli, ["export", "--model", str(tmp_path / "model")])
    assert exported.exit_code == 0, exported.output

    refused = runner.invoke(cli, ["fit", "--head", "logreg", "--features", features, "--cv", "2"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "was fine-tuned on" in refused.output and "every fold" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_training_and_evaluate_pipelines_agree(setup):
    """The fine-tuned network scored on the same real images by the training pipeline
    (tf.data, the SavedModel, the head) and by ``evaluate`` (numpy decode and resize,
    the TFLite backbone, the saved head)."""
    import tensorflow_hub as hub

    from skinfeat.core.metrics import classification_metrics
    from skinfeat.data.layouts import load_dataset
    from skinfeat.finetune.data import clean_batches
    from skinfeat.model.predictor import load_predictor
    from skinfeat.runs.evaluate import evaluate_images

    record = json.loads(next(setup["runs"].glob("*-finetune.json")).read_text())
    manifest = load_dataset(data=setup["data"])
    module = hub.load(record["module_dir"])
    predictor = load_predictor(record["model_dir"])
    feats, labels = [], []
    for images, y in clean_batches(manifest, np.arange(len(manifest)), tuple(record["settings"]["size"])):
        feats.append(module(images, training=False).numpy())
        labels.append(y.numpy())
    trained, y = predictor.head(np.concatenate(feats)), np.concatenate(labels)
    np.testing.assert_allclose(predictor.probabilities([str(p) for p in manifest.paths]), trained, atol=1e-3)
    scored = evaluate_images(record["model_dir"], manifest, write=False, progress=False, unseen_only=True)
    assert scored["left_out"] == record["n_train"] + record["n_val"]  # the fine-tuning images: the model saw them
    rows = np.isin(manifest.image_ids, scored["image_ids"])
    assert abs(scored["clean"]["bmca"] - classification_metrics(y[rows], trained[rows])["bmca"]) <= 0.01
    assert record["probe"]["epoch"] == 0 and 0 <= record["probe"]["val_bmca"] <= 1


def test_a_fine_tuned_model_without_its_framing_is_refused(setup, tmp_path):
    from helpers import error_line, run

    record = json.loads(next(setup["runs"].glob("*-finetune.json")).read_text())
    model = tmp_path / "model"
    shutil.copytree(record["model_dir"], model)
    manifest = json.loads((model / "model.json").read_text())
    assert manifest["export"]["resize"] == "crop" and manifest["export"]["input_size"] == [32, 48]
    del manifest["export"]["resize"]
    (model / "model.json").write_text(json.dumps(manifest))
    image = next(Path(setup["data"]).glob("*.jpg"))
    line = error_line(run("predict", "--model", model, image))
    assert "does not record the resize policy" in line
    assert "does not record the resize policy" in error_line(run("evaluate", "--model", model, "--data",
                                                                 setup["data"]))


def test_unfreeze_takes_the_last_variables_in_forward_order(setup, skinfeat_home, monkeypatch):
    import tensorflow_hub as hub

    from skinfeat.backbones.resolve import resolve_module
    from skinfeat.finetune.module import build_model, forward_order

    _, _, head, chosen = build_model(hub.load(setup["module"]), (32, 48), 1)
    assert [v.name.split(":")[0] for v in chosen[:1]] == ["beta"]  # the tiny net reads gamma, kernel, beta
    assert chosen[1:] == list(head.trainable_variables)
    monkeypatch.setenv("SKINFEAT_HOME", str(skinfeat_home))  # the session's built-in
    lite0 = forward_order(resolve_module("efficientnet-lite0").load().saved_model)
    shapes = [tuple(v.shape) for v in lite0]  # each convolution: BatchNorm gamma, kernel, beta
    assert shapes[:3] == [(32,), (3, 3, 3, 32), (32,)]  # the stem first
    assert shapes[-3:] == [(1280,), (1, 1, 320, 1280), (1280,)]  # the head convolution last
    result = finetune(setup, "--fold", "0", "--unfreeze", str(len(lite0)), *FAST)
    assert result.exit_code == 2 and "--unfreeze 147: the module has 3 trainable variables" in result.output


def test_bad_input_is_one_line(setup, tmp_path):
    cases = [(["--module", "no-such-backbone", "--fold", "0"], 1, "unknown backbone"),
             (["--module", make_pooling_module(tmp_path / "pool"), "--fold", "0"], 1, "is not trainable"),
             (["--fold", "7"], 2, "--fold 7: folds file"),
             ([], 2, "--fold K"), (["--fold", "0", "--all"], 2, "--fold K"),
             (["--fold", "0", "--batch", "0"], 2, "--batch 0"), (["--fold", "0", "--unfreeze", "x"], 2, "--unfreeze"),
             (["--fold", "0", "--augment", "strong"], 2, "--augment"),
             (["--all", "--lr", "0.01"], 2, "none has finished: run `skinfeat finetune --fold K`")]
    lines = Path(setup["folds"]).read_text().splitlines()
    other = tmp_path / "other.csv"  # a folds file of other images
    other.write_text("\n".join([lines[0]] + [line.replace("ISIC_", "X_") for line in lines[1:]]) + "\n")
    cases.append((["--fold", "0", "--folds", str(other)], 1, "has no fold for 63 of the 63"))
    # every DF lesion in fold 0: no DF image left to train on
    no_df = tmp_path / "no-df.csv"
    no_df.write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + ",0" if ",DF," in line else line
                                             for line in lines[1:]]) + "\n")
    cases.append((["--fold", "0", "--folds", str(no_df)], 1, "DF: no training image"))
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):  # this machine's real device list
        cases.append((["--fold", "0", "--device", "gpu"], 2, "--device gpu: no GPU is visible to TensorFlow"))
    runs_before = sorted((setup["home"] / "finetune").iterdir())
    for args, code, message in cases:
        result = finetune(setup, *args, *FAST)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
        assert len([line for line in result.output.splitlines() if "Error" in line]) == 1
    assert sorted((setup["home"] / "finetune").iterdir()) == runs_before  # no run was started


def test_all_trains_the_final_network_for_the_epochs_the_fold_runs_chose(setup, tmp_path, monkeypatch):
    from skinfeat.backbones import cache

    record = json.loads(next(setup["runs"].glob("*-finetune.json")).read_text())
    assert record["best"]["epoch"] == 0  # the tiny module never beats its probe on 63 images
    refused = finetune(setup, "--all", *FAST)
    assert refused.exit_code == 2 and "fine-tuning did not beat the linear probe" in refused.output, refused.output
    # the same fold run, as if it had chosen epoch 2 (its state copied into another home)
    state = json.loads((setup["home"] / "finetune" / record["key"] / "state.json").read_text())
    state["best"] = dict(state["best"], epoch=2)
    (tmp_path / "home" / "finetune" / record["key"]).mkdir(parents=True)
    (tmp_path / "home" / "finetune" / record["key"] / "state.json").write_text(json.dumps(state))
    monkeypatch.setenv("SKINFEAT_HOME", str(tmp_path / "home"))
    wrong = finetune(setup, "--all", "--epochs", "5", *FAST)
    assert wrong.exit_code == 2 and "chose 2 (fold 0); pass one of them" in wrong.output, wrong.output
    result = finetune(setup, "--all", *FAST)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "finetuned/tiny-hamsub-all"
    descriptor = cache.read_descriptor(tmp_path / "home" / "modules" / "finetuned" / "tiny-hamsub-all")
    assert descriptor["fold"] == "all" and descriptor["epochs"] == 2 and descriptor["epochs_trained"] <= 2
    assert descriptor["n_trained_on"] == 63  # every image of every fold (training and validation parts)


def test_the_main_job_tier_on_a_small_subset(setup, tmp_path):
    """scripts/finetune.sh as a user runs it (the tiny module, 63 images, 32x48): the
    fold-0 rows on the leaderboard beside the others, shift-checked; the final network
    refused with the reason, as the fold run chose the probe. The fold run is the
    module fixture's (the same settings and folds file: reused, as a rerun is)."""
    (tmp_path / "runs").mkdir()
    shutil.copy(setup["folds"], tmp_path / "runs" / "folds.csv")
    env = dict(os.environ, SKINFEAT_HOME=str(setup["home"]), SKINFEAT_RUNS=str(tmp_path / "runs"),
               SKINFEAT_DATA=setup["data"], SKINFEAT_FINETUNE_MODULE=setup["module"],
               SKINFEAT_FINETUNE_ARGS="--size 32 48 --no-progress", SKINFEAT_FINETUNE_EPOCHS="2",
               SKINFEAT_FINETUNED=str(tmp_path / "final"))
    done = subprocess.run(["bash", "scripts/finetune.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "up to date: finetuned/tiny-hamsub-fold0" in done.stderr
    assert "features: " in done.stdout and "Traceback" not in done.stderr
    board = done.stdout.split("features: ")[1]
    assert "finetuned/tiny-" in board and "fold 0" in board, done.stdout
    (record,) = (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*-logreg.json"))
    assert record["folds"]["scored"] == [0] and len(record["shift"]["shifts"]) == 15, record.keys()
    assert "did not beat the linear probe" in done.stderr and "no final fine-tuned network" in done.stderr
    assert not (tmp_path / "final").exists()


def test_bfloat16_training_only_where_the_cpu_has_it(setup, tmp_path, monkeypatch):
    """A CPU without bfloat16 instructions refuses --precision bfloat16 in one line (it
    would be emulated, slower); one with them trains in it, keyed apart from float32."""
    from skinfeat.core.devices import cpu_bfloat16

    monkeypatch.setenv("SKINFEAT_HOME", str(tmp_path / "home"))
    result = finetune(setup, "--fold", "0", "--epochs", "1", "--precision", "bfloat16", "--device", "cpu", *FAST)
    if not cpu_bfloat16():  # this machine's /proc/cpuinfo
        assert result.exit_code == 2 and "this CPU has no bfloat16 instructions" in result.output, result.output
        assert not (tmp_path / "home" / "finetune").exists()
        return
    assert result.exit_code == 0, result.output
    (state,) = (json.loads(p.read_text()) for p in (tmp_path / "home" / "finetune").glob("*/state.json"))
    assert state["settings"]["precision"] == "bfloat16" and np.isfinite(state["history"][0]["loss"])


@pytest.fixture
def full_home(tmp_path):
    """SKINFEAT_HOME on a tmpfs with one free page."""
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(home)], check=True)
    try:
        fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 1024)
        except OSError:
            pass
        os.close(fd)
        os.truncate(home / "filler", os.path.getsize(home / "filler") - 4096)
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=True)


def test_full_disk_while_checkpointing(setup, full_home, monkeypatch):
    monkeypatch.setenv("SKINFEAT_HOME", str(full_home))
    result = finetune(setup, "--fold", "0", "--epochs", "2", *FAST)
    assert result.exit_code == 1, result.output
    error = result.output.strip().splitlines()[-1]
    assert "cannot write the checkpoint of the linear probe (epoch 0)" in error, error
    assert "the disk is full" in error and "starts again" in error, error
    assert "Traceback" not in result.output
    run = next((full_home / "finetune").iterdir())
    assert sorted(p.name for p in run.iterdir()) == ["lock", "state.json"]  # no checkpoint, nothing half-written
    assert json.loads((run / "state.json").read_text())["epoch"] == 0
    assert not (full_home / "modules").exists()


def _command(setup, *args):
    return [sys.executable, "-m", "skinfeat", "finetune", "--module", setup["module"], "--data", setup["data"],
            "--folds", setup["folds"], "--fold", "2", "--size", "96", "144", "--no-progress", *args]


def test_resume_after_sigkill(setup, tmp_path, monkeypatch):
    env = dict(os.environ, PYTHONPATH=str(REPO), SKINFEAT_HOME=str(tmp_path / "home"))
    command = _command(setup, "--epochs", "3")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_path = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "home" / "finetune").glob("*/state.json"))
        if found and json.loads(found[0].read_text())["epoch"] >= 1:
            state_path = found[0]
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert state_path is not None, "the first epoch did not finish"
    killed = json.loads(state_path.read_text())
    assert 1 <= killed["epoch"] < 3 and not killed["done"]

    monkeypatch.setenv("SKINFEAT_HOME", str(tmp_path / "home"))
    other = CliRunner().invoke(cli, _command(setup, "--epochs", "1", "--lr", "0.001")[3:])  # in-process: faster
    assert other.exit_code == 0, other.output
    assert "an unfinished run of finetuned/tiny-hamsub-fold2 with other settings" in other.stderr
    assert "epochs 3->1, lr 0.0001->0.001" in other.stderr

    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {killed['epoch']} of 3" in resumed.stderr
    history = json.loads(state_path.read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    monkeypatch.setenv("SKINFEAT_HOME", str(tmp_path / "whole"))
    whole = CliRunner().invoke(cli, command[3:])
    assert whole.exit_code == 0, whole.output
    reference = json.loads(next((tmp_path / "whole" / "finetune").glob("*/state.json")).read_text())["history"]
    np.testing.assert_allclose([h["loss"] for h in history], [h["loss"] for h in reference], rtol=1e-4)


def test_real_lite0_one_epoch(tmp_path, ham10000, skinfeat_home, monkeypatch):
    """The built-in EfficientNet-Lite0 on 70 HAM10000 images (37 train, 10 validate), one epoch at 64x80."""
    from skinfeat.backbones.resolve import resolve_module
    from skinfeat.data.split import make_folds, write_folds
    from skinfeat.finetune import finetune as run

    built = resolve_module("efficientnet-lite0").path  # in the session's cache, built once
    (tmp_path / "home" / "modules").mkdir(parents=True)
    (tmp_path / "home" / "modules" / "efficientnet-lite0").symlink_to(built)
    monkeypatch.setenv("SKINFEAT_HOME", str(tmp_path / "home"))  # what the test makes stays here
    manifest = ham_subset(ham10000, 10, skip=20)
    write_folds(tmp_path / "folds.csv", manifest, make_folds(manifest, k=3, seed=0))
    monkeypatch.setenv("SKINFEAT_RUNS", str(tmp_path / "runs"))
    # progress on, and stderr is not a terminal here: the periodic lines a log or pipe gets
    # (skinfeat.core.progress.Lines) go through a whole epoch, as `finetune ... > log` runs
    result = run(manifest, "efficientnet-lite0", tmp_path / "folds.csv", 0, dataset_name="ham10000",
                 epochs=1, size=(64, 80), batch=16, progress=True)
    assert result.name == "finetuned/efficientnet-lite0-ham10000-fold0"
    entry = result.state["history"][0]
    assert entry["images"] == 37 and entry["n_val"] == 10 and np.isfinite(entry["loss"]) and 0 <= entry["val_bmca"] <= 1
    mod = resolve_module(result.name)
    assert mod.feature_dim == 1280 and mod.input_size == (64, 80)
    import tensorflow as tf

    assert mod.load()(tf.zeros([1, 64, 80, 3])).shape == (1, 1280)
