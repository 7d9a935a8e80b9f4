import keras
import numpy as np
import pytest

import keras_hash
from keras_hash import schedules


def reference_beta(t, init, gamma, power, step):
    return init * (1.0 + gamma * ((t // step) * step)) ** power


def small_model(layer, features=6):
    inputs = keras.Input((features,))
    return keras.Model(inputs, layer(keras.layers.Dense(8)(inputs)))


def test_output_is_tanh_of_beta_times_projection():
    layer = keras_hash.HashLayer(16, beta_schedule=2.5, normalize=False)
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(
        out, np.tanh(2.5 * (x @ kernel + bias)), rtol=1e-5, atol=1e-6
    )
    z = keras.ops.convert_to_numpy(layer.logits(x))
    np.testing.assert_allclose(z, x @ kernel + bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps_per_execution", [1, 6])
def test_fit_advances_beta_inside_the_compiled_step(steps_per_execution):
    schedule = schedules.HashNetContinuation(
        init=1.0, gamma=0.5, power=1.0, step_size=2
    )
    layer = keras_hash.HashLayer(8, beta_schedule=schedule)
    model = small_model(layer)
    model.compile("sgd", "mse", steps_per_execution=steps_per_execution)
    x = np.random.default_rng(1).normal(size=(24, 6)).astype(np.float32)
    model.fit(x, np.zeros((24, 8)), batch_size=4, epochs=1, verbose=0)
    # 6 training steps; beta was last recomputed at step t = 5 -> t' = 4.
    assert int(layer.iterations.numpy()) == 6
    assert float(layer.beta.numpy()) == pytest.approx(reference_beta(5, 1, 0.5, 1, 2))
    assert float(layer.beta.numpy()) == pytest.approx(3.0)


def test_inference_does_not_move_beta():
    layer = keras_hash.HashLayer(8)
    model = small_model(layer)
    model.predict(np.zeros((10, 6)), verbose=0)
    assert int(layer.iterations.numpy()) == 0
    assert float(layer.beta.numpy()) == 1.0


def test_save_and_load_resume_beta(tmp_path):
    schedule = schedules.HashNetContinuation(gamma=1.0, step_size=1)
    layer = keras_hash.HashLayer(8, beta_schedule=schedule)
    model = small_model(layer)
    model.compile("sgd", "mse")
    x = np.random.default_rng(2).normal(size=(12, 6)).astype(np.float32)
    model.fit(x, np.zeros((12, 8)), batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    hash_layer = restored.layers[-1]
    assert int(hash_layer.iterations.numpy()) == 3
    assert float(hash_layer.beta.numpy()) == pytest.approx(np.sqrt(1.0 + 2.0))
    restored.fit(x, np.zeros((12, 8)), batch_size=4, epochs=1, verbose=0)
    assert int(hash_layer.iterations.numpy()) == 6
    assert float(hash_layer.beta.numpy()) == pytest.approx(np.sqrt(1.0 + 5.0))


def test_mixed_precision_output_is_float32():
    layer = keras_hash.HashLayer(8, dtype="mixed_bfloat16")
    out = layer(np.ones((2, 4), np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_config_round_trip():
    layer = keras_hash.HashLayer(
        24,
        beta_schedule=schedules.HashNetContinuation(gamma=0.01),
        kernel_regularizer="l2",
        normalize=True,
        name="h",
    )
    restored = keras_hash.HashLayer.from_config(layer.get_config())
    assert restored.bits == 24 and restored.normalize
    assert restored.beta_schedule.get_config() == layer.beta_schedule.get_config()
    assert isinstance(restored.kernel_regularizer, keras.regularizers.L2)


def test_normalize_is_the_default_and_old_configs_load_unnormalized():
    layer = keras_hash.HashLayer(8)
    assert layer.normalize and layer.normalization is not None
    assert layer.get_config()["normalize"] is True
    config = layer.get_config()
    del config["normalize"]  # as written before normalize=True became the default
    old = keras_hash.HashLayer.from_config(config)
    assert old.normalize is False and old.normalization is None
    unnormalized = keras_hash.HashLayer(8, normalize=False)
    assert unnormalized.normalization is None
    restored = keras_hash.HashLayer.from_config(unnormalized.get_config())
    assert restored.normalize is False


def reference_batch_norm(z, mean, var, gamma, offset, epsilon=1e-3):
    return gamma * (z - mean) / np.sqrt(var + epsilon) + offset


def test_normalize_standardizes_z_with_batch_then_moving_statistics():
    layer = keras_hash.HashLayer(8, beta_schedule=1.5, normalize=True)
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(64, 5)).astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    z = x @ layer.kernel.numpy() + layer.bias.numpy()
    batch_z = reference_batch_norm(z, z.mean(0), z.var(0), 1.0, 0.0)
    np.testing.assert_allclose(out, np.tanh(1.5 * batch_z), rtol=1e-4, atol=1e-5)
    # Inference: the moving statistics moved 1% of the way (momentum 0.99).
    bn = layer.normalization
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * z.mean(0), rtol=1e-4)
    moving_z = reference_batch_norm(
        z, bn.moving_mean.numpy(), bn.moving_variance.numpy(), 1.0, 0.0
    )
    logits = keras.ops.convert_to_numpy(layer.logits(x))
    np.testing.assert_allclose(logits, moving_z, rtol=1e-4, atol=1e-4)


def test_normalize_is_saved_with_its_statistics(tmp_path):
    layer = keras_hash.HashLayer(8, normalize=True)
    model = small_model(layer)
    model.compile("sgd", "mse")
    x = np.random.default_rng(4).normal(1.0, 2.0, size=(32, 6)).astype(np.float32)
    model.fit(x, np.zeros((32, 8)), batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored_model = keras.saving.load_model(path, safe_mode=True)
    restored = restored_model.layers[-1]
    assert restored.normalize
    for name in ("moving_mean", "moving_variance", "gamma", "beta"):
        np.testing.assert_array_equal(
            getattr(restored.normalization, name).numpy(),
            getattr(layer.normalization, name).numpy(),
        )
    assert not np.allclose(layer.normalization.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(
        restored_model.predict(x, verbose=0), model.predict(x, verbose=0)
    )


@pytest.mark.parametrize("bits", [0, -8])
def test_non_positive_bits_raise(bits):
    with pytest.raises(ValueError, match="positive"):
        keras_hash.HashLayer(bits)


def test_non_integer_bits_raise():
    with pytest.raises(TypeError, match="int"):
        keras_hash.HashLayer(16.0)
