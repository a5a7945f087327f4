"""``logreg``: multinomial logistic regression (scikit-learn, lbfgs) on power-normalised,
standardised features, with the L2 strength tuned on the inner validation part."""

import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from skinfeat.heads.base import BaseHead
from skinfeat.heads.inference import linear_log_proba, log_softmax, signed_power

DEFAULT_ALPHAS = (0.15, 0.05, 0.015)
# The share of the prior correction applied to decisions. Full correction (1.0) is
# the Bayes rule for balanced accuracy in distribution; under shift it pushes
# decisions away from NV so far that accuracy collapses (fold 0, worst of the
# standard shifts: BMCA 0.549 / accuracy 0.525 at 1.0, 0.546 / 0.577 at 0.85,
# 0.537 / 0.615 at 0.75; README "How the defaults were chosen").
DEFAULT_ADJUST_STRENGTH = 0.85


class LogRegHead(BaseHead):
    """Signed power (``power=0.5``: square root, which evens out the sparse,
    skewed activations of ReLU backbones), standardise, optionally project on
    the top ``n_components`` principal components (None keeps every feature),
    then multinomial logistic regression.

    ``alpha`` is the L2 strength per training row (scikit-learn's ``C`` is
    ``1 / (alpha * n_rows)``), so one setting means the same for 300 images,
    10,000, or 10,000 times their augmented views. ``alpha="auto"`` fits each of
    ``alphas`` in turn on the inner lesion-grouped split (weakening the penalty
    step by step, each fit warm-started from the last), keeps the one with the
    lowest class-weighted validation log-loss, and refits on all rows from that
    solution. ``n_jobs`` caps the BLAS threads: on a busy
    2-core machine one thread is several times faster than two spinning
    against other processes.

    Defaults (checked by 5-fold lesion-grouped CV on HAM10000 features of
    EfficientNet-Lite0): no class weights, which keeps the probabilities
    calibrated and their ranking (AUC, top-3) best, and decisions corrected by
    the training prior (``adjust="prior"``, the Bayes rule for balanced accuracy,
    which scores higher than class-weighted training), at 0.85 of its strength,
    which keeps accuracy from collapsing under shift (``DEFAULT_ADJUST_STRENGTH``).
    """

    name = "logreg"

    def __init__(self, alpha="auto", alphas=DEFAULT_ALPHAS, power=0.5, n_components=None, max_iter=200,
                 tol=1e-3, n_jobs=1, class_weight="none", sampling="none", adjust="prior",
                 adjust_strength=DEFAULT_ADJUST_STRENGTH, val_fraction=0.15, random_state=0):
        self.store_params(locals())

    def _fit(self, X, y, w, train, val, full):
        with threadpool_limits(self.n_jobs), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter also regularises
            return self._fit_limited(X, y, w, train, val, full)

    def _fit_limited(self, X_raw, y, w, train, val, full):
        k = int(y.max()) + 1
        X = signed_power(X_raw, self.power)
        self.mean_ = X[full].mean(axis=0)
        std = X[full].std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        Z = (X - self.mean_) / self.scale_
        self.components_ = self._pca(Z[full])
        if self.components_ is not None:
            Z = Z @ self.components_.T
        alphas = [self.alpha] if self.alpha != "auto" else sorted(self.alphas, reverse=True)
        model = LogisticRegression(max_iter=self.max_iter, tol=self.tol, warm_start=True)
        val_log_proba, alpha = None, alphas[len(alphas) // 2]
        if len(alphas) > 1 and val is not None:
            best = (np.inf,)
            for a in alphas:
                model.set_params(C=1.0 / (a * len(train))).fit(Z[train], y[train], sample_weight=w[train])
                logp = self._decision_log_proba(model, Z[val], k)
                loss = log_loss(y[val], np.exp(logp), sample_weight=w[val], labels=range(k))
                if loss < best[0]:
                    best = (loss, a, logp, model.coef_.copy(), model.intercept_.copy())
            _, alpha, val_log_proba, model.coef_, model.intercept_ = best
        model.set_params(C=1.0 / (alpha * len(full)))
        model.fit(Z[full], y[full], sample_weight=w[full])
        self.alpha_, self.C_ = float(alpha), float(model.C)
        self.n_iter_ = model.n_iter_
        self.coef_, self.intercept_ = self._softmax_params(model, k)
        if val_log_proba is None and val is not None:
            val_log_proba = self._log_proba(X_raw[val])
        return val_log_proba

    def _pca(self, Z):
        n = self.n_components
        if n is None or n >= min(Z.shape):
            return None
        return PCA(n, svd_solver="covariance_eigh").fit(Z).components_.astype(np.float32)

    @staticmethod
    def _softmax_params(model, k):
        """(coef [k, d], intercept [k]) whose softmax equals the model's probabilities,
        for every class even when the model saw fewer (binary: sigmoid = softmax of [-z/2, z/2])."""
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.r_[-intercept / 2, intercept / 2]
        full_coef = np.zeros((k, coef.shape[1]), np.float32)
        full_intercept = np.full(k, -1e4, np.float32)  # a class absent from the fit rows: p = 0
        full_coef[model.classes_] = coef
        full_intercept[model.classes_] = intercept
        return full_coef, full_intercept

    def _decision_log_proba(self, model, Z, k):
        coef, intercept = self._softmax_params(model, k)
        return log_softmax(Z @ coef.T + intercept)

    def _log_proba(self, X):
        check_is_fitted(self, "coef_")
        return linear_log_proba(X, self.power, self.mean_, self.scale_, self.coef_, self.intercept_,
                                self.components_)

    def _arrays(self):
        arrays = {"mean_": self.mean_, "scale_": self.scale_, "coef_": self.coef_,
                  "intercept_": self.intercept_, "C_": np.asarray(self.C_),
                  "alpha_": np.asarray(self.alpha_)}
        if self.components_ is not None:
            arrays["components_"] = self.components_
        return arrays

    def _set_arrays(self, state):
        self.mean_, self.scale_ = state["mean_"], state["scale_"]
        self.coef_, self.intercept_ = state["coef_"], state["intercept_"]
        self.components_ = state.get("components_")
        self.C_, self.alpha_ = float(state["C_"]), float(state["alpha_"])
