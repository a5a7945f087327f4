"""Extraction into the HDF5 feature cache, with a fake pooling backbone (a real
TF SavedModel) on generated and real images."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from fakes import POOL_DIM
from PIL import Image

from skinfeat.cli import cli
from skinfeat.core.errors import CacheError, DataError
from skinfeat.data.layouts import load_dataset
from skinfeat.features.extract import extract_features
from skinfeat.features.store import read_features


def make_class_folders(root, per_class=5, size=(40, 30)):
    """MEL/ and NV/ folders of solid-colour JPEGs and PNGs: MEL reddish, NV bluish."""
    rng = np.random.default_rng(0)
    for cls, base in (("MEL", (200, 40, 40)), ("nv", (40, 40, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(base) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(pixels.astype(np.uint8)).save(root / cls / f"{cls.lower()}_{i}.{ext}")
    return root


@pytest.fixture
def class_dir(tmp_path):
    return make_class_folders(tmp_path / "data")


def test_extract_writes_documented_layout_and_pooled_values(class_dir, pool_module):
    manifest = load_dataset(data=class_dir)
    start = time.perf_counter()
    result = extract_features(manifest, pool_module, dataset_name="toy", progress=False)
    assert not result.reused and result.n_images == 10 and result.skipped == []
    # The whole call (loading the module, writing) and the backbone's share of it, said apart.
    assert 0 < result.seconds < result.wall_seconds <= time.perf_counter() - start
    with h5py.File(result.path) as f:
        # Each image file's content hash (16 hex digits of its sha256), which a model keeps of what it saw.
        want = [hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for p in manifest.paths]
        assert list(f["content_sha256"].asstr()[:]) == want
        assert f["features"].shape == (10, POOL_DIM) and f["features"].dtype == np.float32
        ids = list(f["image_id"].asstr()[:])
        assert ids == list(manifest.image_ids)
        assert list(f["label"][:]) == list(manifest.labels)
        assert f.attrs["format"] == "skinfeat-features"
        for attr in ("key", "module", "module_fingerprint", "input_size", "resize", "views",
                     "manifest_sha256", "skinfeat_version", "tensorflow_version",
                     "extract_seconds", "images_per_second"):
            assert attr in f.attrs, attr
        assert json.loads(f.attrs["input_size"]) == [224, 224]
        mean_rgb = f["features"][:, :3]
    # The pooled mean colour tells the reddish MEL images from the bluish NV ones.
    mel = manifest.labels == 0
    assert (mean_rgb[mel, 0] > mean_rgb[mel, 2]).all() and (mean_rgb[~mel, 2] > mean_rgb[~mel, 0]).all()
    assert result.path.parent == Path(os.environ["SKINFEAT_FEATURES"])
    assert not list(result.path.parent.glob("*.parts")) and not list(result.path.parent.glob(".*tmp*"))


def test_rerun_is_noop_and_any_input_change_makes_a_new_file(class_dir, pool_module):
    manifest = load_dataset(data=class_dir)
    first = extract_features(manifest, pool_module, progress=False)
    mtime = first.path.stat().st_mtime_ns
    again = extract_features(manifest, pool_module, progress=False)
    assert again.reused and again.path == first.path and first.path.stat().st_mtime_ns == mtime

    padded = extract_features(manifest, pool_module, resize="pad", progress=False)  # crop is the default
    assert padded.path != first.path and not padded.reused
    robust = extract_features(manifest, pool_module, views=1, progress=False)
    mild = extract_features(manifest, pool_module, views=1, augment="mild", progress=False)
    assert mild.key != robust.key and "-mild1__" in mild.path.name and "-robust1__" in robust.path.name

    # Same ids, one image's bytes changed: a new key, never a silent reuse.
    some = Path(manifest.paths[0])
    Image.new("RGB", (40, 30), (0, 255, 0)).save(some, format="PNG" if some.suffix == ".png" else "JPEG")
    changed = extract_features(load_dataset(data=class_dir), pool_module, progress=False)
    assert changed.key != first.key and changed.path != first.path


def test_out_holding_other_inputs_is_refused(class_dir, pool_module, tmp_path):
    manifest = load_dataset(data=class_dir)
    out = tmp_path / "f.h5"
    extract_features(manifest, pool_module, out=out, progress=False)
    with pytest.raises(CacheError, match="holds features for other inputs"):
        extract_features(manifest, pool_module, out=out, resize="pad", progress=False)


def test_views_are_seeded_and_differ_from_clean(class_dir, pool_module, tmp_path):
    manifest = load_dataset(data=class_dir)
    a = read_features(extract_features(manifest, pool_module, views=3, augment_seed=1,
                                       out=tmp_path / "a.h5", progress=False).path)
    b = read_features(extract_features(manifest, pool_module, views=3, augment_seed=1,
                                       out=tmp_path / "b.h5", progress=False).path)
    c = read_features(extract_features(manifest, pool_module, views=3, augment_seed=2,
                                       out=tmp_path / "c.h5", progress=False).path)
    assert a.views.shape == (10, 3, POOL_DIM)
    np.testing.assert_array_equal(a.views, b.views)
    assert not np.allclose(a.views, c.views)
    assert not np.allclose(a.views[:, 0], a.features)
    plain = read_features(extract_features(manifest, pool_module, out=tmp_path / "p.h5", progress=False).path)
    np.testing.assert_array_equal(plain.features, a.features)


def break_images(class_dir):
    (class_dir / "MEL" / "zero.jpg").write_bytes(b"")
    good = (class_dir / "MEL" / "mel_0.jpg").read_bytes()
    (class_dir / "MEL" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (class_dir / "nv" / "text.png").write_text("not an image")


def test_unreadable_images_are_skipped_and_recorded(class_dir, pool_module):
    break_images(class_dir)
    result = extract_features(load_dataset(data=class_dir), pool_module, progress=False)
    skipped = dict(result.skipped)
    assert set(skipped) == {"zero", "truncated", "text"}
    assert "zero-byte" in skipped["zero"]
    with h5py.File(result.path) as f:
        assert set(f["skipped/image_id"].asstr()[:]) == {"zero", "truncated", "text"}
        assert f["features"].shape[0] == 10 and "zero" not in set(f["image_id"].asstr()[:])


def test_on_error_fail_stops_without_a_file(class_dir, pool_module, tmp_path):
    break_images(class_dir)
    out = tmp_path / "f.h5"
    with pytest.raises(DataError, match="--on-error skip"):
        extract_features(load_dataset(data=class_dir), pool_module, out=out, on_error="fail", progress=False)
    assert not out.exists()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 300 KiB file system, to fill up or remount read-only (needs root, as CI has)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)]).returncode:
        pytest.fail("could not mount a tmpfs: the full-disk/read-only tests need root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_gives_clear_error_and_leaves_nothing(tmp_path, tiny_tmpfs, pool_module, ham10000):
    manifest = load_dataset(data=ham10000).subset(range(2000))
    free = shutil.disk_usage(tiny_tmpfs).free
    (tiny_tmpfs / "filler").write_bytes(b"x" * (free - 16 * 1024))  # room for a lock, not a chunk
    with pytest.raises(CacheError, match="disk is full"):
        extract_features(manifest, pool_module, out=tiny_tmpfs / "f.h5", progress=False)
    assert not (tiny_tmpfs / "f.h5").exists()
    assert not [p for p in tiny_tmpfs.rglob("*") if "tmp" in p.name], "temporary files left behind"


def test_read_only_features_dir_gives_clear_error(class_dir, pool_module, tiny_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    result = CliRunner().invoke(cli, ["extract", "--data", str(class_dir), "--module", pool_module,
                                      "--out", str(tiny_tmpfs / "f.h5"), "--no-progress"])
    assert result.exit_code == 1
    assert "read-only" in result.output and "Traceback" not in result.output


KILL_SCRIPT = """
import sys
from skinfeat.data.layouts import load_dataset
from skinfeat.features.extract import extract_features
m = load_dataset(data=sys.argv[1]).subset(range(int(sys.argv[4])))
r = extract_features(m, sys.argv[2], out=sys.argv[3], chunk_size=64, progress=False)
print(r.reused)
"""


def test_sigkill_then_rerun_completes_equal_to_uninterrupted(tmp_path, pool_module, ham10000):
    n = 1500
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, "-c", KILL_SCRIPT, str(ham10000), pool_module]
    killed = tmp_path / "killed.h5"
    parts = tmp_path / "killed.h5.parts"
    proc = subprocess.Popen(args + [str(killed), str(n)], env=env)
    deadline = time.time() + 120
    while not (parts / "chunk-00002.npz").exists():
        assert proc.poll() is None and time.time() < deadline, "extraction ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not killed.exists(), "a killed run must not leave a finished-looking file"
    done_before = {p.name for p in parts.glob("chunk-*.npz")}
    assert 3 <= len(done_before) < n // 64

    subprocess.run(args + [str(killed), str(n)], env=env, check=True)
    whole = tmp_path / "whole.h5"
    subprocess.run(args + [str(whole), str(n)], env=env, check=True)
    a, b = read_features(killed), read_features(whole)
    assert len(a) == n
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    assert a.attrs["key"] == b.attrs["key"]
    assert not parts.exists()


def test_two_processes_on_one_key_do_not_corrupt(tmp_path, pool_module, ham10000):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "shared.h5"
    args = [sys.executable, "-c", KILL_SCRIPT, str(ham10000), pool_module, str(out), "800"]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    reused = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert reused == ["False", "True"]  # one extracted, the other waited and found it done
    assert len(read_features(out)) == 800


def test_cli_extract_prints_path_and_says_when_up_to_date(class_dir, pool_module):
    runner = CliRunner()
    args = ["extract", "--data", str(class_dir), "--module", pool_module, "--no-progress"]
    first = runner.invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    path = Path(first.stdout.strip().splitlines()[-1])
    assert path.exists() and path.suffix == ".h5"
    second = runner.invoke(cli, args, catch_exceptions=False)
    assert second.exit_code == 0 and "up to date" in second.stderr
    assert second.stdout.strip().splitlines()[-1] == str(path)
