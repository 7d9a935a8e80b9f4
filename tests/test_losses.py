"""Loss values and gradients against numpy written straight from the papers.

The references follow the papers' notation, not the library's code:

- HashNet (Cao et al., ICCV 2017) and DHN (Zhu et al., AAAI 2016): the
  pairwise likelihood ``softplus(x) - s x`` on scaled inner products,
  HashNet's weights ``|S| / |S1|``, ``|S| / |S0|``, DHN's logcosh
  quantization.
- DCH (Cao et al., CVPR 2018): ``d(h_i, h_j) = K/2 (1 - cos(h_i, h_j))``,
  the Cauchy probability ``sigma = gamma / (gamma + d)``, the weighted
  cross-entropy ``-w_ij (s_ij log sigma + (1 - s_ij) log(1 - sigma))`` and
  the quantization ``log(1 + d(|h_i|, 1) / gamma)``.
- CSQ (Yuan et al., CVPR 2020): Hadamard centres, the binary cross-entropy
  between ``(c + 1) / 2`` and ``(h + 1) / 2`` averaged over bits, plus
  ``lambda * mean (|h| - 1)^2``.
- DPSH (Li et al., IJCAI 2016): ``-(s_ij theta_ij - log(1 + e^theta_ij))``
  with ``theta_ij = u_i^T u_j / 2``, plus ``eta ||b_i - u_i||^2``.

Pairwise losses give one value per row: the mean over the row's pairs
(``i != j``), so the mean over rows is the mean over pairs.
"""

import functools

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

import keras_hash
from keras_hash import losses
from tests.test_models import conv_backbone


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


# ---------------------------------------------------------------------------
# DCH, CSQ and DPSH


def paper_distance(a, b):
    """``K/2 (1 - cos)`` between the rows of ``a`` and of ``b``."""
    norms = np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    return a.shape[1] / 2.0 * (1.0 - (a @ b.T) / norms)


def balanced_weights(s, mask):
    """HashNet's (and DCH's) ``w_ij``: |S|/|S1| similar, |S|/|S0| dissimilar."""
    n1, n0 = (mask * s).sum(), (mask * (1 - s)).sum()
    return mask * np.where(s > 0, (n1 + n0) / max(n1, 1), (n1 + n0) / max(n0, 1))


def reference_dch(labels, codes, gamma=20.0, lam=0.1):
    h = codes.astype(np.float64)
    n = len(h)
    s, mask = similarity(labels, labels), 1.0 - np.eye(n)
    sigma = gamma / (gamma + paper_distance(h, h))
    with np.errstate(divide="ignore", invalid="ignore"):
        ce = np.where(s > 0, -np.log(sigma), -np.log(1.0 - sigma))
    ce = np.where(mask > 0, ce, 0.0)
    w = balanced_weights(s, mask)
    pairs_per_row = mask.sum() / n
    quantization = np.log1p(paper_distance(np.abs(h), np.ones((1, h.shape[1]))) / gamma)
    rows = (w * ce).sum(axis=1) / pairs_per_row + lam * quantization[:, 0]
    return rows, rows.mean()


def reference_dpsh(labels, codes, eta=0.01):
    u = codes.astype(np.float64)
    s, mask = similarity(labels, labels), 1.0 - np.eye(len(u))
    theta = 0.5 * u @ u.T
    likelihood = -(s * theta - np.log1p(np.exp(theta)))
    b = np.where(u >= 0, 1.0, -1.0)
    rows = (mask * likelihood).sum(axis=1) / (len(u) - 1)
    rows = rows + eta * ((b - u) ** 2).sum(axis=1)
    return rows, rows.mean()


def paper_center(labels, centers, tie):
    """Single label: the class's centre; multi-label: sign of the centroid."""
    if labels.ndim == 1:
        return centers[labels]
    centroid = labels @ centers / labels.sum(axis=1, keepdims=True).clip(1)
    return np.where(centroid == 0, tie, np.sign(centroid))


def reference_csq(labels, codes, centers, tie, lam=1e-4):
    h = codes.astype(np.float64)
    target = (paper_center(labels, centers, tie) + 1) / 2
    p = (h + 1) / 2
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean(axis=1)
    rows = bce + lam * ((np.abs(h) - 1) ** 2).mean(axis=1)
    return rows, rows.mean()


def numpy_rows(value):
    return keras.ops.convert_to_numpy(value)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_dch_rows_match_reference(multi_label, seed):
    labels, codes = random_case(seed, multi_label=multi_label)
    expected, objective = reference_dch(labels, codes)
    np.testing.assert_allclose(
        numpy_rows(losses.dch_loss(labels, codes)), expected, rtol=1e-5
    )
    assert float(keras_hash.DCHLoss()(labels, codes)) == pytest.approx(
        objective, rel=1e-5
    )
    expected, objective = reference_dch(labels, codes, gamma=3.0, lam=0.7)
    loss = keras_hash.DCHLoss(gamma=3.0, quantization_weight=0.7)
    np.testing.assert_allclose(
        numpy_rows(keras_hash.DCHLoss(3.0, 0.7, reduction="none")(labels, codes)),
        expected,
        rtol=1e-5,
    )
    assert float(loss(labels, codes)) == pytest.approx(objective, rel=1e-5)


@pytest.mark.parametrize("multi_label", [False, True])
def test_dpsh_rows_match_reference(multi_label):
    labels, codes = random_case(2, multi_label=multi_label, magnitude=2.0)
    for eta in (0.01, 0.5):
        expected, objective = reference_dpsh(labels, codes, eta)
        rows = losses.dpsh_loss(labels, codes, quantization_weight=eta)
        np.testing.assert_allclose(numpy_rows(rows), expected, rtol=1e-5)
        loss = keras_hash.DPSHLoss(quantization_weight=eta)
        assert float(loss(labels, codes)) == pytest.approx(objective, rel=1e-5)
    assert keras_hash.DPSHLoss().quantization_weight == 0.01


@pytest.mark.parametrize("multi_label", [False, True])
def test_csq_rows_match_reference(multi_label):
    labels, codes = random_case(3, n=40, multi_label=multi_label)
    loss = keras_hash.CSQLoss(3, bits=16, seed=5, quantization_weight=0.3)
    centers = scipy.linalg.hadamard(16)[:3].astype(np.float64)
    np.testing.assert_array_equal(loss.centers, centers)
    tie = loss.tie_break
    assert set(np.unique(tie)) == {-1.0, 1.0}
    if multi_label:  # ties really happen: two labels disagree on half the bits
        assert np.any((labels @ centers) == 0)
    expected, objective = reference_csq(labels, codes, centers, tie, lam=0.3)
    rows = keras_hash.CSQLoss(3, 16, 5, 0.3, reduction="none")(labels, codes)
    np.testing.assert_allclose(numpy_rows(rows), expected, rtol=1e-5)
    assert float(loss(labels, codes)) == pytest.approx(objective, rel=1e-5)
    rows = losses.csq_loss(
        labels, codes, centers, quantization_weight=0.3, tie_break=tie
    )
    np.testing.assert_allclose(numpy_rows(rows), expected, rtol=1e-5)


def test_csq_ties_default_to_plus_one_and_follow_the_seed():
    labels = np.array([[1, 1, 0], [0, 0, 0]], np.float32)  # a tie row, no label
    codes = np.full((2, 4), 0.5, np.float32)
    centers = scipy.linalg.hadamard(4)[:3].astype(np.float32)
    rows = numpy_rows(losses.csq_loss(labels, codes, centers))
    ones = np.ones(4)
    expected = reference_csq(labels, codes, centers, ones, lam=1e-4)[0]
    np.testing.assert_allclose(rows, expected, rtol=1e-6)
    a, b = keras_hash.CSQLoss(3, 64, seed=1), keras_hash.CSQLoss(3, 64, seed=1)
    np.testing.assert_array_equal(a.tie_break, b.tie_break)
    assert np.any(a.tie_break != keras_hash.CSQLoss(3, 64, seed=2).tie_break)


def test_hash_centers_are_hadamard_rows_then_negations():
    centers = losses.hash_centers(32, 16)
    hadamard = scipy.linalg.hadamard(16)
    np.testing.assert_array_equal(centers, np.concatenate([hadamard, -hadamard]))
    assert centers.dtype == np.float32
    distance = (16 - centers @ centers.T) / 2
    off_diagonal = distance[~np.eye(32, dtype=bool)]
    assert set(np.unique(off_diagonal)) == {8.0, 16.0}
    np.testing.assert_array_equal(
        losses.hash_centers(10, 64, seed=3)[:10], (scipy.linalg.hadamard(64)[:10])
    )


@pytest.mark.parametrize("num_classes, bits", [(40, 16), (10, 24)])
def test_hash_centers_fall_back_to_seeded_bernoulli(num_classes, bits):
    # More classes than 2K, or a K with no Sylvester-Hadamard matrix.
    centers = losses.hash_centers(num_classes, bits, seed=7)
    assert centers.shape == (num_classes, bits)
    assert set(np.unique(centers)) == {-1.0, 1.0}
    assert abs(centers.mean()) < 0.15  # Bernoulli(0.5)
    np.testing.assert_array_equal(centers, losses.hash_centers(num_classes, bits, 7))
    assert np.any(centers != losses.hash_centers(num_classes, bits, seed=8))
    if bits == 16:  # not the Hadamard rows padded with random ones
        hadamard = scipy.linalg.hadamard(16)
        assert not np.array_equal(centers[:16], hadamard)


def paper_objective(name):
    if name == "dch":
        return keras_hash.DCHLoss(), lambda y, h: reference_dch(y, h)[1]
    if name == "dpsh":
        return keras_hash.DPSHLoss(0.3), lambda y, h: reference_dpsh(y, h, 0.3)[1]
    loss = keras_hash.CSQLoss(3, 8, quantization_weight=0.5)
    return loss, lambda y, h: reference_csq(y, h, loss.centers, loss.tie_break, 0.5)[1]


@pytest.mark.parametrize("name", ["dch", "csq", "dpsh"])
def test_dch_csq_dpsh_gradients_match_finite_differences(name):
    labels, codes = random_case(6, n=8, bits=8)
    loss_fn, reference = paper_objective(name)
    variable = tf.Variable(codes)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, variable)
    grad = tape.gradient(loss, variable).numpy()
    numeric = np.zeros(codes.shape)
    eps = 1e-6
    for idx in np.ndindex(codes.shape):
        up, down = codes.astype(np.float64), codes.astype(np.float64)
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (reference(labels, up) - reference(labels, down)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize(
    "make", [keras_hash.DCHLoss, keras_hash.DPSHLoss, lambda: keras_hash.CSQLoss(3, 16)]
)
def test_saturated_and_degenerate_codes_stay_finite(make):
    labels, codes = random_case(7, magnitude=1.0)
    saturated = np.sign(codes).astype(np.float32)
    saturated[1] = saturated[0]  # equal codes, maybe of dissimilar items
    for values in (saturated, np.zeros_like(codes), 60.0 * codes):
        variable = tf.Variable(values)
        with tf.GradientTape() as tape:
            loss = make()(labels, variable)
        grad = tape.gradient(loss, variable).numpy()
        assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))


def test_dch_equal_codes_of_dissimilar_items_cost_the_floor():
    codes = np.ones((2, 8), np.float32)
    rows = numpy_rows(losses.dch_loss(np.array([0, 1]), codes, gamma=20.0))
    # d = 0 up to float32 rounding of the cosine (a few 1e-7 bits).
    np.testing.assert_allclose(rows, [np.log1p(20.0 / 1e-6)] * 2, rtol=0.05)


def test_csq_saturated_wrong_bit_costs_the_clip():
    loss = keras_hash.CSQLoss(2, 4, quantization_weight=0.0, reduction="none")
    wrong = -loss.centers[:1]
    rows = numpy_rows(loss(np.array([0]), wrong))
    np.testing.assert_allclose(rows, [-np.log(1e-7)], rtol=1e-5)


NEW_LOSSES = [
    keras_hash.DCHLoss,
    keras_hash.DPSHLoss,
    functools.partial(keras_hash.CSQLoss, 3, 16),
]


@pytest.mark.parametrize("make", NEW_LOSSES)
@pytest.mark.parametrize("n", [0, 1])
def test_dch_csq_dpsh_empty_and_single_row_batches_are_not_nan(make, n):
    labels, codes = random_case(10, n=n)
    assert np.all(np.isfinite(numpy_rows(make()(labels, codes))))


@pytest.mark.parametrize("make", NEW_LOSSES)
def test_one_value_per_row_and_bad_inputs(make):
    labels, codes = random_case(12)
    assert numpy_rows(make(reduction="none")(labels, codes)).shape == (12,)
    flat, column = make()(labels, codes), make()(labels[:, None], codes)
    assert float(flat) == pytest.approx(float(column), rel=1e-7)
    with pytest.raises(ValueError, match="11 labels for 12 codes"):
        make()(labels[:11], codes)
    with pytest.raises(ValueError, match="class ids"):
        make()(np.zeros((12, 2, 2)), codes)
    with pytest.raises(ValueError, match=r"\[batch, bits\]"):
        make()(labels, codes[:, :, None])
    pm_one = np.where(np.arange(36).reshape(12, 3) % 2, 1.0, -1.0).astype(np.float32)
    with pytest.raises(ValueError, match="Convert ±1 labels"):
        make()(pm_one, codes)
    codes[2, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        make()(labels, codes)


def test_csq_checks_bits_and_classes():
    loss = keras_hash.CSQLoss(3, 16)
    labels, codes = random_case(13)
    with pytest.raises(ValueError, match="centres of 16 bits, got codes of 8"):
        loss(labels, codes[:, :8])
    multi_hot = np.eye(4, dtype=np.float32)[np.arange(12) % 4]
    with pytest.raises(ValueError, match="4 classes but there are 3 hash centres"):
        loss(multi_hot, codes)
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range for 3"):
        loss(np.arange(12) % 4, codes)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: keras_hash.DCHLoss(gamma=0.0), ValueError, "gamma must be positive"),
        (lambda: keras_hash.DCHLoss(quantization_weight=-1), ValueError, ">= 0"),
        (lambda: keras_hash.DPSHLoss(-0.1), ValueError, "quantization_weight"),
        (lambda: keras_hash.CSQLoss(0, 16), ValueError, "num_classes must be >= 1"),
        (lambda: keras_hash.CSQLoss(2.5, 16), TypeError, "num_classes must be an int"),
        (lambda: keras_hash.CSQLoss(3, 0), ValueError, "bits must be positive"),
        (lambda: keras_hash.CSQLoss(3, 16, seed=-1), ValueError, "seed must be >= 0"),
        (lambda: keras_hash.CSQLoss(3, 16, quantization_weight=-1), ValueError, ">="),
        (lambda: keras_hash.CSQ(conv_backbone(), 16), TypeError, "num_classes"),
    ],
)
def test_dch_csq_dpsh_bad_hyperparameters_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()
