"""``extract --precision float32|bfloat16|int8`` (``skinfeat.features.precision``): the key and
file name per precision, bfloat16 on the real default module (different, deterministic,
not leaking into float32), int8 TFLite copies (close to float32, cached and reused),
and the precision carried into the model (export, prediction) and the shift check."""

import json
import shutil

import numpy as np
import pytest

from helpers import run, error_line
from fakes import make_trainable_module
from model_factory import ham_subset
from skinfeat.features.store import read_features
from skinfeat.core.devices import cpu_bfloat16

TOLERANCE = 1e-4  # features from images (TFLite, numpy resize) vs extraction (tf.data)


CPU_BF16 = cpu_bfloat16()  # oneDNN's rewrite changes the arithmetic only where the CPU has them
# Measured: int8 vs float32 cosine, min over the images (tiny fake on 28 HAM images:
# 0.99999; the default module on 42: 0.995), with a margin.
TINY_COSINE, DEFAULT_COSINE = 0.999, 0.98


def cosines(a, b):
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, skinfeat_home, ham10000):
    """Tiny-convnet features of 28 HAM images at each precision, and a model fitted on
    the int8 and on the bfloat16 ones."""
    from skinfeat.runs.fit import run_fit
    from skinfeat.features.extract import extract_features

    root = tmp_path_factory.mktemp("precision")
    module = make_trainable_module(root / "tiny")
    manifest = ham_subset(ham10000)
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("HOME", root / "home"), ("FEATURES", root / "features"), ("RUNS", root / "runs")):
            env.setenv(f"SKINFEAT_{name}", str(value))
        results = {p: extract_features(manifest, module, precision=p, dataset_name="ham", progress=False)
                   for p in ("float32", "bfloat16", "int8")}
        models = {p: root / f"model-{p}" for p in ("int8", "bfloat16")}
        for p, model in models.items():
            run_fit(results[p].path, "logreg", cv=2, out=model)
    return {"root": root, "module": module, "manifest": manifest, "results": results, "models": models}


@pytest.fixture
def tiny_home(tiny, monkeypatch):
    monkeypatch.setenv("SKINFEAT_HOME", str(tiny["root"] / "home"))
    return tiny


def test_key_and_file_name_per_precision_float32_unchanged(tiny):
    from skinfeat.backbones.resolve import resolve_module
    from skinfeat.features.extract import feature_key, manifest_digest
    from skinfeat.features.store import FORMAT_VERSION

    mod = resolve_module(tiny["module"])
    before = {"module": mod.name, "module_fingerprint": mod.fingerprint, "input_size": [224, 224], "resize": "crop",
              "views": 0, "augment_seed": None, "dtype": "float32", "format_version": FORMAT_VERSION,
              "manifest_sha256": manifest_digest(tiny["manifest"])}
    results = tiny["results"]
    assert results["float32"].key == feature_key(before)
    for p in ("bfloat16", "int8"):
        assert results[p].key == feature_key({**before, "precision": p})
        assert f"__crop-{p}__{results[p].key[:12]}.h5" in results[p].path.name
        assert read_features(results[p].path).attrs["precision"] == p
    assert results["float32"].path.name.endswith(f"__crop__{results['float32'].key[:12]}.h5")
    assert read_features(results["int8"].path).attrs["int8_calibration"]


@pytest.fixture(scope="module")
def real(ham10000, tmp_path_factory):
    """42 real HAM images (6 per class) and their float32 features through the real default module."""
    from skinfeat.features.extract import extract_features

    manifest, root = ham_subset(ham10000, per_class=6), tmp_path_factory.mktemp("real")
    return {"manifest": manifest, "root": root,
            "float32": read_features(extract_features(manifest, None, out=root / "f32.h5", progress=False).path)}


def test_bfloat16_on_the_default_module_differs_is_deterministic_and_does_not_leak(real, tmp_path):
    from skinfeat.features.extract import extract_features

    bf, bf_again, f32_after = (
        read_features(extract_features(real["manifest"], None, precision=p, out=tmp_path / f"{i}.h5",
                                       progress=False).path).features
        for i, p in enumerate(("bfloat16", "bfloat16", "float32")))
    f32 = real["float32"].features
    change = np.linalg.norm(bf - f32, axis=1).mean() / np.linalg.norm(f32, axis=1).mean()
    if CPU_BF16:
        assert change > 0.005, change
    else:  # no bfloat16 instructions: the rewrite leaves float32 arithmetic (as measured on such CPUs)
        assert change < 1e-5, change
    np.testing.assert_array_equal(bf, bf_again)
    np.testing.assert_array_equal(f32_after, f32)


def test_int8_default_module_is_close_to_float32(real, tmp_path):
    from skinfeat.features.extract import extract_features

    i8 = read_features(extract_features(real["manifest"], None, precision="int8", out=tmp_path / "i.h5",
                                        progress=False).path).features
    f32 = real["float32"].features
    assert cosines(i8, f32).min() > DEFAULT_COSINE
    assert np.abs(i8 - f32).max() > 1e-4  # int8 arithmetic, not a float copy


def test_int8_tiny_module_close_and_its_tflite_cached_and_reused(tiny_home, tmp_path):
    from skinfeat.features.extract import extract_features

    results = tiny_home["results"]
    f32, i8 = (read_features(results[p].path).features for p in ("float32", "int8"))
    assert cosines(i8, f32).min() > TINY_COSINE
    (cached,) = (tiny_home["root"] / "home" / "tflite").glob("int8-*.tflite")
    stamp = cached.stat().st_mtime_ns
    again = extract_features(tiny_home["manifest"], tiny_home["module"], precision="int8", out=tmp_path / "again.h5",
                             progress=False)
    assert cached.stat().st_mtime_ns == stamp and len(list(cached.parent.glob("int8-*.tflite"))) == 1
    np.testing.assert_array_equal(read_features(again.path).features, i8)


def test_int8_model_predicts_and_shift_checks_with_the_int8_backbone(tiny_home):
    from skinfeat.model.predictor import Predictor
    from skinfeat.core.paths import features_dir
    from skinfeat.runs.shiftcheck import shifted_features

    model, fs = tiny_home["models"]["int8"], read_features(tiny_home["results"]["int8"].path)
    manifest = json.loads((model / "model.json").read_text())
    assert manifest["backbone"]["precision"] == manifest["export"]["precision"] == "int8"
    (cached,) = (tiny_home["root"] / "home" / "tflite").glob("int8-*.tflite")
    assert (model / "backbone.tflite").read_bytes() == cached.read_bytes()
    where = dict(zip(tiny_home["manifest"].image_ids, tiny_home["manifest"].paths))
    ids = [str(i) for i in fs.image_ids[:8]]
    paths = [where[i] for i in ids]
    assert np.abs(Predictor(model).features(paths)[:, 0] - fs.features[:8]).max() < TOLERANCE
    assert np.abs(shifted_features(fs.attrs, ids, paths, None)[:, 0] - fs.features[:8]).max() < TOLERANCE
    shifted_features(read_features(tiny_home["results"]["float32"].path).attrs, ids, paths, None)
    assert len(list((features_dir() / "shifted").glob("*.npy"))) == 2  # float32's cached apart


def test_export_of_an_int8_model_puts_the_int8_backbone_back(tiny_home, tmp_path):
    model = shutil.copytree(tiny_home["models"]["int8"], tmp_path / "model")
    (model / "backbone.tflite").unlink()
    result = run("export", "--model", model, "--module", tiny_home["module"])
    assert result.exit_code == 0, result.output
    (cached,) = (tiny_home["root"] / "home" / "tflite").glob("int8-*.tflite")
    assert (model / "backbone.tflite").read_bytes() == cached.read_bytes()


def test_shift_check_of_bfloat16_features_runs_bfloat16(tiny_home):
    from skinfeat.runs.shiftcheck import shifted_features

    bf, f32 = (read_features(tiny_home["results"][p].path) for p in ("bfloat16", "float32"))
    where = dict(zip(tiny_home["manifest"].image_ids, tiny_home["manifest"].paths))
    ids = [str(i) for i in bf.image_ids[:6]]
    paths = [where[i] for i in ids]
    got = shifted_features(bf.attrs, ids, paths, None)[:, 0]
    if CPU_BF16:
        assert np.abs(got - bf.features[:6]).max() < np.abs(got - f32.features[:6]).max()
    else:  # no bfloat16 instructions: both precisions compute float32 (see _cpu_has_bfloat16)
        assert np.abs(got - bf.features[:6]).max() < TOLERANCE
    assert np.abs(shifted_features(f32.attrs, ids, paths, None)[:, 0] - f32.features[:6]).max() < TOLERANCE


def test_bfloat16_model_has_no_tflite_backbone_and_says_why(tiny_home, tmp_path):
    model = shutil.copytree(tiny_home["models"]["bfloat16"], tmp_path / "model")
    export = json.loads((model / "model.json").read_text())["export"]
    assert "extracted at bfloat16" in export["skipped"] and not (model / "backbone.tflite").exists()
    line = error_line(run("export", "--model", model, "--module", tiny_home["module"]))
    assert "extracted at bfloat16" in line and "re-extract at float32 or int8" in line
    line = error_line(run("predict", "--model", model, tiny_home["manifest"].paths[0]))
    assert "extracted at bfloat16" in line
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_home["models"]["bfloat16"].iterdir())


@pytest.mark.parametrize("args", [["--precision", "bogus"], ["--precision", "int8", "--device", "gpu"]])
def test_extract_refuses_a_bad_precision_in_one_line(ham10000, tmp_path, args):
    out = tmp_path / "f.h5"
    line = error_line(run("extract", "--data", ham10000, "--out", out, *args), code=2)
    assert "--precision" in line or "precision" in line
    assert not out.exists() and not list(tmp_path.iterdir())
