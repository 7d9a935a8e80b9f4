import numpy as np
import pytest

from keras_hash.labels import (
    Relevance,
    check_label_pair,
    check_labels,
    pairwise_similarity,
)


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


# ---------------------------------------------------------------------------
# one rule for multi-hot values: 0 and 1 only


def test_pm_one_multi_hot_rejected_eagerly():
    celeba = np.array([[1, -1, -1], [-1, 1, 1]])
    with pytest.raises(ValueError, match=r"found -1.*Convert ±1 labels"):
        pairwise_similarity(celeba)


def test_pm_one_multi_hot_rejected_inside_a_compiled_step():
    import tensorflow as tf

    @tf.function
    def similarity(labels):
        return pairwise_similarity(labels)

    with pytest.raises(tf.errors.InvalidArgumentError, match="Convert ±1 labels"):
        similarity(tf.constant([[1.0, -1.0], [-1.0, 1.0]]))
    ok = similarity(tf.constant([[1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(ok, [[1, 1], [1, 1]])


def test_bool_and_float_multi_hot_agree():
    rng = np.random.default_rng(2)
    a = rng.random((7, 4)) < 0.4
    expected = reference_similarity(a.astype(int), a.astype(int))
    for labels in (a, a.astype(np.float32), a.astype(np.int64)):
        np.testing.assert_array_equal(pairwise_similarity(labels), expected)


class TestCheckLabels:
    def test_accepts_ids_and_binary_rows(self):
        ids = np.array([3, 1, 3])
        assert check_labels(ids, count=3) is not None
        for rows in (np.eye(3), np.eye(3, dtype=bool), np.eye(3, dtype=np.uint8)):
            np.testing.assert_array_equal(check_labels(rows, count=3), rows)

    @pytest.mark.parametrize(
        "rows, shown",
        [
            (np.array([[1, -1], [-1, 1]]), "-1"),
            (np.array([[0.0, 0.5]]), "0.5"),
            (np.array([[2, 0]]), "2"),
            (np.array([[np.nan, 1.0]]), "nan"),
        ],
    )
    def test_rejects_values_other_than_0_and_1(self, rows, shown):
        with pytest.raises(ValueError, match=f"labels must hold only 0 and 1.*{shown}"):
            check_labels(rows)

    def test_rejects_wrong_rank(self):
        with pytest.raises(ValueError, match=r"got shape \(2, 2, 2\)"):
            check_labels(np.zeros((2, 2, 2), int))

    def test_rejects_wrong_row_count(self):
        with pytest.raises(ValueError, match="y has 2 rows but there are 3 codes"):
            check_labels(np.array([0, 1]), count=3, name="y")

    def test_rejects_float_ids(self):
        with pytest.raises(TypeError, match="integer class ids.*float64"):
            check_labels(np.array([0.0, 1.0]))

    def test_rejects_strings(self):
        with pytest.raises(TypeError, match="<U1"):
            check_labels(np.array([["a", "b"]]))

    def test_pair_of_different_kinds(self):
        with pytest.raises(ValueError, match=r"q and d disagree: shapes \(2,\)"):
            check_label_pair(np.zeros(2, int), np.zeros((2, 3), int), ("q", "d"))


class TestRelevance:
    def test_class_ids(self):
        rng = np.random.default_rng(3)
        q, db = rng.integers(0, 5, 8), rng.integers(0, 5, 30)
        got = Relevance(db)(q)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, reference_similarity(q, db) > 0)

    def test_multi_hot_over_several_words(self):
        # 130 classes: three 64-bit words per row.
        rng = np.random.default_rng(4)
        q = rng.random((6, 130)) < 0.02
        db = rng.random((40, 130)) < 0.02
        got = Relevance(db)(q)
        np.testing.assert_array_equal(got, reference_similarity(q, db) > 0)
        assert got.any() and not got.all()

    @pytest.mark.parametrize("multi_hot", [False, True])
    def test_pairs_picks_positions(self, multi_hot):
        rng = np.random.default_rng(5)
        if multi_hot:
            q, db = rng.random((4, 70)) < 0.05, rng.random((25, 70)) < 0.05
        else:
            q, db = rng.integers(0, 3, 4), rng.integers(0, 3, 25)
        positions = rng.integers(0, 25, size=(4, 9))
        full = reference_similarity(q, db) > 0
        want = np.take_along_axis(full, positions, axis=1)
        np.testing.assert_array_equal(Relevance(db).pairs(q, positions), want)


class TestColumnOfClassIds:
    """[N, 1] (what keras.datasets returns) is class ids everywhere.

    Before, the metrics read it as one-class multi-hot rows: two items of
    class 0 shared no label, and binary labels lost mAP silently.
    """

    def test_check_labels_reads_a_column_as_ids(self):
        column = np.array([[3], [0], [3]])
        got = check_labels(column, count=3)
        assert got.shape == (3,)
        relevant = Relevance(got)(np.array([0]))
        np.testing.assert_array_equal(relevant, [[False, True, False]])

    def test_similarity_of_a_column_is_that_of_ids(self):
        rng = np.random.default_rng(6)
        a, b = rng.integers(0, 2, 9), rng.integers(0, 2, 7)
        expected = reference_similarity(a, b)
        got = pairwise_similarity(a[:, None], b[:, None])
        np.testing.assert_array_equal(got, expected)
        assert ((a[:, None] == 0) & (b[None, :] == 0)).any()  # class-0 pairs exist
        np.testing.assert_array_equal(
            pairwise_similarity(a[:, None]), reference_similarity(a, a)
        )
