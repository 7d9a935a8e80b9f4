"""Retrieval metrics over packed binary codes: mAP, recall, precision within a radius.

:class:`RetrievalEvaluator` scores one query set against one database in two
ways:

- **whole-database rankings** (:meth:`~RetrievalEvaluator.map`,
  :meth:`~RetrievalEvaluator.precision_at_radius`, ...): Hamming distances
  to every database code, computed once with the kernel of
  :mod:`keras_hash.codes`;
- **lookups** (:meth:`~RetrievalEvaluator.score_search`,
  :meth:`~RetrievalEvaluator.score_range_search`): what an index of the
  search contract (``HammingIndex``, ``IVFHammingIndex``,
  ``MilvusHammingIndex``) returns, scored by mAP@K, recall@K against exact
  search and precision within a radius.

The functions (:func:`mean_average_precision`, :func:`precision_at_radius`,
...) build one evaluator per call. Modules: :mod:`.evaluator` (the class),
:mod:`.lookups` (scoring index results), :mod:`.ranking` (AP kernels and the
tie-aware expectation), :mod:`.functions`.

Conventions (research code disagrees on each; these are ours, also in
``docs/conventions.md``):

- **Codes**: packed uint8 ``[N, bits // 8]`` (``numpy.packbits`` order);
  the caller states ``bits`` (or it is read from the index) and arrays of
  another width, or whose bytes look unpacked (all 0/1, or all 1/255), are
  refused (:func:`keras_hash.codes.check_codes`).
- **Relevance**: a database item is relevant to a query when they share at
  least one label. Labels are int class ids ``[N]`` (``[N, 1]`` too) or
  0/1 multi-hot ``[N, C]`` (:mod:`keras_hash.labels`).
- **Ids**: database row ``i`` has id ``database_ids[i]`` (default ``i``);
  labels are looked up by the ids an index returns.
- **Ranking**: Hamming distance ascending; ``ties`` orders items at equal
  distance: ``"index"`` (default) by id ascending, deterministic (biased
  when the database is stored class by class: shuffle it or use
  ``"expected"``); ``"random"`` by position in
  ``np.random.default_rng(seed).permutation(N)``; ``"expected"``: the exact
  expectation over all orders of the tied items (:mod:`.ranking`).
- **AP@K** ``= sum_{k<=K} P@k * rel_k / sum_{k<=K} rel_k``: normalised by
  the relevant items inside the top K (the HashNet and DHN convention);
  ``top_k=None`` ranks the whole database. A query with no relevant item in
  its top K scores 0 (``empty="zero"``) or is left out (``empty="skip"``,
  the official HashNet evaluation).
- **Precision within radius r**: retrieved = distance ``<= r``; a query
  whose ball is empty scores precision 0 and still counts.
- **Recall@K of a lookup** (:class:`SearchScore`): with ``t`` the exact k-th
  smallest distance of a query and ``m`` the number of exact top-k places
  at distance ``t``, tie-aware recall counts the returned items nearer than
  ``t`` plus at most ``m`` returned items at ``t``, over k (any item at
  ``t`` is as good as another); recall by id is the share of the exact top
  k, ties by id, that was returned.
"""

from keras_hash.metrics.evaluator import (
    PrecisionRecallCurve,
    RadiusPrecision,
    RetrievalEvaluator,
)
from keras_hash.metrics.functions import (
    average_precisions,
    mean_average_precision,
    precision_at_n,
    precision_at_radius,
    precision_recall_curve,
)
from keras_hash.metrics.lookups import RangeScore, SearchScore

__all__ = [
    "PrecisionRecallCurve",
    "RadiusPrecision",
    "RangeScore",
    "RetrievalEvaluator",
    "SearchScore",
    "average_precisions",
    "mean_average_precision",
    "precision_at_n",
    "precision_at_radius",
    "precision_recall_curve",
]
