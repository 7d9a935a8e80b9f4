"""Tests for keras_hash.pretraining: airbench's schedule, loss and recipe."""

import keras
import numpy as np
import pytest

from keras_hash import backbones, pretraining


def test_triangular_learning_rate_matches_piecewise_linear_reference():
    schedule = pretraining.TriangularLearningRate(1.5, 100)
    steps = np.arange(0, 121)
    # Rise over int(0.23 * 100) = 23 steps from 0.2 to 1, fall to 0.07 at 100.
    expected = 1.5 * np.interp(steps, [0, 23, 100], [0.2, 1.0, 0.07])
    got = np.array([float(schedule(step)) for step in steps])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_triangular_learning_rate_round_trips_and_names_bad_values():
    schedule = pretraining.TriangularLearningRate(0.5, 40, start=0.1, end=0.0)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert float(restored(10)) == pytest.approx(float(schedule(10)))
    with pytest.raises(ValueError, match="peak must be positive"):
        pretraining.TriangularLearningRate(0.0, 10)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        pretraining.TriangularLearningRate(1.0, 0)


def test_smoothed_sparse_crossentropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype("float32")
    labels = np.array([0, 1, 2, 3, 1, 0])
    target = np.full((6, 4), 0.2 / 4)
    target[np.arange(6), labels] += 0.8
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(target * log_softmax).sum(1).mean()
    loss = pretraining.SmoothedSparseCrossentropy(4, label_smoothing=0.2)
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing"):
        pretraining.SmoothedSparseCrossentropy(4, label_smoothing=1.0)


def test_airbench_classifier_penalizes_every_variable_until_dropped():
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3))
    backbone = backbones.whitened_cnn(images, widths=(4, 8, 8))
    classifier = pretraining.airbench_classifier(backbone, 3, total_steps=10)
    weights = classifier.trainable_variables
    assert len(weights) == len(backbone.trainable_variables) + 1
    expected = pretraining.AIRBENCH_L2 * sum(
        float(np.sum(np.square(w.numpy()))) for w in weights
    )
    assert float(sum(classifier.losses)) == pytest.approx(expected, rel=1e-5)
    assert float(classifier.optimizer.learning_rate) == pytest.approx(0.2 * 1.5)
    pretraining.drop_regularizers(classifier)
    assert not classifier.losses


def test_airbench_classifier_learns_a_separable_task():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 256)
    colours = np.array([[200, 60, 60], [60, 60, 200]])[labels]
    images = np.clip(
        colours[:, None, None] + rng.normal(0, 30, (256, 32, 32, 3)), 0, 255
    )
    keras.utils.set_random_seed(0)
    backbone = backbones.whitened_cnn(images, widths=(8, 8, 8))
    classifier = pretraining.airbench_classifier(backbone, 2, 24, batch_size=32)
    classifier.fit(images, labels, batch_size=32, epochs=3, verbose=0)
    accuracy = (classifier.predict(images, verbose=0).argmax(1) == labels).mean()
    assert accuracy > 0.95
