"""Tests for keras_hash.index.HammingIndex against a brute-force reference."""

import json
import os
import zipfile

import numpy as np
import pytest

from keras_hash.index import HammingIndex, RangeResult
from keras_hash.index import exact as index_module
from tests import reference

pytestmark = pytest.mark.numpy_only  # no Keras session to reset


def _faiss():
    return pytest.importorskip("faiss")


@pytest.fixture(params=["numpy", "faiss"])
def backend(request):
    if request.param == "faiss":
        _faiss()
    return request.param


def _random_codes(rng, n, bits):
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


class TestKnn:
    @pytest.mark.parametrize("bits", [8, 16, 64, 128])
    @pytest.mark.parametrize("k", [1, 17, 300])
    def test_matches_brute_force(self, backend, bits, k):
        rng = np.random.default_rng(bits + k)
        database = _random_codes(rng, 900, bits)
        queries = _random_codes(rng, 45, bits)
        index = HammingIndex(bits, backend=backend)
        index.add(database[:400])
        index.add(database[400:])
        distances, ids = index.search(queries, k)
        assert distances.dtype == np.int32 and ids.dtype == np.int64
        assert distances.shape == ids.shape == (45, k)
        reference.assert_knn_equal(
            (distances, ids), database, np.arange(900), queries, k
        )

    def test_k_equals_ntotal_returns_full_ranking(self, backend):
        rng = np.random.default_rng(5)
        database = _random_codes(rng, 257, 8)
        index = HammingIndex(8, backend=backend)
        index.add(database)
        distances, ids = index.search(database[:3], k=257)
        ranked = reference.ranking(database, np.arange(257), database[:3])
        for row, (want_d, want_ids) in enumerate(ranked):
            np.testing.assert_array_equal(distances[row], want_d)
            np.testing.assert_array_equal(ids[row], want_ids)

    def test_custom_ids_break_ties(self, backend):
        rng = np.random.default_rng(6)
        database = _random_codes(rng, 600, 16)
        ids = rng.choice(10**12, size=600, replace=False) - 5 * 10**11
        queries = _random_codes(rng, 20, 16)
        index = HammingIndex(16, backend=backend)
        index.add(database[:250], ids[:250])
        index.add(database[250:], ids[250:])
        distances, got = index.search(queries, 40)
        reference.assert_knn_equal((distances, got), database, ids, queries, 40)

    def test_all_identical_codes_rank_by_id(self, backend):
        index = HammingIndex(32, backend=backend)
        index.add(np.zeros((50, 4), np.uint8), ids=np.arange(50)[::-1] * 3)
        distances, ids = index.search(np.zeros((2, 4), np.uint8), 5)
        np.testing.assert_array_equal(distances, np.zeros((2, 5)))
        np.testing.assert_array_equal(ids, [[0, 3, 6, 9, 12]] * 2)

    def test_many_queries_cross_query_blocks(self, backend):
        rng = np.random.default_rng(7)
        database = _random_codes(rng, 5000, 8)
        queries = _random_codes(rng, 101, 8)
        index = HammingIndex(8, backend=backend)
        index.add(database)
        distances, ids = index.search(queries, 30)
        reference.assert_knn_equal(
            (distances, ids), database, np.arange(5000), queries, 30
        )


class TestFaissTies:
    def test_two_threads_same_as_numpy(self):
        faiss = _faiss()
        rng = np.random.default_rng(8)
        database = _random_codes(rng, 20_000, 16)
        queries = _random_codes(rng, 70, 16)
        expected = HammingIndex(16, backend="numpy")
        expected.add(database)
        index = HammingIndex(16, backend="faiss")
        index.add(database)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(2)
        try:
            got = index.search(queries, 500)
        finally:
            faiss.omp_set_num_threads(before)
        want = expected.search(queries, 500)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])

    def test_boundary_fixup_is_exact(self, monkeypatch):
        # Forces the path used when FAISS breaks ties its own way.
        _faiss()
        monkeypatch.setattr(index_module._FaissBackend, "exact_ties", False)
        rng = np.random.default_rng(9)
        database = _random_codes(rng, 3000, 8)
        queries = _random_codes(rng, 25, 8)
        index = HammingIndex(8, backend="faiss")
        index.add(database)
        distances, ids = index.search(queries, 123)
        reference.assert_knn_equal(
            (distances, ids), database, np.arange(3000), queries, 123
        )

    def test_this_faiss_ranks_ties_by_label(self):
        _faiss()
        from keras_hash.index.exact import _faiss_ties_by_label

        assert _faiss_ties_by_label()


class TestRangeSearch:
    @pytest.mark.parametrize("bits, radius", [(8, 0), (8, 3), (16, 5), (64, 26)])
    def test_matches_brute_force(self, backend, bits, radius):
        rng = np.random.default_rng(bits * 100 + radius)
        database = _random_codes(rng, 700, bits)
        queries = _random_codes(rng, 40, bits)
        queries[:5] = database[:5]  # radius 0 finds at least these
        index = HammingIndex(bits, backend=backend)
        index.add(database)
        result = index.range_search(queries, radius)
        assert isinstance(result, RangeResult)
        assert len(result) == 40
        assert result.lims.dtype == np.int64 and result.lims[0] == 0
        assert result.distances.dtype == np.int32 and result.ids.dtype == np.int64
        for row, (want_d, want_ids) in enumerate(
            reference.ranking(database, np.arange(700), queries)
        ):
            inside = want_d <= radius  # inclusive
            got_d, got_ids = result[row]
            np.testing.assert_array_equal(got_d, want_d[inside])
            np.testing.assert_array_equal(got_ids, want_ids[inside])
            assert result.counts()[row] == inside.sum()

    def test_radius_beyond_bits_returns_everything(self, backend):
        rng = np.random.default_rng(10)
        index = HammingIndex(8, backend=backend)
        index.add(_random_codes(rng, 30, 8), ids=np.arange(30) * 7)
        result = index.range_search(_random_codes(rng, 3, 8), radius=100)
        np.testing.assert_array_equal(result.counts(), [30, 30, 30])
        for distances, ids in result:
            assert np.all(np.diff(distances) >= 0)
            assert sorted(ids) == list(np.arange(30) * 7)

    def test_empty_balls(self, backend):
        index = HammingIndex(16, backend=backend)
        index.add(np.zeros((4, 2), np.uint8))
        result = index.range_search(np.full((2, 2), 255, np.uint8), radius=15)
        np.testing.assert_array_equal(result.lims, [0, 0, 0])
        assert result[1][0].size == 0


class TestContainer:
    def test_properties(self, backend):
        index = HammingIndex(24, backend=backend)
        assert len(index) == index.ntotal == 0 and index.bits == 24
        assert index.backend == backend
        index.add(np.zeros((3, 3), np.uint8))
        index.add(np.ones((2, 3), np.uint8))
        assert len(index) == 5
        assert index.ids.dtype == np.int64
        np.testing.assert_array_equal(index.ids, np.arange(5))
        assert repr(index) == f"HammingIndex(bits=24, ntotal=5, backend={backend!r})"
        for name in ("bits", "backend", "ntotal", "ids", "codes"):
            with pytest.raises(AttributeError):
                setattr(index, name, 1)

    def test_default_ids_follow_largest(self):
        index = HammingIndex(8, backend="numpy")
        index.add(np.zeros((2, 1), np.uint8), ids=[10, 3])
        index.add(np.zeros((2, 1), np.uint8))
        np.testing.assert_array_equal(index.ids, [3, 10, 11, 12])

    def test_auto_backend_prefers_faiss(self):
        _faiss()
        assert HammingIndex(8).backend == "faiss"

    def test_reset(self, backend):
        index = HammingIndex(8, backend=backend)
        index.add(np.zeros((3, 1), np.uint8))
        index.reset()
        assert len(index) == 0
        index.add(np.full((1, 1), 7, np.uint8), ids=[42])
        np.testing.assert_array_equal(
            index.search(np.zeros((1, 1), np.uint8), 1)[1], [[42]]
        )


class TestSaveLoad:
    def test_roundtrip(self, backend, tmp_path):
        rng = np.random.default_rng(11)
        database = _random_codes(rng, 500, 64)
        ids = rng.permutation(5000)[:500]
        index = HammingIndex(64, backend=backend)
        index.add(database, ids)
        path = tmp_path / "index.khi"
        index.save(path)
        assert os.listdir(tmp_path) == ["index.khi"]  # no temp file left
        loaded = HammingIndex.load(path, backend=backend)
        assert loaded.bits == 64 and len(loaded) == 500
        queries = _random_codes(rng, 9, 64)
        for a, b in zip(
            index.search(queries, 50), loaded.search(queries, 50), strict=True
        ):
            np.testing.assert_array_equal(a, b)

    def test_file_layout_is_documented_npz(self, tmp_path):
        index = HammingIndex(16, backend="numpy")
        index.add(np.array([[1, 2], [3, 4]], np.uint8), ids=[5, 1])
        index.save(tmp_path / "x")
        with np.load(tmp_path / "x", allow_pickle=False) as archive:
            header = json.loads(archive["header"].tobytes())
            np.testing.assert_array_equal(archive["ids"], [1, 5])
            np.testing.assert_array_equal(archive["codes"], [[3, 4], [1, 2]])
        assert header["magic"] == "keras_hash.HammingIndex"
        assert header["format_version"] == 1
        assert (header["bits"], header["count"]) == (16, 2)

    def test_empty_index_roundtrip(self, tmp_path):
        HammingIndex(8, backend="numpy").save(tmp_path / "e")
        assert len(HammingIndex.load(tmp_path / "e", backend="numpy")) == 0

    def test_overwrite_replaces(self, tmp_path):
        index = HammingIndex(8, backend="numpy")
        index.save(tmp_path / "i")
        index.add(np.zeros((3, 1), np.uint8))
        index.save(tmp_path / "i")
        assert len(HammingIndex.load(tmp_path / "i", backend="numpy")) == 3

    @pytest.fixture
    def saved(self, tmp_path):
        index = HammingIndex(32, backend="numpy")
        index.add(np.arange(400, dtype=np.uint8).reshape(100, 4))
        path = tmp_path / "good.khi"
        index.save(path)
        return path

    def test_truncated(self, saved):
        data = saved.read_bytes()
        saved.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="not a readable HammingIndex"):
            HammingIndex.load(saved)

    def test_corrupt_codes_fail_checksum(self, saved):
        with np.load(saved) as archive:
            arrays = dict(archive)
        arrays["codes"][3, 1] ^= 1
        with open(saved, "wb") as f:
            np.savez(f, **arrays)
        with pytest.raises(ValueError, match="checksum mismatch"):
            HammingIndex.load(saved)

    def test_flipped_byte_anywhere_is_caught(self, saved):
        data = bytearray(saved.read_bytes())
        data[len(data) // 2] ^= 0xFF
        saved.write_bytes(bytes(data))
        with pytest.raises(ValueError):
            HammingIndex.load(saved)

    def test_foreign_npz(self, tmp_path):
        path = tmp_path / "foreign.npz"
        np.savez(path, weights=np.zeros(3))
        with pytest.raises(ValueError, match="missing arrays"):
            HammingIndex.load(path)

    def test_foreign_text_file(self, tmp_path):
        path = tmp_path / "notes.txt"
        path.write_text("hello")
        with pytest.raises(ValueError, match="not a readable HammingIndex"):
            HammingIndex.load(path)

    def test_wrong_magic(self, saved):
        self._rewrite_header(saved, magic="something.else")
        with pytest.raises(ValueError, match="not a HammingIndex file"):
            HammingIndex.load(saved)

    def test_future_version(self, saved):
        self._rewrite_header(saved, format_version=99)
        with pytest.raises(ValueError, match="format_version 99"):
            HammingIndex.load(saved)

    def test_count_disagrees_with_arrays(self, saved):
        self._rewrite_header(saved, count=101)
        with pytest.raises(ValueError, match=r"header says uint8 \(101, 4\)"):
            HammingIndex.load(saved)

    def test_pickled_objects_are_refused(self, tmp_path):
        path = tmp_path / "evil.npz"
        np.savez(path, header=np.array([{"a": 1}], dtype=object), codes=0, ids=0)
        with pytest.raises(ValueError):
            HammingIndex.load(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            HammingIndex.load(tmp_path / "nope")

    @staticmethod
    def _rewrite_header(path, **changes):
        with np.load(path) as archive:
            arrays = dict(archive)
        header = json.loads(arrays["header"].tobytes())
        header.update(changes)
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        assert zipfile.is_zipfile(path)


class TestBadInput:
    @pytest.fixture
    def index(self):
        index = HammingIndex(16, backend="numpy")
        index.add(np.zeros((10, 2), np.uint8))
        return index

    def test_bits(self):
        with pytest.raises(ValueError, match="multiple of 8.*12"):
            HammingIndex(12)

    def test_backend_name(self):
        with pytest.raises(ValueError, match="'annoy'"):
            HammingIndex(8, backend="annoy")

    def test_add_dtype(self, index):
        with pytest.raises(TypeError, match="float32"):
            index.add(np.zeros((2, 2), np.float32))

    def test_add_width(self, index):
        with pytest.raises(ValueError, match="4 bytes wide but 16-bit"):
            index.add(np.zeros((2, 4), np.uint8))

    def test_query_width(self, index):
        with pytest.raises(ValueError, match="queries are 1 bytes wide"):
            index.search(np.zeros((2, 1), np.uint8), 1)

    def test_query_dtype(self, index):
        with pytest.raises(TypeError, match="int64"):
            index.range_search(np.zeros((2, 2), np.int64), 1)

    def test_empty_index(self):
        with pytest.raises(ValueError, match="index is empty"):
            HammingIndex(8, backend="numpy").search(np.zeros((1, 1), np.uint8), 1)

    @pytest.mark.parametrize("k", [0, 11, -1])
    def test_k_out_of_range(self, index, k):
        with pytest.raises(ValueError, match=f"index size 10, got {k}"):
            index.search(np.zeros((1, 2), np.uint8), k)

    def test_k_not_int(self, index):
        with pytest.raises(TypeError, match="2.0"):
            index.search(np.zeros((1, 2), np.uint8), 2.0)

    def test_negative_radius(self, index):
        with pytest.raises(ValueError, match="radius must be >= 0, got -1"):
            index.range_search(np.zeros((1, 2), np.uint8), -1)

    def test_radius_not_int(self, index):
        with pytest.raises(TypeError, match="1.5"):
            index.range_search(np.zeros((1, 2), np.uint8), 1.5)

    def test_duplicate_ids(self, index):
        with pytest.raises(ValueError, match=r"unique; repeated: \[3\]"):
            index.add(np.zeros((2, 2), np.uint8), ids=[3, 100])

    def test_ids_shape(self, index):
        with pytest.raises(ValueError, match=r"shape \(2,\), got shape \(3,\)"):
            index.add(np.zeros((2, 2), np.uint8), ids=[20, 21, 22])

    def test_ids_dtype(self, index):
        with pytest.raises(TypeError, match="float64"):
            index.add(np.zeros((2, 2), np.uint8), ids=[20.0, 21.0])

    def test_failed_add_leaves_index_unchanged(self, index):
        with pytest.raises(ValueError):
            index.add(np.zeros((2, 2), np.uint8), ids=[5, 50])
        assert len(index) == 10


class TestSampledLimit:
    """Databases large enough for the numpy backend's sampled distance guess."""

    def test_large_database_matches_brute_force(self):
        rng = np.random.default_rng(12)
        database = _random_codes(rng, 70_000, 16)
        queries = _random_codes(rng, 6, 16)
        index = HammingIndex(16, backend="numpy")
        index.add(database)
        distances, ids = index.search(queries, 250)
        reference.assert_knn_equal(
            (distances, ids), database, np.arange(70_000), queries, 250
        )

    def test_misleading_sample_falls_back(self, monkeypatch):
        # The strided sample (every 8th item) sees 40 codes at distance 0 and
        # guesses a limit of 1, but 100 neighbours need distance 16 too.
        database = np.full((70_000, 2), 255, np.uint8)
        database[: 8 * 40 : 8] = 0
        scans = []
        original = index_module._NumpyBackend._scan
        monkeypatch.setattr(
            index_module._NumpyBackend,
            "_scan",
            lambda self, *args: scans.append(args[-1]) or original(self, *args),
        )
        index = HammingIndex(16, backend="numpy")
        index.add(database)
        distances, ids = index.search(np.zeros((1, 2), np.uint8), 100)
        assert scans[0] is not None and scans[1] is None  # guessed, then fell back
        far = np.setdiff1d(np.arange(70_000), np.arange(0, 320, 8))[:60]
        np.testing.assert_array_equal(
            ids[0], np.concatenate([np.arange(0, 320, 8), far])
        )
        np.testing.assert_array_equal(distances[0], [0] * 40 + [16] * 60)


class TestLongCodes:
    def test_65536_bit_distances(self):
        # The numpy backend keeps distances (and "no limit" = bits + 1) in
        # uint32 beyond 65,535 bits: complements are 65,536 apart.
        bits = 65536
        rng = np.random.default_rng(13)
        base = _random_codes(rng, 3, bits)
        database = np.concatenate([base, ~base])
        index = HammingIndex(bits, backend="numpy")
        index.add(database)
        want = reference.hamming(base, database)
        assert want[0, 3] == 65536
        distances, ids = index.search(base, k=6)
        for row, (want_d, want_ids) in enumerate(
            reference.ranking(database, np.arange(6), base)
        ):
            np.testing.assert_array_equal(distances[row], want_d)
            np.testing.assert_array_equal(ids[row], want_ids)
        within = index.range_search(base[:1], radius=bits)
        np.testing.assert_array_equal(np.sort(within[0][0]), np.sort(want[0]))


class TestInsertionOrder:
    def test_maps_insertion_order_to_id_order(self):
        index = HammingIndex(8, backend="numpy")
        index.add(np.array([[1], [2]], np.uint8), ids=[30, 10])
        index.add(np.array([[3]], np.uint8), ids=[20])
        index.add(np.array([[4]], np.uint8))  # id 31
        np.testing.assert_array_equal(index.ids, [10, 20, 30, 31])
        np.testing.assert_array_equal(index.insertion_order, [1, 2, 0, 3])
        labels_in_insertion_order = np.array(["a", "b", "c", "d"])
        by_id = labels_in_insertion_order[index.insertion_order]
        np.testing.assert_array_equal(by_id, ["b", "c", "a", "d"])
        np.testing.assert_array_equal(index.codes[:, 0], [2, 3, 1, 4])

    def test_reset_and_load(self, tmp_path):
        index = HammingIndex(8, backend="numpy")
        index.add(np.array([[1], [2]], np.uint8), ids=[7, 3])
        index.save(tmp_path / "i.khi")
        loaded = HammingIndex.load(tmp_path / "i.khi", backend="numpy")
        np.testing.assert_array_equal(loaded.insertion_order, [0, 1])
        index.reset()
        index.add(np.array([[5]], np.uint8), ids=[9])
        np.testing.assert_array_equal(index.insertion_order, [0])


# ---------------------------------------------------------------------------
# issue 24: hostile inputs and faults


def _id_codes(ids):
    """64-bit codes that spell each id (big-endian): unique per id."""
    return np.asarray(ids, ">u8").view(np.uint8).reshape(-1, 8)


class TestRangeResultIndexing:
    @pytest.fixture
    def result(self):
        index = HammingIndex(8, backend="numpy")
        index.add(np.array([[0], [1], [3], [255]], np.uint8))
        # query 0 finds ids 0, 1, 2 (distances 0, 1, 2); query 1 finds id 3
        return index.range_search(np.array([[0], [255]], np.uint8), radius=2)

    def test_negative_index_counts_from_the_end(self, result):
        np.testing.assert_array_equal(result[-1][1], [3])
        np.testing.assert_array_equal(result[-1][0], [0])
        np.testing.assert_array_equal(result[-2][1], [0, 1, 2])
        np.testing.assert_array_equal(result[-2][0], [0, 1, 2])

    @pytest.mark.parametrize("i", [2, -3, 100])
    def test_out_of_range_raises(self, result, i):
        with pytest.raises(IndexError, match=f"query index {i} out of range for 2"):
            result[i]

    def test_non_int_index(self, result):
        with pytest.raises(TypeError, match="query index must be an int"):
            result[0.0]

    def test_iteration_matches_indexing(self, result):
        pairs = list(result)
        assert len(pairs) == 2
        np.testing.assert_array_equal(pairs[1][1], result[-1][1])


class TestNoQueries:
    def test_range_search_of_no_queries_is_empty(self, backend):
        index = HammingIndex(16, backend=backend)
        index.add(np.zeros((5, 2), np.uint8))
        result = index.range_search(np.zeros((0, 2), np.uint8), radius=3)
        assert len(result) == 0 and list(result) == []
        np.testing.assert_array_equal(result.lims, [0])
        assert result.ids.dtype == np.int64 and result.distances.dtype == np.int32
        with pytest.raises(IndexError):
            result[-1]

    def test_search_of_no_queries_is_empty(self, backend):
        index = HammingIndex(16, backend=backend)
        index.add(np.zeros((5, 2), np.uint8))
        distances, ids = index.search(np.zeros((0, 2), np.uint8), k=3)
        assert distances.shape == ids.shape == (0, 3)
        assert distances.dtype == np.int32 and ids.dtype == np.int64


class TestIdRange:
    @pytest.mark.parametrize(
        "ids",
        [
            np.array([2**63], np.uint64),
            np.array([2**64 - 1], np.uint64),
            [2**63],
            [2**64],
            [5, -(2**63) - 1],
        ],
    )
    def test_ids_outside_int64_are_refused(self, backend, ids):
        index = HammingIndex(64, backend=backend)
        with pytest.raises(ValueError, match=r"ids must be in -2\*\*63 "):
            index.add(_id_codes([1] * len(ids)), ids=ids)
        assert len(index) == 0

    def test_largest_id_round_trips(self, backend, tmp_path):
        index = HammingIndex(64, backend=backend)
        top, bottom = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        index.add(_id_codes([1, 2]), ids=np.array([top, 0], np.uint64))
        index.add(_id_codes([3]), ids=[bottom])
        np.testing.assert_array_equal(index.ids, [bottom, 0, top])
        assert index.search(_id_codes([1]), 1)[1][0, 0] == top
        assert index.search(_id_codes([3]), 1)[1][0, 0] == bottom
        index.save(tmp_path / "i.khi")
        np.testing.assert_array_equal(
            HammingIndex.load(tmp_path / "i.khi").ids, [bottom, 0, top]
        )

    def test_default_ids_past_the_largest_are_refused(self):
        index = HammingIndex(64, backend="numpy")
        index.add(_id_codes([1]), ids=[np.iinfo(np.int64).max])
        with pytest.raises(ValueError, match="no 1 free default ids"):
            index.add(_id_codes([2]))
        assert len(index) == 1


class TestHostileFiles:
    @pytest.fixture
    def saved(self, tmp_path):
        index = HammingIndex(32, backend="numpy")
        index.add(np.arange(400, dtype=np.uint8).reshape(100, 4))
        path = tmp_path / "good.khi"
        index.save(path)
        return path

    def test_npy_file_gives_value_error(self, tmp_path):
        path = tmp_path / "codes.npy"
        np.save(path, np.zeros((3, 4), np.uint8))
        with pytest.raises(ValueError, match="not a readable HammingIndex"):
            HammingIndex.load(path)

    def test_compressed_member_is_refused_before_inflating(self, tmp_path):
        import tracemalloc

        big = HammingIndex(64, backend="numpy")
        big.add(np.zeros((1 << 19, 8), np.uint8))  # 4 MiB of codes
        with np.load(_saved(big, tmp_path / "big.khi")) as archive:
            arrays = dict(archive)
        path = tmp_path / "bomb.khi"
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays)
        assert path.stat().st_size < 2 << 20  # 8 MiB of arrays inside
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match="compressed"):
                HammingIndex.load(path, backend="numpy")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20

    def test_declared_huge_shape_is_refused_before_allocating(self, tmp_path):
        import io
        import tracemalloc

        rows = 1 << 40
        header = {
            "magic": "keras_hash.HammingIndex",
            "format_version": 1,
            "bits": 32,
            "count": rows,
            "sha256": "0" * 64,
        }
        path = tmp_path / "huge.khi"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for name, array, shape in [
                ("header", np.frombuffer(json.dumps(header).encode(), np.uint8), None),
                ("codes", np.zeros((4, 4), np.uint8), (rows, 4)),
                ("ids", np.zeros(4, "<i8"), (rows,)),
            ]:
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    buffer,
                    {
                        "descr": np.lib.format.dtype_to_descr(array.dtype),
                        "fortran_order": False,
                        "shape": shape or array.shape,
                    },
                )
                archive.writestr(f"{name}.npy", buffer.getvalue() + array.tobytes())
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match="needs 4398046511104 bytes"):
                HammingIndex.load(path, backend="numpy")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20

    def test_unknown_member_is_refused(self, saved):
        with zipfile.ZipFile(saved, "a") as archive:
            archive.writestr("extra.npy", b"\x93NUMPY")
        with pytest.raises(ValueError, match="unexpected members"):
            HammingIndex.load(saved)

    def test_fortran_order_and_object_members_are_refused(self, saved):
        with np.load(saved) as archive:
            arrays = dict(archive)
        arrays["codes"] = np.asfortranarray(arrays["codes"])
        with open(saved, "wb") as file:
            np.savez(file, **arrays)
        with pytest.raises(ValueError, match="fortran order True"):
            HammingIndex.load(saved)

    def test_bool_bits_in_header(self, saved):
        TestSaveLoad._rewrite_header(saved, bits=True)
        with pytest.raises(ValueError, match="header field 'bits' is True"):
            HammingIndex.load(saved)

    def test_negative_count_in_header(self, saved):
        TestSaveLoad._rewrite_header(saved, count=-1)
        with pytest.raises(ValueError, match="count=-1"):
            HammingIndex.load(saved)

    def test_long_file_name(self, tmp_path):
        index = HammingIndex(8, backend="numpy")
        index.add(np.array([[7]], np.uint8), ids=[4])
        path = tmp_path / ("i" * 251 + ".khi")  # 255 characters, the limit
        index.save(path)
        assert os.listdir(tmp_path) == [path.name]
        np.testing.assert_array_equal(HammingIndex.load(path).ids, [4])

    def test_file_mode_follows_the_umask(self, tmp_path):
        index = HammingIndex(8, backend="numpy")
        old = os.umask(0o027)
        try:
            index.save(tmp_path / "a.khi")
            os.umask(0o022)
            index.save(tmp_path / "b.khi")
        finally:
            os.umask(old)
        assert (tmp_path / "a.khi").stat().st_mode & 0o777 == 0o640
        assert (tmp_path / "b.khi").stat().st_mode & 0o777 == 0o644

    def test_saving_over_a_file_keeps_its_mode(self, tmp_path):
        path = tmp_path / "i.khi"
        path.write_bytes(b"old")
        path.chmod(0o644)
        old = os.umask(0o077)
        try:
            HammingIndex(8, backend="numpy").save(path)
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == 0o644
        assert len(HammingIndex.load(path)) == 0


def _saved(index, path):
    index.save(path)
    return path


class TestThreads:
    """add() while other threads search: every answer is right (issue 24 row 14)."""

    def test_add_while_searching(self, backend):
        import threading

        base = np.arange(1_000_000, 1_001_000)
        index = HammingIndex(64, backend=backend)
        index.add(_id_codes(base), ids=base)
        done = threading.Event()
        wrong, errors = [], []

        def writer():
            try:
                for start in range(999_950, 997_950, -50):  # each batch goes first
                    ids = np.arange(start, start + 50)
                    index.add(_id_codes(ids), ids=ids)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)
            finally:
                done.set()

        def reader(seed):
            rng = np.random.default_rng(seed)
            try:
                while not done.is_set():
                    want = rng.choice(base, size=8)
                    distances, ids = index.search(_id_codes(want), k=1)
                    if not (np.array_equal(ids[:, 0], want) and not distances.any()):
                        wrong.append((want, ids[:, 0]))
                    found = index.range_search(_id_codes(want[:2]), radius=0)
                    if [list(found[i][1]) for i in range(2)] != [[w] for w in want[:2]]:
                        wrong.append((want[:2], found.ids))
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
        threads.append(threading.Thread(target=writer))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors and not wrong[:3]
        assert len(index) == 3000
        np.testing.assert_array_equal(index.ids, np.arange(998_000, 1_001_000))
        np.testing.assert_array_equal(index.codes, _id_codes(index.ids))
