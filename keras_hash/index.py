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

File format (:meth:`HammingIndex.save`): an uncompressed ``.npz`` archive
holding exactly three stored (uncompressed) members: ``header.npy`` (UTF-8
JSON as uint8), ``codes.npy`` (uint8 ``[count, bits // 8]``) and ``ids.npy``
(little-endian int64 ``[count]``, ascending).
The header holds ``magic`` (``"keras_hash.HammingIndex"``),
``format_version`` (1), ``bits``, ``count`` and ``sha256`` of the codes bytes
followed by the ids bytes (little-endian). Files are written to a temporary
file beside the target, then moved into place with ``os.replace`` (see
:mod:`keras_hash.files`: permissions of the umask, symlinks written through,
staging files of killed writers removed).

:meth:`HammingIndex.load` treats the file as untrusted and reads it with
memory bounded by the file's size: it parses the zip directory and each
member's ``.npy`` header itself (never ``pickle``), refuses compressed,
unknown or missing members, other dtypes, Fortran order and any shape that
disagrees with the JSON header before allocating, and checks the sizes
declared in the zip against the file and the checksum against the data.
Any such fault, and any file that is not such an archive (a ``.npy``, a
text file, a truncated copy), raises ``ValueError``.

Threads: one index may be shared. A readers-writer lock guards it:
searches, saves and the array properties (``ids``, ``codes``,
``insertion_order``) run together; an ``add`` or ``reset`` waits for them and
runs alone (and new readers wait for a waiting writer). Each call sees the
index wholly before or wholly after a concurrent change, never between.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import struct
import threading
import zipfile
from dataclasses import dataclass

import numpy as np

from keras_hash.codes import (
    check_bits,
    check_packed,
    distance_dtype,
    hamming_blocks,
    word_planes,
)
from keras_hash.files import write_atomic

MAGIC = "keras_hash.HammingIndex"
FORMAT_VERSION = 1

# Queries per numpy block (the database is streamed in the Hamming kernel's
# blocks, keras_hash.codes.hamming_blocks).
_QUERY_BLOCK = 32
# Database items sampled to guess the k-NN distance limit.
_SAMPLE = 8192
#: Largest code length (FAISS keeps dimensions in a C int).
MAX_BITS = 1 << 30
#: Range of ids: they are int64.
MIN_ID, MAX_ID = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
# Members of an index file and their dtypes.
_MEMBERS = {"header": np.uint8, "codes": np.uint8, "ids": np.dtype("<i8")}
_MAX_HEADER_BYTES = 1 << 16


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


class HammingIndex:
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

    def __init__(self, bits: int, backend: str = "auto"):
        self._bits = check_bits(bits)
        if self._bits > MAX_BITS:
            raise ValueError(f"bits must be at most {MAX_BITS}, got {self._bits}")
        self._lock = _ReadWriteLock()
        self._backend_name = _resolve_backend(backend)
        self._codes = np.zeros((0, self._bits // 8), np.uint8)
        self._ids = np.zeros(0, np.int64)
        self._added = np.zeros(0, np.int64)  # insertion rank of each code
        self._backend = _make_backend(self._backend_name, self._bits)

    @property
    def bits(self) -> int:
        """Code length K in bits."""
        return self._bits

    @property
    def ntotal(self) -> int:
        """Number of codes in the index."""
        return len(self._ids)

    @property
    def backend(self) -> str:
        """The backend in use, ``"numpy"`` or ``"faiss"``."""
        return self._backend_name

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored codes, ascending (int64, a copy)."""
        with self._lock.reading():
            return self._ids.copy()

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

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (
            f"HammingIndex(bits={self._bits}, ntotal={self.ntotal}, "
            f"backend={self._backend_name!r})"
        )

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
        ids = self._check_new_ids(ids, len(codes))
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
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise TypeError(f"k must be an int, got {k!r}")
            if not 1 <= k <= self.ntotal:
                raise ValueError(
                    f"k must be between 1 and the index size {self.ntotal}, got {k}"
                )
            if len(queries) == 0:
                return np.zeros((0, int(k)), np.int32), np.zeros((0, int(k)), np.int64)
            distances, positions = self._backend.knn(queries, int(k))
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
            if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
                raise TypeError(f"radius must be an int, got {radius!r}")
            if radius < 0:
                raise ValueError(f"radius must be >= 0, got {radius}")
            radius = min(int(radius), self._bits)
            if len(queries) == 0:
                return RangeResult(
                    np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
                )
            lims, distances, positions = self._backend.range(queries, radius)
            return RangeResult(lims, distances, self._ids[positions])

    def save(self, path: str | os.PathLike) -> None:
        """Writes the index to ``path`` atomically (format in the module doc)."""
        with self._lock.reading():
            codes, ids = self._codes, self._ids.astype("<i8")
        digest = hashlib.sha256(codes.tobytes())
        digest.update(ids.tobytes())
        header = {
            "magic": MAGIC,
            "format_version": FORMAT_VERSION,
            "bits": self._bits,
            "count": len(ids),
            "sha256": digest.hexdigest(),
        }
        arrays = {
            "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
            "codes": codes,
            "ids": ids,
        }
        write_atomic(path, lambda staging: _write_archive(staging, arrays))

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
        path = os.fspath(path)
        header, codes, ids = _read_checked(path)
        index = cls(header["bits"], backend=backend)
        if len(ids):
            index.add(codes, ids)
        return index

    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = check_packed(queries, bits=self._bits, name="queries")
        if self.ntotal == 0:
            raise ValueError("the index is empty: add codes before searching")
        return queries

    def _check_new_ids(self, ids, n: int) -> np.ndarray:
        if ids is None:
            start = int(self._ids[-1]) + 1 if self.ntotal else 0
            if n and start + n - 1 > MAX_ID:
                raise ValueError(
                    f"no {n} free default ids after the largest id {start - 1}: "
                    "ids stop at 2**63 - 1; pass ids"
                )
            return np.arange(start, start + n, dtype=np.int64)
        if isinstance(ids, (list, tuple)) and all(type(i) is int for i in ids):
            ids = np.array(ids, dtype=object)  # numpy would make 2**63 a float
        else:
            ids = np.asarray(ids)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), got shape {ids.shape}")
        if n and ids.dtype == object and all(type(i) is int for i in ids):
            low, high = min(ids), max(ids)  # Python ints beyond 64 bits
        elif n and np.issubdtype(ids.dtype, np.integer):
            low, high = ids.min(), ids.max()
        elif n:
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        if n and not (MIN_ID <= low and high <= MAX_ID):
            raise ValueError(
                f"ids must fit in int64 (-2**63 .. 2**63 - 1), got "
                f"{low if low < MIN_ID else high}"
            )
        ids = ids.astype(np.int64)
        unique, counts = np.unique(np.concatenate([self._ids, ids]), return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"ids must be unique; repeated: {unique[counts > 1][:10]}")
        return ids


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


# ---------------------------------------------------------------------------
# file format


def _write_archive(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def _read_checked(path: str):
    """Reads and checks an index file with memory bounded by its size."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if not zipfile.is_zipfile(file):
                raise ValueError("not an .npz (zip) archive")
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                members = _check_members(archive, size)
                raw_header = _read_member(archive, members["header"], "header")
                try:
                    header = _parse_header(path, raw_header)
                except ValueError as e:
                    raise _HeaderError(str(e)) from e
                shapes = {
                    "codes": (header["count"], header["bits"] // 8),
                    "ids": (header["count"],),
                }
                # Each member's .npy shape must equal these before any read.
                codes = _read_member(archive, members["codes"], "codes", shapes)
                ids = _read_member(archive, members["ids"], "ids", shapes)
    except FileNotFoundError:
        raise
    except _HeaderError as e:
        raise ValueError(str(e)) from e
    except _READ_ERRORS as e:
        raise ValueError(f"{path!r} is not a readable HammingIndex file: {e}") from e
    _check_payload(path, header, codes, ids)
    return header, codes, ids


# What zipfile and numpy's .npy header parser raise on hostile bytes.
_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    KeyError,
    IndexError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    SyntaxError,
)


class _HeaderError(ValueError):
    """A well-formed archive whose JSON header is wrong (message has the path)."""


def _check_members(archive: zipfile.ZipFile, size: int) -> dict:
    """The three members, stored uncompressed, no others, sizes within the file."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    members = {
        name[: -len(".npy")]: info
        for name, info in zip(names, infos, strict=True)
        if name.endswith(".npy")
    }
    missing = set(_MEMBERS) - set(members)
    if missing:
        raise ValueError(f"missing arrays {sorted(missing)}")
    unknown = sorted(set(names) - {f"{name}.npy" for name in _MEMBERS})
    if unknown or len(names) != len(_MEMBERS):
        raise ValueError(f"unexpected members {unknown or names}")
    for name, info in members.items():
        if info.flag_bits & 0x1:
            raise ValueError(f"member {name!r} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"member {name!r} is compressed (the writer stores)")
        if info.file_size != info.compress_size or info.file_size > size:
            raise ValueError(
                f"member {name!r} declares {info.file_size} bytes in a file of "
                f"{size} bytes"
            )
    return members


def _read_member(archive, info, name, shapes=None) -> np.ndarray:
    """One ``.npy`` member: header parsed here, data read only if it fits."""
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"member {name!r}: unsupported .npy version {version}")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(stream, max_header_size=10_000)
        want = np.dtype(_MEMBERS[name])
        if dtype != want or dtype.hasobject or fortran:
            raise ValueError(
                f"member {name!r} is {dtype} (fortran order {fortran}), the "
                f"format says C-order {want}"
            )
        if len(shape) != (1 if name != "codes" else 2) or min(shape) < 0:
            raise ValueError(f"member {name!r} has shape {shape}")
        if shapes is not None and shape != shapes[name]:
            raise _HeaderError(
                f"{archive.filename!r}: {name} are {dtype} {shape}, header says "
                f"{'uint8' if name == 'codes' else 'int64'} {shapes[name]}"
            )
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if name == "header" and nbytes > _MAX_HEADER_BYTES:
            raise ValueError(f"header of {nbytes} bytes (at most {_MAX_HEADER_BYTES})")
        if stream.tell() + nbytes != info.file_size:
            raise ValueError(
                f"member {name!r}: shape {shape} needs {nbytes} bytes after its "
                f"header, the member has {info.file_size - stream.tell()}"
            )
        data = stream.read(nbytes)  # at most the member's size, in the file
        if len(data) != nbytes or stream.read(1):
            raise ValueError(f"member {name!r} is truncated")
    return np.frombuffer(data, dtype).reshape(shape)


def _parse_header(path: str, raw: np.ndarray) -> dict:
    try:
        header = json.loads(raw.astype(np.uint8).tobytes().decode())
    except (ValueError, RecursionError) as e:  # bad UTF-8, JSON, huge numbers
        raise ValueError(f"{path!r}: unreadable header: {e}") from e
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise ValueError(f"{path!r} is not a HammingIndex file (magic {header!r:.80})")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r}: unsupported format_version "
            f"{header.get('format_version')!r} (this version reads {FORMAT_VERSION})"
        )
    for key, kind in (("bits", int), ("count", int), ("sha256", str)):
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path!r}: header field {key!r} is {value!r:.80}")
    bits, count = header["bits"], header["count"]
    if bits <= 0 or bits % 8 or bits > MAX_BITS or count < 0:
        raise ValueError(
            f"{path!r}: header says bits={bits}, count={count} (bits must be a "
            f"positive multiple of 8 up to {MAX_BITS}, count >= 0)"
        )
    return header


def _check_payload(path: str, header: dict, codes: np.ndarray, ids: np.ndarray):
    bits, count = header["bits"], header["count"]
    if codes.dtype != np.uint8 or codes.shape != (count, bits // 8):
        raise ValueError(
            f"{path!r}: codes are {codes.dtype} {codes.shape}, header says "
            f"uint8 {(count, bits // 8)}"
        )
    if ids.dtype != np.dtype("<i8") or ids.shape != (count,):
        raise ValueError(
            f"{path!r}: ids are {ids.dtype} {ids.shape}, header says int64 ({count},)"
        )
    digest = hashlib.sha256(codes.tobytes() + ids.tobytes()).hexdigest()
    if digest != header["sha256"]:
        raise ValueError(
            f"{path!r}: checksum mismatch (file {digest}, header {header['sha256']})"
        )
