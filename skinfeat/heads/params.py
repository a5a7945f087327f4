"""The type of every head parameter, checked before a head is made (``fit -p``) and
when a saved model's parameters are read (``model.json``). Light to import: the
predictor checks a model without scikit-learn. ``PARAMS[head][name]`` is a ``Kind``;
``problem(head, params)`` says what is wrong with the first bad value, or None."""

import math
import numbers
from dataclasses import dataclass

from skinfeat.heads.imbalance import ADJUSTS, CLASS_WEIGHTS, SAMPLINGS

LOSSES = ("crossentropy", "focal")  # the softmax head's losses


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Kind:
    """What a parameter takes: ``accepts(value)``, and its description for messages."""

    accepts: object
    expected: str


def number(low=None, high=None, low_open=False, high_open=False):
    def ok(v):
        return (_number(v) and (low is None or (v > low if low_open else v >= low))
                and (high is None or (v < high if high_open else v <= high)))
    bounds = [f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
              f"{'<' if high_open else '<='} {high:g}" if high is not None else ""]
    return Kind(ok, "a number " + " and ".join(filter(None, bounds)))


def integer(low, nullable=False):
    return Kind(lambda v: (nullable and v is None) or (_integer(v) and v >= low),
                f"{'null or ' if nullable else ''}an integer >= {low}")


def choice(options, extra=None):
    return Kind(lambda v: v in options or (extra is not None and extra(v)), f"one of {', '.join(options)}")


POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
FRACTION = number(0, 1, high_open=True)  # a share that must leave something: [0, 1)
SUBSAMPLE = number(0, 1, low_open=True)  # a share that must keep something: (0, 1]
SEED = integer(0, nullable=True)
THREADS = integer(1)
_WEIGHTS = choice(CLASS_WEIGHTS, extra=lambda v: isinstance(v, dict) and all(
    _number(w) and w >= 0 for w in v.values()))

COMMON = {"class_weight": _WEIGHTS, "sampling": choice(SAMPLINGS), "adjust": choice(ADJUSTS),
          "adjust_strength": NON_NEGATIVE, "val_fraction": FRACTION, "random_state": SEED}

PARAMS = {
    "logreg": {
        "alpha": Kind(lambda v: v == "auto" or POSITIVE.accepts(v), "'auto' or a number > 0"),
        "alphas": Kind(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(map(POSITIVE.accepts, v)),
                       "a list of numbers > 0, e.g. [0.1,0.01]"),
        "power": POSITIVE, "n_components": integer(1, nullable=True), "max_iter": integer(1), "tol": POSITIVE,
        "n_jobs": THREADS, **COMMON},
    "softmax": {
        "hidden": integer(0), "dropout": FRACTION, "l2": NON_NEGATIVE, "loss": choice(LOSSES),
        "focal_gamma": NON_NEGATIVE, "learning_rate": POSITIVE, "batch_size": integer(1),
        "max_epochs": integer(1), "patience": integer(1), "power": POSITIVE, **COMMON},
    "knn": {
        "k": Kind(lambda v: v == "auto" or (_integer(v) and v >= 1), "'auto' or an integer >= 1"),
        "ks": Kind(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_integer(x) and x >= 1 for x in v),
                   "a list of integers >= 1, e.g. [5,10,20]"),
        "temperature": POSITIVE, "power": POSITIVE, "batch": integer(1), **COMMON},
    "lightgbm": {
        "n_estimators": integer(1), "learning_rate": POSITIVE, "num_leaves": integer(2),
        "min_child_samples": integer(0), "feature_fraction": SUBSAMPLE, "bagging_fraction": SUBSAMPLE,
        "lambda_l2": NON_NEGATIVE, "max_bin": integer(2), "early_stopping_rounds": integer(1),
        "n_jobs": THREADS, **COMMON},
}


def problem(head, params):
    """What is wrong with ``params`` of ``head`` (a registry name): the first unknown
    parameter or value of the wrong type, as a sentence; None when all are good."""
    kinds = PARAMS[head]
    unknown = sorted(set(params) - set(kinds))
    if unknown:
        return f"head {head!r} has no parameter {', '.join(unknown)}; its parameters are: {', '.join(sorted(kinds))}"
    for name, value in params.items():
        if not kinds[name].accepts(value):
            return f"{head} parameter {name}: got {value!r}; expected {kinds[name].expected}"
    return None
