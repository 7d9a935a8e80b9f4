"""Pairwise semantic similarity from class labels.

``s_ij = 1`` if items ``i`` and ``j`` share at least one label, else 0.
Labels are either integer class ids ``[B]`` (single-label data such as
CIFAR-10) or multi-hot rows ``[B, C]`` (multi-label data such as NUS-WIDE).

```python
labels = np.array([0, 1, 0])
keras_hash.labels.pairwise_similarity(labels)
# [[1, 0, 1],
#  [0, 1, 0],
#  [1, 0, 1]]
```
"""

from __future__ import annotations

from keras import ops


def check_labels(labels, name: str = "labels"):
    """Checks that labels are ``[B]`` class ids or ``[B, C]`` multi-hot rows."""
    rank = len(labels.shape)
    if rank not in (1, 2):
        raise ValueError(
            f"{name} must be class ids [batch] or multi-hot rows [batch, classes], "
            f"got shape {tuple(labels.shape)}"
        )
    return rank


def pairwise_similarity(labels, ref_labels=None):
    """Returns ``s_ij`` (float32 ``[B, M]``): 1 where a label is shared.

    Args:
        labels: class ids ``[B]`` or multi-hot rows ``[B, C]``.
        ref_labels: the column items, same kind as ``labels``. Defaults to
            ``labels`` (all pairs within the batch).
    """
    if ref_labels is None:
        ref_labels = labels
    rank = check_labels(labels)
    if check_labels(ref_labels, "ref_labels") != rank:
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
        ops.cast(labels > 0, "float32"),
        ops.transpose(ops.cast(ref_labels > 0, "float32")),
    )
    return ops.cast(shared > 0, "float32")
