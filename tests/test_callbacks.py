"""Tests for keras_hash.callbacks: StepBackup and RetrievalEvaluation."""

import json
import os

import keras
import numpy as np
import pytest

import keras_hash
from keras_hash.callbacks import RetrievalEvaluation, StepBackup


def small_model():
    inputs = keras.Input((6,))
    backbone = keras.Model(inputs, keras.layers.Dense(8)(inputs))
    # The backup is the state at the last step, before fit's precise
    # BatchNorm statistics (tests/test_batch_norm.py covers those).
    model = keras_hash.HashNet(backbone, bits=8, precise_batch_norm=False)
    model.build((None, 6))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n)


def test_backup_every_save_freq_steps_and_at_epoch_end(tmp_path):
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            path = tmp_path / "backup.json"
            seen.append(json.loads(path.read_text())["step"] if path.exists() else 0)

    x, y = data()
    model = small_model()
    backup = StepBackup(str(tmp_path), save_freq=3)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[backup, Spy()], verbose=0)
    # 8 steps: backups after steps 3 and 6 (seen by the later spy), then at
    # the end of the epoch (step 8).
    assert seen == [0, 0, 3, 3, 3, 6, 6, 6]
    assert json.loads((tmp_path / "backup.json").read_text())["step"] == 8
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


def test_restore_brings_back_weights_optimizer_and_hash_counter(tmp_path):
    x, y = data()
    model = small_model()
    backup = StepBackup(str(tmp_path), save_freq=100)
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[backup], verbose=0)
    fresh = small_model()
    assert backup.restore(fresh) == 16
    assert int(fresh.hash_layer.iterations.numpy()) == 16
    assert int(fresh.optimizer.iterations.numpy()) == 16
    for a, b in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    momentum = [v for v in model.optimizer.variables if "momentum" in v.path]
    restored = [v for v in fresh.optimizer.variables if "momentum" in v.path]
    assert momentum and len(momentum) == len(restored)
    for a, b in zip(momentum, restored, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_without_backup_is_step_zero(tmp_path):
    model = small_model()
    assert StepBackup(str(tmp_path / "none")).restore(model) == 0


def test_clear_removes_the_backup(tmp_path):
    x, y = data()
    model = small_model()
    backup = StepBackup(str(tmp_path / "b"), save_freq=2)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[backup], verbose=0)
    backup.clear()
    assert not (tmp_path / "b").exists()


def test_bad_save_freq_is_named():
    with pytest.raises(ValueError, match="save_freq must be >= 1, got 0"):
        StepBackup("x", save_freq=0)


def test_retrieval_evaluation_logs_map_matching_a_numpy_reference():
    x, y = data(40, seed=1)
    model = small_model()
    callback = RetrievalEvaluation((x[:10], y[:10]), (x[10:], y[10:]), every=2)
    history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[callback], verbose=0)
    # Evaluated after epoch 2 (every=2) and after the last epoch, 3.
    assert [epoch for epoch, _ in callback.history] == [1, 2]
    assert "val_map" in history.history
    expected = numpy_map(model.encode(x[:10]), y[:10], model.encode(x[10:]), y[10:])
    np.testing.assert_allclose(callback.history[-1][1], expected, atol=1e-12)


def numpy_map(query_codes, query_labels, db_codes, db_labels):
    """mAP over the whole database, ties by index, empty queries count 0."""
    q_bits = np.unpackbits(query_codes, axis=1).astype(int)
    d_bits = np.unpackbits(db_codes, axis=1).astype(int)
    aps = []
    for bits, label in zip(q_bits, query_labels, strict=True):
        distance = np.abs(d_bits - bits).sum(axis=1)
        order = np.argsort(distance, kind="stable")
        relevant = (db_labels[order] == label).astype(float)
        if relevant.sum() == 0:
            aps.append(0.0)
            continue
        precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
        aps.append(float((precision * relevant).sum() / relevant.sum()))
    return float(np.mean(aps))
