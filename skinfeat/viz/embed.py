"""2-D maps of a feature space (PCA, t-SNE, UMAP) and their coordinate cache.

    from skinfeat.viz.embed import embedding_for
    emb = embedding_for(read_features(path), method="umap", subsample=3000, seed=0)
    emb.coords   # [n, 2] float32, rows emb.indices of the feature file

t-SNE and UMAP first reduce the features to ``pca_dims`` (50) principal
components: standard practice, and it makes the neighbour search cheap.
Coordinates are cached under ``$SKINFEAT_HOME/viz`` as one ``.npz`` per key; the
key covers the feature file's identity, the method and all its parameters, the
subsample, the seed and the version of the library that computes the map, so
re-styling a plot never recomputes and changing any input always does.
"""

import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np

from skinfeat.core.atomic import write_atomically
from skinfeat.core.errors import UsageError
from skinfeat.core.paths import skinfeat_home
from skinfeat.core.writable import reason

CACHE_VERSION = 1


# ----------------------------------------------------------------------------- methods

def _pca(x, n_components, seed):
    from sklearn.decomposition import PCA

    n_components = min(n_components, *x.shape)
    if n_components >= x.shape[1]:
        return x
    return PCA(n_components, svd_solver="randomized", random_state=seed).fit_transform(x)


def _run_pca(x, seed):
    return _pca(x, 2, seed)


def _run_tsne(x, seed, pca_dims, perplexity):
    from sklearn.manifold import TSNE

    x = _pca(x, pca_dims, seed)
    perplexity = min(perplexity, max(1.0, (len(x) - 1) / 3))  # sklearn requires perplexity < n
    return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed, n_jobs=-1).fit_transform(x)


def _import_umap():
    """``umap`` without its ParametricUMAP, whose import loads TensorFlow: 6-7 s of a
    fresh process on this machine, for a class skinfeat never uses."""
    if "umap" in sys.modules or "tensorflow" in sys.modules:
        import umap
        return umap
    sys.modules["umap.parametric_umap"] = None  # makes `from .parametric_umap import` fail
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            import umap
    finally:
        del sys.modules["umap.parametric_umap"]
    return umap


def _run_umap(x, seed, pca_dims, n_neighbors, min_dist, init):
    """UMAP on exact neighbours from scikit-learn: on 10,015 x 50 the search takes under
    a second, where umap's own NN-descent spends a minute compiling numba code in every
    fresh process. ``init="pca"`` keeps the global layout (Kobak & Linderman 2021) and,
    unlike the spectral default, gives the same map for the same seed when the
    neighbour graph falls apart into separate clusters."""
    from sklearn.neighbors import NearestNeighbors

    umap = _import_umap()
    x = _pca(x, pca_dims, seed)
    k = min(n_neighbors, len(x) - 1)
    dists, indices = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)  # self first, as umap's
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, init=init, random_state=seed,
                        precomputed_knn=(indices, dists.astype(np.float32), None))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # random_state: one thread
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")  # no .transform needed
        return reducer.fit_transform(x)


@dataclass(frozen=True)
class Method:
    """A 2-D mapping: its function ``run(x, seed, **params)``, default parameters, the
    package whose version is part of the cache key, and the axis label."""

    name: str
    run: Callable
    defaults: dict = field(default_factory=dict)
    package: str = "scikit-learn"
    axis: str = ""


METHODS = {
    "pca": Method("pca", _run_pca, {}, "scikit-learn", "PC"),
    "tsne": Method("tsne", _run_tsne, {"pca_dims": 50, "perplexity": 30.0}, "scikit-learn", "t-SNE "),
    "umap": Method("umap", _run_umap, {"pca_dims": 50, "n_neighbors": 15, "min_dist": 0.1, "init": "pca"}, "umap-learn",
                   "UMAP "),
}


def get_method(name):
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown map method {name!r}; choose one of {', '.join(METHODS)}") from None


def method_params(method, **params):
    """The method's full parameters: its defaults overridden by ``params`` (unknown ones refused)."""
    m = get_method(method)
    unknown = sorted(set(params) - set(m.defaults))
    if unknown:
        known = ", ".join(m.defaults) or "none"
        raise UsageError(f"{method} takes no parameter {', '.join(unknown)}; its parameters: {known}")
    return {**m.defaults, **params}


def embed(features, method="umap", seed=0, **params):
    """2-D coordinates ``[N, 2]`` float32 of ``features [N, D]`` (no cache)."""
    m = get_method(method)
    x = np.asarray(features, dtype=np.float32)
    if len(x) < 3:
        raise UsageError(f"a 2-D map needs at least 3 feature vectors, got {len(x)}")
    return np.asarray(m.run(x, seed, **method_params(method, **params)), dtype=np.float32)


# ----------------------------------------------------------------------------- subsets

def subsample_indices(labels, n, seed=0):
    """Sorted indices of ``n`` rows drawn at random, each class (label value, -1
    included) keeping its share within one row; all rows when ``n`` is None or >= N."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n < 1:
        raise UsageError(f"--subsample must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    # Rank the rows of each class in random order and scale to [0, 1): taking the
    # n smallest keys takes every class in proportion to its size.
    key = np.empty(len(labels))
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        key[rows] = (rng.permutation(len(rows)) + rng.random()) / len(rows)
    return np.sort(np.argsort(key, kind="stable")[:n])


# ----------------------------------------------------------------------------- cache

@dataclass
class Embedding:
    """2-D coordinates of rows ``indices`` of a feature file."""

    coords: np.ndarray  # [n, 2] float32
    indices: np.ndarray  # [n] rows of the feature file
    method: str
    params: dict
    seed: int
    seconds: float  # time the computation took (when it was cached, too)
    computed: bool  # False: read from the cache
    cache_path: Path | None = None

    @property
    def axis_labels(self):
        prefix = METHODS[self.method].axis
        return f"{prefix}1", f"{prefix}2"


def viz_cache_dir():
    """Where map coordinates are cached: ``$SKINFEAT_HOME/viz``."""
    return skinfeat_home() / "viz"


def features_identity(fs):
    """The feature file's ``key`` attribute, or a hash of its contents where it has none."""
    if fs.attrs.get("key"):
        return str(fs.attrs["key"])
    digest = hashlib.sha256(np.ascontiguousarray(fs.features, dtype=np.float32).tobytes())
    digest.update("\n".join(map(str, fs.image_ids)).encode())
    return "content-" + digest.hexdigest()


def cache_key(fs, method, params, subsample, seed):
    parts = {
        "cache_version": CACHE_VERSION,
        "features": features_identity(fs),
        "n": len(fs),
        "method": method,
        "params": params,
        "subsample": subsample,
        "seed": seed,
        METHODS[method].package: version(METHODS[method].package),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


def embedding_for(fs, method="umap", subsample=None, seed=0, cache_dir=None, **params):
    """The 2-D map of a FeatureSet (or a subsample), read from the cache or computed and cached."""
    params = method_params(method, **params)
    if subsample is not None and subsample >= len(fs):
        subsample = None  # all rows: the same map as no subsample
    key, parts = cache_key(fs, method, params, subsample, seed)
    path = Path(cache_dir or viz_cache_dir()) / f"{method}-{key[:24]}.npz"
    indices = subsample_indices(fs.labels, subsample, seed)
    cached = _load(path, fs.image_ids[indices])
    if cached is not None:
        coords, seconds = cached
        return Embedding(coords, indices, method, params, seed, seconds, False, path)
    start = time.perf_counter()
    coords = embed(fs.features[indices], method, seed, **params)
    seconds = time.perf_counter() - start
    try:
        _save(path, coords=coords, image_ids=np.asarray(fs.image_ids[indices], dtype=str),
              seconds=seconds, descriptor=json.dumps(parts))
    except OSError as exc:  # a cache: the map is drawn without it

        print(f"note: cannot cache the map's coordinates in {path.parent} ({reason(exc)}); "
              "they are computed again next time", file=sys.stderr)
        path = None
    return Embedding(coords, indices, method, params, seed, seconds, True, path)


def _load(path, image_ids):
    """(coords, seconds) from a cache file that maps exactly ``image_ids``; None otherwise."""
    try:
        with np.load(path) as f:
            if list(f["image_ids"]) != [str(i) for i in image_ids]:
                return None
            return f["coords"], float(f["seconds"])
    except (OSError, KeyError, ValueError):  # absent or unreadable: recompute
        return None


def _save(path, **arrays):
    """Write the cache file atomically: a temporary name in the same folder, then rename."""
    write_atomically(path, lambda f: np.savez(f, **arrays), binary=True)
