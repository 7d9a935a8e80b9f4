import numpy as np
import pytest

from keras_hash.labels import pairwise_similarity


def reference_similarity(a, b):
    """s_ij = 1 iff a label is shared; loops, no vectorization."""
    s = np.zeros((len(a), len(b)), np.float32)
    for i in range(len(a)):
        for j in range(len(b)):
            if a.ndim == 1:
                s[i, j] = float(a[i] == b[j])
            else:
                s[i, j] = float(np.any((a[i] > 0) & (b[j] > 0)))
    return s


def test_class_ids():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 9), rng.integers(0, 4, 7)
    np.testing.assert_array_equal(pairwise_similarity(a, b), reference_similarity(a, b))


def test_multi_hot():
    rng = np.random.default_rng(1)
    a = (rng.random((9, 5)) < 0.3).astype(np.float32)
    b = (rng.random((6, 5)) < 0.3).astype(np.float32)
    np.testing.assert_array_equal(pairwise_similarity(a, b), reference_similarity(a, b))


def test_defaults_to_the_batch_itself():
    labels = np.array([0, 1, 0])
    expected = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    np.testing.assert_array_equal(pairwise_similarity(labels), expected)


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match="class ids"):
        pairwise_similarity(np.zeros((2, 2, 2)))


def test_mixed_kinds_raise():
    with pytest.raises(ValueError, match="same kind"):
        pairwise_similarity(np.zeros((3,)), np.zeros((3, 4)))


def test_class_count_mismatch_raises():
    with pytest.raises(ValueError, match="classes"):
        pairwise_similarity(np.zeros((3, 4)), np.zeros((3, 5)))
