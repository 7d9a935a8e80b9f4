"""Ranking kernels of the metrics: histograms, AP and its tie-aware expectation.

Pure functions over one chunk of queries: ``dist`` holds Hamming distances
``[q, N]`` (the kernel of :mod:`keras_hash.codes`), ``rel`` the relevance
``[q, N]`` of each database item, ``hist`` / ``relhist`` the number of all /
relevant items at each distance ``[q, bits + 1]``. Ties go by position
(the evaluator keeps the database in id order, so by id). Conventions are
in :mod:`keras_hash.metrics` and ``docs/conventions.md``.

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

import numpy as np

# ---------------------------------------------------------------------------
# counting


def histograms(dist: np.ndarray, rel: np.ndarray, width: int):
    """Per query: items and relevant items at each distance, ``[q, width]``."""
    hist = np.empty((len(dist), width), np.int64)
    relhist = np.empty((len(dist), width), np.int64)
    for i, (d, r) in enumerate(zip(dist, rel, strict=True)):
        hist[i] = np.bincount(d, minlength=width)
        relhist[i] = np.bincount(d[r], minlength=width)
    return hist, relhist


def top_k_positions(dist, hist, k):
    """Positions ``[q, k]`` of each query's first k items, ties by position.

    The k-th item lies at the smallest distance ``t`` with at least k items
    within it; a stable sort of the items within ``t`` ranks them.
    """
    t = kth_distance(hist, k)
    out = np.empty((len(dist), k), np.int64)
    for i, d in enumerate(dist):
        within = np.flatnonzero(d <= t[i])
        out[i] = within[np.argsort(d[within], kind="stable")[:k]]
    return out


def kth_distance(hist, k):
    """Per query, the distance of its k-th nearest item (``hist``: counts)."""
    return np.argmax(np.cumsum(hist, axis=1) >= k, axis=1)


def radius_sums(hits, found, total):
    """Sums over queries of precision, recall and empty balls."""
    return np.stack(
        [
            (hits / np.maximum(found, 1)).sum(0),
            (hits / np.maximum(total, 1)).sum(0),
            (found == 0).sum(0),
        ]
    )


def expected_hits_at_n(hist, relhist, n):
    """Expected relevant items among the first n, ties in random order."""
    before = np.cumsum(hist, axis=1) - hist
    t = np.argmax(before + hist >= n, axis=1)
    rows = np.arange(len(hist))
    rel_before = (np.cumsum(relhist, axis=1) - relhist)[rows, t]
    m = n - before[rows, t]  # places taken from the group at distance t
    return rel_before + m * relhist[rows, t] / hist[rows, t]


# ---------------------------------------------------------------------------
# average precision


def full_ranking(dist, rel, width, depth):
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


def ranked_ap(rel: np.ndarray):
    """AP of relevance already in ranked order, ``[q, k]``."""
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    total = hits[:, -1]
    return (precision * rel).sum(1) / np.maximum(total, 1), total > 0


def harmonic_numbers(n: int) -> np.ndarray:
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


def expected_ap(hist, relhist, top_k, harmonic):
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
