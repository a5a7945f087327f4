"""``skinfeat modules list|build|info|path``: output, exit codes, one-line errors."""

import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from skinfeat.backbones.catalog import load_catalog
from skinfeat.cli import cli

from helpers import HAM10000  # noqa: E402

HAM_IMAGE = HAM10000 / "images" / "ISIC_0024306.jpg"


def run(*args):
    return CliRunner().invoke(cli, ["modules", *args], catch_exceptions=False)


class Pool(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return tf.reduce_mean(images, axis=[1, 2])


@pytest.mark.parametrize("command", ["list", "build", "info", "path"])
def test_every_command_has_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and len(result.output.splitlines()) > 3


def test_list_shows_the_catalog():
    result = run("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "DIM", "INPUT", "STATUS", "LICENSE", "SOURCE"]
    assert len(lines) == 1 + len(load_catalog().entries)
    lite0 = next(line for line in lines if line.startswith("efficientnet-lite0 "))
    assert lite0.split()[1:3] == ["1280", "224x224"] and lite0.split()[3] in ("built", "offline")
    default = next(line for line in lines if line.startswith("efficientnet-lite0-stages-sog (default)"))
    assert default.split()[2:4] == ["2688", "224x224"]
    bit = next(line for line in lines if line.startswith("bit-m-r50x1 "))
    assert "network" in bit.split() and "https://tfhub.dev/google/bit/m-r50x1/1" in bit


@pytest.mark.slow
def test_build_then_path_gives_a_keras_layer_module():
    import tensorflow_hub as hub

    built = run("build", "efficientnet-lite0")
    assert built.exit_code == 0
    result = run("path", "efficientnet-lite0")
    assert result.exit_code == 0 and result.stderr == ""  # built: nothing to announce
    path = result.stdout.strip()
    assert built.stdout.strip() == f"efficientnet-lite0: {path}"
    listed = [line.split() for line in run("list").output.splitlines()]
    assert ["efficientnet-lite0", "1280", "224x224", "built"] in [row[:4] for row in listed]
    image = np.asarray(Image.open(HAM_IMAGE).convert("RGB").resize((224, 224)), np.float32)[None] / 255
    features = hub.KerasLayer(path)(tf.constant(image)).numpy()
    assert features.shape == (1, 1280) and features.std() > 0.01


def test_info_of_a_local_saved_model_as_json(tmp_path):
    tf.saved_model.save(Pool(), str(tmp_path / "pool"))
    result = run("info", str(tmp_path / "pool"), "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["feature_dim"] == 3 and info["input_size"] is None and info["kind"] == "directory"
    assert len(info["fingerprint"]) == 64


def test_unknown_name_is_one_line_with_suggestions():
    result = run("info", "mobilenet-v3")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown backbone 'mobilenet-v3'")
    assert "Did you mean: mobilenet-v" in result.output and "Traceback" not in result.output


def test_handle_without_network_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    result = run("path", "http://127.0.0.1:9/model/feature_vector/1")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "network" in result.output and "efficientnet-lite0" in result.output


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SKINFEAT_HOME", str(tmp_path / "file" / "home"))
    result = run("build", "efficientnet-lite2")
    assert result.exit_code == 1
    error = result.output.splitlines()[-1]
    assert error.startswith("Error: cannot write the module cache") and "SKINFEAT_HOME" in error


def test_build_needs_names():
    result = run("build")
    assert result.exit_code == 2 and "give backbone NAMES or --all" in result.output


@pytest.mark.slow
def test_forced_rebuild_is_reproducible():
    assert run("build", "mobilenet-v1").exit_code == 0
    before = json.loads(run("info", "mobilenet-v1", "--json").stdout)["fingerprint"]
    rebuilt = run("build", "mobilenet-v1", "--force")
    assert rebuilt.exit_code == 0 and "converting" in rebuilt.stderr
    assert json.loads(run("info", "mobilenet-v1", "--json").stdout)["fingerprint"] == before
