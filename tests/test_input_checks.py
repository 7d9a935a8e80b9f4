"""The input contract of hash models: range, channels, NaN, pairs (issue 32)."""

import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hash
from keras_hash import input_checks


def raw_pixel_backbone(channels=3):
    """A tiny backbone that normalizes raw 0..255 pixels inside, as ours do."""
    return keras.Sequential(
        [
            keras.Input((8, 8, channels)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


def plain_backbone():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.uniform(0, 255, (n, 8, 8, 3)).astype(np.float32)
    return images, labels


def model_for(backbone, **kwargs):
    model = keras_hash.HashNet(backbone, bits=16, **kwargs)
    model.compile(optimizer="adam")
    return model


def test_the_range_comes_from_the_backbone_and_is_saved(tmp_path):
    assert input_checks.expected_range(raw_pixel_backbone()) == (0.0, 255.0)
    norm = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Normalization(mean=0.5, variance=0.1)]
    )
    assert input_checks.expected_range(norm) == (0.0, 1.0)
    assert input_checks.expected_range(plain_backbone()) is None
    app = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    assert input_checks.expected_range(app) == (0.0, 255.0)
    model = model_for(raw_pixel_backbone())
    assert model.get_config()["input_range"] == [0.0, 255.0]
    model.build((None, 8, 8, 3))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.input_range == (0.0, 255.0)


def test_fit_refuses_0_1_images_for_a_0_255_model():
    # Before issue 32 this trained with the loss pinned near 2 ln 2.
    images, labels = data()
    model = model_for(raw_pixel_backbone())
    with pytest.raises(ValueError, match=r"0\.\.1.*images \* 255"):
        model.fit(images / 255, labels, batch_size=16, epochs=1, verbose=0)


def test_encode_refuses_the_range_the_model_was_not_trained_on():
    images, labels = data()
    model = model_for(plain_backbone())  # the backbone says nothing
    assert model.input_range is None
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert model.input_range == (0.0, 255.0)  # learned from the training images
    model.encode(images)  # the same range passes
    with pytest.raises(ValueError, match=r"encode: images look scaled to 0\.\.1"):
        model.encode(images / 255)  # before: one code for every image
    scaled = model_for(plain_backbone())
    scaled.fit(images / 255, labels, batch_size=16, epochs=1, verbose=0)
    assert scaled.input_range == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"images / 255"):
        scaled.encode(images)


def test_wrong_channel_count_names_the_conversion():
    model = model_for(raw_pixel_backbone())
    gray = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=r"np\.repeat\(images, 3, axis=-1\)"):
        model.encode(gray)
    with pytest.raises(ValueError, match=r"alpha"):
        model.fit(np.zeros((8, 8, 8, 4)), np.arange(8) % 2, batch_size=4)
    with pytest.raises(ValueError, match=r"channels-first"):
        model.encode(np.zeros((4, 3, 8, 8), np.float32))


def test_nan_in_a_dataset_stops_training_at_that_step():
    # Before issue 32: the weights turned NaN, the loss stayed finite and
    # every image got the same code.
    images, labels = data()
    images[37, 2, 3, 1] = np.nan  # in the third batch of 16 (steps from 1)
    stream = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    model = model_for(raw_pixel_backbone())
    with pytest.raises(FloatingPointError) as error:
        model.fit(stream, epochs=1, verbose=0)
    found = re.search(
        r"Training step (\d+) .*finite after step (\d+)", str(error.value)
    )
    step, last_ok = int(found[1]), int(found[2])
    assert last_ok < 3 <= step  # the bad batch is between the two named steps
    checks = input_checks.StopOnNonFinite(budget=1.0)  # every step: exact
    model = model_for(raw_pixel_backbone())
    with pytest.raises(FloatingPointError, match=r"step 3 \(batch 2.*after step 2"):
        model.fit(stream, epochs=1, verbose=0, callbacks=[checks])


def test_nan_in_an_array_is_refused_before_training():
    images, labels = data()
    images[5, 0, 0, 0] = np.inf
    model = model_for(raw_pixel_backbone())
    with pytest.raises(ValueError, match=r"NaN or Inf.*image 5"):
        model.fit(images, labels, batch_size=16, verbose=0)


def test_fit_without_pairs_explains_the_pairwise_objective():
    images, labels = data()
    model = model_for(raw_pixel_backbone())
    with pytest.raises(ValueError, match=r"needs labels: HashNet learns from"):
        model.fit(images, None, batch_size=16)
    only_images = tf.data.Dataset.from_tensor_slices(images).batch(16)
    with pytest.raises(ValueError, match=r"needs labels"):
        model.fit(only_images)
    with pytest.raises(ValueError, match=r"batch_size=1 gives no pair"):
        model.fit(images, labels, batch_size=1)  # before: loss 0, no word
    with pytest.raises(ValueError, match=r"No batch of 16 images holds a similar"):
        model.fit(images, np.arange(64), batch_size=16)  # one id per image
    with pytest.warns(UserWarning, match=r"of random batches of 4 images hold"):
        model.fit(images, np.arange(64) % 32, batch_size=4, epochs=1, verbose=0)


def test_csq_is_pointwise_and_trains_on_batches_without_pairs():
    images, _ = data(16)
    model = keras_hash.CSQ(raw_pixel_backbone(), bits=16, num_classes=16)
    model.compile(optimizer="adam")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(images, np.arange(16), batch_size=4, epochs=1, verbose=0)


@pytest.mark.numpy_only
def test_similar_pair_share_against_the_birthday_formula():
    # 10 equally frequent classes, batches of 4: 1 - (10*9*8*7 / 10**4)
    # = 0.496 hold a similar pair (drawn without replacement from 10,000
    # labels, close to with replacement).
    labels = np.arange(10_000) % 10
    input_checks.PAIR_SAMPLES, saved = 2000, input_checks.PAIR_SAMPLES
    try:
        share = input_checks.similar_pair_share(labels, 4)
    finally:
        input_checks.PAIR_SAMPLES = saved
    assert abs(share - 0.496) < 0.04
    multi_hot = np.eye(8, dtype=np.int32)
    assert input_checks.similar_pair_share(multi_hot, 8) == 0.0
    multi_hot[:, 0] = 1
    assert input_checks.similar_pair_share(multi_hot, 2) == 1.0
