"""LightGBM's multiclass text model (``lightgbm.txt`` in a model directory)
evaluated in numpy: the lightgbm head's saved trees, read without importing
LightGBM (which imports scikit-learn). The tests hold it against LightGBM."""

from pathlib import Path

import numpy as np

from skinfeat.core.errors import ModelError


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
