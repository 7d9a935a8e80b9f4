"""Tests for keras_hash.backbones: shapes, normalization inside, errors."""

import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hash import backbones


def test_cifar_resnet_feature_size_scales_with_width():
    for width in (4, 8):
        model = backbones.cifar_resnet(width)
        assert model.output_shape == (None, 8 * width)


def test_normalization_is_inside_and_uses_cifar_statistics():
    model = backbones.cifar_resnet(4)
    normalize = keras.Model(model.input, model.get_layer("normalize").output)
    mean, std = np.array(backbones.CIFAR10_MEAN), np.array(backbones.CIFAR10_STD)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3))
    expected = (pixels - mean) / std
    got = normalize(pixels.astype("float32")).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_raw_uint8_images_give_the_same_features_as_float():
    model = backbones.cifar_resnet(4)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), np.uint8)
    np.testing.assert_allclose(
        model.predict(pixels, verbose=0),
        model.predict(pixels.astype("float32"), verbose=0),
        rtol=1e-6,
    )


def test_other_input_sizes():
    model = backbones.cifar_resnet(4, input_shape=(16, 16, 1), mean=(0.5,), std=(2,))
    assert model(np.zeros((1, 16, 16, 1))).shape == (1, 32)


def test_application_backbone_by_name():
    model = backbones.get("MobileNetV2", input_shape=(32, 32, 3))
    assert model.output_shape == (None, 1280)


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="'NoSuchNet'"):
        backbones.get("NoSuchNet")


def test_bad_width_is_named():
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        backbones.cifar_resnet(0)


# --- keras.applications: the preprocessing their weights expect -----------

PIXELS = np.array([[[[0.0, 100.0, 255.0]]]], "float32")  # one RGB pixel


def _preprocess(model):
    """The part of an application backbone before the network itself."""
    layers = [layer for layer in model.layers[1:-1]]
    x = PIXELS
    for layer in layers:
        x = layer(x)
    return np.asarray(x)


@pytest.mark.parametrize(
    "name, expected",
    [
        # caffe: BGR, minus (103.939, 116.779, 123.68), no scaling
        ("ResNet50", [255 - 103.939, 100 - 116.779, 0 - 123.68]),
        ("VGG16", [255 - 103.939, 100 - 116.779, 0 - 123.68]),
        # tf: x / 127.5 - 1
        ("MobileNetV2", [-1.0, 100 / 127.5 - 1, 1.0]),
        ("ResNet50V2", [-1.0, 100 / 127.5 - 1, 1.0]),
        # torch: (x / 255 - mean) / std
        (
            "DenseNet121",
            [
                (0 - 0.485) / 0.229,
                (100 / 255 - 0.456) / 0.224,
                (1 - 0.406) / 0.225,
            ],
        ),
        # the network rescales raw pixels itself: nothing in front
        ("EfficientNetB0", [0.0, 100.0, 255.0]),
        ("MobileNetV3Small", [0.0, 100.0, 255.0]),
    ],
)
def test_application_preprocesses_as_its_weights_expect(name, expected):
    model = backbones.application(name, input_shape=(32, 32, 3))
    np.testing.assert_allclose(_preprocess(model)[0, 0, 0], expected, rtol=1e-5)
    family = getattr(keras.applications, name).__module__.rsplit(".", 1)[-1]
    module = getattr(keras.applications, family)
    reference = module.preprocess_input(PIXELS.copy())  # Keras's own function
    np.testing.assert_allclose(_preprocess(model), reference, rtol=1e-5, atol=1e-5)


def test_application_mean_and_std_override_and_conflicts():
    model = backbones.application(
        "MobileNetV2", input_shape=(32, 32, 3), mean=(100, 100, 100), std=(2, 4, 5)
    )
    np.testing.assert_allclose(
        _preprocess(model)[0, 0, 0], [-50.0, 0.0, 31.0], rtol=1e-5
    )
    with pytest.raises(ValueError, match="rescales raw 0-255 pixels inside"):
        backbones.application("EfficientNetB0", mean=(1, 1, 1), std=(1, 1, 1))
    with pytest.raises(ValueError, match="both mean and std"):
        backbones.application("MobileNetV2", mean=(1, 1, 1))


def test_reverse_channels_round_trips(tmp_path):
    inputs = keras.Input((2, 2, 3))
    model = keras.Model(inputs, backbones.ReverseChannels()(inputs))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.arange(12, dtype="float32").reshape(1, 2, 2, 3)
    np.testing.assert_array_equal(loaded(x), x[..., ::-1])


# --- whitened_cnn: airbench's network --------------------------------------


def test_whitened_cnn_is_registered():
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3))
    model = backbones.get("whitened_cnn", whitening_images=images, widths=(4, 8, 8))
    assert model.output_shape == (None, 8)


def test_saved_hash_model_loads_with_keras_hash_alone(tmp_path):
    """A HashNet on whitened_cnn (what examples/train_cifar.py saves) loads in a
    fresh interpreter that imports keras_hash and no recipe."""
    import keras_hash

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    model = keras_hash.HashNet(backbones.whitened_cnn(images, widths=(4, 8, 8)), 16)
    expected = np.asarray(model.encode(images))
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "images.npy", images)
    code = (
        "import sys, keras, numpy as np, keras_hash\n"
        f"model = keras.saving.load_model({str(path)!r})\n"
        f"codes = np.asarray(model.encode(np.load({str(tmp_path / 'images.npy')!r})))\n"
        f"np.save({str(tmp_path / 'codes.npy')!r}, codes)\n"
        "print(sorted(m for m in sys.modules if m.startswith('keras_hash.recipes')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), expected)


def _normalized_patches(images):
    """2x2 patches of normalized images, flattened row, column, channel."""
    x = (images - np.array(backbones.CIFAR10_MEAN)) / np.array(backbones.CIFAR10_STD)
    rows, cols = x.shape[1] - 1, x.shape[2] - 1
    patches = [
        x[n, r : r + 2, c : c + 2].reshape(-1)
        for n in range(len(x))
        for r in range(rows)
        for c in range(cols)
    ]
    return np.array(patches)


def test_patch_whitening_kernel_decorrelates_patches():
    rng = np.random.default_rng(0)
    # Correlated pixels: smooth images plus noise.
    base = rng.integers(0, 256, (20, 1, 1, 3)).astype(float)
    images = np.clip(base + rng.normal(0, 20, (20, 6, 6, 3)), 0, 255)
    kernel = backbones.patch_whitening_kernel(images, eps=0.0)
    assert kernel.shape == (2, 2, 3, 24)
    np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])
    patches = _normalized_patches(images)
    outputs = patches @ kernel[..., :12].reshape(12, 12)
    covariance = outputs.T @ outputs / len(outputs)
    np.testing.assert_allclose(covariance, np.eye(12), atol=1e-4)


def test_whitening_layer_computes_the_patch_projection():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 32, 32, 3)).astype("float32")
    model = backbones.whitened_cnn(images, widths=(8, 8, 8))
    whiten = keras.Model(model.input, model.get_layer("whiten").output)
    kernel = model.get_layer("whiten").get_weights()[0]
    expected = _normalized_patches(images[:1]) @ kernel.reshape(12, 24)
    got = whiten(images[:1]).numpy().reshape(-1, 24)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert not model.get_layer("whiten").trainable_weights
    # Then the learned bias and a GELU (exact, erf-based), as in backbones.
    bias = rng.normal(size=24).astype("float32")
    model.get_layer("whiten_bias").set_weights([bias])
    activated = keras.Model(model.input, model.get_layer("whiten_gelu").output)
    pre = expected + bias
    gelu = 0.5 * pre * (1 + np.vectorize(math.erf)(pre / math.sqrt(2)))
    got = activated(images[:1]).numpy().reshape(-1, 24)
    np.testing.assert_allclose(got, gelu, rtol=1e-4, atol=1e-4)


def test_whitened_cnn_shape_identity_start_and_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (4, 32, 32, 3), np.uint8)
    model = backbones.whitened_cnn(images, widths=(8, 16, 16))
    assert model.output_shape == (None, 16)
    kernel = model.get_layer("group2_conv1").get_weights()[0]  # 8 -> 16
    identity = np.zeros((3, 3, 8, 8))
    identity[1, 1] = np.eye(8)
    np.testing.assert_array_equal(kernel[..., :8], identity)
    assert np.abs(kernel[..., 8:]).sum() > 0
    path = str(tmp_path / "backbone.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5
    )


def test_whitened_cnn_with_free_image_size_shares_weights_with_fixed_size():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 32, 32, 3), np.uint8)
    free = backbones.whitened_cnn(images, widths=(8, 8, 8), input_shape=(None, None, 3))
    fixed = backbones.whitened_cnn(images, widths=(8, 8, 8))
    fixed.set_weights(free.get_weights())
    assert free.predict(images[:, 4:28, 4:28], verbose=0).shape == (4, 8)
    np.testing.assert_allclose(
        free.predict(images, verbose=0), fixed.predict(images, verbose=0), rtol=1e-5
    )


def test_scaled_bias_moves_scale_squared_times_faster():
    layer = backbones.ScaledBias(scale=8.0)
    x = keras.Variable(np.zeros((5, 3), "float32"), trainable=False)
    layer.build((5, 3))
    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x))
    optimizer.apply(
        tape.gradient(loss, layer.trainable_variables), layer.trainable_variables
    )
    # d loss / d bias-variable = 8 * 5; the bias moves 8 * 0.01 * 40 = 3.2.
    np.testing.assert_allclose(
        layer(np.zeros((1, 3), "float32")).numpy(), -3.2, rtol=1e-6
    )


@pytest.mark.parametrize(
    "images, kwargs, message",
    [
        (np.zeros((2, 32, 32)), {}, "must be \\[N, H, W, C\\]"),
        (np.full((2, 32, 32, 3), np.nan), {}, "NaN"),
        (np.zeros((2, 32, 32, 1)), {}, "one value per channel"),
        (np.zeros((2, 32, 32, 3)), {"widths": (8, 8)}, "three positive ints"),
        (np.zeros((2, 16, 16, 3)), {"input_shape": (16, 16, 3)}, "at least 24x24"),
    ],
)
def test_whitened_cnn_bad_input_is_named(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        backbones.whitened_cnn(images, **kwargs)
