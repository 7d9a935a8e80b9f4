"""MirroredStrategy over two logical CPUs must train like one device.

conftest.py splits the CPU into two logical devices before TF starts.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hash
from keras_hash.recipes import airbench


@pytest.fixture(scope="module")
def strategy():
    # One strategy for the module: collective instance keys are numbered per
    # strategy, and two strategies in one process can collide on them.
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def make_model(cls, normalize=False):
    keras.utils.set_random_seed(7)
    backbone = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(12, activation="tanh")]
    )
    model = cls(backbone, bits=16, normalize=normalize)
    model.build((None, 10))
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    return model


def data(n, seed=0, multi_label=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype(np.float32)
    if multi_label:
        return x, (rng.random((n, 4)) < 0.4).astype(np.float32)
    return x, rng.integers(0, 3, n)


def one_step(model, x, y):
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][0], [w.numpy() for w in model.trainable_weights]


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize(
    "cls",
    [
        keras_hash.HashNet,
        keras_hash.DHN,
        keras_hash.DCH,
        keras_hash.DPSH,
        pytest.param(functools.partial(keras_hash.CSQ, num_classes=4), id="CSQ"),
    ],
)
def test_one_step_matches_single_device(cls, multi_label, strategy):
    x, y = data(32, multi_label=multi_label)
    single = make_model(cls)
    before = [w.numpy() for w in single.trainable_weights]
    loss_single, weights_single = one_step(single, x, y)

    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = make_model(cls)
    loss_mirrored, weights_mirrored = one_step(mirrored, x, y)

    update = max(
        np.abs(a - b).max() for a, b in zip(weights_single, before, strict=True)
    )
    assert update > 1e-3  # the step really moved the weights
    for a, b in zip(weights_single, weights_mirrored, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert loss_mirrored == pytest.approx(loss_single, abs=1e-5)
    assert int(mirrored.hash_layer.iterations.numpy()) == 1


def test_normalized_codes_use_global_batch_statistics(strategy):
    x, y = data(32, seed=1)
    single = make_model(keras_hash.HashNet, normalize=True)
    loss_single, weights_single = one_step(single, x, y)
    with strategy.scope():
        mirrored = make_model(keras_hash.HashNet, normalize=True)
    loss_mirrored, weights_mirrored = one_step(mirrored, x, y)
    for a, b in zip(weights_single, weights_mirrored, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert loss_mirrored == pytest.approx(loss_single, abs=1e-5)
    # Moving statistics of the whole batch of 32, not of one replica's 16.
    bn_single = single.hash_layer.normalization
    bn_mirrored = mirrored.hash_layer.normalization
    assert np.abs(bn_single.moving_mean.numpy()).max() > 1e-4
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            getattr(bn_mirrored, name).numpy(),
            getattr(bn_single, name).numpy(),
            atol=1e-6,
        )


def test_short_and_empty_replica_batches_are_not_nan(strategy):
    with strategy.scope():
        model = make_model(keras_hash.HashNet)
    x, y = data(17)  # 16 + a last batch of 1: one replica gets nothing
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(np.all(np.isfinite(w.numpy())) for w in model.trainable_weights)
    assert int(model.hash_layer.iterations.numpy()) == 4


def test_lookahead_sgd_trains_like_one_device(strategy):
    # 7 full-batch steps with a period of 3: the slow copy taken at step 3,
    # a pull back at step 6, and the slow weights copied in at the end.
    x, y = data(32, seed=2)
    y = y.astype(np.float32)[:, None]

    def model():
        keras.utils.set_random_seed(8)
        net = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
        net.compile(
            optimizer=airbench.LookaheadSGD(
                0.05, total_steps=7, period=3, momentum=0.85, nesterov=True
            ),
            loss="mse",
        )
        return net

    single = model()
    single.fit(x, y, batch_size=32, epochs=7, shuffle=False, verbose=0)
    with strategy.scope():
        mirrored = model()
    mirrored.fit(x, y, batch_size=32, epochs=7, shuffle=False, verbose=0)
    for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
