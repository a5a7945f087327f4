"""The built-in backbones are faithful ports of their source networks.

Each is built once per session (the session's SKINFEAT_HOME) and checked on
real photos (Debian's darknet photos, $SKINFEAT_TEST_PHOTOS): the eagle must
be a bald eagle (ImageNet-1k index 22) and the dog a dog breed (151..268);
MobileNet v1 has 1001 classes with background at 0, so one more. Logits are
held against independent references: a numpy forward pass written from the
reference implementation (EfficientNet-Lite0), the original frozen graph
(MobileNet v1) and, when torch is installed, the reference PyTorch package.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from skinfeat.backbones.catalog import load_catalog
from skinfeat.backbones.resolve import resolve_module
from skinfeat.backbones.torch_legacy import load_state_dict

pytestmark = pytest.mark.slow

from helpers import REPO  # noqa: E402
PHOTOS = Path(os.environ.get("SKINFEAT_TEST_PHOTOS", REPO / ".venv" / "share" / "darknet-photos"))
HAM_IMAGE = REPO.parent / "shared" / "data" / "ham10000" / "images" / "ISIC_0024306.jpg"
BUILTINS = [e.name for e in load_catalog().builtins()]
BALD_EAGLE, DOGS = 22, range(151, 269)


def photos(size, names=("eagle", "dog")):
    """Real photos resized to ``size`` (height, width), float32 in [0, 1]."""
    if not (PHOTOS / "eagle.jpg").exists():
        raise FileNotFoundError(f"no darknet photos in {PHOTOS}; run scripts/bootstrap.sh "
                                "(it sets SKINFEAT_TEST_PHOTOS)")
    return np.stack([np.asarray(Image.open(PHOTOS / f"{n}.jpg").convert("RGB")
                                .resize(size[::-1], Image.BILINEAR), np.float32) / 255 for n in names])


@pytest.fixture(scope="session")
def built():
    """name -> Module, each built-in converted once per session, loaded once."""
    modules = {}

    def get(name):
        if name not in modules:
            modules[name] = resolve_module(name)
            modules[name].load()
        return modules[name]
    return get


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_port_recognises_imagenet_photos(built, name):
    mod = built(name)
    images = tf.constant(photos(mod.input_size))
    features = mod.load()(images)
    assert features.shape == (2, mod.feature_dim) == (2, load_catalog().entries[name].feature_dim)
    assert features.dtype == tf.float32
    logits = mod.saved_model().imagenet_logits(images).numpy()
    offset = logits.shape[1] - 1000  # 1 when class 0 is "background"
    eagle, dog = logits.argmax(axis=1) - offset
    assert eagle == BALD_EAGLE, f"{name} calls the eagle class {eagle}"
    assert dog in DOGS, f"{name} calls the dog class {dog}"


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_describes_itself_and_keeps_its_fingerprint(built, name):
    mod = built(name)
    info = mod.describe()
    assert info["name"] == name and info["feature_dim"] == mod.feature_dim
    assert info["fingerprint"] == mod.fingerprint == resolve_module(name).fingerprint
    assert Path(mod.path, "saved_model.pb").is_file()


# --- EfficientNet-Lite0 against a numpy forward pass --------------------------

# Reference block layout of EfficientNet-B0 (efficientnet-lite-pytorch utils.py):
# (repeats, stride of the first block) for each stage; lite0 uses it unscaled.
B0_STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]


def np_conv(x, w, stride, depthwise=False):
    """TF "same" convolution of NHWC ``x`` with a torch-layout kernel, in float64."""
    k = w.shape[-1]
    n, h, wd, _ = x.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    ph, pw = max((oh - 1) * stride + k - h, 0), max((ow - 1) * stride + k - wd, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = 0.0
    for i in range(k):
        for j in range(k):
            patch = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            out = out + (patch * w[:, 0, i, j] if depthwise else patch @ w[:, :, i, j].T)
    return out


def np_bn(x, sd, prefix, relu6=True):
    y = ((x - sd[f"{prefix}.running_mean"]) / np.sqrt(sd[f"{prefix}.running_var"] + 1e-3)
         * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"])
    return np.clip(y, 0, 6) if relu6 else y


def np_efficientnet_lite0(images, sd):
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = (images.astype(np.float64) * 255 - 127) / 128
    x = np_bn(np_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0")
    i = 0
    for repeats, stride in B0_STAGES:
        for r in range(repeats):
            p = f"_blocks.{i}"
            y = x
            if f"{p}._expand_conv.weight" in sd:
                y = np_bn(np_conv(y, sd[f"{p}._expand_conv.weight"], 1), sd, f"{p}._bn0")
            y = np_bn(np_conv(y, sd[f"{p}._depthwise_conv.weight"], stride if r == 0 else 1, True),
                      sd, f"{p}._bn1")
            y = np_bn(np_conv(y, sd[f"{p}._project_conv.weight"], 1), sd, f"{p}._bn2", relu6=False)
            x = x + y if r > 0 else y
            i += 1
    x = np_bn(np_conv(x, sd["_conv_head.weight"], 1), sd, "_bn1").mean(axis=(1, 2))
    return x @ sd["_fc.weight"].T + sd["_fc.bias"]


def test_efficientnet_lite0_matches_numpy_reference(built):
    mod = built("efficientnet-lite0")
    images = photos((224, 224), names=("eagle", "giraffe"))
    sd = load_state_dict(load_catalog().entries["efficientnet-lite0"].weights_path())
    ours = mod.saved_model().imagenet_logits(tf.constant(images)).numpy()
    np.testing.assert_allclose(ours, np_efficientnet_lite0(images, sd), atol=1e-4, rtol=0)


# --- MobileNet v1 against its own frozen graph --------------------------------

def test_mobilenet_v1_matches_the_frozen_graph(built):
    mod = built("mobilenet-v1")
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(load_catalog().entries["mobilenet-v1"].weights_path().read_bytes())
    frozen = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    graph = frozen.graph
    reference = frozen.prune(graph.get_tensor_by_name("input:0"),
                             [graph.get_tensor_by_name("MobilenetV1/Predictions/Reshape:0"),
                              graph.get_tensor_by_name("MobilenetV1/Logits/AvgPool_1a/AvgPool:0")])
    images = photos((224, 224), names=("eagle", "dog", "giraffe"))
    logits, pooled = reference(tf.constant(images * 2 - 1))
    np.testing.assert_allclose(mod.load()(tf.constant(images)), pooled.numpy()[:, 0, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(mod.saved_model().imagenet_logits(tf.constant(images)), logits,
                               atol=1e-4, rtol=0)


# --- EfficientNet-Lite against the reference PyTorch implementation -----------

@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_efficientnet_lite_matches_reference_pytorch(built, name):
    torch = pytest.importorskip("torch", reason="optional: pip install torch==2.13.0")
    reference = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="optional: pip install --no-deps efficientnet-lite-pytorch")
    mod = built(name)
    weights = load_catalog().entries[name].weights_path()
    net = reference.EfficientNet.from_name(name)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False))
    net.eval()
    images = photos(mod.input_size, names=("eagle", "dog", "giraffe"))
    with torch.no_grad():
        expected = net(torch.from_numpy(((images * 255 - 127) / 128).transpose(0, 3, 1, 2).copy())).numpy()
    ours = mod.saved_model().imagenet_logits(tf.constant(images)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


# --- the TF-Hub contract ------------------------------------------------------

def test_keras_layer_loads_the_default_module_for_fine_tuning(built):
    import tensorflow_hub as hub

    mod = built("efficientnet-lite0")
    image = np.asarray(Image.open(HAM_IMAGE).convert("RGB").resize((224, 224)), np.float32)[None] / 255
    layer = hub.KerasLayer(mod.path, trainable=True)
    features = layer(tf.constant(image)).numpy()
    assert features.shape == (1, 1280) and features.std() > 0.01
    np.testing.assert_allclose(features, mod.load()(tf.constant(image)), atol=1e-5)
    # Fine-tuning: gradients reach every trainable variable, and a training
    # step updates the BatchNorm moving statistics (the non-trainable ones).
    moving = [v for v in layer.variables if not v.trainable]
    assert len(layer.trainable_variables) > 100 and moving
    before = moving[0].numpy().copy()
    batch = tf.constant(np.concatenate([image, image[:, ::-1]]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(batch, training=True) ** 2)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None for g in grads)
    assert not np.array_equal(before, moving[0].numpy())


# --- the robust variants (issue 18) -------------------------------------------

def test_stages_pooling_keeps_the_final_features_first(built):
    images = tf.constant(np.stack([np.asarray(Image.open(HAM_IMAGE).convert("RGB").resize((224, 224)),
                                              np.float32) / 255, photos((224, 224))[0]]))
    plain = built("efficientnet-lite0").load()(images).numpy()
    stages = built("efficientnet-lite0-stages").load()(images).numpy()
    assert stages.shape == (2, 2688)
    np.testing.assert_allclose(stages[:, :1280], plain, atol=1e-4)
    at = 1280
    for channels in (80, 112, 192, 320):  # per stage: channel means, then channel standard deviations
        means, stds = stages[:, at:at + channels], stages[:, at + channels:at + 2 * channels]
        assert (stds > 0).all() and means.std() > 0.01
        at += 2 * channels
    assert at == 2688


def test_shades_of_gray_module_ignores_brightness_and_colour_casts(built):
    image = np.asarray(Image.open(HAM_IMAGE).convert("RGB").resize((224, 224)), np.float32) / 255
    cast = np.clip(image * np.array([0.75, 0.7, 0.6], np.float32), 0, 1)  # darker and warmer
    for name, most in (("efficientnet-lite0-stages-sog", 0.02), ("efficientnet-lite0-stages", None)):
        f = built(name).load()(tf.constant(np.stack([image, cast]))).numpy()
        change = float(np.abs(f[0] - f[1]).mean() / np.abs(f[0]).mean())
        if most is not None:
            assert change < most, f"{name}: features moved by {change:.3f} under a colour cast"
        else:
            assert change > 0.05  # without colour constancy the same cast moves them a lot
