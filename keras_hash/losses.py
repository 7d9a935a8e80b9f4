"""Pairwise hashing losses: HashNet's weighted likelihood and DHN's.

Both losses look at every pair ``(i, j)`` of a batch: ``s_ij = 1`` when the
two items share a label (see :mod:`keras_hash.similarity`), and the inner
product of their continuous codes ``x_ij = scale * <h_i, h_j>`` is pushed up
for similar pairs and down for dissimilar ones through the pairwise
likelihood ``softplus(x_ij) - s_ij * x_ij`` (the negative log of
``sigmoid(x_ij)`` if similar, of ``1 - sigmoid(x_ij)`` if not).

Conventions, shared by both losses:

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

The functional cores :func:`hashnet_loss` and :func:`dhn_loss` take optional
reference codes and labels (the columns), like ``keras.losses.circle``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from keras_hash.labels import check_label_tensor, pairwise_similarity


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
    codes, ref_codes, s, mask = _prepare(
        labels, codes, ref_labels, ref_codes, row_offset
    )
    if alpha is None:
        alpha = 10.0 / codes.shape[-1]
    pair_loss = _likelihood(codes, ref_codes, s, alpha)
    return _per_row(pair_loss, s, mask, balance=True, total=total)


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
    codes, ref_codes, s, mask = _prepare(
        labels, codes, ref_labels, ref_codes, row_offset
    )
    pair_loss = _likelihood(codes, ref_codes, s, scale)
    pairwise = _per_row(pair_loss, s, mask, balance=False, total=total)
    quantization = ops.sum(stable_logcosh(ops.abs(codes) - 1.0), axis=-1)
    return pairwise + quantization_weight * quantization


class PairwiseHashLoss(keras.losses.Loss):
    """Base class: pairs local rows with all-gathered columns, returns rows.

    Subclasses implement ``pair_loss(labels, codes, ref_labels, ref_codes,
    row_offset, total)`` with the signature of :func:`hashnet_loss`.
    ``y_true`` holds labels (class ids ``[B]``, ``[B, 1]``, or multi-hot
    ``[B, C]``), ``y_pred`` the continuous codes ``[B, K]``.
    """

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
    labels = y_true
    if len(labels.shape) == 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    check_label_tensor(labels)
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
        reduction, name, dtype: as for any ``keras.losses.Loss``.
    """

    def __init__(
        self,
        alpha: float | None = None,
        reduction="sum_over_batch_size",
        name="hashnet_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if alpha is not None and not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = alpha

    def pair_loss(self, labels, codes, ref_labels, ref_codes, row_offset, total):
        return hashnet_loss(
            labels,
            codes,
            ref_labels,
            ref_codes,
            alpha=self.alpha,
            row_offset=row_offset,
            total=total,
        )

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


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
        reduction, name, dtype: as for any ``keras.losses.Loss``.
    """

    def __init__(
        self,
        scale: float = 0.5,
        quantization_weight: float = 0.1,
        reduction="sum_over_batch_size",
        name="dhn_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if not quantization_weight >= 0:
            raise ValueError(
                f"quantization_weight must be >= 0, got {quantization_weight}"
            )
        self.scale = float(scale)
        self.quantization_weight = float(quantization_weight)

    def pair_loss(self, labels, codes, ref_labels, ref_codes, row_offset, total):
        return dhn_loss(
            labels,
            codes,
            ref_labels,
            ref_codes,
            scale=self.scale,
            quantization_weight=self.quantization_weight,
            row_offset=row_offset,
            total=total,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "quantization_weight": self.quantization_weight,
        }
