"""Scoring what an index returns: k-NN lookups and radius lookups.

The work of :meth:`RetrievalEvaluator.score_search` and
:meth:`RetrievalEvaluator.score_range_search`. An index of the search
contract returns ``(distances, ids)`` rows ordered by distance then id,
padded at distance ``bits + 1`` when it finds fewer than k codes. Every
returned id is looked up in the evaluator's database (ids sorted
ascending); its true distance is recomputed from the codes and must equal
the one the index reported, so a lookup is scored on facts, not on the
index's word.

Recall@k of one query, with ``t`` its exact k-th smallest distance,
``less`` the number of database items nearer than ``t`` and ``m = k -
less`` the exact top-k places at distance ``t``:

- tie-aware: ``(#returned nearer than t + min(#returned at t, m)) / k``.
  Any item at distance ``t`` is as near as any other, so an approximate
  index that returns other items at ``t`` than exact search (ties by id)
  loses nothing;
- by id: ``#(returned ids among the exact top-k ids, ties by id) / k``.

Both are 1 for an exact index; by id is never above tie-aware.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from keras_hash.index.base import check_radius as check_index_radius
from keras_hash.metrics import ranking

# Query x result bytes per chunk when recomputing distances.
_CHUNK_BYTES = 1 << 24


@dataclass(frozen=True)
class SearchScore:
    """What a k-NN lookup (``index.search(queries, k)``) is worth.

    Attributes:
        k: the number of neighbours asked for.
        map: mAP@k of the returned lists in their order (AP@K convention of
            :mod:`keras_hash.metrics`; padding counts as not relevant).
        recall: tie-aware recall@k against exact search, mean over queries.
        recall_by_id: recall@k against the exact top k with ties by id.
        missing_fraction: share of the ``queries x k`` slots left padded.
        seconds: wall time of the index's ``search`` call.
        queries_per_second: queries / seconds.
    """

    k: int
    map: float
    recall: float
    recall_by_id: float
    missing_fraction: float
    seconds: float
    queries_per_second: float


@dataclass(frozen=True)
class RangeScore:
    """What a radius lookup (``index.range_search(queries, radius)``) is worth.

    Attributes:
        radius: the radius used.
        precision: mean over queries of relevant returned / returned (an
            empty result scores 0 and counts).
        recall: mean over queries of relevant returned / relevant in the
            database (0 for a query with no relevant item).
        empty_fraction: share of queries with nothing returned.
        completeness: mean over queries of returned / items truly within
            the radius (1 where the exact ball is empty): 1 for an exact
            index.
        seconds: wall time of the index's ``range_search`` call.
        queries_per_second: queries / seconds.
    """

    radius: int
    precision: float
    recall: float
    empty_fraction: float
    completeness: float
    seconds: float
    queries_per_second: float


def score_search(ev, k: int, empty: str) -> SearchScore:
    """:meth:`RetrievalEvaluator.score_search` of evaluator ``ev``."""
    index = ev._require_index("score_search")
    if empty not in ("zero", "skip"):
        raise ValueError(f"empty must be one of ('zero', 'skip'), got {empty!r}")
    k = ev._count("k", k, required=True)
    start = time.perf_counter()
    distances, ids = index.search(ev.query_codes, k)
    seconds = time.perf_counter() - start
    distances, ids = np.asarray(distances), np.asarray(ids)
    if distances.shape != (ev.q, k) or ids.shape != (ev.q, k):
        raise ValueError(
            f"the index's search returned shapes {distances.shape} and "
            f"{ids.shape}, expected {(ev.q, k)}"
        )
    known = distances <= ev.bits  # padding sits at bits + 1
    rows = rows_of(ids, known, ev.database_ids, "search")
    check_distinct(rows, known, "search")
    true = true_distances(ev.query_codes, ev.database_codes, rows)
    check_reported(distances, true, known, ids, "search")
    relevant = ev._relevance.pairs(ev.query_labels, rows) & known
    ap, has = ranking.ranked_ap(relevant)
    tie_aware, by_id = _recall_hits(ev, true, known, rows, k)
    if empty == "skip":
        ap = ap[has]
    return SearchScore(
        k=k,
        map=float(ap.mean()) if ap.size else 0.0,
        recall=float(tie_aware.mean() / k),
        recall_by_id=float(by_id.mean() / k),
        missing_fraction=float(1 - known.mean()),
        seconds=seconds,
        queries_per_second=ev.q / max(seconds, 1e-12),
    )


def score_range_search(ev, radius: int) -> RangeScore:
    """:meth:`RetrievalEvaluator.score_range_search` of evaluator ``ev``."""
    index = ev._require_index("score_range_search")
    radius = check_radius(radius)
    start = time.perf_counter()
    result = index.range_search(ev.query_codes, radius)
    seconds = time.perf_counter() - start
    lims = np.asarray(result.lims)
    if lims.shape != (ev.q + 1,):
        raise ValueError(
            f"the index's range_search returned lims of shape {lims.shape} "
            f"for {ev.q} queries"
        )
    found = np.diff(lims)
    width = int(found.max()) if found.size else 0
    take = np.minimum(lims[:-1, None] + np.arange(width), max(lims[-1] - 1, 0))
    known = np.arange(width) < found[:, None]
    ids = np.asarray(result.ids)[take] if lims[-1] else np.zeros(take.shape, int)
    dist = np.asarray(result.distances)[take] if lims[-1] else ids
    rows = rows_of(ids, known, ev.database_ids, "range_search")
    check_distinct(rows, known, "range_search")
    true = true_distances(ev.query_codes, ev.database_codes, rows)
    check_reported(dist, true, known, ids, "range_search")
    if np.any(known & (true > radius)):
        raise ValueError(f"the index's range_search returned items beyond {radius}")
    hits = (ev._relevance.pairs(ev.query_labels, rows) & known).sum(1)
    r = min(radius, ev.bits)
    ball, total = [], []
    for hist, relhist in ev._histogram_chunks():
        ball.append(hist[:, : r + 1].sum(1))
        total.append(relhist.sum(1))
    ball = np.concatenate(ball)
    precision, recall, empty = ranking.radius_sums(hits, found, np.concatenate(total))
    complete = np.where(ball > 0, found / np.maximum(ball, 1), 1.0)
    return RangeScore(
        radius=radius,
        precision=float(precision / ev.q),
        recall=float(recall / ev.q),
        empty_fraction=float(empty / ev.q),
        completeness=float(complete.mean()),
        seconds=seconds,
        queries_per_second=ev.q / max(seconds, 1e-12),
    )


def _recall_hits(ev, true, known, rows, k):
    """Tie-aware hits and hits by id of each query's k results."""
    tie_aware, by_id = [], []
    q0 = 0
    for hist, _, _, exact in ev._pass(k=k):
        rows_ = slice(q0, q0 + len(hist))
        kth = ranking.kth_distance(hist, k)
        less = (np.cumsum(hist, axis=1) - hist)[np.arange(len(hist)), kth]
        t, b = recall_hits(true[rows_], known[rows_], rows[rows_], exact, kth, less, k)
        tie_aware.append(t)
        by_id.append(b)
        q0 += len(hist)
    return np.concatenate(tie_aware), np.concatenate(by_id)


def check_radius(radius) -> int:
    """The radius as an int ``>= 0`` (as given: a radius past ``bits`` is all)."""
    check_index_radius(radius, bits=2**31)
    return int(radius)


def rows_of(ids: np.ndarray, known: np.ndarray, database_ids: np.ndarray, what: str):
    """Database rows of the returned ids (``-1`` where ``known`` is False).

    Raises ``ValueError`` naming the first id the database does not hold.
    """
    rows = np.searchsorted(database_ids, ids)
    rows = np.minimum(rows, len(database_ids) - 1)
    found = database_ids[rows] == ids
    bad = known & ~found
    if np.any(bad):
        raise ValueError(
            f"the index's {what} returned id {int(ids[bad][0])}, which is not "
            "among database_ids: the index and the evaluator's database differ"
        )
    return np.where(known, rows, -1)


def true_distances(query_codes: np.ndarray, database_codes: np.ndarray, rows):
    """Hamming distance ``[q, k]`` from query ``i`` to row ``rows[i, j]``."""
    q, k = rows.shape
    out = np.empty((q, k), np.int64)
    step = max(1, _CHUNK_BYTES // max(1, k * query_codes.shape[1]))
    for q0 in range(0, q, step):
        part = rows[q0 : q0 + step]
        xor = query_codes[q0 : q0 + step, None, :] ^ database_codes[part]
        out[q0 : q0 + step] = np.bitwise_count(xor).sum(-1, dtype=np.int64)
    return out


def check_reported(reported, true, known, ids, what: str) -> None:
    """Raises ``ValueError`` where the index reported a wrong distance."""
    wrong = known & (reported != true)
    if np.any(wrong):
        i, j = np.argwhere(wrong)[0]
        raise ValueError(
            f"the index's {what} reported distance {int(reported[i, j])} for id "
            f"{int(ids[i, j])} (query {i}), but its code is at distance "
            f"{int(true[i, j])}"
        )


def check_distinct(rows: np.ndarray, known: np.ndarray, what: str) -> None:
    """Raises ``ValueError`` when a query's result holds an id twice."""
    for i, (r, kn) in enumerate(zip(rows, known, strict=True)):
        r = r[kn]
        if len(np.unique(r)) != len(r):
            raise ValueError(f"the index's {what} returned an id twice for query {i}")


def recall_hits(true, known, rows, exact_rows, kth, less, k):
    """Per query: tie-aware hits and hits by id (module docstring)."""
    t = kth[:, None]
    nearer = np.sum(known & (true < t), axis=1)
    at_t = np.sum(known & (true == t), axis=1)
    tie_aware = nearer + np.minimum(at_t, k - less)
    by_id = np.array(
        [
            np.isin(r[kn], e).sum()
            for r, kn, e in zip(rows, known, exact_rows, strict=True)
        ]
    )
    return tie_aware, by_id
