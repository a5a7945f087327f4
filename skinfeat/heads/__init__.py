"""Heads: light classifiers trained on cached backbone features.

Each head is a scikit-learn classifier (``__init__`` stores parameters, ``fit``
sets ``classes_`` and returns self, ``predict_proba`` checks it is fitted) that
also accepts ``groups`` (lesion ids) for its inner validation split. The
registry maps the names used on the command line to the classes::

    from skinfeat.heads import make_head
    head = make_head("logreg", class_weight="sqrt").fit(X, y, groups=lesion_ids)
"""

import difflib
import importlib

from skinfeat.core.errors import UsageError
from skinfeat.heads.params import problem

# Name -> "module:class". Classes load on first use, so the CLI starts without
# importing scikit-learn, LightGBM or TensorFlow.
_REGISTRY = {
    "softmax": "skinfeat.heads.softmax:SoftmaxHead",
    "logreg": "skinfeat.heads.logreg:LogRegHead",
    "lightgbm": "skinfeat.heads.lgbm:LightGBMHead",
    "knn": "skinfeat.heads.knn:KNNHead",
}
HEADS = tuple(_REGISTRY)
ALIASES = {"lgbm": "lightgbm", "logistic": "logreg", "mlp": "softmax"}


def head_class(name):
    """The head class registered as ``name``; UsageError naming close matches otherwise."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key in _REGISTRY:
        module, cls = _REGISTRY[key].split(":")
        return getattr(importlib.import_module(module), cls)
    close = difflib.get_close_matches(key, list(HEADS) + list(ALIASES), n=3, cutoff=0.5)
    close = list(dict.fromkeys(ALIASES.get(c, c) for c in close))
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise UsageError(f"unknown head {name!r}; {hint}expected one of: {', '.join(HEADS)}")


def make_head(name, **params):
    """A new, unfitted head ``name`` with ``params``; an unknown parameter or a value of
    the wrong type (``skinfeat.heads.params``) raises UsageError."""

    cls = head_class(name)
    why = problem(cls.name, params)
    if why:
        raise UsageError(why)
    return cls(**params)


__all__ = ["HEADS", "KNNHead", "LightGBMHead", "LogRegHead", "SoftmaxHead", "head_class", "make_head"]


def __getattr__(attr):
    """``from skinfeat.heads import LogRegHead`` still works, loading it then."""
    for name, path in _REGISTRY.items():
        if path.endswith(":" + attr):
            return head_class(name)
    raise AttributeError(f"module 'skinfeat.heads' has no attribute {attr!r}")
