"""MilvusHammingIndex on a real Milvus server: BIN_IVF_FLAT and BIN_FLAT, by URI.

Milvus Lite (tests/test_milvus.py) serves BIN_FLAT only. Here the embedded
Milvus 2.3.5 standalone server of the ``milvus`` package (in the test extra)
runs on 127.0.0.1 for the module, and the index reaches it by URI as it would
any server. Everything is checked against independent numpy brute force:

- ``BIN_IVF_FLAT`` with ``nprobe = nlist``: k-NN and range search equal the
  brute-force results exactly (distances, and ties by id), on random codes
  with many exact ties and on clustered codes, also past Milvus's result
  limit (made small here, so that the id-range splitting runs);
- ``nprobe = 1``: neighbours are missed (recall@10 < 1: the inverted lists
  really answer) while every distance returned is the true one;
- ``BIN_FLAT`` on the server: exact; delete, upsert, get and drop; and the
  module's errors for wrong bits, another index type and other schemas.

A server searches a segment by brute force until the index built on it is
loaded: the fixture waits for the build, then releases and loads the
collection, so that the IVF index is what answers (docs/milvus.md).

Without the ``milvus`` package these tests fail (they do not skip): the test
extra installs it. The server's embedded etcd always listens on 127.0.0.1
ports 2379 and 2380, so one such server runs per machine at a time.
"""

import numpy as np
import pytest

pytest.importorskip("pymilvus")

from keras_hash.index import (  # noqa: E402
    PAD_ID,
    MilvusHammingIndex,
    milvus_search,  # noqa: E402
)
from tests import reference  # noqa: E402

pytestmark = pytest.mark.numpy_only  # no Keras session to reset

BITS, NLIST = 64, 32
N_RANDOM, N_CLUSTERED = 2000, 2000


def _clustered(rng, n, centres):
    bits = np.unpackbits(centres[rng.integers(0, len(centres), n)], axis=1)
    return np.packbits(bits ^ (rng.random(bits.shape) < 0.1), axis=1)


@pytest.fixture(scope="module")
def data():
    """Random codes (144 copies of one: ties), clustered codes; queries of both."""
    rng = np.random.default_rng(0)
    random_codes = rng.integers(0, 256, size=(N_RANDOM, BITS // 8), dtype=np.uint8)
    random_codes[N_RANDOM // 2 :: 7] = random_codes[0]
    centres = rng.integers(0, 256, size=(20, BITS // 8), dtype=np.uint8)
    codes = np.concatenate([random_codes, _clustered(rng, N_CLUSTERED, centres)])
    # Unique ids spread over int64 (so the id-range halving splits at once),
    # with -1, 0 and the extremes a 2.3 server takes (2**63 - 1 it does not).
    ids = np.unique(rng.integers(-(2**63) + 1, 2**63 - 2, size=2 * len(codes)))
    ids = rng.permutation(ids)[: len(codes)]
    ids[:4] = [-1, 0, -(2**63) + 1, 2**63 - 2]
    flip_two = np.zeros(BITS // 8, np.uint8)
    flip_two[0] = 3
    queries = np.concatenate(
        [
            random_codes[:8] ^ flip_two,  # the first: 144 copies at distance 2
            rng.integers(0, 256, size=(6, BITS // 8), dtype=np.uint8),
            _clustered(rng, 10, centres),
        ]
    )
    return codes, ids, queries


@pytest.fixture(scope="module")
def ivf(server_uri, data):
    codes, ids, _ = data
    index = MilvusHammingIndex(
        BITS,
        server_uri,
        collection="ivf",
        index_type="BIN_IVF_FLAT",
        nlist=NLIST,
        nprobe=NLIST,
        timeout=60,
    )
    index.add(codes, ids)
    index.wait_for_index(timeout=60)
    info = index._client.describe_index("ivf", "code")
    assert int(info["indexed_rows"]) >= len(codes), info  # searches use the lists
    yield index
    index.drop()
    index.close()


def _assert_exact(index, queries, database, ids, k, radius):
    want = reference.ranking(database, ids, queries)
    distances, found = index.search(queries, k)
    assert distances.dtype == np.int32 and found.dtype == np.int64
    result = index.range_search(queries, radius)
    for row, (want_d, want_i) in enumerate(want):
        np.testing.assert_array_equal(distances[row], want_d[:k])
        np.testing.assert_array_equal(found[row], want_i[:k])
        keep = want_d <= radius
        np.testing.assert_array_equal(result[row][0], want_d[keep])
        np.testing.assert_array_equal(result[row][1], want_i[keep])
    return want


def test_ivf_with_every_list_probed_is_exact(ivf, data):
    codes, ids, queries = data
    assert ivf.index_type == "BIN_IVF_FLAT" and ivf.ntotal == len(codes)
    ivf.nprobe = NLIST
    want = _assert_exact(ivf, queries, codes, ids, k=25, radius=14)
    assert np.sum(want[0][0] == 2) == 144  # ties, ordered by id
    # Clustered queries have many codes within the radius.
    assert sum(np.sum(w[0] <= 14) for w in want[14:]) > 300


def test_ivf_past_the_result_limit(ivf, data, monkeypatch):
    # At most 64 results per search: the 144 ties at distance 2 of the
    # first query (k-NN, k = 40) and its range search need searches over
    # parts of the id range (on BIN_IVF_FLAT, k-NN searches filtered here).
    monkeypatch.setattr(milvus_search, "MAX_TOPK", 64)
    monkeypatch.setattr(milvus_search, "_FIRST_LIMIT", 16)
    codes, ids, queries = data
    want = _assert_exact(ivf, queries[:1], codes, ids, k=40, radius=3)
    assert np.sum(want[0][0] <= 3) > 64


def test_ivf_with_one_list_probed_misses_but_distances_are_true(ivf, data):
    codes, ids, queries = data
    ivf.nprobe = 1
    try:
        distances, found = ivf.search(queries, k=10)
        result = ivf.range_search(queries, radius=14)
    finally:
        ivf.nprobe = NLIST
    want = reference.ranking(codes, ids, queries)
    position = {int(i): p for p, i in enumerate(ids)}

    def true_distances(row, some_ids):
        rows = [position[int(i)] for i in some_ids]
        return reference.hamming(queries[row : row + 1], codes[rows])[0]

    recall = []
    for row, (want_d, want_i) in enumerate(want):
        real = found[row] != PAD_ID
        assert np.all(distances[row][~real] == BITS + 1)
        got_d = distances[row][real]
        np.testing.assert_array_equal(got_d, true_distances(row, found[row][real]))
        assert np.all(np.diff(got_d) >= 0)
        recall.append(len(set(found[row].tolist()) & set(want_i[:10].tolist())) / 10)
        got_d, got_i = result[row]
        np.testing.assert_array_equal(got_d, true_distances(row, got_i))
        assert set(got_i.tolist()) <= set(want_i[want_d <= 14].tolist())
    # Random codes have no cluster structure: one list of 32 finds few.
    assert np.mean(recall[8:14]) < 0.9, "nprobe=1 found everything: lists unused?"
    assert np.mean(recall) < 1


def test_ivf_delete_and_upsert(ivf, data):
    codes, ids, queries = data
    extremes = [3, 2, 1, 0]  # 2**63 - 2, -2**63 + 1, 0, -1
    np.testing.assert_array_equal(ivf.get(ids[extremes]), codes[extremes])
    try:
        assert ivf.delete(np.concatenate([ids[:50], [12345]])) == 50
        assert ivf.ntotal == len(codes) - 50
        new = codes[100:110] ^ np.uint8(0xFF)
        ivf.upsert(new, ids[100:110])
        np.testing.assert_array_equal(ivf.get(ids[100:110]), new)
        assert ivf.ntotal == len(codes) - 50
        changed = codes.copy()
        changed[100:110] = new
        _assert_exact(ivf, queries, changed[50:], ids[50:], k=10, radius=12)
        with pytest.raises(ValueError, match="already in collection"):
            ivf.add(codes[60:61], ids[60:61])
        # Milvus 2.3's queries never return the row of id 2**63 - 1.
        for call in (ivf.add, ivf.upsert):
            with pytest.raises(ValueError, match="before 2.5"):
                call(codes[:1], [2**63 - 1])
        with pytest.raises(ValueError, match="before 2.5"):
            ivf.delete([2**63 - 1])
    finally:  # as it was, for any test after this one
        ivf.upsert(codes[100:110], ids[100:110])
        ivf.delete(ids[:50])
        ivf.add(codes[:50], ids[:50])
    assert ivf.ntotal == len(codes)


def test_bin_flat_on_a_server_is_exact_and_drops(server_uri, data):
    codes, ids, queries = data
    index = MilvusHammingIndex(BITS, server_uri, collection="flat", timeout=60)
    try:
        assert index.index_type == "BIN_FLAT"
        some = np.r_[0:600, N_RANDOM : N_RANDOM + 600]
        index.add(codes[some], ids[some])
        _assert_exact(index, queries, codes[some], ids[some], k=20, radius=14)
        assert index.delete(ids[some[:10]]) == 10
        _assert_exact(index, queries, codes[some[10:]], ids[some[10:]], k=5, radius=6)
        index.drop()
        assert not index._client.has_collection("flat")
        with pytest.raises(ValueError, match="dropped"):
            index.search(queries, 1)
    finally:
        index.close()


def test_reopening_checks_bits_and_index_type(ivf, server_uri):
    with pytest.raises(ValueError, match=r"holds 64-bit codes .* bits=32"):
        MilvusHammingIndex(32, server_uri, collection="ivf")
    with pytest.raises(ValueError, match="BIN_IVF_FLAT index, index_type='BIN_FLAT'"):
        MilvusHammingIndex(BITS, server_uri, collection="ivf", index_type="BIN_FLAT")
    with MilvusHammingIndex(BITS, server_uri, collection="ivf") as again:
        assert again.index_type == "BIN_IVF_FLAT" and again.ntotal == ivf.ntotal


def test_other_schemas_are_refused(server_uri):
    import pymilvus

    kinds = pymilvus.DataType
    client = pymilvus.MilvusClient(server_uri)

    def make(name, fields, metric=None):
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        for field, kind, kwargs in fields:
            schema.add_field(field, kind, **kwargs)
        client.create_collection(name, schema=schema)
        if metric:
            params = client.prepare_index_params()
            params.add_index(
                field_name="v",
                index_type="BIN_IVF_FLAT",
                metric_type=metric,
                params={"nlist": 8},
            )
            client.create_index(name, params)

    key = ("pk", kinds.INT64, {"is_primary": True})
    binary = ("v", kinds.BINARY_VECTOR, {"dim": BITS})
    text_key = ("pk", kinds.VARCHAR, {"is_primary": True, "max_length": 8})
    cases = {
        "floats": "not a collection of binary codes",
        "extra": "needs exactly an INT64 primary key",
        "strings": "needs exactly an INT64 primary key",
        "jaccard": "metric JACCARD, not HAMMING",
        "unindexed": "no index on its field 'v'",
    }
    try:
        make("floats", [key, ("v", kinds.FLOAT_VECTOR, {"dim": 8})])
        make("extra", [key, binary, ("x", kinds.INT64, {})])
        make("strings", [text_key, binary])
        make("jaccard", [key, binary], metric="JACCARD")
        make("unindexed", [key, binary])
        for name, message in cases.items():
            with pytest.raises(ValueError, match=message):
                MilvusHammingIndex(BITS, server_uri, collection=name)
            assert client.has_collection(name)  # refused, left alone
    finally:
        for name in cases:
            client.drop_collection(name)
        client.close()
