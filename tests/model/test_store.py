"""Model writes that are killed or run out of disk (``fit --out``, ``export``): a model
folder is complete or it is not there, the old one stays until the new one is in, what
killed writers left is swept by the next write (never a live writer's), and a full disk
is one line naming the folder, with nothing left behind."""

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
import tensorflow as tf
from click.testing import CliRunner

from helpers import HAM10000, REPO, TESTS, error_line, run
from model_factory import once, build_model, pool_model
from skinfeat.cli import cli

IMAGE = HAM10000 / "images" / "ISIC_0024310.jpg"


@pytest.fixture(scope="module")
def pool(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000)


def copy_model(info, where):
    return Path(shutil.copytree(info["model"], where))


# ============================================================================= killed writes

def _fit_command(features, out):
    return [sys.executable, "-m", "skinfeat", "fit", "--head", "logreg", "--features", str(features), "--cv", "2",
            "--no-views", "-q", "--out", str(out)]


def _env(home=None):
    """The subprocess's environment: this checkout importable; ``home``: another SKINFEAT_HOME."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if home is not None:
        env["SKINFEAT_HOME"] = str(home)
    return env


def _run_id(model):
    """The run that wrote the model in ``model`` (None while there is none)."""
    try:
        return json.loads((model / "model.json").read_text())["training"]["run_id"]
    except (OSError, ValueError, KeyError):
        return None


def _temporaries(model):
    return [p for p in model.parent.iterdir() if p.name.startswith(f".{model.name}.")]


def _children(pid):
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except OSError:
        return []


def _kill_when(features, model, ready, group=True, timeout=300, home=None):
    """Start ``skinfeat fit --out model``, wait until ``ready()`` says so, SIGKILL it
    (its process group, or only the fit process, whose export child then runs on to its
    end) and wait for every process of it to end. Returns whether ``ready`` fired.
    ``home``: a SKINFEAT_HOME of its own (an empty one has no cached conversion, so the
    export converts the backbone in a child process, as the first export of a backbone does)."""
    proc = subprocess.Popen(_fit_command(features, model), env=_env(home), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, fired, children = time.monotonic() + timeout, False, []
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            fired = True
            break
        time.sleep(0.005)
    children = _children(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL) if group else proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:  # it had ended
        pass
    proc.wait()
    for child in children:  # an orphaned export ends by itself
        while Path(f"/proc/{child}").exists() and "zombie" not in _status(child):
            time.sleep(0.05)
    return fired


def _status(pid):
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _in_temporary(model, name=None):
    def ready():
        for tmp in _temporaries(model):
            if name is None or (tmp / name).exists():
                return True
        return False
    return ready


def test_a_fit_killed_at_any_moment_leaves_the_old_or_the_new_model_and_no_leftovers(pool, tmp_path):
    model = copy_model(pool, tmp_path / "model")
    old = _run_id(model)
    features = pool["features"]
    moments = [(_in_temporary(model), True), (_in_temporary(model, "state.npz"), True),
               (_in_temporary(model, "backbone.tflite"), True), (_in_temporary(model, "backbone.tflite"), False)]
    for i, (ready, group) in enumerate(moments):
        assert _kill_when(features, model, ready, group, home=tmp_path / f"home{i}"), \
            "the fit ended before the moment came"
        assert _run_id(model) == old and run("predict", "--model", model, IMAGE).exit_code == 0
        assert _temporaries(model), "the killed fit left nothing to sweep"
    # The moment the new model is in: it is complete.
    _kill_when(features, model, lambda: _run_id(model) != old)
    new = _run_id(model)
    assert new != old and run("predict", "--model", model, IMAGE).exit_code == 0
    live = tmp_path / f".model.{os.getpid()}.abcdefgh.tmp"  # a running writer's (ours)
    live.mkdir()
    done = subprocess.run(_fit_command(features, model), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _run_id(model) not in (old, new) and run("predict", "--model", model, IMAGE).exit_code == 0
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == [live.name]


def test_re_export_keeps_the_old_backbone_until_the_new_one_is_in(pool, tmp_path):
    model = copy_model(pool, tmp_path / "model")
    before = (model / "backbone.tflite").read_bytes()
    # the export holds its finished temporary model before the rename (held_writes.py): the kill lands
    # mid-write however fast the export is (a cached conversion takes milliseconds)
    proc = subprocess.Popen([sys.executable, str(TESTS / "held_writes.py"), model.name, "export", "--model",
                             str(model), "--module", pool["module"]], env=_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = _in_temporary(model, "backbone.tflite")
    while proc.poll() is None and not ready():
        time.sleep(0.005)
    assert proc.poll() is None, "the export ended before it wrote into its temporary folder"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (model / "backbone.tflite").read_bytes() == before and run("predict", "--model", model, IMAGE).exit_code == 0
    assert _temporaries(model)
    result = run("export", "--model", model, "--module", pool["module"])
    assert result.exit_code == 0, result.output
    assert _temporaries(model) == [] and run("predict", "--model", model, IMAGE).exit_code == 0


# ============================================================================= full disk

class _Heavy(tf.Module):
    """The pooling backbone carrying 1 MB of weights that do not change its output, so
    that its TFLite copy is larger than the small disks below."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(0).normal(size=(9, 30000)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        pooled = tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2]),
                            tf.reduce_max(images, [1, 2])], axis=1)
        return pooled + 0.0 * tf.reduce_sum(tf.matmul(pooled, self.w), axis=1, keepdims=True)


@pytest.fixture(scope="module")
def heavy(skinfeat_home, ham10000):
    root = Path(skinfeat_home) / "test_models"
    module = root / "heavy_module"
    with once(module):
        if not module.exists():
            tf.saved_model.save(_Heavy(), str(module))
    return build_model(root / "heavy-logreg", ham10000, str(module))


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a new tmpfs of that size (root only), unmounted afterwards."""
    mounts = []

    def mount(size):
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
        mounts.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounts:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _disk_full(line, model):
    assert line == f"Error: cannot write the model to {model}: the disk is full; free some space there or write " \
                   "elsewhere", line


def test_fit_out_on_a_full_disk_fails_and_leaves_nothing(heavy, small_disk):
    assert os.path.getsize(Path(heavy["model"]) / "backbone.tflite") > 1_000_000
    for size, fill in (("256k", 0), ("64k", 60_000)):  # room for the head, not the backbone; no room at all
        disk = small_disk(size)
        if fill:
            (disk / "filler").write_bytes(b"x" * fill)
        model = disk / "model"
        result = CliRunner().invoke(cli, ["fit", "--head", "logreg", "--features", heavy["features"], "--cv", "2",
                                          "-q", "--out", str(model)])
        _disk_full(error_line(result), model)
        assert sorted(os.listdir(disk)) == (["filler"] if fill else [])


def test_export_on_a_full_disk_keeps_the_old_model(heavy, small_disk):
    disk = small_disk("1600k")
    model = copy_model(heavy, disk / "model")
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    _disk_full(error_line(run("export", "--model", model, "--module", heavy["module"])), model)
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before and os.listdir(disk) == ["model"]
    assert run("predict", "--model", model, IMAGE).exit_code == 0


def test_the_tflite_cache_of_the_shift_check_on_a_full_disk_is_one_error(heavy, small_disk, monkeypatch):
    from skinfeat.core.errors import CacheError
    from skinfeat.model.export import cached_backbone

    home = small_disk("256k")
    monkeypatch.setenv("SKINFEAT_HOME", str(home))
    backbone = json.loads((Path(heavy["model"]) / "model.json").read_text())["backbone"]
    with pytest.raises(CacheError, match="cannot write the TFLite copy of backbone .*: the disk is full"):
        cached_backbone(backbone)
    assert os.listdir(home / "tflite") == []


def test_explain_into_a_read_only_or_full_place_is_one_line(pool, small_disk):
    full, almost, read_only = small_disk("64k"), small_disk("64k"), small_disk("64k")
    for place in (full, almost):
        _fill(place)
    os.truncate(almost / "filler", os.path.getsize(almost / "filler") - 4096)  # room to check, not to write
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    for place, why in ((full, "the disk is full"), (almost, "the disk is full"),
                       (read_only, "the file system is read-only")):
        before = sorted(os.listdir(place))
        line = error_line(run("explain", "--model", pool["model"], IMAGE, "--grid", "4", "--out", place / "e.png"))
        assert line.startswith(f"Error: cannot write the picture to {place / 'e.png'}: {why}"), line
        assert sorted(os.listdir(place)) == before


def _fill(place):
    fd = os.open(place / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # full
        pass
    finally:
        os.close(fd)
