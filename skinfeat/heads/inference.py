"""The heads' prediction maths in numpy alone: one copy, called by the
scikit-learn heads themselves (``skinfeat.heads.*._log_proba``) and by the
predictor (``skinfeat.model.predictor``), which must not import scikit-learn,
LightGBM or TensorFlow (each costs seconds here).

``LOG_PROBA[head](state, params, directory)`` rebuilds a saved head's
log-probability function from its parameters (model.json), its arrays
(state.npz) and, for LightGBM, its text model (``skinfeat.heads.lgbm_text``,
the one re-implementation: LightGBM itself is what the head trains with).
The rest turns log-probabilities into what prediction reports: probabilities
in CLASSES columns, their mean over augmented views, the prior-adjustment
offsets and the decisions they give.
"""

from pathlib import Path

import numpy as np

from skinfeat.core.classes import CLASSES
from skinfeat.heads.lgbm_text import LightGBMText

LIGHTGBM_MODEL = "lightgbm.txt"  # the lightgbm head's text model in a model directory


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def signed_power(X, power):
    """``sign(x) * |x| ** power`` (power normalisation); ``power=1`` leaves X as is.
    float32 in, float32 out, as the heads train; float64 stays float64 (finite
    differences in ``skinfeat.apps.explain``)."""
    if power == 1:
        return X
    return (np.sign(X) * np.abs(X) ** power).astype(np.float64 if X.dtype == np.float64 else np.float32)


def linear_log_proba(X, power, mean, scale, coef, intercept, components=None):
    """The logreg head: signed power, standardise, optional PCA projection, softmax regression."""
    Z = (signed_power(X, power) - mean) / scale
    if components is not None:
        Z = Z @ components.T
    return log_softmax(Z @ coef.T + intercept)


def dense_log_proba(X, power, mean, scale, weights):
    """The softmax head: signed power, standardise, relu(z W + b) per hidden layer,
    then softmax(z W + b); ``weights`` is [W0, b0, W1, b1, ...] (no dropout at inference)."""
    z = (signed_power(X, power) - mean) / scale
    for i in range(0, len(weights) - 2, 2):
        z = np.maximum(z @ weights[i] + weights[i + 1], 0.0)
    return log_softmax(z @ weights[-2] + weights[-1])


def normalised(X, power, mean, scale):
    """The knn head's features: signed power, standardise, then unit length (cosine)."""
    Z = (signed_power(X, power) - mean) / scale
    return (Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


KNN_SMOOTHING = 0.01  # the share of the vote spread evenly over the classes


def knn_log_proba(queries, memory, labels, weights, k, temperature, n_classes, batch=512):
    """The knn head's log-probabilities: for each of ``queries`` [n, d] (unit rows),
    its ``k`` most similar rows of ``memory`` [N, d] vote for their ``labels``, each
    with ``weights`` x exp((cosine - 1) / temperature); the votes normalised, with
    KNN_SMOOTHING of them spread evenly."""
    out = np.empty((len(queries), n_classes))
    k = min(int(k), len(memory))
    for start in range(0, len(queries), batch):
        sims = queries[start:start + batch] @ memory.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.exp((np.take_along_axis(sims, top, axis=1) - 1.0) / temperature) * weights[top]
        scores = np.zeros((len(sims), n_classes))
        np.add.at(scores, (np.repeat(np.arange(len(sims)), k), labels[top].ravel()), votes.ravel())
        total = scores.sum(axis=1, keepdims=True)
        proba = (scores + KNN_SMOOTHING * total / n_classes) / np.maximum(total * (1 + KNN_SMOOTHING), 1e-300)
        out[start:start + batch] = np.log(np.maximum(proba, 1e-300))
    return out


def _knn(state, params, directory):
    memory = state["memory_"].astype(np.float32)
    mean, scale, power = state["mean_"], state["scale_"], params.get("power", 0.5)
    labels, weights = state["memory_labels_"].astype(int), state["memory_weights_"]
    k, n_classes = int(state["k_"]), int(state["n_classes_"])
    return lambda X: knn_log_proba(normalised(X, power, mean, scale), memory, labels, weights, k,
                                   params.get("temperature", 0.07), n_classes)


def _logreg(state, params, directory):
    arrays = [state[k] for k in ("mean_", "scale_", "coef_", "intercept_")]
    components, power = state.get("components_"), params.get("power", 1)
    return lambda X: linear_log_proba(X, power, *arrays, components=components)


def _softmax(state, params, directory):
    mean, scale, power = state["mean_"], state["scale_"], params.get("power", 1)
    weights = [state[f"weight_{i}"] for i in range(sum(name.startswith("weight_") for name in state))]
    return lambda X: dense_log_proba(X, power, mean, scale, weights)


def _lightgbm(state, params, directory):
    forest = LightGBMText(Path(directory) / LIGHTGBM_MODEL)
    return lambda X: log_softmax(forest.raw_score(X))


LOG_PROBA = {"logreg": _logreg, "softmax": _softmax, "lightgbm": _lightgbm, "knn": _knn}


def class_offsets(classes, offsets):
    """A head's prior-adjustment offsets (in the order of its ``classes``) in CLASSES
    order, 0 for classes it never saw."""
    full = np.zeros(len(CLASSES))
    full[np.asarray(classes, dtype=int)] = offsets
    return full


def in_classes_order(proba, classes):
    """Probabilities [n, k] over a head's ``classes`` as [n, len(CLASSES)] (0 for the others)."""
    full = np.zeros((len(proba), len(CLASSES)))
    full[:, np.asarray(classes, dtype=int)] = proba
    return full


def mean_over_views(predict_proba, classes, features, views=None):
    """Probabilities [n, len(CLASSES)]: the mean of ``predict_proba`` over the clean
    view ``features`` [n, d] and every augmented view in ``views`` [n, V, d] (None:
    the clean view only)."""
    arrays = [features] + ([] if views is None else [views[:, v] for v in range(views.shape[1])])
    proba = np.zeros((len(features), len(CLASSES)))
    for x in arrays:
        proba += in_classes_order(predict_proba(x), classes)
    return proba / len(arrays)


def decision_scores(proba, offsets):
    """log p + the prior-adjustment offsets (CLASSES order): their argmax is the decision."""
    with np.errstate(divide="ignore"):
        return np.log(proba) + offsets


def decide(proba, offsets):
    """The decisions (CLASSES indices) for probabilities in CLASSES order."""
    return np.argmax(decision_scores(proba, offsets), axis=1)


def adjusted(proba, offsets):
    """softmax(log p + offsets): probabilities whose argmax is the decision, for formats
    that score the argmax of submitted probabilities (ISIC)."""
    return np.exp(log_softmax(decision_scores(proba, offsets)))
