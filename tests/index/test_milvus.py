"""Tests for keras_hash.index.milvus.MilvusHammingIndex on Milvus Lite.

The same searches as tests/test_index.py, checked against brute-force numpy
Hamming distances (and against HammingIndex): k-NN and range at several
radii on codes with many ties, non-contiguous and negative ids, searches
past Milvus's result limit (made small here), delete, upsert, drop, reopening
a file, schema mismatches and an unreachable server.
"""

import importlib.util
import sys
import time

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from keras_hash.index import (
    HammingIndex,  # noqa: E402
    milvus_search,  # noqa: E402
)
from keras_hash.index import milvus as milvus_module  # noqa: E402
from keras_hash.index.milvus import MilvusHammingIndex  # noqa: E402
from tests import reference  # noqa: E402

pytestmark = pytest.mark.numpy_only  # no Keras session to reset

BIG = 2**63 - 1


@pytest.fixture(scope="module")
def db_uri(tmp_path_factory):
    """One Milvus Lite file (one server) for the module."""
    uri = str(tmp_path_factory.mktemp("milvus") / "codes.db")
    MilvusHammingIndex(8, uri, collection="warm_up").drop()
    return uri


_names = iter(range(10**6))


@pytest.fixture
def make(db_uri):
    """Makes indexes in fresh collections of the module's file; closes them."""
    made = []

    def make_index(bits, **kwargs):
        name = kwargs.pop("collection", None) or f"c{next(_names)}"
        index = MilvusHammingIndex(bits, db_uri, collection=name, **kwargs)
        made.append(index)
        return index

    yield make_index
    for index in made:
        index.close()


def _random_codes(rng, n, bits):
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


def _random_ids(rng, n):
    """Unique ids spread over int64, negatives and both extremes included."""
    ids = rng.choice(np.arange(-(10**6), 10**6), size=n - 2, replace=False)
    return np.concatenate([[-BIG, BIG], ids * 7919]).astype(np.int64)


def _assert_knn(index, queries, database, ids, k):
    distances, got_ids = index.search(queries, k)
    assert distances.dtype == np.int32 and got_ids.dtype == np.int64
    assert distances.shape == got_ids.shape == (len(queries), k)
    reference.assert_knn_equal((distances, got_ids), database, ids, queries, k)


def _assert_range(index, queries, database, ids, radius):
    result = index.range_search(queries, radius)
    assert len(result) == len(queries)
    assert result.distances.dtype == np.int32 and result.ids.dtype == np.int64
    ranked = reference.ranking(database, ids, queries)
    for row, (want_d, want_ids) in enumerate(ranked):
        within = want_d <= radius
        got_d, got_ids = result[row]
        np.testing.assert_array_equal(got_d, want_d[within])
        np.testing.assert_array_equal(got_ids, want_ids[within])


class TestSearch:
    @pytest.mark.parametrize("bits", [16, 64])
    @pytest.mark.parametrize("k", [1, 17, 300])
    def test_knn_matches_brute_force(self, make, bits, k):
        rng = np.random.default_rng(bits + k)
        database = _random_codes(rng, 900, bits)
        queries = np.concatenate([_random_codes(rng, 40, bits), database[:5]])
        ids = _random_ids(rng, 900)
        index = make(bits)
        index.add(database[:400], ids[:400])
        index.add(database[400:], ids[400:])
        assert index.ntotal == len(index) == 900
        _assert_knn(index, queries, database, ids, k)

    def test_same_results_as_hamming_index(self, make):
        rng = np.random.default_rng(1)
        database = _random_codes(rng, 1500, 16)
        queries = _random_codes(rng, 30, 16)
        ids = _random_ids(rng, 1500)
        index = make(16)
        index.add(database, ids)
        exact = HammingIndex(16, backend="numpy")
        exact.add(database, ids)
        for got, want in zip(
            index.search(queries, 50), exact.search(queries, 50), strict=True
        ):
            np.testing.assert_array_equal(got, want)
        got, want = index.range_search(queries, 4), exact.range_search(queries, 4)
        for field in ("lims", "distances", "ids"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))

    def test_ties_beyond_the_first_fetch(self, make):
        # 8-bit codes: ~12 items at distance 0, ~80 at 1, ~230 at 2: for
        # k = 100 the ties at distance 2 continue past the 2k fetched first,
        # and Milvus keeps ties in no id order.
        rng = np.random.default_rng(2)
        database = _random_codes(rng, 3000, 8)
        ids = rng.permutation(3000).astype(np.int64) * -3
        index = make(8)
        index.add(database, ids)
        _assert_knn(index, _random_codes(rng, 12, 8), database, ids, 100)

    def test_k_equals_ntotal_returns_full_ranking(self, make):
        rng = np.random.default_rng(5)
        database = _random_codes(rng, 257, 8)
        ids = _random_ids(rng, 257)
        index = make(8)
        index.add(database, ids)
        _assert_knn(index, database[:3], database, ids, 257)

    @pytest.mark.parametrize("radius", [0, 1, 3, 6, 16, 40])
    def test_range_matches_brute_force(self, make, radius):
        rng = np.random.default_rng(radius)
        database = _random_codes(rng, 1200, 16)
        queries = np.concatenate([_random_codes(rng, 25, 16), database[:3]])
        ids = _random_ids(rng, 1200)
        index = make(16)
        index.add(database, ids)
        _assert_range(index, queries, database, ids, radius)

    def test_past_milvus_result_limit(self, make, monkeypatch):
        # With at most 64 results per search, ~200 items within radius 5 of
        # 16-bit queries, and the ~220 ties at distance 2 of 8-bit ones, need
        # searches over halves of the id range.
        monkeypatch.setattr(milvus_search, "MAX_TOPK", 64)
        monkeypatch.setattr(milvus_search, "_FIRST_LIMIT", 16)  # then 64
        splits = []
        split = milvus_search.split
        monkeypatch.setattr(
            milvus_search,
            "split",
            lambda *args: splits.append(args[-1]) or split(*args),
        )
        rng = np.random.default_rng(7)
        for bits, k, radius in ((16, 40, 5), (8, 40, 1)):
            database = _random_codes(rng, 2000, bits)
            queries = _random_codes(rng, 4, bits)
            ids = _random_ids(rng, 2000)
            index = make(bits)
            index.add(database, ids)
            _assert_range(index, queries, database, ids, radius)
            _assert_knn(index, queries, database, ids, k)
        assert None in splits  # range searches were split ...
        assert any(need is not None for need in splits)  # ... and k-NN ties
        with pytest.raises(ValueError, match="at most 64"):
            index.search(queries, 65)

    def test_empty_and_bad_arguments(self, make):
        index = make(16)
        with pytest.raises(ValueError, match="empty"):
            index.search(np.zeros((1, 2), np.uint8), 1)
        index.add(np.zeros((3, 2), np.uint8), [1, 2, 3])
        with pytest.raises(ValueError, match="between 1 and the index size 3"):
            index.search(np.zeros((1, 2), np.uint8), 4)
        with pytest.raises(TypeError, match="k must be an int"):
            index.search(np.zeros((1, 2), np.uint8), 1.0)
        with pytest.raises(ValueError, match="radius must be >= 0"):
            index.range_search(np.zeros((1, 2), np.uint8), -1)
        with pytest.raises(ValueError, match="2 bytes"):
            index.search(np.zeros((1, 8), np.uint8), 1)
        with pytest.raises(TypeError, match="uint8"):
            index.range_search(np.zeros((1, 2), np.float32), 1)
        distances, ids = index.search(np.zeros((0, 2), np.uint8), 2)
        assert distances.shape == ids.shape == (0, 2)
        assert index.range_search(np.zeros((0, 2), np.uint8), 1).lims.tolist() == [0]


class TestWrites:
    def test_delete_then_search(self, make):
        rng = np.random.default_rng(11)
        database = _random_codes(rng, 600, 16)
        ids = _random_ids(rng, 600)
        index = make(16)
        index.add(database, ids)
        gone = ids[::3]
        assert index.delete(np.concatenate([gone, [12345678901]])) == len(gone)
        assert index.delete(gone[:5]) == 0  # already gone
        keep = np.ones(600, bool)
        keep[::3] = False
        assert index.ntotal == keep.sum()
        queries = _random_codes(rng, 20, 16)
        _assert_knn(index, queries, database[keep], ids[keep], 25)
        _assert_range(index, queries, database[keep], ids[keep], 4)

    def test_upsert_replaces_codes(self, make):
        rng = np.random.default_rng(12)
        database = _random_codes(rng, 500, 16)
        ids = _random_ids(rng, 500)
        index = make(16)
        index.add(database, ids)
        new_codes = _random_codes(rng, 3, 16)
        new_ids = np.array([ids[10], ids[20], 4242], np.int64)  # two replaced
        index.upsert(new_codes, new_ids)
        assert index.ntotal == 501
        np.testing.assert_array_equal(index.get(new_ids), new_codes)
        want_codes = np.concatenate([database, new_codes[2:]])
        want_codes[[10, 20]] = new_codes[:2]
        want_ids = np.concatenate([ids, [4242]])
        queries = np.concatenate([new_codes, _random_codes(rng, 10, 16)])
        _assert_knn(index, queries, want_codes, want_ids, 30)
        with pytest.raises(KeyError, match="999"):
            index.get([999])

    def test_add_refuses_taken_and_repeated_ids(self, make):
        index = make(16)
        codes = np.arange(8, dtype=np.uint8).reshape(4, 2)
        index.add(codes, [5, 6, 7, 8])
        with pytest.raises(ValueError, match=r"already in collection .*\[6, 8\]"):
            index.add(codes, [6, 8, 9, 10])
        with pytest.raises(ValueError, match="unique"):
            index.add(codes, [1, 2, 2, 3])
        with pytest.raises(ValueError, match="unique"):
            index.upsert(codes, [1, 1, 2, 3])
        assert index.ntotal == 4  # nothing written by the refused calls

    def test_id_checks(self, make):
        index = make(16)
        code = np.zeros((1, 2), np.uint8)
        for bad in ([2**63], [-(2**63)], np.array([2**63], np.uint64)):
            with pytest.raises(ValueError, match="ids must be in"):
                index.add(code, bad)
        with pytest.raises(TypeError, match="integers"):
            index.add(code, np.array([1.0]))
        with pytest.raises(TypeError, match="required"):
            index.add(code, None)
        with pytest.raises(ValueError, match=r"shape \(1,\)"):
            index.add(code, [1, 2])
        index.add(code, [-(2**63) + 1])  # the smallest id Milvus can match
        assert index.delete([-(2**63) + 1]) == 1

    def test_code_checks(self, make):
        index = make(16)
        with pytest.raises(TypeError, match="uint8"):
            index.add(np.zeros((2, 2), np.int64), [1, 2])
        with pytest.raises(ValueError, match="2 bytes"):
            index.add(np.zeros((2, 3), np.uint8), [1, 2])
        with pytest.raises(ValueError, match="shape"):
            index.add(np.zeros(2, np.uint8), [1, 2])

    def test_batches_and_progress(self, make):
        rng = np.random.default_rng(13)
        database = _random_codes(rng, 250, 16)
        ids = np.arange(250, dtype=np.int64) * 2
        calls = []
        index = make(16)
        index.add(database, ids, batch_size=100, progress=lambda *a: calls.append(a))
        assert calls == [(100, 250), (200, 250), (250, 250)]
        index.upsert(database[:10], ids[:10], progress=True)  # a Keras Progbar
        assert index.ntotal == 250
        _assert_knn(index, database[:5], database, ids, 10)
        with pytest.raises(ValueError, match="batch_size"):
            index.add(database[:1], [1], batch_size=0)

    def test_drop(self, make):
        index = make(16, collection="to_drop")
        index.add(np.zeros((2, 2), np.uint8), [1, 2])
        index.drop()
        with pytest.raises(ValueError, match="dropped"):
            index.search(np.zeros((1, 2), np.uint8), 1)
        assert make(16, collection="to_drop").ntotal == 0  # made anew, empty


class TestCollections:
    def test_reopen_collection_of_the_same_file(self, make):
        rng = np.random.default_rng(21)
        database = _random_codes(rng, 700, 16)
        ids = _random_ids(rng, 700)
        first = make(16, collection="kept")
        first.add(database, ids)
        with pytest.raises(TypeError, match="timeout"):
            first.wait_for_index(timeout="soon")
        first.wait_for_index()  # Milvus Lite: a flush, nothing to wait for
        first.close()
        again = make(16, collection="kept")
        assert again.index_type == "BIN_FLAT" and again.ntotal == 700
        _assert_knn(again, database[:10], database, ids, 20)

    def test_reopen_after_the_server_restarts(self, tmp_path):
        # A second file, its Lite server stopped: the data come back from disk.
        from milvus_lite.server_manager import server_manager_instance

        uri = str(tmp_path / "restart.db")
        rng = np.random.default_rng(22)
        database = _random_codes(rng, 300, 16)
        ids = _random_ids(rng, 300)
        with MilvusHammingIndex(16, uri, collection="codes") as index:
            index.add(database, ids)
            index.delete(ids[:10])
        server_manager_instance.release_server(uri)
        with MilvusHammingIndex(16, uri, collection="codes") as index:
            assert index.ntotal == 290
            _assert_knn(index, database[:10], database[10:], ids[10:], 15)

    def test_schema_mismatch(self, make, db_uri):
        make(16, collection="sixteen").add(np.zeros((1, 2), np.uint8), [1])
        with pytest.raises(ValueError, match=r"holds 16-bit codes .* bits=64"):
            make(64, collection="sixteen")
        with pytest.raises(
            ValueError, match="BIN_FLAT index, index_type='BIN_IVF_FLAT'"
        ):
            make(16, collection="sixteen", index_type="BIN_IVF_FLAT")
        import pymilvus

        client = pymilvus.MilvusClient(db_uri)
        client.create_collection("floats", dimension=16)  # FLOAT_VECTOR, COSINE
        with pytest.raises(ValueError, match="not a collection of binary codes"):
            make(16, collection="floats")
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("bits", pymilvus.DataType.BINARY_VECTOR, dim=16)
        params = client.prepare_index_params()
        params.add_index("bits", index_type="BIN_FLAT", metric_type="JACCARD")
        client.create_collection("jaccard", schema=schema, index_params=params)
        with pytest.raises(ValueError, match="metric JACCARD, not HAMMING"):
            make(16, collection="jaccard")
        text = client.create_schema(auto_id=False)
        text.add_field("key", pymilvus.DataType.VARCHAR, is_primary=True, max_length=9)
        text.add_field("bits", pymilvus.DataType.BINARY_VECTOR, dim=16)
        client.create_collection("text_keys", schema=text)
        with pytest.raises(ValueError, match="INT64 primary key"):
            make(16, collection="text_keys")
        client.close()

    def test_other_field_names_are_adopted(self, make, db_uri):
        import pymilvus

        client = pymilvus.MilvusClient(db_uri)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("bits", pymilvus.DataType.BINARY_VECTOR, dim=16)
        params = client.prepare_index_params()
        params.add_index("bits", index_type="BIN_FLAT", metric_type="HAMMING")
        client.create_collection("theirs", schema=schema, index_params=params)
        client.close()
        rng = np.random.default_rng(23)
        database = _random_codes(rng, 200, 16)
        ids = _random_ids(rng, 200)
        index = make(16, collection="theirs")
        index.add(database, ids)
        _assert_knn(index, database[:5], database, ids, 12)

    def test_lite_refuses_ivf_and_leaves_nothing(self, make, db_uri):
        with pytest.raises(ValueError, match="BIN_IVF_FLAT.*BIN_FLAT only"):
            make(16, collection="ivf", index_type="BIN_IVF_FLAT", nlist=16)
        import pymilvus

        client = pymilvus.MilvusClient(db_uri)
        assert not client.has_collection("ivf")
        client.close()


class TestConnection:
    def test_unreachable_server_fails_fast(self):
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="127.0.0.1:1"):
            MilvusHammingIndex(16, "http://127.0.0.1:1", timeout=2)
        assert time.monotonic() - start < 15

    def test_bad_uris_and_arguments(self, tmp_path):
        with pytest.raises(ValueError, match="ending in .db"):
            MilvusHammingIndex(16, str(tmp_path / "codes.txt"))
        with pytest.raises(FileNotFoundError, match="does not exist"):
            MilvusHammingIndex(16, str(tmp_path / "missing" / "codes.db"))
        with pytest.raises(ValueError, match="36"):
            MilvusHammingIndex(16, str(tmp_path / ("x" * 40 + ".db")))
        with pytest.raises(ValueError, match="collection must be"):
            MilvusHammingIndex(16, str(tmp_path / "a.db"), collection="no-dash")
        with pytest.raises(ValueError, match="multiple of 8"):
            MilvusHammingIndex(12, str(tmp_path / "a.db"))
        with pytest.raises(ValueError, match="at most 32768"):
            MilvusHammingIndex(65536, str(tmp_path / "a.db"))
        with pytest.raises(ValueError, match="index_type"):
            MilvusHammingIndex(16, str(tmp_path / "a.db"), index_type="HNSW")

    def test_clear_import_error_without_pymilvus(self, monkeypatch, tmp_path):
        monkeypatch.setitem(sys.modules, "pymilvus", None)
        # The module itself imports without pymilvus ...
        spec = importlib.util.spec_from_file_location(
            "milvus_copy", milvus_module.__file__
        )
        copy = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(copy)
        # ... and making an index names the extra to install.
        with pytest.raises(ImportError, match=r"pip install keras-hash\[milvus\]"):
            copy.MilvusHammingIndex(16, str(tmp_path / "a.db"))
