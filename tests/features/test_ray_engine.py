"""``extract --engine ray`` on a real local Ray (started once for these tests):
the same file as the local engine, resumable after the driver is killed; and the
device choice, for real on this machine's TensorFlow and Ray."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from skinfeat.cli import cli
from skinfeat.data.layouts import load_dataset
from skinfeat.core.errors import UsageError
from skinfeat.features.extract import extract_features

TIMINGS = {"extract_seconds", "images_per_second", "created"}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "--ray-address and --workers are options of --engine ray"),
    (["--engine", "ray", "--workers", "0"], "0 is not in the range x>=1"),
    (["--engine", "spark"], "'spark' is not one of 'local', 'ray'"),
    (["--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'gpu'"),
    (["--engine", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
    (["--engine", "ray", "--ray-address", "headnode"], "--ray-address 'headnode': expected host:port"),
    # no address: a local Ray of this machine's CPUs, started for the run and shut down
    (["--engine", "ray", "--workers", str(os.cpu_count() + 1)], f"the Ray cluster has {os.cpu_count()} CPUs"),
])
def test_cli_bad_engine_options_are_one_line_errors(tmp_path, ham10000, pool_module, args, message):
    # First in the file: no Ray of this process runs yet, so the address is tried.
    images = tmp_path / "images"
    images.mkdir()
    os.symlink(load_dataset(data=ham10000).paths[0], images / "a.jpg")
    out = tmp_path / "f.h5"
    result = CliRunner().invoke(cli, ["extract", "--images", str(images), "--module", pool_module,
                                      "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("f.h5*"))


def _broken_image_dataset(root, ham10000, n):
    """``n`` real HAM10000 images plus a JPEG that is not one, as a class-folder set."""
    manifest = load_dataset(data=ham10000).subset(range(n))
    (root / "NV").mkdir(parents=True)
    for path in manifest.paths:
        os.symlink(path, root / "NV" / os.path.basename(path))
    (root / "NV" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return load_dataset(data=root)


def _same_files(a, b):
    """Assert the two feature files hold the same rows and attributes (timings aside)."""
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert sorted(fa) == sorted(fb)
        for name in ("image_id", "label", "lesion_id"):
            np.testing.assert_array_equal(fa[name][:], fb[name][:])
        for name in ("features", "views"):
            if name in fa:
                assert fa[name].shape == fb[name].shape
                assert np.abs(fa[name][:].astype(np.float64) - fb[name][:]).max() <= 1e-5
        assert list(fa["skipped/image_id"].asstr()[:]) == list(fb["skipped/image_id"].asstr()[:])
        da = {k: v for k, v in fa.attrs.items() if k not in TIMINGS}
        db = {k: v for k, v in fb.attrs.items() if k not in TIMINGS}
        assert da.keys() == db.keys()
        for k in da:
            assert str(da[k]) == str(db[k]), k


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_file(ray_cluster, tmp_path, ham10000):
    """The real default backbone, two actors (one chunk each), robust views and an
    unreadable image: the same file as the local engine's."""
    manifest = _broken_image_dataset(tmp_path / "data", ham10000, 40)
    kw = dict(views=1, augment="robust", chunk_size=32, progress=False)
    local = extract_features(manifest, out=tmp_path / "local.h5", **kw)
    ray = extract_features(manifest, out=tmp_path / "ray.h5", engine="ray", workers=2, **kw)
    assert not ray.reused and ray.n_images == local.n_images == 40
    assert [i for i, _ in ray.skipped] == ["broken"]
    _same_files(local.path, ray.path)
    assert not (tmp_path / "ray.h5.parts").exists()


N_CHUNKS = 15  # of 32 images: the runs that are killed


@pytest.fixture(scope="module")
def whole(tmp_path_factory, ham10000, pool_module):
    """The local engine's file of the first N_CHUNKS x 32 HAM10000 images."""
    manifest = load_dataset(data=ham10000).subset(range(N_CHUNKS * 32))
    out = tmp_path_factory.mktemp("whole") / "whole.h5"
    return manifest, extract_features(manifest, pool_module, out=out, chunk_size=32, progress=False).path


DRIVER = """
import sys
from skinfeat.data.layouts import load_dataset
from skinfeat.features.extract import extract_features
m = load_dataset(data=sys.argv[1]).subset(range(int(sys.argv[4])))
extract_features(m, sys.argv[2], out=sys.argv[3], chunk_size=32, progress=False, engine="ray",
                 ray_address=sys.argv[5], workers=1)
"""


def test_killed_driver_resumes_from_its_finished_chunks(ray_cluster, tmp_path, ham10000, pool_module, whole):
    manifest, whole_path = whole
    n = len(manifest)
    out, parts = tmp_path / "killed.h5", tmp_path / "killed.h5.parts"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(ham10000), pool_module, str(out), str(n),
                             ray_cluster], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.time() + 180
    while not (parts / "chunk-00001.npz").exists() and not (parts / "chunk-00002.npz").exists():
        assert proc.poll() is None and time.time() < deadline, "the driver ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed driver must not leave a finished-looking file"
    kept = sorted(parts.glob("chunk-*.npz"))
    assert 1 <= len(kept) < n // 32
    # Mark one kept chunk: the resumed run must take it as it is, not compute it again.
    marked = dict(np.load(kept[0]))
    marked["features"] = marked["features"] + 1000
    np.savez(kept[0], **marked)

    resumed = extract_features(manifest, pool_module, out=out, chunk_size=32, progress=False, engine="ray")
    with h5py.File(resumed.path) as a, h5py.File(whole_path) as b:
        np.testing.assert_array_equal(a["image_id"][:], b["image_id"][:])
        diff = a["features"][:] - b["features"][:]
    in_marked = np.isin(np.arange(n), marked["rows"])
    np.testing.assert_allclose(diff[in_marked], 1000, atol=1e-3)
    assert np.abs(diff[~in_marked]).max() <= 1e-5
    assert not parts.exists()


def test_device_choice_on_this_machine(ray_cluster, tmp_path, ham10000, pool_module):
    import tensorflow as tf

    from skinfeat.core.devices import resolve

    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    assert resolve("auto") == ("gpu" if has_gpu else "cpu")
    assert resolve("cpu") == "cpu"
    manifest = load_dataset(data=ham10000).subset(range(8))
    if has_gpu:
        assert resolve("gpu") == "gpu"
    else:
        for engine in ("local", "ray"):
            with pytest.raises(UsageError, match="--device gpu: no GPU is visible to") as err:
                extract_features(manifest, pool_module, out=tmp_path / f"{engine}.h5", device="gpu",
                                 engine=engine, progress=False)
            assert ("Ray cluster" in str(err.value)) == (engine == "ray")
            assert not list(tmp_path.glob(f"{engine}.h5*"))
    # A CPU-only path on a GPU is refused before any work, whichever the engine.
    with pytest.raises(UsageError, match="--precision bfloat16 is a CPU path"):
        from skinfeat.features.precision import check

        check("bfloat16", "gpu")


def _actor_pids():
    """Processes of Ray Data actors on this machine (Ray names them ray::MapWorker(...))."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(b"ray::MapWorker"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_a_lost_actor_is_replaced_and_its_chunk_redone(ray_cluster, tmp_path, pool_module, whole):
    import threading

    manifest, whole_path = whole
    out, parts = tmp_path / "ray.h5", tmp_path / "ray.h5.parts"
    done = {}
    worker = threading.Thread(target=lambda: done.update(result=extract_features(
        manifest, pool_module, out=out, chunk_size=32, progress=False, engine="ray", workers=1)))
    worker.start()
    deadline = time.time() + 180
    while not list(parts.glob("chunk-*.npz")):
        assert worker.is_alive() and time.time() < deadline, "the run ended before an actor could be killed"
        time.sleep(0.005)
    pids = _actor_pids()
    assert pids, "no Ray Data actor process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert len(list(parts.glob("chunk-*.npz"))) < N_CHUNKS, "the actor was killed after the last chunk"
    worker.join(300)
    assert not worker.is_alive() and "result" in done, "the run did not finish after its actor was killed"
    assert not parts.exists()
    _same_files(whole_path, out)


def test_ray_is_pinned_to_the_version_the_engine_follows():
    import configparser

    import ray

    from helpers import REPO
    from skinfeat.features.ray_engine import RAY_VERSION

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    for extra in ("ray", "test", "all"):
        assert f"ray[data]=={RAY_VERSION}" in cfg["options.extras_require"][extra].split()
    assert ray.__version__ == RAY_VERSION
