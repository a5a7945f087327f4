"""Fitted model directories for the predict / explain / report tests, made the way
a user makes them (extract, then ``fit --out``, which exports the backbone) on a
few real HAM10000 images. Each is built once per test session, under the
session's SKINFEAT_HOME, and reused by every test module that asks for it."""

import contextlib
import fcntl
import functools
import json
import shutil
from pathlib import Path

import numpy as np

from fakes import make_pooling_module, make_trainable_module

PER_CLASS = 4  # 28 images: every class, enough for 2-fold CV


@functools.lru_cache(maxsize=None)
def ham_manifest(ham10000):
    """The Manifest of the whole HAM10000 set, read once per test session (treat it as read-only)."""
    from skinfeat.data.layouts import load_dataset

    return load_dataset(data=ham10000)


def ham_subset(ham10000, per_class=PER_CLASS, skip=0):
    """A manifest of the first ``per_class`` images of each class (after ``skip``)."""
    manifest = ham_manifest(ham10000)
    labels = np.asarray(manifest.labels)
    rows = [i for c in range(7) for i in np.flatnonzero(labels == c)[skip:skip + per_class]]
    return manifest.subset(sorted(rows))


def build_model(root, ham10000, module, head="logreg", views=0, params=None, operating_point=None):
    """``root/model`` fitted with ``head`` on ``module`` features of a HAM subset
    (``root/features.h5``), with ``operating_point`` (``fit --operating-point``) when
    given; built once, then reused."""
    from skinfeat.runs.fit import run_fit
    from skinfeat.features.extract import extract_features

    root = Path(root)
    done = root / "done.json"
    with once(root):
        if done.exists():
            return json.loads(done.read_text())
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        result = extract_features(ham_subset(ham10000), module, out=root / "features.h5", views=views,
                                  progress=False)
        record = run_fit(result.path, head, params, cv=2, out=root / "model", runs=root / "runs",
                         operating_point=operating_point)
        info = {"model": str(root / "model"), "features": str(result.path), "record": record["record_path"],
                "module": str(module)}
        done.write_text(json.dumps(info))
        return info


@contextlib.contextmanager
def once(path):
    """Hold an exclusive lock beside ``path`` for the block: the test workers
    (pytest-xdist) share the session's SKINFEAT_HOME, and what is made there once
    is made by one of them while the others wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pool_module(skinfeat_home):
    """The fake pooling backbone (9 features) of the test session, saved once."""
    module = Path(skinfeat_home) / "test_models" / "pool_module"
    with once(module):
        if not module.exists():
            make_pooling_module(module)
    return str(module)


def pool_model(skinfeat_home, ham10000, head="logreg", operating_point=None):
    """Fast: the fake pooling backbone (9 features), 2 augmented views per image."""
    home = Path(skinfeat_home) / "test_models"
    module = pool_module(skinfeat_home)
    tag = f"-{operating_point.replace(':', '-').replace('=', '')}" if operating_point else ""
    return build_model(home / f"pool-{head}{tag}", ham10000, module, head, views=2,
                       params={"max_epochs": 5} if head == "softmax" else None, operating_point=operating_point)


def map_model(skinfeat_home, ham10000, head="logreg", params=None):
    """Fast, with a last convolutional map (Grad-CAM): the tiny trainable backbone of
    tests/fakes.py (one strided convolution, 8 channels, global average pooling)."""
    home = Path(skinfeat_home) / "test_models"
    module = home / "tiny_module"
    with once(module):
        if not module.exists():
            make_trainable_module(module)
    tag = "-".join(f"{k}{v}" for k, v in sorted((params or {}).items()))
    return build_model(home / f"tiny-{head}{tag}", ham10000, str(module), head, params=params)


def write_ham_folder(data, ham10000, image_ids):
    """A HAM10000-layout dataset at ``data``: the metadata rows of ``image_ids`` and
    symbolic links to their images. Returns ``data``."""
    data = Path(data)
    (data / "images").mkdir(parents=True)
    lines = (ham10000 / "HAM10000_metadata.csv").read_text().splitlines()
    wanted = set(image_ids)
    rows = [line for line in lines[1:] if line.split(",")[1] in wanted]
    (data / "HAM10000_metadata.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    for image_id in wanted:
        (data / "images" / f"{image_id}.jpg").symlink_to(next(ham10000.glob(f"*/{image_id}.jpg")))
    return data


def lite0_model(skinfeat_home, ham10000, head="logreg"):
    """Real: the built-in EfficientNet-Lite0 backbone."""
    return build_model(Path(skinfeat_home) / "test_models" / f"lite0-{head}", ham10000,
                       "efficientnet-lite0", head)
