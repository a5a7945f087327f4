"""Shared fixtures. Every test runs with skinfeat's caches in temporary
directories (set through environment variables, as a user would), so nothing
touches ~/.cache or ./features."""

import os
import subprocess
import tempfile

import pytest

from helpers import HAM10000
from model_factory import pool_module as _pool_module


def pytest_configure(config):
    """Run records and feature caches of code outside a test's own fixtures (module- and
    session-scoped fixtures run before the per-test folders are set) go to a folder of
    this process, never to ./runs or ./features of the checkout."""
    scratch = tempfile.mkdtemp(prefix="skinfeat-tests-")
    os.environ["SKINFEAT_RUNS"] = os.path.join(scratch, "runs")
    os.environ["SKINFEAT_FEATURES"] = os.path.join(scratch, "features")


@pytest.fixture(scope="session")
def skinfeat_home(tmp_path_factory, request):
    """One module cache per test session, so real backbones are built once; shared by
    the session's pytest-xdist workers (what is made there once is made under a lock:
    ``model_factory.once``, and the module cache's own build lock)."""
    if not hasattr(request.config, "workerinput"):  # not a pytest-xdist worker
        return tmp_path_factory.mktemp("skinfeat_home")
    home = tmp_path_factory.getbasetemp().parent / "skinfeat_home"  # the workers' common base
    home.mkdir(exist_ok=True)
    return home


@pytest.fixture(autouse=True)
def _isolated_caches(skinfeat_home, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINFEAT_HOME", str(skinfeat_home))
    monkeypatch.setenv("SKINFEAT_FEATURES", str(tmp_path / "features"))
    monkeypatch.setenv("SKINFEAT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def ham10000():
    """The real HAM10000 set in ../shared (required: the suite reads real data)."""
    if not (HAM10000 / "HAM10000_metadata.csv").exists():
        raise FileNotFoundError(f"expected the HAM10000 set at {HAM10000}; clone the repo beside ../shared")
    return HAM10000


@pytest.fixture(scope="session")
def pool_module(skinfeat_home):
    """The fake pooling backbone (a real SavedModel, 9 features), saved once per session."""
    return _pool_module(skinfeat_home)


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size, kind)``: a fresh tmpfs of ``size`` ("ok", "read-only" or "full"),
    unmounted at the end (needs root, as the test machines have)."""
    mounted = []

    def mount(size="1m", kind="ok"):
        place = tmp_path / f"mnt{len(mounted)}-{size}"
        place.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(place)]).returncode:
            pytest.fail("could not mount a tmpfs: the full-disk and read-only tests need root")
        mounted.append(place)
        if kind == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(place)], check=True)
        elif kind == "full":
            with open(place / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
        return place

    yield mount
    for place in mounted:
        subprocess.run(["umount", "-l", str(place)])


# The test files that take longest (measured with --durations=0 on the 2-core machine),
# longest first. The workers (pytest-xdist, a file per worker) take files in collection
# order, so these start first and no long file is left to run alone at the end.
LONGEST_FIRST = (  # measured from the 11:16 run of 2026-12-07 (junit times, setup included)
    "tests/features/test_ray_engine.py", "tests/backbones/test_ports.py", "tests/finetune/test_finetune.py",
    "tests/features/test_precision.py", "tests/features/test_extract.py", "tests/apps/test_explain.py",
    "tests/model/test_unusual.py",  # added 2026-12-08: about 40 s alone (the real backbone's model of 140 images)
    "tests/test_hostile_outputs.py", "tests/test_hostile_kills.py", "tests/test_path_forms.py", "tests/test_docs.py",
    "tests/runs/test_fit.py", "tests/apps/test_web.py", "tests/viz/test_viz.py", "tests/model/test_store.py",
    "tests/runs/test_ensemble.py", "tests/imaging/test_lesion.py", "tests/runs/test_evaluate.py",
    "tests/backbones/test_modules_cli.py", "tests/core/test_tf_runtime.py", "tests/heads/test_heads.py",
    "tests/features/test_join.py", "tests/model/test_predict.py", "tests/finetune/test_train.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
