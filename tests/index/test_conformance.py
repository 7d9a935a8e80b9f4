"""The search contract, run against every index kind and one brute-force reference.

Kinds: ``HammingIndex`` on numpy and on FAISS, ``IVFHammingIndex`` with
``nprobe = nlist`` (exact), ``MilvusHammingIndex`` on Milvus Lite
(``BIN_FLAT``) and on the Milvus 2.3.5 test server (``BIN_IVF_FLAT`` with
``nprobe = nlist``; the session's one server, tests/index/conftest.py). A new
kind passes this module or is not offered. Small, tie-heavy code sets keep
it fast; every expected value comes from :mod:`tests.reference`.
"""

import itertools

import numpy as np
import pytest

import keras_hash
from keras_hash.index import PAD_ID
from tests import reference
from tests.index.conftest import MilvusServer

pytestmark = pytest.mark.numpy_only  # no Keras session to reset

_names = itertools.count()
KINDS = [
    "numpy",
    "faiss",
    "ivf",
    "milvus-lite",
    pytest.param(
        "milvus-server",
        marks=pytest.mark.skipif(
            MilvusServer is None,
            reason="no Milvus test server package: pip install milvus==2.3.5",
        ),
    ),
]


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory):
    pytest.importorskip(
        "milvus_lite", reason="Milvus Lite: pip install keras-hash[milvus]"
    )
    return str(tmp_path_factory.mktemp("conformance") / "conformance.db")


@pytest.fixture(params=KINDS)
def make(request):
    """``make(bits)``: a new, empty index of the kind (trained where needed)."""
    made = []

    def make_index(bits):
        index = _new(request.param, bits, request)
        made.append(index)
        return index

    yield make_index
    for index in made:
        if isinstance(index, keras_hash.index.MilvusHammingIndex):
            if not index._closed:
                index.drop()
                index.close()


def _new(kind, bits, request):
    if kind in ("faiss", "ivf"):
        pytest.importorskip("faiss", reason="FAISS: pip install keras-hash[faiss]")
    if kind in ("numpy", "faiss"):
        return keras_hash.HammingIndex(bits, backend=kind)
    if kind == "ivf":
        index = keras_hash.index.IVFHammingIndex(bits, nlist=4, nprobe=4)
        index.train(_codes(np.random.default_rng(99), 64, bits))
        return index
    pytest.importorskip("pymilvus", reason="Milvus: pip install keras-hash[milvus]")
    name = f"conformance_{next(_names)}"
    if kind == "milvus-lite":
        uri = request.getfixturevalue("lite_uri")
        return keras_hash.index.MilvusHammingIndex(bits, uri, collection=name)
    uri = request.getfixturevalue("server_uri")
    return keras_hash.index.MilvusHammingIndex(
        bits, uri, collection=name, index_type="BIN_IVF_FLAT", nlist=4, nprobe=4
    )


def _codes(rng, n, bits):
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


def _tied(rng, n, bits):
    """Codes with many exact ties: a few distinct codes repeated, plus noise."""
    codes = _codes(rng, n, bits)
    codes[: n // 2] = codes[rng.integers(0, 8, n // 2)]
    return rng.permutation(codes)


def _ids(rng, n):
    """Unique ids scattered over int64 (negative ones included)."""
    ids = np.unique(rng.integers(-(2**62), 2**62, size=2 * n))
    return rng.permutation(ids)[:n].astype(np.int64)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    database = _tied(rng, 300, 16)
    queries = np.concatenate([database[:5], _codes(rng, 7, 16)])
    return database, _ids(rng, 300), queries


def test_knn_equals_brute_force_with_ties_by_id(make, data):
    database, ids, queries = data
    index = make(16)
    index.add(database, ids)
    assert index.ntotal == len(index) == 300 and index.bits == 16
    for k in (1, 7, 60, 300):
        distances, found = index.search(queries, k)
        assert distances.dtype == np.int32 and found.dtype == np.int64
        reference.assert_knn_equal((distances, found), database, ids, queries, k)


def test_range_equals_brute_force(make, data):
    database, ids, queries = data
    index = make(16)
    index.add(database, ids)
    for radius in (0, 3, 16, 99):
        result = index.range_search(queries, radius)
        assert result.distances.dtype == np.int32 and result.ids.dtype == np.int64
        reference.assert_range_equal(result, database, ids, queries, min(radius, 16))


def test_identical_codes_rank_by_id(make):
    index = make(8)
    ids = np.array([50, -3, 7, 2**40, -(2**50), 0], np.int64)
    index.add(np.full((6, 1), 0b1010_0000, np.uint8), ids)
    distances, found = index.search(np.full((1, 1), 0b1010_0001, np.uint8), 4)
    np.testing.assert_array_equal(distances, [[1, 1, 1, 1]])
    np.testing.assert_array_equal(found, [[-(2**50), -3, 0, 7]])


def test_k_bounds_and_types(make, data):
    database, ids, queries = data
    index = make(16)
    index.add(database[:20], ids[:20])
    for k in (0, 21, -1):
        with pytest.raises(ValueError, match="k must be between 1 and the index size"):
            index.search(queries, k)
    for k in (True, 2.0, "3", None):
        with pytest.raises(TypeError, match="k must be an int"):
            index.search(queries, k)
    for radius in (True, 1.5, None):
        with pytest.raises(TypeError, match="radius must be an int"):
            index.range_search(queries, radius)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        index.range_search(queries, -1)


def test_empty_index_refuses_searches(make):
    index = make(16)
    assert index.ntotal == 0
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 2), np.uint8), 1)
    with pytest.raises(ValueError, match="empty"):
        index.range_search(np.zeros((1, 2), np.uint8), 1)


def test_no_queries(make, data):
    database, ids, _ = data
    index = make(16)
    index.add(database[:10], ids[:10])
    distances, found = index.search(np.zeros((0, 2), np.uint8), 3)
    assert distances.shape == found.shape == (0, 3)
    assert distances.dtype == np.int32 and found.dtype == np.int64
    result = index.range_search(np.zeros((0, 2), np.uint8), 2)
    assert len(result) == 0 and result.lims.tolist() == [0]


def test_duplicate_ids_are_refused_and_nothing_is_written(make, data):
    database, ids, queries = data
    index = make(16)
    index.add(database[:10], ids[:10])
    with pytest.raises(ValueError, match="unique"):
        index.add(database[10:12], [ids[11], ids[11]])  # repeated in the call
    with pytest.raises(ValueError, match=r"unique|already in collection"):
        index.add(database[10:12], [ids[11], ids[3]])  # already stored
    assert index.ntotal == 10
    reference.assert_knn_equal(
        index.search(queries, 10), database[:10], ids[:10], queries, 10
    )


@pytest.mark.parametrize(
    "bad",
    [[2**63], np.array([2**63], np.uint64), [-(2**63) - 1], [2**64]],
    ids=["2**63", "uint64", "below-int64", "2**64"],
)
def test_out_of_range_ids_are_refused(make, bad):
    index = make(16)
    with pytest.raises(ValueError, match=r"ids must be in -2\*\*63"):
        index.add(np.zeros((1, 2), np.uint8), bad)
    with pytest.raises(TypeError, match="integers"):
        index.add(np.zeros((1, 2), np.uint8), np.array([1.5]))
    assert index.ntotal == 0


def test_pad_id_is_an_id_only_where_rows_are_never_padded(make):
    index = make(16)
    code = np.zeros((1, 2), np.uint8)
    if isinstance(index, keras_hash.HammingIndex):  # exact, k <= ntotal: no pads
        index.add(code, [PAD_ID])
        assert index.search(code, 1)[1][0, 0] == PAD_ID
        return
    with pytest.raises(ValueError, match=r"ids must be in -2\*\*63 \+ 1"):
        index.add(code, [PAD_ID])
    assert index.ntotal == 0


def test_wrong_code_width_and_dtype(make, data):
    database, ids, queries = data
    index = make(16)
    with pytest.raises(ValueError, match="2 bytes"):
        index.add(np.zeros((3, 4), np.uint8), [1, 2, 3])
    with pytest.raises(TypeError, match="uint8"):
        index.add(np.zeros((3, 2), np.int64), [1, 2, 3])
    index.add(database[:5], ids[:5])
    with pytest.raises(ValueError, match="2 bytes"):
        index.search(np.zeros((1, 1), np.uint8), 1)
    with pytest.raises(TypeError, match="uint8"):
        index.search(np.zeros((1, 2), np.float32), 1)
    with pytest.raises(ValueError, match="2 bytes"):
        index.range_search(np.zeros((1, 3), np.uint8), 1)
    assert index.ntotal == 5


def test_save_load_round_trip(make, data, tmp_path, request):
    database, ids, queries = data
    index = make(16)
    index.add(database, ids)
    want_knn = index.search(queries, 25)
    want_range = index.range_search(queries, 4)
    if isinstance(index, keras_hash.index.MilvusHammingIndex):
        # A collection persists: closing and opening it again is the round trip.
        index.close()
        same = keras_hash.index.MilvusHammingIndex(
            16, index.uri, collection=index.collection, nprobe=index.nprobe
        )
        request.addfinalizer(lambda: same.drop() or same.close())
    else:
        index.save(tmp_path / "index.khi")
        same = keras_hash.index.load(tmp_path / "index.khi")
        assert type(same) is type(index)
    assert same.ntotal == 300
    for got, want in zip(same.search(queries, 25), want_knn, strict=True):
        np.testing.assert_array_equal(got, want)
    got = same.range_search(queries, 4)
    for field in ("lims", "distances", "ids"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want_range, field))
    asked = ids[[299, 0, 150, 0]]
    np.testing.assert_array_equal(same.get(asked), database[[299, 0, 150, 0]])


def _stored(database, ids, asked):
    """The reference of ``get``: the row of ``database`` added under each id."""
    row_of = {int(i): r for r, i in enumerate(ids)}
    return database[[row_of[int(i)] for i in asked]].reshape(-1, database.shape[1])


def test_get_returns_stored_codes_in_the_order_asked(make, data):
    database, ids, _ = data
    index = make(16)
    index.add(database[:150], ids[:150])
    index.add(database[150:], ids[150:])  # a second add: ids interleave the first
    rng = np.random.default_rng(5)
    asked = np.concatenate([rng.permutation(ids)[:40], ids[[7, 7, 299, 7]]])
    got = index.get(asked)
    assert got.dtype == np.uint8 and got.shape == (44, 2)
    np.testing.assert_array_equal(got, _stored(database, ids, asked))
    np.testing.assert_array_equal(index.get([int(ids[3])]), database[3:4])
    assert index.get(np.zeros(0, np.int64)).shape == (0, 2)


def test_get_names_unknown_ids(make, data):
    database, ids, _ = data
    index = make(16)
    with pytest.raises(KeyError, match=str(ids[0])):
        index.get(ids[:1])  # empty index
    index.add(database[:10], ids[:10])
    unknown = [int(ids[20]), -5 if -5 not in ids[:10] else 5, PAD_ID]
    with pytest.raises(KeyError) as caught:
        index.get([ids[0], unknown[0], ids[1], unknown[1], unknown[2], unknown[0]])
    message = str(caught.value)
    assert "3 of the ids asked are not in" in message
    for i in unknown:
        assert str(i) in message
    assert str(int(ids[0])) not in message


def test_get_checks_ids_by_the_id_rules(make, data):
    database, ids, _ = data
    index = make(16)
    index.add(database[:5], ids[:5])
    with pytest.raises(ValueError, match=r"ids must be in -2\*\*63"):
        index.get([2**63])
    with pytest.raises(ValueError, match=r"ids must be in -2\*\*63"):
        index.get(np.array([2**63], np.uint64))
    with pytest.raises(TypeError, match="integers"):
        index.get(np.array([1.0]))
    with pytest.raises(ValueError, match=r"ids must have shape \[n\]"):
        index.get(ids[:4].reshape(2, 2))
    with pytest.raises(ValueError, match=r"ids must have shape \[n\]"):
        index.get(int(ids[0]))

