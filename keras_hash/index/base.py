"""The search contract every Hamming index kind follows, and its one finishing step.

A kind (:class:`~keras_hash.index.HammingIndex`,
:class:`~keras_hash.index.IVFHammingIndex`,
:class:`~keras_hash.index.MilvusHammingIndex`) supplies only its raw
candidate search; :class:`BinaryIndex` checks the arguments and finishes the
results the same way for all:

- **k-NN** (:meth:`BinaryIndex.search`): the kind returns, per query, ``m``
  candidates holding the ``m`` nearest of what it searched under *some* tie
  order (empty slots at a distance above ``bits``). Rows are sorted by
  (distance, id). Where a row's last candidate lies at the k-th distance
  ``t``, other items at ``t`` with smaller ids may have been left out: the
  kind is asked again for every item at exactly ``t`` and the smallest ids
  are kept. Rows with fewer than ``k`` items found are padded with
  :data:`PAD_ID` at distance ``bits + 1``. A kind whose candidates already
  are the first ``k`` by (distance, id) says so and skips the re-query.
- **Range search** (:meth:`BinaryIndex.range_search`, radius inclusive): the
  kind returns CSR candidates; each query's are sorted by (distance, id).

One id policy (:func:`check_ids`, :func:`new_ids`: int64, never wrapped,
unique), one set of constants and one place for argument checks
(:func:`check_k`, :func:`check_radius`, :func:`check_nprobe`; sizes and
counts through :func:`keras_hash.arguments.check_int`; codes through
:func:`keras_hash.codes.check_packed`).

Example (a kind in a few lines: a brute-force list of codes):

```python
class ListIndex(InMemoryIndex):
    exact_ties = True        # candidates come as the first k by (distance, id)
    ...
    def _knn_candidates(self, queries, k):
        ...                  # [q, m] distances and ids
    def _range_candidates(self, queries, lo, hi, need=None):
        ...                  # CSR (lims, distances, ids) with lo <= d <= hi
```
"""

from __future__ import annotations

import abc
import contextlib
import operator
import threading
from dataclasses import dataclass

import numpy as np

from keras_hash.arguments import check_int
from keras_hash.codes import check_bits, check_packed

#: Id of padding in k-NN rows that hold fewer than k items found.
PAD_ID = -(2**63)
#: Range of ids of the kinds that pad (``PAD_ID`` is refused as an id).
MIN_ID, MAX_ID = PAD_ID + 1, 2**63 - 1
#: Largest code length (FAISS keeps dimensions in a C int).
MAX_BITS = 1 << 30
#: What to install for the optional backends.
FAISS_HINT = "pip install keras-hash[faiss]"
MILVUS_HINT = "pip install keras-hash[milvus]"


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


# ---------------------------------------------------------------------------
# argument checks


def check_k(k, ntotal: int, most: int | None = None) -> int:
    """The number of neighbours ``k`` as an int in ``1 .. ntotal`` (and ``most``)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}")
    if not 1 <= k <= ntotal:
        raise ValueError(f"k must be between 1 and the index size {ntotal}, got {k}")
    if most is not None and k > most:
        raise ValueError(f"k must be at most {most} on this index, got {k}")
    return int(k)


def check_radius(radius, bits: int) -> int:
    """A search radius as an int ``>= 0``, capped at ``bits`` (all codes)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"radius must be an int, got {radius!r}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return min(int(radius), bits)


def check_nprobe(nprobe, nlist: int | None) -> int:
    """Lists probed per query: an int in ``1 .. nlist`` (``nlist=None``: unknown)."""
    nprobe = check_int(nprobe, "nprobe", minimum=1)
    if nlist is not None and nprobe > nlist:
        raise ValueError(f"nprobe must be at most nlist={nlist}, got {nprobe}")
    return nprobe


def check_seconds(value, name: str = "timeout") -> float:
    """A positive, finite number of seconds (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


# ---------------------------------------------------------------------------
# the id policy


def check_ids(ids, n: int | None, low: int = PAD_ID, why: str = "") -> np.ndarray:
    """Integer ids ``[n]`` in ``low .. 2**63 - 1`` as int64, never wrapped.

    Python ints beyond 64 bits and unsigned values past ``2**63 - 1`` are
    refused by value, not cast. ``n=None`` takes any length; ``why`` ends
    the out-of-range message (the reason for ``low``).

    Example:

    ```python
    check_ids([3, 1, 2], 3)          # array([3, 1, 2])
    check_ids([2**63], 1)            # ValueError: out of range
    ```
    """
    if isinstance(ids, (list, tuple)) and all(type(i) is int for i in ids):
        ids = np.array(ids, dtype=object)  # numpy would make 2**63 a float
    else:
        ids = np.asarray(ids)
    if ids.ndim != 1 or (n is not None and len(ids) != n):
        want = f"({n},)" if n is not None else "[n]"
        raise ValueError(f"ids must have shape {want}, got shape {ids.shape}")
    if not len(ids):
        return np.zeros(0, np.int64)
    if ids.dtype == object and all(type(i) is int for i in ids):
        lowest, highest = min(ids), max(ids)
    elif np.issubdtype(ids.dtype, np.integer):
        lowest, highest = ids.min(), ids.max()
    else:
        raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
    if not (low <= lowest and highest <= MAX_ID):
        bounds = {PAD_ID: "-2**63", MIN_ID: "-2**63 + 1"}.get(low, str(low))
        raise ValueError(
            f"ids must be in {bounds} .. 2**63 - 1{why}, got "
            f"{lowest if lowest < low else highest}"
        )
    return ids.astype(np.int64)


def check_unique(ids: np.ndarray, existing: np.ndarray | None = None) -> None:
    """Refuses ids repeated in ``ids`` or present in sorted ``existing``."""
    sorted_ids = np.sort(ids)
    clash = np.zeros(len(ids), bool)
    if existing is not None and len(existing):  # a binary search each
        at = np.minimum(np.searchsorted(existing, sorted_ids), len(existing) - 1)
        clash = existing[at] == sorted_ids
    twice = np.zeros(len(ids), bool)
    twice[1:] = sorted_ids[1:] == sorted_ids[:-1]
    if np.any(clash | twice):
        repeated = np.unique(sorted_ids[clash | twice])
        raise ValueError(f"ids must be unique; repeated: {repeated[:10]}")


def new_ids(
    ids, n: int, existing: np.ndarray, low: int = PAD_ID, why: str = ""
) -> np.ndarray:
    """Checked ids for ``n`` new codes, unique against sorted ``existing``.

    ``ids=None`` gives ``max(existing) + 1`` onwards (``0, 1, ...`` when
    ``existing`` is empty); otherwise as :func:`check_ids`, and no id may
    repeat or be in ``existing``.

    Example:

    ```python
    new_ids(None, 2, np.array([4, 7]))     # array([8, 9])
    new_ids([7], 1, np.array([4, 7]))      # ValueError: repeated: [7]
    ```
    """
    if ids is None:
        start = int(existing[-1]) + 1 if len(existing) else 0
        if n and start + n - 1 > MAX_ID:
            raise ValueError(
                f"no {n} free default ids after the largest id {start - 1}: "
                "ids stop at 2**63 - 1; pass ids"
            )
        return np.arange(start, start + n, dtype=np.int64)
    ids = check_ids(ids, n, low, why)
    check_unique(ids, existing)
    return ids


# ---------------------------------------------------------------------------
# the contract


class BinaryIndex(abc.ABC):
    """A Hamming index over packed binary codes: the contract of every kind.

    Public: ``bits``, ``ntotal`` / ``len()``, ``add(codes, ids)``,
    ``search(queries, k)``, ``range_search(queries, radius)``, ``get(ids)``
    (stored codes, KeyError naming unknown ids); kinds add
    ``reset``/``delete``, ``save``/``load`` where their storage allows.
    Subclasses implement ``ntotal``, ``add``, ``_knn_candidates``,
    ``_range_candidates`` (module doc) and ``_get``; ``_searchable()`` may
    refuse a search (an untrained or closed index) and returns ``ntotal``.

    Class attributes a kind may set:
        exact_ties: its k-NN candidates are already the first ``k`` by
            (distance, id) (no re-query of ties). Defaults to False.
        max_k: the largest ``k`` it serves (None: ``ntotal``).
    """

    exact_ties = False
    max_k: int | None = None

    def __init__(self, bits: int, most: int = MAX_BITS):
        self._bits = check_bits(bits)
        if self._bits > most:
            raise ValueError(f"bits must be at most {most}, got {self._bits}")

    bits = read_only("_bits", "Code length K in bits.")

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of codes in the index."""

    @abc.abstractmethod
    def add(self, codes: np.ndarray, ids=None) -> None:
        """Adds packed codes uint8 ``[n, bits // 8]`` under ids ``[n]``."""

    @abc.abstractmethod
    def _knn_candidates(self, queries: np.ndarray, k: int):
        """``(distances [q, m], ids [q, m])``: ``m >= k`` or all that was searched."""

    @abc.abstractmethod
    def _range_candidates(self, queries: np.ndarray, lo: int, hi: int, need=None):
        """CSR ``(lims, distances, ids)`` of every item at ``lo <= d <= hi``.

        ``need`` (one count per query, or None): the kind may stop once it
        holds that many items at these distances, the smallest ids among them.
        """

    @abc.abstractmethod
    def _get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(codes [n, bits // 8], found bool [n])`` of unique int64 ``ids``.

        Rows of ids not found may hold anything.
        """

    def get(self, ids) -> np.ndarray:
        """The stored codes of ``ids``, in the order asked.

        Args:
            ids: integer ``[n]`` ids (:func:`check_ids` rules: int64, never
                wrapped); repeats allowed.

        Returns:
            uint8 ``[n, bits // 8]``: row ``i`` is the code stored under
            ``ids[i]``.

        Raises:
            KeyError: some ids are not in the index (up to 10 of them named).

        Example: ``index.add(codes, [7, 9]); index.get([9, 7, 9])`` gives
        ``codes[[1, 0, 1]]``.
        """
        ids = check_ids(ids, None)
        unique, inverse = np.unique(ids, return_inverse=True)
        with self._reading():
            if not len(unique):
                return np.zeros((0, self._bits // 8), np.uint8)
            codes, found = self._get(unique)
        if not np.all(found):
            missing = unique[~np.asarray(found, bool)]
            raise KeyError(
                f"{len(missing)} of the ids asked are not in {self._holder()}: "
                f"{[int(i) for i in missing[:10]]}"
            )
        return np.asarray(codes, np.uint8)[inverse.reshape(-1)]

    def _holder(self) -> str:
        """What holds the codes, for messages (``"this HammingIndex"``)."""
        return f"this {type(self).__name__}"

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{key}={value!r}" for key, value in self._describe().items()
        )
        return f"{type(self).__name__}({fields})"

    def _describe(self) -> dict:
        return {"bits": self._bits, "ntotal": self.ntotal}

    def _reading(self):
        """The context a search runs in (a lock where the kind has one)."""
        return contextlib.nullcontext()

    def _searchable(self) -> int:
        ntotal = self.ntotal
        if ntotal == 0:
            raise ValueError("the index is empty: add codes before searching")
        return ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Finds the k nearest codes of each query.

        Args:
            queries: uint8 ``[q, bits // 8]`` packed codes.
            k: number of neighbours, ``1 <= k <= ntotal``.

        Returns:
            ``(distances, ids)``: int32 and int64 arrays ``[q, k]``, each row
            by distance ascending, ties by id ascending (``[0, k]`` for no
            queries); a row short of ``k`` items found ends with
            :data:`PAD_ID` at distance ``bits + 1``.
        """
        queries = check_packed(queries, bits=self._bits, name="queries")
        with self._reading():
            ntotal = self._searchable()
            k = check_k(k, ntotal, self.max_k)
            if len(queries) == 0:
                return np.zeros((0, k), np.int32), np.zeros((0, k), np.int64)
            dist, ids = self._knn_candidates(queries, k)
            return self._finish_knn(queries, dist, ids, k, ntotal)

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
        queries = check_packed(queries, bits=self._bits, name="queries")
        radius = check_radius(radius, self._bits)
        with self._reading():
            self._searchable()
            if len(queries) == 0:
                return RangeResult(
                    np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
                )
            return finish_range(*self._range_candidates(queries, 0, radius))

    def _finish_knn(self, queries, dist, ids, k: int, ntotal: int):
        """Sorted, ties at the k-th distance settled by id, short rows padded."""
        bits = self._bits
        dist, ids = sort_rows(np.asarray(dist), np.asarray(ids))
        if dist.shape[1] < k:
            pad = k - dist.shape[1]
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=bits + 1)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=PAD_ID)
        out_d, out_i = dist[:, :k].astype(np.int64), ids[:, :k].astype(np.int64)
        if not self.exact_ties and dist.shape[1] < ntotal:
            t = out_d[:, -1]
            # Every item nearer than a row's last candidate is in the row; at
            # the last one's distance, if that is t, some may be missing.
            open_ = np.flatnonzero((t <= bits) & (dist[:, -1] == t))
            for r in np.unique(t[open_]):
                rows = open_[t[open_] == r]
                self._settle_ties(queries, rows, int(r), out_d, out_i)
        missing = out_d > bits
        out_d[missing], out_i[missing] = bits + 1, PAD_ID
        return out_d.astype(np.int32), out_i

    def _settle_ties(self, queries, rows, t: int, out_d, out_i) -> None:
        """Rows ``rows`` of the result take the smallest ids at distance ``t``."""
        below = (out_d[rows] < t).sum(axis=1)
        need = out_d.shape[1] - below
        lims, dist, ids = self._range_candidates(queries[rows], t, t, need)
        for j, row in enumerate(rows):
            part = slice(lims[j], lims[j + 1])
            tied = np.unique(ids[part][dist[part] == t])[: need[j]]
            stop = below[j] + len(tied)
            out_i[row, below[j] : stop], out_d[row, below[j] : stop] = tied, t
            out_d[row, stop:] = self._bits + 1  # fewer than found before: a race


def sort_rows(dist: np.ndarray, ids: np.ndarray):
    """Each row by (distance, id); a no-op (one check) when already sorted."""
    later_d, later_i = dist[:, 1:], ids[:, 1:]
    if np.all(
        (later_d > dist[:, :-1])
        | ((later_d == dist[:, :-1]) & (later_i >= ids[:, :-1]))
    ):
        return dist, ids
    order = np.lexsort((ids, dist), axis=-1)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)


def finish_range(lims, dist, ids) -> RangeResult:
    """A :class:`RangeResult` with each query's items by (distance, id)."""
    lims = np.asarray(lims, np.int64)
    dist, ids = np.asarray(dist), np.asarray(ids)
    rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
    same = rows[1:] == rows[:-1]
    later = (dist[1:] > dist[:-1]) | ((dist[1:] == dist[:-1]) & (ids[1:] > ids[:-1]))
    if not np.all(later | ~same):
        order = np.lexsort((ids, dist, rows))
        dist, ids = dist[order], ids[order]
    return RangeResult(lims, dist.astype(np.int32), ids.astype(np.int64))


def keep_within(lims, dist, ids, lo: int):
    """CSR ``(lims, distances, ids)`` without the items nearer than ``lo``."""
    keep = np.asarray(dist) >= lo
    rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
    kept = np.zeros(len(lims), np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=len(lims) - 1), out=kept[1:])
    return kept, np.asarray(dist)[keep], np.asarray(ids)[keep]


def csr_from_rows(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR ``(lims, distances, ids)`` from per-query ``(distances, ids)`` pairs."""
    lims = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(d) for d, _ in parts], out=lims[1:])
    empty = [np.zeros(0, np.int64)]
    dist = np.concatenate([np.asarray(d, np.int64) for d, _ in parts] + empty)
    ids = np.concatenate([np.asarray(i, np.int64) for _, i in parts] + empty)
    return lims, dist, ids


# ---------------------------------------------------------------------------
# in-memory kinds


class InMemoryIndex(BinaryIndex):
    """What the in-memory kinds share: sorted unique ids and a readers-writer lock.

    Subclasses keep ``_ids`` sorted ascending with ``_codes`` (uint8
    ``[ntotal, bits // 8]``) in the same order, and take ``_lock`` once per
    public call (searches read, changes write).
    """

    def __init__(self, bits: int):
        super().__init__(bits)
        self._lock = ReadWriteLock()
        self._ids = np.zeros(0, np.int64)  # sorted: uniqueness and default ids

    @property
    def ntotal(self) -> int:
        """Number of codes in the index."""
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored codes, ascending (int64, a copy)."""
        with self._lock.reading():
            return self._ids.copy()

    def _reading(self):
        return self._lock.reading()

    def _get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Looks ids up in the sorted ``_ids``; ``_codes`` is kept in id order."""
        width = self._bits // 8
        if not len(self._ids):
            return np.zeros((len(ids), width), np.uint8), np.zeros(len(ids), bool)
        at = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return self._codes[at], self._ids[at] == ids


class ReadWriteLock:
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
