"""DCH, CSQ and DPSH (issue 23): losses against numpy written from the papers,
bad input, serialization, ``.keras`` round trips, the CIFAR recipe's
``--method`` and an end-to-end run on scikit-learn's digits.

The references below follow the papers' notation, not the library's code:

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
import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

import keras_hash
from keras_hash import losses
from keras_hash.recipes import pipeline, presets
from tests.test_losses import random_case, similarity
from tests.test_models import conv_backbone


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
def test_gradients_match_finite_differences(name):
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
def test_empty_and_single_row_batches_are_not_nan(make, n):
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
def test_bad_hyperparameters_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()


MODELS = [
    (keras_hash.DCH, {}, keras_hash.DCHLoss),
    (keras_hash.CSQ, {"num_classes": 3, "center_seed": 2}, keras_hash.CSQLoss),
    (keras_hash.DPSH, {}, keras_hash.DPSHLoss),
]


@pytest.mark.parametrize("cls, kwargs, loss_cls", MODELS)
def test_models_round_trip_through_a_keras_file(cls, kwargs, loss_cls, tmp_path):
    model = cls(conv_backbone(), bits=16, **kwargs)
    assert isinstance(model.hash_layer.beta_schedule, keras_hash.ConstantBeta)
    model.compile(optimizer="adam")
    assert type(model.loss) is loss_cls
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    labels = np.arange(16) % 3
    model.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(restored) is cls
    config, restored_config = model.get_config(), restored.get_config()
    config.pop("backbone")
    restored_config.pop("backbone")
    assert restored_config == config
    np.testing.assert_array_equal(
        restored.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    np.testing.assert_array_equal(restored.encode(x), model.encode(x))
    assert type(restored.loss) is loss_cls
    assert restored.loss.get_config() == model.loss.get_config()


def test_csq_model_loss_uses_its_centres():
    model = keras_hash.CSQ(conv_backbone(), bits=8, num_classes=20, center_seed=3)
    assert model.get_config()["num_classes"] == 20
    model.compile()
    np.testing.assert_array_equal(model.loss.centers, model.centers)
    np.testing.assert_array_equal(model.centers, losses.hash_centers(20, 8, seed=3))
    other = keras_hash.CSQ(conv_backbone(), bits=8, num_classes=20, center_seed=4)
    assert np.any(other.centers != model.centers)  # 20 > 2 * 8: random centres


def test_recipe_accepts_the_new_methods():
    for method, (cls, _, loss_cls) in zip(("dch", "csq", "dpsh"), MODELS, strict=True):
        recipe = presets.get("cifar10-2", method=method, bits=16)
        model = pipeline.build_model(recipe, (8, 8, 1), conv_backbone(), 256, 10)
        assert type(model) is cls and type(model.loss) is loss_cls
        assert model.backbone.trainable is False and model.name == method
        if method == "csq":
            assert model.loss.num_classes == 10 and model.loss.bits == 16
    with pytest.raises(ValueError, match="csq needs num_classes"):
        pipeline.build_model(presets.get(method="csq"), (8, 8, 1), conv_backbone(), 9)
    with pytest.raises(ValueError, match="inner_product_scale is for hashnet and dhn"):
        recipe = presets.get(method="dch", inner_product_scale=0.5)
        pipeline.build_model(recipe, (8, 8, 1), conv_backbone(), 256, 10)
    with pytest.raises(ValueError, match="method must be one of .*dch, csq, dpsh"):
        presets.get(method="dsh")


_GRID = pathlib.Path(__file__).parents[1] / "experiments" / "defaults_grid.py"
_spec = importlib.util.spec_from_file_location("defaults_grid", _GRID)
defaults_grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(defaults_grid)

DIGITS_EPOCHS = 10  # measured mAP at 8 epochs: DCH 0.95, CSQ 0.97, DPSH 0.96


@pytest.fixture(scope="module")
def digits():
    return defaults_grid.digits_split(seed=0)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (keras_hash.DCH, {}),
        (keras_hash.CSQ, {"num_classes": 10}),
        (keras_hash.DPSH, {}),
    ],
)
def test_defaults_hash_digits(cls, kwargs, digits):
    """32 bits, the library's defaults (Adam 1e-3), the conv_dense backbone."""
    (x_db, y_db), (x_q, y_q) = digits
    model = cls(defaults_grid.make_backbone("conv_dense"), bits=32, **kwargs)
    model.compile()
    model.fit(x_db, y_db, batch_size=32, epochs=DIGITS_EPOCHS, verbose=0)
    evaluator = keras_hash.RetrievalEvaluator(
        query_codes=model.encode(x_q),
        query_labels=y_q,
        database_labels=y_db,
        database_codes=model.encode(x_db),
        bits=32,
    )
    assert evaluator.map() >= 0.9, evaluator.map()
