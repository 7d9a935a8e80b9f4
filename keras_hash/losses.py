"""Hashing losses: HashNet, DHN, DCH and DPSH (pairwise) and CSQ (pointwise).

The pairwise losses look at every pair ``(i, j)`` of a batch: ``s_ij = 1`` when the
two items share a label (:func:`keras_hash.labels.pairwise_similarity`), and the inner
product of their continuous codes ``x_ij = scale * <h_i, h_j>`` is pushed up
for similar pairs and down for dissimilar ones through the pairwise
likelihood ``softplus(x_ij) - s_ij * x_ij`` (the negative log of
``sigmoid(x_ij)`` if similar, of ``1 - sigmoid(x_ij)`` if not).

DCH replaces the likelihood by a Cauchy cross-entropy on a Hamming-distance
surrogate, and CSQ pulls each code toward a fixed hash centre of its labels
(no pairs; see :func:`csq_loss`).

Conventions, shared by the pairwise losses:

- **Self-pairs do not count.** The pair set is all ordered pairs ``i != j``;
  an item paired with itself carries no information.
- **One value per row.** ``loss[i] = sum_j w_ij l_ij / (n / N)`` where ``n``
  is the number of pairs and ``N`` the number of rows, so the mean over rows
  is the mean over pairs, ``sum_ij w_ij l_ij / n``.
- **Global batch under a distribution strategy.** Inside
  ``tf.distribute.MirroredStrategy`` each replica pairs its own rows with the
  codes and labels *all-gathered* from every replica, and pair counts are
  summed over replicas, so the objective (and its gradient) is the one of the
  global batch, not of each replica's slice.

The functional cores :func:`hashnet_loss`, :func:`dhn_loss`,
:func:`dch_loss` and :func:`dpsh_loss` take optional reference codes and
labels (the columns), like ``keras.losses.circle``.

Why one module of about 650 lines (past the ~600 guideline): the five
methods share one pair machinery (mask, balance weights, per-row totals,
gathered columns) and one ``Loss`` base; each method is a ~40-line functional
core plus a ~30-line class. A module per method would export the private
pair machinery to five importers.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_hash.codes import check_bits
from keras_hash.labels import as_label_tensor, pairwise_similarity


def _identity(value):
    return value


def stable_softplus(x):
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``."""
    return ops.relu(x) + ops.log1p(ops.exp(-ops.abs(x)))


def stable_logcosh(x):
    """``log(cosh(x))`` without overflow: ``|x| + softplus(-2|x|) - log 2``."""
    a = ops.abs(x)
    return a + stable_softplus(-2.0 * a) - math.log(2.0)


def _pair_mask(num_rows, num_cols, row_offset):
    """1 for pairs that count, 0 for self-pairs (row ``i`` is column ``offset+i``)."""
    if row_offset is None:
        return ops.ones((num_rows, num_cols), "float32")
    rows = ops.arange(num_rows, dtype="int32") + ops.cast(row_offset, "int32")
    cols = ops.arange(num_cols, dtype="int32")
    return ops.cast(ops.not_equal(rows[:, None], cols[None, :]), "float32")


def _per_row(pair_loss, s, mask, *, balance, total=_identity):
    """Averages pair losses into one value per row (see the module docstring).

    ``total`` sums a count over replicas (the identity on one device).
    """
    num_similar = total(ops.sum(mask * s))
    num_dissimilar = total(ops.sum(mask * (1.0 - s)))
    num_rows = total(ops.cast(ops.shape(mask)[0], "float32"))
    num_pairs = num_similar + num_dissimilar
    weights = mask
    if balance:
        weights = mask * (
            s * ops.divide_no_nan(num_pairs, num_similar)
            + (1.0 - s) * ops.divide_no_nan(num_pairs, num_dissimilar)
        )
    pairs_per_row = ops.divide_no_nan(num_pairs, num_rows)
    return ops.divide_no_nan(ops.sum(weights * pair_loss, axis=1), pairs_per_row)


def _prepare(labels, codes, ref_labels, ref_codes, row_offset):
    labels = ops.convert_to_tensor(labels)
    codes = ops.cast(ops.convert_to_tensor(codes), "float32")
    if ref_codes is None:
        ref_labels, ref_codes = labels, codes
        row_offset = 0 if row_offset is None else row_offset
    else:
        ref_labels = ops.convert_to_tensor(ref_labels)
        ref_codes = ops.cast(ops.convert_to_tensor(ref_codes), "float32")
    similarity = pairwise_similarity(labels, ref_labels)
    mask = _pair_mask(ops.shape(codes)[0], ops.shape(ref_codes)[0], row_offset)
    return codes, ref_codes, similarity, mask


def _rows(labels, codes, ref_labels, ref_codes, row_offset, total, pair_loss, balance):
    """``(rows, codes)``: per-row averaged pair losses and the float32 codes.

    ``pair_loss(codes, ref_codes, s)`` gives the ``[B, M]`` loss of each pair.
    """
    codes, ref_codes, s, mask = _prepare(
        labels, codes, ref_labels, ref_codes, row_offset
    )
    pairs = pair_loss(codes, ref_codes, s)
    return _per_row(pairs, s, mask, balance=balance, total=total), codes


def _likelihood(codes, ref_codes, similarity, scale):
    """``softplus(x) - s * x``, written ``softplus((1 - 2s) x)`` for ``s`` in {0, 1}.

    The two are equal, but the second has no cancellation when ``s = 1`` and
    ``x`` is large (float32 loses the whole value in ``softplus(x) - x``).
    """
    x = scale * ops.matmul(codes, ops.transpose(ref_codes))
    return stable_softplus((1.0 - 2.0 * similarity) * x)


def hashnet_loss(
    labels,
    codes,
    ref_labels=None,
    ref_codes=None,
    *,
    alpha=None,
    row_offset=None,
    total=_identity,
):
    """HashNet's weighted pairwise likelihood, one value per row of ``codes``.

    ``l_ij = w_ij * (softplus(x_ij) - s_ij * x_ij)`` with
    ``x_ij = alpha * <h_i, h_j>``, ``w_ij = |S| / |S1|`` for similar pairs and
    ``|S| / |S0|`` for dissimilar ones (``S1``, ``S0``: the similar and
    dissimilar pairs, ``S`` all pairs, self-pairs left out).

    ```python
    labels = np.array([0, 1, 0, 2])
    codes = np.tanh(np.random.randn(4, 16))
    keras_hash.losses.hashnet_loss(labels, codes)  # shape [4]
    ```

    Args:
        labels: class ids ``[B]`` or multi-hot ``[B, C]`` of the rows.
        codes: continuous codes ``[B, K]``, typically ``tanh(beta * z)``.
        ref_labels: labels of the columns. Defaults to ``labels``.
        ref_codes: codes of the columns ``[M, K]``. Defaults to ``codes``.
        alpha: scale of the inner product. Defaults to ``10 / K`` as in the
            official PyTorch release.
        row_offset: when the rows are among the columns, the column index of
            row 0; those self-pairs are left out. Defaults to 0 without
            ``ref_codes`` and to "no self-pairs" with them.
        total: sums a pair count over replicas (identity on one device).
    """

    def pair_loss(codes, ref_codes, s):
        scale = 10.0 / codes.shape[-1] if alpha is None else alpha
        return _likelihood(codes, ref_codes, s, scale)

    pairing = (row_offset, total, pair_loss, True)
    return _rows(labels, codes, ref_labels, ref_codes, *pairing)[0]


def dhn_loss(
    labels,
    codes,
    ref_labels=None,
    ref_codes=None,
    *,
    scale=0.5,
    quantization_weight=0.1,
    row_offset=None,
    total=_identity,
):
    """DHN's pairwise cross-entropy plus its quantization loss, per row.

    ``loss[i] = mean_j (softplus(x_ij) - s_ij * x_ij)
    + lambda * sum_k logcosh(|z_ik| - 1)`` with ``x_ij = scale * <z_i, z_j>``
    (the paper's ``1/2``); the first term is averaged as described in the
    module docstring, self-pairs left out.

    Args:
        labels: class ids ``[B]`` or multi-hot ``[B, C]`` of the rows.
        codes: continuous codes ``[B, K]``.
        ref_labels: labels of the columns. Defaults to ``labels``.
        ref_codes: codes of the columns ``[M, K]``. Defaults to ``codes``.
        scale: scale of the inner product. Defaults to 0.5.
        quantization_weight: ``lambda``. Defaults to 0.1.
        row_offset: as in :func:`hashnet_loss`.
        total: sums a pair count over replicas (identity on one device).
    """
    pair_loss = functools.partial(_likelihood, scale=scale)
    pairing = (row_offset, total, pair_loss, False)
    rows, codes = _rows(labels, codes, ref_labels, ref_codes, *pairing)
    quantization = ops.sum(stable_logcosh(ops.abs(codes) - 1.0), axis=-1)
    return rows + quantization_weight * quantization


# Smallest Cauchy distance: keeps log(1 + gamma / d) finite for equal codes.
_MIN_DISTANCE = 1e-6


def _unit_rows(x):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), -1, keepdims=True), 1e-12))


def _cosine_distance(codes, ref_codes):
    """DCH's Hamming surrogate ``(K / 2) (1 - cos(h_i, h_j))``, ``[B, M]``."""
    cosine = ops.matmul(_unit_rows(codes), ops.transpose(_unit_rows(ref_codes)))
    return codes.shape[-1] / 2.0 * ops.relu(1.0 - cosine)


def _cauchy_cross_entropy(codes, ref_codes, similarity, gamma):
    """``-log p`` (similar) or ``-log(1 - p)``, ``p = gamma / (gamma + d)``."""
    d = ops.maximum(_cosine_distance(codes, ref_codes), _MIN_DISTANCE)
    similar = ops.log1p(d / gamma)
    return similar + (1.0 - similarity) * (ops.log1p(gamma / d) - similar)


def dch_loss(
    labels,
    codes,
    ref_labels=None,
    ref_codes=None,
    *,
    gamma: float = 20.0,
    quantization_weight: float = 0.1,
    row_offset=None,
    total=_identity,
):
    """DCH's weighted Cauchy cross-entropy plus Cauchy quantization, per row.

    With ``d_ij = (K / 2) (1 - cos(h_i, h_j))`` and the Cauchy probability
    ``p_ij = gamma / (gamma + d_ij)`` that ``i`` and ``j`` are similar,
    ``l_ij = w_ij (s_ij log(1 + d_ij / gamma) + (1 - s_ij) log(1 + gamma /
    d_ij))`` (the cross-entropy of ``p_ij``), weighted as in
    :func:`hashnet_loss`, plus ``lambda * log(1 + d(|h_i|, 1) / gamma)``
    with ``d(|h_i|, 1)`` the same distance between ``|h_i|`` and the
    all-ones vector. ``d_ij`` is floored at 1e-6, so equal codes of a
    dissimilar pair cost ``log(1 + gamma * 1e6)``, not infinity.

    Args:
        labels: as in :func:`hashnet_loss`.
        codes: as in :func:`hashnet_loss`.
        ref_labels: as in :func:`hashnet_loss`.
        ref_codes: as in :func:`hashnet_loss`.
        gamma: the Cauchy scale, in bits of distance. Defaults to 20.
        quantization_weight: ``lambda``. Defaults to 0.1.
        row_offset: as in :func:`hashnet_loss`.
        total: as in :func:`hashnet_loss`.
    """
    pair_loss = functools.partial(_cauchy_cross_entropy, gamma=gamma)
    pairing = (row_offset, total, pair_loss, True)
    rows, codes = _rows(labels, codes, ref_labels, ref_codes, *pairing)
    ones = ops.ones((1, codes.shape[-1]), "float32")
    distance = _cosine_distance(ops.abs(codes), ones)[:, 0]
    return rows + quantization_weight * ops.log1p(distance / gamma)


def dpsh_loss(
    labels,
    codes,
    ref_labels=None,
    ref_codes=None,
    *,
    quantization_weight: float = 0.01,
    row_offset=None,
    total=_identity,
):
    """DPSH's pairwise likelihood plus its quantization regulariser, per row.

    ``loss[i] = mean_j (log(1 + exp(theta_ij)) - s_ij theta_ij)
    + eta * ||b_i - u_i||^2`` with ``theta_ij = <u_i, u_j> / 2`` and
    ``b_i = sign(u_i)`` (``sign(0) = +1``, no gradient through ``b``); the
    first term is averaged as described in the module docstring.

    Args:
        labels: as in :func:`hashnet_loss`.
        codes: as in :func:`hashnet_loss`.
        ref_labels: as in :func:`hashnet_loss`.
        ref_codes: as in :func:`hashnet_loss`.
        quantization_weight: ``eta``. Defaults to 0.01.
        row_offset: as in :func:`hashnet_loss`.
        total: as in :func:`hashnet_loss`.
    """
    pair_loss = functools.partial(_likelihood, scale=0.5)
    pairing = (row_offset, total, pair_loss, False)
    rows, codes = _rows(labels, codes, ref_labels, ref_codes, *pairing)
    binary = ops.stop_gradient(ops.where(codes >= 0, 1.0, -1.0))
    return rows + quantization_weight * ops.sum(ops.square(binary - codes), -1)


def hash_centers(num_classes: int, bits: int, seed: int = 0) -> np.ndarray:
    """CSQ's hash centres, float32 ``[num_classes, bits]`` of ``±1``.

    When ``bits`` is a power of two and ``num_classes <= 2 * bits``: the
    rows of the Hadamard matrix of order ``bits`` (Sylvester's construction,
    as ``scipy.linalg.hadamard``), then their negations, so any two centres
    are ``bits / 2`` or ``bits`` apart. Otherwise every centre is drawn
    from Bernoulli(0.5) ``±1`` with ``numpy.random.default_rng(seed)``, as
    in the paper (about ``bits / 2`` apart, not guaranteed distinct for
    short codes). The same arguments give the same centres.
    """
    num_classes = _count(num_classes, "num_classes")
    bits = check_bits(bits, packed=False)
    if bits & (bits - 1) == 0 and num_classes <= 2 * bits:
        hadamard = np.ones((1, 1), np.float32)
        while len(hadamard) < bits:
            hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
        return np.concatenate([hadamard, -hadamard])[:num_classes]
    draws = np.random.default_rng(seed).random((num_classes, bits))
    return np.where(draws < 0.5, -1.0, 1.0).astype(np.float32)


def _count(value, name: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")
    return int(value)


def _targets(labels, centers, tie_break):
    """The ``±1`` centre of each row: its class's, or its labels' binarised sum."""
    count = len(centers)
    centers = ops.cast(ops.convert_to_tensor(centers), "float32")
    if len(labels.shape) == 1:
        ids = ops.cast(labels, "int32")
        tf.debugging.assert_non_negative(ids, message="CSQ: negative class id")
        tf.debugging.assert_less(
            ids,
            count,
            message=f"CSQ: class id out of range for {count} hash centres",
        )
        return ops.take(centers, ids, axis=0)
    if labels.shape[-1] is not None and labels.shape[-1] != count:
        raise ValueError(
            f"CSQ: multi-hot labels have {labels.shape[-1]} classes but there "
            f"are {count} hash centres"
        )
    total = ops.matmul(ops.cast(labels, "float32"), centers)
    ties = ops.ones_like(total) if tie_break is None else ops.cast(tie_break, "float32")
    return ops.where(
        total > 0, 1.0, ops.where(total < 0, -1.0, ties * ops.ones_like(total))
    )


def csq_loss(labels, codes, centers, *, quantization_weight=1e-4, tie_break=None):
    """CSQ's central similarity loss plus quantization, one value per row.

    Each row's target is a hash centre ``c`` (:func:`hash_centers`): its
    class's for class ids; for multi-hot rows the centroid of its labels'
    centres binarised, ``sign(sum_l c_l)``, a zero sum taking the bit of
    ``tie_break`` (``+1`` when None). Then ``loss[i] = mean_k BCE((c_ik +
    1) / 2, (h_ik + 1) / 2) + lambda * mean_k (|h_ik| - 1)^2``. Codes should
    lie in ``[-1, 1]`` (``tanh``); the probabilities are clipped to
    ``[1e-7, 1]``, so a saturated wrong bit costs at most ``-log(1e-7)``.

    Args:
        labels: class ids ``[B]`` (below ``len(centers)``) or multi-hot
            ``[B, C]`` with ``C = len(centers)``.
        codes: continuous codes ``[B, K]``.
        centers: ``±1`` hash centres ``[C, K]``.
        quantization_weight: ``lambda``. Defaults to 1e-4.
        tie_break: ``±1`` ``[K]``, the bits of multi-hot centroids whose sum
            is 0.
    """
    codes = ops.cast(ops.convert_to_tensor(codes), "float32")
    labels = as_label_tensor(labels)
    targets = _targets(labels, centers, tie_break)
    agreement = ops.clip((1.0 + targets * codes) / 2.0, 1e-7, 1.0)
    central = ops.mean(-ops.log(agreement), axis=-1)
    quantization = ops.mean(ops.square(ops.abs(codes) - 1.0), axis=-1)
    return central + quantization_weight * quantization


class HashLoss(keras.losses.Loss):
    """Base of the keras_hash losses: hyperparameters as attributes and config.

    Subclasses pass their hyperparameters to ``__init__`` as keywords; they
    become attributes and the loss's config.
    """

    loss_name = "hash_loss"

    def __init__(
        self, reduction="sum_over_batch_size", name=None, dtype=None, **hyperparameters
    ):
        super().__init__(name=name or self.loss_name, reduction=reduction, dtype=dtype)
        for key, value in hyperparameters.items():
            setattr(self, key, value)
        self._hyperparameters = tuple(hyperparameters)

    def hyperparameters(self) -> dict:
        """The loss's own settings, by name (the arguments of its core)."""
        return {key: getattr(self, key) for key in self._hyperparameters}

    def get_config(self):
        return {**super().get_config(), **self.hyperparameters()}


def _positive(name: str, value) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return float(value)


def _non_negative(name: str, value) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


class PairwiseHashLoss(HashLoss):
    """Base class: pairs local rows with all-gathered columns, returns rows.

    Subclasses set ``function``, a functional core with the signature of
    :func:`hashnet_loss`, which :meth:`pair_loss` calls with the loss's
    hyperparameters. ``y_true`` holds labels (class ids ``[B]``, ``[B, 1]``,
    or multi-hot ``[B, C]``), ``y_pred`` the continuous codes ``[B, K]``.
    """

    function = None

    def pair_loss(self, labels, codes, ref_labels, ref_codes, row_offset, total):
        return type(self).function(
            labels,
            codes,
            ref_labels,
            ref_codes,
            row_offset=row_offset,
            total=total,
            **self.hyperparameters(),
        )

    def call(self, y_true, y_pred):
        labels, codes = _check_inputs(y_true, y_pred, type(self).__name__)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return self.pair_loss(labels, codes, None, None, 0, _identity)
        ref_labels = context.all_gather(labels, axis=0)
        ref_codes = context.all_gather(codes, axis=0)
        sizes = context.all_gather(tf.shape(codes)[:1], axis=0)
        replica = context.replica_id_in_sync_group
        row_offset = ops.sum(sizes[:replica])

        def total(value):
            return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

        return self.pair_loss(labels, codes, ref_labels, ref_codes, row_offset, total)


def _check_inputs(y_true, y_pred, loss_name):
    if len(y_pred.shape) != 2:
        raise ValueError(
            f"{loss_name} expects codes of shape [batch, bits], "
            f"got shape {tuple(y_pred.shape)}"
        )
    labels = as_label_tensor(y_true)
    rows, n = labels.shape[0], y_pred.shape[0]
    if rows is not None and n is not None and rows != n:
        raise ValueError(f"{loss_name}: {rows} labels for {n} codes")
    tf.debugging.assert_equal(
        ops.shape(labels)[0],
        ops.shape(y_pred)[0],
        message=f"{loss_name}: the number of labels differs from the number of codes",
    )
    codes = tf.debugging.check_numerics(
        y_pred, f"{loss_name}: NaN or Inf in the codes reaching the loss"
    )
    return labels, codes


@keras.saving.register_keras_serializable(package="keras_hash")
class HashNetLoss(PairwiseHashLoss):
    """HashNet's weighted pairwise likelihood loss (Cao et al., ICCV 2017).

    For every pair of distinct items in the (global) batch,
    ``l_ij = w_ij * (softplus(x_ij) - s_ij * x_ij)`` with
    ``x_ij = alpha * <h_i, h_j>``; ``w_ij = |S| / |S1|`` for similar pairs and
    ``|S| / |S0|`` for dissimilar ones, which balances the few similar pairs
    against the many dissimilar ones. Returns one value per row.

    ```python
    model.compile(optimizer="adam", loss=keras_hash.HashNetLoss())
    ```

    Args:
        alpha: scale of the inner product. Defaults to ``10 / bits``.
        **kwargs: ``reduction``, ``name``, ``dtype``, as for any
            ``keras.losses.Loss``.
    """

    function = staticmethod(hashnet_loss)
    loss_name = "hashnet_loss"

    def __init__(self, alpha: float | None = None, **kwargs):
        alpha = alpha if alpha is None else _positive("alpha", alpha)
        super().__init__(**kwargs, alpha=alpha)


@keras.saving.register_keras_serializable(package="keras_hash")
class DHNLoss(PairwiseHashLoss):
    """DHN's pairwise cross-entropy plus quantization loss (Zhu et al., AAAI 2016).

    ``softplus(x_ij) - s_ij * x_ij`` on ``x_ij = scale * <z_i, z_j>`` over the
    pairs of distinct items, plus ``lambda * sum_k logcosh(|z_ik| - 1)``,
    which pulls each output toward ``±1``. Returns one value per row.

    ```python
    model.compile(optimizer="adam", loss=keras_hash.DHNLoss(quantization_weight=0.1))
    ```

    Args:
        scale: scale of the inner product. Defaults to 0.5 (the paper's).
        quantization_weight: ``lambda``. Defaults to 0.1 (the paper
            cross-validated 1e-5 to 100).
        **kwargs: ``reduction``, ``name``, ``dtype``, as for any
            ``keras.losses.Loss``.
    """

    function = staticmethod(dhn_loss)
    loss_name = "dhn_loss"

    def __init__(self, scale: float = 0.5, quantization_weight: float = 0.1, **kwargs):
        super().__init__(
            **kwargs,
            scale=_positive("scale", scale),
            quantization_weight=_non_negative(
                "quantization_weight", quantization_weight
            ),
        )


@keras.saving.register_keras_serializable(package="keras_hash")
class DCHLoss(PairwiseHashLoss):
    """DCH's Cauchy cross-entropy plus Cauchy quantization (Cao et al., CVPR 2018).

    On the Hamming-distance surrogate ``d_ij = (K / 2) (1 - cos(h_i, h_j))``
    of every pair of distinct items, the Cauchy probability
    ``p_ij = gamma / (gamma + d_ij)`` and the weighted cross-entropy
    ``w_ij (s_ij log(1 + d_ij / gamma) + (1 - s_ij) log(1 + gamma / d_ij))``
    (weights as :class:`HashNetLoss`'s), plus
    ``lambda * log(1 + d(|h_i|, 1) / gamma)``. The Cauchy probability falls
    steeply within a few bits and flatly beyond, so similar pairs are
    pulled inside a small Hamming radius, the regime DCH was made for
    (retrieval within radius 2). Returns one value per row.

    ```python
    model.compile(optimizer="adam", loss=keras_hash.DCHLoss(gamma=20.0))
    ```

    Args:
        gamma: the Cauchy scale, in bits of distance. Defaults to 20, the
            value cited from the paper for CIFAR-like settings (it chose
            ``gamma`` by validation); in bits, so one value serves 16 to 64
            bits.
        quantization_weight: ``lambda``. Defaults to 0.1, the paper's.
        **kwargs: ``reduction``, ``name``, ``dtype``, as for any
            ``keras.losses.Loss``.
    """

    function = staticmethod(dch_loss)
    loss_name = "dch_loss"

    def __init__(self, gamma: float = 20.0, quantization_weight=0.1, **kwargs):
        weight = _non_negative("quantization_weight", quantization_weight)
        super().__init__(
            **kwargs, gamma=_positive("gamma", gamma), quantization_weight=weight
        )


@keras.saving.register_keras_serializable(package="keras_hash")
class DPSHLoss(PairwiseHashLoss):
    """DPSH's pairwise likelihood plus quantization (Li et al., IJCAI 2016).

    ``log(1 + exp(theta_ij)) - s_ij theta_ij`` on
    ``theta_ij = <u_i, u_j> / 2`` over the pairs of distinct items, plus
    ``eta * ||b_i - u_i||^2`` with ``b_i = sign(u_i)``. Returns one value
    per row: the mean over the row's pairs plus its regulariser.

    ```python
    model.compile(optimizer="adam", loss=keras_hash.DPSHLoss())
    ```

    Args:
        quantization_weight: ``eta``. Defaults to 0.01. The paper sums the
            likelihood over all pairs of the training set and ``eta`` weighs
            a sum over items; per row (a mean over pairs) its weight becomes
            ``eta / N``, small for thousands of training images. Our codes
            are ``tanh`` outputs (the paper's ``u`` is linear and needs the
            regulariser to stay bounded), so a larger weight would only make
            the bits saturate sooner.
        **kwargs: ``reduction``, ``name``, ``dtype``, as for any
            ``keras.losses.Loss``.
    """

    function = staticmethod(dpsh_loss)
    loss_name = "dpsh_loss"

    def __init__(self, quantization_weight: float = 0.01, **kwargs):
        weight = _non_negative("quantization_weight", quantization_weight)
        super().__init__(**kwargs, quantization_weight=weight)


@keras.saving.register_keras_serializable(package="keras_hash")
class CSQLoss(HashLoss):
    """CSQ's central similarity loss (Yuan et al., CVPR 2020): pointwise.

    Each code is pulled toward the hash centre of its labels
    (:func:`hash_centers`; multi-hot rows: the binarised centroid of their
    labels' centres, ties broken by a fixed ``±1`` vector drawn from
    ``seed``, as the CSQ code does): per row, the mean over bits of the
    binary cross-entropy between ``(c + 1) / 2`` and ``(h + 1) / 2``, plus
    ``lambda * mean_k (|h_k| - 1)^2``. No pairs, so no all-gather under a
    distribution strategy. The centres follow from
    ``(num_classes, bits, seed)``, which is all the config holds.

    ```python
    model.compile(optimizer="adam", loss=keras_hash.CSQLoss(10, bits=64))
    ```

    Args:
        num_classes: the number of classes C (class ids below C, or
            multi-hot rows of width C).
        bits: the code length K.
        seed: seed of random centres and of the tie-breaking vector.
        quantization_weight: ``lambda``. Defaults to 1e-4, the paper's.
        **kwargs: ``reduction``, ``name``, ``dtype``, as for any
            ``keras.losses.Loss``.
    """

    loss_name = "csq_loss"

    def __init__(self, num_classes, bits, seed=0, quantization_weight=1e-4, **kwargs):
        super().__init__(
            **kwargs,
            num_classes=_count(num_classes, "num_classes"),
            bits=check_bits(bits, packed=False),
            seed=_count(seed, "seed", least=0),
            quantization_weight=_non_negative(
                "quantization_weight", quantization_weight
            ),
        )
        self.centers = hash_centers(self.num_classes, self.bits, self.seed)
        draws = np.random.default_rng([self.seed, 1]).random(self.bits)
        self.tie_break = np.where(draws < 0.5, -1.0, 1.0).astype(np.float32)

    def call(self, y_true, y_pred):
        labels, codes = _check_inputs(y_true, y_pred, type(self).__name__)
        if codes.shape[-1] is not None and codes.shape[-1] != self.bits:
            raise ValueError(
                f"CSQLoss has centres of {self.bits} bits, got codes of "
                f"{codes.shape[-1]} bits"
            )
        return csq_loss(
            labels,
            codes,
            self.centers,
            quantization_weight=self.quantization_weight,
            tie_break=self.tie_break,
        )
