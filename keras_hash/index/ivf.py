"""IVFHammingIndex: approximate k-NN over packed binary codes (FAISS IVF).

An inverted-file index (``faiss.IndexBinaryIVF``): k-means puts ``nlist``
centroids among the codes (:meth:`IVFHammingIndex.train`), each code goes to
the list of its nearest centroid, and a search scans only the ``nprobe``
lists whose centroids lie nearest the query. Cost per query falls roughly as
``nprobe / nlist``; recall rises with ``nprobe`` and reaches exactly the
brute-force result at ``nprobe = nlist``. Needs ``pip install
keras-hash[faiss]`` (FAISS is imported when an index is made).

Same API as :class:`keras_hash.HammingIndex` (``add(codes, ids)``,
``search``, ``range_search``, ``ntotal``, ``bits``, ``save``, ``load``, the
same input checks), plus ``train`` and the search knob ``nprobe``, settable
at any time. Which method to use, with measurements: ``docs/approximate_index.md``
(FAISS's binary HNSW and multi-hash indexes were measured too and are not
offered: far lower recall at the same speed on clustered and random codes).

Results are exact over the codes the probed lists hold: distances are true
Hamming distances, and each row holds the k nearest of the probed codes by
distance ascending, ties broken by id ascending (FAISS alone keeps, among
ties, the first it scans; the index fetches a few more than k and, for a
query whose extra results tie with the k-th, settles the boundary with a
range search over the same lists). So ``nprobe = nlist`` gives exactly
:meth:`HammingIndex.search`. A query whose probed lists hold fewer than k
codes gets its row padded with id :data:`PAD_ID` (``-2**63``, refused as an
id) at distance ``bits + 1``, as in :mod:`keras_hash.index.milvus`.

Ids are int64 from ``-2**63 + 1`` to ``2**63 - 1`` (FAISS stores them in the
lists; no id map), unique, defaulting to ``max(ids) + 1`` onwards.

File format (:meth:`IVFHammingIndex.save`): the checked archive of
:mod:`keras_hash.index.file` (three stored ``.npy`` members, read by its
checked reader: bounded memory, no ``pickle``, shapes checked against the
header before any read), with the inverted lists laid out inside:

- ``header.npy``: UTF-8 JSON with ``magic`` (``"keras_hash.IVFHammingIndex"``),
  ``format_version`` (1), ``bits``, ``count``, ``nlist``, ``nprobe``,
  ``niter``, ``max_train_per_list``, ``seed`` and ``sha256`` of the codes
  bytes followed by the ids bytes (little-endian);
- ``codes.npy``: uint8 ``[nlist + count, bits // 8]``: the ``nlist``
  centroids, then the codes list by list (list 0 first), each list in its
  stored order;
- ``ids.npy``: int64 ``[count + nlist]``: the ids of those codes, then the
  ``nlist`` list sizes.

:meth:`IVFHammingIndex.load` checks the header, sizes (non-negative, summing
to ``count``), ids (in range and unique) and checksum, then rebuilds the
FAISS index from these arrays: the centroids go into a flat quantizer and
each list gets its codes back in order (``add_core`` with the stored list
numbers), with no k-means and no nearest-centroid search, so the loaded
index is the saved one, list contents and order included. FAISS's own
serializer (``faiss.read_index_binary``) never sees the file's bytes. Any
fault raises ``ValueError``. Loading takes about 0.15 s for 1M 64-bit codes
and 2 s for 10M (measured, ``docs/approximate_index.md``).

Threads: a readers-writer lock as in :class:`HammingIndex` (searches
together; ``train``, ``add``, ``reset`` and setting ``nprobe`` alone). FAISS
runs each search on its OpenMP threads.

Example:

```python
import numpy as np
import keras_hash
from keras_hash.index import IVFHammingIndex

rng = np.random.default_rng(0)
centres = rng.integers(0, 256, size=(100, 8), dtype=np.uint8)
bits = np.unpackbits(centres[rng.integers(0, 100, 50_000)], axis=1)
codes = np.packbits(bits ^ (rng.random(bits.shape) < 0.1), axis=1)
index = IVFHammingIndex(bits=64, nlist=256, nprobe=8)
index.train(codes)
index.add(codes)
distances, ids = index.search(codes[:5], k=10)   # [5, 10] each
index.nprobe = 256                               # = nlist: exact
index.save("codes.khivf")
same = IVFHammingIndex.load("codes.khivf")
```
"""

from __future__ import annotations

import functools
import os

import numpy as np

from keras_hash.codes import check_packed
from keras_hash.index.exact import (
    InMemoryIndex,
    RangeResult,
    check_k,
    check_radius,
    read_only,
)
from keras_hash.index.file import load_archive, new_ids, save_archive

#: Id of padding in k-NN rows whose probed lists held fewer than k codes.
PAD_ID = -(2**63)
#: Range of ids (``PAD_ID`` is refused).
MIN_ID = PAD_ID + 1
INSTALL_HINT = "pip install keras-hash[faiss]"

# Extra results fetched past k to see whether the k-th distance ties further.
_MARGIN = 16
# Upper bound (codes in the probed lists, summed over queries) of one range
# search call: bounds the memory of its results (12 bytes per result).
_RANGE_BUDGET = 1 << 22
_DEFAULT_NPROBE = 16
# FAISS's distance of an empty heap slot (INT32_MAX); anything > bits.
_EMPTY = np.iinfo(np.int32).max


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError(f"IVFHammingIndex needs faiss-cpu: {INSTALL_HINT}") from e
    return faiss


def _auto_nlist(n: int) -> int:
    """``sqrt(n)`` rounded to a power of two, at most ``n``."""
    return int(min(n, 2 ** round(np.log2(max(n, 1)) / 2)))


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class IVFHammingIndex(InMemoryIndex):
    """Approximate Hamming k-NN: inverted lists over k-means centroids.

    Train on a sample of codes, add codes, then search; ``nprobe`` (lists
    scanned per query) trades speed for recall and may be changed at any
    time. Each row holds the nearest of the scanned codes, by distance then
    id, with true Hamming distances; ``nprobe = nlist`` is exact.

    Example:

    ```python
    index = IVFHammingIndex(bits=64, nprobe=16)   # nlist ~ sqrt(n) at train
    index.train(codes)            # k-means on up to nlist * 64 codes
    index.add(codes, ids)
    distances, ids = index.search(queries, k=10)
    index.nprobe = 32             # more recall, fewer queries/s
    ```

    Args:
        bits: code length K, a positive multiple of 8.
        nlist: number of lists (centroids); ``train`` needs at least
            ``nlist`` codes. Defaults to ``sqrt(n)`` rounded to a power of
            two, ``n`` the number of codes given to ``train`` (1,024 at 1M,
            4,096 at 10M; docs/approximate_index.md).
        nprobe: lists scanned per query, ``1 <= nprobe <= nlist``. Defaults
            to ``min(16, nlist)``.
        niter: k-means iterations. Defaults to 20.
        max_train_per_list: ``train`` uses at most ``nlist *
            max_train_per_list`` codes (a seeded sample). Defaults to 64.
        seed: seed of the sample and of k-means. Defaults to 0.
    """

    MAGIC = "keras_hash.IVFHammingIndex"
    FORMAT_VERSION = 1

    def __init__(
        self,
        bits: int,
        nlist: int | None = None,
        nprobe: int | None = None,
        *,
        niter: int = 20,
        max_train_per_list: int = 64,
        seed: int = 0,
    ):
        super().__init__(bits)
        self._nlist = None if nlist is None else _positive_int(nlist, "nlist")
        self._niter = _positive_int(niter, "niter")
        self._max_train = _positive_int(max_train_per_list, "max_train_per_list")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not 0 <= seed < 2**31:
            raise ValueError(f"seed must be in 0 .. 2**31 - 1, got {seed}")
        self._seed = int(seed)
        self._faiss = _faiss()
        self._auto_nprobe = nprobe is None
        self._nprobe = (
            _DEFAULT_NPROBE if nprobe is None else _positive_int(nprobe, "nprobe")
        )
        if self._nlist is not None:
            self._nprobe = self._check_nprobe(self._nprobe, auto=self._auto_nprobe)
        self._quantizer = None
        self._ivf = None
        self._sizes = None  # list sizes, cached between adds

    # -- properties ---------------------------------------------------------

    nlist = read_only(
        "_nlist", "Number of inverted lists (None until ``train`` picks it)."
    )

    @property
    def nprobe(self) -> int:
        """Lists scanned per query (settable, ``1 .. nlist``)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        value = self._check_nprobe(value)
        with self._lock.writing():
            self._nprobe = value
            self._auto_nprobe = False
            if self._ivf is not None:
                self._ivf.nprobe = value

    @property
    def is_trained(self) -> bool:
        """Whether the centroids are set (``train`` or ``load``)."""
        return self._ivf is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the search structure: codes and ids in the lists, centroids."""
        code_size = self._bits // 8
        centroids = self._nlist * code_size if self.is_trained else 0
        return self.ntotal * (code_size + 8) + centroids

    def _describe(self) -> dict:
        return {
            "bits": self._bits,
            "nlist": self._nlist,
            "nprobe": self._nprobe,
            "ntotal": self.ntotal,
        }

    # -- building -----------------------------------------------------------

    def train(self, codes: np.ndarray) -> None:
        """Places the ``nlist`` centroids by k-means on (a sample of) codes.

        Args:
            codes: uint8 ``[n, bits // 8]`` packed codes, ``n >= nlist``; at
                most ``nlist * max_train_per_list`` of them (a seeded sample)
                are used.
        """
        codes = check_packed(codes, bits=self._bits)
        nlist = self._nlist or _auto_nlist(len(codes))
        if len(codes) < nlist:
            raise ValueError(
                f"train needs at least nlist={nlist} codes, got {len(codes)} "
                "(lower nlist)"
            )
        limit = nlist * self._max_train
        if len(codes) > limit:
            rng = np.random.default_rng(self._seed)
            codes = codes[np.sort(rng.choice(len(codes), limit, replace=False))]
        with self._lock.writing():
            if self.ntotal:
                raise ValueError("the index holds codes: train before adding")
            quantizer = self._faiss.IndexBinaryFlat(self._bits)
            ivf = self._faiss.IndexBinaryIVF(quantizer, self._bits, nlist)
            ivf.cp.niter = self._niter
            ivf.cp.seed = self._seed
            ivf.cp.max_points_per_centroid = self._max_train  # we sampled
            ivf.cp.min_points_per_centroid = 1  # no stderr warning on few codes
            ivf.train(np.ascontiguousarray(codes))
            self._nlist = nlist
            self._nprobe = min(self._nprobe, nlist)  # an auto nlist may be small
            self._install(quantizer, ivf)

    def _install(self, quantizer, ivf) -> None:
        ivf.nprobe = self._nprobe
        self._quantizer, self._ivf = quantizer, ivf  # the IVF borrows the quantizer
        self._sizes = None

    def add(self, codes: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Adds packed codes, with ids or with the next free ones.

        Args:
            codes: uint8 ``[n, bits // 8]`` packed codes.
            ids: optional integer ``[n]`` ids in ``-2**63 + 1 .. 2**63 - 1``,
                unique across the index. Defaults to ``max(existing ids) + 1``
                onwards (``0, 1, ...`` on an empty index).
        """
        codes = check_packed(codes, bits=self._bits)
        with self._lock.writing():
            if self._ivf is None:
                raise ValueError("the index is not trained: call train(codes) first")
            ids = new_ids(ids, len(codes), self._ids, MIN_ID, " (-2**63 pads rows)")
            if len(ids) == 0:
                return
            self._ivf.add_with_ids(codes, ids)
            self._ids = np.union1d(self._ids, ids)  # sorted
            self._sizes = None

    def reset(self) -> None:
        """Removes every code (the centroids stay)."""
        with self._lock.writing():
            if self._ivf is not None:
                self._ivf.reset()
            self._ids = self._ids[:0]
            self._sizes = None

    # -- search ---------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`HammingIndex.search` over the codes of the probed lists.

        A row whose probed lists hold fewer than ``k`` codes ends with
        ``PAD_ID`` at distance ``bits + 1``; exact at ``nprobe = nlist``.
        """
        with self._lock.reading():
            queries = self._check_queries(queries)
            k = check_k(k, self.ntotal)
            if len(queries) == 0:
                return np.zeros((0, k), np.int32), np.zeros((0, k), np.int64)
            return self._knn(queries, k)

    def _knn(self, queries: np.ndarray, k: int):
        wide = min(self.ntotal, k + max(k, _MARGIN))
        dist, ids = self._ivf.search(queries, wide)
        dist, ids = _sort_rows(dist, ids)
        out_d, out_i = dist[:, :k].copy(), ids[:, :k].copy()
        t = out_d[:, -1]
        # All probed codes within t are in hand unless the wide row's last
        # one also sits at t (then FAISS may have dropped ties at t).
        tied = np.flatnonzero((t <= self._bits) & (dist[:, -1] == t))
        if wide < self.ntotal and len(tied):
            for r in np.unique(t[tied]):
                rows = tied[t[tied] == r]
                result = self._range(queries[rows], int(r))
                take = result.lims[:-1, None] + np.arange(k)
                out_d[rows], out_i[rows] = result.distances[take], result.ids[take]
        missing = out_d > self._bits
        out_d[missing], out_i[missing] = self._bits + 1, PAD_ID
        return out_d.astype(np.int32), out_i.astype(np.int64)

    def range_search(self, queries: np.ndarray, radius: int) -> RangeResult:
        """Finds every code of the probed lists within a Hamming radius.

        Args:
            queries: uint8 ``[q, bits // 8]`` packed codes.
            radius: the largest distance returned (inclusive), an int ``>= 0``.

        Returns:
            A :class:`keras_hash.index.RangeResult`; each query's neighbours
            come by distance, then id. Exact at ``nprobe = nlist``.
        """
        with self._lock.reading():
            queries = self._check_queries(queries)
            return self._range(queries, check_radius(radius, self._bits))

    def _range(self, queries: np.ndarray, radius: int) -> RangeResult:
        """Range search in query chunks whose probed lists fit the budget."""
        if len(queries) == 0:
            return RangeResult(
                np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
            )
        _, lists = self._quantizer.search(queries, self._nprobe)
        bound = np.cumsum(self._list_sizes()[np.maximum(lists, 0)].sum(1))
        counts, dists, ids = [], [], []
        start = 0
        while start < len(queries):
            base = bound[start - 1] if start else 0
            stop = max(
                start + 1, int(np.searchsorted(bound, base + _RANGE_BUDGET, "right"))
            )
            # FAISS's radius is exclusive: d < radius + 1 is d <= radius.
            lims, d, i = self._ivf.range_search(queries[start:stop], radius + 1)
            counts.append(np.diff(lims).astype(np.int64))
            dists.append(d.astype(np.int32))
            ids.append(i.astype(np.int64))
            start = stop
        counts = np.concatenate(counts)
        dist, ids = np.concatenate(dists), np.concatenate(ids)
        rows = np.repeat(np.arange(len(queries)), counts)
        order = np.lexsort((ids, dist, rows))
        lims = np.zeros(len(queries) + 1, np.int64)
        np.cumsum(counts, out=lims[1:])
        return RangeResult(lims, dist[order], ids[order])

    def _list_sizes(self) -> np.ndarray:
        if self._sizes is None:
            lists = self._ivf.invlists
            self._sizes = np.array(
                [lists.list_size(i) for i in range(self._nlist)], np.int64
            )
        return self._sizes

    # -- checks ---------------------------------------------------------------

    def _check_nprobe(self, value, auto: bool = False) -> int:
        value = _positive_int(value, "nprobe")
        if self._nlist is not None and auto:
            return min(value, self._nlist)
        if self._nlist is not None and value > self._nlist:
            raise ValueError(f"nprobe must be at most nlist={self._nlist}, got {value}")
        return value

    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = check_packed(queries, bits=self._bits, name="queries")
        if self._ivf is None:
            raise ValueError("the index is not trained: call train(codes), then add")
        if self.ntotal == 0:
            raise ValueError("the index is empty: add codes before searching")
        return queries

    # -- files ------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes the index to ``path`` atomically (format in the module doc)."""
        with self._lock.reading():
            if self._ivf is None:
                raise ValueError("the index is not trained: nothing to save")
            code_size = self._bits // 8
            lists = self._ivf.invlists
            sizes = self._list_sizes().copy()
            centroids = self._faiss.vector_to_array(self._quantizer.xb)
            parts_c, parts_i = [centroids.reshape(self._nlist, code_size)], []
            rev = self._faiss.rev_swig_ptr
            for i in np.flatnonzero(sizes):
                size = int(sizes[i])
                parts_c.append(
                    rev(lists.get_codes(int(i)), size * code_size).reshape(size, -1)
                )
                parts_i.append(rev(lists.get_ids(int(i)), size))
            codes = np.concatenate(parts_c)  # copies out of FAISS
            ids = np.concatenate(parts_i + [sizes])
            count = int(sizes.sum())
            header = {
                "magic": self.MAGIC,
                "format_version": self.FORMAT_VERSION,
                "bits": self._bits,
                "count": count,
                "nlist": self._nlist,
                "nprobe": self._nprobe,
                "niter": self._niter,
                "max_train_per_list": self._max_train,
                "seed": self._seed,
            }
        save_archive(path, header, codes, ids)

    @classmethod
    def load(cls, path: str | os.PathLike) -> IVFHammingIndex:
        """Reads an index written by :meth:`save`, checking it throughout.

        Raises:
            ValueError: the file is not an IVFHammingIndex file (a
                HammingIndex file, an ``.npy``, any other file), or is
                truncated, corrupt, of an unknown format version, or holds
                members, encodings, shapes, list sizes or ids the writer
                does not produce. Memory stays bounded by the file's size.
        """
        path = os.fspath(path)
        header, codes, ids = load_archive(
            path,
            magic=cls.MAGIC,
            format_version=cls.FORMAT_VERSION,
            kind="IVFHammingIndex",
            fields=_FIELDS,
            rows=functools.partial(_rows, path),
        )
        _check_lists(path, header, ids)
        nlist, count = header["nlist"], header["count"]
        index = cls(
            header["bits"],
            nlist,
            header["nprobe"],
            niter=header["niter"],
            max_train_per_list=header["max_train_per_list"],
            seed=header["seed"],
        )
        faiss = index._faiss
        centroids, stored = codes[:nlist], np.ascontiguousarray(codes[nlist:])
        item_ids, sizes = np.ascontiguousarray(ids[:count]), ids[count:]
        quantizer = faiss.IndexBinaryFlat(index._bits)
        quantizer.add(np.ascontiguousarray(centroids))
        ivf = faiss.IndexBinaryIVF(quantizer, index._bits, nlist)
        if count:
            # Named arrays: swig_ptr holds no reference to what it points to.
            assign = np.repeat(np.arange(nlist, dtype=np.int64), sizes)
            labels = item_ids.astype(np.int64)
            ivf.add_core(
                count,
                faiss.swig_ptr(stored),
                faiss.swig_ptr(labels),
                faiss.swig_ptr(assign),
            )
        index._install(quantizer, ivf)
        index._ids = np.sort(item_ids).astype(np.int64)
        return index


def _sort_rows(dist: np.ndarray, ids: np.ndarray):
    """Sorts each row by (distance, id); empty slots (INT32_MAX) stay last."""
    order = np.lexsort((ids, dist), axis=-1)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)


# ---------------------------------------------------------------------------
# file format: keras_hash.index.file's checked archive, the lists laid out in it

_FIELDS = ("nlist", "nprobe", "niter", "max_train_per_list", "seed")


def _rows(path: str, header: dict) -> int:
    """Rows of codes and ids (centroids and codes; codes' ids and list sizes)."""
    nlist = header["nlist"]
    if not (1 <= header["nprobe"] <= nlist < 2**31):
        raise ValueError(
            f"{path!r}: header says nlist={nlist}, nprobe={header['nprobe']}"
        )
    if header["niter"] < 1 or header["max_train_per_list"] < 1:
        raise ValueError(f"{path!r}: header knobs out of range")
    if not 0 <= header["seed"] < 2**31:
        raise ValueError(f"{path!r}: header says seed={header['seed']}")
    return header["count"] + nlist


def _check_lists(path: str, header: dict, ids: np.ndarray) -> None:
    count = header["count"]
    sizes = ids[count:]
    if np.any(sizes < 0) or int(sizes.sum(dtype=object)) != count:
        raise ValueError(f"{path!r}: list sizes do not sum to count={count}")
    item_ids = np.sort(ids[:count])
    if count and (item_ids[0] < MIN_ID or np.any(item_ids[1:] == item_ids[:-1])):
        raise ValueError(f"{path!r}: ids are not unique ids in -2**63 + 1 .. 2**63 - 1")
