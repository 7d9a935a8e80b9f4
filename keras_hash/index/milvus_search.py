"""Milvus searches made complete: past its 16,384-result limit, radii inclusive.

What :class:`~keras_hash.index.MilvusHammingIndex` asks Milvus, in calls
Milvus accepts: one search per block of queries (``search``), every item at
distances ``lo..hi`` however many (``collect``: a small first limit, then
Milvus's largest, then halves of the id range, ``split``). The module doc of
:mod:`keras_hash.index.milvus` and ``docs/milvus.md`` say why each step.

Example: ``collect(index, queries, 0, 3, None)`` gives, per query, the
``(distances, ids)`` of every stored code within distance 3.
"""

from __future__ import annotations

import numpy as np

from keras_hash.index.base import MAX_ID, MIN_ID

#: Milvus's largest ``topk`` (``limit``) and ``nq`` for one search.
MAX_TOPK = 16384

# Results fetched per search call (queries x limit): bounds message sizes, and
# Milvus Lite answered fastest near this size (measured).
_HITS_PER_CALL = 1 << 18
# Limit of the first range search of each query (faster than MAX_TOPK).
_FIRST_LIMIT = 1024


def search(index, queries, limit, lo=None, hi=None, id_range=None):
    """One Milvus search per block of queries; per query (distances, ids, cut).

    ``lo``/``hi``: keep distances in ``[lo, hi]`` (a range search);
    ``id_range``: keep ids in ``[a, b]``. ``cut``: the search may have
    left out items in range (it stopped at ``limit``).

    On ``BIN_IVF_FLAT`` a range search is a k-NN search of ``limit``
    items filtered here: Milvus 2.3's IVF range search leaves out items
    within the radius even with ``nprobe = nlist`` (measured on 2.3.5:
    1,079 of 1,587 found), while its k-NN search over the same lists
    finds them all.
    """
    ivf = index._index_type == "BIN_IVF_FLAT"
    params = {"nprobe": index._nprobe} if ivf else {}
    if hi is not None and not ivf:
        # Milvus keeps range_filter <= d < radius for HAMMING (measured).
        params["radius"] = int(hi) + 1
        params["range_filter"] = int(lo)
    expr = "" if id_range is None else _range_expr(index._id_field, *id_range)
    block = max(1, min(MAX_TOPK, _HITS_PER_CALL // limit))
    out = []
    for start in range(0, len(queries), block):
        result = index._client.search(
            index._name,
            data=[q.tobytes() for q in queries[start : start + block]],
            filter=expr,
            limit=int(limit),
            output_fields=[],
            search_params={"metric_type": "HAMMING", "params": params},
            anns_field=index._code_field,
            timeout=index._timeout,
            consistency_level="Strong",
        )
        for hits in result:
            dist, ids = _hit_arrays(hits)
            cut = len(dist) >= limit
            if hi is not None and ivf:
                cut = cut and bool(dist.max() <= hi)
                keep = (dist >= lo) & (dist <= hi)
                dist, ids = dist[keep], ids[keep]
            out.append((dist, ids, cut))
    return out


def collect(index, queries, lo, hi, need):
    """Every item at distance ``lo..hi`` of each query, past Milvus's limit.

    A first search keeps up to ``_FIRST_LIMIT`` items per query (Milvus
    works faster with a small limit); queries that fill it are searched
    again with ``MAX_TOPK``. A query cut at ``MAX_TOPK`` results is
    searched again over halves of the id range, lower half
    first, halving until no part is cut. With ``need`` (one count per
    query), a query stops once it holds that many items from a prefix of
    the id range: the smallest ids at those distances are then all in hand.
    """
    hits = search(index, queries, min(_FIRST_LIMIT, MAX_TOPK), lo, hi)
    full = [row for row, hit in enumerate(hits) if hit[2]]
    if full and _FIRST_LIMIT < MAX_TOPK:
        again = search(index, queries[full], MAX_TOPK, lo, hi)
        for row, found in zip(full, again, strict=True):
            hits[row] = found
    return [
        split(index, queries[row], lo, hi, None if need is None else need[row])
        if cut  # at MAX_TOPK: cut where Milvus stopped
        else (dist, ids)
        for row, (dist, ids, cut) in enumerate(hits)
    ]


def split(index, query, lo, hi, need):
    """``collect`` for one query whose search over all ids was cut."""
    mid = MIN_ID + (MAX_ID - MIN_ID) // 2
    stack = [(mid + 1, MAX_ID), (MIN_ID, mid)]  # the top is searched next
    dists, idss = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
    held = 0
    while stack:
        a, b = stack.pop()
        dist, ids, cut = search(index, query[None], MAX_TOPK, lo, hi, (a, b))[0]
        if cut and a < b:  # cut again: halve
            mid = a + (b - a) // 2
            stack += [(mid + 1, b), (a, mid)]
            continue
        dists.append(dist)
        idss.append(ids)
        held += len(dist)
        if need is not None and held >= need:
            break
    return np.concatenate(dists), np.concatenate(idss)


def _range_expr(field: str, a: int, b: int) -> str:
    terms = []
    if a > MIN_ID:
        terms.append(f"{field} >= {a}")
    if b < MAX_ID:
        terms.append(f"{field} <= {b}")
    return " and ".join(terms)


def _hit_arrays(hits) -> tuple[np.ndarray, np.ndarray]:
    """(int32 distances, int64 ids) of one query's hits."""
    ids, dist = getattr(hits, "ids", None), getattr(hits, "distances", None)
    if ids is None or dist is None:  # pymilvus 2.5: a list of dicts
        ids = [hit["id"] for hit in hits]
        dist = [hit["distance"] for hit in hits]
    ids = np.asarray(ids, np.int64).reshape(-1)
    dist = np.rint(np.asarray(dist, np.float64)).astype(np.int32).reshape(-1)
    return dist, ids
