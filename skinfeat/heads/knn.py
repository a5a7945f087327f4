"""``knn``: k-nearest-neighbour classification on normalised features, the standard
probe of frozen features (DINO, CLIP_benchmark): signed power, standardise, L2
normalise, then a vote of the ``k`` most cosine-similar training rows, each
weighted by ``exp(similarity / temperature)``, with ``k`` chosen on the inner
lesion-grouped split."""

import numpy as np
from sklearn.metrics import log_loss

from skinfeat.heads.base import BaseHead
from skinfeat.heads.inference import knn_log_proba, normalised, signed_power

DEFAULT_KS = (5, 10, 20, 40)


class KNNHead(BaseHead):
    """The training rows (all views) are the head's memory, stored as float16 in a
    saved model (a 10,000-image, 3-view set of 2,688-D features takes 160 MB).
    ``k="auto"`` scores each of ``ks`` on the inner lesion-grouped validation part
    (neighbours from the training part) and keeps the lowest class-weighted
    log-loss, as ``logreg`` picks its penalty; the chosen ``k_`` is recorded.
    Probabilities are the normalised votes with 1 % of the vote spread evenly
    over the classes (no class gets 0). Decisions are corrected by the training
    prior (``adjust="prior"``) at the logreg head's strength."""

    name = "knn"

    def __init__(self, k="auto", ks=DEFAULT_KS, temperature=0.07, power=0.5, batch=512,
                 class_weight="none", sampling="none", adjust="prior", adjust_strength=0.85,
                 val_fraction=0.15, random_state=0):
        self.store_params(locals())

    def _fit(self, X, y, w, train, val, full):
        self.n_classes_ = int(y.max()) + 1
        X = np.asarray(X, np.float32)
        self.mean_, self.scale_ = self._scaling(X[full])
        Z = normalised(X, self.power, self.mean_, self.scale_)
        ks = [self.k] if self.k != "auto" else sorted(self.ks)
        k, val_log_proba = ks[len(ks) // 2], None
        if len(ks) > 1 and val is not None:
            best = (np.inf,)
            for candidate in ks:
                logp = self._vote(Z[val], Z[train], y[train], w[train], candidate)
                loss = log_loss(y[val], np.exp(logp), sample_weight=w[val], labels=range(self.n_classes_))
                if loss < best[0]:
                    best = (loss, candidate, logp)
            _, k, val_log_proba = best
        self.k_ = int(k)
        self.memory_ = Z[full].astype(np.float16)
        self._memory32 = self.memory_.astype(np.float32)  # what the votes use: the saved precision
        self.memory_labels_ = y[full].astype(np.int16)
        self.memory_weights_ = w[full].astype(np.float32)
        return val_log_proba

    def _scaling(self, X):
        P = signed_power(X, self.power)
        std = P.std(axis=0)
        return P.mean(axis=0), np.where(std > 1e-12, std, 1.0).astype(np.float32)

    def _vote(self, queries, memory, labels, weights, k):
        return knn_log_proba(queries, memory, labels, weights, k, self.temperature, self.n_classes_, self.batch)

    def _log_proba(self, X):
        Z = normalised(np.asarray(X, np.float32), self.power, self.mean_, self.scale_)
        return self._vote(Z, self._memory32, self.memory_labels_, self.memory_weights_, self.k_)

    def _arrays(self):
        return {"mean_": self.mean_, "scale_": self.scale_, "memory_": self.memory_,
                "memory_labels_": self.memory_labels_, "memory_weights_": self.memory_weights_,
                "k_": np.asarray(self.k_), "n_classes_": np.asarray(self.n_classes_)}

    def _set_arrays(self, state):
        self.mean_, self.scale_ = state["mean_"], state["scale_"]
        self.memory_, self.memory_labels_ = state["memory_"], state["memory_labels_"]
        self.memory_weights_ = state["memory_weights_"]
        self.k_, self.n_classes_ = int(state["k_"]), int(state["n_classes_"])
        self._memory32 = self.memory_.astype(np.float32)
