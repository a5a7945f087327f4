"""A fake backbone for fast tests: a real TF2 SavedModel that pools the image
(per-channel mean, standard deviation and maximum: 9 features), as TF-Hub's own
tests did. It honours the TF-Hub image feature-vector contract."""

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
