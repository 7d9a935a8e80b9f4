"""The one brute-force Hamming search reference of the test suite.

Written from the definitions alone, independently of ``keras_hash``: packed
codes are unpacked with ``numpy.unpackbits`` (bit ``i`` is byte ``i // 8``,
mask ``0x80 >> (i % 8)``), the distance is the number of differing bits, and
results come by distance ascending, ties by id ascending. Slow on purpose
(``[q, n, bits]`` intermediates): use it on small sets.

Example:

```python
from tests import reference

dist = reference.hamming(queries, database)              # int64 [q, n]
d, i = reference.knn(database, ids, queries, k=5)        # [q, 5] each
lims, d, i = reference.range_search(database, ids, queries, radius=2)
```
"""

import numpy as np


def unpack(codes: np.ndarray) -> np.ndarray:
    """Bits ``[n, 8 * bytes]`` (0/1 uint8) of packed uint8 codes ``[n, bytes]``."""
    codes = np.asarray(codes)
    assert codes.dtype == np.uint8 and codes.ndim == 2, (codes.dtype, codes.shape)
    return np.unpackbits(codes, axis=1)


def hamming(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Hamming distances int64 ``[len(queries), len(database)]``."""
    q, d = unpack(queries), unpack(database)
    assert q.shape[1] == d.shape[1], (q.shape, d.shape)
    if len(q) == 0 or len(d) == 0:
        return np.zeros((len(q), len(d)), np.int64)
    return (q[:, None, :] != d[None, :, :]).sum(axis=2, dtype=np.int64)


def _ids(database, ids) -> np.ndarray:
    if ids is None:
        return np.arange(len(database), dtype=np.int64)
    ids = np.asarray(ids, np.int64)
    assert ids.shape == (len(database),) and len(np.unique(ids)) == len(ids)
    return ids


def ranking(database, ids, queries) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, every item as ``(distances, ids)`` by distance, then id."""
    ids = _ids(database, ids)
    out = []
    for row in hamming(queries, database):
        order = np.lexsort((ids, row))  # last key first: distance, then id
        out.append((row[order], ids[order]))
    return out


def knn(database, ids, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of each query: distances and ids, int64 ``[q, k]``.

    ``ids=None`` means ``0 .. n - 1``; ``k <= len(database)``.
    """
    assert 0 < k <= len(database), (k, len(database))
    rows = ranking(database, ids, queries)
    dist = np.array([d[:k] for d, _ in rows], np.int64).reshape(len(rows), k)
    found = np.array([i[:k] for _, i in rows], np.int64).reshape(len(rows), k)
    return dist, found


def range_search(database, ids, queries, radius: int):
    """Every item within ``radius`` (inclusive), CSR: ``(lims, distances, ids)``.

    Query ``j``'s neighbours are ``ids[lims[j]:lims[j + 1]]``, by distance
    then id, as in FAISS's ``RangeSearchResult``.
    """
    lims, dist, found = [0], [], []
    for d, i in ranking(database, ids, queries):
        keep = d <= radius
        dist.append(d[keep])
        found.append(i[keep])
        lims.append(lims[-1] + int(keep.sum()))
    empty = [np.zeros(0, np.int64)]
    dist = np.concatenate(dist + empty).astype(np.int64)
    found = np.concatenate(found + empty).astype(np.int64)
    return np.array(lims, np.int64), dist, found


def assert_knn_equal(got, database, ids, queries, k: int) -> None:
    """``got = (distances, ids)`` equals :func:`knn` exactly."""
    want_d, want_i = knn(database, ids, queries, k)
    np.testing.assert_array_equal(np.asarray(got[0]), want_d)
    np.testing.assert_array_equal(np.asarray(got[1]), want_i)


def assert_range_equal(got, database, ids, queries, radius: int) -> None:
    """A result with ``lims``, ``distances``, ``ids`` equals :func:`range_search`."""
    lims, dist, found = range_search(database, ids, queries, radius)
    np.testing.assert_array_equal(np.asarray(got.lims), lims)
    np.testing.assert_array_equal(np.asarray(got.distances), dist)
    np.testing.assert_array_equal(np.asarray(got.ids), found)
