import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hash


def conv_backbone():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="backbone",
    )


def images(n=20, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 1)).astype(np.float32)


def reference_z(layer, features):
    """The hash layer's z in numpy, through its BatchNorm's moving statistics."""
    z = features @ layer.kernel.numpy() + layer.bias.numpy()
    bn = layer.normalization
    if bn is not None:
        variance = bn.moving_variance.numpy() + bn.epsilon
        z = (z - bn.moving_mean.numpy()) / np.sqrt(variance)
        z = z * bn.gamma.numpy() + bn.beta.numpy()
    return z


def reference_codes(model, x):
    """np.packbits of z >= 0, with z computed outside the model's encode path."""
    z = reference_z(model.hash_layer, model.backbone.predict(x, verbose=0))
    return np.packbits(z >= 0, axis=-1)


@pytest.mark.parametrize("cls", [keras_hash.HashNet, keras_hash.DHN])
def test_encode_packs_the_sign_of_z(cls):
    model = cls(conv_backbone(), bits=24)
    x = images()
    codes = model.encode(x, batch_size=7)
    assert codes.dtype == np.uint8 and codes.shape == (20, 3)
    np.testing.assert_array_equal(codes, reference_codes(model, x))


def test_encode_accepts_datasets():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    x = images()
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(20))).batch(6)
    np.testing.assert_array_equal(model.encode(dataset), reference_codes(model, x))


def test_default_losses_and_schedules():
    hashnet = keras_hash.HashNet(conv_backbone(), bits=16)
    dhn = keras_hash.DHN(conv_backbone(), bits=16)
    hashnet.compile()
    dhn.compile()
    assert isinstance(hashnet.loss, keras_hash.HashNetLoss)
    assert isinstance(dhn.loss, keras_hash.DHNLoss)
    assert isinstance(hashnet.hash_layer.beta_schedule, keras_hash.HashNetContinuation)
    assert isinstance(dhn.hash_layer.beta_schedule, keras_hash.ConstantBeta)
    hashnet.compile(loss=keras_hash.DHNLoss())
    assert isinstance(hashnet.loss, keras_hash.DHNLoss)


def test_plain_hash_model_needs_a_loss():
    model = keras_hash.HashModel(conv_backbone(), bits=16)
    with pytest.raises(ValueError, match="HashModel has no default loss"):
        model.compile()
    model.compile(optimizer="adam", loss=keras_hash.HashNetLoss())
    assert isinstance(model.loss, keras_hash.HashNetLoss)


def test_normalize_is_the_default_of_every_model():
    for cls in (keras_hash.HashModel, keras_hash.HashNet, keras_hash.DHN):
        assert cls(conv_backbone(), bits=16).hash_layer.normalize is True
        unnormalized = cls(conv_backbone(), bits=16, normalize=False)
        assert unnormalized.hash_layer.normalization is None


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(
    "cls", [keras_hash.HashModel, keras_hash.HashNet, keras_hash.DHN]
)
def test_models_round_trip_through_a_keras_file(cls, normalize, tmp_path):
    model = cls(conv_backbone(), bits=16, beta_schedule=2.0, normalize=normalize)
    model.compile(optimizer="adam", loss=keras_hash.DHNLoss(scale=0.25))
    x, labels = images(16), np.arange(16) % 3
    model.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(restored) is cls
    config, restored_config = model.get_config(), restored.get_config()
    assert restored_config.pop("backbone")["class_name"] == "Sequential"
    config.pop("backbone")  # its weights are compared through the outputs
    assert restored_config == config
    assert restored.hash_layer.normalize is normalize
    np.testing.assert_array_equal(
        restored.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    np.testing.assert_array_equal(restored.encode(x), reference_codes(model, x))
    assert isinstance(restored.loss, keras_hash.DHNLoss) and restored.loss.scale == 0.25


@pytest.mark.parametrize("normalize", [False, True])
def test_hash_layer_round_trips_through_serialization(normalize):
    layer = keras_hash.HashLayer(16, beta_schedule=1.5, normalize=normalize)
    x = images(4).reshape(4, -1)
    layer.build(x.shape)
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "keras_hash>HashLayer"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is keras_hash.HashLayer
    assert restored.get_config() == layer.get_config()
    assert restored.built  # from the serialized build config
    restored.set_weights(layer.get_weights())
    np.testing.assert_array_equal(restored(x).numpy(), layer(x).numpy())


def loss_values(loss):
    labels = np.array([0, 1, 0, 2, 1, 1])
    codes = np.tanh(np.random.default_rng(7).normal(size=(6, 16)))
    return keras.ops.convert_to_numpy(loss(labels, codes.astype(np.float32)))


@pytest.mark.parametrize(
    "obj",
    [
        keras_hash.HashNetLoss(),
        keras_hash.HashNetLoss(alpha=0.3, reduction="sum"),
        keras_hash.DHNLoss(scale=0.25, quantization_weight=2.0),
        keras_hash.ConstantBeta(3.0),
        keras_hash.HashNetContinuation(init=2.0, gamma=0.1, power=0.7, step_size=3),
    ],
    ids=lambda obj: type(obj).__name__,
)
def test_losses_and_schedules_round_trip_through_serialization(obj):
    config = keras.saving.serialize_keras_object(obj)
    assert config["registered_name"] == f"keras_hash>{type(obj).__name__}"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(obj) and restored is not obj
    assert restored.get_config() == obj.get_config()
    if isinstance(obj, keras.losses.Loss):
        np.testing.assert_array_equal(loss_values(restored), loss_values(obj))
    else:
        steps = np.array([0, 1, 5, 100, 10_000])
        values = [float(obj(t)) for t in steps]
        assert [float(restored(t)) for t in steps] == values
        assert len(set(values)) == (
            1 if isinstance(obj, keras_hash.ConstantBeta) else 4
        )


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("cls", [keras_hash.HashNet, keras_hash.DHN])
def test_keras_save_and_load_keep_codes_and_beta(cls, normalize, tmp_path):
    model = cls(
        conv_backbone(),
        bits=16,
        beta_schedule=keras_hash.HashNetContinuation(gamma=1.0, step_size=1),
        normalize=normalize,
    )
    model.compile(optimizer="adam")
    x = images(32)
    labels = np.arange(32) % 3
    model.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is cls
    assert restored.hash_layer.normalize is normalize
    assert float(restored.hash_layer.beta.numpy()) == float(
        model.hash_layer.beta.numpy()
    )
    assert float(restored.hash_layer.beta.numpy()) == pytest.approx(np.sqrt(4.0))
    np.testing.assert_array_equal(restored.encode(x), model.encode(x))
    assert type(restored.loss) is type(model.loss)
    restored.fit(x, labels, batch_size=8, epochs=1, verbose=0)  # still trainable


def flatten_backbone():
    """Not mirror-symmetric: its features of an image and its mirror differ."""
    return keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(6)],
        name="backbone",
    )


def test_flip_average_encodes_the_mean_of_image_and_mirror_features():
    model = keras_hash.HashNet(flatten_backbone(), bits=16, flip_average=True)
    x = images()
    model.build(x.shape)
    features = (
        model.backbone.predict(x, verbose=0)
        + model.backbone.predict(x[:, :, ::-1].copy(), verbose=0)
    ) / 2
    np.testing.assert_allclose(model.features(x).numpy(), features, atol=1e-5)
    z = reference_z(model.hash_layer, features)
    np.testing.assert_allclose(model.code_logits(x).numpy(), z, atol=1e-5)
    np.testing.assert_array_equal(model.encode(x), np.packbits(z >= 0, axis=-1))
    # An image and its mirror get the same code; without averaging they differ.
    mirrored = x[:, :, ::-1].copy()
    np.testing.assert_array_equal(model.encode(mirrored), model.encode(x))
    plain = keras_hash.HashNet(model.backbone, bits=16)
    plain.build(x.shape)
    plain.hash_layer.set_weights(model.hash_layer.get_weights())
    assert (plain.encode(mirrored) != plain.encode(x)).any()


def test_flip_average_leaves_training_alone():
    averaged = keras_hash.DHN(flatten_backbone(), bits=8, flip_average=True)
    plain = keras_hash.DHN(averaged.backbone, bits=8)
    x = images()
    averaged.build(x.shape)
    plain.build(x.shape)
    plain.hash_layer.set_weights(averaged.hash_layer.get_weights())
    np.testing.assert_allclose(
        averaged(x, training=True).numpy(), plain(x, training=True).numpy()
    )
    assert not np.allclose(averaged(x).numpy(), plain(x).numpy())


def test_flip_average_is_saved(tmp_path):
    model = keras_hash.DHN(flatten_backbone(), bits=16, flip_average=True)
    model.compile(optimizer="sgd")
    x = images()
    model.fit(x, np.arange(20) % 2, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.flip_average is True
    np.testing.assert_array_equal(restored.encode(x), model.encode(x))


def test_flip_average_needs_images():
    dense = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="flip_average needs images"):
        keras_hash.HashNet(dense, bits=8, flip_average=True).build((None, 5))
    with pytest.raises(TypeError, match="flip_average must be a bool"):
        keras_hash.HashNet(dense, bits=8, flip_average="yes")


def shifted_by_reflection(x, rows, cols):
    """``x`` moved ``rows`` down and ``cols`` right, borders reflected (numpy)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    height, width = x.shape[1:3]
    return padded[:, 1 - rows : 1 - rows + height, 1 - cols : 1 - cols + width]


@pytest.mark.parametrize("flip", [False, True])
def test_translate_average_weights_the_image_and_two_shifts(flip):
    model = keras_hash.HashNet(
        flatten_backbone(), bits=16, flip_average=flip, translate_average=True
    )
    x = images()
    model.build(x.shape)

    def features(batch):
        out = model.backbone.predict(batch, verbose=0)
        if flip:
            mirrored = model.backbone.predict(batch[:, :, ::-1].copy(), verbose=0)
            out = (out + mirrored) / 2
        return out

    # The reference's own shifts: content moves one pixel, row 1 reflects in.
    down_right = shifted_by_reflection(x, 1, 1)
    np.testing.assert_array_equal(down_right[:, 1:, 1:], x[:, :-1, :-1])
    np.testing.assert_array_equal(down_right[:, 0, 1:], x[:, 1, :-1])
    np.testing.assert_array_equal(
        shifted_by_reflection(x, -1, -1)[:, :-1, :-1], x[:, 1:, 1:]
    )
    expected = (
        features(x) / 2
        + features(shifted_by_reflection(x, 1, 1)) / 4
        + features(shifted_by_reflection(x, -1, -1)) / 4
    )
    np.testing.assert_allclose(model.features(x).numpy(), expected, atol=1e-5)
    z = reference_z(model.hash_layer, expected)
    np.testing.assert_array_equal(model.encode(x), np.packbits(z >= 0, axis=-1))
    # Training sees the plain image.
    plain = keras_hash.HashNet(model.backbone, bits=16)
    plain.build(x.shape)
    plain.hash_layer.set_weights(model.hash_layer.get_weights())
    np.testing.assert_allclose(
        model(x, training=True).numpy(), plain(x, training=True).numpy()
    )


def test_translate_average_is_saved_and_exported(tmp_path):
    model = keras_hash.DHN(
        conv_backbone(), bits=16, flip_average=True, translate_average=True
    )
    model.compile(optimizer="sgd")
    x = images()
    model.fit(x, np.arange(20) % 2, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.translate_average is True and restored.flip_average is True
    np.testing.assert_array_equal(restored.encode(x), model.encode(x))
    path = keras_hash.export.export_tflite(model, str(tmp_path / "model.tflite"))
    encoder = keras_hash.export.TFLiteEncoder(path)
    np.testing.assert_array_equal(encoder.encode(x), model.encode(x))


def test_translate_average_needs_images():
    dense = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="translate_average needs images"):
        keras_hash.HashNet(dense, bits=8, translate_average=True).build((None, 5))
    with pytest.raises(TypeError, match="translate_average must be a bool"):
        keras_hash.HashNet(dense, bits=8, translate_average=1)


def test_encode_needs_bits_multiple_of_8():
    model = keras_hash.DHN(conv_backbone(), bits=12)
    model.compile()
    model.fit(images(8), np.arange(8) % 2, verbose=0)  # 12 bits train fine
    with pytest.raises(ValueError, match="multiple of 8"):
        model.encode(images(4))


def test_encode_rejects_wrong_image_shape():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    with pytest.raises(ValueError, match="expects"):
        model.encode(np.zeros((3, 9, 8, 1), np.float32))
    with pytest.raises(ValueError, match="expects"):
        model.encode(np.zeros((3, 8, 8), np.float32))


def test_encode_rejects_bad_batch_size():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(images(3), batch_size=0)


def test_backbone_must_be_a_keras_layer():
    with pytest.raises(TypeError, match="backbone"):
        keras_hash.HashNet(lambda x: x, bits=16)


def test_fit_with_multi_hot_labels():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    model.compile(optimizer="adam")
    labels = (np.random.default_rng(3).random((16, 5)) < 0.4).astype(np.float32)
    history = model.fit(images(16), labels, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_keras_applications_backbone():
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, pooling="avg", weights=None
    )
    model = keras_hash.HashNet(backbone, bits=32)
    model.compile(optimizer="adam")
    x = np.random.default_rng(4).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    model.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.encode(x), reference_codes(model, x))


def frozen_pair(seed=5):
    """Two HashNets with the same frozen backbone and hash layer weights."""
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(seed)
        backbone = conv_backbone()
        backbone.trainable = False
        # fit_hash_layer keeps the moving statistics; so must fit here.
        model = keras_hash.HashNet(
            backbone, bits=16, normalize=True, precise_batch_norm=False
        )
        model.build((None, 8, 8, 1))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        models.append(model)
    return models


def test_fit_hash_layer_matches_fit_on_images_with_a_frozen_backbone():
    on_images, on_features = frozen_pair()
    x, labels = images(24), np.arange(24) % 3
    backbone_weights = [w.copy() for w in on_features.backbone.get_weights()]
    on_images.fit(x, labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
    features = on_features.backbone.predict(x, verbose=0)
    history = on_features.fit_hash_layer(
        features, labels, batch_size=8, epochs=2, shuffle=False, verbose=0
    )
    assert len(history.history["loss"]) == 2
    for trained, expected in zip(
        on_features.hash_layer.get_weights(),
        on_images.hash_layer.get_weights(),
        strict=True,
    ):
        np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=1e-6)
    assert int(on_features.hash_layer.iterations.numpy()) == 6  # 2 epochs x 3
    assert int(on_features.optimizer.iterations.numpy()) == 6
    for kept, before in zip(
        on_features.backbone.get_weights(), backbone_weights, strict=True
    ):
        np.testing.assert_array_equal(kept, before)


def test_fit_hash_layer_shuffles_by_seed_and_drops_the_partial_batch():
    a, b = frozen_pair()
    features = np.random.default_rng(6).normal(size=(20, 4)).astype(np.float32)
    labels = np.arange(20) % 2
    for model in (a, b):
        model.fit_hash_layer(features, labels, batch_size=8, seed=3, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == 2  # 20 // 8
    np.testing.assert_array_equal(a.hash_layer.kernel.numpy(), b.hash_layer.kernel)


def test_fit_hash_layer_leaves_a_trainable_backbone_trainable_by_fit():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    model.build((None, 8, 8, 1))
    model.compile(optimizer="adam")
    x, labels = images(16), np.arange(16) % 2
    model.fit_hash_layer(model.backbone.predict(x, verbose=0), labels, 8, verbose=0)
    before = [w.copy() for w in model.backbone.get_weights()]
    model.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    assert any(
        not np.array_equal(w, b)
        for w, b in zip(model.backbone.get_weights(), before, strict=True)
    )


@pytest.mark.parametrize(
    "features, labels, batch_size, message",
    [
        (np.zeros((8, 5)), np.zeros(8), 4, r"features must be \[N, 4\]"),
        (np.zeros((8,)), np.zeros(8), 4, r"features must be \[N, 4\]"),
        (np.full((8, 4), np.nan), np.zeros(8), 4, "NaN or Inf"),
        (np.zeros((8, 4)), np.zeros(7), 4, "labels has 7 rows for 8 features"),
        (np.zeros((8, 4)), np.zeros(8), 9, "between 1 and the 8 features"),
    ],
)
def test_fit_hash_layer_rejects_bad_input(features, labels, batch_size, message):
    model, _ = frozen_pair()
    with pytest.raises(ValueError, match=message):
        model.fit_hash_layer(features, labels, batch_size=batch_size)


def test_fit_hash_layer_needs_a_compiled_model():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    with pytest.raises(ValueError, match="compile the model"):
        model.fit_hash_layer(np.zeros((8, 4)), np.zeros(8))


# --- issue 24: non-finite and wrong-shape images are refused, not encoded ---


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_encode_refuses_non_finite_pixels(value, as_tensor):
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    x = images(20)
    x[13, 4, 2, 0] = value  # one pixel of image 13 (batch 2 of 3 at size 6)
    with pytest.raises(ValueError, match=r"NaN or Inf.*image 13, 1 in this batch"):
        model.encode(tf.constant(x) if as_tensor else x, batch_size=6)


def test_encode_refuses_non_finite_pixels_in_datasets():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    x = images(20)
    x[[7, 8], 0, 0, 0] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(20))).batch(6)
    with pytest.raises(ValueError, match=r"NaN or Inf.*image 7, 2 in this batch"):
        model.encode(dataset)


def test_encode_of_finite_images_is_unchanged_by_the_check():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    x = images(20)
    x[3] = 1e6  # large but finite
    np.testing.assert_array_equal(model.encode(x, 7), reference_codes(model, x))
    integers = (np.abs(images(10)) * 50).astype(np.int32)
    np.testing.assert_array_equal(
        model.encode(integers), reference_codes(model, integers.astype(np.float32))
    )


def test_encode_refuses_datasets_of_the_wrong_image_size():
    # The backbone pools globally, so 10x10 images would run and give codes.
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    wrong = np.zeros((6, 10, 10, 1), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(wrong).batch(3)
    with pytest.raises(
        ValueError, match=r"shape \(None, 10, 10, 1\).*\(None, 8, 8, 1\)"
    ):
        model.encode(dataset)


def test_encode_checks_each_batch_of_datasets_with_unknown_sizes():
    model = keras_hash.HashNet(conv_backbone(), bits=16)
    sizes = [8, 8, 10]

    def generate():
        for size in sizes:
            yield np.zeros((2, size, size, 1), np.float32)

    spec = tf.TensorSpec((None, None, None, 1), tf.float32)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
    with pytest.raises(ValueError, match=r"shape \(2, 10, 10, 1\)"):
        model.encode(dataset)
    sizes[2] = 8
    assert model.encode(dataset).shape == (6, 2)
