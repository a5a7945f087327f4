"""``lightgbm``: gradient-boosted trees (LightGBM multiclass) with class weights and
early stopping on the inner lesion-grouped validation part. Saved as LightGBM's
own text model, which loading parses without running code."""

from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from skinfeat.heads.base import BaseHead
from skinfeat.heads.inference import LIGHTGBM_MODEL as MODEL_FILE
from skinfeat.heads.inference import log_softmax


class LightGBMHead(BaseHead):
    """LightGBM with small trees (``num_leaves``), feature subsampling
    (``feature_fraction``) and coarse histograms (``max_bin``) so that 1,280-D
    features fit fast; stops when the class-weighted validation log-loss has not
    improved for ``early_stopping_rounds`` rounds. ``n_jobs=1`` by default: on a
    busy 2-core machine two OpenMP threads spin against other processes and run
    several times slower than one."""

    name = "lightgbm"

    def __init__(self, n_estimators=300, learning_rate=0.15, num_leaves=8, min_child_samples=10,
                 feature_fraction=0.15, bagging_fraction=0.8, lambda_l2=1.0, max_bin=31,
                 early_stopping_rounds=20, n_jobs=1, class_weight="none", sampling="none",
                 adjust="prior", adjust_strength=1.0, val_fraction=0.15, random_state=0):
        self.store_params(locals())

    def _params(self, k):
        return {"objective": "multiclass", "num_class": k, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples,
                "feature_fraction": self.feature_fraction, "bagging_fraction": self.bagging_fraction,
                "bagging_freq": 1 if self.bagging_fraction < 1 else 0, "lambda_l2": self.lambda_l2,
                "max_bin": self.max_bin, "num_threads": self.n_jobs, "seed": int(self.random_state or 0),
                "verbosity": -1, "deterministic": True, "force_row_wise": True}

    def _fit(self, X, y, w, train, val, full):
        import lightgbm as lgb

        k = int(y.max()) + 1
        params = self._params(k)
        data = lgb.Dataset(X[train], y[train], weight=w[train], params=params)
        fit_args = {}
        if val is not None:
            fit_args["valid_sets"] = [lgb.Dataset(X[val], y[val], weight=w[val], reference=data)]
            fit_args["callbacks"] = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        booster = lgb.train(params, data, num_boost_round=self.n_estimators, **fit_args)
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.booster_ = booster
        return None if val is None else self._log_proba(X[val])

    def _log_proba(self, X):
        check_is_fitted(self, "booster_")
        raw = self.booster_.predict(X, num_iteration=self.best_iteration_, raw_score=True)
        return log_softmax(np.asarray(raw, np.float64).reshape(len(X), -1))

    def _arrays(self):
        return {"best_iteration_": np.asarray(self.best_iteration_)}

    def _set_arrays(self, state):
        self.best_iteration_ = int(state["best_iteration_"])

    def save_files(self, directory):
        self.booster_.save_model(str(Path(directory) / MODEL_FILE), num_iteration=self.best_iteration_)
        return [MODEL_FILE]

    def load_files(self, directory):
        import lightgbm as lgb

        try:
            self.booster_ = lgb.Booster(model_file=str(Path(directory) / MODEL_FILE))
        except lgb.basic.LightGBMError as exc:  # its parser's one error type, for a damaged file
            raise ValueError(f"{MODEL_FILE}: {exc}") from None
        return self
