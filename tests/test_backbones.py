"""Tests for keras_hash.backbones: shapes, normalization inside, errors."""


import keras
import numpy as np
import pytest

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














