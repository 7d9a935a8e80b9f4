"""MilvusHammingIndex on a real Milvus server: BIN_IVF_FLAT, by URI.

Milvus Lite (tests/test_milvus.py) serves BIN_FLAT only. Here the embedded
Milvus standalone server of the ``milvus`` package (2.3.5, in the test
extra) runs on 127.0.0.1 for the module, and the index reaches it by URI as
it would any server. Checked against brute-force numpy Hamming distances:
``BIN_IVF_FLAT`` with ``nprobe = nlist`` returns exactly the brute-force
k-NN (ties by id) and range results, also past Milvus's result limit (made
small here); with ``nprobe = 1`` on random codes it misses neighbours (it
really searches the inverted lists) while every distance it returns is
still the true one.

A server searches a segment by brute force until the index built on it is
loaded; the fixture releases and loads the collection after the build so
that the IVF index is what answers (docs/milvus.md).
"""

import time

import numpy as np
import pytest

from keras_hash import milvus as milvus_module
from keras_hash.milvus import PAD_ID, MilvusHammingIndex

pytestmark = pytest.mark.numpy_only  # no Keras session to reset

try:
    from milvus import MilvusServer
except ImportError:  # the test extra installs it; say what is missing
    MilvusServer = None

N, BITS, NLIST = 4000, 64, 32


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory):
    if MilvusServer is None:
        pytest.fail("the embedded Milvus server is missing: pip install milvus==2.3.5")
    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus_server")))
    server.start()  # waits for the health check (about 8 s here)
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()


def _brute(queries, database, ids):
    """Per query: (distances, ids) of every database code, by distance then id."""
    bits_q = np.unpackbits(queries, axis=1).astype(np.int64)
    bits_d = np.unpackbits(database, axis=1).astype(np.int64)
    dist = bits_q @ (1 - bits_d).T + (1 - bits_q) @ bits_d.T
    out = []
    for row in dist:
        order = np.lexsort((ids, row))
        out.append((row[order], ids[order]))
    return out


def _serve_built_index(index, rows):
    """Waits for the index build over ``rows`` codes, then loads it."""
    client, name = index._client, index.collection
    index.flush()
    for _ in range(120):
        info = client.describe_index(name, client.list_indexes(name)[0])
        if int(info.get("indexed_rows", 0)) == rows:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"Milvus did not build the index in 60 s: {info}")
    client.release_collection(name)
    client.load_collection(name)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(N, BITS // 8), dtype=np.uint8)
    codes[N // 2 :: 7] = codes[0]  # ~290 copies: ties at distance 16 below
    ids = rng.choice(np.arange(-(10**9), 10**9), size=N, replace=False) * 3
    queries = np.concatenate([codes[:10] ^ np.uint8(3), codes[-10:]])
    return codes, ids.astype(np.int64), queries


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
    )
    index.add(codes, ids)
    _serve_built_index(index, len(codes))
    yield index
    index.drop()
    index.close()


def test_ivf_with_every_list_probed_is_exact(ivf, data):
    codes, ids, queries = data
    ivf.nprobe = NLIST
    want = _brute(queries, codes, ids)
    distances, found = ivf.search(queries, k=25)
    for row, (want_d, want_i) in enumerate(want):
        np.testing.assert_array_equal(distances[row], want_d[:25])
        np.testing.assert_array_equal(found[row], want_i[:25])
    result = ivf.range_search(queries, radius=22)
    for row, (want_d, want_i) in enumerate(want):
        keep = want_d <= 22
        got_d, got_i = result[row]
        np.testing.assert_array_equal(got_d, want_d[keep])
        np.testing.assert_array_equal(got_i, want_i[keep])


def test_ivf_past_the_result_limit(ivf, data, monkeypatch):
    # At most 64 results per search: the ~290 ties at distance 16 of the
    # first query and its ~300 items within radius 21 need searches over
    # halves of the id range (k-NN searches with an id filter on BIN_IVF_FLAT).
    monkeypatch.setattr(milvus_module, "MAX_TOPK", 64)
    monkeypatch.setattr(milvus_module, "_FIRST_LIMIT", 16)
    codes, ids, queries = data
    want = _brute(queries[:1], codes, ids)
    distances, found = ivf.search(queries[:1], k=40)
    result = ivf.range_search(queries[:1], radius=21)
    for row, (want_d, want_i) in enumerate(want):
        np.testing.assert_array_equal(distances[row], want_d[:40])
        np.testing.assert_array_equal(found[row], want_i[:40])
        keep = want_d <= 21
        np.testing.assert_array_equal(result[row][0], want_d[keep])
        np.testing.assert_array_equal(result[row][1], want_i[keep])
    assert len(result[0][0]) > 64


def test_ivf_with_one_list_probed_misses_but_distances_are_true(ivf, data):
    codes, ids, queries = data
    ivf.nprobe = 1
    try:
        distances, found = ivf.search(queries, k=10)
    finally:
        ivf.nprobe = NLIST
    want = _brute(queries, codes, ids)
    position = {int(i): p for p, i in enumerate(ids)}
    recall = []
    for row in range(len(queries)):
        real = found[row] != PAD_ID
        rows = [position[int(i)] for i in found[row][real]]
        true = np.unpackbits(queries[row] ^ codes[rows], axis=1).sum(axis=1)
        np.testing.assert_array_equal(distances[row][real], true)
        recall.append(len(set(found[row]) & set(want[row][1][:10])) / 10)
    assert np.mean(recall) < 0.9, "nprobe=1 found everything: the IVF lists unused?"


def test_bin_flat_on_a_server_is_exact(server_uri, data):
    codes, ids, queries = data
    with MilvusHammingIndex(BITS, server_uri, collection="flat") as index:
        index.add(codes[:1000], ids[:1000])
        want = _brute(queries, codes[:1000], ids[:1000])
        distances, found = index.search(queries, k=5)
        for row, (want_d, want_i) in enumerate(want):
            np.testing.assert_array_equal(distances[row], want_d[:5])
            np.testing.assert_array_equal(found[row], want_i[:5])
        index.drop()


def test_reopening_with_another_index_type_is_refused(ivf, server_uri):
    with pytest.raises(ValueError, match="BIN_IVF_FLAT"):
        MilvusHammingIndex(BITS, server_uri, collection="ivf", index_type="BIN_FLAT")
    with pytest.raises(ValueError, match="bits"):
        MilvusHammingIndex(32, server_uri, collection="ivf")
