"""Labels and relevance: the one owner of both, in numpy and ``keras.ops``.

**Labels** are either integer class ids ``[N]`` (single-label data such as
CIFAR-10) or multi-hot rows ``[N, C]`` (multi-label data such as NUS-WIDE)
whose values are 0 and 1 only (bool or numeric). A column ``[N, 1]`` (what
``keras.datasets`` returns) is class ids, everywhere: the losses, the
metrics and the callbacks all read it through this module, never as
one-class multi-hot rows (which would make two items of class 0 unrelated).
Anything else in a multi-hot row is an error, not a guess: ``±1`` attribute
labels (CelebA style) must be converted first (``labels > 0``), since reading
``-1`` as "has the label" or as "lacks it" silently changes every metric.

**Relevance** (``s_ij`` of the losses, "relevant" of the retrieval metrics):
items ``i`` and ``j`` are relevant to each other when they share at least one
label: equal class ids, or a class set in both multi-hot rows.

The numpy side (:func:`check_labels`, :class:`Relevance`) serves the
retrieval metrics; the ``keras.ops`` side (:func:`check_label_tensor`,
:func:`pairwise_similarity`) serves the losses, inside compiled steps too.

```python
labels = np.array([0, 1, 0])
keras_hash.labels.pairwise_similarity(labels)
# [[1, 0, 1],
#  [0, 1, 0],
#  [1, 0, 1]]
keras_hash.labels.Relevance(labels)(np.array([1]))  # [[False, True, False]]
```
"""

from __future__ import annotations

import numpy as np
from keras import backend, ops

_KINDS = "int class ids [N] or 0/1 multi-hot rows [N, C]"


def _values_error(name: str, values) -> ValueError:
    shown = ", ".join(str(v) for v in np.unique(np.asarray(values))[:6])
    return ValueError(
        f"{name} must hold only 0 and 1 in multi-hot rows, found {shown}. "
        "Convert ±1 labels (CelebA-style attributes) first, e.g. labels > 0; "
        "pass class ids as a vector [N] instead."
    )


def check_labels(labels, *, count: int | None = None, name: str = "labels"):
    """Validates numpy labels and returns them as an array.

    Args:
        labels: int class ids ``[N]`` (or ``[N, 1]``, returned as ``[N]``)
            or multi-hot ``[N, C]``, ``C >= 2``, holding only 0 and 1 (bool
            or numeric).
        count: the number of rows required (e.g. the number of codes), or
            None.
        name: the argument's name, for error messages.

    Raises:
        ValueError: wrong rank, wrong row count, or a multi-hot value other
            than 0 and 1.
        TypeError: class ids that are not integers, or non-numeric labels.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(f"{name} must be {_KINDS}, got shape {labels.shape}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # [N, 1]: class ids, as keras.datasets gives them
    if count is not None and len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} rows but there are {count} codes")
    if labels.dtype == bool:
        return labels
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(
                f"{name} must be integer class ids [N] (or 0/1 multi-hot "
                f"[N, C]), got dtype {labels.dtype}"
            )
        return labels
    if not np.issubdtype(labels.dtype, np.number):
        raise TypeError(f"{name} must be {_KINDS}, got dtype {labels.dtype}")
    bad = (labels != 0) & (labels != 1)
    if np.any(bad):
        raise _values_error(name, labels[bad])
    return labels


def check_label_pair(query_labels, database_labels, names=("query_labels", "labels")):
    """Checks that two validated label arrays are of the same kind.

    Both must be class ids ``[N]``, or both multi-hot with the same ``C``.
    """
    if query_labels.ndim != database_labels.ndim or (
        query_labels.shape[1:] != database_labels.shape[1:]
    ):
        raise ValueError(
            f"{names[0]} and {names[1]} disagree: shapes "
            f"{query_labels.shape} and {database_labels.shape} "
            "(use int ids [N] for both, or multi-hot [N, C] with the same C)"
        )


class Relevance:
    """Relevance to a fixed database: at least one shared label (numpy).

    Class ids compare for equality; multi-hot rows are packed into 64-bit
    words, so a pair costs one AND per 64 classes.

    Args:
        database_labels: labels validated by :func:`check_labels`.
    """

    def __init__(self, database_labels: np.ndarray):
        self.multi_hot = database_labels.ndim == 2
        self.database = self._encode(database_labels)

    def _encode(self, labels: np.ndarray) -> np.ndarray:
        if not self.multi_hot:
            return labels.astype(np.int64)
        bits = np.packbits(labels.astype(bool), axis=1)
        pad = -bits.shape[1] % 8
        bits = np.pad(bits, ((0, 0), (0, pad)))
        return np.ascontiguousarray(bits.view(np.uint64).T)  # [words, N]

    def __call__(self, query_labels: np.ndarray) -> np.ndarray:
        """Bool ``[q, N]``: query ``i`` shares a label with item ``j``."""
        query = self._encode(query_labels)
        if not self.multi_hot:
            return query[:, None] == self.database[None, :]
        return self._shared(query, lambda w: self.database[w, None, :])

    def pairs(self, query_labels: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Bool: query ``i`` shares a label with item ``positions[i, j]``."""
        query = self._encode(query_labels)
        if not self.multi_hot:
            return query[:, None] == self.database[positions]
        return self._shared(query, lambda w: self.database[w][positions])

    @staticmethod
    def _shared(query, database_word):
        shared = None
        for w in range(len(query)):
            hit = (query[w, :, None] & database_word(w)) != 0
            shared = hit if shared is None else shared | hit
        return shared


def as_label_tensor(labels, name: str = "labels"):
    """Checks tensor labels and returns them with ``[B, 1]`` as ids ``[B]``.

    The tensor counterpart of :func:`check_labels`: a ``[B, 1]`` column
    (Keras passes ``y_true`` of ``keras.datasets`` labels so) is class ids.
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    check_label_tensor(labels, name)
    return labels


def check_label_tensor(labels, name: str = "labels") -> int:
    """Checks tensor labels (``keras.ops``); returns their rank, 1 or 2.

    Class ids ``[B]`` may have any numeric dtype (Keras losses receive
    ``y_true`` cast to float). Multi-hot ``[B, C]`` values must be 0 or 1: a
    ValueError when the values are known (eager), a failing assertion at run
    time inside a compiled TensorFlow step.
    """
    rank = len(labels.shape)
    if rank not in (1, 2):
        raise ValueError(
            f"{name} must be class ids [batch] or multi-hot rows [batch, classes], "
            f"got shape {tuple(labels.shape)}"
        )
    if rank == 2 and not _is_bool(labels):
        _check_binary_tensor(labels, name)
    return rank


def _is_bool(x) -> bool:
    return "bool" in str(getattr(x, "dtype", ""))


def _check_binary_tensor(labels, name: str) -> None:
    if isinstance(labels, np.ndarray):
        check_labels(labels, name=name)
        return
    values = ops.cast(labels, "float32")
    binary = ops.all(ops.logical_or(ops.equal(values, 0.0), ops.equal(values, 1.0)))
    if backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            tf.debugging.assert_equal(
                binary, True, message=str(_values_error(name, []))
            )
            return
    if not backend.is_keras_tensor(labels) and not bool(ops.convert_to_numpy(binary)):
        raise _values_error(name, ops.convert_to_numpy(labels)[~_binary(labels)])


def _binary(labels) -> np.ndarray:
    values = ops.convert_to_numpy(labels)
    return (values == 0) | (values == 1)


def pairwise_similarity(labels, ref_labels=None):
    """Returns ``s_ij`` (float32 ``[B, M]``): 1 where a label is shared.

    Args:
        labels: class ids ``[B]`` or ``[B, 1]``, or 0/1 multi-hot rows
            ``[B, C]``.
        ref_labels: the column items, same kind as ``labels``. Defaults to
            ``labels`` (all pairs within the batch).
    """
    labels = as_label_tensor(labels)
    ref_labels = (
        labels if ref_labels is None else as_label_tensor(ref_labels, "ref_labels")
    )
    rank = len(labels.shape)
    if len(ref_labels.shape) != rank:
        raise ValueError(
            "labels and ref_labels must be the same kind (ids or multi-hot), got "
            f"shapes {tuple(labels.shape)} and {tuple(ref_labels.shape)}"
        )
    if rank == 1:
        same = ops.equal(labels[:, None], ref_labels[None, :])
        return ops.cast(same, "float32")
    if labels.shape[-1] is not None and ref_labels.shape[-1] is not None:
        if labels.shape[-1] != ref_labels.shape[-1]:
            raise ValueError(
                f"multi-hot labels have {labels.shape[-1]} and "
                f"{ref_labels.shape[-1]} classes"
            )
    shared = ops.matmul(
        ops.cast(labels, "float32"), ops.transpose(ops.cast(ref_labels, "float32"))
    )
    return ops.cast(shared > 0, "float32")
