"""IVFHammingIndex: approximate k-NN over packed binary codes (FAISS IVF).

An inverted-file index (``faiss.IndexBinaryIVF``): k-means puts ``nlist``
centroids among the codes (:meth:`IVFHammingIndex.train`), each code goes to
the list of its nearest centroid, and a search scans only the ``nprobe``
lists whose centroids lie nearest the query. Cost per query falls roughly as
``nprobe / nlist``; recall rises with ``nprobe`` and reaches exactly the
brute-force result at ``nprobe = nlist``. Needs ``pip install
keras-hash[faiss]`` (FAISS is imported when an index is made).

Same API as :class:`keras_hash.HammingIndex` (``add(codes, ids)``,
``search``, ``range_search``, ``get``, ``ntotal``, ``bits``, ``save``, ``load``, the
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
lists; no id map), unique, defaulting to ``max(ids) + 1`` onwards. A copy
of the codes in id order (``bits / 8`` bytes each) answers :meth:`get`.

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

from keras_hash.arguments import check_int
from keras_hash.codes import check_packed
from keras_hash.index.base import (
    FAISS_HINT,
    MIN_ID,
    InMemoryIndex,
    check_nprobe,
    keep_within,
    new_ids,
    read_only,
)
from keras_hash.index.file import load_archive, save_archive

# Extra results fetched past k to see whether the k-th distance ties further.
_MARGIN = 16
# Upper bound (codes in the probed lists, summed over queries) of one range
# search call: bounds the memory of its results (12 bytes per result).
_RANGE_BUDGET = 1 << 22
_DEFAULT_NPROBE = 16


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError(f"IVFHammingIndex needs faiss-cpu: {FAISS_HINT}") from e
    return faiss


def _auto_nlist(n: int) -> int:
    """``sqrt(n)`` rounded to a power of two, at most ``n``."""
    return int(min(n, 2 ** round(np.log2(max(n, 1)) / 2)))


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
        nprobe: lists scanned per query, ``1 <= nprobe <= nlist`` (with
            ``nlist=None``, checked when ``train`` picks ``nlist``). Defaults
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
        self._nlist = (
            None
            if nlist is None
            else check_int(nlist, "nlist", minimum=1, maximum=2**31 - 1)
        )
        self._niter = check_int(niter, "niter", minimum=1)
        self._max_train = check_int(max_train_per_list, "max_train_per_list", minimum=1)
        self._seed = check_int(seed, "seed", minimum=0, maximum=2**31 - 1)
        self._faiss = _faiss()
        self._auto_nprobe = nprobe is None
        self._nprobe = (
            _DEFAULT_NPROBE
            if nprobe is None
            else check_int(nprobe, "nprobe", minimum=1)
        )
        if self._nlist is not None:
            self._nprobe = self._check_nprobe(self._nprobe, auto=self._auto_nprobe)
        self._quantizer = None
        self._ivf = None
        self._sizes = None  # list sizes, cached between adds
        self._codes = np.zeros((0, self._bits // 8), np.uint8)  # id order, for get

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
        """Bytes held: codes and ids in the lists, centroids, and the copy
        of the codes in id order that :meth:`get` reads."""
        code_size = self._bits // 8
        centroids = self._nlist * code_size if self.is_trained else 0
        return self.ntotal * (2 * code_size + 8) + centroids

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
        if len(codes) == 0:
            raise ValueError("train needs codes to place centroids among, got 0 rows")
        nlist = self._nlist or _auto_nlist(len(codes))
        if not self._auto_nprobe and self._nprobe > nlist:
            raise ValueError(
                f"nprobe={self._nprobe} exceeds nlist={nlist} (picked for "
                f"{len(codes)} codes): pass nlist, or nprobe <= {nlist}"
            )
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
            self._nprobe = min(self._nprobe, nlist)  # a default nprobe, clamped
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
            self._store(np.concatenate([self._ids, ids]), codes)
            self._sizes = None

    def _store(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Keeps ``ids`` sorted, and the codes in that order (for ``get``)."""
        codes = np.concatenate([self._codes, codes])
        order = np.argsort(ids, kind="stable")
        self._ids, self._codes = ids[order], codes[order]

    def reset(self) -> None:
        """Removes every code (the centroids stay)."""
        with self._lock.writing():
            if self._ivf is not None:
                self._ivf.reset()
            self._ids = self._ids[:0]
            self._codes = self._codes[:0]
            self._sizes = None

    # -- raw search (the contract in keras_hash.index.base finishes it) ------

    def _knn_candidates(self, queries: np.ndarray, k: int):
        """A few more than k, so that most rows settle their ties at once."""
        wide = min(self.ntotal, k + max(k, _MARGIN))
        return self._ivf.search(queries, wide)  # empty slots: INT32_MAX, -1

    def _range_candidates(self, queries: np.ndarray, lo: int, hi: int, need=None):
        """Range search in query chunks whose probed lists fit the budget."""
        _, lists = self._quantizer.search(queries, self._nprobe)
        bound = np.cumsum(self._list_sizes()[np.maximum(lists, 0)].sum(1))
        counts, dists, ids = [], [], []
        start = 0
        while start < len(queries):
            base = bound[start - 1] if start else 0
            stop = max(
                start + 1, int(np.searchsorted(bound, base + _RANGE_BUDGET, "right"))
            )
            # FAISS's radius is exclusive: d < hi + 1 is d <= hi.
            lims, d, i = self._ivf.range_search(queries[start:stop], hi + 1)
            counts.append(np.diff(lims).astype(np.int64))
            dists.append(d)
            ids.append(i)
            start = stop
        lims = np.zeros(len(queries) + 1, np.int64)
        np.cumsum(np.concatenate(counts), out=lims[1:])
        found = lims, np.concatenate(dists), np.concatenate(ids)
        return keep_within(*found, lo) if lo > 0 else found

    def _list_sizes(self) -> np.ndarray:
        if self._sizes is None:
            lists = self._ivf.invlists
            self._sizes = np.array(
                [lists.list_size(i) for i in range(self._nlist)], np.int64
            )
        return self._sizes

    # -- checks ---------------------------------------------------------------

    def _check_nprobe(self, value, auto: bool = False) -> int:
        if auto and self._nlist is not None:
            return min(check_int(value, "nprobe", minimum=1), self._nlist)
        return check_nprobe(value, self._nlist)

    def _searchable(self) -> int:
        if self._ivf is None:
            raise ValueError("the index is not trained: call train(codes), then add")
        return super()._searchable()

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
        index._store(item_ids.astype(np.int64), stored)
        return index


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
