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
  process on a tie-heavy probe; should a FAISS build break ties otherwise,
  the contract's finishing step (:mod:`keras_hash.index.base`) settles the
  boundary: every item at the k-th distance ``t`` (a range search), the
  smallest ids kept. Range search radii are inclusive here (FAISS's are
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

import functools
import os

import numpy as np

from keras_hash.codes import (
    check_packed,
    distance_dtype,
    hamming_blocks,
    word_planes,
)
from keras_hash.index.base import (
    FAISS_HINT,
    PAD_ID,
    InMemoryIndex,
    keep_within,
    new_ids,
    read_only,
    sort_rows,
)
from keras_hash.index.file import load_archive, save_archive

# Queries per numpy block (the database is streamed in the Hamming kernel's
# blocks, keras_hash.codes.hamming_blocks).
_QUERY_BLOCK = 32
# Database items sampled to guess the k-NN distance limit.
_SAMPLE = 8192


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
        ids = new_ids(ids, len(codes), self._ids, PAD_ID)
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

    @property
    def exact_ties(self) -> bool:
        """Whether the backend's k-NN already breaks ties by id (no re-query)."""
        return self._backend.exact_ties

    def _knn_candidates(self, queries: np.ndarray, k: int):
        distances, positions = self._backend.knn(queries, k)
        return distances, self._ids[positions]

    def _range_candidates(self, queries: np.ndarray, lo: int, hi: int, need=None):
        lims, distances, positions = self._backend.range(queries, hi)
        if lo > 0:
            lims, distances, positions = keep_within(lims, distances, positions, lo)
        return lims, distances, self._ids[positions]

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


def _resolve_backend(backend: str) -> str:
    if backend not in ("auto", "numpy", "faiss"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'faiss', got {backend!r}")
    if backend == "auto":
        return "faiss" if _faiss_module() is not None else "numpy"
    if backend == "faiss" and _faiss_module() is None:
        raise ImportError(f"backend='faiss' needs faiss-cpu: {FAISS_HINT}")
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

    exact_ties = True  # k-NN rows come by (distance, position)

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

    def reset(self, codes: np.ndarray) -> None:
        self.index.reset()
        self.append(codes)

    def append(self, codes: np.ndarray) -> None:
        if len(codes):
            self.index.add(codes)

    @property
    def exact_ties(self) -> bool:
        """Whether FAISS keeps, among ties at the k-th distance, the lowest labels."""
        return _faiss_ties_by_label()

    def knn(self, queries: np.ndarray, k: int):
        return self.index.search(queries, k)

    def range(self, queries: np.ndarray, radius: int):
        """CSR results within ``radius``; the contract sorts each row."""
        # FAISS's radius is exclusive: distance < radius + 1 is distance <= radius.
        lims, dist, labels = self.index.range_search(queries, int(radius) + 1)
        return lims.astype(np.int64), dist, labels


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
    got_d, got_l = sort_rows(got_d, got_l)
    reference = _NumpyBackend(8)
    reference.reset(database)
    want_d, want_l = reference.knn(queries, 700)
    return bool(np.array_equal(got_d, want_d) and np.array_equal(got_l, want_l))
