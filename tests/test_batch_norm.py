"""Precise BatchNorm statistics against numpy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hash
from keras_hash import batch_norm

EPSILON = 1e-3  # keras.layers.BatchNormalization's default


def two_norm_model(seed=0):
    """Dense -> BN -> relu -> Dense -> BN, weights known to numpy."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(4, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dense(3, name="d2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs, x)


def numpy_precise(model, batches):
    """Mean over batches of each BN's batch mean and (biased) variance."""
    w1, b1 = model.get_layer("d1").get_weights()
    g1, c1 = model.get_layer("bn1").get_weights()[:2]
    w2, b2 = model.get_layer("d2").get_weights()
    stats = {"bn1": ([], []), "bn2": ([], [])}
    for x in batches:
        h = x @ w1 + b1
        stats["bn1"][0].append(h.mean(0))
        stats["bn1"][1].append(h.var(0))
        h = (h - h.mean(0)) / np.sqrt(h.var(0) + EPSILON) * g1 + c1
        h = np.maximum(h, 0) @ w2 + b2
        stats["bn2"][0].append(h.mean(0))
        stats["bn2"][1].append(h.var(0))
    return {k: (np.mean(m, 0), np.mean(v, 0)) for k, (m, v) in stats.items()}


def assert_statistics(model, want):
    for name, (mean, variance) in want.items():
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, atol=1e-5)


def data(n=40, seed=1):
    return np.random.default_rng(seed).normal(2.0, 3.0, (n, 5)).astype("float32")


def test_arrays_give_the_mean_of_batch_statistics():
    model, x = two_norm_model(), data(40)
    used = batch_norm.recompute_statistics(model, x, batch_size=16)
    assert used == 2  # the partial batch of 8 is dropped
    assert_statistics(model, numpy_precise(model, [x[:16], x[16:32]]))
    assert model.get_layer("bn1").momentum == 0.99  # restored


def test_one_partial_batch_is_used_when_there_is_no_full_one():
    model, x = two_norm_model(), data(10)
    assert batch_norm.recompute_statistics(model, x, batch_size=16) == 1
    assert_statistics(model, numpy_precise(model, [x]))


def test_datasets_of_pairs_and_max_batches():
    model, x = two_norm_model(), data(48)
    labels = np.arange(48)
    stream = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8).repeat()
    used = batch_norm.recompute_statistics(model, stream, max_batches=3)
    assert used == 3
    assert_statistics(model, numpy_precise(model, [x[:8], x[8:16], x[16:24]]))


def test_py_dataset():
    class Batches(keras.utils.PyDataset):
        def __init__(self, x):
            super().__init__()
            self.x = x

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return self.x[i * 6 : (i + 1) * 6], np.zeros(6)

    model, x = two_norm_model(), data(12)
    assert batch_norm.recompute_statistics(model, Batches(x)) == 2
    assert_statistics(model, numpy_precise(model, [x[:6], x[6:]]))


def test_an_error_part_way_leaves_the_statistics_as_they_were():
    class Broken(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 2:
                raise OSError("unreadable image")
            return data(8, seed=i)

    model = two_norm_model()
    batch_norm.recompute_statistics(model, data(16), batch_size=8)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(OSError, match="unreadable"):
        batch_norm.recompute_statistics(model, Broken())
    for now, then in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(now, then)
    assert model.get_layer("bn2").momentum == 0.99


def test_frozen_layers_keep_their_statistics():
    model, x = two_norm_model(), data(32)
    model.get_layer("bn1").trainable = False
    before = [w.copy() for w in model.get_layer("bn1").get_weights()]
    assert batch_norm.trainable_batch_norms(model) == [model.get_layer("bn2")]
    batch_norm.recompute_statistics(model, x, batch_size=16)
    for kept, old in zip(model.get_layer("bn1").get_weights(), before, strict=True):
        np.testing.assert_array_equal(kept, old)
    assert not np.allclose(model.get_layer("bn2").moving_mean.numpy(), 0.0)


def test_bad_arguments_are_named():
    model = two_norm_model()
    with pytest.raises(TypeError, match="numpy array, a tensor"):
        batch_norm.recompute_statistics(model, [[1.0] * 5])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batch_norm.recompute_statistics(model, data(), batch_size=0)
    with pytest.raises(TypeError, match="max_batches must be an int"):
        batch_norm.recompute_statistics(model, data(), max_batches=2.0)
    empty = tf.data.Dataset.from_tensor_slices(data(4)).batch(2).take(0)
    with pytest.raises(ValueError, match="no batch"):
        batch_norm.recompute_statistics(model, empty)
    assert model.get_layer("bn1").momentum == 0.99
    no_norm = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    assert batch_norm.recompute_statistics(no_norm, data()) == 0


def hash_model(precise=True, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    backbone = keras.Model(inputs, keras.layers.Dense(6, name="features")(inputs))
    model = keras_hash.HashNet(backbone, bits=8, precise_batch_norm=precise)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def hash_statistics_reference(model, batches):
    """Mean batch mean and variance of z = features @ W + b (the hash BN input)."""
    w, b = model.backbone.get_layer("features").get_weights()
    kernel, bias = model.hash_layer.kernel.numpy(), model.hash_layer.bias.numpy()
    z = [(x @ w + b) @ kernel + bias for x in batches]
    return np.mean([v.mean(0) for v in z], 0), np.mean([v.var(0) for v in z], 0)


def test_fit_ends_with_precise_statistics_and_leaves_beta_alone():
    model, x = hash_model(), data(40)
    labels = np.arange(40) % 3
    model.fit(x, labels, batch_size=8, epochs=2, verbose=0)
    assert int(model.hash_layer.iterations.numpy()) == 10  # no step for the pass
    assert int(model.optimizer.iterations.numpy()) == 10
    mean, variance = hash_statistics_reference(
        model, [x[i : i + 8] for i in range(0, 40, 8)]
    )
    norm = model.hash_layer.normalization
    np.testing.assert_allclose(norm.moving_mean.numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), variance, atol=1e-5)


def test_fit_without_precise_statistics_keeps_the_moving_averages():
    model, x = hash_model(precise=False), data(40)
    model.fit(x, np.arange(40) % 3, batch_size=8, epochs=2, verbose=0)
    mean, _ = hash_statistics_reference(model, [x[i : i + 8] for i in range(0, 40, 8)])
    # 10 updates at momentum 0.99 from 0 keep the average near 0, not at mean.
    moving = model.hash_layer.normalization.moving_mean.numpy()
    assert np.abs(moving - mean).max() > 0.1 * np.abs(mean).max()


def test_fit_leaves_the_validation_split_out():
    model, x = hash_model(), data(40)
    model.fit(
        x, np.arange(40) % 3, batch_size=8, epochs=1, validation_split=0.2, verbose=0
    )
    mean, _ = hash_statistics_reference(model, [x[i : i + 8] for i in range(0, 32, 8)])
    moving = model.hash_layer.normalization.moving_mean.numpy()
    np.testing.assert_allclose(moving, mean, atol=1e-5)


def test_config_round_trip_and_old_configs(tmp_path):
    model = hash_model(precise=False)
    model.build((None, 5))
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.saving.load_model(path).precise_batch_norm is False
    config = hash_model().get_config()
    assert config["precise_batch_norm"] is True
    del config["precise_batch_norm"]  # written before the option existed
    assert keras_hash.HashNet.from_config(config).precise_batch_norm is False
    with pytest.raises(TypeError, match="precise_batch_norm must be a bool"):
        keras_hash.HashNet(model.backbone, bits=8, precise_batch_norm=1)


@pytest.mark.parametrize("n, split", [(40, 0.2), (10, 0.25), (7, 0.5), (5, None)])
def test_training_part_splits_as_keras_does(n, split):
    from keras.src.trainers.data_adapters import array_slicing

    x = data(n)
    got = batch_norm.training_part(x, split)
    if split:  # Keras's own split (private API: a reference, not used by the code)
        (want,), _ = array_slicing.train_validation_split((x,), split)
    else:
        want = x
    np.testing.assert_array_equal(got, want)
    assert batch_norm.training_part(iter([x]), split) is None  # cannot be re-read


def test_once_after_defers_to_one_estimate_at_the_end():
    calls = []

    class Model:
        precise_batch_norm = True

        def recompute_batch_norm(self, images):
            calls.append((images, self.precise_batch_norm))

    model = Model()
    with batch_norm.once_after(model, lambda: "stream"):
        assert model.precise_batch_norm is False and not calls
    assert calls == [("stream", True)] and model.precise_batch_norm is True
    calls.clear()
    with pytest.raises(RuntimeError), batch_norm.once_after(model, lambda: "x"):
        raise RuntimeError("a fit failed")
    assert not calls and model.precise_batch_norm is True
    model.precise_batch_norm = False
    with batch_norm.once_after(model, lambda: "x"):
        pass
    assert not calls and model.precise_batch_norm is False
