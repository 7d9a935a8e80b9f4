"""Train on scikit-learn's bundled digits (no download) and retrieve."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_hash


def reference_map(query_codes, query_labels, db_codes, db_labels):
    """Brute-force mAP over the whole database: stable sort by Hamming distance."""
    bits = query_codes.shape[1] * 8
    q = np.unpackbits(query_codes, axis=1).astype(np.int64) * 2 - 1
    d = np.unpackbits(db_codes, axis=1).astype(np.int64) * 2 - 1
    distances = (bits - q @ d.T) // 2
    aps = []
    for i in range(len(q)):
        order = np.argsort(distances[i], kind="stable")
        relevant = db_labels[order] == query_labels[i]
        hits = np.cumsum(relevant)
        ranks = np.arange(1, len(order) + 1)
        aps.append((hits / ranks)[relevant].sum() / max(relevant.sum(), 1))
    return float(np.mean(aps))


def digits_split():
    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype(np.float32)
    y = digits.target
    order = np.random.default_rng(0).permutation(len(x))
    query, train = order[:200], order[200:1200]
    database = order[200:]
    return x, y, query, train, database


def backbone():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
        ]
    )


@pytest.mark.parametrize("cls", [keras_hash.HashNet, keras_hash.DHN])
def test_trained_codes_retrieve_far_better_than_random(cls):
    x, y, query, train, database = digits_split()
    model = cls(backbone(), bits=32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x[train], y[train], batch_size=64, epochs=20, verbose=0)

    trained = reference_map(
        model.encode(x[query]), y[query], model.encode(x[database]), y[database]
    )
    rng = np.random.default_rng(1)
    random_codes = rng.integers(0, 256, (len(x), 4), dtype=np.uint8)
    chance = reference_map(
        random_codes[query], y[query], random_codes[database], y[database]
    )
    assert chance < 0.2
    assert trained > 0.8, f"mAP {trained:.3f} (random codes: {chance:.3f})"
