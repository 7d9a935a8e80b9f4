"""RetrievalEvaluator: every retrieval metric of one query set, one database.

Conventions (relevance, ids, tie rules, AP@K, recall of a lookup) are in
:mod:`keras_hash.metrics` and ``docs/conventions.md``. Everything runs on
integer distances, chunked over queries so that memory stays bounded (a few
bytes per query x database pair of one chunk), without dense float
matrices; what an evaluator keeps between metrics is listed in
:class:`RetrievalEvaluator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_hash.codes import (
    check_bits,
    check_codes,
    distance_dtype,
    hamming_distances,
    word_planes,
)
from keras_hash.index.base import check_ids, check_unique
from keras_hash.labels import Relevance, check_label_pair, check_labels
from keras_hash.metrics import lookups, ranking
from keras_hash.metrics.lookups import RangeScore, SearchScore

_TIES = ("index", "random", "expected")
_EMPTY = ("zero", "skip")
# Query x database pairs per chunk: bounds memory to a few bytes per pair.
_CHUNK_PAIRS = 1 << 22
# Largest size of each cache of a RetrievalEvaluator (histograms, ranked
# relevance); a cache that would be larger is not kept.
_CACHE_BYTES = 1 << 26


@dataclass(frozen=True)
class RadiusPrecision:
    """Precision and recall of the items within a Hamming radius.

    Attributes:
        precision: mean over queries of (relevant in ball) / (ball size),
            an empty ball scoring 0.
        recall: mean over queries of (relevant in ball) / (relevant in the
            database), 0 for a query with no relevant item.
        empty_fraction: share of queries whose ball was empty.
        radius: the radius used.
    """

    precision: float
    recall: float
    empty_fraction: float
    radius: int


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Mean precision and recall at every Hamming radius ``0..bits``.

    Attributes:
        radii: int ``[bits + 1]``, ``0, 1, ..., bits``.
        precision: float ``[bits + 1]`` as in :class:`RadiusPrecision`.
        recall: float ``[bits + 1]``.
        empty_fraction: float ``[bits + 1]``, share of empty balls.
    """

    radii: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    empty_fraction: np.ndarray


class RetrievalEvaluator:
    """Every retrieval metric of one query set against one database.

    Validates the inputs once, computes Hamming distances once and keeps what
    later metrics reuse, so asking for mAP, precision within a radius, the
    precision-recall curve and precision@N costs little more than mAP alone.
    Given an index of the search contract (``database=``), it also scores
    what that index returns: :meth:`score_search` (mAP@k, tie-aware and
    by-id recall@k against exact search, speed) and
    :meth:`score_range_search` (precision within a radius).

    ```python
    evaluator = keras_hash.RetrievalEvaluator(
        query_codes=q_codes, query_labels=q_labels,
        database_codes=db_codes, database_labels=db_labels, bits=64,
    )
    evaluator.map(top_k=1000)
    evaluator.precision_at_radius(2).precision
    evaluator.precision_at_n(100)

    # the lookups of an approximate index holding the same codes (ids 0..N-1)
    index = keras_hash.index.IVFHammingIndex(bits=64, nlist=256, nprobe=8)
    index.train(db_codes)
    index.add(db_codes)
    evaluator = keras_hash.RetrievalEvaluator(
        query_codes=q_codes, query_labels=q_labels,
        database_codes=db_codes, database_labels=db_labels, database=index,
    )
    score = evaluator.score_search(k=100)   # score.recall, score.map, ...
    ```

    **Database.** Row ``i`` of ``database_codes`` and ``database_labels``
    is the item with id ``database_ids[i]`` (default ``i``), as it was added
    to the index. With an exact :class:`keras_hash.HammingIndex`,
    ``database_codes`` may be left out: its codes and ids are read from it,
    and the labels are looked up by ``database_ids``. Other kinds do not
    hand their codes back: give ``database_codes`` too, since recall needs
    exact search. Ties in whole-database rankings go by id.

    **Codes** are checked by :func:`keras_hash.codes.check_codes`: width
    ``bits // 8``, and bytes that look unpacked (all 0/1 or all 1/255) are
    refused unless ``assume_packed=True``.

    What is kept (memory stays bounded; distances are streamed over chunks
    of queries and never kept whole):

    - per-query histograms of all and of relevant items at each distance,
      ``[Q, bits + 1]`` each (8 bytes an entry), when they fit in 64 MiB:
      they answer precision within a radius, the curve, the tie-aware mAP
      and precision@N and the exact k-th distances of recall without
      another pass;
    - per-query AP of the whole ranking (ties by id), ``[Q]``;
    - the relevance of each query's first ranked items, one bit each, for as
      many ranks as fit in 64 MiB (mAP@K and precision@N for any K, N up to
      that depth).

    Empty query or database sets raise ``ValueError`` (the metrics are means
    over queries: there is no number for none).

    Args:
        query_codes: uint8 ``[Q, bits // 8]`` packed codes, ``Q >= 1``.
        query_labels: int class ids ``[Q]`` (or ``[Q, 1]``) or 0/1
            multi-hot ``[Q, C]``.
        database_labels: like ``query_labels``, one row per database item.
        bits: the code length K; read from ``database`` when given there
            (both given must agree).
        database_codes: uint8 ``[N, bits // 8]`` packed codes.
        database_ids: int ``[N]`` unique ids of the rows. Defaults to
            ``0 .. N - 1``.
        database: an index of the search contract holding the same items
            under the same ids, scored by :meth:`score_search` and
            :meth:`score_range_search`.
        assume_packed: accept codes whose bytes look unpacked.
    """

    def __init__(
        self,
        *,
        query_codes: np.ndarray,
        query_labels: np.ndarray,
        database_labels: np.ndarray,
        bits: int | None = None,
        database_codes: np.ndarray | None = None,
        database_ids: np.ndarray | None = None,
        database=None,
        assume_packed: bool = False,
    ):
        self._index = database
        self.bits = _code_length(bits, database)
        codes = dict(bits=self.bits, assume_packed=assume_packed)
        stored_ids, name = None, "database_codes"
        if database_codes is None:
            database_codes, stored_ids = _exact_contents(database)
            name = "codes of the database index"
        database_codes = check_codes(database_codes, **codes, name=name)
        query_codes = check_codes(query_codes, **codes, name="query_codes")
        if len(database_codes) == 0:
            raise ValueError(f"the database is empty ({name} has no rows)")
        if len(query_codes) == 0:
            # Every metric is a mean over queries: with none it is undefined
            # (NaN), never a number to report.
            raise ValueError(
                "query_codes is empty: retrieval metrics average over queries, "
                "give at least one"
            )
        self.q, self.n = len(query_codes), len(database_codes)
        self.query_labels = check_labels(
            query_labels, count=self.q, name="query_labels"
        )
        labels = check_labels(database_labels, count=self.n, name="database_labels")
        check_label_pair(self.query_labels, labels, ("query_labels", "database_labels"))
        ids = _check_ids(database_ids, self.n)
        order = np.argsort(ids, kind="stable")
        self.database_ids, labels = ids[order], labels[order]
        if stored_ids is None:
            database_codes = database_codes[order]
            _check_index_size(database, self.n)
        elif not np.array_equal(stored_ids, self.database_ids):
            missing = np.setdiff1d(stored_ids, self.database_ids)
            raise ValueError(
                "database_ids differ from the index's ids (e.g. id "
                f"{int(missing[0]) if len(missing) else '?'}): give database_ids "
                "in the order of database_labels"
            )
        self.database_labels = labels
        self.query_codes = query_codes
        self.database_codes = np.ascontiguousarray(database_codes)
        self._relevance = Relevance(self.database_labels)
        self._hist = None  # (hist, relhist) [Q, bits + 1]
        self._full_ap = None  # (ap, has_relevant) [Q], ties by id
        self._ranked = None  # (depth, packed relevance [Q, ceil(depth / 8)])
        self._permuted = {}  # seed -> evaluator on the permuted database
        self._keep = True  # False: one metric only, nothing worth caching

    # -- public metrics ----------------------------------------------------

    def average_precisions(
        self, top_k: int | None = None, ties: str = "index", seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-query AP@K, as :meth:`map` averages it.

        Returns:
            ``(ap, has_relevant)``: float64 ``[Q]`` (0 for a query with no
            relevant item in its top K) and bool ``[Q]`` (False for the
            queries ``empty="skip"`` leaves out).
        """
        _check_choice("ties", ties, _TIES)
        top_k = self._count("top_k", top_k)
        if ties == "random":
            return self._permutation(seed).average_precisions(top_k)
        if top_k is not None and top_k >= self.n:
            top_k = None
        if ties == "expected":
            harmonic = ranking.harmonic_numbers(self.n)
            parts = [
                ranking.expected_ap(hist, relhist, top_k, harmonic)
                for hist, relhist in self._histogram_chunks()
            ]
            return _concat(parts)
        if top_k is None:
            if self._full_ap is None:
                for _ in self._pass(full_ap=True):
                    pass
            return self._full_ap
        return _concat(
            [ranking.ranked_ap(rel) for rel in self._ranked_relevance(top_k)]
        )

    def map(
        self,
        top_k: int | None = None,
        ties: str = "index",
        empty: str = "zero",
        seed: int = 0,
    ) -> float:
        """Mean average precision (mAP@K) of Hamming ranking.

        Args:
            top_k: rank cut-off K, or None for the whole database. Defaults
                to None.
            ties: ``"index"``, ``"random"`` or ``"expected"``. Defaults to
                ``"index"``.
            empty: ``"zero"`` or ``"skip"``: what a query without a relevant
                item in its top K counts. Defaults to ``"zero"``.
            seed: seed of the permutation for ``ties="random"``. Defaults
                to 0.

        Returns:
            The mAP, a float in [0, 1].
        """
        _check_choice("empty", empty, _EMPTY)
        ap, counted = self.average_precisions(top_k, ties, seed)
        if empty == "skip":
            ap = ap[counted]
        return float(ap.mean()) if ap.size else 0.0

    def precision_at_radius(self, radius: int = 2) -> RadiusPrecision:
        """Precision and recall of everything within a Hamming radius.

        Retrieved items are those at distance ``<= radius``. A query whose
        ball is empty scores precision 0 and still counts; ``empty_fraction``
        says how many balls were empty.

        Args:
            radius: the radius, an int ``>= 0``. Defaults to 2.
        """
        radius = lookups.check_radius(radius)
        r = min(radius, self.bits)
        sums = np.zeros(3)
        for hist, relhist in self._histogram_chunks():
            found = hist[:, : r + 1].sum(1)
            hits = relhist[:, : r + 1].sum(1)
            sums += ranking.radius_sums(hits, found, relhist.sum(1))
        precision, recall, empty = (float(v) for v in sums / self.q)
        return RadiusPrecision(precision, recall, empty, radius)

    def precision_recall_curve(self) -> PrecisionRecallCurve:
        """Precision and recall within every Hamming radius ``0..bits``.

        Each point is the mean over queries of the per-query precision
        (empty ball: 0) and recall, as in :meth:`precision_at_radius`.
        """
        sums = np.zeros((3, self.bits + 1))
        for hist, relhist in self._histogram_chunks():
            hits = np.cumsum(relhist, axis=1)
            sums += ranking.radius_sums(hits, np.cumsum(hist, axis=1), hits[:, -1:])
        sums /= self.q
        return PrecisionRecallCurve(np.arange(self.bits + 1), *sums)

    def precision_at_n(self, n: int, ties: str = "index", seed: int = 0) -> float:
        """Mean precision of the first n items of the Hamming ranking.

        Args:
            n: number of retrieved items, ``1 <= n <= N``.
            ties: how tied items at the cut are ordered (module docstring).
                Defaults to ``"index"``.
            seed: seed for ``ties="random"``. Defaults to 0.
        """
        _check_choice("ties", ties, _TIES)
        n = self._count("n", n, required=True)
        if ties == "random":
            return self._permutation(seed).precision_at_n(n)
        if ties == "expected":
            hits = [
                ranking.expected_hits_at_n(hist, relhist, n)
                for hist, relhist in self._histogram_chunks()
            ]
        else:
            hits = [rel.sum(1) for rel in self._ranked_relevance(n)]
        return float(np.concatenate(hits).mean() / n)

    # -- lookups of the index ------------------------------------------------

    def score_search(self, k: int, empty: str = "zero") -> SearchScore:
        """Scores ``database.search(query_codes, k)``: mAP@k, recall@k, speed.

        The returned lists are scored in their order; recall compares them
        with exact search over ``database_codes`` (tie-aware and by id,
        :mod:`keras_hash.metrics.lookups`). Returned ids must be database
        ids at their true distances, or ``ValueError``.

        Args:
            k: neighbours per query, ``1 <= k <= N``.
            empty: what a query without a relevant item in its k results
                counts in mAP, ``"zero"`` or ``"skip"``. Defaults to
                ``"zero"``.
        """
        return lookups.score_search(self, k, empty)

    def score_range_search(self, radius: int = 2) -> RangeScore:
        """Scores ``database.range_search(query_codes, radius)``.

        Precision and recall of what the index returns within the radius,
        as :meth:`precision_at_radius` defines them for exact search, and
        its completeness against the exact ball.

        Args:
            radius: the radius, an int ``>= 0``. Defaults to 2.
        """
        return lookups.score_range_search(self, radius)

    def _require_index(self, method: str):
        if self._index is None:
            raise ValueError(
                f"{method} scores an index's lookups: pass database=<index> to "
                "the evaluator"
            )
        return self._index

    # -- passes over the distances -----------------------------------------

    def _count(self, name: str, value, required: bool = False):
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        if name in ("n", "k") and value > self.n:
            raise ValueError(f"{name}={value} exceeds the database size {self.n}")
        return min(int(value), self.n)

    def _permutation(self, seed: int) -> RetrievalEvaluator:
        """The evaluator of the database permuted by ``default_rng(seed)``."""
        if seed not in self._permuted:
            order = np.random.default_rng(seed).permutation(self.n)
            permuted = RetrievalEvaluator(
                query_codes=self.query_codes,
                query_labels=self.query_labels,
                database_codes=self.database_codes[order],
                database_labels=self.database_labels[order],
                bits=self.bits,
                assume_packed=True,  # checked by this evaluator already
            )
            permuted._keep = self._keep
            self._permuted = {seed: permuted}
        return self._permuted[seed]

    def _chunks(self):
        """Yields ``(rows, distances [q, N], relevant [q, N])`` per chunk."""
        planes = word_planes(self.database_codes)
        qplanes = word_planes(self.query_codes)
        dtype = distance_dtype(self.bits)
        step = max(1, _CHUNK_PAIRS // max(self.n, self.bits + 1))
        for q0 in range(0, self.q, step):
            rows = slice(q0, q0 + step)
            dist = hamming_distances(qplanes[:, rows], planes, dtype)
            yield rows, dist, self._relevance(self.query_labels[rows])

    def _pass(self, full_ap: bool = False, k: int | None = None):
        """One pass over the distances, filling every cache that fits.

        Yields ``(hist, relhist, ranked, positions)`` per chunk of queries:
        histograms ``[q, bits + 1]`` and, with ``k``, the ranked relevance
        ``[q, k]`` and database rows ``[q, k]`` of each query's first k
        (ties by id). With ``full_ap`` it ranks the whole database (a
        stable sort per query), which also gives the histograms, the AP of
        the full ranking and a ranked-relevance prefix as deep as fits.
        """
        width = self.bits + 1
        keep_hist = (
            self._keep and self._hist is None and self.q * width * 16 <= _CACHE_BYTES
        )
        if keep_hist:
            hist_all = np.empty((2, self.q, width), np.int64)
        depth = k
        if full_ap:
            depth = min(self.n, _CACHE_BYTES // max(self.q, 1) * 8)
            depth = depth if self._keep else None
            ap, has = np.zeros(self.q), np.zeros(self.q, bool)
        keep_ranked = (
            self._keep and depth is not None and self.q * -(-depth // 8) <= _CACHE_BYTES
        )
        if keep_ranked:
            packed = np.empty((self.q, -(-depth // 8)), np.uint8)
        for rows, dist, rel in self._chunks():
            ranked = positions = None
            if full_ap:
                ap[rows], hist, relhist, ranked = ranking.full_ranking(
                    dist, rel, width, depth
                )
                has[rows] = rel.any(axis=1)
            else:
                hist, relhist = ranking.histograms(dist, rel, width)
                if k is not None:
                    positions = ranking.top_k_positions(dist, hist, k)
                    ranked = np.take_along_axis(rel, positions, axis=1)
            if keep_hist:
                hist_all[0, rows], hist_all[1, rows] = hist, relhist
            if keep_ranked:
                packed[rows] = np.packbits(ranked, axis=1)
            yield hist, relhist, ranked, positions
        if keep_hist:
            self._hist = hist_all[0], hist_all[1]
        if full_ap:
            self._full_ap = ap, has
        if keep_ranked and (self._ranked is None or self._ranked[0] < depth):
            self._ranked = depth, packed

    def _histogram_chunks(self):
        """Yields ``(hist, relhist)`` over chunks of queries (one if cached)."""
        if self._hist is not None:
            yield self._hist
            return
        for hist, relhist, _, _ in self._pass():
            yield hist, relhist

    def _ranked_relevance(self, k: int):
        """Yields relevance ``[q, k]`` of each query's top k, ties by id.

        From the cache when it is deep enough, else from a pass that ranks
        the first k of each query (and fills the caches).
        """
        if self._ranked is None or self._ranked[0] < k:
            for _, _, ranked, _ in self._pass(k=k):
                yield ranked
            return
        step = max(1, _CHUNK_PAIRS // (4 * k))
        for q0 in range(0, self.q, step):
            block = self._ranked[1][q0 : q0 + step, : -(-k // 8)]
            yield np.unpackbits(block, axis=1, count=k).view(bool)


def _code_length(bits, database) -> int:
    """The code length: stated, or read from the index (both must agree)."""
    if database is not None:
        if not all(hasattr(database, a) for a in ("bits", "search", "range_search")):
            raise TypeError(
                "database must be an index of the search contract (bits, search, "
                f"range_search), got {type(database).__name__}; pass arrays of "
                "codes as database_codes"
            )
        stored = check_bits(database.bits)
        if bits is not None and check_bits(bits) != stored:
            raise ValueError(
                f"bits={bits} but the database index holds {stored}-bit codes"
            )
        return stored
    if bits is None:
        raise TypeError(
            "bits is required: the code length K of query_codes and "
            "database_codes (uint8 [N, K // 8]), e.g. bits=64"
        )
    return check_bits(bits)


def _exact_contents(database):
    """Codes and ids of an exact index, for when no database_codes are given."""
    from keras_hash.index import HammingIndex

    if database is None:
        raise ValueError("give database_codes, or database=<a keras_hash.HammingIndex>")
    if not isinstance(database, HammingIndex):
        raise ValueError(
            f"a {type(database).__name__} does not hand its codes back: give "
            "database_codes (and database_ids) too, since recall and "
            "whole-database rankings need exact search"
        )
    return database.codes, database.ids


def _check_index_size(database, n: int) -> None:
    if database is not None and database.ntotal != n:
        raise ValueError(
            f"the database index holds {database.ntotal} codes but "
            f"database_codes has {n} rows"
        )


def _check_ids(ids, n: int) -> np.ndarray:
    """The database ids as int64 ``[n]`` (default ``0 .. n - 1``), unique."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    try:
        ids = check_ids(ids, n)
        check_unique(ids)
    except (TypeError, ValueError) as error:  # name the argument
        raise type(error)(f"database_ids: {error}") from None
    return ids


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _concat(parts):
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
    )
