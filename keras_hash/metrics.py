"""Retrieval metrics over packed binary codes: mAP, precision within a radius.

:class:`RetrievalEvaluator` computes Hamming distances once (with the kernel
of :mod:`keras_hash.codes`) and answers every metric from them; the functions
(:func:`mean_average_precision`, :func:`precision_at_radius`, ...) are thin
wrappers that build one evaluator per call. The conventions are also written
up in ``docs/conventions.md``.

Conventions (research code disagrees on each; these are ours):

- **Relevance**: a database item is relevant to a query when they share at
  least one label. Labels are int class ids ``[N]`` or multi-hot ``[N, C]``
  holding only 0 and 1; ``±1`` labels are rejected (see
  :mod:`keras_hash.labels`, which owns validation and relevance).
- **Codes**: packed uint8 ``[N, bits // 8]``, bit ``i`` in byte ``i // 8``
  under mask ``0x80 >> (i % 8)`` (``numpy.packbits`` order).
- **Ranking**: Hamming distance ascending. Items at equal distance are tied;
  ``ties`` says how they are ordered:

  - ``"index"`` (default): by database index, ascending (deterministic).
    Biased when the database is stored class by class: shuffle it, or use
    ``"expected"``.
  - ``"random"``: in one random order: the database is permuted by
    ``np.random.default_rng(seed).permutation(N)`` and ties go by position in
    that permutation (the same permutation for every query).
  - ``"expected"``: the exact expectation of the metric over all orders of
    the tied items, every order equally likely (tie-aware evaluation).

- **AP@K** ``= sum_{k<=K} P@k * rel_k / sum_{k<=K} rel_k``: normalised by
  the relevant items inside the top K (the HashNet and DHN convention);
  ``top_k=None`` ranks the whole database. A query with no relevant item in
  its top K scores 0 (``empty="zero"``) or is left out of the mean
  (``empty="skip"``, the official HashNet evaluation).
- **Precision within radius r**: retrieved = distance ``<= r``; a query
  whose ball is empty scores precision 0 and still counts.

Everything runs on integer distances, chunked over queries so that memory
stays bounded (a few bytes per query x database pair of one chunk), without
dense float matrices; what an evaluator keeps between metrics is listed in
:class:`RetrievalEvaluator`.

**Tie-aware AP** (``ties="expected"``). Take a tie group (the items at one
distance): ``n`` items, ``r`` relevant, placed after ``P`` items of which
``Rb`` are relevant. Position ``s`` (1..n) of the group holds a relevant item
with probability ``r / n``; given that, the number of relevant items ahead of
it inside the group is hypergeometric with mean ``(s - 1)(r - 1)/(n - 1)``.
Precision at that position has a fixed denominator ``P + s``, so by
linearity of expectation the group adds, in expectation,

    sum_{s=1..n} (r/n) * (Rb + 1 + (s-1) b) / (P + s),   b = (r-1)/(n-1)
    = (r/n) * [ b n + (Rb + 1 - b (P + 1)) (H(P + n) - H(P)) ]

to the sum of precisions, H being harmonic numbers (``b = 0`` when
``n = 1``). Without ``top_k`` the normaliser (all relevant items) is fixed and
``E[AP]`` is the sum of these terms over groups divided by it.

With ``top_k = K`` the group at the K-th position is cut: only its first
``m = K - P`` places count, and they hold ``Y`` relevant items, ``Y``
hypergeometric (``m`` draws from ``n`` with ``r`` relevant). Given ``Y = y``
those ``m`` places are a uniformly ordered group of size ``m`` with ``y``
relevant, and the normaliser ``Rb + y`` is fixed. So we compute exactly

    E[AP@K] = sum_y Pr(Y = y) * (S_before + T(P, Rb, m, y)) / (Rb + y)

where ``S_before`` is the expected sum of precisions over the groups fully
inside the top K and ``T`` the group term above (orderings where the
normaliser is 0 score 0). With ``empty="skip"`` a query is left out when no
ordering can bring a relevant item into its top K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_hash.codes import (
    check_packed,
    distance_dtype,
    hamming_distances,
    word_planes,
)
from keras_hash.index import HammingIndex
from keras_hash.labels import Relevance, check_label_pair, check_labels

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
    Conventions (relevance, tie rules, AP@K) are in the module docstring.

    ```python
    evaluator = keras_hash.RetrievalEvaluator(
        query_codes=q_codes, query_labels=q_labels,
        database_codes=db_codes, database_labels=db_labels,
    )
    evaluator.map(top_k=1000)
    evaluator.precision_at_radius(2).precision
    evaluator.precision_recall_curve()
    evaluator.precision_at_n(100)

    # or straight from an index holding the database
    evaluator = keras_hash.RetrievalEvaluator(
        query_codes=q_codes, query_labels=q_labels,
        database=index, database_labels=db_labels,
    )
    ```

    What is kept (memory stays bounded; distances are streamed over chunks
    of queries, a few bytes per query x database pair of one chunk, and are
    never kept whole):

    - per-query histograms of all and of relevant items at each distance,
      ``[Q, bits + 1]`` each (8 bytes an entry), when they fit in 64 MiB:
      they answer precision within a radius, the curve, and the tie-aware
      (``ties="expected"``) mAP and precision@N without another pass;
    - per-query AP of the whole ranking (ties by index), ``[Q]``;
    - the relevance of each query's first ranked items, one bit each, for as
      many ranks as fit in 64 MiB: mAP@K and precision@N (ties by index) for
      any K, N up to that depth come from it. It is filled by the pass of
      ``map()`` without ``top_k`` or by an exact k-NN search (the index's own
      when one is given).

    Empty query or database sets raise ``ValueError`` (the metrics are means
    over queries: there is no number for none), in every metric function.

    Args:
        query_codes: uint8 ``[Q, bits // 8]`` packed codes, ``Q >= 1``.
        query_labels: int class ids ``[Q]`` or 0/1 multi-hot ``[Q, C]``.
        database_labels: like ``query_labels``, ``[N]`` or ``[N, C]``; with
            ``database=index``, in the order the codes were added to the
            index.
        database_codes: uint8 ``[N, bits // 8]`` packed codes; ties between
            database items go by row.
        database: a :class:`keras_hash.HammingIndex` holding the database,
            instead of ``database_codes``; ties go by id, as in its
            ``search``.
    """

    def __init__(
        self,
        *,
        query_codes: np.ndarray,
        query_labels: np.ndarray,
        database_labels: np.ndarray,
        database_codes: np.ndarray | None = None,
        database: HammingIndex | None = None,
    ):
        self._index = None
        if (database_codes is None) == (database is None):
            raise ValueError(
                "give the database either as database_codes or as database "
                "(a HammingIndex), exactly one of the two"
            )
        if database is not None:
            if not isinstance(database, HammingIndex):
                raise TypeError(
                    f"database must be a keras_hash.HammingIndex, got "
                    f"{type(database).__name__}"
                )
            database_labels = check_labels(
                database_labels, count=database.ntotal, name="database_labels"
            )[database.insertion_order]
            database_codes, self._index = database.codes, database
        query_codes = check_packed(query_codes, name="query_codes")
        database_codes = check_packed(database_codes, name="database_codes")
        if query_codes.shape[1] != database_codes.shape[1]:
            raise ValueError(
                f"code widths disagree: query_codes are {query_codes.shape[1]} "
                f"bytes wide, database_codes {database_codes.shape[1]} bytes"
            )
        if len(database_codes) == 0:
            raise ValueError("database_codes is empty")
        if len(query_codes) == 0:
            # Every metric is a mean over queries: with none it is undefined
            # (NaN), never a number to report.
            raise ValueError(
                "query_codes is empty: retrieval metrics average over queries, "
                "give at least one"
            )
        self.bits = query_codes.shape[1] * 8
        self.q, self.n = len(query_codes), len(database_codes)
        self.query_labels = check_labels(
            query_labels, count=self.q, name="query_labels"
        )
        self.database_labels = check_labels(
            database_labels, count=self.n, name="database_labels"
        )
        check_label_pair(
            self.query_labels, self.database_labels, ("query_labels", "database_labels")
        )
        self.query_codes, self.database_codes = query_codes, database_codes
        self._relevance = Relevance(self.database_labels)
        self._hist = None  # (hist, relhist) [Q, bits + 1]
        self._full_ap = None  # (ap, has_relevant) [Q], ties by index
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
            harmonic = _harmonic(self.n)
            parts = [
                _expected_ap(hist, relhist, top_k, harmonic)
                for hist, relhist in self._histogram_chunks()
            ]
            return _concat(parts)
        if top_k is None:
            if self._full_ap is None:
                for _ in self._pass(full_ap=True):
                    pass
            return self._full_ap
        return _concat([_ranked_ap(rel) for rel in self._ranked_relevance(top_k)])

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
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
            raise TypeError(f"radius must be an int, got {radius!r}")
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        r = min(int(radius), self.bits)
        sums = np.zeros(3)
        for hist, relhist in self._histogram_chunks():
            found = hist[:, : r + 1].sum(1)
            hits = relhist[:, : r + 1].sum(1)
            sums += _radius_sums(hits, found, relhist.sum(1))
        precision, recall, empty = (float(v) for v in sums / self.q)
        return RadiusPrecision(precision, recall, empty, int(radius))

    def precision_recall_curve(self) -> PrecisionRecallCurve:
        """Precision and recall within every Hamming radius ``0..bits``.

        Each point is the mean over queries of the per-query precision
        (empty ball: 0) and recall, as in :meth:`precision_at_radius`.
        """
        sums = np.zeros((3, self.bits + 1))
        for hist, relhist in self._histogram_chunks():
            hits = np.cumsum(relhist, axis=1)
            sums += _radius_sums(hits, np.cumsum(hist, axis=1), hits[:, -1:])
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
                _expected_hits_at_n(hist, relhist, n)
                for hist, relhist in self._histogram_chunks()
            ]
        else:
            hits = [rel.sum(1) for rel in self._ranked_relevance(n)]
        return float(np.concatenate(hits).mean() / n)

    # -- passes over the distances -----------------------------------------

    def _count(self, name: str, value, required: bool = False):
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        if name == "n" and value > self.n:
            raise ValueError(f"n={value} exceeds the database size {self.n}")
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

        Yields ``(hist, relhist, ranked)`` per chunk of queries: histograms
        ``[q, bits + 1]`` and, with ``k``, the ranked relevance ``[q, k]``
        (ties by index). With ``full_ap`` it ranks the whole database (a
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
            ranked = None
            if full_ap:
                ap[rows], hist, relhist, ranked = _full_ranking(dist, rel, width, depth)
                has[rows] = rel.any(axis=1)
            else:
                hist, relhist = _histograms(dist, rel, width)
                if k is not None:
                    ranked = _top_k_ranked(dist, rel, hist, k)
            if keep_hist:
                hist_all[0, rows], hist_all[1, rows] = hist, relhist
            if keep_ranked:
                packed[rows] = np.packbits(ranked, axis=1)
            yield hist, relhist, ranked
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
        for hist, relhist, _ in self._pass():
            yield hist, relhist

    def _ranked_relevance(self, k: int):
        """Yields relevance ``[q, k]`` of each query's top k, ties by index.

        From the cache when it is deep enough, else from a pass that ranks
        the first k of each query (and fills the caches).
        """
        if self._ranked is None or self._ranked[0] < k:
            for _, _, ranked in self._pass(k=k):
                yield ranked
            return
        step = max(1, _CHUNK_PAIRS // (4 * k))
        for q0 in range(0, self.q, step):
            block = self._ranked[1][q0 : q0 + step, : -(-k // 8)]
            yield np.unpackbits(block, axis=1, count=k).view(bool)


# ---------------------------------------------------------------------------
# functions: one evaluator, one metric


def mean_average_precision(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    top_k: int | None = None,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
) -> float:
    """Mean average precision (mAP@K) of Hamming ranking.

    Conventions (relevance, tie rules, AP@K normalised by the relevant items
    inside the top K) are in the module docstring. For several metrics of
    the same codes, a :class:`RetrievalEvaluator` computes distances once.

    Example:

    ```python
    from keras_hash import metrics

    metrics.mean_average_precision(
        query_codes=q_codes, query_labels=q_labels,
        database_codes=db_codes, database_labels=db_labels, top_k=1000,
    )
    ```

    Args:
        query_codes: uint8 ``[Q, bits // 8]`` packed codes.
        query_labels: int ``[Q]`` class ids or 0/1 multi-hot ``[Q, C]``.
        database_codes: uint8 ``[N, bits // 8]`` packed codes.
        database_labels: like ``query_labels``, ``[N]`` or ``[N, C]``.
        top_k: rank cut-off K, or None for the whole database. Defaults to
            None.
        ties: ``"index"``, ``"random"`` or ``"expected"``. Defaults to
            ``"index"``.
        empty: ``"zero"`` or ``"skip"``: what a query without a relevant item
            in its top K counts. Defaults to ``"zero"``.
        seed: seed of the permutation for ``ties="random"``. Defaults to 0.

    Returns:
        The mAP, a float in [0, 1].
    """
    return _one_metric(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
    ).map(top_k=top_k, ties=ties, empty=empty, seed=seed)


def average_precisions(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    ties: str = "index",
    top_k: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP@K, as :func:`mean_average_precision` averages it.

    Args as in :func:`mean_average_precision` (keyword-only).

    Returns:
        ``(ap, has_relevant)``: float64 ``[Q]`` (0 for a query with no
        relevant item in its top K) and bool ``[Q]`` (False for the queries
        ``empty="skip"`` leaves out).
    """
    return _one_metric(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
    ).average_precisions(top_k=top_k, ties=ties, seed=seed)


def precision_at_radius(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    radius: int = 2,
) -> RadiusPrecision:
    """Precision and recall of everything within a Hamming radius.

    Retrieved items are those at distance ``<= radius``. A query whose ball
    is empty scores precision 0 and still counts; ``empty_fraction`` says how
    many balls were empty. Args as in :func:`mean_average_precision`.

    Args:
        radius: the radius, an int ``>= 0``. Defaults to 2.
    """
    return _one_metric(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
    ).precision_at_radius(radius)


def precision_recall_curve(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
) -> PrecisionRecallCurve:
    """Precision and recall within every Hamming radius ``0..bits``.

    Each point is the mean over queries of the per-query precision (empty
    ball: 0) and recall, as in :func:`precision_at_radius`. Args as in
    :func:`mean_average_precision`.
    """
    return _one_metric(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
    ).precision_recall_curve()


def precision_at_n(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    n: int,
    ties: str = "index",
    seed: int = 0,
) -> float:
    """Mean precision of the first n items of the Hamming ranking.

    Args as in :func:`mean_average_precision`.

    Args:
        n: number of retrieved items, ``1 <= n <= N``.
        ties: how tied items at the cut are ordered (module docstring).
        seed: seed for ``ties="random"``.
    """
    return _one_metric(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
    ).precision_at_n(n, ties=ties, seed=seed)


def _one_metric(**arrays) -> RetrievalEvaluator:
    """An evaluator for a single metric: it keeps no cache for later ones."""
    evaluator = RetrievalEvaluator(**arrays)
    evaluator._keep = False
    return evaluator


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _concat(parts):
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
    )


# ---------------------------------------------------------------------------
# counting


def _histograms(dist: np.ndarray, rel: np.ndarray, width: int):
    """Per query: items and relevant items at each distance, ``[q, width]``."""
    hist = np.empty((len(dist), width), np.int64)
    relhist = np.empty((len(dist), width), np.int64)
    for i, (d, r) in enumerate(zip(dist, rel, strict=True)):
        hist[i] = np.bincount(d, minlength=width)
        relhist[i] = np.bincount(d[r], minlength=width)
    return hist, relhist


def _top_k_ranked(dist, rel, hist, k):
    """Relevance ``[q, k]`` of each query's first k items, ties by index.

    The k-th item lies at the smallest distance ``t`` with at least k items
    within it; a stable sort of the items within ``t`` ranks them.
    """
    t = np.argmax(np.cumsum(hist, axis=1) >= k, axis=1)
    out = np.empty((len(dist), k), bool)
    for i, (d, r) in enumerate(zip(dist, rel, strict=True)):
        within = np.flatnonzero(d <= t[i])
        first = within[np.argsort(d[within], kind="stable")[:k]]
        out[i] = r[first]
    return out


def _radius_sums(hits, found, total):
    """Sums over queries of precision, recall and empty balls."""
    return np.stack(
        [
            (hits / np.maximum(found, 1)).sum(0),
            (hits / np.maximum(total, 1)).sum(0),
            (found == 0).sum(0),
        ]
    )


def _expected_hits_at_n(hist, relhist, n):
    """Expected relevant items among the first n, ties in random order."""
    before = np.cumsum(hist, axis=1) - hist
    t = np.argmax(before + hist >= n, axis=1)
    rows = np.arange(len(hist))
    rel_before = (np.cumsum(relhist, axis=1) - relhist)[rows, t]
    m = n - before[rows, t]  # places taken from the group at distance t
    return rel_before + m * relhist[rows, t] / hist[rows, t]


# ---------------------------------------------------------------------------
# average precision


def _full_ranking(dist, rel, width, depth):
    """Ranks every item, ties by index (a stable sort per query).

    Returns the AP of each query over the whole ranking and, unless
    ``depth`` is None, the histograms of all and of relevant items (read off
    the sorted distances) and the relevance of the first ``depth`` ranks.
    """
    q = len(dist)
    ap = np.zeros(q)
    extras = depth is not None
    if extras:
        hist = np.empty((q, width), np.int64)
        relhist = np.empty((q, width), np.int64)
        ranked = np.empty((q, depth), bool)
    edges = np.arange(width + 1, dtype=dist.dtype)  # no cast of d to int64
    for i, (d, r) in enumerate(zip(dist, rel, strict=True)):
        order = np.argsort(d, kind="stable")
        relevant = r[order]
        positions = np.flatnonzero(relevant)
        if extras:
            bounds = np.searchsorted(d[order], edges)  # rank where each starts
            hist[i] = np.diff(bounds)
            relhist[i] = np.diff(np.searchsorted(positions, bounds))
            ranked[i] = relevant[:depth]
        if positions.size:
            ap[i] = np.mean(np.arange(1, positions.size + 1) / (positions + 1.0))
    if not extras:
        return ap, None, None, None
    return ap, hist, relhist, ranked


def _ranked_ap(rel: np.ndarray):
    """AP of relevance already in ranked order, ``[q, k]``."""
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    total = hits[:, -1]
    return (precision * rel).sum(1) / np.maximum(total, 1), total > 0


def _harmonic(n: int) -> np.ndarray:
    out = np.zeros(n + 1)
    np.cumsum(1.0 / np.arange(1, n + 1), out=out[1:])
    return out


def _group_terms(before, rel_before, size, relevant, harmonic):
    """Expected sum of precisions over each tie group's relevant items."""
    size_f = size.astype(np.float64)
    b = np.where(size > 1, (relevant - 1) / np.maximum(size_f - 1, 1), 0.0)
    spread = harmonic[before + size] - harmonic[before]
    term = b * size_f + (rel_before + 1 - b * (before + 1)) * spread
    return np.where(relevant > 0, relevant / np.maximum(size_f, 1) * term, 0.0)


def _expected_ap(hist, relhist, top_k, harmonic):
    """Tie-aware AP: exact expectation over orders of tied items.

    ``harmonic`` holds the harmonic numbers up to the database size.
    """
    before = np.cumsum(hist, axis=1) - hist
    rel_before = np.cumsum(relhist, axis=1) - relhist
    terms = _group_terms(before, rel_before, hist, relhist, harmonic)
    if top_k is None:
        total = relhist.sum(1)
        return terms.sum(1) / np.maximum(total, 1), total > 0
    t = np.argmax(before + hist >= top_k, axis=1)
    ap = np.zeros(len(hist))
    possible = np.zeros(len(hist), bool)
    for i, ti in enumerate(t):
        s_before = terms[i, :ti].sum()
        m = top_k - before[i, ti]
        ap[i] = _expected_cut(
            s_before,
            before[i, ti],
            rel_before[i, ti],
            hist[i, ti],
            relhist[i, ti],
            m,
            harmonic,
        )
        possible[i] = rel_before[i, ti] + min(relhist[i, ti], m) > 0
    return ap, possible


def _expected_cut(s_before, before, rel_before, n, r, m, harmonic):
    """E[AP@K] when only the first m of a tie group of n (r relevant) count."""
    y = np.arange(max(0, m - (n - r)), min(r, m) + 1)
    pmf = _hypergeometric(y, n, r, m)
    terms = _group_terms(
        np.full(y.shape, before),
        np.full(y.shape, rel_before),
        np.full(y.shape, m),
        y,
        harmonic,
    )
    norm = rel_before + y
    values = np.where(norm > 0, (s_before + terms) / np.maximum(norm, 1), 0.0)
    return float(np.dot(pmf, values))


def _hypergeometric(y: np.ndarray, n: int, r: int, m: int) -> np.ndarray:
    """Pr(Y = y) for m draws without replacement from n items, r marked."""
    # Ratio Pr(y + 1) / Pr(y) = (r - y)(m - y) / ((y + 1)(n - r - m + y + 1)).
    y0 = y[:-1]
    log_ratio = (
        np.log(r - y0) + np.log(m - y0) - np.log(y0 + 1) - np.log(n - r - m + y0 + 1)
    )
    log_p = np.concatenate([[0.0], np.cumsum(log_ratio)])
    p = np.exp(log_p - log_p.max())
    return p / p.sum()
