"""Plain-TensorFlow building blocks for the converted backbones, and the
export that turns a network into a TF-Hub image feature-vector SavedModel.

A network here is a ``tf.Module`` with
``features(images_in_0_1, training) -> [B, D]`` and ``logits(features) -> [B, K]``.
Layers hold ``tf.Variable`` s (kernels, BatchNorm gamma/beta trainable; moving
statistics not), so ``hub.KerasLayer(path, trainable=True)`` can fine-tune
them; with ``training=True`` BatchNorm uses batch statistics and updates its
moving averages, as Keras layers do.
"""

from skinfeat.core.tf_runtime import tensorflow

tf = tensorflow()

BN_MOMENTUM = 0.99
IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
MAP_SIGNATURE = "feature_map"  # the signature (and function) with the last convolutional map


class ConvBN(tf.Module):
    """Convolution (regular or depthwise, TF "SAME" padding, no bias), BatchNorm,
    optional ReLU6. ``kernel`` is in TF layout: (kh, kw, in, out), or
    (kh, kw, channels, 1) for a depthwise convolution."""

    def __init__(self, kernel, gamma, beta, mean, variance, *, stride=1, depthwise=False,
                 relu6=True, epsilon=1e-3, name=None):
        super().__init__(name=name)
        self.kernel = tf.Variable(kernel, name="kernel")
        self.gamma = tf.Variable(gamma, name="gamma")
        self.beta = tf.Variable(beta, name="beta")
        self.moving_mean = tf.Variable(mean, trainable=False, name="moving_mean")
        self.moving_variance = tf.Variable(variance, trainable=False, name="moving_variance")
        self.stride, self.depthwise, self.relu6, self.epsilon = stride, depthwise, relu6, epsilon

    def __call__(self, x, training=False):
        return self._train(x) if training else self._infer(x)

    def _conv(self, x, kernel):
        strides = [1, self.stride, self.stride, 1]
        if self.depthwise:
            return tf.nn.depthwise_conv2d(x, kernel, strides, "SAME")
        return tf.nn.conv2d(x, kernel, strides, "SAME")

    def _infer(self, x):
        # BatchNorm with moving statistics folded into the kernel and a bias:
        # the same function, but conv + bias + ReLU6 fuse into one fast op.
        # Folding the small weight tensors on each call costs next to nothing.
        scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
        kernel = self.kernel * (scale[:, None] if self.depthwise else scale)
        x = tf.nn.bias_add(self._conv(x, kernel), self.beta - self.moving_mean * scale)
        return tf.nn.relu6(x) if self.relu6 else x

    def _train(self, x):
        # Batch statistics, and moving averages updated as Keras does.
        x, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            self._conv(x, self.kernel), self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        self.moving_mean.assign(BN_MOMENTUM * self.moving_mean + (1 - BN_MOMENTUM) * mean)
        self.moving_variance.assign(BN_MOMENTUM * self.moving_variance + (1 - BN_MOMENTUM) * variance)
        return tf.nn.relu6(x) if self.relu6 else x


class Dense(tf.Module):
    """A linear classifier head: ``x @ kernel + bias``."""

    def __init__(self, kernel, bias, name=None):
        super().__init__(name=name)
        self.kernel = tf.Variable(kernel, name="kernel")
        self.bias = tf.Variable(bias, name="bias")

    def __call__(self, x):
        return tf.matmul(x, self.kernel) + self.bias


def global_average_pool(x):
    return tf.reduce_mean(x, axis=[1, 2])


def export_saved_model(net, path):
    """Save ``net`` as a TF2 SavedModel that follows the TF-Hub image
    feature-vector contract (Reusable SavedModel API):

    - ``__call__(images, training=False)``: float32 ``[B, H, W, 3]`` in [0, 1]
      -> ``[B, D]``, traced for ``training`` False and True;
    - ``variables``, ``trainable_variables``, ``regularization_losses`` of the
      feature extractor (the ImageNet head is not part of them);
    - ``imagenet_logits(images)``: the source network's classifier, for port
      checks (a separate function: the feature path does not compute it);
    - a ``serving_default`` signature returning ``{"feature_vector": [B, D]}``;
    - when the network has ``feature_map(images)``: a ``feature_map`` signature (and
      function) returning ``{"feature_map": [B, h, w, C], "feature_vector": [B, D]}``,
      the last convolutional map whose global average is the first C features
      (``skinfeat explain --method gradcam``).
    """
    head = {id(v) for v in net.head.variables}
    variables = [v for v in net.variables if id(v) not in head]
    root = tf.train.Checkpoint(net=net)
    root.variables = variables
    root.trainable_variables = [v for v in variables if v.trainable]
    root.regularization_losses = []

    @tf.function
    def call(images, training=False):
        return net.features(images, training=training)

    features = call.get_concrete_function(IMAGES, training=False)
    call.get_concrete_function(IMAGES, training=True)
    # These call the traced feature function instead of tracing the network again.
    # (net.head on plain pooling: the same graph, and fingerprint, as before pooling existed)
    logits = net.head if getattr(net, "pooling", "final") == "final" else net.logits
    root.imagenet_logits = tf.function(lambda images: logits(features(images)), input_signature=[IMAGES])
    serving = tf.function(lambda images: {"feature_vector": features(images)}, input_signature=[IMAGES])
    root.__call__ = call
    signatures = {"serving_default": serving}
    if hasattr(net, "feature_map"):
        root.feature_map = signatures[MAP_SIGNATURE] = tf.function(net.feature_map, input_signature=[IMAGES])
    tf.saved_model.save(root, str(path), signatures=signatures)
