"""``softmax``: a small dense TensorFlow head with dropout, L2 and early stopping
on the inner lesion-grouped validation part; cross-entropy or focal loss.

Training runs one compiled TensorFlow graph per epoch (mini-batch Adam), which
keeps the per-step overhead of a tiny network negligible. The fitted weights
are kept as numpy arrays, so prediction and loading a saved head need neither
TensorFlow nor a graph.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from skinfeat.core.errors import UsageError
from skinfeat.core.tf_runtime import tensorflow
from skinfeat.heads.base import BaseHead
from skinfeat.heads.inference import dense_log_proba, signed_power
from skinfeat.heads.params import LOSSES


class SoftmaxHead(BaseHead):
    """Signed power (``power=0.5``: square root) -> standardise ->
    [Dense(hidden, relu, L2) -> Dropout] -> Dense(K) -> softmax.

    ``hidden=0`` makes it a linear softmax. Trains with Adam in batches of
    ``batch_size`` (smaller on small sets, so that an epoch takes at least 16
    steps) for at most ``max_epochs`` epochs, stopping when the class-weighted
    validation loss has not improved for ``patience`` epochs and restoring the
    best weights. ``loss="focal"`` down-weights easy rows by ``(1 - p)**focal_gamma``.
    Without an inner validation part (tiny data) it trains ``max_epochs`` epochs.
    Initial weights, shuffling and dropout all derive from ``random_state``.
    """

    name = "softmax"

    def __init__(self, hidden=256, dropout=0.4, l2=1e-4, loss="crossentropy", focal_gamma=2.0,
                 learning_rate=1e-3, batch_size=256, max_epochs=60, patience=6, power=0.5,
                 class_weight="none", sampling="none", adjust="prior", adjust_strength=1.0,
                 val_fraction=0.15, random_state=0):
        self.store_params(locals())

    def _fit(self, X, y, w, train, val, full):
        if self.loss not in LOSSES:
            raise UsageError(f"loss={self.loss!r} is not one of {', '.join(LOSSES)}")
        k = int(y.max()) + 1
        P = signed_power(X, self.power)
        self.mean_ = P[train].mean(axis=0)
        std = P[train].std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        Z = ((P - self.mean_) / self.scale_).astype(np.float32)
        rng = np.random.default_rng(self.random_state)
        trainer = _Trainer(self, Z.shape[1], k, rng)
        trainer.batch_for(len(train))
        data = trainer.tensors(Z[train], y[train], w[train])
        val_data = None if val is None else trainer.tensors(Z[val], y[val], w[val])
        best, best_loss, waited = trainer.weights(), np.inf, 0
        for epoch in range(self.max_epochs):
            trainer.epoch(data, rng)
            if val_data is None:
                best = trainer.weights()
                continue
            loss = trainer.loss(val_data)
            if loss < best_loss - 1e-4:
                best, best_loss, waited = trainer.weights(), loss, 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        self.n_epochs_ = epoch + 1
        self.weights_ = best
        return None if val is None else self._log_proba(X[val])

    def _log_proba(self, X):
        check_is_fitted(self, "weights_")
        return dense_log_proba(np.asarray(X, np.float32), self.power, self.mean_, self.scale_, list(self.weights_))

    def _arrays(self):
        arrays = {"mean_": self.mean_, "scale_": self.scale_, "n_epochs_": np.asarray(self.n_epochs_)}
        arrays.update({f"weight_{i}": w for i, w in enumerate(self.weights_)})
        return arrays

    def _set_arrays(self, state):
        self.mean_, self.scale_ = state["mean_"], state["scale_"]
        self.n_epochs_ = int(state["n_epochs_"])
        n = sum(1 for name in state if name.startswith("weight_"))
        self.weights_ = [state[f"weight_{i}"] for i in range(n)]


class _Trainer:
    """Mini-batch Adam on a dense network in TensorFlow; one graph call per epoch."""

    def __init__(self, head, dim, k, rng):
        tf = tensorflow()

        self.tf, self.head = tf, head
        sizes = [dim] + ([head.hidden] if head.hidden else []) + [k]
        self.vars = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform
            self.vars += [tf.Variable(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)),
                          tf.Variable(np.zeros(fan_out, np.float32))]
        self.m = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.step = tf.Variable(0.0)
        self.generator = tf.random.Generator.from_seed(int(rng.integers(2**31)))
        self._epoch = tf.function(self._epoch_graph, reduce_retracing=True)
        self._loss = tf.function(self._loss_graph, reduce_retracing=True)

    def batch_for(self, n):
        """``batch_size``, or smaller for small sets so that an epoch takes at least 16 steps."""
        self.batch_size = int(min(self.head.batch_size, max(16, n // 16)))

    def tensors(self, Z, y, w):
        tf = self.tf
        return tf.constant(Z), tf.constant(y, tf.int32), tf.constant(w, tf.float32)

    def weights(self):
        return [v.numpy() for v in self.vars]

    def epoch(self, data, rng):
        self._epoch(*data, self.tf.constant(rng.permutation(len(data[1])), self.tf.int32))

    def loss(self, data):
        return float(self._loss(*data))

    def _forward(self, x, training):
        tf, rate = self.tf, self.head.dropout
        layers = [self.vars[i:i + 2] for i in range(0, len(self.vars), 2)]
        for i, (W, b) in enumerate(layers):
            if training and rate > 0 and (i > 0 or len(layers) == 1):
                keep = self.generator.uniform(tf.shape(x)) >= rate
                x = tf.where(keep, x / (1.0 - rate), 0.0)
            x = tf.matmul(x, W) + b
            if i < len(layers) - 1:
                x = tf.nn.relu(x)
        return x

    def _data_loss(self, logits, y, w):
        tf = self.tf
        log_p = tf.nn.log_softmax(logits)
        log_pt = tf.gather(log_p, y[:, None], batch_dims=1)[:, 0]
        loss = -log_pt
        if self.head.loss == "focal":
            loss = loss * (1.0 - tf.exp(log_pt)) ** self.head.focal_gamma
        return tf.reduce_sum(w * loss) / tf.cast(tf.shape(y)[0], tf.float32)

    def _loss_graph(self, Z, y, w):
        return self._data_loss(self._forward(Z, False), y, w)

    def _epoch_graph(self, Z, y, w, perm):
        tf, head = self.tf, self.head
        n = tf.shape(perm)[0]
        size = self.batch_size
        batches = (n + size - 1) // size
        b1, b2, lr = 0.9, 0.999, head.learning_rate
        for i in tf.range(batches):
            idx = perm[i * size:(i + 1) * size]
            with tf.GradientTape() as tape:
                loss = self._data_loss(self._forward(tf.gather(Z, idx), True), tf.gather(y, idx),
                                       tf.gather(w, idx))
                loss += head.l2 * tf.add_n([tf.reduce_sum(W ** 2) for W in self.vars[::2]])
            grads = tape.gradient(loss, self.vars)
            self.step.assign_add(1.0)
            scale = lr * tf.sqrt(1 - b2 ** self.step) / (1 - b1 ** self.step)
            for var, g, m, v in zip(self.vars, grads, self.m, self.v):
                m.assign(b1 * m + (1 - b1) * g)
                v.assign(b2 * v + (1 - b2) * g * g)
                var.assign_sub(scale * m / (tf.sqrt(v) + 1e-7))
