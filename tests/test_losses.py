"""Loss values and gradients against numpy written straight from the papers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hash
from keras_hash import losses


def similarity(a, b):
    if a.ndim == 1:
        return (a[:, None] == b[None, :]).astype(np.float64)
    return ((a > 0).astype(float) @ (b > 0).astype(float).T > 0).astype(np.float64)


def pair_terms(labels, codes, ref_labels, ref_codes, scale, offset):
    """Pairwise likelihood softplus(x) - s x and the mask of counted pairs."""
    s = similarity(labels, ref_labels)
    x = scale * codes.astype(np.float64) @ ref_codes.astype(np.float64).T
    mask = np.ones_like(s)
    if offset is not None:
        for i in range(len(codes)):
            if offset + i < len(ref_codes):
                mask[i, offset + i] = 0.0
    return np.logaddexp(0.0, x) - s * x, s, mask


def reference_hashnet(
    labels, codes, ref_labels=None, ref_codes=None, alpha=None, offset=0
):
    """Cao et al. 2017: w_ij = |S|/|S1| (similar), |S|/|S0| (dissimilar)."""
    if ref_codes is None:
        ref_labels, ref_codes = labels, codes
    alpha = 10.0 / codes.shape[1] if alpha is None else alpha
    loss, s, mask = pair_terms(labels, codes, ref_labels, ref_codes, alpha, offset)
    n1, n0 = (mask * s).sum(), (mask * (1 - s)).sum()
    n = n1 + n0
    w = np.where(s > 0, n / max(n1, 1), n / max(n0, 1)) * mask
    objective = (w * loss).sum() / n  # the mean over pairs
    rows = (w * loss).sum(axis=1) / (n / len(codes))
    return rows, objective


def reference_dhn(labels, codes, scale=0.5, lam=0.1):
    """Zhu et al. 2016: cross-entropy over pairs + lambda * sum logcosh(|z| - 1)."""
    loss, s, mask = pair_terms(labels, codes, labels, codes, scale, 0)
    n = mask.sum()
    y = np.abs(codes.astype(np.float64)) - 1.0
    logcosh = np.logaddexp(y, -y) - np.log(2.0)
    rows = (mask * loss).sum(axis=1) / (n / len(codes)) + lam * logcosh.sum(axis=1)
    objective = (mask * loss).sum() / n + lam * logcosh.sum(axis=1).mean()
    return rows, objective


def random_case(seed, n=12, bits=16, classes=3, multi_label=False, magnitude=1.0):
    rng = np.random.default_rng(seed)
    codes = (magnitude * np.tanh(rng.normal(size=(n, bits)))).astype(np.float32)
    if multi_label:
        labels = (rng.random((n, classes)) < 0.4).astype(np.float32)
    else:
        labels = rng.integers(0, classes, n)
    return labels, codes


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_hashnet_rows_match_reference(multi_label, seed):
    labels, codes = random_case(seed, multi_label=multi_label)
    expected_rows, objective = reference_hashnet(labels, codes)
    rows = keras.ops.convert_to_numpy(losses.hashnet_loss(labels, codes))
    np.testing.assert_allclose(rows, expected_rows, rtol=1e-5)
    loss = float(keras_hash.HashNetLoss()(labels, codes))
    assert loss == pytest.approx(objective, rel=1e-5)


@pytest.mark.parametrize("multi_label", [False, True])
def test_dhn_rows_match_reference(multi_label):
    labels, codes = random_case(3, multi_label=multi_label)
    expected_rows, objective = reference_dhn(labels, codes, scale=0.7, lam=0.3)
    rows = losses.dhn_loss(labels, codes, scale=0.7, quantization_weight=0.3)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(rows), expected_rows, rtol=1e-5
    )
    loss = keras_hash.DHNLoss(scale=0.7, quantization_weight=0.3)(labels, codes)
    assert float(loss) == pytest.approx(objective, rel=1e-5)


def test_alpha_defaults_to_ten_over_bits():
    labels, codes = random_case(4, bits=32)
    explicit = losses.hashnet_loss(labels, codes, alpha=10.0 / 32)
    default = losses.hashnet_loss(labels, codes)
    np.testing.assert_allclose(default, explicit, rtol=1e-7)
    np.testing.assert_allclose(
        losses.hashnet_loss(labels, codes, alpha=2.0),
        reference_hashnet(labels, codes, alpha=2.0)[0],
        rtol=1e-5,
    )


def test_reference_columns_and_self_pairs():
    labels, codes = random_case(5, n=10)
    rows = losses.hashnet_loss(labels[:4], codes[:4], labels, codes, row_offset=0)
    expected, _ = reference_hashnet(labels[:4], codes[:4], labels, codes, offset=0)
    np.testing.assert_allclose(rows, expected, rtol=1e-5)
    # Without an offset the columns are other items: no pair is left out.
    rows = losses.hashnet_loss(labels[:4], codes[:4], labels[4:], codes[4:])
    expected, _ = reference_hashnet(
        labels[:4], codes[:4], labels[4:], codes[4:], offset=None
    )
    np.testing.assert_allclose(rows, expected, rtol=1e-5)


def test_self_pairs_do_not_count():
    # Two identical items of one class and nothing else: the only pairs are
    # (0, 1) and (1, 0), both similar, with x = alpha * K.
    codes = np.ones((2, 8), np.float32)
    rows = keras.ops.convert_to_numpy(losses.hashnet_loss(np.array([0, 0]), codes))
    x = 10.0 / 8 * 8
    np.testing.assert_allclose(rows, [np.log1p(np.exp(-x))] * 2, rtol=1e-5)


@pytest.mark.parametrize("name", ["hashnet", "dhn"])
def test_gradients_match_finite_differences(name):
    labels, codes = random_case(6, n=8, bits=8)
    if name == "hashnet":
        loss_fn, reference = keras_hash.HashNetLoss(), reference_hashnet
    else:
        loss_fn, reference = keras_hash.DHNLoss(), reference_dhn
    variable = tf.Variable(codes)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, variable)
    grad = tape.gradient(loss, variable).numpy()
    numeric = np.zeros_like(codes, dtype=np.float64)
    eps = 1e-6
    for idx in np.ndindex(codes.shape):
        up, down = codes.astype(np.float64), codes.astype(np.float64)
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (reference(labels, up)[1] - reference(labels, down)[1]) / (
            2 * eps
        )
    np.testing.assert_allclose(grad, numeric, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("loss_cls", [keras_hash.HashNetLoss, keras_hash.DHNLoss])
def test_large_magnitudes_stay_finite(loss_cls):
    labels, codes = random_case(7, magnitude=60.0)
    variable = tf.Variable(codes)
    with tf.GradientTape() as tape:
        loss = loss_cls()(labels, variable)
    grad = tape.gradient(loss, variable).numpy()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
    if loss_cls is keras_hash.HashNetLoss:
        assert float(loss) == pytest.approx(
            reference_hashnet(labels, codes)[1], rel=1e-5
        )
    else:
        assert float(loss) == pytest.approx(reference_dhn(labels, codes)[1], rel=1e-5)


def test_loss_returns_one_value_per_row():
    labels, codes = random_case(8)
    rows = keras_hash.HashNetLoss(reduction="none")(labels, codes)
    assert tuple(rows.shape) == (12,)


def test_labels_of_shape_batch_by_one_are_class_ids():
    labels, codes = random_case(9)
    flat = float(keras_hash.HashNetLoss()(labels, codes))
    column = float(keras_hash.HashNetLoss()(labels[:, None], codes))
    assert flat == pytest.approx(column, rel=1e-7)


@pytest.mark.parametrize(
    "function",
    [losses.hashnet_loss, losses.dhn_loss, losses.dch_loss, losses.dpsh_loss],
)
def test_functional_losses_read_a_label_column_as_class_ids(function):
    # Before, the functions (unlike the Loss classes) read [B, 1] as one-class
    # multi-hot rows: two items of class 0 were dissimilar.
    labels, codes = random_case(11, classes=2)
    assert (labels == 0).sum() >= 2
    flat = keras.ops.convert_to_numpy(function(labels, codes))
    column = keras.ops.convert_to_numpy(function(labels[:, None], codes))
    np.testing.assert_allclose(column, flat, rtol=1e-6)


def test_csq_loss_reads_a_label_column_as_class_ids():
    labels, codes = random_case(12, classes=3)
    centers = losses.hash_centers(3, 16)
    flat = keras.ops.convert_to_numpy(losses.csq_loss(labels, codes, centers))
    column = keras.ops.convert_to_numpy(
        losses.csq_loss(labels[:, None], codes, centers)
    )
    np.testing.assert_allclose(column, flat, rtol=1e-6)


@pytest.mark.parametrize("loss_cls", [keras_hash.HashNetLoss, keras_hash.DHNLoss])
@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_row_batches_are_not_nan(loss_cls, n):
    labels, codes = random_case(10, n=n)
    loss = keras.ops.convert_to_numpy(loss_cls()(labels, codes))
    assert np.all(np.isfinite(loss))


def test_all_pairs_similar_has_no_nan():
    codes = random_case(11)[1]
    loss = float(keras_hash.HashNetLoss()(np.zeros(12, int), codes))
    assert loss == pytest.approx(
        reference_hashnet(np.zeros(12, int), codes)[1], rel=1e-5
    )


def test_label_count_mismatch_raises():
    labels, codes = random_case(12)
    with pytest.raises(ValueError, match="11 labels for 12 codes"):
        keras_hash.HashNetLoss()(labels[:11], codes)


def test_label_rank_raises():
    codes = random_case(13)[1]
    with pytest.raises(ValueError, match="class ids"):
        keras_hash.DHNLoss()(np.zeros((12, 2, 2)), codes)


def test_codes_rank_raises():
    with pytest.raises(ValueError, match=r"\[batch, bits\]"):
        keras_hash.HashNetLoss()(np.zeros(4), np.zeros((4, 2, 8)))


def test_nan_codes_raise():
    labels, codes = random_case(14)
    codes[2, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        keras_hash.HashNetLoss()(labels, codes)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras_hash.HashNetLoss(alpha=0.0),
        lambda: keras_hash.DHNLoss(scale=-1.0),
        lambda: keras_hash.DHNLoss(quantization_weight=-0.1),
    ],
)
def test_bad_hyperparameters_raise(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    "loss",
    [
        keras_hash.HashNetLoss(alpha=0.3),
        keras_hash.DHNLoss(0.2, 0.05),
        keras_hash.DCHLoss(gamma=5.0, quantization_weight=0.2),
        keras_hash.DPSHLoss(0.05),
        keras_hash.CSQLoss(3, 16, seed=4, quantization_weight=0.01),
    ],
)
def test_serialization_round_trip(loss):
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    labels, codes = random_case(15)
    assert float(restored(labels, codes)) == pytest.approx(float(loss(labels, codes)))


@pytest.mark.parametrize("loss_cls", [keras_hash.HashNetLoss, keras_hash.DHNLoss])
def test_pm_one_multi_hot_labels_raise(loss_cls):
    # CelebA-style ±1 attributes must be converted, not read as labels.
    labels = np.array([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]], np.float32)
    codes = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="Convert ±1 labels"):
        loss_cls()(labels, codes)
    converted = (labels > 0).astype(np.float32)
    assert np.isfinite(float(loss_cls()(converted, codes)))


def test_pm_one_multi_hot_labels_fail_in_fit():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(8)(inputs))
    model.compile(optimizer="sgd", loss=keras_hash.HashNetLoss())
    x = np.zeros((4, 4), np.float32)
    y = np.array([[1, -1], [-1, 1], [1, 1], [-1, -1]], np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Convert ±1 labels"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
