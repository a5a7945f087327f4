"""Synthetic feature sets shaped like HAM10000 features, for tests and benchmarks
(a fixture, not part of the package: no real extraction writes such files).
Tests import it from the repository root, benchmarks through ``benchmarks/common.py``,
which puts the root on ``sys.path``: ``from devtools.synthetic import write_synthetic``.

Each class has a mean in a low-dimensional latent space; each lesion adds its
own offset (so images of one lesion resemble each other more than their class,
which is what makes lesion-leaky splits optimistic) and each image adds noise.
A fixed random projection lifts the latent vectors to ``dim`` features, plus
isotropic noise. ``separation`` sets how far apart the classes are.
"""

import hashlib

import numpy as np

from skinfeat.features.store import FeatureSet, write_features

# Images per class in HAM10000 (CLASSES order: MEL NV BCC AKIEC BKL DF VASC).
HAM10000_COUNTS = (1113, 6705, 514, 327, 1099, 115, 142)


def synthetic_feature_set(counts=HAM10000_COUNTS, dim=1280, separation=1.0, views=0,
                          random_labels=False, latent=32, seed=0, module="synthetic"):
    """A FeatureSet with ``sum(counts)`` images; ``random_labels`` shuffles the labels
    so that nothing can be learned. About 3 images in 4 start a new lesion."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int8)
    n = len(labels)
    new_lesion = rng.random(n) < 0.75
    new_lesion[np.r_[0, np.cumsum(counts)[:-1]]] = True  # a lesion never spans two classes
    lesion = np.cumsum(new_lesion) - 1
    means = rng.normal(scale=separation, size=(len(counts), latent))
    offsets = rng.normal(scale=0.6, size=(lesion.max() + 1, latent))
    z = means[labels] + offsets[lesion] + rng.normal(size=(n, latent))
    projection = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    x = z @ projection + rng.normal(scale=0.5, size=(n, dim))
    features = x.astype(np.float32)
    view_array = None
    if views:
        view_array = (features[:, None, :] + rng.normal(scale=0.3, size=(n, views, dim))).astype(np.float32)
    order = rng.permutation(n)  # interleave classes like a real manifest
    if random_labels:
        labels = rng.permutation(labels)
    image_ids = np.array([f"SYN_{i:07d}" for i in range(n)], dtype=object)
    lesion_ids = np.array([f"LES_{j:07d}" for j in lesion], dtype=object)
    key = hashlib.sha256(f"{module}|{counts}|{dim}|{separation}|{views}|{random_labels}|{seed}".encode())
    attrs = {"key": key.hexdigest(), "module": module, "module_source": "synthetic",
             "module_fingerprint": hashlib.sha256(module.encode()).hexdigest(), "input_size": 224,
             "resize": "bilinear", "views": int(views), "feature_dim": dim, "n_images": n,
             "images_per_second": 100.0, "dataset": "synthetic"}
    return FeatureSet(path="<synthetic>", features=features[order], image_ids=image_ids[order],
                      labels=labels[order], lesion_ids=lesion_ids[order],
                      views=None if view_array is None else view_array[order], attrs=attrs)


def write_synthetic(path, **kwargs):
    """Write ``synthetic_feature_set(**kwargs)`` as a features file at ``path``; returns the set."""
    fs = synthetic_feature_set(**kwargs)
    write_features(path, fs.features, fs.image_ids, fs.labels, fs.lesion_ids, views=fs.views,
                   attrs=fs.attrs)
    return fs


PAIR_RECALL = np.array([0.8, 0.7, 0.6, 0.75])  # classifier A's recall per class


def simulate_pair(rng, n_lesions, delta, grouped):
    """Two classifiers on a fresh sample of ``n_lesions`` lesions: A right with
    probability PAIR_RECALL[c] on average, B keeping each of A's hits with probability
    1 - delta / PAIR_RECALL[c], so B's recall is PAIR_RECALL[c] - delta and the true BMCA difference is
    ``delta``. ``grouped``: 1-4 images per lesion sharing its difficulty (a Beta
    draw around PAIR_RECALL[c]); else one image per lesion at exactly PAIR_RECALL[c]."""
    k = len(PAIR_RECALL)
    sizes = rng.integers(1, 5, n_lesions) if grouped else np.ones(n_lesions, int)
    lesion_class = rng.integers(0, k, n_lesions)
    p = PAIR_RECALL[lesion_class]
    q = rng.beta(3 * p, 3 * (1 - p)) if grouped else p
    lesion, cls, q = np.repeat(np.arange(n_lesions), sizes), np.repeat(lesion_class, sizes), np.repeat(q, sizes)
    right_a = rng.random(len(cls)) < q
    right_b = right_a & (rng.random(len(cls)) >= delta / PAIR_RECALL[cls])
    wrong = (cls + 1) % k
    return cls, np.where(right_a, cls, wrong), np.where(right_b, cls, wrong), lesion


__all__ = ["HAM10000_COUNTS", "PAIR_RECALL", "simulate_pair", "synthetic_feature_set", "write_synthetic"]
