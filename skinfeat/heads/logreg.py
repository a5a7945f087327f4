"""``logreg``: multinomial logistic regression (scikit-learn, lbfgs) on standardised,
PCA-reduced features, with the L2 strength tuned on the inner validation part."""

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from skinfeat.heads.base import BaseHead, log_softmax

DEFAULT_CS = (0.0005, 0.002, 0.008, 0.03)


class LogRegHead(BaseHead):
    """Standardise, project on the top ``n_components`` principal components
    (None keeps every feature), then multinomial logistic regression.

    ``C="auto"`` tries each of ``Cs`` (weakening the L2 penalty step by step,
    warm-started) on the inner lesion-grouped split, keeps the one with the lowest
    class-weighted validation log-loss, and refits on all rows. The PCA keeps the
    lbfgs iterations cheap: a 10,015 x 1,280 fold fits in seconds. ``n_jobs``
    caps the BLAS threads: on a busy 2-core machine one thread is several times
    faster than two spinning against other processes.
    """

    name = "logreg"

    def __init__(self, C="auto", Cs=DEFAULT_CS, n_components=256, max_iter=200, tol=1e-4,
                 n_jobs=1, class_weight="balanced", sampling="none", adjust="none",
                 val_fraction=0.15, random_state=0):
        self.C = C
        self.Cs = Cs
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs
        self.class_weight = class_weight
        self.sampling = sampling
        self.adjust = adjust
        self.val_fraction = val_fraction
        self.random_state = random_state

    def _fit(self, X, y, w, train, val, full):
        with threadpool_limits(self.n_jobs):
            return self._fit_limited(X, y, w, train, val, full)

    def _fit_limited(self, X, y, w, train, val, full):
        k = int(y.max()) + 1
        self.mean_ = X[full].mean(axis=0)
        std = X[full].std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        Z = (X - self.mean_) / self.scale_
        self.components_ = self._pca(Z[full])
        if self.components_ is not None:
            Z = Z @ self.components_.T
        Cs = [self.C] if self.C != "auto" else list(self.Cs)
        val_log_proba = None
        model = LogisticRegression(max_iter=self.max_iter, tol=self.tol, warm_start=True)
        if len(Cs) > 1 and val is not None:
            best = (np.inf, None, None)
            for C in Cs:
                model.set_params(C=C).fit(Z[train], y[train], sample_weight=w[train])
                logp = self._decision_log_proba(model, Z[val], k)
                loss = log_loss(y[val], np.exp(logp), sample_weight=w[val], labels=range(k))
                if loss < best[0]:
                    best = (loss, C, logp)
            _, C, val_log_proba = best
        else:
            C = Cs[0] if len(Cs) == 1 else Cs[len(Cs) // 2]
        model = LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol)
        model.fit(Z[full], y[full], sample_weight=w[full])
        self.C_ = float(C)
        self.n_iter_ = model.n_iter_
        self.coef_, self.intercept_ = self._softmax_params(model, k)
        if val_log_proba is None and val is not None:
            val_log_proba = self._log_proba(X[val])
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
        Z = (X - self.mean_) / self.scale_
        if self.components_ is not None:
            Z = Z @ self.components_.T
        return log_softmax(Z @ self.coef_.T + self.intercept_)

    def _arrays(self):
        arrays = {"mean_": self.mean_, "scale_": self.scale_, "coef_": self.coef_,
                  "intercept_": self.intercept_, "C_": np.asarray(self.C_)}
        if self.components_ is not None:
            arrays["components_"] = self.components_
        return arrays

    def _set_arrays(self, state):
        self.mean_, self.scale_ = state["mean_"], state["scale_"]
        self.coef_, self.intercept_ = state["coef_"], state["intercept_"]
        self.components_ = state.get("components_")
        self.C_ = float(state["C_"])
