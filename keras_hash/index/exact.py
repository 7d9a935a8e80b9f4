"""HammingIndex: exact k-NN and radius search over packed binary codes.

Results are exact and deterministic: neighbours come by Hamming distance
ascending, ties broken by id ascending, on every backend and thread count.

Two backends give identical results:

- ``"numpy"``, always there: the Hamming kernel of :mod:`keras_hash.codes`
  (XOR and ``np.bitwise_count`` over 64-bit words, the database streamed in
  cache-sized blocks, distances in the narrowest dtype that holds them);
  k-NN keeps, per query, a running distance threshold (the smallest
  distance with at least k items at or below it) so that later blocks yield
  only the few items that can still enter the top k, then one small sort
  by (distance, position) settles ties.
- ``"faiss"`` (``pip install keras-hash[faiss]``): ``faiss.IndexBinaryFlat``.
  Its exact heap scans the database in order and compares (distance, label)
  pairs, so its k-NN ties come out by label. The backend checks this once per
  process on a tie-heavy probe; should a FAISS build break ties otherwise, it
  resolves the boundary exactly: it asks FAISS for the k-th distance ``t``,
  then for every item within ``t`` (a range search) and keeps the k first by
  (distance, position). Range search radii are inclusive here (FAISS's are
  exclusive: the backend passes ``radius + 1``).

Codes are kept sorted by id (a stable sort: ids are unique), so "position in
the index" and "id" order agree and every tie rule is one on positions.

File format (:meth:`HammingIndex.save`): the checked archive of
:mod:`keras_hash.index.file` (three stored ``.npy`` members: a JSON header,
uint8 codes ``[count, bits // 8]``, int64 ids ``[count]`` ascending) with
``magic`` ``"keras_hash.HammingIndex"`` and ``format_version`` 1. Files are
written to a temporary file beside the target, then moved into place with
``os.replace`` (see :mod:`keras_hash.files`: permissions of the umask,
symlinks written through, staging files of killed writers removed).
:meth:`HammingIndex.load` treats the file as untrusted: memory bounded by
the file's size, never ``pickle``, every shape checked against the header
before allocating, the checksum against the data; any fault, and any file
that is not such an archive (a ``.npy``, a text file, a truncated copy),
raises ``ValueError``.

Threads: one index may be shared. A readers-writer lock guards it:
searches, saves and the array properties (``ids``, ``codes``,
``insertion_order``) run together; an ``add`` or ``reset`` waits for them and
runs alone (and new readers wait for a waiting writer). Each call sees the
index wholly before or wholly after a concurrent change, never between.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import threading
from dataclasses import dataclass

import numpy as np

from keras_hash.codes import (
    check_bits,
    check_packed,
    distance_dtype,
    hamming_blocks,
    word_planes,
)
from keras_hash.index.file import (
    MAX_BITS,
    load_archive,
    new_ids,
    save_archive,
)

# Queries per numpy block (the database is streamed in the Hamming kernel's
# blocks, keras_hash.codes.hamming_blocks).
_QUERY_BLOCK = 32
# Database items sampled to guess the k-NN distance limit.
_SAMPLE = 8192


@dataclass(frozen=True)
class RangeResult:
    """Radius-search results for many queries, in CSR layout (as FAISS).

    The neighbours of query ``i`` are ``ids[lims[i]:lims[i + 1]]`` at
    distances ``distances[lims[i]:lims[i + 1]]``, by distance then id.
    Iterating yields one ``(distances, ids)`` pair per query; ``result[i]``
    gives the pair of query ``i``.

    Attributes:
        lims: int64 ``[num_queries + 1]`` offsets.
        distances: int32 ``[lims[-1]]`` Hamming distances.
        ids: int64 ``[lims[-1]]`` ids.
    """

    lims: np.ndarray
    distances: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.lims) - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours of query ``i``; ``i < 0`` counts from the end."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"query index must be an int, got {i!r}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"query index {i} out of range for {n} queries")
        i = int(i) % n
        lo, hi = self.lims[i], self.lims[i + 1]
        return self.distances[lo:hi], self.ids[lo:hi]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def counts(self) -> np.ndarray:
        """Number of neighbours of each query (int64 ``[num_queries]``)."""
        return np.diff(self.lims)


def read_only(attribute: str, doc: str) -> property:
    """A read-only property that returns ``self.<attribute>``.

    Example: ``bits = read_only("_bits", "Code length K in bits.")``.
    """
    return property(operator.attrgetter(attribute), doc=doc)


class InMemoryIndex:
    """What the in-memory indexes share: bits, sorted unique ids, the lock.

    Subclasses (:class:`HammingIndex`, :class:`~keras_hash.index.ivf.
    IVFHammingIndex`) keep ``_ids`` sorted ascending, take ``_lock`` once per
    public call (reading for searches, writing for changes) and list their
    repr fields in ``_describe()``.
    """

    def __init__(self, bits: int):
        self._bits = check_bits(bits)
        if self._bits > MAX_BITS:
            raise ValueError(f"bits must be at most {MAX_BITS}, got {self._bits}")
        self._lock = _ReadWriteLock()
        self._ids = np.zeros(0, np.int64)  # sorted: uniqueness and default ids

    bits = read_only("_bits", "Code length K in bits.")

    @property
    def ntotal(self) -> int:
        """Number of codes in the index."""
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored codes, ascending (int64, a copy)."""
        with self._lock.reading():
            return self._ids.copy()

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{key}={value!r}" for key, value in self._describe().items()
        )
        return f"{type(self).__name__}({fields})"

    def _describe(self) -> dict:
        raise NotImplementedError


class HammingIndex(InMemoryIndex):
    """Exact Hamming-distance index over packed binary codes.

    Search is brute force and exact: results come by Hamming distance, ties
    broken by id ascending, identical on the numpy and FAISS backends.

    Example:

    ```python
    import numpy as np
    import keras_hash

    rng = np.random.default_rng(0)
    database = rng.integers(0, 256, size=(10_000, 8), dtype=np.uint8)
    index = keras_hash.HammingIndex(bits=64)
    index.add(database)
    distances, ids = index.search(database[:5], k=10)   # [5, 10] each
    within = index.range_search(database[:5], radius=2)
    d0, ids0 = within[0]                                 # neighbours of query 0
    index.save("codes.khi")
    same = keras_hash.HammingIndex.load("codes.khi")
    ```

    Args:
        bits: code length K, a positive multiple of 8.
        backend: ``"numpy"``, ``"faiss"`` (needs ``faiss-cpu``) or
            ``"auto"`` (FAISS when importable, else numpy). Defaults to
            ``"auto"``.

    Ids are int64: integers outside ``-2**63 .. 2**63 - 1`` (``uint64``
    above ``2**63 - 1``, Python ints beyond 64 bits) are refused, never
    wrapped.
    One index may be shared by threads (module doc: searches run together,
    ``add`` and ``reset`` alone).
    """

    MAGIC = "keras_hash.HammingIndex"
    FORMAT_VERSION = 1

    def __init__(self, bits: int, backend: str = "auto"):
        super().__init__(bits)
        self._backend_name = _resolve_backend(backend)
        self._codes = np.zeros((0, self._bits // 8), np.uint8)
        self._added = np.zeros(0, np.int64)  # insertion rank of each code
        self._backend = _make_backend(self._backend_name, self._bits)

    backend = read_only(
        "_backend_name", 'The backend in use, ``"numpy"`` or ``"faiss"``.'
    )

    @property
    def insertion_order(self) -> np.ndarray:
        """Insertion rank of each stored code, in id order (int64, a copy).

        ``insertion_order[p] = r``: the code at position ``p`` (the ``p``-th
        smallest id) was the ``r``-th added (0 = first), counting rows across
        :meth:`add` calls. So ``labels[index.insertion_order]`` puts labels
        given in insertion order into id order. With default ids the two
        orders agree; after :meth:`load`, insertion order is id order.
        """
        with self._lock.reading():
            return self._added.copy()

    @property
    def codes(self) -> np.ndarray:
        """Stored packed codes in id order (uint8 ``[ntotal, bits // 8]``)."""
        with self._lock.reading():
            return self._codes.copy()

    def _describe(self) -> dict:
        return {
            "bits": self._bits,
            "ntotal": self.ntotal,
            "backend": self._backend_name,
        }

    def add(self, codes: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Adds packed codes, with ids or with the next free ones.

        Args:
            codes: uint8 ``[n, bits // 8]`` packed codes (see
                :func:`keras_hash.pack_codes`).
            ids: optional integer ``[n]`` ids in ``-2**63 .. 2**63 - 1``
                (int64), unique across the index. Defaults to ``max(existing ids) + 1``
                onwards (``0, 1, ...`` on an empty index).
        """
        codes = check_packed(codes, bits=self._bits)
        with self._lock.writing():
            self._add(codes, ids)

    def _add(self, codes: np.ndarray, ids) -> None:
        ids = new_ids(ids, len(codes), self._ids)
        if len(ids) == 0:
            return
        appended = self.ntotal == 0 or ids[0] > self._ids[-1]
        added = np.arange(self.ntotal, self.ntotal + len(ids), dtype=np.int64)
        self._codes = np.concatenate([self._codes, codes])
        self._ids = np.concatenate([self._ids, ids])
        self._added = np.concatenate([self._added, added])
        if appended and np.all(ids[1:] > ids[:-1]):
            self._backend.append(codes)
            return
        order = np.argsort(self._ids, kind="stable")
        self._ids, self._codes = self._ids[order], self._codes[order]
        self._added = self._added[order]
        self._backend.reset(self._codes)

    def reset(self) -> None:
        """Removes every code."""
        with self._lock.writing():
            self._reset()

    def _reset(self) -> None:
        self._codes = self._codes[:0]
        self._ids = self._ids[:0]
        self._added = self._added[:0]
        self._backend.reset(self._codes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Finds the k nearest codes of each query.

        Args:
            queries: uint8 ``[q, bits // 8]`` packed codes.
            k: number of neighbours, ``1 <= k <= ntotal``.

        Returns:
            ``(distances, ids)``: int32 and int64 arrays ``[q, k]``, each row
            by distance ascending, ties by id ascending (``[0, k]`` for no
            queries).
        """
        with self._lock.reading():
            queries = self._check_queries(queries)
            k = check_k(k, self.ntotal)
            if len(queries) == 0:
                return np.zeros((0, k), np.int32), np.zeros((0, k), np.int64)
            distances, positions = self._backend.knn(queries, k)
            return distances, self._ids[positions]

    def range_search(self, queries: np.ndarray, radius: int) -> RangeResult:
        """Finds every code within a Hamming radius (inclusive) of each query.

        Args:
            queries: uint8 ``[q, bits // 8]`` packed codes.
            radius: the largest distance returned, an int ``>= 0``.

        Returns:
            A :class:`RangeResult` (CSR ``lims``, ``distances``, ``ids``);
            each query's neighbours come by distance, then id. No queries
            give an empty result (``lims == [0]``).
        """
        with self._lock.reading():
            queries = self._check_queries(queries)
            radius = check_radius(radius, self._bits)
            if len(queries) == 0:
                return RangeResult(
                    np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
                )
            lims, distances, positions = self._backend.range(queries, radius)
            return RangeResult(lims, distances, self._ids[positions])

    def save(self, path: str | os.PathLike) -> None:
        """Writes the index to ``path`` atomically (format in the module doc)."""
        with self._lock.reading():
            codes, ids = self._codes, self._ids
        header = {
            "magic": self.MAGIC,
            "format_version": self.FORMAT_VERSION,
            "bits": self._bits,
            "count": len(ids),
        }
        save_archive(path, header, codes, ids)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto") -> HammingIndex:
        """Reads an index written by :meth:`save`, checking it throughout.

        Args:
            path: the file.
            backend: as in the constructor.

        Raises:
            ValueError: the file is not a HammingIndex file (an ``.npy``, a
                foreign ``.npz``, any other file), or is truncated, corrupt,
                of an unknown format version, or holds members, encodings
                or shapes the writer does not produce. Memory stays bounded
                by the file's size (module doc).
        """
        header, codes, ids = load_archive(
            path, magic=cls.MAGIC, format_version=cls.FORMAT_VERSION, kind=cls.__name__
        )
        index = cls(header["bits"], backend=backend)
        if len(ids):
            index.add(codes, ids)
        return index

    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = check_packed(queries, bits=self._bits, name="queries")
        if self.ntotal == 0:
            raise ValueError("the index is empty: add codes before searching")
        return queries


def check_k(k, ntotal: int) -> int:
    """The number of neighbours ``k`` as an int in ``1 .. ntotal``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}")
    if not 1 <= k <= ntotal:
        raise ValueError(f"k must be between 1 and the index size {ntotal}, got {k}")
    return int(k)


def check_radius(radius, bits: int) -> int:
    """A search radius as an int ``>= 0``, capped at ``bits`` (all codes)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"radius must be an int, got {radius!r}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return min(int(radius), bits)


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer stops new readers.

    Not reentrant: a holder must not acquire it again (the index's public
    methods take it once, their helpers never).
    """

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def reading(self):
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
                if not self._writers_waiting:
                    self._cond.notify_all()  # readers held back by this writer
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _resolve_backend(backend: str) -> str:
    if backend not in ("auto", "numpy", "faiss"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'faiss', got {backend!r}")
    if backend == "auto":
        return "faiss" if _faiss_module() is not None else "numpy"
    if backend == "faiss" and _faiss_module() is None:
        raise ImportError(
            "backend='faiss' needs faiss-cpu: pip install keras-hash[faiss]"
        )
    return backend


@functools.cache
def _faiss_module():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _make_backend(name: str, bits: int):
    if name == "faiss":
        return _FaissBackend(bits)
    return _NumpyBackend(bits)


# ---------------------------------------------------------------------------
# numpy backend


class _NumpyBackend:
    """Blocked XOR + popcount over word planes ``[words, N]``."""

    def __init__(self, bits: int):
        self.bits = bits
        self.dtype = distance_dtype(bits)  # also holds bits + 1, "no limit"
        self._codes = np.zeros((0, bits // 8), np.uint8)
        self._planes = None

    def reset(self, codes: np.ndarray) -> None:
        self._codes = codes
        self._planes = None

    def append(self, codes: np.ndarray) -> None:
        self.reset(np.concatenate([self._codes, codes]))

    def planes(self) -> np.ndarray:
        if self._planes is None:
            self._planes = word_planes(self._codes)
        return self._planes

    def knn(self, queries: np.ndarray, k: int):
        planes = self.planes()
        qplanes = word_planes(queries)
        out_d = np.empty((len(queries), k), np.int32)
        out_p = np.empty((len(queries), k), np.int64)
        for q0 in range(0, len(queries), _QUERY_BLOCK):
            chunk = slice(q0, q0 + _QUERY_BLOCK)
            out_d[chunk], out_p[chunk] = self._knn_chunk(qplanes[:, chunk], planes, k)
        return out_d, out_p

    def _knn_chunk(self, qplanes, planes, k):
        found = self._scan(qplanes, planes, k, self._guess_limit(qplanes, planes, k))
        if np.any(found.counts() < k):  # the guess was too tight: no guess
            found = self._scan(qplanes, planes, k, None)
        return found.top_k()

    def _scan(self, qplanes, planes, k, limit):
        """Streams the database, keeping what can still be in the top k."""
        n_queries = qplanes.shape[1]
        if limit is None:
            limit = np.full(n_queries, self.bits + 1, self.dtype)  # keep d < limit
        found = _Candidates(n_queries, self.bits, k, self.dtype)
        budget = 2 * k * n_queries
        for j0, dist in hamming_blocks(qplanes, planes, self.dtype):
            found.extend(dist < limit[:, None], dist, j0)
            if found.size > budget:
                limit = np.minimum(limit, found.prune())
                budget = max(budget, 2 * found.size)  # amortised pruning
        found.prune()
        return found

    def _guess_limit(self, qplanes, planes, k):
        """A strict distance limit from a strided sample, or None.

        The limit keeps, per query, items up to the distance where the sample
        predicts k items plus a 4-sigma margin, so the first blocks already
        yield few candidates. It is only a guess: a query that ends with fewer
        than k candidates is searched again without it.
        """
        n = planes.shape[1]
        if n < 8 * _SAMPLE:
            return None
        sample = np.ascontiguousarray(planes[:, :: n // _SAMPLE])
        expect = k * sample.shape[1] / n
        rank = int(expect + 4 * np.sqrt(expect) + 8)
        if rank >= sample.shape[1]:
            return None
        dist = np.concatenate(
            [d.copy() for _, d in hamming_blocks(qplanes, sample, self.dtype)], 1
        )
        # A stable sort of small ints is numpy's radix sort: cheaper than partition.
        guess = np.sort(dist, axis=1, kind="stable")[:, rank].astype(np.int64) + 1
        return np.minimum(guess, self.bits + 1).astype(self.dtype)

    def range(self, queries: np.ndarray, radius: int):
        planes = self.planes()
        qplanes = word_planes(queries)
        rows, dist, pos = [], [], []
        for q0 in range(0, len(queries), _QUERY_BLOCK):
            chunk = qplanes[:, q0 : q0 + _QUERY_BLOCK]
            found = _Candidates(chunk.shape[1], self.bits, 0, self.dtype)
            for j0, block in hamming_blocks(chunk, planes, self.dtype):
                found.extend(block <= radius, block, j0)
            r, d, p = found.sorted()
            rows.append(r + q0)
            dist.append(d)
            pos.append(p)
        rows = np.concatenate(rows)
        lims = np.zeros(len(queries) + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=len(queries)), out=lims[1:])
        return lims, np.concatenate(dist).astype(np.int32), np.concatenate(pos)


class _Candidates:
    """Per-query candidate (distance, position) pairs, in scan order."""

    def __init__(self, n_queries: int, bits: int, k: int, dtype):
        self.n_queries, self.bits, self.k, self.dtype = n_queries, bits, k, dtype
        self.rows, self.dist, self.pos = [], [], []
        self.size = 0

    def extend(self, mask: np.ndarray, dist: np.ndarray, start: int) -> None:
        flat = np.flatnonzero(mask)
        if flat.size == 0:
            return
        rows, cols = np.divmod(flat, mask.shape[1])
        self.rows.append(rows)
        self.dist.append(dist.ravel()[flat])
        self.pos.append(cols + start)
        self.size += flat.size

    def _merged(self):
        if not self.rows:
            empty = np.zeros(0, np.int64)
            return empty, empty.astype(self.dtype), empty
        rows = np.concatenate(self.rows)
        dist = np.concatenate(self.dist)
        pos = np.concatenate(self.pos)
        return rows, dist, pos

    def prune(self) -> np.ndarray:
        """Keeps what can still be in the top k; returns the strict limits.

        ``t`` is the smallest distance with at least k candidates at or below
        it. Candidates beyond ``t`` are out for good, and so is any later item
        at distance ``t`` (k earlier items already rank before it).
        """
        rows, dist, pos = self._merged()
        width = self.bits + 1
        hist = np.bincount(rows * width + dist, minlength=self.n_queries * width)
        cum = np.cumsum(hist.reshape(self.n_queries, width), axis=1)
        enough = cum[:, -1] >= self.k
        t = np.where(enough, np.argmax(cum >= self.k, axis=1), self.bits)
        keep = dist <= t[rows]
        self.rows, self.dist, self.pos = [rows[keep]], [dist[keep]], [pos[keep]]
        self.size = int(keep.sum())
        return np.where(enough, t, self.bits + 1).astype(self.dtype)

    def counts(self) -> np.ndarray:
        rows, _, _ = self._merged()
        return np.bincount(rows, minlength=self.n_queries)

    def sorted(self):
        """Candidates by (query, distance, position).

        Candidates of one query arrive by position, so a stable sort on
        (query, distance) suffices; a 16-bit key takes numpy's radix sort.
        """
        rows, dist, pos = self._merged()
        key = rows * (self.bits + 1) + dist
        if self.n_queries * (self.bits + 1) <= 1 << 16:
            key = key.astype(np.uint16)
        order = np.argsort(key, kind="stable")
        return rows[order], dist[order], pos[order]

    def top_k(self):
        rows, dist, pos = self.sorted()
        starts = np.searchsorted(rows, np.arange(self.n_queries))
        take = starts[:, None] + np.arange(self.k)
        return dist[take].astype(np.int32), pos[take]


# ---------------------------------------------------------------------------
# FAISS backend


class _FaissBackend:
    """``faiss.IndexBinaryFlat`` whose labels are positions in the index."""

    def __init__(self, bits: int):
        self.bits = bits
        self.faiss = _faiss_module()
        self.index = self.faiss.IndexBinaryFlat(bits)
        self.index.use_heap = True
        self.exact_ties = None  # whether FAISS ranks k-NN ties by label

    def reset(self, codes: np.ndarray) -> None:
        self.index.reset()
        self.append(codes)

    def append(self, codes: np.ndarray) -> None:
        if len(codes):
            self.index.add(codes)

    def knn(self, queries: np.ndarray, k: int):
        distances, labels = self.index.search(queries, k)
        distances, labels = _sort_rows(distances, labels, self.index.ntotal)
        if self.exact_ties is None:
            self.exact_ties = _faiss_ties_by_label()
        if not self.exact_ties:
            distances, labels = self._resolve_boundary(queries, distances, k)
        return distances, labels

    def _resolve_boundary(self, queries, distances, k):
        """Exact top k from the k-th distance: every item within it, sorted."""
        lims, dist, labels = self.range(queries, distances[:, -1])
        take = lims[:-1, None] + np.arange(k)
        return dist[take], labels[take]

    def range(self, queries: np.ndarray, radius):
        radii = np.broadcast_to(np.asarray(radius), len(queries))
        parts = [self._range_one_radius(queries, radii, r) for r in np.unique(radii)]
        rows = np.concatenate([p[0] for p in parts])
        dist = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
        order = np.lexsort((labels, dist, rows))
        lims = np.zeros(len(queries) + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=len(queries)), out=lims[1:])
        return lims, dist[order].astype(np.int32), labels[order].astype(np.int64)

    def _range_one_radius(self, queries, radii, radius):
        which = np.flatnonzero(radii == radius)
        # FAISS's radius is exclusive: distance < radius + 1 is distance <= radius.
        lims, dist, labels = self.index.range_search(queries[which], int(radius) + 1)
        rows = np.repeat(which, np.diff(lims).astype(np.int64))
        return rows, dist, labels


def _sort_rows(distances, labels, ntotal):
    """Sorts each row by (distance, label); a no-op check when already so."""
    key = distances.astype(np.int64) * max(ntotal, 1) + labels
    if np.all(key[:, 1:] >= key[:, :-1]):
        return distances, labels
    order = np.argsort(key, axis=1, kind="stable")
    return (
        np.take_along_axis(distances, order, 1),
        np.take_along_axis(labels, order, 1),
    )


@functools.cache
def _faiss_ties_by_label() -> bool:
    """Whether FAISS k-NN keeps, among ties at the k-th distance, the lowest labels.

    Probed once per process on 8-bit codes (every distance tied hundreds of
    times) against the numpy backend.
    """
    rng = np.random.default_rng(0)
    database = rng.integers(0, 256, size=(3000, 1), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(40, 1), dtype=np.uint8)
    index = _faiss_module().IndexBinaryFlat(8)
    index.add(database)
    got_d, got_l = index.search(queries, 700)
    got_d, got_l = _sort_rows(got_d, got_l, len(database))
    reference = _NumpyBackend(8)
    reference.reset(database)
    want_d, want_l = reference.knn(queries, 700)
    return bool(np.array_equal(got_d, want_d) and np.array_equal(got_l, want_l))
