"""Fitted heads evaluated with numpy alone, from a model directory's files, for
fast prediction: no scikit-learn, LightGBM or TensorFlow import (each costs
seconds here).

Each evaluator reproduces its head's ``_log_proba`` from its parameters
(model.json), the arrays in ``state.npz`` and, for LightGBM, its text model.
``HeadFunction`` maps the head's classes onto the CLASSES columns, as
``skinfeat.evaluate.predict_tta`` does, and keeps probabilities and decisions
apart as the heads do: ``HeadFunction(X)`` is ``predict_proba`` (as trained),
``adjust(proba)`` adds the prior-adjustment offsets (``adjusted_proba``: its
argmax is the head's decision).

The heads keep evolving, so this copy is checked, twice: the tests hold every
evaluator against the real head, and ``save_model`` runs ``check_numpy_head``
on the fitted head and records the result in model.json (``numpy_head``). A
model without a passed check (or a head without an evaluator here) is
evaluated by the head itself, through ``skinfeat.model_io`` (slower to import).
"""

from pathlib import Path

import numpy as np

from skinfeat.classes import CLASSES
from skinfeat.errors import ModelError

STATE = "state.npz"
LIGHTGBM_MODEL = "lightgbm.txt"


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def signed_power(X, power):
    """``skinfeat.heads.base.signed_power``: sign(x) |x|^power (float64 stays float64)."""
    if power == 1:
        return X
    return (np.sign(X) * np.abs(X) ** power).astype(np.float64 if X.dtype == np.float64 else np.float32)


def _logreg(state, directory, params):
    mean, scale, components = state["mean_"], state["scale_"], state.get("components_")
    coef, intercept, power = state["coef_"], state["intercept_"], params.get("power", 1)

    def log_proba(X):
        Z = (signed_power(X, power) - mean) / scale
        if components is not None:
            Z = Z @ components.T
        return log_softmax(Z @ coef.T + intercept)
    return log_proba


def _softmax(state, directory, params):
    mean, scale, power = state["mean_"], state["scale_"], params.get("power", 1)
    weights = [state[f"weight_{i}"] for i in range(sum(name.startswith("weight_") for name in state))]

    def log_proba(X):
        z = (signed_power(X, power) - mean) / scale
        for i in range(0, len(weights) - 2, 2):  # hidden layers: relu(z W + b)
            z = np.maximum(z @ weights[i] + weights[i + 1], 0.0)
        return log_softmax(z @ weights[-2] + weights[-1])
    return log_proba


def _lightgbm(state, directory, params):
    forest = LightGBMText(Path(directory) / LIGHTGBM_MODEL)
    return lambda X: log_softmax(forest.raw_score(X))


EVALUATORS = {"logreg": _logreg, "softmax": _softmax, "lightgbm": _lightgbm}


class HeadFunction:
    """features [n, d] -> probabilities [n, len(CLASSES)] of a saved head."""

    def __init__(self, directory, manifest, checked=True):
        """``checked``: use the numpy evaluator only if model.json records that it
        passed ``check_numpy_head`` (else the head itself)."""
        directory = Path(directory)
        name = manifest.get("head")
        try:
            with np.load(directory / STATE, allow_pickle=False) as npz:
                state = {key: npz[key] for key in npz.files}
            self.columns = np.asarray(state["classes_"], dtype=int)
            self.offsets = np.zeros(len(CLASSES))  # in CLASSES order, 0 for classes never seen
            self.offsets[self.columns] = state["class_offsets_"]
            self.n_features = int(state["n_features_in_"])
            self.exact = name in EVALUATORS and (not checked or (manifest.get("numpy_head") or {}).get("ok"))
            if self.exact:
                self._log_proba = EVALUATORS[name](state, directory, manifest.get("params") or {})
            else:
                self._log_proba = self._generic(directory)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"model {directory} is incomplete or damaged: cannot read its {name} head "
                             f"({type(exc).__name__}: {exc}); re-fit with `skinfeat fit --out {directory}`") from None

    @staticmethod
    def _generic(directory):
        from skinfeat.model_io import load_model

        head = load_model(directory).head
        return head.predict_log_proba

    def __call__(self, features):
        """Probabilities [n, 7] as trained (CLASSES columns, 0 for classes never seen).
        float32 features are evaluated in float32 like the head; float64 ones (for
        finite differences) in float64."""
        X = np.asarray(features)
        X = X if X.dtype == np.float64 and self.exact else X.astype(np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelError(f"the head expects {self.n_features} features per image, got shape "
                             f"{X.shape}; the backbone and head of this model do not belong together")
        proba = np.zeros((len(X), len(CLASSES)))
        proba[:, self.columns] = np.exp(self._log_proba(X))
        return proba

    def adjust(self, proba):
        """Probabilities [n, 7] with the head's prior adjustment: softmax(log p + offsets)."""
        with np.errstate(divide="ignore"):
            scores = np.log(proba) + self.offsets
        return np.exp(log_softmax(scores))


def check_numpy_head(directory, manifest, head, n=64, tolerance=1e-6):
    """Compare the numpy evaluation of the head saved in ``directory`` with the
    fitted ``head`` itself on probe features; the ``numpy_head`` record of model.json."""
    if manifest.get("head") not in EVALUATORS:
        return {"ok": False, "why": f"no numpy evaluator for head {manifest.get('head')!r}"}
    rng = np.random.default_rng(0)
    X = (np.abs(rng.normal(size=(n, int(head.n_features_in_)))) * rng.random((n, 1)) * 4).astype(np.float32)
    X[: n // 4] *= rng.random((n // 4, X.shape[1])) < 0.5  # exact zeros, as after ReLU
    columns = np.asarray(head.classes_, dtype=int)
    fast = HeadFunction(directory, manifest, checked=False)
    got = fast(X)
    diff = float(np.abs(got[:, columns] - head.predict_proba(X)).max())
    if hasattr(head, "adjusted_proba"):
        diff = max(diff, float(np.abs(fast.adjust(got)[:, columns] - head.adjusted_proba(X)).max()))
    return {"ok": diff <= tolerance, "max_abs_diff": diff, "probe_rows": n}


# ----------------------------------------------------------------------------- LightGBM

class LightGBMText:
    """A LightGBM multiclass text model evaluated in numpy: every tree's nodes in
    padded arrays, all trees walked one level at a time for all rows at once.
    Numerical splits only (what dense backbone features produce), following
    LightGBM's ``NumericalDecision``: missing type None/Zero/NaN, default side."""

    def __init__(self, path):
        text = Path(path).read_text(encoding="utf-8").split("\nend of trees")[0]
        header, *blocks = text.split("\nTree=")
        info = dict(line.split("=", 1) for line in header.splitlines() if "=" in line)
        self.n_class = int(info.get("num_tree_per_iteration", info.get("num_class", 1)))
        if not blocks:
            raise ModelError(f"{path} holds no trees; re-fit the lightgbm head")
        trees = [self._tree_fields(self._tree(block, path)) for block in blocks]
        n_nodes = max(1, max(len(t["feature"]) for t in trees))
        n_leaves = max(len(t["leaf"]) for t in trees)
        T = len(trees)
        self.feature = np.zeros((T, n_nodes), np.int64)
        self.threshold = np.zeros((T, n_nodes))
        self.decision = np.zeros((T, n_nodes), np.int64)
        self.left = np.full((T, n_nodes), -1, np.int64)  # a stump's root is leaf 0 (~0 == -1)
        self.right = np.full((T, n_nodes), -1, np.int64)
        self.leaf = np.zeros((T, n_leaves))
        for i, t in enumerate(trees):
            k = len(t["feature"])
            self.feature[i, :k], self.threshold[i, :k], self.decision[i, :k] = t["feature"], t["threshold"], t["decision"]
            self.left[i, :k], self.right[i, :k] = t["left"], t["right"]
            self.leaf[i, :len(t["leaf"])] = t["leaf"]
        self.depth = max(1, n_nodes)
        self.tree_class = np.arange(T) % self.n_class

    @staticmethod
    def _tree(block, path):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if int(fields.get("num_cat", 0)) or int(fields.get("is_linear", 0)):
            raise ModelError(f"{path} has categorical or linear trees, which skinfeat does not "
                             "evaluate; re-fit the lightgbm head with skinfeat")
        return fields

    @staticmethod
    def _tree_fields(fields):
        def arr(name, dtype):
            return np.array(fields.get(name, "").split(), dtype=dtype)
        return {"feature": arr("split_feature", np.int64), "threshold": arr("threshold", np.float64),
                "decision": arr("decision_type", np.int64), "left": arr("left_child", np.int64),
                "right": arr("right_child", np.int64), "leaf": arr("leaf_value", np.float64)}

    def raw_score(self, X, rows=256):
        """Summed leaf values [n, n_class] of every tree of each class."""
        X = np.asarray(X, np.float64)
        if len(X) > rows:  # bounded memory: [rows, trees] arrays per step
            return np.concatenate([self.raw_score(X[i:i + rows]) for i in range(0, len(X), rows)])
        n, T = len(X), len(self.feature)
        trees = np.arange(T)[None, :]
        node = np.zeros((n, T), np.int64)
        for _ in range(self.depth):
            inner = node >= 0
            if not inner.any():
                break
            at = np.where(inner, node, 0)
            value = X[np.arange(n)[:, None], self.feature[trees, at]]
            decision = self.decision[trees, at]
            missing = (decision >> 2) & 3  # 0 none, 1 zero, 2 NaN
            value = np.where(np.isnan(value) & (missing != 2), 0.0, value)
            is_missing = ((missing == 1) & (np.abs(value) <= 1e-35)) | ((missing == 2) & np.isnan(value))
            go_left = np.where(is_missing, (decision & 2) > 0, value <= self.threshold[trees, at])
            step = np.where(go_left, self.left[trees, at], self.right[trees, at])
            node = np.where(inner, step, node)
        values = self.leaf[trees, ~node]
        score = np.zeros((n, self.n_class))
        for c in range(self.n_class):
            score[:, c] = values[:, self.tree_class == c].sum(axis=1)
        return score
