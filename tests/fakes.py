"""A fake backbone for fast tests: a real TF2 SavedModel that pools the image
(per-channel mean, standard deviation and maximum: 9 features), as TF-Hub's own
tests did. It honours the TF-Hub image feature-vector contract."""

import numpy as np
import tensorflow as tf

POOL_DIM = 9


class _Pool(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2]),
                          tf.reduce_max(images, [1, 2])], axis=1)


def make_pooling_module(path):
    """Save the pooling module at ``path`` and return the path as a string."""
    tf.saved_model.save(_Pool(), str(path))
    return str(path)


TRAINABLE_DIM = 8


class _TinyNet(tf.Module):
    """One strided convolution with BatchNorm (skinfeat.backbones.layers.ConvBN), then
    global average pooling: a trainable backbone with the built-ins' contract, its
    ``feature_map`` signature included."""

    def __init__(self):
        super().__init__()
        from skinfeat.backbones.layers import ConvBN, Dense

        rng = np.random.default_rng(0)
        d = TRAINABLE_DIM
        self.pooling = "final"
        self.conv = ConvBN(rng.normal(0, 0.5, (3, 3, 3, d)).astype(np.float32), np.ones(d, np.float32),
                           np.zeros(d, np.float32), np.full(d, 0.5, np.float32), np.ones(d, np.float32), stride=2)
        self.head = Dense(rng.normal(0, 0.1, (d, 2)).astype(np.float32), np.zeros(2, np.float32))

    def features(self, images, training=False):
        return tf.reduce_mean(self.conv(images, training), axis=[1, 2])

    def feature_map(self, images):
        """The convolution's map and its global average (the built-ins' Grad-CAM signature)."""
        x = self.conv(images)
        return {"feature_map": x, "feature_vector": tf.reduce_mean(x, axis=[1, 2])}


def make_trainable_module(path):
    """Save a tiny trainable backbone (``TRAINABLE_DIM`` features) at ``path`` as the
    built-ins are saved (``export_saved_model``); return the path as a string."""
    from skinfeat.backbones.layers import export_saved_model

    export_saved_model(_TinyNet(), path)
    return str(path)
