"""IVFHammingIndex against brute-force numpy references."""

import json
import pickle
import sys
import zipfile

import numpy as np
import pytest

from keras_hash import HammingIndex
from keras_hash.index import PAD_ID, IVFHammingIndex
from tests import reference

pytestmark = pytest.mark.numpy_only
faiss = pytest.importorskip("faiss")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small searches: one thread is fastest and immune to a busy machine.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n, bits, centres, rate, seed):
    """Codes around random centres with each bit flipped at ``rate``."""
    rng = np.random.default_rng(seed)
    middle = rng.integers(0, 2, size=(centres, bits), dtype=np.uint8)
    raw = middle[rng.integers(0, centres, n)]
    return np.packbits(raw ^ (rng.random(raw.shape) < rate), axis=1)


@pytest.fixture(scope="module")
def data():
    """Tie-heavy 32-bit codes (20 centres, 10% flips) with scattered int64 ids."""
    database = clustered(3000, 32, 20, 0.1, seed=1)
    rng = np.random.default_rng(2)
    ids = rng.choice(2**62, size=3000, replace=False).astype(np.int64) - 2**61
    queries = clustered(60, 32, 20, 0.1, seed=3)
    return database, ids, queries


def built(database, ids, nlist=32, nprobe=None):
    index = IVFHammingIndex(32, nlist=nlist, nprobe=nprobe)
    index.train(database)
    index.add(database, ids)
    return index


def test_full_probing_equals_brute_force(data):
    database, ids, queries = data
    index = built(database, ids, nlist=32, nprobe=32)
    # Some queries tie at the k-th distance beyond the k + 16 results fetched
    # first: the boundary (range search) path runs.
    ranked = np.sort(reference.hamming(queries, database), axis=1)
    assert np.any(ranked[:, 10 + 16 - 1] == ranked[:, 10 - 1])
    for k in (1, 10, 300, 3000):
        want_d, want_i = reference.knn(database, ids, queries, k)
        got_d, got_i = index.search(queries, k)
        assert got_d.dtype == np.int32 and got_i.dtype == np.int64
        np.testing.assert_array_equal(got_d, want_d)
        np.testing.assert_array_equal(got_i, want_i)
    result = index.range_search(queries, 4)
    reference.assert_range_equal(result, database, ids, queries, 4)


def test_equals_hamming_index_at_full_probing(data):
    database, ids, queries = data
    index = built(database, ids, nlist=16, nprobe=16)
    exact = HammingIndex(32, backend="numpy")
    exact.add(database, ids)
    for got, want in zip(
        index.search(queries, 50), exact.search(queries, 50), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_partial_probing_is_exact_over_the_probed_lists(data):
    """nprobe < nlist: the k nearest (ties by id) of the codes in probed lists."""
    database, ids, queries = data
    index = built(database, ids, nlist=32, nprobe=3)
    centroids = faiss.vector_to_array(index._quantizer.xb).reshape(32, 4)
    # Each code's list: its nearest centroid (ties: lowest centroid number).
    to_centroid = reference.hamming(database, centroids)
    home = np.array([np.lexsort((np.arange(32), row))[0] for row in to_centroid])
    to_query = reference.hamming(queries, centroids)
    got_d, got_i = index.search(queries, 40)
    for q, row in enumerate(to_query):
        probed = np.lexsort((np.arange(32), row))[:3]
        inside = np.isin(home, probed)
        want_d, want_i = reference.knn(
            database[inside], ids[inside], queries[q : q + 1], 40
        )
        np.testing.assert_array_equal(got_d[q], want_d[0])
        np.testing.assert_array_equal(got_i[q], want_i[0])


def test_returned_distances_are_true_hamming(data):
    database, ids, queries = data
    index = built(database, ids, nlist=32, nprobe=2)
    by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    dist, found = index.search(queries, 10)
    for q in range(len(queries)):
        rows = [by_id[i] for i in found[q]]
        want = reference.hamming(queries[q : q + 1], database[rows])[0]
        np.testing.assert_array_equal(dist[q], want)
        key = list(zip(dist[q].tolist(), found[q].tolist(), strict=True))
        assert key == sorted(key)


def test_rows_are_padded_when_probed_lists_are_short():
    database = clustered(400, 32, 4, 0.05, seed=5)
    index = IVFHammingIndex(32, nlist=8, nprobe=1)
    index.train(database)
    index.add(database)
    dist, found = index.search(database[:5], 400)
    pad = found == PAD_ID
    assert pad.any() and np.all(pad == (dist == 33))
    for q in range(5):  # real results first, then padding
        assert not np.any(np.diff(pad[q].astype(int)) < 0)


def test_recall_at_10_with_default_knobs():
    """64-bit codes near 50 centres (10% flips): nlist=128 (~sqrt(n)), nprobe=16."""
    database = clustered(30_000, 64, 50, 0.1, seed=7)
    queries = clustered(100, 64, 50, 0.1, seed=8)
    index = IVFHammingIndex(64)
    index.train(database)
    index.add(database)
    assert (index.nlist, index.nprobe) == (128, 16)
    _, want = reference.knn(database, np.arange(len(database)), queries, 10)
    _, got = index.search(queries, 10)
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)]
    )
    assert recall >= 0.9, recall


def test_save_load_round_trip(tmp_path, data):
    database, ids, queries = data
    index = built(database, ids, nlist=32, nprobe=4)
    index.save(tmp_path / "a.khivf")
    same = IVFHammingIndex.load(tmp_path / "a.khivf")
    assert (same.bits, same.nlist, same.nprobe, same.ntotal) == (32, 32, 4, 3000)
    np.testing.assert_array_equal(same.ids, np.sort(ids))
    for got, want in zip(
        same.search(queries, 25), index.search(queries, 25), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(
        same.range_search(queries, 3), index.range_search(queries, 3), strict=True
    ):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    same.nprobe = 32  # the rebuilt lists hold every code: exact
    want_d, want_i = reference.knn(database, ids, queries, 10)
    got_d, got_i = same.search(queries, 10)
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_i, want_i)
    same.add(queries[:3])  # default ids after the largest
    assert same.ntotal == 3003 and same.ids[-1] == ids.max() + 3


def test_save_load_empty_trained_index(tmp_path, data):
    database, _, queries = data
    index = IVFHammingIndex(32, nlist=8)
    index.train(database)
    index.save(tmp_path / "e.khivf")
    same = IVFHammingIndex.load(tmp_path / "e.khivf")
    assert same.is_trained and same.ntotal == 0
    same.add(database)
    same.nprobe = 8
    np.testing.assert_array_equal(
        same.search(queries, 5)[0],
        reference.knn(database, np.arange(3000), queries, 5)[0],
    )


def _archive(path, header, codes, ids):
    with open(path, "wb") as f:
        np.savez(
            f,
            header=np.frombuffer(json.dumps(header).encode(), np.uint8),
            codes=codes,
            ids=ids,
        )


def _members(path):
    with np.load(path) as arrays:
        header = json.loads(arrays["header"].tobytes())
        return header, arrays["codes"].copy(), arrays["ids"].copy()


def _resigned(header, codes, ids):
    import hashlib

    digest = hashlib.sha256(codes.tobytes())
    digest.update(ids.astype("<i8").tobytes())
    return dict(header, sha256=digest.hexdigest())


def test_bad_files_raise_value_error(tmp_path, data):
    database, ids, _ = data
    good = tmp_path / "good.khivf"
    built(database[:500], ids[:500], nlist=8).save(good)
    raw = good.read_bytes()
    cases = {
        "truncated": raw[: len(raw) // 2],
        "flipped": raw[:-300] + bytes([raw[-300] ^ 1]) + raw[-299:],
        "pickle": pickle.dumps({"codes": database}),
        "text": b"hello",
        "empty": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "array.npy", database)
    exact = HammingIndex(32, backend="numpy")
    exact.add(database)
    exact.save(tmp_path / "exact.khi")
    header, codes, stored = _members(good)
    codes_changed = codes.copy()
    codes_changed[20, 0] ^= 1  # checksum no longer matches
    _archive(tmp_path / "checksum", header, codes_changed, stored)
    sizes_wrong = stored.copy()
    sizes_wrong[-1] += 1  # list sizes no longer sum to count
    _archive(
        tmp_path / "sizes", _resigned(header, codes, sizes_wrong), codes, sizes_wrong
    )
    dup = stored.copy()
    dup[1] = dup[0]
    _archive(tmp_path / "dup", _resigned(header, codes, dup), codes, dup)
    negative = stored.copy()
    negative[-1], negative[-2] = negative[-1] + 5, -5
    _archive(tmp_path / "neg", _resigned(header, codes, negative), codes, negative)
    _archive(tmp_path / "nprobe", dict(header, nprobe=9), codes, stored)
    _archive(tmp_path / "count", dict(header, count=10**12), codes, stored)
    _archive(tmp_path / "version", dict(header, format_version=2), codes, stored)
    with zipfile.ZipFile(tmp_path / "extra", "w") as z:  # an extra member
        with zipfile.ZipFile(good) as src:
            for info in src.infolist():
                z.writestr(info, src.read(info))
        z.writestr("evil.pkl", pickle.dumps(1))
    names = list(cases) + ["array.npy", "exact.khi", "checksum", "sizes", "dup"]
    names += ["neg", "nprobe", "count", "version", "extra"]
    for name in names:
        with pytest.raises(ValueError):
            IVFHammingIndex.load(tmp_path / name)
    with pytest.raises(ValueError, match="not a HammingIndex file"):
        HammingIndex.load(good)
    with pytest.raises(FileNotFoundError):
        IVFHammingIndex.load(tmp_path / "missing")


def test_bad_inputs(data):
    database, ids, queries = data
    for bits in (0, 7, -8):
        with pytest.raises(ValueError):
            IVFHammingIndex(bits)
    with pytest.raises(TypeError):
        IVFHammingIndex("64")
    for knob in ({"nlist": 0}, {"nprobe": 0}, {"nlist": 4, "nprobe": 5}, {"niter": 0}):
        with pytest.raises(ValueError):
            IVFHammingIndex(32, **knob)
    index = IVFHammingIndex(32, nlist=16)
    with pytest.raises(ValueError, match="not trained"):
        index.search(queries, 1)
    with pytest.raises(ValueError, match="not trained"):
        index.add(database)
    with pytest.raises(ValueError, match="not trained"):
        index.save("unused.khivf")
    with pytest.raises(ValueError, match="at least nlist"):
        index.train(database[:15])
    with pytest.raises(ValueError, match="bytes wide"):
        index.train(database[:, :3])
    with pytest.raises(TypeError, match="uint8"):
        index.train(database.astype(np.int32))
    index.train(database)
    with pytest.raises(ValueError, match="empty"):
        index.search(queries, 1)
    index.add(database[:100], ids[:100])
    with pytest.raises(ValueError, match="bytes wide"):
        index.search(queries[:, :2], 1)
    with pytest.raises(ValueError, match="bytes wide"):
        index.add(np.zeros((3, 8), np.uint8))
    for k in (0, 101):
        with pytest.raises(ValueError, match="k must be between"):
            index.search(queries, k)
    with pytest.raises(TypeError):
        index.search(queries, 2.0)
    with pytest.raises(ValueError, match="radius"):
        index.range_search(queries, -1)
    with pytest.raises(ValueError, match="unique"):
        index.add(database[:2], ids[99:101])
    with pytest.raises(ValueError, match="unique"):
        index.add(database[200:202], [7, 7])
    with pytest.raises(ValueError, match="-2\\*\\*63"):
        index.add(database[200:201], [PAD_ID])
    with pytest.raises(ValueError, match="int64|-2\\*\\*63"):
        index.add(database[200:201], [2**63])
    with pytest.raises(ValueError, match="shape"):
        index.add(database[200:202], [1])
    with pytest.raises(ValueError, match="train before adding"):
        index.train(database)
    for bad in (0, 17):
        with pytest.raises(ValueError, match="nprobe"):
            index.nprobe = bad
    assert index.ntotal == 100  # failed calls changed nothing
    d, i = index.search(queries[:0], 3)
    assert d.shape == (0, 3) and i.shape == (0, 3)


def test_container_properties(data):
    database, ids, _ = data
    index = IVFHammingIndex(32, nlist=16, nprobe=4)
    assert repr(index) == "IVFHammingIndex(bits=32, nlist=16, nprobe=4, ntotal=0)"
    index.train(database)
    index.add(database[:5], ids[:5])
    assert len(index) == index.ntotal == 5 and index.bits == 32
    np.testing.assert_array_equal(index.ids, np.sort(ids[:5]))
    assert repr(index) == "IVFHammingIndex(bits=32, nlist=16, nprobe=4, ntotal=5)"
    for name in ("bits", "nlist", "ntotal", "ids", "is_trained", "nbytes"):
        with pytest.raises(AttributeError):
            setattr(index, name, 1)


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install keras-hash\[faiss\]"):
        IVFHammingIndex(64)
