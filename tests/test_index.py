"""Tests for keras_hash.index.HammingIndex against a brute-force reference."""

import json
import os
import zipfile

import numpy as np
import pytest

from keras_hash import index as index_module
from keras_hash.index import HammingIndex, RangeResult

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


def _brute_distances(queries, database, bits):
    """Hamming distances via float inner products of unpacked ±1 codes."""
    q = np.unpackbits(queries, axis=1, count=bits).astype(np.float64) * 2 - 1
    d = np.unpackbits(database, axis=1, count=bits).astype(np.float64) * 2 - 1
    return np.rint((bits - q @ d.T) / 2).astype(np.int64)


def _brute_rankings(queries, database, ids, bits):
    """Per query: ids and distances by distance, ties by id (stable sorts)."""
    dist = _brute_distances(queries, database, bits)
    by_id = np.argsort(ids, kind="stable")
    out = []
    for row in dist:
        order = by_id[np.argsort(row[by_id], kind="stable")]
        out.append((row[order], ids[order]))
    return out


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
        reference = _brute_rankings(queries, database, np.arange(900), bits)
        for row, (want_d, want_ids) in enumerate(reference):
            np.testing.assert_array_equal(distances[row], want_d[:k])
            np.testing.assert_array_equal(ids[row], want_ids[:k])

    def test_k_equals_ntotal_returns_full_ranking(self, backend):
        rng = np.random.default_rng(5)
        database = _random_codes(rng, 257, 8)
        index = HammingIndex(8, backend=backend)
        index.add(database)
        distances, ids = index.search(database[:3], k=257)
        reference = _brute_rankings(database[:3], database, np.arange(257), 8)
        for row, (want_d, want_ids) in enumerate(reference):
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
        for row, (want_d, want_ids) in enumerate(
            _brute_rankings(queries, database, ids, 16)
        ):
            np.testing.assert_array_equal(distances[row], want_d[:40])
            np.testing.assert_array_equal(got[row], want_ids[:40])

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
        for row, (want_d, want_ids) in enumerate(
            _brute_rankings(queries, database, np.arange(5000), 8)
        ):
            np.testing.assert_array_equal(distances[row], want_d[:30])
            np.testing.assert_array_equal(ids[row], want_ids[:30])


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

    def test_boundary_fixup_is_exact(self):
        # Forces the path used when FAISS breaks ties its own way.
        _faiss()
        rng = np.random.default_rng(9)
        database = _random_codes(rng, 3000, 8)
        queries = _random_codes(rng, 25, 8)
        index = HammingIndex(8, backend="faiss")
        index.add(database)
        index._backend.exact_ties = False
        distances, ids = index.search(queries, 123)
        for row, (want_d, want_ids) in enumerate(
            _brute_rankings(queries, database, np.arange(3000), 8)
        ):
            np.testing.assert_array_equal(distances[row], want_d[:123])
            np.testing.assert_array_equal(ids[row], want_ids[:123])

    def test_this_faiss_ranks_ties_by_label(self):
        _faiss()
        from keras_hash.index import _faiss_ties_by_label

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
            _brute_rankings(queries, database, np.arange(700), bits)
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
        assert "ntotal=5" in repr(index)

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
        for row, (want_d, want_ids) in enumerate(
            _brute_rankings(queries, database, np.arange(70_000), 16)
        ):
            np.testing.assert_array_equal(distances[row], want_d[:250])
            np.testing.assert_array_equal(ids[row], want_ids[:250])

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
        want = _brute_distances(base, database, bits)
        assert want[0, 3] == 65536
        distances, ids = index.search(base, k=6)
        for row, (want_d, want_ids) in enumerate(
            _brute_rankings(base, database, np.arange(6), bits)
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
