"""Resolving ``--module``: catalog, local SavedModels, archives, handles served
from localhost, the module cache, and the errors users see. Offline and fast:
the modules here are tiny SavedModels written at test time."""

import functools
import http.server
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest
import tensorflow as tf

from skinfeat.backbones.resolve import DEFAULT_MODULE, resolve_module
from skinfeat.backbones import cache
from skinfeat.backbones.catalog import load_catalog
from skinfeat.backbones.torch_legacy import LegacyTorchError, load_state_dict
from skinfeat.core.errors import CacheError, ModuleError


class Pool(tf.Module):
    """A stand-in backbone: global average pooling, [B, H, W, 3] -> [B, 3]."""

    def __init__(self, spec):
        super().__init__()
        self.__call__ = tf.function(self.pool, input_signature=[spec])

    def pool(self, images):
        return tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2])


class SpatialMap(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return images * 2.0


def save(module, path):
    tf.saved_model.save(module, str(path))
    return path


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    return save(Pool(tf.TensorSpec([None, None, None, 3], tf.float32)),
                tmp_path_factory.mktemp("pool") / "pool")


def make_tarball(saved_model_dir, archive):
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(saved_model_dir.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


# --- catalog ------------------------------------------------------------------

def test_catalog_entries_say_what_users_and_code_need():
    catalog = load_catalog()
    assert DEFAULT_MODULE in catalog.entries and catalog.entries[DEFAULT_MODULE].builtin
    builtins = {e.name for e in catalog.builtins()}
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "mobilenet-v1"} <= builtins
    for entry in catalog.entries.values():
        assert entry.source and entry.license and entry.pretraining and entry.preprocessing
        assert entry.feature_dim > 0 and entry.value_range == (0.0, 1.0)
        assert entry.input_size is None or len(entry.input_size) == 2
        assert entry.builtin or entry.handle.startswith("https://")
        if entry.builtin:
            assert entry.weights_path().is_file()


def test_unknown_name_lists_close_matches():
    with pytest.raises(ModuleError, match="unknown backbone 'efficientnet-lite7'.*efficientnet-lite0"):
        resolve_module("efficientnet-lite7")


def test_missing_path_is_reported_as_such(tmp_path):
    with pytest.raises(ModuleError, match="no such SavedModel directory or archive"):
        resolve_module(str(tmp_path / "nowhere"))


# --- local SavedModels --------------------------------------------------------

def test_local_saved_model_directory(pool_dir):
    mod = resolve_module(str(pool_dir))
    assert mod.name == str(pool_dir.resolve()) and mod.path == str(pool_dir.resolve())
    assert mod.input_size is None and mod.feature_dim == 3
    images = tf.random.uniform([2, 8, 8, 3])
    np.testing.assert_allclose(mod.load()(images), tf.reduce_mean(images, axis=[1, 2]), rtol=1e-6)
    assert len(mod.fingerprint) == 64
    assert mod.fingerprint == resolve_module(str(pool_dir)).fingerprint == cache.fingerprint(pool_dir)
    info = mod.describe()
    assert info["feature_dim"] == 3 and info["fingerprint"] == mod.fingerprint and info["input_size"] is None


def test_directory_that_is_not_a_saved_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModuleError, match="not a SavedModel"):
        resolve_module(str(tmp_path))


def test_corrupt_saved_model_is_a_clear_error(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ModuleError, match="cannot load the SavedModel"):
        resolve_module(str(tmp_path))


@pytest.mark.parametrize("module, message", [
    (Pool(tf.TensorSpec([None, None, None, 3], tf.uint8)), "takes uint8"),
    (Pool(tf.TensorSpec([None, None, 3], tf.float32)), "not float32 images"),
    (SpatialMap(), "not a float32 feature vector"),
])
def test_saved_model_that_is_not_an_image_feature_vector(tmp_path, module, message):
    path = save(module, tmp_path / "bad")
    with pytest.raises(ModuleError, match=f"not an image feature-vector module.*{message}"):
        resolve_module(str(path))


def test_fixed_size_module_refuses_another_size(tmp_path):
    path = save(Pool(tf.TensorSpec([None, 32, 32, 3], tf.float32)), tmp_path / "fixed")
    assert resolve_module(str(path)).input_size == (32, 32)
    assert resolve_module(str(path), input_size=(32, 32)).input_size == (32, 32)
    with pytest.raises(ModuleError, match=r"expects image size \(32, 32\), but size \(64, 64\)"):
        resolve_module(str(path), input_size=(64, 64))


def test_tarball_is_unpacked_once_into_the_cache(pool_dir, tmp_path, skinfeat_home):
    archive = make_tarball(pool_dir, tmp_path / "pool.tar.gz")
    mod = resolve_module(str(archive))
    assert mod.name == str(archive.resolve())
    assert mod.path.startswith(str(skinfeat_home)) and mod.feature_dim == 3
    assert resolve_module(str(archive)).path == mod.path
    assert mod.fingerprint == cache.fingerprint(pool_dir)


def test_file_that_is_not_an_archive(tmp_path):
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(ModuleError, match="is a file; expected a SavedModel directory or a .tar.gz"):
        resolve_module(str(tmp_path / "model.h5"))


# --- handles, through tensorflow_hub's resolver -------------------------------

@pytest.fixture
def http_root(tmp_path):
    """A directory served over HTTP on 127.0.0.1 (a stand-in for tfhub.dev/Kaggle)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_handle_is_fetched_and_cached_by_tensorflow_hub(pool_dir, http_root, tmp_path, monkeypatch):
    root, url = http_root
    make_tarball(pool_dir, root / "pool.tar.gz")
    hub_cache = tmp_path / "tfhub"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(hub_cache))
    handle = f"{url}/pool.tar.gz"
    mod = resolve_module(handle)
    assert mod.name == handle and mod.path.startswith(str(hub_cache))
    assert mod.feature_dim == 3 and mod.fingerprint == cache.fingerprint(pool_dir)
    (root / "pool.tar.gz").unlink()  # now only the cache can answer
    assert resolve_module(handle).path == mod.path


def test_handle_without_network_points_to_the_offline_builtins(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub"))
    with pytest.raises(ModuleError, match="could not fetch.*network.*efficientnet-lite0"):
        resolve_module("http://127.0.0.1:9/unreachable/feature_vector/1")


# --- the module cache ---------------------------------------------------------

def _fake_saved_model(tmp):
    (tmp / "saved_model.pb").write_bytes(b"graph")
    (tmp / "variables").mkdir()
    (tmp / "variables" / "variables.index").write_bytes(b"weights")
    return {"name": "fake"}


def test_atomic_build_writes_descriptor_and_fingerprint(tmp_path):
    final = cache.atomic_build(tmp_path / "m", _fake_saved_model, is_complete=lambda d: d.exists())
    descriptor = cache.read_descriptor(final)
    assert descriptor["name"] == "fake" and descriptor["fingerprint"] == cache.fingerprint(final)
    cache.verify(final)
    (final / "variables" / "variables.index").write_bytes(b"tampered")
    with pytest.raises(ModuleError, match="corrupt"):
        cache.verify(final)


def test_failed_build_leaves_nothing_behind(tmp_path):
    def produce(tmp):
        _fake_saved_model(tmp)
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError):
        cache.atomic_build(tmp_path / "m", produce, is_complete=lambda d: d.exists())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lock"]


def test_a_build_killed_earlier_is_swept_and_a_forced_rebuild_keeps_the_old_one_until_done(tmp_path):
    final = cache.atomic_build(tmp_path / "m", _fake_saved_model, is_complete=lambda d: d.exists())
    killed = tmp_path / f".m.{2**22 + 3}.abcdefgh.tmp"  # what a killed build (no such process) left
    killed.mkdir()
    (killed / "saved_model.pb").write_bytes(b"half")

    def produce(tmp):
        assert (final / "saved_model.pb").read_bytes() == b"graph"  # the old build is still there
        return _fake_saved_model(tmp)

    cache.atomic_build(final, produce, is_complete=lambda d: d.exists(), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.lock"]
    cache.verify(final)


def test_concurrent_builds_build_once(tmp_path):
    calls = []

    def produce(tmp):
        calls.append(1)
        threading.Event().wait(0.3)
        return _fake_saved_model(tmp)

    final = tmp_path / "m"
    threads = [threading.Thread(target=cache.atomic_build, args=(final, produce),
                                kwargs={"is_complete": lambda d: d.exists()}) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.read_descriptor(final)["name"] == "fake"


def test_read_only_cache_is_a_clear_error(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    if os.access(home, os.W_OK):  # root ignores permission bits: use a path no one can create
        (tmp_path / "file").write_text("")
        home = tmp_path / "file" / "home"
    monkeypatch.setenv("SKINFEAT_HOME", str(home))
    with pytest.raises(CacheError, match="cannot write the module cache.*SKINFEAT_HOME"):
        resolve_module("efficientnet-lite1")


# --- the legacy torch reader --------------------------------------------------

def test_legacy_reader_reads_the_wheel_weights():
    sd = load_state_dict(load_catalog().entries["efficientnet-lite0"].weights_path())
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_bn1.running_var"].min() > 0


def test_legacy_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"x": Evil()}):
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(LegacyTorchError, match="refusing to load global"):
        load_state_dict(path)
