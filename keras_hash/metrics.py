"""Retrieval metrics over packed binary codes: mAP, precision within a radius.

Conventions (research code disagrees on each; these are ours):

- **Relevance**: a database item is relevant to a query when they share at
  least one label. Labels are int class ids ``[N]`` or multi-hot ``[N, C]``.
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
dense float matrices.

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

from keras_hash.codes import as_words, check_packed
from keras_hash.index import HammingIndex

_TIES = ("index", "random", "expected")
_EMPTY = ("zero", "skip")
# Query x database pairs per chunk: bounds memory to a few bytes per pair.
_CHUNK_PAIRS = 1 << 22
_DB_BLOCK = 4096


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
    inside the top K) are in the module docstring.

    Example:

    ```python
    from keras_hash import evaluation

    evaluation.mean_average_precision(
        query_codes=q_codes, query_labels=q_labels,
        database_codes=db_codes, database_labels=db_labels, top_k=1000,
    )
    ```

    Args:
        query_codes: uint8 ``[Q, bits // 8]`` packed codes.
        query_labels: int ``[Q]`` class ids or multi-hot ``[Q, C]``.
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
    ap, counted = average_precisions(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
        top_k=top_k,
        ties=ties,
        seed=seed,
    )
    _check_choice("empty", empty, _EMPTY)
    if empty == "skip":
        ap = ap[counted]
    return float(ap.mean()) if ap.size else 0.0


def average_precisions(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    top_k: int | None = None,
    ties: str = "index",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP@K, as :func:`mean_average_precision` averages it.

    Returns:
        ``(ap, has_relevant)``: float64 ``[Q]`` (0 for a query with no
        relevant item in its top K) and bool ``[Q]`` (False for the queries
        ``empty="skip"`` leaves out).
    """
    problem = _Problem(query_codes, query_labels, database_codes, database_labels)
    _check_choice("ties", ties, _TIES)
    top_k = problem.check_count("top_k", top_k)
    if ties == "random":
        problem.permute(np.random.default_rng(seed).permutation(problem.n))
    if ties != "expected" and top_k is not None and top_k < problem.n:
        parts = [_ranked_ap(rel) for rel in problem.ranked_relevance(top_k)]
    else:
        parts = [
            _chunk_ap(problem, dist, rel, top_k, ties) for dist, rel in problem.chunks()
        ]
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
    )


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
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"radius must be an int, got {radius!r}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    curve = precision_recall_curve(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
    )
    r = min(int(radius), len(curve.radii) - 1)
    return RadiusPrecision(
        precision=float(curve.precision[r]),
        recall=float(curve.recall[r]),
        empty_fraction=float(curve.empty_fraction[r]),
        radius=int(radius),
    )


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
    problem = _Problem(query_codes, query_labels, database_codes, database_labels)
    sums = np.zeros((3, problem.bits + 1))
    for dist, rel in problem.chunks():
        hist, relhist = _histograms(dist, rel, problem.bits)
        found = np.cumsum(hist, axis=1)
        hits = np.cumsum(relhist, axis=1)
        total = hits[:, -1:]
        sums[0] += _safe_ratio(hits, found).sum(0)
        sums[1] += _safe_ratio(hits, total).sum(0)
        sums[2] += (found == 0).sum(0)
    sums /= problem.q
    return PrecisionRecallCurve(np.arange(problem.bits + 1), sums[0], sums[1], sums[2])


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
    problem = _Problem(query_codes, query_labels, database_codes, database_labels)
    _check_choice("ties", ties, _TIES)
    n = problem.check_count("n", n, required=True)
    if ties == "random":
        problem.permute(np.random.default_rng(seed).permutation(problem.n))
    if ties == "expected":
        hits = [
            _expected_hits_at_n(dist, rel, n, problem.bits)
            for dist, rel in problem.chunks()
        ]
    else:
        hits = [rel.sum(1) for rel in problem.ranked_relevance(n)]
    return float(np.concatenate(hits).mean() / n)


# ---------------------------------------------------------------------------
# inputs


class _Problem:
    """Validated codes and labels, streamed as (distances, relevance) chunks."""

    def __init__(self, query_codes, query_labels, database_codes, database_labels):
        query_codes = check_packed(query_codes, name="query_codes")
        database_codes = check_packed(database_codes, name="database_codes")
        if query_codes.shape[1] != database_codes.shape[1]:
            raise ValueError(
                f"code widths disagree: query_codes are {query_codes.shape[1]} "
                f"bytes wide, database_codes {database_codes.shape[1]} bytes"
            )
        if len(database_codes) == 0:
            raise ValueError("database_codes is empty")
        self.bits = query_codes.shape[1] * 8
        self.q, self.n = len(query_codes), len(database_codes)
        self.query_labels = _check_labels(query_labels, self.q, "query_labels")
        self.database_labels = _check_labels(database_labels, self.n, "database_labels")
        if self.query_labels.ndim != self.database_labels.ndim or (
            self.query_labels.shape[1:] != self.database_labels.shape[1:]
        ):
            raise ValueError(
                "query_labels and database_labels disagree: shapes "
                f"{self.query_labels.shape} and {self.database_labels.shape} "
                "(use int ids [N] for both, or multi-hot [N, C] with the same C)"
            )
        self.query_codes, self.database_codes = query_codes, database_codes
        self.dtype = np.uint8 if self.bits < 256 else np.uint16

    def check_count(self, name: str, value, required: bool = False):
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        if name == "n" and value > self.n:
            raise ValueError(f"n={value} exceeds the database size {self.n}")
        return min(int(value), self.n)

    def permute(self, order: np.ndarray) -> None:
        self.database_codes = self.database_codes[order]
        self.database_labels = self.database_labels[order]

    def ranked_relevance(self, k: int):
        """Yields relevance ``[q, k]`` of each query's top k, ties by index.

        Uses the exact k-NN of :class:`keras_hash.HammingIndex` (numpy
        backend): a streaming top k, so only the top k pairs are labelled.
        """
        index = HammingIndex(self.bits, backend="numpy")
        index.add(self.database_codes)
        relevance = _Relevance(self.database_labels)
        step = max(1, _CHUNK_PAIRS // (4 * k))
        for q0 in range(0, self.q, step):
            chunk = slice(q0, q0 + step)
            _, positions = index.search(self.query_codes[chunk], k)
            yield relevance.pairs(self.query_labels[chunk], positions)

    def chunks(self):
        """Yields ``(distances [q, N], relevant [q, N] bool)`` per query chunk."""
        planes = np.ascontiguousarray(as_words(self.database_codes).T)
        qplanes = np.ascontiguousarray(as_words(self.query_codes).T)
        relevance = _Relevance(self.database_labels)
        step = max(1, _CHUNK_PAIRS // self.n)
        for q0 in range(0, self.q, step):
            chunk = slice(q0, q0 + step)
            dist = _distances(qplanes[:, chunk], planes, self.dtype)
            yield dist, relevance(self.query_labels[chunk])


def _check_labels(labels, count: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be int ids [N] or multi-hot [N, C], got shape {labels.shape}"
        )
    if len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} rows but there are {count} codes")
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        if labels.ndim == 1 or not np.all(np.isin(labels, (0, 1))):
            raise TypeError(
                f"{name} must be integer class ids or 0/1 multi-hot, "
                f"got dtype {labels.dtype}"
            )
    return labels


class _Relevance:
    """Query labels -> bool relevance ``[q, N]`` (at least one shared label)."""

    def __init__(self, database_labels: np.ndarray):
        self.multi_hot = database_labels.ndim == 2
        self.database = self._encode(database_labels)

    def _encode(self, labels: np.ndarray) -> np.ndarray:
        if not self.multi_hot:
            return labels.astype(np.int64)
        bits = np.packbits(labels != 0, axis=1)
        pad = -bits.shape[1] % 8
        bits = np.pad(bits, ((0, 0), (0, pad)))
        return np.ascontiguousarray(bits.view(np.uint64).T)  # [words, N]

    def __call__(self, query_labels: np.ndarray) -> np.ndarray:
        query = self._encode(query_labels)
        if not self.multi_hot:
            return query[:, None] == self.database[None, :]
        shared = np.zeros((query.shape[1], self.database.shape[1]), bool)
        for w in range(len(query)):
            shared |= (query[w, :, None] & self.database[w, None, :]) != 0
        return shared

    def pairs(self, query_labels: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Relevance of query i to database item ``positions[i, j]``."""
        query = self._encode(query_labels)
        if not self.multi_hot:
            return query[:, None] == self.database[positions]
        shared = np.zeros(positions.shape, bool)
        for w in range(len(query)):
            shared |= (query[w, :, None] & self.database[w][positions]) != 0
        return shared


def _distances(qplanes: np.ndarray, planes: np.ndarray, dtype) -> np.ndarray:
    """Hamming distances ``[q, N]`` between word planes, blocked for cache."""
    n_words, n = planes.shape
    out = np.empty((qplanes.shape[1], n), dtype)
    xor = np.empty((qplanes.shape[1], min(_DB_BLOCK, n)), planes.dtype)
    count = np.empty(xor.shape, np.uint8)
    for j0 in range(0, n, _DB_BLOCK):
        j1 = min(j0 + _DB_BLOCK, n)
        x, c, d = xor[:, : j1 - j0], count[:, : j1 - j0], out[:, j0:j1]
        for w in range(n_words):
            np.bitwise_xor(qplanes[w, :, None], planes[w, None, j0:j1], out=x)
            if w == 0:
                np.bitwise_count(x, out=d, casting="unsafe")
            else:
                np.add(d, np.bitwise_count(x, out=c), out=d, casting="unsafe")
    return out


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# ---------------------------------------------------------------------------
# counting


def _histograms(dist: np.ndarray, rel: np.ndarray, bits: int):
    """Per query: items and relevant items at each distance, ``[q, bits + 1]``."""
    q, width = len(dist), bits + 1
    key = np.arange(q, dtype=np.int64)[:, None] * width + dist
    hist = np.bincount(key.ravel(), minlength=q * width).reshape(q, width)
    relhist = np.bincount(key[rel], minlength=q * width).reshape(q, width)
    return hist, relhist


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return num / np.maximum(den, 1)


def _expected_hits_at_n(dist, rel, n, bits):
    """Expected relevant items among the first n, ties in random order."""
    hist, relhist = _histograms(dist, rel, bits)
    before = np.cumsum(hist, axis=1) - hist
    t = np.argmax(before + hist >= n, axis=1)
    rows = np.arange(len(dist))
    rel_before = (np.cumsum(relhist, axis=1) - relhist)[rows, t]
    m = n - before[rows, t]  # places taken from the group at distance t
    return rel_before + m * relhist[rows, t] / hist[rows, t]


# ---------------------------------------------------------------------------
# average precision


def _chunk_ap(problem: _Problem, dist, rel, top_k, ties):
    if ties == "expected":
        return _expected_ap(dist, rel, top_k, problem.bits)
    return _index_ap_full(dist, rel)


def _index_ap_full(dist, rel):
    """AP over the whole ranking, ties by index: a stable sort per query."""
    ap = np.zeros(len(dist))
    for i in range(len(dist)):
        order = np.argsort(dist[i], kind="stable")
        positions = np.flatnonzero(rel[i][order]) + 1.0
        if positions.size:
            ap[i] = np.mean(np.arange(1, positions.size + 1) / positions)
    return ap, rel.any(axis=1)


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


def _expected_ap(dist, rel, top_k, bits):
    """Tie-aware AP: exact expectation over orders of tied items."""
    hist, relhist = _histograms(dist, rel, bits)
    before = np.cumsum(hist, axis=1) - hist
    rel_before = np.cumsum(relhist, axis=1) - relhist
    harmonic = _harmonic(dist.shape[1])
    terms = _group_terms(before, rel_before, hist, relhist, harmonic)
    if top_k is None or top_k >= dist.shape[1]:
        total = relhist.sum(1)
        return terms.sum(1) / np.maximum(total, 1), total > 0
    t = np.argmax(before + hist >= top_k, axis=1)
    ap = np.zeros(len(dist))
    possible = np.zeros(len(dist), bool)
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
