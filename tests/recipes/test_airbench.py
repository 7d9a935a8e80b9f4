"""Tests for keras_hash.recipes.airbench: airbench's schedule, loss and recipe."""


import keras
import numpy as np
import pytest

from keras_hash import backbones
from keras_hash.recipes import airbench


def test_triangular_learning_rate_matches_piecewise_linear_reference():
    schedule = airbench.TriangularLearningRate(1.5, 100)
    steps = np.arange(0, 121)
    # Rise over int(0.23 * 100) = 23 steps from 0.2 to 1, fall to 0.07 at 100.
    expected = 1.5 * np.interp(steps, [0, 23, 100], [0.2, 1.0, 0.07])
    got = np.array([float(schedule(step)) for step in steps])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_triangular_learning_rate_round_trips_and_names_bad_values():
    schedule = airbench.TriangularLearningRate(0.5, 40, start=0.1, end=0.0)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert float(restored(10)) == pytest.approx(float(schedule(10)))
    with pytest.raises(ValueError, match="peak must be positive"):
        airbench.TriangularLearningRate(0.0, 10)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        airbench.TriangularLearningRate(1.0, 0)


def test_smoothed_sparse_crossentropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype("float32")
    labels = np.array([0, 1, 2, 3, 1, 0])
    target = np.full((6, 4), 0.2 / 4)
    target[np.arange(6), labels] += 0.8
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(target * log_softmax).sum(1).mean()
    loss = airbench.SmoothedSparseCrossentropy(4, label_smoothing=0.2)
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing"):
        airbench.SmoothedSparseCrossentropy(4, label_smoothing=1.0)


def test_airbench_classifier_penalizes_every_variable_until_dropped():
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3))
    backbone = backbones.whitened_cnn(images, widths=(4, 8, 8))
    classifier = airbench.airbench_classifier(backbone, 3, total_steps=10)
    weights = classifier.trainable_variables
    assert len(weights) == len(backbone.trainable_variables) + 1
    expected = airbench.AIRBENCH_L2 * sum(
        float(np.sum(np.square(w.numpy()))) for w in weights
    )
    assert float(sum(classifier.losses)) == pytest.approx(expected, rel=1e-5)
    assert float(classifier.optimizer.learning_rate) == pytest.approx(0.2 * 1.5)
    airbench.drop_regularizers(classifier)
    assert not classifier.losses


def test_compile_airbench_restarts_the_schedule_and_keeps_weights():
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3))
    backbone = backbones.whitened_cnn(images, widths=(4, 8, 8))
    classifier = airbench.airbench_classifier(backbone, 3, total_steps=10)
    classifier.fit(images, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    before = [w.numpy() for w in classifier.weights]
    airbench.compile_airbench(classifier, 3, total_steps=40, batch_size=512)
    assert int(classifier.optimizer.iterations) == 0
    assert classifier.optimizer.total_steps == 40
    # 0.2 of the peak, 1.5 per 1,024 images scaled to 512.
    assert float(classifier.optimizer.learning_rate) == pytest.approx(0.2 * 0.75)
    for old, new in zip(before, classifier.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    assert classifier.losses  # the penalties stay


def test_airbench_classifier_learns_a_separable_task():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 256)
    colours = np.array([[200, 60, 60], [60, 60, 200]])[labels]
    images = np.clip(
        colours[:, None, None] + rng.normal(0, 30, (256, 32, 32, 3)), 0, 255
    )
    keras.utils.set_random_seed(0)
    backbone = backbones.whitened_cnn(images, widths=(8, 8, 8))
    classifier = airbench.airbench_classifier(backbone, 2, 24, batch_size=32)
    classifier.fit(images, labels, batch_size=32, epochs=3, verbose=0)
    accuracy = (classifier.predict(images, verbose=0).argmax(1) == labels).mean()
    assert accuracy > 0.95


def _lookahead_reference(w, target, scale, steps, lr, total, period, max_decay):
    """Nesterov SGD (PyTorch/Keras form) with airbench's lookahead, in numpy."""
    w = w.astype(np.float64)
    velocity = np.zeros_like(w)
    slow = w.copy()
    for step in range(1, steps + 1):
        gradient = scale * (w - target)
        velocity = 0.85 * velocity - lr * gradient
        w = w + 0.85 * velocity - lr * gradient
        if step <= period:
            slow = w.copy()
        elif step % period == 0:
            decay = max_decay * min(step / total, 1.0) ** 3
            slow = slow + (1 - decay) * (w - slow)
        if step % period == 0:
            w = slow.copy()
    return w, slow


@pytest.mark.parametrize("steps", [13, 23])
def test_lookahead_sgd_matches_numpy_reference(steps):
    rng = np.random.default_rng(3)
    start = rng.normal(size=6)
    target = rng.normal(size=6)
    scale = rng.uniform(0.5, 2.0, size=6)
    variable = keras.Variable(start.astype("float32"))
    optimizer = airbench.LookaheadSGD(
        0.1, total_steps=20, period=5, max_decay=0.7, momentum=0.85, nesterov=True
    )
    for _ in range(steps):
        gradient = scale * (variable.numpy() - target)
        optimizer.apply_gradients([(gradient.astype("float32"), variable)])
    expected, slow = _lookahead_reference(start, target, scale, steps, 0.1, 20, 5, 0.7)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-4, atol=1e-5)
    optimizer.finalize_variable_values([variable])
    # The slow copy replaces the weights only once total_steps are done.
    final = slow if steps >= 20 else expected
    np.testing.assert_allclose(variable.numpy(), final, rtol=1e-4, atol=1e-5)


def test_lookahead_sgd_resumes_exactly_from_saved_weights(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")

    def model():
        keras.utils.set_random_seed(5)
        net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
        net.compile(
            optimizer=airbench.LookaheadSGD(
                0.05, total_steps=13, momentum=0.85, nesterov=True
            ),
            loss="mse",
        )
        return net

    straight = model()
    straight.fit(x, y, batch_size=64, epochs=13, shuffle=False, verbose=0)
    interrupted = model()
    interrupted.fit(x, y, batch_size=64, epochs=7, shuffle=False, verbose=0)
    path = str(tmp_path / "backup.weights.h5")
    interrupted.save_weights(path)
    resumed = model()
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(path)
    resumed.fit(
        x, y, batch_size=64, initial_epoch=7, epochs=13, shuffle=False, verbose=0
    )
    for got, want in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_lookahead_sgd_round_trips_and_names_bad_values():
    optimizer = airbench.LookaheadSGD(
        0.3, total_steps=40, period=4, max_decay=0.5, momentum=0.9
    )
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, airbench.LookaheadSGD)
    assert (restored.total_steps, restored.period, restored.max_decay) == (40, 4, 0.5)
    assert restored.momentum == 0.9
    with pytest.raises(ValueError, match="period must be >= 1"):
        airbench.LookaheadSGD(0.1, total_steps=10, period=0)
    with pytest.raises(ValueError, match="max_decay"):
        airbench.LookaheadSGD(0.1, total_steps=10, max_decay=1.0)


def test_alternating_flips_switch_every_epoch_and_resume():
    from keras_hash import datasets

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 4, 4, 3), np.uint8)
    labels = np.arange(24) % 3

    def stream(start_step=0):
        ds = datasets.train_dataset(
            images,
            labels,
            6,
            4,
            seed=3,
            padding=0,
            flip=airbench.alternating_flips,
            start_step=start_step,
        )
        return [(x.numpy(), y.numpy()) for x, y in ds]

    out = stream()
    lookup = {img.tobytes(): (i, 0) for i, img in enumerate(images)}
    lookup.update({img[:, ::-1].tobytes(): (i, 1) for i, img in enumerate(images)})
    flipped = np.full((4, 24), -1)
    for step, (x, _) in enumerate(out):
        for image in x:
            index, mirrored = lookup[image.tobytes()]
            flipped[step // 4, index] = mirrored
    assert (flipped >= 0).all()  # every image once per epoch
    assert 4 < flipped[0].sum() < 20  # the first epoch's flips are seeded coins
    np.testing.assert_array_equal(flipped[1:], 1 - flipped[:-1])
    for (x0, y0), (x1, y1) in zip(out[6:], stream(start_step=6), strict=True):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)


def test_alternating_flips_depend_on_the_seed_and_are_balanced():
    index = np.arange(10_000)
    first = airbench.alternating_flips(0, index, 0).numpy()
    other = airbench.alternating_flips(0, index, 1).numpy()
    assert 4_800 < first.sum() < 5_200 and 0.4 < (first != other).mean() < 0.6
    np.testing.assert_array_equal(airbench.alternating_flips(3, index, 0), 1 - first)
