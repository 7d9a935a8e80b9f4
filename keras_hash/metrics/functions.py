"""The metrics as functions: one evaluator, one metric.

Each builds a :class:`RetrievalEvaluator` that keeps no cache; for several
metrics of the same codes, build the evaluator once.
"""

from __future__ import annotations

import numpy as np

from keras_hash.metrics.evaluator import (
    PrecisionRecallCurve,
    RadiusPrecision,
    RetrievalEvaluator,
)


def mean_average_precision(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    bits: int,
    assume_packed: bool = False,
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
        database_codes=db_codes, database_labels=db_labels, bits=64,
        top_k=1000,
    )
    ```

    Args:
        query_codes: uint8 ``[Q, bits // 8]`` packed codes.
        query_labels: int ``[Q]`` (or ``[Q, 1]``) class ids or 0/1 multi-hot ``[Q, C]``.
        database_codes: uint8 ``[N, bits // 8]`` packed codes.
        database_labels: like ``query_labels``, ``[N]`` or ``[N, C]``.
        bits: the code length K; codes of another width, or whose bytes
            look unpacked, are refused (:func:`keras_hash.codes.check_codes`).
        assume_packed: accept codes whose bytes all are 0/1 (or 1/255),
            which otherwise look unpacked. Defaults to False.
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
        query_codes, query_labels, database_codes, database_labels, bits, assume_packed
    ).map(top_k=top_k, ties=ties, empty=empty, seed=seed)


def average_precisions(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    bits: int,
    assume_packed: bool = False,
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
        query_codes, query_labels, database_codes, database_labels, bits, assume_packed
    ).average_precisions(top_k=top_k, ties=ties, seed=seed)


def precision_at_radius(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    bits: int,
    assume_packed: bool = False,
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
        query_codes, query_labels, database_codes, database_labels, bits, assume_packed
    ).precision_at_radius(radius)


def precision_recall_curve(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    bits: int,
    assume_packed: bool = False,
) -> PrecisionRecallCurve:
    """Precision and recall within every Hamming radius ``0..bits``.

    Each point is the mean over queries of the per-query precision (empty
    ball: 0) and recall, as in :func:`precision_at_radius`. Args as in
    :func:`mean_average_precision`.
    """
    return _one_metric(
        query_codes, query_labels, database_codes, database_labels, bits, assume_packed
    ).precision_recall_curve()


def precision_at_n(
    *,
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    bits: int,
    assume_packed: bool = False,
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
        query_codes, query_labels, database_codes, database_labels, bits, assume_packed
    ).precision_at_n(n, ties=ties, seed=seed)


def _one_metric(
    query_codes, query_labels, database_codes, database_labels, bits, assume_packed
) -> RetrievalEvaluator:
    """An evaluator for a single metric: it keeps no cache for later ones."""
    evaluator = RetrievalEvaluator(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
        bits=bits,
        assume_packed=assume_packed,
    )
    evaluator._keep = False
    return evaluator
