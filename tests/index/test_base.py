"""The contract's own parts (keras_hash.index.base): ids, checks, finishing step.

The finishing step is run here through a toy kind whose raw candidates come
in the worst tie order a backend may give (largest ids first among ties) and
with only ``m >= k`` of them: every result must still equal the brute-force
reference of :mod:`tests.reference`.
"""

import numpy as np
import pytest

from keras_hash.index.base import (
    MAX_ID,
    PAD_ID,
    InMemoryIndex,
    check_ids,
    check_nprobe,
    check_seconds,
    finish_range,
    keep_within,
    new_ids,
    sort_rows,
)
from tests import reference

pytestmark = pytest.mark.numpy_only


class ScrambledIndex(InMemoryIndex):
    """A brute-force kind that returns ``k + extra`` candidates, ties reversed."""

    def __init__(self, bits, extra=0):
        super().__init__(bits)
        self.extra, self.codes, self.requeried = extra, None, []

    def add(self, codes, ids=None):
        ids = new_ids(ids, len(codes), self._ids)
        self.codes = (
            codes if self.codes is None else np.concatenate([self.codes, codes])
        )
        self._ids = np.concatenate([self._ids, ids]) if len(self._ids) else ids
        order = np.argsort(self._ids)
        self._ids, self.codes = self._ids[order], self.codes[order]

    def _knn_candidates(self, queries, k):
        m = min(len(self._ids), k + self.extra)
        dist = reference.hamming(queries, self.codes)
        # The m nearest, ties at the cut taken from the LARGEST ids.
        order = np.stack([np.lexsort((-self._ids, row)) for row in dist])[:, :m]
        rng = np.random.default_rng(0)
        order = rng.permuted(order, axis=1)  # and unsorted
        return np.take_along_axis(dist, order, 1), self._ids[order]

    def _range_candidates(self, queries, lo, hi, need=None):
        self.requeried.append((lo, hi))
        dist = reference.hamming(queries, self.codes)
        parts = [
            (row[(row >= lo) & (row <= hi)], self._ids[(row >= lo) & (row <= hi)])
            for row in dist
        ]
        lims = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(d) for d, _ in parts], out=lims[1:])
        return (
            lims,
            np.concatenate([d for d, _ in parts]),
            np.concatenate([i for _, i in parts]),
        )


@pytest.mark.parametrize("extra", [0, 3, 50])
def test_finishing_step_settles_ties_by_id(extra):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, size=(200, 1), dtype=np.uint8)  # 8 bits: ties
    ids = rng.permutation(np.arange(200) * 7 - 500)
    queries = rng.integers(0, 256, size=(20, 1), dtype=np.uint8)
    index = ScrambledIndex(8, extra)
    index.add(codes, ids)
    for k in (1, 5, 40, 200):
        reference.assert_knn_equal(index.search(queries, k), codes, ids, queries, k)
    assert index.requeried and all(lo == hi for lo, hi in index.requeried)
    for radius in (0, 2, 8):
        reference.assert_range_equal(
            index.range_search(queries, radius), codes, ids, queries, radius
        )


def test_rows_short_of_k_are_padded():
    class Short(ScrambledIndex):
        def _knn_candidates(self, queries, k):  # finds only 2 per query
            dist, ids = super()._knn_candidates(queries, 2)
            return dist[:, :2], ids[:, :2]

        def _range_candidates(self, queries, lo, hi, need=None):
            raise AssertionError("no re-query: the rows hold all that was found")

    index = Short(8)
    index.add(np.array([[0], [1], [3], [7], [15], [31]], np.uint8))  # d = 0..5
    distances, found = index.search(np.zeros((1, 1), np.uint8), 4)
    np.testing.assert_array_equal(distances, [[0, 1, 9, 9]])
    np.testing.assert_array_equal(found, [[0, 1, PAD_ID, PAD_ID]])


def test_sort_rows_and_finish_range():
    dist = np.array([[2, 1, 1], [0, 0, 3]])
    ids = np.array([[5, 9, 4], [8, 2, 1]])
    got_d, got_i = sort_rows(dist, ids)
    np.testing.assert_array_equal(got_d, [[1, 1, 2], [0, 0, 3]])
    np.testing.assert_array_equal(got_i, [[4, 9, 5], [2, 8, 1]])
    result = finish_range([0, 3, 4], [2, 1, 1, 0], [5, 9, 4, 3])
    np.testing.assert_array_equal(result.distances, [1, 1, 2, 0])
    np.testing.assert_array_equal(result.ids, [4, 9, 5, 3])
    assert result.distances.dtype == np.int32 and result.ids.dtype == np.int64
    lims, d, i = keep_within(
        np.array([0, 3, 4]), np.array([2, 1, 1, 0]), np.array([5, 9, 4, 3]), 2
    )
    assert lims.tolist() == [0, 1, 1] and d.tolist() == [2] and i.tolist() == [5]


def test_nprobe_and_seconds():
    assert check_nprobe(4, 4) == 4 and check_nprobe(99, None) == 99
    with pytest.raises(ValueError, match="at most nlist=4"):
        check_nprobe(5, 4)
    with pytest.raises(TypeError, match="nprobe"):
        check_nprobe(2.0, 4)
    assert check_seconds(2) == 2.0
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive and finite"):
            check_seconds(bad)
    with pytest.raises(TypeError, match="seconds"):
        check_seconds(True)


class TestCheckIds:
    def test_integers_pass_as_int64(self):
        got = check_ids([5, -3, 2**63 - 1], 3)
        assert got.dtype == np.int64
        assert got.tolist() == [5, -3, 2**63 - 1]

    @pytest.mark.parametrize(
        "ids", [[2**63], [-(2**63) - 1], np.array([2**64 - 1], np.uint64)]
    )
    def test_values_outside_int64_are_refused_not_wrapped(self, ids):
        with pytest.raises(ValueError, match=r"ids must be in -2\*\*63 "):
            check_ids(ids, 1)

    def test_lower_bound_and_reason_are_named(self):
        with pytest.raises(ValueError, match=r"-2\*\*63 \+ 1 .. 2\*\*63 - 1 \(pads\)"):
            check_ids([PAD_ID], 1, PAD_ID + 1, " (pads)")

    def test_shape_and_dtype_errors(self):
        with pytest.raises(ValueError, match=r"shape \(2,\)"):
            check_ids([1, 2, 3], 2)
        with pytest.raises(ValueError, match=r"shape \[n\]"):
            check_ids([[1]], None)
        with pytest.raises(TypeError, match="integers"):
            check_ids([1.5], 1)

    def test_any_length_when_n_is_none(self):
        assert check_ids(np.arange(4), None).tolist() == [0, 1, 2, 3]


class TestNewIds:
    def test_defaults_follow_the_largest_existing_id(self):
        assert new_ids(None, 3, np.array([-4, 7])).tolist() == [8, 9, 10]
        assert new_ids(None, 2, np.zeros(0, np.int64)).tolist() == [0, 1]

    def test_no_default_ids_past_int64(self):
        with pytest.raises(ValueError, match="free default ids"):
            new_ids(None, 2, np.array([MAX_ID - 1]))

    def test_clashes_with_existing_and_repeats_are_named(self):
        existing = np.array([1, 4, 9])
        with pytest.raises(ValueError, match=r"repeated: \[4 9\]"):
            new_ids([9, 5, 4], 3, existing)
        with pytest.raises(ValueError, match=r"repeated: \[6\]"):
            new_ids([6, 2, 6], 3, existing)

    def test_fresh_ids_pass_in_given_order(self):
        assert new_ids([10, 0, 5], 3, np.array([1, 4, 9])).tolist() == [10, 0, 5]
